"""``semcorr bench``: per-frame latency (p50/p95) and peak memory of ``match`` on a 640x480 RGB-D frame.

The reference is set once (its features cached, as in the node); each timed call is a full
``engine.match(image, depth, K)``: features, matching, depth-aware pass, KBC when triggered, 3D lifting, pose.
The frames are synthetic (a smooth random texture and a tilted depth plane), so the figure needs no data.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np

from semcorr_ros.cli.common import add_engine_arguments, add_json_argument, engine_config, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", type=int, default=30, help="timed frames (default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed frames first (default: %(default)s)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_arguments(parser)
    add_json_argument(parser)


def synthetic_rgbd(width: int, height: int, seed: int = 0, shift: tuple[int, int] = (0, 0)):
    """A textured frame, its depth (uint16 mm, a tilted plane at ~1 m) and intrinsics."""
    rng = np.random.default_rng(seed)
    small = rng.random((height // 16 + 2, width // 16 + 2, 3))
    ys = np.linspace(0, small.shape[0] - 1.001, height)
    xs = np.linspace(0, small.shape[1] - 1.001, width)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    img = (small[y0][:, x0] * (1 - fy) * (1 - fx) + small[y0 + 1][:, x0] * fy * (1 - fx)
           + small[y0][:, x0 + 1] * (1 - fy) * fx + small[y0 + 1][:, x0 + 1] * fy * fx)
    img = np.roll((img * 255).astype(np.uint8), shift, axis=(0, 1))
    depth = (1000 + 0.3 * np.arange(width)[None, :] + 0.2 * np.arange(height)[:, None]).astype(np.uint16)
    depth = np.broadcast_to(depth, (height, width)).copy()
    K = np.array([[600.0, 0, width / 2 - 0.5], [0, 600.0, height / 2 - 0.5], [0, 0, 1]])
    return img, depth, K


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from semcorr_ros.engine import CorrespondenceEngine

    cfg = engine_config(args)
    t = time.perf_counter()
    engine = CorrespondenceEngine(cfg)
    load_s = time.perf_counter() - t
    w, h = args.width, args.height
    ref_img, ref_depth, K = synthetic_rgbd(w, h)
    gx, gy = np.meshgrid(np.linspace(0.3, 0.7, 4) * w, np.linspace(0.3, 0.7, 3) * h)
    kps = np.stack([gx.ravel(), gy.ravel()], 1)
    engine.set_reference(ref_img, kps, depth=ref_depth, intrinsics=K)
    frame, depth, _ = synthetic_rgbd(w, h, shift=(8, 16))
    lat, stages = [], {}
    bar = tqdm(total=args.warmup + args.frames, desc="bench", unit="frame", disable=args.no_progress)
    for i in range(args.warmup + args.frames):
        t = time.perf_counter()
        res = engine.match(frame, depth, K)
        dt = time.perf_counter() - t
        bar.update(1)
        if i >= args.warmup:
            lat.append(dt)
            for k, v in res.timings.items():
                stages.setdefault(k, []).append(v)
    bar.close()
    lat_ms = np.asarray(lat) * 1000.0
    peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out = {
        "device": str(engine.device),
        "sources": list(cfg.sources),
        "frame": [w, h],
        "frames": len(lat),
        "latency_ms": {"p50": float(np.percentile(lat_ms, 50)), "p95": float(np.percentile(lat_ms, 95)),
                       "mean": float(lat_ms.mean()), "min": float(lat_ms.min())},
        "fps_p50": float(1000.0 / np.percentile(lat_ms, 50)),
        "stages_ms_p50": {k: float(np.median(v) * 1000.0) for k, v in stages.items()},
        "peak_rss_mb": float(peak_rss_mb),
        "model_load_s": load_s,
        "kbc_used": bool(res.kbc_used),
        "depth_weighted": bool(res.depth_weighted),
        "prior_mode_used": res.prior_mode_used,
        "config": cfg.to_dict(),
    }
    print(f"device {out['device']}  sources {','.join(cfg.sources)}  frame {w}x{h}  frames {len(lat)}")
    print(f"latency p50 {out['latency_ms']['p50']:.1f} ms  p95 {out['latency_ms']['p95']:.1f} ms  "
          f"({out['fps_p50']:.1f} FPS)  peak RSS {peak_rss_mb:.0f} MB  model load {load_s:.1f} s")
    print(f"consensus prior used: {res.prior_mode_used}")
    print("stages p50 (ms): " + "  ".join(f"{k} {v:.1f}" for k, v in out["stages_ms_p50"].items()))
    write_json(args.json, out)
    return 0
