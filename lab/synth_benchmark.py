#!/usr/bin/env python3
"""The default synthetic RGB-D benchmark: `semcorr synth` scenes scored by `semcorr bag-eval --mode offline`.

Usage (after `bash tools/setup.sh`; run from anywhere):

    .venv/bin/python lab/synth_benchmark.py [--out out/synth_benchmark] [--seeds 0 1] [--frames 30]

Generates, for every seed, one scene per category (mug, bottle, lamp) in two settings -- ``normal`` (object
covers ~6-12 % of the image) and ``small`` (``--small-object``, ~2-3 %) -- all with ``--depth-noise``; then
evaluates every scene offline (the engine directly, no DDS) with each variant of its setting:

- normal: ``default`` (depth-aware weighting on) vs ``no-depth-aware``;
- small: ``kbc-off`` vs ``kbc-auto`` (default) vs ``kbc-on``.

Extra variants: ``--variant NAME=SETTING:"FLAGS"`` (e.g. ``--variant 'prior-off=normal:--no-consensus-prior'``).
Writes ``summary.json`` and ``summary.md`` (a table: PCK@0.05/0.1 pooled over all scored keypoints; 3D error and
pose errors as the median over scenes of each scene's median; pose validity and engine time p50 averaged over
scenes) into ``--out``; the scenes
and per-run outputs stay under it: a re-run reuses the scenes (the seed fixes every byte of a scene) and every
run whose ``bag_eval.json`` exists, so after a change to the engine pass ``--force`` to evaluate again.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

CATEGORIES = ("mug", "bottle", "lamp")
VARIANTS = {
    "default": ("normal", []),
    "no-depth-aware": ("normal", ["--no-depth-aware"]),
    "kbc-off": ("small", ["--kbc", "off"]),
    "kbc-auto": ("small", ["--kbc", "auto"]),
    "kbc-on": ("small", ["--kbc", "on"]),
}


def _semcorr() -> str:
    exe = Path(sys.executable).with_name("semcorr")
    if not exe.is_file():
        sys.exit(f"synth_benchmark: {exe} not found: run with the venv's python after `bash tools/setup.sh`")
    return str(exe)


def _run(cmd: list[str], log: Path) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as fh:
        fh.write("$ " + shlex.join(cmd) + "\n")
        fh.flush()
        rc = subprocess.call(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=log.parent)
    if rc != 0:
        sys.exit(f"synth_benchmark: command failed (exit {rc}), see {log}:\n  {shlex.join(cmd)}")


def make_scenes(out: Path, seeds: list[int], frames: int) -> dict[str, list[Path]]:
    """Scene folders per setting (generated when missing)."""
    scenes: dict[str, list[Path]] = {"normal": [], "small": []}
    for setting in scenes:
        for seed in seeds:
            root = out / "scenes" / f"{setting}_s{seed}"
            if not (root / "scene.json").is_file():
                cmd = [_semcorr(), "synth", str(root), "--category", "all", "--frames", str(frames), "--seed",
                       str(seed), "--depth-noise", "--no-progress", "--overwrite"]
                if setting == "small":
                    cmd.append("--small-object")
                print(f"[synth] {setting} seed {seed}", flush=True)
                _run(cmd, out / "logs" / f"synth_{setting}_s{seed}.log")
            scenes[setting] += [root / c for c in CATEGORIES]
    return scenes


def evaluate(out: Path, scenes: dict[str, list[Path]], variants: dict[str, tuple[str, list[str]]],
             force: bool = False) -> dict:
    rows = {}
    for name, (setting, flags) in variants.items():
        runs = []
        for scene in scenes[setting]:
            tag = f"{scene.parent.name}_{scene.name}"
            res = out / "runs" / name / tag
            cmd = [_semcorr(), "bag-eval", str(scene / "bag"), "--reference", str(scene / "reference.yaml"),
                   "--mode", "offline", "--out", str(res), "--no-progress", *flags]
            if force or not (res / "bag_eval.json").is_file():
                print(f"[eval] {name}: {tag}", flush=True)
                _run(cmd, out / "logs" / f"eval_{name}_{tag}.log")
            runs.append(json.loads((res / "bag_eval.json").read_text())["metrics"])
        rows[name] = {"setting": setting, "flags": " ".join(flags), "scenes": len(runs), **_pool(runs)}
    return rows


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return round(sum(values) / len(values), 2) if values else None


def _median(values: list) -> float | None:
    """Median over scenes (one scene with a failed track should not dominate, as it does a mean)."""
    values = [v for v in values if v is not None]
    return round(float(statistics.median(values)), 2) if values else None


def _pool(runs: list[dict]) -> dict:
    n = sum(r["scored_keypoints"]["with_output"] for r in runs)
    pck = {a: round(sum(r["pck"][a] * r["scored_keypoints"]["with_output"] for r in runs) / max(n, 1), 4)
           for a in ("0.05", "0.1", "0.15")}
    return {"keypoints": n, "pck": pck,
            "error_3d_mm_median": _median([r["error_3d_mm"].get("median") for r in runs]),
            "rotation_error_deg_median": _median([r["pose"]["rotation_error_deg"].get("median") for r in runs]),
            "translation_error_mm_median": _median([r["pose"]["translation_error_mm"].get("median") for r in runs]),
            "pose_validity": _mean([r["pose"]["validity_rate"] for r in runs]),
            "engine_ms_p50": _mean([r["processing_ms"].get("median") for r in runs])}


def table(rows: dict) -> str:
    lines = ["| variant | setting | flags | keypoints | PCK@0.05 | PCK@0.1 | PCK@0.15 | 3D err median (mm) | "
             "rot err median (deg) | trans err median (mm) | pose valid | engine p50 (ms) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['setting']} | `{r['flags'] or '-'}` | {r['keypoints']} | {r['pck']['0.05']:.3f} | "
                     f"{r['pck']['0.1']:.3f} | {r['pck']['0.15']:.3f} | {r['error_3d_mm_median']} | "
                     f"{r['rotation_error_deg_median']} | {r['translation_error_mm_median']} | "
                     f"{r['pose_validity']} | {r['engine_ms_p50']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out", type=Path, default=Path("out/synth_benchmark"))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--frames", type=int, default=30)
    p.add_argument("--only", nargs="+", default=None, metavar="VARIANT", help="evaluate only these variants")
    p.add_argument("--variant", action="append", default=[], metavar='NAME=SETTING:"FLAGS"')
    p.add_argument("--force", action="store_true",
                   help="evaluate every run again (default: reuse runs whose bag_eval.json exists)")
    args = p.parse_args()
    variants = dict(VARIANTS)
    for v in args.variant:
        name, _, rest = v.partition("=")
        setting, _, flags = rest.partition(":")
        if setting not in ("normal", "small"):
            p.error(f"--variant {v!r}: setting must be normal or small")
        variants[name] = (setting, shlex.split(flags))
    if args.only:
        unknown = set(args.only) - set(variants)
        if unknown:
            p.error(f"unknown variants {sorted(unknown)}; known: {sorted(variants)}")
        variants = {k: variants[k] for k in args.only}
    out = args.out.resolve()
    t0 = time.perf_counter()
    scenes = make_scenes(out, args.seeds, args.frames)
    rows = evaluate(out, scenes, variants, force=args.force)
    summary = {"command": shlex.join(sys.argv), "seeds": args.seeds, "frames": args.frames,
               "categories": list(CATEGORIES), "variants": rows, "wall_s": round(time.perf_counter() - t0, 1)}
    for name, text in (("summary.json", json.dumps(summary, indent=2) + "\n"), ("summary.md", table(rows))):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
    print(table(rows))
    print(f"wrote {out / 'summary.md'} and summary.json in {summary['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
