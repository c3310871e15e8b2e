"""``semcorr train-fusion --dataset DS --root DIR``: learn the fusion weights contrastively (InfoNCE).

The engine's frozen sources encode every image once (cached in memory, and on disk with ``--cache-dir``); the
per-(source, layer) fusion logits (and the temperature) are then trained on cached per-map similarities
(:mod:`semcorr_ros.lab.train.fusion_train`). Writes a ``semcorr-fusion-v1`` file (``--out``) that the engine loads
with ``--fusion-weights PATH``, a loss-curve PNG next to it and, with ``--json``, a summary.

Honest evaluation: ``--holdout-images F`` / ``--holdout-categories A,B`` / ``--split-file S`` keep pairs out of
training; ``--evaluate`` then runs the full engine (``semcorr eval``'s path) on the held-out pairs with uniform,
hand-set (``source_weights``) and learned fusion and prints PCK for each. See docs/training.md.

``--fusion-model projected`` learns a projected fusion instead (``semcorr-fusion-v2``: the logits plus one
learned rank-``--rank`` projection per map, :mod:`semcorr_ros.lab.train.fusion_proj`): it adapts the matching metric
to the training categories, opt-in, for use on the same kinds of objects.

RGB-D data (``--dataset synth``) also trains the depth-aware module's ``depth_floor`` and ``depth_spread``
(``--learn-depth``, on by default there); they are printed, written to the ``--json`` summary and used with the
engine flags ``--depth-floor`` / ``--depth-spread`` (ROS parameters ``depth_floor`` / ``depth_spread``).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from semcorr_ros.cli.common import add_engine_arguments, add_json_argument, engine_config, write_json
from semcorr_ros.errors import ConfigError

log = logging.getLogger(__name__)

DATASET_CHOICES = ("pf-willow", "spair", "pf-pascal", "ap10k", "references", "synth")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", required=True, choices=DATASET_CHOICES,
                        help="training data format (references: your own annotated views, "
                             "ROOT/<category>/<view>.yaml reference files)")
    parser.add_argument("--root", type=Path, default=None, help="dataset folder (not used by synth)")
    parser.add_argument("--split", default=None,
                        help="split to train on (SPair/PF-PASCAL: trn | val | test; AP-10K: train | val | test; "
                             "default: the loader's default, PF-WILLOW has one split)")
    parser.add_argument("--categories", default=None, help="comma-separated categories (default: all)")
    parser.add_argument("--max-pairs", type=int, default=None, help="evenly subsample at most N pairs")
    parser.add_argument("--synth-scenes", type=int, default=4,
                        help="synth: scenes per category, seeds seed*1000+j (default: %(default)s)")
    parser.add_argument("--synth-frames", type=int, default=6,
                        help="synth: frames (= reference->frame pairs) per scene (default: %(default)s)")
    parser.add_argument("--fusion-model", choices=("weights", "projected"), default="weights",
                        help="weights: one weight per (source, layer) map (semcorr-fusion-v1, the shipped kind); "
                             "projected: also a learned linear projection per map (semcorr-fusion-v2), which adapts "
                             "the metric to the training categories (default: %(default)s)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="(default: 40 for weights, 10 for projected; a projected fusion trained on rendered "
                             "scenes generalises to other instances with 2-3: use --validation to choose; "
                             "docs/training.md, 'Projected fusion')")
    parser.add_argument("--seed", type=int, default=0, help="pair order and holdout selection (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=0.05, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--batch-pairs", type=int, default=16, help="pairs per step (default: %(default)s)")
    parser.add_argument("--temperature", type=float, default=0.05,
                        help="initial InfoNCE temperature (default: %(default)s)")
    parser.add_argument("--fixed-temperature", action="store_true", help="do not learn the temperature")
    parser.add_argument("--target", choices=("bilinear", "hard"), default="bilinear",
                        help="positive: the 4 cells around the target keypoint, bilinear weights, or the nearest "
                             "cell (default: %(default)s)")
    parser.add_argument("--init", choices=("uniform", "default"), default="uniform",
                        help="initial weights: equal per map, or the configuration's source_weights "
                             "(default: %(default)s)")
    parser.add_argument("--learn-depth", action=argparse.BooleanOptionalAction, default=None,
                        help="also learn the depth-aware module's depth_floor and depth_spread on the pairs with "
                             "depth, starting from --depth-floor/--depth-spread (default: when the data has depth, "
                             "i.e. --dataset synth)")
    g = parser.add_argument_group("projected fusion (--fusion-model projected)")
    g.add_argument("--rank", type=int, default=64, help="projection rank per map (default: %(default)s)")
    g.add_argument("--proj-penalty", type=float, default=10.0,
                   help="weight of ||P - P_pca||^2 / ||P_pca||^2 per map (default: %(default)s)")
    g.add_argument("--gain-penalty", type=float, default=3.0,
                   help="weight of mean(log gain^2) of the per-channel gains (default: %(default)s)")
    g.add_argument("--lr-proj", type=float, default=0.002, help="learning rate of the projections (default: "
                                                                 "%(default)s)")
    g.add_argument("--lr-gain", type=float, default=0.02, help="learning rate of the log-gains (default: %(default)s)")
    g.add_argument("--validation", type=float, default=0.0, metavar="FRACTION",
                   help="choose the number of epochs (up to --epochs) on this fraction of the training pairs, held "
                        "out as whole independent groups (synthetic scenes, sub-classes), by argmax hit rate; then "
                        "train on all training pairs for that many epochs (default: off, train --epochs)")
    parser.add_argument("--out", type=Path, default=Path("fusion.safetensors"),
                        help="weights file to write; the loss curve goes to <stem>_loss.png (default: %(default)s)")
    g = parser.add_argument_group("held-out evaluation")
    g.add_argument("--holdout-images", type=float, default=0.0, metavar="FRACTION",
                   help="hold out this fraction of every category's images: train on pairs of the other images "
                        "only, evaluate on pairs of held-out images only (no image shared)")
    g.add_argument("--holdout-categories", default=None, help="comma-separated categories held out entirely")
    g.add_argument("--split-file", type=Path, default=None,
                   help="read the train/held-out pair split from this semcorr-split-v1 JSON (overrides --holdout-*)")
    g.add_argument("--write-split", type=Path, default=None, help="write the split used as semcorr-split-v1 JSON")
    g.add_argument("--evaluate", action="store_true",
                   help="after training, PCK of the full engine on the held-out pairs with uniform, hand-set and "
                        "learned fusion")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="keep the encoded feature maps in a file here and reuse them on the next run")
    parser.add_argument("--batch-size", type=int, default=8, help="images per encode pass (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_engine_arguments(parser)
    add_json_argument(parser)


def _dataset(args: argparse.Namespace):
    kwargs = {}
    if args.categories:
        kwargs["categories"] = [c.strip() for c in args.categories.split(",") if c.strip()]
    if args.max_pairs:
        kwargs["max_pairs"] = args.max_pairs
    if args.dataset == "synth":
        from semcorr_ros.lab import require

        require(("open3d",), "semcorr train-fusion --dataset synth")
        from semcorr_ros.lab.train.fusion_synth import SynthPairs

        return SynthPairs(scenes=args.synth_scenes, frames=args.synth_frames, seed=args.seed, **kwargs)
    if args.root is None:
        raise ConfigError(f"--root is required for dataset {args.dataset!r}")
    from semcorr_ros.data import build_dataset

    return build_dataset(args.dataset, args.root, split=args.split, **kwargs)


def _source_logits(engine, source_weights: dict[str, float] | None):
    """Logits of per-source weights split equally among each source's layers (``None``: 0.5 each source)."""
    import torch

    try:
        from semcorr_ros.engine.multiscale import base_name
    except ImportError:  # engines without multi-scale sources
        def base_name(name: str) -> str:
            return name
    w = [(1.0 if source_weights is None else source_weights.get(base_name(s.name), 1.0)) / len(s.layer_names)
         for s in engine.sources for _ in s.layer_names]
    w = torch.tensor(w, dtype=torch.float32)
    return torch.log(w / w.sum())


