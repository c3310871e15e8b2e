"""Cost of the consensus prior alone (2D affine vs 3D similarity) on `semcorr bench`'s 640x480 RGB-D frames.

Encodes the bench reference and frame once, then times the engine's consensus step (coarse pooling, dense mutual
matches, fit, keypoint projection) for each mode, interleaved so that machine load affects both alike.
Not part of the package. Usage (from outside the repository root): python lab/dev/bench_prior.py [--reps 200]
"""

import argparse
import time

import numpy as np

from semcorr_ros.cli.bench_cmd import synthetic_rgbd
from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import CorrespondenceEngine, stages
from semcorr_ros.engine.geometry import validate_depth

ap = argparse.ArgumentParser()
ap.add_argument("--reps", type=int, default=200)
args = ap.parse_args()
engine = CorrespondenceEngine(EngineConfig())
w, h = 640, 480
ref_img, ref_depth, K = synthetic_rgbd(w, h)
gx, gy = np.meshgrid(np.linspace(0.3, 0.7, 4) * w, np.linspace(0.3, 0.7, 3) * h)
ref = engine.set_reference(ref_img, np.stack([gx.ravel(), gy.ravel()], 1), depth=ref_depth, intrinsics=K)
frame, depth, _ = synthetic_rgbd(w, h, shift=(8, 16))
fmap = engine.encode(frame, ref.full.means)
depth_m = validate_depth(depth, (h, w))
times = {"2d": [], "3d": []}
for _ in range(args.reps):
    for mode in times:
        engine.config = engine.config.replace(consensus_mode=mode)
        t = time.perf_counter()
        _, used, _ = stages.consensus(engine._context(ref), ref.full, fmap, depth_m, K)
        times[mode].append(time.perf_counter() - t)
        assert used == mode, (mode, used)
for mode, ts in times.items():
    ms = 1000 * np.asarray(ts)
    print(f"consensus {mode}: p50 {np.median(ms):.2f} ms  p95 {np.percentile(ms, 95):.2f} ms  min {ms.min():.2f} ms")
