#!/usr/bin/env python3
"""Tracking off vs on on synthetic RGB-D bags: PCK, jitter, pose error, encodes and time per frame.

Usage (after `bash tools/setup.sh`):

    .venv/bin/python lab/dev/measure_tracking.py [--out out/tracking] [--seeds 0 1 2] [--categories mug bottle lamp]
        [--settings small normal] [--frames 30] [--occlusion A:B] [--variant NAME=k=v,k=v ...] [--json PATH]

Makes the scenes it lacks with `semcorr synth OUT --category C --frames N --seed S --depth-noise [--small-object]`
(plus ``--occlusion A:B``: a panel hides the object in frames A..B-1) under ``--out/scenes`` (a seed fixes every
byte: re-runs reuse them), reads every frame and its ground truth with
the readers of ``semcorr bag-eval --mode offline`` (:mod:`semcorr_ros.bageval.bag`), runs one engine over each
scene once per variant -- ``off`` (tracking off: today's pipeline, KBC auto) and ``on`` (tracking on) by default,
more with ``--variant on-b5=tracking=on,tracking_beta=5`` -- and prints per setting (small / normal objects):

- PCK@0.05 / @0.1 pooled over every scored keypoint (:func:`semcorr_ros.bageval.metrics.evaluate`'s rule);
- jitter (:mod:`semcorr_ros.bageval.temporal`): pooled RMS of the normalised second difference of the output
  keypoints, beside the ground truth's own; losses and frames to re-acquire;
- pose rotation error, degrees: the median over every frame with a valid pose (and the validity rate);
- encodes per frame (all frames; tracked frames only), engine time per frame (median, ms), state counts.

Speeds drift from day to day on these machines: compare variants of one run only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def _scene(out: Path, setting: str, category: str, seed: int, frames: int, occlusion: str | None = None) -> Path:
    tag = f"_occ{occlusion.replace(':', '-')}" if occlusion else ""
    path = out / "scenes" / f"{setting}_{category}_{seed}{tag}"
    if not (path / "bag" / "metadata.yaml").exists():
        cmd = [str(Path(sys.executable).with_name("semcorr")), "synth", str(path), "--category", category,
               "--frames", str(frames), "--seed", str(seed), "--depth-noise", "--no-progress", "--overwrite"]
        if setting == "small":
            cmd.append("--small-object")
        if occlusion:
            cmd += ["--occlusion", occlusion]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return path


def _variant(text: str) -> tuple[str, dict[str, Any]]:
    name, _, rest = text.partition("=")
    changes: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        changes[key] = _value(value)
    return name, changes


def _value(v: str) -> Any:
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(v.lower(), v)


def _load(scene: Path, depth_scale: float) -> tuple[Any, Any, Any, list[Any]]:
    from semcorr_ros.bageval.bag import iter_frames, scan_bag
    from semcorr_ros.cli.bag_eval_cmd import load_reference_with_pose

    index = scan_bag(scene / "bag")
    spec, ref_pose = load_reference_with_pose(scene / "reference.yaml")
    frames = [f for f in iter_frames(index, depth_scale) if f.error is None]
    return index, spec, ref_pose, frames


def run_scene(engine: Any, base_cfg: Any, changes: dict[str, Any], index: Any, spec: Any, ref_pose: Any,
              frames: list[Any]) -> dict[str, Any]:
    """One variant over one scene's frames: the figures and the raw counts for pooling."""
    from semcorr_ros.bageval.metrics import FramePrediction, evaluate
    from semcorr_ros.bageval.temporal import sequence_arrays, temporal_metrics

    engine.config = base_cfg.replace(**changes)
    engine.set_reference(spec.image, spec.keypoints, spec.names, depth=spec.depth, intrinsics=spec.intrinsics,
                         reference_id=spec.reference_id)
    engine.match(spec.image, spec.depth, spec.intrinsics)  # warm-up, as bag-eval offline does
    engine.tracker.reset()
    predictions: dict[int, Any] = {}
    raw_predictions: dict[int, Any] = {}  # the same frames with the unfiltered pose (raw_pose)
    encodes, tracked_encodes, times, states = [], [], [], Counter()
    for fr in frames:
        e0, t = engine.encodes, time.perf_counter()
        [obj] = engine.track(fr.rgb, fr.depth, fr.K, stamp=fr.stamp_ns * 1e-9, distortion=fr.distortion)
        dt = time.perf_counter() - t
        n = engine.encodes - e0
        encodes.append(n)
        times.append(dt)
        states[obj.track_status] += 1
        if obj.track_status == "tracked":
            tracked_encodes.append(n)
        predictions[fr.stamp_ns] = FramePrediction.from_result(fr.stamp_ns, obj.result, dt)
        raw = obj.result if obj.result.raw_pose is None else replace(obj.result, pose=obj.result.raw_pose)
        raw_predictions[fr.stamp_ns] = FramePrediction.from_result(fr.stamp_ns, raw, dt)
    m = evaluate(index.color_stamps, predictions, index.ground_truth, spec.names, ref_pose)
    names = m.get("keypoints", {}).get("scored", [])
    gt_stamps = [s for s in index.color_stamps if s in index.ground_truth]
    tm = temporal_metrics(sequence_arrays(gt_stamps, predictions, index.ground_truth, names))
    n_kp = m["scored_keypoints"]["with_output"]
    rot = [r["rot_err_deg"] for r in m["per_frame"] if "rot_err_deg" in r]
    m_raw = evaluate(index.color_stamps, raw_predictions, index.ground_truth, spec.names, ref_pose)
    rot_raw = [r["rot_err_deg"] for r in m_raw["per_frame"] if "rot_err_deg" in r]
    return {"pck": m["pck"], "pck_valid": m["pck_valid"], "coverage": m["coverage"],
            "n_kp": n_kp, "rot_err": rot, "rot_err_raw": rot_raw, "pose_valid": m["pose"]["validity_rate"],
            "temporal": tm, "encodes": encodes, "tracked_encodes": tracked_encodes, "times": times,
            "states": dict(states)}