def run(args: argparse.Namespace) -> int:
    import torch

    from semcorr_ros.engine import CorrespondenceEngine
    from semcorr_ros.lab.train.fusion_data import MapCache, build_pair_tensors, cache_name
    from semcorr_ros.lab.train.fusion_split import PairSplit, load_split, make_split, save_split
    from semcorr_ros.lab.train.fusion_train import argmax_pck, train_fusion

    t_start = time.perf_counter()
    if args.validation and args.fusion_model != "projected":
        raise ConfigError("--validation chooses the epochs of --fusion-model projected only")
    if args.learn_depth and args.depth_cells != "mean":
        raise ConfigError(f"--learn-depth fits the depth-aware parameters of --depth-cells mean only, got "
                          f"--depth-cells {args.depth_cells}")
    dataset = _dataset(args)
    progress = not args.no_progress
    if args.split_file is not None:
        split = load_split(dataset, args.split_file)
    elif args.holdout_images > 0 or args.holdout_categories:
        cats = [c.strip() for c in (args.holdout_categories or "").split(",") if c.strip()]
        split = make_split(dataset, args.holdout_images, cats, args.seed)
    else:
        split = PairSplit(list(range(len(dataset))), [], {"image_fraction": 0.0, "categories": []})
    if not split.train:
        raise ConfigError("the split leaves no training pairs")
    if args.evaluate and not split.holdout:
        raise ConfigError("--evaluate needs held-out pairs: use --holdout-images, --holdout-categories or "
                          "--split-file (the training pairs are not an honest test)")
    if args.write_split:
        save_split(split, dataset, args.write_split)

    cfg = engine_config(args)
    engine = CorrespondenceEngine(cfg)
    keys = list(engine.fusion.keys)
    grid = cfg.grid
    print(f"{args.dataset}: {len(dataset)} pairs ({len(split.train)} training, {len(split.holdout)} held out); "
          f"maps {', '.join(keys)}; grid {grid}; device {engine.device}")
    fingerprint = {"keys": keys, "sources": cfg.sources, "weights": cfg.weights, "layers": cfg.layers,
                   "input_sizes": cfg.input_sizes, "device": engine.device.type, "bf16": cfg.cpu_bf16,
                   "fp16": cfg.fp16, "multiscale": getattr(cfg, "multiscale", None), "dataset": args.dataset,
                   "root": str(Path(args.root).resolve()) if args.root else None,
                   "synth": [args.synth_scenes, args.synth_frames, args.seed, args.categories]
                   if args.dataset == "synth" else None}
    cache_file = args.cache_dir / f"{cache_name(fingerprint)}.pt" if args.cache_dir else None
    cache = MapCache(engine.encode_maps_batch, keys, cache_file, fingerprint, args.batch_size)
    init = _source_logits(engine, cfg.source_weights) if args.init == "default" else None
    if args.fusion_model == "projected":
        return _run_projected(args, dataset, split, engine, cache, init, t_start)
    t = time.perf_counter()
    train_pairs = build_pair_tensors(dataset, split.train, cache, grid, cfg.center_features, progress)
    held_pairs = build_pair_tensors(dataset, split.holdout, cache, grid, cfg.center_features, progress)
    prep_s = time.perf_counter() - t

    has_depth = any(p.depth is not None for p in train_pairs)
    learn_depth = has_depth if args.learn_depth is None else args.learn_depth
    if args.depth_cells != "mean" and learn_depth:
        print(f"train-fusion: --depth-cells {args.depth_cells}: the depth-aware parameters are not learned")
        learn_depth = False
    if learn_depth and not has_depth:
        raise ConfigError(f"--learn-depth needs RGB-D training data; {args.dataset} pairs have no depth "
                          "(use --dataset synth)")
    if learn_depth and not 0.0 < cfg.depth_floor < 1.0:
        raise ConfigError(f"--learn-depth starts from --depth-floor, which must be in (0, 1), got {cfg.depth_floor}")
    result = train_fusion(train_pairs, keys, epochs=40 if args.epochs is None else args.epochs, seed=args.seed,
                          lr=args.lr, batch_pairs=args.batch_pairs, temperature=args.temperature,
                          learn_temperature=not args.fixed_temperature, init_logits=init, target=args.target,
                          holdout=held_pairs, progress=progress, learn_depth=learn_depth,
                          depth_floor=cfg.depth_floor, depth_spread=max(cfg.depth_spread, 0.05),
                          depth_sigma_min=cfg.depth_sigma_min)
    print("learned weights: " + ", ".join(f"{k} {v:.3f}" for k, v in result.weights.items())
          + f"; temperature {result.temperature:.4f}")
    if result.depth_floor is not None:
        print(f"learned depth-aware parameters: depth_floor {result.depth_floor:.3f}, depth_spread "
              f"{result.depth_spread:.3f} (engine flags --depth-floor/--depth-spread, ROS parameters "
              "depth_floor/depth_spread)")
    variants = {**_baseline_logits(engine), "learned": result.logits}
    extra = {
        "fusion_model": "weights",
        "depth_aware": {"learned": result.depth_floor is not None, "depth_floor": result.depth_floor,
                        "depth_spread": result.depth_spread, "init": [cfg.depth_floor, cfg.depth_spread],
                        "depth_sigma_min": cfg.depth_sigma_min,
                        "train_pairs_with_depth": sum(p.depth is not None for p in train_pairs)},
        "grid_argmax_hit_rate": {name: {"train": argmax_pck(train_pairs, torch.softmax(lg, 0)),
                                        "holdout": argmax_pck(held_pairs, torch.softmax(lg, 0)) if held_pairs
                                        else None}
                                 for name, lg in variants.items()},
    }
    return _finish(args, dataset, split, engine, result, train_pairs, held_pairs, prep_s, t_start, extra)


