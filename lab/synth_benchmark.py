#!/usr/bin/env python3
"""The default synthetic RGB-D benchmark: `semcorr synth` scenes scored by `semcorr bag-eval --mode offline`.

Usage (after `bash tools/setup.sh`; run from anywhere):

    .venv/bin/python lab/synth_benchmark.py [--out out/synth_benchmark] [--seeds 0 1] [--frames 30]

Generates, for every seed, one scene per category (mug, bottle, lamp) in two settings -- ``normal`` (object
covers ~6-12 % of the image) and ``small`` (``--small-object``, ~2-3 %) -- all with ``--depth-noise``; then
evaluates every scene offline (the engine directly, no DDS) with each variant of its setting:

- normal: ``default`` (depth-aware weighting on) vs ``no-depth-aware``;
- small: ``kbc-off`` vs ``kbc-auto`` (default) vs ``kbc-on``.

``--orbit-full`` adds the setting ``full`` (``--orbit full --reference-views 3``: the camera goes once round the
object) with two variants on the same bags: ``full-1view`` (the single reference.yaml) and ``full-3view`` (the
3-view reference_set.yaml, the engine choosing a view per frame). ``--two-objects`` adds the setting ``pair``
(``--objects mug,bottle``: both in one scene) scored with ``objects.yaml`` (variant ``pair``), and compares each
object's PCK there with its PCK alone (the ``default`` variant's scene of the same category and seed: the same
instance and reference) in ``summary.md``.

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
import re
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
#: the objects of the two-object setting
PAIR = ("mug", "bottle")
#: setting -> the `semcorr synth` flags on top of `--depth-noise`; settings in SINGLE_SCENE are one scene per seed
SETTINGS = {"normal": [], "small": ["--small-object"], "full": ["--orbit", "full", "--reference-views", "3"],
            "pair": ["--objects", ",".join(PAIR)]}
SINGLE_SCENE = {"pair"}
#: variants of --orbit-full / --two-objects: (setting, bag-eval flags, reference file of the scene)
ORBIT_VARIANTS = {"full-1view": ("full", [], "reference.yaml"), "full-3view": ("full", [], "reference_set.yaml")}
PAIR_VARIANTS = {"pair": ("pair", [], "objects.yaml")}


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


def make_scenes(out: Path, seeds: list[int], frames: int, settings: list[str]) -> dict[str, list[Path]]:
    """Scene folders per setting (generated when missing)."""
    scenes: dict[str, list[Path]] = {s: [] for s in settings}
    for setting in scenes:
        for seed in seeds:
            root = out / "scenes" / f"{setting}_s{seed}"
            if not (root / "scene.json").is_file():
                cmd = [_semcorr(), "synth", str(root), "--frames", str(frames), "--seed", str(seed), "--depth-noise",
                       "--no-progress", "--overwrite", *SETTINGS[setting]]
                if setting not in SINGLE_SCENE:
                    cmd += ["--category", "all"]
                print(f"[synth] {setting} seed {seed}", flush=True)
                _run(cmd, out / "logs" / f"synth_{setting}_s{seed}.log")
            scenes[setting] += [root] if setting in SINGLE_SCENE else [root / c for c in CATEGORIES]
    return scenes


def evaluate(out: Path, scenes: dict[str, list[Path]], variants: dict[str, tuple],
             force: bool = False) -> dict:
    rows = {}
    for name, (setting, flags, *rest) in variants.items():
        reference = rest[0] if rest else "reference.yaml"
        runs, tags = [], []
        for scene in scenes[setting]:
            tag = scene.name if setting in SINGLE_SCENE else f"{scene.parent.name}_{scene.name}"
            res = out / "runs" / name / tag
            cmd = [_semcorr(), "bag-eval", str(scene / "bag"), "--reference", str(scene / reference),
                   "--mode", "offline", "--out", str(res), "--no-progress", *flags]
            if force or not (res / "bag_eval.json").is_file():
                print(f"[eval] {name}: {tag}", flush=True)
                _run(cmd, out / "logs" / f"eval_{name}_{tag}.log")
            runs.append(json.loads((res / "bag_eval.json").read_text())["metrics"])
            tags.append(scene.name)
        rows[name] = {"setting": setting, "flags": " ".join(flags), "reference": reference, "scenes": len(runs),
                      **_pool(runs), "per_category": _per_group(runs, tags)}
    return rows


def _pool_pck(parts: list[tuple[float | None, int]]) -> float | None:
    n = sum(k for _, k in parts)
    return round(sum((p or 0.0) * k for p, k in parts) / n, 4) if n else None


def _per_group(runs: list[dict], tags: list[str]) -> dict:
    """PCK@0.1 pooled per category (one scene per category) or per object (objects files), with the views chosen
    per object."""
    groups: dict[str, list] = {}
    views: dict[str, dict[str, int]] = {}
    for r, tag in zip(runs, tags):
        if "per_object" in r:
            for oid, m in r["per_object"].items():
                # the object's category (mug_0003 -> mug, a repeat mug_0003_2 -> mug_2): seeds pool together
                oid = re.sub(r"_\d{4}", "", m.get("ground_truth_instance") or oid)
                if "pck" in m:
                    groups.setdefault(oid, []).append((m["pck"]["0.1"], m["scored_keypoints"]["with_output"]))
                for v, n in m.get("views", {}).items():
                    key = v.rsplit("_view", 1)[-1] if "_view" in v else "0"
                    views.setdefault(oid if len(r["per_object"]) > 1 else tag, {}).setdefault(key, 0)
                    views[oid if len(r["per_object"]) > 1 else tag][key] += n
            if len(r["per_object"]) > 1:
                continue
        if "pck" in r:
            groups.setdefault(tag, []).append((r["pck"]["0.1"], r["scored_keypoints"]["with_output"]))
    out = {g: {"pck@0.1": _pool_pck(parts), "keypoints": sum(k for _, k in parts)} for g, parts in groups.items()}
    for g, v in views.items():
        out.setdefault(g, {})["views_chosen"] = dict(sorted(v.items()))
    return out


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


def pair_table(rows: dict) -> str:
    """Each object of the two-object scenes: PCK@0.1 alone (variant default) and with the other object."""
    if "pair" not in rows:
        return ""
    alone = rows.get("default", {}).get("per_category", {})
    lines = ["", "| object | PCK@0.1 alone (default) | PCK@0.1 in the two-object scene | keypoints alone / both |",
             "|---|---|---|---|"]
    for oid, r in rows["pair"]["per_category"].items():
        a = alone.get(oid, {})
        fa = "n/a" if a.get("pck@0.1") is None else f"{a['pck@0.1']:.3f}"
        fb = "n/a" if r.get("pck@0.1") is None else f"{r['pck@0.1']:.3f}"
        lines.append(f"| {oid} | {fa} | {fb} | {a.get('keypoints', 0)} / {r.get('keypoints', 0)} |")
    return "\n".join(lines) + "\n"


def views_table(rows: dict) -> str:
    """PCK@0.1 per category of the full-orbit variants, and the views chosen."""
    names = [n for n in ("default", "full-1view", "full-3view") if n in rows]
    if not any(n.startswith("full") for n in names):
        return ""
    lines = ["", "| category | " + " | ".join(f"{n} PCK@0.1" for n in names) + " | full-3view views chosen (0/1/2) |",
             "|---|" + "---|" * (len(names) + 1)]
    for c in CATEGORIES:
        cells = []
        for n in names:
            v = rows[n]["per_category"].get(c, {}).get("pck@0.1")
            cells.append("n/a" if v is None else f"{v:.3f}")
        ch = rows.get("full-3view", {}).get("per_category", {}).get(c, {}).get("views_chosen", {})
        lines.append(f"| {c} | " + " | ".join(cells) + f" | {'/'.join(str(ch.get(k, 0)) for k in ('0', '1', '2'))} |")
    return "\n".join(lines) + "\n"


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
    p.add_argument("--orbit-full", action="store_true",
                   help="add the full-orbit scenes and the variants full-1view and full-3view")
    p.add_argument("--two-objects", action="store_true",
                   help=f"add the two-object scenes ({','.join(PAIR)}) and the variant pair")
    p.add_argument("--force", action="store_true",
                   help="evaluate every run again (default: reuse runs whose bag_eval.json exists)")
    args = p.parse_args()
    variants: dict[str, tuple] = dict(VARIANTS)
    if args.orbit_full:
        variants.update(ORBIT_VARIANTS)
    if args.two_objects:
        variants.update(PAIR_VARIANTS)
    for v in args.variant:
        name, _, rest = v.partition("=")
        setting, _, flags = rest.partition(":")
        if setting not in SETTINGS or setting in SINGLE_SCENE:
            p.error(f"--variant {v!r}: setting must be one of normal, small, full")
        variants[name] = (setting, shlex.split(flags))
    if args.only:
        unknown = set(args.only) - set(variants)
        if unknown:
            p.error(f"unknown variants {sorted(unknown)}; known: {sorted(variants)}")
        variants = {k: variants[k] for k in args.only}
    out = args.out.resolve()
    t0 = time.perf_counter()
    settings = list(dict.fromkeys(v[0] for v in variants.values()))
    scenes = make_scenes(out, args.seeds, args.frames, settings)
    rows = evaluate(out, scenes, variants, force=args.force)
    summary = {"command": shlex.join(sys.argv), "seeds": args.seeds, "frames": args.frames,
               "categories": list(CATEGORIES), "variants": rows, "wall_s": round(time.perf_counter() - t0, 1)}
    md = table(rows) + views_table(rows) + pair_table(rows)
    for name, text in (("summary.json", json.dumps(summary, indent=2) + "\n"), ("summary.md", md)):
        tmp = out / (name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, out / name)
    print(md)
    print(f"wrote {out / 'summary.md'} and summary.json in {summary['wall_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
