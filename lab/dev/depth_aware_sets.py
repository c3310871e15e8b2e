"""Depth-aware weighting on vs off (or any engine options) on many synthetic scenes, fast.

Renders, per seed, one mug, bottle and lamp scene (``SceneSpec(category, seed, frames, small_object, depth_noise=
True)``, the synthetic benchmark's scenes for the same seeds) and runs the engine on every frame with each variant,
encoding every frame once (the features are cached across variants, so a variant costs only its matching). PCK is
scored like ``semcorr bag-eval``: visible ground-truth keypoints, correct when the output is valid and within
``alpha x`` the longer side of the object's visible box. Rendered scenes are kept as pickles under ``--cache`` (a
seed fixes every byte of a scene), so a re-run only matches.

Usage (from anywhere; ~8 s to render a scene, ~10 s per scene and variant after that, 2 cores)::

    .venv/bin/python lab/dev/depth_aware_sets.py --setting normal --seeds 20-29
    .venv/bin/python lab/dev/depth_aware_sets.py --setting small --seeds 20-29 \\
        --variant 'floor0.5=depth_floor=0.5'

Default variants: ``on`` (the defaults) and ``off`` (``depth_aware=False``). ``--variant NAME=FIELD=VALUE[,...]``
adds one (``EngineConfig`` fields; values parsed as Python literals; ``fusion_weights='PATH'`` swaps in that fusion
file, e.g. a projected one from ``semcorr train-fusion --fusion-model projected``). Prints a line per scene and the
pooled PCK@0.05/0.1/0.15 per variant; ``--json`` writes them.
"""

from __future__ import annotations

import argparse
import ast
import json
import pickle
import sys
import time
from pathlib import Path

import numpy as np

CATEGORIES = ("mug", "bottle", "lamp")
ALPHAS = (0.05, 0.1, 0.15)


def seeds_arg(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def variant_arg(text: str) -> tuple[str, dict]:
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=FIELD=VALUE[,FIELD=VALUE], got {text!r}")
    fields = {}
    for item in rest.split(","):
        key, sep, value = item.partition("=")
        if not sep:
            raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, got {item!r}")
        fields[key.strip()] = ast.literal_eval(value.strip())
    return name, fields


def scene(cache: Path, setting: str, seed: int, category: str, frames: int):
    """``(reference spec, [(rgb, depth mm, K, ground truth)])`` of one scene, rendered once and pickled."""
    from semcorr_ros.lab.synth import SceneSpec, render_scene

    path = cache / f"{setting}_s{seed}_{category}_f{frames}.pkl"
    if path.is_file():
        with open(path, "rb") as f:
            return pickle.load(f)
    sc = render_scene(SceneSpec(category=category, seed=seed, frames=frames, small_object=setting == "small",
                                depth_noise=True))
    data = (sc.reference.to_reference_spec(), [tuple(sc.render(i)) for i in range(frames)])
    cache.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(data, f)
    tmp.replace(path)
    return data


def fusion_from_file(engine, path):
    """A fusion module like ``engine``'s with the weights file ``path`` loaded (v1 or projected v2)."""
    from semcorr_ros.engine.fusion import FeatureFusion, load_fusion

    fusion = FeatureFusion(engine.fusion.keys, grid=engine.fusion.grid, center=engine.fusion.center)
    load_fusion(fusion, path)
    return fusion.to(engine.device)


def distances(result, gt, names) -> list[float]:
    """Normalised error per visible keypoint (inf when the output is not valid)."""
    from semcorr_ros.eval.pck import box_unit, normalised_errors

    size = box_unit(gt.object_box)
    if not np.isfinite(size):
        return []
    idx = np.array([gt.names.index(n) for n in names], dtype=np.int64)
    err = normalised_errors(result.xy, gt.keypoints_2d[idx], size, valid=result.valid)
    return [float(e) for e in err[np.asarray(gt.visible, bool)[idx]]]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--setting", choices=("normal", "small"), default="normal")
    p.add_argument("--seeds", type=seeds_arg, default=seeds_arg("20-29"), help="e.g. 20-29 or 10,12 (default 20-29)")
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--variant", type=variant_arg, action="append", default=[], metavar="NAME=FIELD=VALUE[,...]")
    p.add_argument("--cache", type=Path, default=Path("out/depth_aware_sets/scenes"))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()

    from semcorr_ros.config import EngineConfig
    from semcorr_ros.engine import CorrespondenceEngine
    from semcorr_ros.eval.pck import pck_of_errors

    variants = {"on": {}, "off": {"depth_aware": False}, **dict(args.variant)}
    defaults = EngineConfig()
    for name, fields in variants.items():
        unknown = [k for k in fields if not hasattr(defaults, k)]
        if unknown:
            p.error(f"variant {name}: unknown EngineConfig fields {unknown}")
    engine = CorrespondenceEngine(EngineConfig())
    engine.cache_size = 10 ** 6
    fusions = {name: fusion_from_file(engine, fields["fusion_weights"]) for name, fields in variants.items()
               if "fusion_weights" in fields}
    default_fusion = engine.fusion
    dists: dict[str, list[float]] = {v: [] for v in variants}
    t0 = time.perf_counter()
    for seed in args.seeds:
        for cat in CATEGORIES:
            ref, frames = scene(args.cache, args.setting, seed, cat, args.frames)
            tag = f"{args.setting}_s{seed}_{cat}"
            line = []
            for name, fields in variants.items():
                for key, value in fields.items():
                    setattr(engine.config, key, value)
                engine.fusion = fusions.get(name, default_fusion)
                try:
                    engine.set_reference(ref.image, ref.keypoints, ref.names, depth=ref.depth,
                                         intrinsics=ref.intrinsics, cache_key=(tag, "ref"))
                    d = []
                    for i, (rgb, depth, K, gt) in enumerate(frames):
                        d += distances(engine.match(rgb, depth, K, cache_key=(tag, i)), gt, ref.names)
                finally:
                    for key in fields:
                        setattr(engine.config, key, getattr(defaults, key))
                dists[name] += d
                line.append(f"{name}={pck_of_errors(d, 0.1):.3f}")
            print(tag, " ".join(line), flush=True)
            engine._cache.clear()  # the next scene's frames are new: keep memory flat
    summary = {"setting": args.setting, "seeds": args.seeds, "frames": args.frames,
               "seconds": round(time.perf_counter() - t0, 1), "variants": {}}
    for name, d in dists.items():
        d = np.asarray(d)
        summary["variants"][name] = {"fields": variants[name], "keypoints": int(d.size),
                                     **{f"pck@{a}": round(pck_of_errors(d, a), 4) for a in ALPHAS}}
        print(f"{name:12s} keypoints {d.size}  PCK@0.05/0.1/0.15 "
              + " / ".join(f"{pck_of_errors(d, a):.3f}" for a in ALPHAS))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
