"""Options shared by subcommands: engine flags built from :class:`EngineConfig`, JSON output, threads."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from semcorr_ros.config import (CONSENSUS_MODES, DEFAULT_SOURCES, DEPTH_CELL_MODES, KBC_MODES, MATCHERS,
                                 EngineConfig)
from semcorr_ros.errors import ConfigError

_DEFAULTS = EngineConfig()


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags that configure the engine (defaults from :class:`EngineConfig`)."""
    g = parser.add_argument_group("model")
    g.add_argument("--backbone", default="default",
                   help="comma-separated feature sources to fuse, or 'default' (= %s); sources: "
                        "effnet-lite2, dinov2-s-imgfocus, dinov2_vit{s,b,l,g}14[_reg] (needs --weights), sd (optional, "
                        "CUDA only, needs diffusers and --weights sd=MODEL_DIR; docs/sources.md)"
                        % ",".join(DEFAULT_SOURCES))
    g.add_argument("--weights", action="append", default=[], metavar="SOURCE=PATH",
                   help="weights file for a source, e.g. dinov2_vitb14=/models/dinov2_vitb14_pretrain.pth "
                        "(repeatable; sd: a diffusers model folder)")
    g.add_argument("--fusion-weights", default=None, metavar="PATH",
                   help="trained fusion weights file from `semcorr train-fusion`, plain or projected ('none': no "
                        "file; default: the shipped file if it matches the sources, else the per-source weights of "
                        "the configuration)")
    g.add_argument("--device", default=_DEFAULTS.device, help="auto | cpu | cuda[:N] (default: %(default)s)")
    g.add_argument("--fp16", action="store_true", help="half precision on CUDA")
    g.add_argument("--no-cpu-bf16", action="store_true",
                   help="keep float32 on CPUs with native bfloat16 (default: bf16 autocast there)")
    g.add_argument("--kbc", choices=KBC_MODES, default=_DEFAULTS.kbc,
                   help="keypoint-bounding-box-centred cropping (default: %(default)s)")
    g.add_argument("--kbc-margin", type=float, default=_DEFAULTS.kbc_margin, help="(default: %(default)s)")
    g.add_argument("--kbc-max-fraction", type=float, default=_DEFAULTS.kbc_max_fraction,
                   help="'auto' crops when the object covers less than this fraction (default: %(default)s)")
    g.add_argument("--no-depth-aware", action="store_true", help="disable depth-aware feature weighting")
    g.add_argument("--depth-floor", type=float, default=_DEFAULTS.depth_floor,
                   help="depth-aware weight of cells at implausible depths (default: %(default)s)")
    g.add_argument("--depth-spread", type=float, default=_DEFAULTS.depth_spread,
                   help="object depth spread as a multiple of the reference keypoints' depth range "
                        "(default: %(default)s)")
    g.add_argument("--depth-cells", choices=DEPTH_CELL_MODES, default=_DEFAULTS.depth_cells,
                   help="depth-aware cell statistic: mean (Gaussian overlap of the cell's mean depth) or max (the "
                        "cell's most plausible pixel; see docs/accuracy.md) (default: %(default)s)")
    g.add_argument("--score-threshold", type=float, default=_DEFAULTS.score_threshold,
                   help="matches below are invalid (default: %(default)s)")
    g.add_argument("--softargmax-radius", type=int, default=_DEFAULTS.softargmax_radius,
                   help="(default: %(default)s)")
    g.add_argument("--softargmax-temperature", type=float, default=_DEFAULTS.softargmax_temperature,
                   help="(default: %(default)s)")
    g.add_argument("--consensus-prior", action=argparse.BooleanOptionalAction, default=_DEFAULTS.consensus_prior,
                   help="bias each keypoint towards one global 2D affine fitted on the whole object "
                        "(default: %(default)s)")
    g.add_argument("--consensus-weight", type=float, default=_DEFAULTS.consensus_weight,
                   help="height of the prior's bump on the cosine similarities (default: %(default)s)")
    g.add_argument("--consensus-sigma", type=float, default=_DEFAULTS.consensus_sigma,
                   help="width of the prior's bump, fraction of the image side (default: %(default)s)")
    g.add_argument("--consensus-mode", choices=CONSENSUS_MODES, default=_DEFAULTS.consensus_mode,
                   help="consensus model: 2d affine, 3d similarity from depth, or auto (3d when both frames have "
                        "depth and intrinsics) (default: %(default)s)")
    g.add_argument("--consensus-in-crop", action=argparse.BooleanOptionalAction,
                   default=_DEFAULTS.consensus_in_crop, help="apply the consensus prior in the KBC crop pass too "
                                                             "(default: %(default)s)")
    g.add_argument("--pose-from-prior", action=argparse.BooleanOptionalAction, default=_DEFAULTS.pose_from_prior,
                   help="seed the pose from the 3D prior when the keypoint RANSAC fails (default: %(default)s)")
    g.add_argument("--multiscale", default=",".join(f"{s:g}" for s in _DEFAULTS.multiscale), metavar="S,S,...",
                   help="input-size scales to encode at, e.g. 0.75,1,1.25 (default: %(default)s)")
    g.add_argument("--matcher", choices=MATCHERS, default=_DEFAULTS.matcher,
                   help="nn: cosine nearest neighbour; kbcnet: the learned KBCNet head (needs --kbcnet-weights "
                        "or a shipped head; see docs/kbcnet.md) (default: %(default)s)")
    g.add_argument("--kbcnet-weights", default=None, metavar="PATH",
                   help="KBCNet head from `semcorr train-kbcnet` (default: the shipped head, if any)")
    g.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")


def engine_config(args: argparse.Namespace) -> EngineConfig:
    """Build the validated :class:`EngineConfig` from parsed flags."""
    sources = DEFAULT_SOURCES if args.backbone == "default" else tuple(
        s.strip() for s in args.backbone.split(",") if s.strip())
    weights = {}
    for item in args.weights:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ConfigError(f"--weights expects SOURCE=PATH, got {item!r}")
        weights[name] = path
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    return EngineConfig(sources=sources, weights=weights, fusion_weights=args.fusion_weights, device=args.device,
                        fp16=args.fp16, cpu_bf16=not args.no_cpu_bf16, kbc=args.kbc, kbc_margin=args.kbc_margin,
                        kbc_max_fraction=args.kbc_max_fraction, depth_aware=not args.no_depth_aware,
                        depth_floor=args.depth_floor, depth_spread=args.depth_spread, depth_cells=args.depth_cells,
                        score_threshold=args.score_threshold, softargmax_radius=args.softargmax_radius,
                        softargmax_temperature=args.softargmax_temperature,
                        consensus_prior=args.consensus_prior, consensus_weight=args.consensus_weight,
                        consensus_sigma=args.consensus_sigma, consensus_mode=args.consensus_mode,
                        consensus_in_crop=args.consensus_in_crop, pose_from_prior=args.pose_from_prior,
                        multiscale=_scales(args.multiscale), matcher=args.matcher,
                        kbcnet_weights=args.kbcnet_weights)


def _scales(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(s) for s in str(text).split(",") if s.strip())
    except ValueError as exc:
        raise ConfigError(f"--multiscale expects comma-separated numbers, got {text!r}") from exc


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write machine-readable results")


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (nothing half-written on interruption)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
