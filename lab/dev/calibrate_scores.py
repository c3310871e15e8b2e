"""Fit the calibrated-confidence coefficients (semcorr_ros.engine.confidence) on a PF-WILLOW-format split.

Runs the engine (default configuration, raw scores) over every pair, labels each keypoint "correct at
PCK@ALPHA (bbox)", fits a logistic regression (Newton's method, small L2) on the score features, and prints the
coefficients to put into EngineConfig.score_calibration, with ECE and top-k PCK before and after.

With --holdout the fit is also checked out of sample: "category" fits on all sub-classes but one and predicts
the left-out one (leave-one-category-out, every category in turn); "image" splits every sub-class's images into
two halves and predicts the pairs whose target image is in one half with the fit on the pairs whose target is in
the other (2-fold). The held-out predictions of all folds are pooled and summarised like the in-sample fit.

Usage (from outside the repository root): python lab/dev/calibrate_scores.py ROOT [--alpha 0.1]
    [--holdout none|category|image]
"""

import argparse

import numpy as np

from semcorr_ros.config import EngineConfig
from semcorr_ros.data import build_dataset
from semcorr_ros.engine import CorrespondenceEngine
from semcorr_ros.engine.confidence import fit_logistic
from semcorr_ros.eval.calibration import confidence_summary
from semcorr_ros.eval.pck import normalisers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--holdout", choices=("none", "category", "image"), default="none",
                    help="also report out-of-sample ECE / top-k PCK (see the module docstring)")
    args = ap.parse_args()
    ds = build_dataset("pf-willow", args.root)
    engine = CorrespondenceEngine(EngineConfig(score_calibration=None))
    engine.cache_size = 64
    feats, labels, raw, groups = [], [], [], []
    for i in range(len(ds)):
        s = ds[i]
        r = engine.match_pair(s.src_image, s.src_kps, s.tgt_image, src_key=(s.category, s.src_name),
                              tgt_key=(s.category, s.tgt_name))
        err = np.linalg.norm(r.xy - s.tgt_kps, axis=1) / float(normalisers(s.tgt_bbox[None], "bbox")[0])
        feats.append(r.score_features)
        labels.append(err <= args.alpha)
        raw.append((err, r.score))
        groups.append((s.category, s.tgt_name))
    x, y = np.concatenate(feats), np.concatenate(labels).astype(float)
    err = np.concatenate([e for e, _ in raw])
    before = confidence_summary(err, np.concatenate([s for _, s in raw]), args.alpha)
    w = fit_logistic(x, y)
    p = 1.0 / (1.0 + np.exp(-(x @ w)))
    after = confidence_summary(err, p, args.alpha)
    print(f"{len(y)} keypoints, {y.mean():.4f} correct at PCK@{args.alpha}")
    for name, s in (("raw", before), ("calibrated", after)):
        print(f"{name:>10}: ECE {s['ece']:.4f}  top-k PCK " + " ".join(f"{k} {v:.3f}" for k, v in s["pck_top"].items()))
    print("score_calibration = (" + ", ".join(f"{c:.4f}" for c in w) + ")")
    if args.holdout != "none":
        held = np.full(len(y), np.nan)
        kp_group = np.concatenate([[g] * len(f) for g, f in zip(groups, feats)]) if groups else np.zeros((0, 2))
        cats = kp_group[:, 0]
        if args.holdout == "category":
            folds = [cats == c for c in sorted(set(cats))]
        else:  # two halves of every category's target images (sorted names, alternating)
            half = np.zeros(len(y), bool)
            for c in sorted(set(cats)):
                imgs = sorted(set(kp_group[cats == c, 1]))
                second = set(imgs[1::2])
                half |= (cats == c) & np.isin(kp_group[:, 1], list(second))
            folds = [half, ~half]
        for test in folds:
            wf = fit_logistic(x[~test], y[~test])
            held[test] = 1.0 / (1.0 + np.exp(-(x[test] @ wf)))
        out = confidence_summary(err, held, args.alpha)
        print(f"{'held-out':>10}: ECE {out['ece']:.4f}  top-k PCK "
              + " ".join(f"{k} {v:.3f}" for k, v in out["pck_top"].items())
              + f"  ({args.holdout}, {len(folds)} folds)")


if __name__ == "__main__":
    main()
