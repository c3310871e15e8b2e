"""The outputs of ``semcorr bag-eval``: the report written to ``--out`` and the summary printed at the end.

:func:`_write_outputs` renders every output into a staging folder inside OUT and moves it into place
(``bag_eval.json`` last): the PCK curve, the latency histogram, the node log, the JSON report and the pictures
the run draws itself (contact sheet, temporal plot; :func:`_merge_for_sheet` merges several objects into one
contact-sheet record). :func:`summary_text` is the printed summary of a report.

Units: latencies are seconds in, milliseconds in the report (``latency_p95_ms``, :func:`_percentile`); 3D
errors millimetres, rotation errors degrees; pixel coordinates ``[K, 2]`` (x, y), 3D points ``[K, 3]`` metres in
the camera optical frame, boxes ``[x0, y0, x1, y1]`` pixels.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from semcorr_ros.cli.common import write_json
from semcorr_ros.errors import SemcorrError


def _fmt(v: Any, pct: bool = False, unit: str = "") -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.1f}%" if pct else f"{v:g}{unit}"


def _temporal_line(t: dict[str, Any]) -> str:
    """One line of the temporal figures (jitter, found rate, losses and re-acquisition, track states)."""
    j, g, lo = t["jitter"]["rms"], t["jitter_gt"]["rms"], t["losses"]
    text = (f"temporal: jitter {_fmt(None if j is None else round(j, 4))} (ground truth "
            f"{_fmt(None if g is None else round(g, 4))}), found on {_fmt(t['found_rate'], True)} of visible frames, "
            f"{lo['losses']} loss(es)")
    if lo["frames_to_reacquire"]:
        text += f", re-acquired after {lo['frames_to_reacquire_mean']:g} frames on average"
    if lo["not_reacquired"]:
        text += ", not re-acquired by the end"
    if lo.get("reappearances"):
        after = lo["frames_to_reacquire_after_hidden"]
        text += (f"; back in view {lo['reappearances']}x: found again after "
                 + (", ".join(str(a) for a in after) if after else "-") + " frame(s)"
                 + (f", {lo['not_reacquired_after_hidden']}x never" if lo["not_reacquired_after_hidden"] else ""))
    if t.get("track_states"):
        text += "; track states: " + ", ".join(f"{k} {v}" for k, v in t["track_states"].items())
    return text


def summary_text(report: dict[str, Any]) -> str:
    m = report["metrics"]
    f = m["frames"]
    lines = [f"semcorr bag-eval ({report['config']['mode']} mode): {report['bag']['path']}",
             f"  frames: {f['color']} colour, {f['with_output']} with output, dropped {_fmt(f['dropped_rate'], True)}"
             f", ground truth on {f['with_ground_truth']}"]
    lat = m["latency_ms"]
    what = "engine time" if report["config"]["mode"] == "offline" else "output receive - colour publish"
    lines.append(f"  latency ({what}): p50 {_fmt(lat['median'], unit=' ms')}, p95 "
                 f"{_fmt(report['metrics'].get('latency_p95_ms'), unit=' ms')}, max {_fmt(lat['max'], unit=' ms')}")
    if not m["has_ground_truth"]:
        lines.append("  no ground truth in the bag: latency and coverage figures only (no PCK, 3D or pose error)")
    else:
        p, pv = m["pck"], m["pck_valid"]
        lines.append("  PCK@0.05/0.1/0.15: " + " / ".join(_fmt(p[k], True) for k in ("0.05", "0.1", "0.15"))
                     + f"  (among valid outputs: {_fmt(pv['0.1'], True)} @0.1; coverage {_fmt(m['coverage'], True)};"
                     f" counting dropped frames as wrong: {_fmt(m['pck_all_frames']['0.1'], True)} @0.1)")
        sk = m["scored_keypoints"]
        lines.append(f"  scored: {sk['with_output']} visible ground-truth keypoints on frames with an output "
                     f"({len(m['keypoints']['scored'])} names shared by the reference and the ground truth)")
        per_kp = m.get("per_keypoint") or {}
        if per_kp:
            width = max(len(n) for n in per_kp)
            lines.append(f"  {'keypoint':<{width}}  scored  PCK@0.1  coverage  3D median")
            for name, row in list(per_kp.items())[:30]:
                e = row["error_3d_mm_median"]
                lines.append(f"  {name:<{width}}  {row['scored']:6d}  {_fmt(row['pck@0.1'], True):>7}  "
                             f"{_fmt(row['coverage'], True):>8}  {'n/a' if e is None else f'{e:.1f} mm':>9}")
        e3 = m["error_3d_mm"]
        lines.append(f"  3D error: median {_fmt(e3['median'], unit=' mm')}, mean {_fmt(e3['mean'], unit=' mm')} "
                     f"({e3['n']} points)")
        po = m["pose"]
        if po["reference_has_object_pose"]:
            lines.append(f"  pose: valid on {_fmt(po['validity_rate'], True)} of frames; rotation error median "
                         f"{_fmt(po['rotation_error_deg']['median'], unit=' deg')}, translation error median "
                         f"{_fmt(po['translation_error_mm']['median'], unit=' mm')}")
        else:
            lines.append(f"  pose: valid on {_fmt(po['validity_rate'], True)} of frames; no pose error (the reference "
                         "has no object_pose)")
    if m.get("temporal"):
        lines.append("  " + _temporal_line(m["temporal"]))
    for oid, po in (m.get("per_object") or {}).items():
        p = po.get("pck") or {}
        views = ", ".join(f"{v} x{n}" for v, n in po.get("views", {}).items())
        lines.append(f"  object {oid} (ground truth {po.get('ground_truth_instance') or 'none'}): PCK@0.1 "
                     f"{_fmt(p.get('0.1'), True)}, {po.get('scored_keypoints', {}).get('with_output', 0)} scored"
                     + (f"; views chosen: {views}" if views else ""))
        if po.get("temporal"):
            lines.append("    " + _temporal_line(po["temporal"]))
    if report["bag"]["gt_bad"]:
        lines.append(f"  warning: {report['bag']['gt_bad']} ground-truth record(s) did not parse and were skipped")
    for w in report.get("warnings", []):
        lines.append(f"  warning: {w}")
    lines.append(f"  wall time {report['wall_s']:.1f} s; results: {report['outputs']['json']}")
    lines.append("  pictures: " + ", ".join(report["outputs"][k] for k in ("pck_curve", "latency_hist",
                                                                              "contact_sheet", "temporal")
                                            if k in report["outputs"]))
    return "\n".join(lines)


def _check_out_dir(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise SemcorrError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    if not os.access(out, os.W_OK):
        raise SemcorrError(f"--out {out} is not writable")


def _merge_for_sheet(ids: list[str], predictions: dict, ground_truth: dict) -> tuple[dict, dict]:
    """Every object's predictions and ground truth per frame as one record (names ``<object>/<keypoint>``), for
    the contact sheet."""
    from dataclasses import replace

    preds: dict[int, Any] = {}
    gts: dict[int, Any] = {}
    for oid in ids:
        for s, p in predictions[oid].items():
            p = replace(p, names=[f"{oid}/{n}" for n in p.names])
            if s in preds:
                q = preds[s]
                p = replace(q, names=q.names + p.names, xy=np.concatenate([q.xy, p.xy]),
                            valid=np.concatenate([q.valid, p.valid]), score=np.concatenate([q.score, p.score]),
                            points3d=np.concatenate([q.points3d, p.points3d]),
                            has_point=np.concatenate([q.has_point, p.has_point]))
            preds[s] = p
        for s, g in (ground_truth.get(oid) or {}).items():
            g = replace(g, names=[f"{oid}/{n}" for n in g.names])
            if s in gts:
                h = gts[s]
                box = np.array([np.fmin(h.object_box[0], g.object_box[0]), np.fmin(h.object_box[1], g.object_box[1]),
                                np.fmax(h.object_box[2], g.object_box[2]), np.fmax(h.object_box[3], g.object_box[3])])
                g = replace(h, names=h.names + g.names, keypoints_2d=np.concatenate([h.keypoints_2d, g.keypoints_2d]),
                            visible=np.concatenate([h.visible, g.visible]),
                            keypoints_3d=np.concatenate([h.keypoints_3d, g.keypoints_3d]), object_box=box)
            gts[s] = g
    return preds, gts


def _write_outputs(args: argparse.Namespace, index: Any, title: str, render: Any, config: dict[str, Any],
                   run_info: dict[str, Any], metrics: dict[str, Any], warnings: list[str], node_log: str | None,
                   t_start: float, latencies_s: list[float | None], *, temporal: bool, cfg: Any,
                   threads: int | None) -> int:
    """Render every output into a staging folder inside OUT, then move it into place with os.replace (the JSON
    last): an interruption leaves the previous outputs untouched and no partial file. ``render(stage)`` draws
    the run's own pictures (contact sheet, temporal); the PCK curve, latency histogram, node log and JSON are
    common. Prints the summary; returns the exit code."""
    from semcorr_ros.bageval.plots import plot_latency_hist, plot_pck_curve

    out: Path = args.out
    names = {"json": "bag_eval.json", "pck_curve": "pck_curve.png", "latency_hist": "latency_hist.png",
             "contact_sheet": "contact_sheet.png"}
    if temporal:
        names["temporal"] = "temporal.png"
    if node_log is not None:
        names["node_log"] = "node.log"
    paths = {k: out / v for k, v in names.items()}
    staging = Path(tempfile.mkdtemp(prefix=".bag_eval.", dir=out))
    try:
        stage = {k: staging / v for k, v in names.items()}
        render(stage)
        plot_pck_curve(metrics, stage["pck_curve"], title=f"PCK, {title}")
        plot_latency_hist([v * 1e3 for v in latencies_s if v is not None], stage["latency_hist"],
                          title=f"latency, {title}",
                          label="engine time" if args.mode == "offline" else
                          "latency (output receive - colour publish)")
        if node_log is not None:
            stage["node_log"].write_text(node_log)
        report = {
            "command": "semcorr " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
            "argv": list(sys.argv),
            "config": {"mode": args.mode, "rate": args.rate, "reference": str(args.reference.resolve()),
                       **config, "no_launch": args.no_launch,
                       "node_name": run_info.get("node_name") if args.mode == "node" else None,
                       "engine": cfg.to_dict(), "threads": threads,
                       "pck_threshold": "alpha * max(w, h) of the ground-truth object_box",
                       "sync_slop": args.sync_slop},
            "bag": index.summary(),
            "run": run_info,
            "metrics": metrics,
            "warnings": warnings,
            "wall_s": round(time.monotonic() - t_start, 2),
            "outputs": {k: str(v) for k, v in paths.items()},
        }
        write_json(stage["json"], report)
        for key in [k for k in names if k != "json"] + ["json"]:
            os.chmod(stage[key], 0o644)
            os.replace(stage[key], paths[key])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if args.json is not None and args.json.resolve() != paths["json"].resolve():
        write_json(args.json, report)
    print(summary_text(report))
    return 0


def _percentile(values: list[float | None], q: float) -> float | None:
    v = [x for x in values if x is not None]
    return round(float(np.percentile(v, q)) * 1e3, 1) if v else None
