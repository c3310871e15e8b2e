"""``semcorr train-kbcnet --dataset pf-willow --root DIR``: train the KBCNet head on frozen, cached features.

The backbones and the fusion are the engine's (the same ``--backbone``/``--fusion-weights`` flags as ``eval``;
the head only fits the configuration it was trained with). Each image is encoded once; the head (CSFA +
centre-pivot 4D decoder) is trained on the training lattice ``--resolution`` with the keypoint cross-entropy of
:mod:`semcorr_ros.lab.train.kbcnet_train`. Then the full engine runs with the trained head over (at most
``--calibration-pairs`` of) the training pairs and the engine's confidence calibration is rescaled to the head's
scores (Platt scaling, :func:`semcorr_ros.lab.train.kbcnet_train.calibrate_head`; ``--no-calibrate`` skips it): the
head's scores sit higher than the NN matcher's, and ``kbc: auto`` and ``score_threshold`` read the confidence.
Writes the head (``semcorr-kbcnet-v1`` safetensors, the calibration in its metadata) and a loss-curve PNG.

Keep evaluation data out of training: ``--categories`` selects the training sub-classes (evaluate on the others
with ``semcorr eval --categories ... --matcher kbcnet --kbcnet-weights OUT``).

``--smoke``: a seconds-long run on tiny synthetic shifted-texture pairs with a random-projection feature source
(no dataset, no backbone weights) for CI.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from semcorr_ros.cli.common import add_engine_arguments

    parser.add_argument("--dataset", choices=["pf-willow", "spair"], default=None,
                        help="training benchmark (required unless --smoke)")
    parser.add_argument("--root", type=Path, default=None, help="dataset folder (required unless --smoke)")
    parser.add_argument("--split", default=None, help="split (SPair: trn | val | test; default trn)")
    parser.add_argument("--categories", default=None,
                        help="comma-separated training categories (default: all; hold some out for evaluation)")
    parser.add_argument("--max-pairs", type=int, default=None, help="evenly subsample at most N training pairs")
    parser.add_argument("--resolution", type=int, default=24,
                        help="training lattice side in cells (the head is resolution-agnostic; default %(default)s)")
    parser.add_argument("--epochs", type=int, default=6, help="(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=4, help="pairs per step (default: %(default)s)")
    parser.add_argument("--lr", type=float, default=2e-3, help="Adam learning rate (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")
    parser.add_argument("--dim", type=int, default=32, help="CSFA projection dimension (default: %(default)s)")
    parser.add_argument("--heads", type=int, default=2, help="CSFA attention heads (default: %(default)s)")
    parser.add_argument("--hidden", type=int, default=8, help="decoder channels (default: %(default)s)")
    parser.add_argument("--layers", type=int, default=3, help="centre-pivot convolutions (default: %(default)s)")
    parser.add_argument("--calibration-pairs", type=int, default=300,
                        help="training pairs (evenly subsampled) the confidence calibration is fitted on "
                             "(default: %(default)s)")
    parser.add_argument("--no-calibrate", action="store_true",
                        help="keep the engine's NN-fitted confidence calibration for this head")
    parser.add_argument("--out", type=Path, default=Path("kbcnet.safetensors"), help="(default: %(default)s)")
    parser.add_argument("--plot", type=Path, default=None, help="loss-curve PNG (default: OUT with .png)")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny synthetic run for CI (no dataset or weights; seconds)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_engine_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import torch

    from semcorr_ros.cli.common import engine_config
    from semcorr_ros.config import EngineConfig
    from semcorr_ros.engine import CorrespondenceEngine
    from semcorr_ros.engine.matching import pixels_to_uv
    from semcorr_ros.errors import ConfigError
    from semcorr_ros.eval.pck import normalisers
    from semcorr_ros.lab.train import kbcnet_train as kt

    progress = not args.no_progress
    if args.smoke:
        grid = args.resolution if args.resolution != 24 else 8
        cfg = EngineConfig(device="cpu", fusion_weights="none", grid=grid, kbc="off")
        engine = CorrespondenceEngine(cfg, sources=[kt.smoke_source()])
        images, raw = kt.smoke_pairs()
        pair_specs = [(s, t, sx, tx, images[s].shape, images[t].shape) for s, t, sx, tx in raw]
        units = [float(np.ptp(tx, axis=0).max()) for _, _, _, tx in raw]
        items = list(images.items())
        dim, hidden, heads = min(args.dim, 8), min(args.hidden, 4), min(args.heads, 2)
        epochs = min(args.epochs, 3)
        desc = "smoke"
    else:
        if args.dataset is None or args.root is None:
            raise ConfigError("train-kbcnet needs --dataset and --root (or --smoke)")
        from semcorr_ros.data import build_dataset

        kwargs = {}
        if args.categories:
            kwargs["categories"] = [c.strip() for c in args.categories.split(",") if c.strip()]
        if args.max_pairs:
            kwargs["max_pairs"] = args.max_pairs
        split = args.split or ("trn" if args.dataset == "spair" else None)
        dataset = build_dataset(args.dataset, args.root, split=split, **kwargs)
        cfg = engine_config(args)
        engine = CorrespondenceEngine(cfg)  # --device auto: CUDA when available (encoding and training)
        grid = args.resolution
        images: dict = {}
        pair_specs = []
        units: list[float] = []
        for i in range(len(dataset)):
            s = dataset[i]
            ks, kt_ = (s.category, s.src_name), (s.category, s.tgt_name)
            images.setdefault(ks, s.src_image)
            images.setdefault(kt_, s.tgt_image)
            pair_specs.append((ks, kt_, s.src_kps, s.tgt_kps, s.src_image.shape, s.tgt_image.shape))
            units.append(float(normalisers(s.tgt_bbox, "bbox")))
        items = list(images.items())
        dim, hidden, heads, epochs = args.dim, args.hidden, args.heads, args.epochs
        desc = f"{args.dataset} {','.join(dataset.categories)}"
    if grid < 4:
        raise ConfigError(f"--resolution must be >= 4, got {grid}")
    if args.calibration_pairs < 1:
        raise ConfigError(f"--calibration-pairs must be >= 1, got {args.calibration_pairs}")
    print(f"train-kbcnet: {desc}: {len(items)} images, {len(pair_specs)} pairs, lattice {grid}, device "
          f"{engine.device}, maps {engine.fusion.keys}")
    t = time.perf_counter()
    cache = kt.build_cache(engine, items, grid, progress=progress)
    encode_s = time.perf_counter() - t
    pairs = []
    for ks, kt_, sxy, txy, sshape, tshape in pair_specs:
        su = pixels_to_uv(torch.as_tensor(np.asarray(sxy), dtype=torch.float32), sshape[1], sshape[0])
        tu = pixels_to_uv(torch.as_tensor(np.asarray(txy), dtype=torch.float32), tshape[1], tshape[0])
        pairs.append(kt.TrainPair(ks, kt_, su, tu))
    weights = engine.fusion.weights.detach().cpu().float()
    result = kt.train_head(cache, pairs, engine.fusion.keys, weights, engine.fusion.center, epochs=epochs,
                           batch_size=args.batch_size, lr=args.lr, seed=args.seed, dim=dim, heads=heads,
                           hidden=hidden, layers=args.layers, progress=progress, device=engine.device,
                           on_epoch=lambda e, v: print(f"epoch {e + 1}/{epochs}: mean loss {v:.4f}", flush=True))
    info = {"data": desc, "pairs": len(pairs), "images": len(items), "resolution": grid, "epochs": epochs,
            "seed": args.seed, "lr": args.lr, "batch_size": args.batch_size,
            "final_epoch_loss": f"{result.epoch_losses[-1]:.4f}" if result.epoch_losses else "nan"}
    calibration = None
    if not args.no_calibrate:
        step = max(1, -(-len(pair_specs) // args.calibration_pairs))
        chosen = [kt.CalibrationPair(ks, kt_, np.asarray(sxy, float), np.asarray(txy, float), unit)
                  for (ks, kt_, sxy, txy, _, _), unit in list(zip(pair_specs, units))[::step]]
        try:
            calibration = kt.calibrate_head(engine, result.head, dict(items), chosen, progress=progress)
        except ValueError as exc:
            print(f"train-kbcnet: no confidence calibration for this head ({exc}); it keeps the engine's")
        else:
            print(f"confidence calibration on {len(chosen)} training pairs ({calibration.matches} matches, "
                  f"{calibration.accuracy:.3f} correct at PCK@0.1): ECE {calibration.ece_before:.3f} with the "
                  f"engine's -> {calibration.ece_after:.3f} rescaled (in-sample); coefficients "
                  + ", ".join(f"{c:.4f}" for c in calibration.coefficients))
            info["calibration_pairs"] = len(chosen)
    kt.save_trained(result, args.out, info)
    plot = args.plot or args.out.with_suffix(".png")
    kt.plot_losses(result, plot, title=f"KBCNet: {desc}")
    print("epoch losses: " + " ".join(f"{v:.3f}" for v in result.epoch_losses))
    print(f"encoded in {encode_s:.1f} s, trained in {result.seconds:.1f} s; head {args.out}  plot {plot}")
    print(json.dumps({"out": str(args.out), "plot": str(plot), "epoch_losses": result.epoch_losses,
                      "score_calibration": None if calibration is None else list(calibration.coefficients)}))
    return 0
