#!/usr/bin/env python3
"""Which per-frame score picks the right view of a reference set? Scores the candidates on synthetic bags.

Usage (after `bash tools/setup.sh`; the scenes of `semcorr synth OUT/full_s<S> --category all --orbit full
--reference-views 3 --depth-noise --frames 30 --seed S`):

    .venv/bin/python lab/dev/view_choice.py OUT [--json PATH]

For every scene under ``OUT/*/*`` with a ``reference_set.yaml`` and every frame with ground truth, the frame is
encoded once and *every* view of the set runs the whole pipeline (the engine itself runs the last stages for the
chosen view only). Per view it records candidate choice scores from the first pass -- ``sum`` (the engine's
rule, :func:`semcorr_ros.engine.objects.view_score`), ``mean`` (mean confidence inside the image), ``p3d``
(inliers of the 3D consensus fit), ``peak`` (mean raw cosine peak), ``cover`` (mean best cosine of the view's
object cells in the live frame), ``rcover`` (the same from the live cells around the matches into the view),
``appear`` (cosine of the two regions' mean descriptors) -- and ``final`` (the sum of the valid final
confidences, after the whole pipeline), and the view's own PCK@0.1 in the frame (its matches alone, over the
set's keypoints visible in the frame: a keypoint the view lacks counts as wrong). It prints the pooled PCK@0.1
when choosing by each score, by a fixed view, and by the oracle (the best view of each frame).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np


def _region(g: int, lo: np.ndarray, hi: np.ndarray) -> Any:
    """``[g, g]`` bool: cells whose centre lies in the normalised box ``lo..hi``."""
    import torch

    c = (torch.arange(g) + 0.5) / g
    v, u = torch.meshgrid(c, c, indexing="ij")
    return (u >= float(lo[0])) & (u <= float(hi[0])) & (v >= float(lo[1])) & (v <= float(hi[1]))


def candidates(ref: Any, f: Any) -> dict[str, float]:
    """The first-pass choice scores of one view (``f`` after the select stages)."""
    import torch.nn.functional as F

    from semcorr_ros.engine.consensus import coarse_map
    from semcorr_ros.engine.objects import view_score

    (w, h), xy, m = f.size, f.m.xy, f.m
    inside = (xy[:, 0] >= 0) & (xy[:, 0] < w) & (xy[:, 1] >= 0) & (xy[:, 1] < h)
    out = {"sum": view_score(f), "mean": float(m.score[inside].mean()) if inside.any() else 0.0,
           "p3d": float(f.p3d.n_inliers) if f.p3d is not None and f.p3d.active else 0.0,
           "peak": float(m.feats[inside, 0].mean()) if inside.any() else 0.0}
    rmap, lmap = coarse_map(ref.full.fmap).float(), coarse_map(f.fmap).float()
    uv = ref.full.uv.float().numpy()
    a = rmap.reshape(rmap.shape[0], -1)[:, _region(rmap.shape[-1], uv.min(0) - 0.05, uv.max(0) + 0.05).reshape(-1)]
    out["cover"] = float((a.t() @ lmap.reshape(lmap.shape[0], -1)).max(1).values.mean())
    live = xy[inside] if inside.any() else xy
    box = _region(lmap.shape[-1], (live.min(0) + 0.5) / [w, h] - 0.05, (live.max(0) + 0.5) / [w, h] + 0.05)
    out["rcover"] = out["appear"] = 0.0
    if box.any() and a.shape[1]:
        b = lmap.reshape(lmap.shape[0], -1)[:, box.reshape(-1)]
        out["rcover"] = float((b.t() @ a).max(1).values.mean())
        out["appear"] = float(F.normalize(a.mean(1), dim=0) @ F.normalize(b.mean(1), dim=0))
    return out


def study(root: Path) -> list[dict[str, Any]]:
    from semcorr_ros.bageval.bag import iter_frames, scan_bag
    from semcorr_ros.bageval.metrics import FramePrediction, evaluate
    from semcorr_ros.bageval.objects import load_eval_objects
    from semcorr_ros.engine import CorrespondenceEngine, stages
    from semcorr_ros.engine.objects import FINISH_STAGES, SELECT_STAGES, object_order

    scenes = sorted(p for p in root.glob("*/*") if (p / "reference_set.yaml").exists())
    if not scenes:
        raise SystemExit(f"no */*/reference_set.yaml under {root}: make the scenes first (see --help)")
    engine = CorrespondenceEngine()
    rows: list[dict[str, Any]] = []
    for scene in scenes:
        index = scan_bag(scene / "bag")
        engine.set_objects(load_eval_objects(scene / "reference_set.yaml").specs)
        [obj] = engine.objects
        for fr in iter_frames(index, engine.config.depth_scale):
            gt = index.ground_truth.get(fr.stamp_ns)
            if fr.error is not None or gt is None:
                continue
            base = stages.Frame.start(fr.rgb, fr.depth, fr.K, fr.distortion, None, None, engine.config)
            maps = engine.encode_maps(base.image)

            def encode(img: np.ndarray, means: Any, key: Any = None, base: Any = base, maps: Any = maps) -> Any:
                return engine.fusion(maps, means)[0] if img is base.image else engine.encode(img, means, key)

            cands, pck = [], []
            for v, ref in enumerate(obj.views):
                ctx = replace(engine._context(ref), encode=encode)
                f = replace(base, timings={}, t0=time.perf_counter())
                for stage in SELECT_STAGES:
                    stage(ctx, f)
                c = candidates(ref, f)
                for stage in FINISH_STAGES:
                    stage(ctx, f)
                res = object_order(obj, v, f.result(ref))
                c["final"] = float(np.sum(res.score * res.valid))
                row = evaluate([fr.stamp_ns], {fr.stamp_ns: FramePrediction.from_result(fr.stamp_ns, res, 0.0)},
                               {fr.stamp_ns: gt}, obj.names, None)["per_frame"][0]
                cands.append(c)
                pck.append((row.get("correct@0.1", 0), row.get("scored", 0)))
            rows.append({"scene": scene.name, "seed": scene.parent.name, "stamp_ns": fr.stamp_ns, "cands": cands,
                         "pck": pck})
        print(f"{scene}: {len(rows)} frames so far", flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Pooled PCK@0.1 per choice rule, overall and per category."""
    def pooled(sub: list[dict[str, Any]], choose: Any) -> float:
        picks = [r["pck"][choose(r)] for r in sub]
        return round(sum(p[0] for p in picks) / max(sum(p[1] for p in picks), 1), 3)

    rules: dict[str, Any] = {k: (lambda r, k=k: int(np.argmax([c[k] for c in r["cands"]])))
                             for k in rows[0]["cands"][0]}
    rules.update({f"view {v}": (lambda r, v=v: v) for v in range(len(rows[0]["cands"]))})
    rules["oracle"] = lambda r: int(np.argmax([p[0] for p in r["pck"]]))
    groups = {"all": rows, **{c: [r for r in rows if r["scene"] == c] for c in sorted({r["scene"] for r in rows})}}
    return {name: {g: pooled(sub, rule) for g, sub in groups.items()} for name, rule in rules.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("root", type=Path, help="folder of synth outputs (e.g. OUT with OUT/full_s0/mug/...)")
    ap.add_argument("--json", type=Path, help="also write the per-frame rows and the table here")
    args = ap.parse_args(argv)
    rows = study(args.root)
    tab = table(rows)
    groups = list(next(iter(tab.values())))
    print(f"\n{len(rows)} frames; PCK@0.1 of the chosen view's own matches\n")
    print("| choice | " + " | ".join(groups) + " |\n|---|" + "---|" * len(groups))
    for name, vals in tab.items():
        print(f"| {name} | " + " | ".join(f"{vals[g]:.3f}" for g in groups) + " |")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "table": tab}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
