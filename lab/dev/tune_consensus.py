"""Developer sweep of the 2D consensus prior on pf-willow-dev with the default engine (exactly the eval path).

Every image is encoded once (engine cache); each setting then only re-runs matching (seconds).
Not part of the package. Usage: python lab/dev/tune_consensus.py ROOT [--grid W:S,W:S,...] [--thresholds ..]
"""

import argparse
import time

import numpy as np

from semcorr_ros.config import EngineConfig
from semcorr_ros.data import build_dataset
from semcorr_ros.engine import CorrespondenceEngine
from semcorr_ros.eval.benchmark import evaluate

p = argparse.ArgumentParser()
p.add_argument("root")
p.add_argument("--settings", default="0:0.1,0.05:0.1,0.1:0.1,0.2:0.1,0.1:0.05,0.1:0.2,0.2:0.2",
               help="comma-separated WEIGHT:SIGMA[:THRESHOLD[:MIN_INLIERS]]")
args = p.parse_args()

ds = build_dataset("pf-willow", args.root)
engine = CorrespondenceEngine(EngineConfig())
engine.cache_size = 10_000
base = engine.config
stats = {"used": 0, "calls": 0}


def predict(s):
    pred = np.full(s.src_kps.shape, np.nan)
    ok = np.isfinite(s.src_kps).all(1)
    res = engine.match_pair(s.src_image, s.src_kps[ok], s.tgt_image, src_key=(s.category, s.src_name),
                            tgt_key=(s.category, s.tgt_name))
    pred[ok] = res.xy
    stats["used"] += int(res.prior_used)
    stats["calls"] += 1
    return pred


for item in args.settings.split(","):
    parts = [float(x) for x in item.split(":")]
    w, sigma = parts[0], parts[1]
    thr = parts[2] if len(parts) > 2 else base.consensus_threshold
    mi = int(parts[3]) if len(parts) > 3 else base.consensus_min_inliers
    engine.config = base.replace(consensus_prior=w > 0, consensus_weight=w, consensus_sigma=sigma,
                                 consensus_threshold=thr, consensus_min_inliers=mi)
    stats.update(used=0, calls=0)
    t = time.perf_counter()
    rep = evaluate(ds, predict, threshold="bbox", progress=False)
    pck = rep.to_json_dict()["pck"]
    print(f"w={w:<5} sigma={sigma:<5} thr={thr:<5} min_inl={mi:<3} "
          + " ".join(f"@{k}={v:.4f}" for k, v in pck.items())
          + f"  prior used {stats['used']}/{stats['calls']}  {time.perf_counter() - t:.1f}s", flush=True)