def pooled(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool the scenes of one (setting, variant)."""
    n = sum(r["n_kp"] for r in rows)

    def pck(a: str) -> float | None:
        return round(sum(r["pck"][a] * r["n_kp"] for r in rows if r["pck"][a] is not None) / n, 4) if n else None

    def jit(key: str) -> float | None:
        ss = sum((r["temporal"][key]["rms"] or 0.0) ** 2 * r["temporal"][key]["samples"] for r in rows)
        cnt = sum(r["temporal"][key]["samples"] for r in rows)
        return round(float(np.sqrt(ss / cnt)), 5) if cnt else None

    rot = [x for r in rows for x in r["rot_err"]]
    rot_raw = [x for r in rows for x in r["rot_err_raw"]]
    losses = [r["temporal"]["losses"] for r in rows]
    gaps = [g for lo in losses for g in lo["frames_to_reacquire"]]
    hidden = [g for lo in losses for g in lo["frames_to_reacquire_after_hidden"]]
    found = [r["temporal"]["found_rate"] for r in rows if r["temporal"].get("found_rate") is not None]
    states: Counter[str] = Counter()
    for r in rows:
        states.update(r["states"])
    enc = [x for r in rows for x in r["encodes"]]
    tenc = [x for r in rows for x in r["tracked_encodes"]]
    times = [x for r in rows for x in r["times"]]
    at_risk = sum(lo["at_risk"] for lo in losses)
    n_valid = sum((r["coverage"] or 0.0) * r["n_kp"] for r in rows)
    pck_valid = sum((r["pck_valid"]["0.1"] or 0.0) * (r["coverage"] or 0.0) * r["n_kp"] for r in rows)
    return {"scenes": len(rows), "keypoints": n, "pck@0.05": pck("0.05"), "pck@0.1": pck("0.1"),
            "coverage": round(n_valid / n, 4) if n else None,
            "pck_valid@0.1": round(pck_valid / n_valid, 4) if n_valid else None,
            "jitter": jit("jitter"), "jitter_gt": jit("jitter_gt"),
            "rot_err_median_deg": round(float(np.median(rot)), 2) if rot else None, "pose_frames": len(rot),
            "rot_err_raw_median_deg": round(float(np.median(rot_raw)), 2) if rot_raw else None,
            "pose_valid": round(float(np.mean([r["pose_valid"] or 0.0 for r in rows])), 3),
            "losses": sum(lo["losses"] for lo in losses),
            "loss_rate": round(sum(lo["losses"] for lo in losses) / at_risk, 4) if at_risk else None,
            "frames_to_reacquire_mean": round(float(np.mean(gaps)), 2) if gaps else None,
            "not_reacquired": sum(lo["not_reacquired"] for lo in losses),
            "found_rate_mean": round(float(np.mean(found)), 3) if found else None,
            "reappearances": sum(lo["reappearances"] for lo in losses),
            "frames_to_reacquire_after_hidden_mean": round(float(np.mean(hidden)), 2) if hidden else None,
            "not_reacquired_after_hidden": sum(lo["not_reacquired_after_hidden"] for lo in losses),
            "encodes_per_frame": round(float(np.mean(enc)), 3) if enc else None,
            "encodes_per_tracked_frame": round(float(np.mean(tenc)), 3) if tenc else None,
            "max_encodes_tracked_frame": int(max(tenc)) if tenc else None,
            "ms_per_frame_p50": round(float(np.median(times)) * 1e3, 1) if times else None,
            "states": dict(states)}


def _med(x: list[float]) -> float:
    return float(np.median(x)) if x else float("nan")


def _table(setting: str, results: dict[str, dict[str, Any]]) -> str:
    head = ("| variant | PCK@0.05 | PCK@0.1 | jitter (gt) | rot err median deg (frames) | raw pose rot err | "
            "losses (re-acq. mean) | found rate (re-acq. after hidden, never) | encodes/frame (tracked) | "
            "ms/frame p50 | states |")
    lines = [f"### {setting}", "", head, "|" + "---|" * 11]
    for name, p in results.items():
        states = ", ".join(f"{k} {v}" for k, v in sorted(p["states"].items()))
        lines.append(f"| {name} | {p['pck@0.05']} | {p['pck@0.1']} | {p['jitter']} ({p['jitter_gt']}) | "
                     f"{p['rot_err_median_deg']} ({p['pose_frames']}) | {p['rot_err_raw_median_deg']} | {p['losses']} "
                     f"({p['frames_to_reacquire_mean']}) | {p['found_rate_mean']} "
                     f"({p['frames_to_reacquire_after_hidden_mean']}, {p['not_reacquired_after_hidden']}) | "
                     f"{p['encodes_per_frame']} "
                     f"({p['encodes_per_tracked_frame']}) | {p['ms_per_frame_p50']} | {states} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "tracking")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--categories", nargs="+", default=["mug", "bottle", "lamp"])
    ap.add_argument("--settings", nargs="+", default=["small", "normal"], choices=["small", "normal"])
    ap.add_argument("--frames", type=int, default=30)
    ap.add_argument("--occlusion", metavar="A:B", help="scenes with a panel hiding the object in frames A..B-1")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=k=v,k=v",
                    help="extra variant: engine options changed from the defaults (repeatable)")
    ap.add_argument("--no-defaults", action="store_true", help="run only the --variant variants")
    ap.add_argument("--json", type=Path, help="write every figure here")
    args = ap.parse_args(argv)

    import torch

    from semcorr_ros.config import EngineConfig
    from semcorr_ros.engine import CorrespondenceEngine

    torch.set_num_threads(2)
    variants: dict[str, dict[str, Any]] = {} if args.no_defaults else {"off": {"tracking": "off"},
                                                                         "on": {"tracking": "on"}}
    variants.update(_variant(v) for v in args.variant)
    base_cfg = EngineConfig()
    engine = CorrespondenceEngine(base_cfg)
    report: dict[str, Any] = {"date": time.strftime("%Y-%m-%d"), "argv": sys.argv[1:], "variants": variants,
                              "settings": {}}
    for setting in args.settings:
        per_variant: dict[str, list[dict[str, Any]]] = {v: [] for v in variants}
        for seed in args.seeds:
            for cat in args.categories:
                scene = _scene(args.out, setting, cat, seed, args.frames, args.occlusion)
                index, spec, ref_pose, frames = _load(scene, base_cfg.depth_scale)
                for name, changes in variants.items():
                    r = run_scene(engine, base_cfg, changes, index, spec, ref_pose, frames)
                    per_variant[name].append(r)
                    print(f"{setting} {cat} seed {seed} {name}: PCK@0.1 {r['pck']['0.1']} coverage {r['coverage']} "
                          f"PCK_valid@0.1 {r['pck_valid']['0.1']} rot {_med(r['rot_err']):.1f} "
                          f"(raw {_med(r['rot_err_raw']):.1f}) jitter "
                          f"{r['temporal']['jitter']['rms']} states {r['states']}", flush=True)
        results = {name: pooled(rows) for name, rows in per_variant.items()}
        report["settings"][setting] = results
        print("\n" + _table(setting, results) + "\n", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
