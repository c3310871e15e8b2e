"""``semcorr eval --dataset pf-willow --root DIR``: PCK on a semantic-correspondence benchmark.

Every image is encoded once (features cached by image name), then every pair is matched with the engine's
evaluation path. Prints a per-category table, writes ``--json`` (contract in DESIGN.md) and a PCK-vs-alpha PNG.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from semcorr_ros.cli.common import add_engine_arguments, add_json_argument, engine_config, write_json
from semcorr_ros.errors import SemcorrError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=["pf-willow", "spair", "pf-pascal", "ap10k", "references"],
                        help="benchmark format (references: your own views, ROOT/<category>/<view>.yaml reference "
                             "files)")
    parser.add_argument("--root", required=True, type=Path, help="dataset folder")
    parser.add_argument("--split", default=None,
                        help="split (SPair, PF-PASCAL: trn | val | test; AP-10K: train | val | test of split1; "
                             "default test)")
    parser.add_argument("--threshold", choices=["bbox", "img"], default="bbox",
                        help="PCK threshold: alpha * max side of the target bbox or image (default: %(default)s)")
    parser.add_argument("--categories", default=None, help="comma-separated categories (default: all)")
    parser.add_argument("--max-pairs", type=int, default=None, help="evenly subsample at most N pairs")
    parser.add_argument("--small-object", type=float, default=None, metavar="FRACTION",
                        help="small-object setting: shrink every target object to cover FRACTION of a 640x480 "
                             "canvas over another image of the dataset (e.g. 0.03), to measure KBC")
    parser.add_argument("--kbc-box", choices=["estimate", "gt"], default="estimate",
                        help="where KBC crops the target: around the first-pass matches (estimate, as live) or "
                             "the dataset's target box (gt, the benchmark protocol with known object boxes)")
    parser.add_argument("--plot", type=Path, default=None,
                        help="PCK-vs-alpha PNG (default: next to --json, else pck_curve.png)")
    parser.add_argument("--batch-size", type=int, default=8,
                        help="images encoded per forward pass, looking ahead over the next pairs "
                             "(default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_engine_arguments(parser)
    add_json_argument(parser)


def run(args: argparse.Namespace) -> int:
    from semcorr_ros.data import build_dataset
    from semcorr_ros.engine import CorrespondenceEngine
    from semcorr_ros.eval.benchmark import evaluate
    from semcorr_ros.eval.pck_plots import plot_pck_curve

    kwargs = {}
    if args.categories:
        kwargs["categories"] = [c.strip() for c in args.categories.split(",") if c.strip()]
    if args.max_pairs:
        kwargs["max_pairs"] = args.max_pairs
    dataset = build_dataset(args.dataset, args.root, split=args.split, **kwargs)
    if args.small_object:
        from semcorr_ros.data.small import SmallObjectPairs

        dataset = SmallObjectPairs(dataset, fraction=args.small_object)
    cfg = engine_config(args)
    engine = CorrespondenceEngine(cfg)
    batch = max(1, args.batch_size)
    engine.cache_size = max(64, 4 * batch)
    kbc_pairs = 0
    calls = 0

    def prefetch(start: int) -> None:
        """Batch-encode the not yet cached images of pairs start .. start+batch-1 (unreadable ones are left to
        the runner, which reports them)."""
        todo: dict = {}
        for j in range(start, min(start + batch, len(dataset))):
            try:
                s = dataset[j]
            except SemcorrError:
                continue
            for name, img in ((s.src_name, s.src_image), (s.tgt_name, s.tgt_image)):
                key = (s.category, name)
                if not engine.cached(key) and key not in todo:
                    todo[key] = img
        if todo:
            engine.encode_maps_batch(list(todo.values()), list(todo.keys()))

    def predict(sample):
        nonlocal kbc_pairs, calls
        if batch > 1 and calls % batch == 0:
            prefetch(calls)
        calls += 1
        pred = np.full(sample.src_kps.shape, np.nan)
        score = np.full(len(sample.src_kps), np.nan)
        ok = np.isfinite(sample.src_kps).all(1)
        res = engine.match_pair(sample.src_image, sample.src_kps[ok], sample.tgt_image,
                                src_key=(sample.category, sample.src_name), tgt_key=(sample.category, sample.tgt_name),
                                tgt_box=sample.tgt_bbox if args.kbc_box == "gt" else None)
        pred[ok] = res.xy
        score[ok] = res.score
        kbc_pairs += int(res.kbc_used)
        return pred, score

    print(f"{args.dataset}: {len(dataset)} pairs, {len(dataset.categories)} categories; sources "
          f"{','.join(cfg.sources)}; kbc {cfg.kbc}; device {engine.device}")
    t = time.perf_counter()
    report = evaluate(dataset, predict, threshold=args.threshold, progress=not args.no_progress)
    elapsed = time.perf_counter() - t
    print(report.format_table())
    out = report.to_json_dict()
    out.update({"dataset": args.dataset, "root": str(args.root), "small_object": args.small_object,
                "kbc_box": args.kbc_box,
                "kbc_pairs": kbc_pairs, "seconds": elapsed,
                "config": cfg.to_dict()})
    plot = args.plot or (args.json.with_suffix(".png") if args.json else Path("pck_curve.png"))
    plot_pck_curve(report, plot, title=f"{args.dataset} ({','.join(cfg.sources)}, kbc {cfg.kbc})")
    if report.confidence is not None:
        from semcorr_ros.eval.pck_plots import plot_reliability

        c = report.confidence
        plot_reliability(c, plot.with_name(plot.stem + "_confidence.png"), title=f"{args.dataset}: match scores")
        print(f"PCK@{c['alpha']:g} of the most confident keypoints: "
              + "  ".join(f"top {k} {v:.3f}" for k, v in c["pck_top"].items() if v is not None)
              + f"  (ECE {c['ece']:.3f})")
    print(f"PCK@0.1 ({args.threshold}) = {out['pck'].get('0.1')}  pairs {out['pairs']}  "
          f"skipped {len(out.get('skipped', []))}  KBC used on {kbc_pairs} pairs  {elapsed:.1f} s  plot {plot}")
    write_json(args.json, out)
    return 0