def _finish(args, dataset, split, engine, result, train_pairs, held_pairs, prep_s, t_start, extra: dict) -> int:
    """Write the weights file and loss plot, print the loss line, write the ``--json`` summary (the fields both
    fusion models share, plus ``extra``) and, with ``--evaluate``, run and print the held-out comparison."""
    from semcorr_ros.lab.train.fusion_train import write_outputs

    out, plot = write_outputs(result, args.out)
    kind = " (semcorr-fusion-v2)" if getattr(result, "projections", None) else ""
    print(f"InfoNCE loss {result.loss_curve[0]:.4f} -> {result.loss_curve[-1]:.4f} (train)"
          + (f", {result.holdout_curve[0]:.4f} -> {result.holdout_curve[-1]:.4f} (held out)"
             if result.holdout_curve else "") + f"; wrote {out}{kind} and {plot}")
    summary = {
        "dataset": args.dataset, "root": str(args.root), "split": args.split, "pairs": len(dataset),
        "train_pairs": len(train_pairs), "holdout_pairs": len(held_pairs),
        "train_keypoints": sum(p.num_keypoints for p in train_pairs), "split_protocol": split.info,
        "keys": result.keys, "weights": result.weights, "temperature": result.temperature, **extra,
        "epochs": len(result.loss_curve) - 1, "seed": args.seed, "lr": args.lr, "batch_pairs": args.batch_pairs,
        "target": args.target, "init": args.init, "loss_curve": result.loss_curve,
        "holdout_loss_curve": result.holdout_curve, "out": str(out), "plot": str(plot),
        "seconds": {"prepare": prep_s, "train": result.seconds}, "config": engine.config.to_dict(),
    }
    if args.evaluate:
        fusions = {name: _logit_fusion(engine, lg) for name, lg in _baseline_logits(engine).items()}
        fusions["learned"] = result.fusion(grid=engine.fusion.grid, center=engine.fusion.center)
        summary["holdout_eval"] = _evaluate(engine, dataset, split.holdout, fusions, not args.no_progress)
        _print_eval(summary["holdout_eval"], len(split.holdout))
    summary["seconds"]["total"] = time.perf_counter() - t_start
    write_json(args.json, summary)
    return 0


def _baseline_logits(engine) -> dict:
    import torch

    return {"uniform_map": torch.zeros(len(engine.fusion.keys)), "uniform_source": _source_logits(engine, None),
            "hand_set": _source_logits(engine, engine.config.source_weights)}


def _logit_fusion(engine, logits):
    """A plain fusion like the engine's with ``logits``."""
    import torch

    from semcorr_ros.engine.fusion import FeatureFusion

    f = FeatureFusion(engine.fusion.keys, grid=engine.fusion.grid, center=engine.fusion.center)
    with torch.no_grad():
        f.logits.copy_(logits)
    return f


def _print_eval(results: dict, pairs: int) -> None:
    print(f"held-out PCK ({pairs} pairs, full engine):")
    print(f"  {'fusion':16s} {'@0.05':>7s} {'@0.1':>7s} {'@0.15':>7s}")
    for name, r in results.items():
        print(f"  {name:16s} "
              + " ".join(f"{(r['pck'].get(a) or float('nan')):7.3f}" for a in ("0.05", "0.1", "0.15")))


def _run_projected(args, dataset, split, engine, cache, init, t_start) -> int:
    """``--fusion-model projected``: train, write the semcorr-fusion-v2 file, summary, optional evaluation."""
    from semcorr_ros.lab.train.fusion_proj import build_projection_data, projected_hit_rate, train_projected_fusion
    from semcorr_ros.lab.train.fusion_split import group_split

    cfg = engine.config
    progress = not args.no_progress
    if args.learn_depth:
        raise ConfigError("--learn-depth is not supported with --fusion-model projected (train the depth "
                          "parameters with the weights model)")
    fit_idx = val_idx = None
    if args.validation:
        fit_idx, val_idx = group_split(dataset, split.train, args.validation, args.seed)
    t = time.perf_counter()
    images, train_pairs = build_projection_data(dataset, split.train, cache, cfg.grid, progress=progress)
    images, held_pairs = build_projection_data(dataset, split.holdout, cache, cfg.grid, images, progress)
    prep_s = time.perf_counter() - t
    if not train_pairs:
        raise ConfigError("no training pair has a valid keypoint")
    options = dict(rank=args.rank, seed=args.seed, lr=args.lr, lr_proj=args.lr_proj, lr_gain=args.lr_gain,
                   proj_penalty=args.proj_penalty, gain_penalty=args.gain_penalty, batch_pairs=args.batch_pairs,
                   temperature=args.temperature, learn_temperature=not args.fixed_temperature, init_logits=init,
                   target=args.target, center=cfg.center_features, progress=progress)
    epochs = 10 if args.epochs is None else args.epochs
    selection = None
    if val_idx is not None:
        images, fit_pairs = build_projection_data(dataset, fit_idx, cache, cfg.grid, images, progress)
        images, val_pairs = build_projection_data(dataset, val_idx, cache, cfg.grid, images, progress)
        if not fit_pairs or not val_pairs:
            raise ConfigError("--validation left no usable fitting or validation pair")
        probe = train_projected_fusion(images, fit_pairs, engine.fusion.keys, cfg.grid, epochs=epochs,
                                       validation=val_pairs, **options)
        chosen = probe.best_epoch()
        print(f"epoch choice on {len(val_pairs)} validation pairs (fitted on {len(fit_pairs)}): argmax hit rate per "
              "epoch " + " ".join(f"{v:.3f}" for v in probe.validation_curve) + f" -> {chosen} epochs")
        selection = {"fraction": args.validation, "fit_pairs": len(fit_pairs), "validation_pairs": len(val_pairs),
                     "validation_pair_ids": [dataset.pair_info(i).pair_id for i in val_idx],
                     "hit_rate_curve": probe.validation_curve, "max_epochs": epochs, "chosen_epochs": chosen}
        epochs = chosen
    result = train_projected_fusion(images, train_pairs, engine.fusion.keys, cfg.grid, epochs=epochs,
                                    holdout=held_pairs, **options)
    ranks = [int(p.shape[0]) for p in result.projections]
    print("learned weights: " + ", ".join(f"{k} {v:.3f}" for k, v in result.weights.items())
          + f"; projection ranks {ranks}; temperature {result.temperature:.4f}")
    extra = {
        "fusion_model": "projected", "ranks": ranks,
        "projected": {"rank": args.rank, "proj_penalty": args.proj_penalty, "gain_penalty": args.gain_penalty,
                      "lr_proj": args.lr_proj, "lr_gain": args.lr_gain, "epoch_selection": selection},
        "grid_argmax_hit_rate": {"learned": {
            "train": projected_hit_rate(result.model, images, train_pairs, cfg.grid),
            "holdout": projected_hit_rate(result.model, images, held_pairs, cfg.grid) if held_pairs else None}},
    }
    return _finish(args, dataset, split, engine, result, train_pairs, held_pairs, prep_s, t_start, extra)


def _evaluate(engine, dataset, indices, fusions: dict, progress) -> dict:
    """PCK of the full engine (evaluation path of ``semcorr eval``) on the pairs ``indices`` per fusion module."""
    import torch

    from semcorr_ros.eval.benchmark import evaluate
    from semcorr_ros.lab.train.fusion_split import PairSubset

    subset = PairSubset(dataset, indices)
    # The engine encodes the held-out images again (float32 maps, exactly as `semcorr eval` does; the training
    # cache holds bf16 copies) and keeps them for the other fusion variants.
    engine.cache_size = max(engine.cache_size, 2 * len(indices) + 8)

    def predict(sample):
        pred = np.full(sample.src_kps.shape, np.nan)
        ok = np.isfinite(sample.src_kps).all(1)
        res = engine.match_pair(sample.src_image, sample.src_kps[ok], sample.tgt_image,
                                src_key=(sample.category, sample.src_name), tgt_key=(sample.category, sample.tgt_name))
        pred[ok] = res.xy
        return pred

    out = {}
    saved = engine.fusion
    try:
        for name, fusion in fusions.items():
            engine.fusion = fusion.to(engine.device)
            report = evaluate(subset, predict, progress=progress)
            d = report.to_json_dict()
            out[name] = {"pck": d["pck"], "per_category": d.get("per_category"), "pairs": d["pairs"],
                         "weights": {k: float(v) for k, v in zip(fusion.keys, torch.softmax(fusion.logits, 0))},
                         "projected": fusion.projected}
    finally:
        engine.fusion = saved
    return out
