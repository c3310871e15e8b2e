"""``semcorr bag-eval BAG --reference REF``: replay a rosbag2 through the correspondence node and score it.

Node mode (default) replays the bag's colour, depth and camera-info topics over real DDS into a
``correspond_node`` child process (or an already running node with ``--no-launch``) and records
``/<node>/matches``; offline mode (``--mode offline``) runs the engine directly on every frame, which separates
model error from transport effects (dropped frames, latency). Both score against the bag's ground truth
(``semcorr-gt-v1`` on ``/semcorr/ground_truth``) and write ``bag_eval.json``, ``pck_curve.png``,
``latency_hist.png`` and ``contact_sheet.png`` to ``--out``. See docs/bag_eval.md.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from semcorr_ros.cli.common import add_engine_arguments, engine_config, write_json
from semcorr_ros.errors import BadReferenceError, SemcorrError

log = logging.getLogger("semcorr.bag_eval")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("bag", type=Path, help="rosbag2 folder (metadata.yaml + .mcap/.db3)")
    parser.add_argument("--reference", required=True, type=Path,
                        help="reference YAML: a single view (keypoints, image, depth, intrinsics; 'object_pose' for "
                             "the pose error), a reference set ('views') or an objects file ('objects'), scored "
                             "per object and overall")
    parser.add_argument("--out", type=Path, default=Path("out/bag_eval"),
                        help="output folder for bag_eval.json and the PNGs (default: %(default)s)")
    parser.add_argument("--mode", choices=["node", "offline"], default="node",
                        help="node: replay over DDS into correspond_node; offline: the engine on every frame, "
                             "no DDS (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=1.0,
                        help="replay speed, x the recorded pace (node mode; default: %(default)s)")
    g = parser.add_argument_group("topics (default: detected by message type and name)")
    g.add_argument("--color-topic", default=None, help="sensor_msgs/Image colour topic")
    g.add_argument("--depth-topic", default=None, help="sensor_msgs/Image depth topic aligned to colour")
    g.add_argument("--info-topic", default=None, help="sensor_msgs/CameraInfo of the colour camera")
    n = parser.add_argument_group("node mode")
    n.add_argument("--no-launch", action="store_true",
                   help="use an already running correspond_node (e.g. from ros2 launch) instead of starting one; "
                        "its own reference and parameters are used, this command's engine options are ignored")
    n.add_argument("--node-name", default=None,
                   help="node name; its outputs are /<name>/matches (default: 'semcorr' with --no-launch, as "
                        "ros2 launch names it; a launched node gets a name unique to this run, "
                        "semcorr_bag_eval_<pid>, so that no other node can be mistaken for it); with --no-launch "
                        "it may include the node's namespace, e.g. robot1/semcorr")
    n.add_argument("--domain-id", type=int, default=None,
                   help="ROS_DOMAIN_ID of the replay (default: a random private one when launching the node, "
                        "else the environment's)")
    n.add_argument("--ready-timeout", type=float, default=120.0,
                   help="seconds to wait for the node to be ready (default: %(default)s)")
    n.add_argument("--grace", type=float, default=5.0,
                   help="after the last frame, wait up to this many seconds for its output (default: %(default)s)")
    n.add_argument("--node-executable", type=Path, default=None,
                   help="correspond_node to start (default: the one next to this Python)")
    n.add_argument("--node-arg", action="append", default=[], metavar="ARG",
                   help="extra --ros-args argument for the node (repeatable, e.g. --node-arg=--log-level "
                        "--node-arg=debug)")
    parser.add_argument("--sync-slop", type=float, default=0.02,
                        help="offline mode: largest |t_depth - t_colour| to pair frames, s (default: %(default)s)")
    parser.add_argument("--contact-frames", type=int, default=11,
                        help="frames in contact_sheet.png (default: %(default)s)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH",
                        help="also write the results JSON here (it is always written to OUT/bag_eval.json)")
    add_engine_arguments(parser)


# ------------------------------------------------------------------------------------------------ helpers

def load_reference_with_pose(path: Path) -> tuple[Any, np.ndarray | None]:
    """The reference spec and its ``object_pose`` (``[4, 4]``, None when absent).

    Raises:
        BadReferenceError: unreadable reference or a malformed ``object_pose``.
    """
    import yaml

    from semcorr_ros.reference import load_reference

    spec = load_reference(path)
    doc = yaml.safe_load(path.read_text())
    pose = doc.get("object_pose")
    if pose is None:
        return spec, None
    try:
        arr = np.asarray(pose, dtype=np.float64).reshape(4, 4)
    except (TypeError, ValueError) as exc:
        raise BadReferenceError(f"object_pose in {path} must be a 4x4 matrix: {exc}") from exc
    if not np.isfinite(arr).all() or not np.allclose(arr[3], [0, 0, 0, 1], atol=1e-6):
        raise BadReferenceError(f"object_pose in {path} must be a finite 4x4 rigid transform (last row 0 0 0 1)")
    return spec, arr


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


# ------------------------------------------------------------------------------------------------ run

def run(args: argparse.Namespace) -> int:
    from semcorr_ros.bageval.replay import sigterm_as_interrupt

    with sigterm_as_interrupt():  # SIGTERM: the same clean-up as Ctrl-C (child node stopped, staging removed)
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    from semcorr_ros.bageval.bag import read_color_images, scan_bag
    from semcorr_ros.bageval.metrics import evaluate
    from semcorr_ros.bageval.plots import (
        pick_contact_frames,
        plot_contact_sheet,
        plot_temporal,
    )
    from semcorr_ros.bageval.temporal import sequence_report

    t_start = time.monotonic()
    progress = not args.no_progress
    index = scan_bag(args.bag, args.color_topic, args.depth_topic, args.info_topic)
    if reference_kind(args.reference) != "view":
        return _run_objects(args, index, t_start)
    spec, ref_pose = load_reference_with_pose(args.reference)
    threads = args.threads
    args.threads = None  # node mode: the node's torch_threads; offline: set below
    cfg = engine_config(args)
    args.threads = threads
    _check_out_dir(args.out)
    warnings: list[str] = []
    if index.ground_truth:
        names = set().union(*(set(g.names) for g in index.ground_truth.values()))
        if not names & set(spec.names):
            warnings.append(f"no keypoint name of the reference {spec.names} is in the ground truth "
                            f"{sorted(names)}: nothing to score")
    if len(set(index.color_stamps)) < index.frames:
        warnings.append(f"{index.frames - len(set(index.color_stamps))} colour frame(s) repeat an earlier stamp: "
                        "outputs pair with frames by stamp, so repeated ones count once")
    log.info("bag %s: %d colour frames over %.1f s, topics %s | %s | %s, ground truth on %d frames",
             index.path, index.frames, index.duration_s, index.color_topic, index.depth_topic, index.info_topic,
             len(index.ground_truth))

    run_info: dict[str, Any]
    node_log = None
    if args.mode == "node":
        from semcorr_ros.bageval.replay import run_node_mode

        result = run_node_mode(index, args.reference, cfg, rate=args.rate, launch=not args.no_launch,
                               node_name=args.node_name or ("semcorr" if args.no_launch else None),
                               domain_id=args.domain_id, ready_timeout=args.ready_timeout,
                               grace=args.grace, torch_threads=threads, node_executable=args.node_executable,
                               node_args=list(args.node_arg), progress=progress)
        predictions, run_info, node_log = result.predictions, result.info, result.node_log
        if args.no_launch and run_info.get("node_reference_id") not in (None, spec.reference_id):
            warnings.append(f"the running node's reference is {run_info.get('node_reference_id')!r}, not "
                            f"{spec.reference_id!r} from --reference: scores compare different references")
        rej = run_info.get("node_counters", {}).get("frames_rejected")
        if rej:
            warnings.append(f"the node rejected {rej} frame(s): {run_info['node_diagnostics'].get('last_rejection')}")
    else:
        import torch

        from semcorr_ros.bageval.offline import run_offline
        from semcorr_ros.engine import CorrespondenceEngine

        if threads:
            torch.set_num_threads(threads)
        t = time.perf_counter()
        engine = CorrespondenceEngine(cfg)
        load_s = time.perf_counter() - t
        predictions, run_info = run_offline(index, spec, engine, slop=args.sync_slop, progress=progress)
        run_info["model_load_s"] = round(load_s, 2)
        if run_info["rejected"]:
            warnings.append(f"{sum(run_info['rejected'].values())} frame(s) rejected: "
                            f"{next(iter(run_info['rejected']))}")

    metrics = evaluate(index.color_stamps, predictions, index.ground_truth, spec.names, ref_pose)
    metrics["latency_p95_ms"] = _percentile([p.latency_s for p in predictions.values()], 95)
    temporal_plot = None
    if index.ground_truth:
        metrics["temporal"], temporal_plot = sequence_report(index.color_stamps, predictions, index.ground_truth,
                                                             spec.names)
    frame_numbers = {s: i for i, s in reversed(list(enumerate(index.color_stamps)))}

    title = f"{index.path.name} ({args.mode} mode)"

    def render(stage: dict[str, Path]) -> None:
        chosen = pick_contact_frames(index.color_stamps, predictions, index.ground_truth,
                                     max(1, args.contact_frames))
        images = read_color_images(index, set(chosen))
        plot_contact_sheet(stage["contact_sheet"], images, chosen, predictions, index.ground_truth, spec,
                           frame_numbers, title=title)
        if temporal_plot is not None:
            plot_temporal(temporal_plot, stage["temporal"], title=title)

    config = {"reference_id": spec.reference_id, "reference_keypoints": list(spec.names),
              "reference_has_object_pose": ref_pose is not None}
    return _write_outputs(args, index, title, render, config, run_info, metrics, warnings, node_log, t_start,
                          [p.latency_s for p in predictions.values()], temporal=temporal_plot is not None,
                          cfg=cfg, threads=threads)


def reference_kind(path: Path) -> str:
    """``view``, ``set`` or ``objects`` (:func:`semcorr_ros.reference.sets.file_kind`); BadReferenceError for a
    file that is none of them or cannot be read."""
    from semcorr_ros.reference.sets import file_kind
    from semcorr_ros.reference.single import read_document

    return file_kind(read_document(path), path)


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


def _run_objects(args: argparse.Namespace, index: Any, t_start: float) -> int:
    """A reference set or an objects file: every object matched per frame (``engine.match_objects``; the node's
    ``~/matches`` once per object), scored per object against its ground truth, and overall."""
    from semcorr_ros.bageval.bag import read_color_images
    from semcorr_ros.bageval.metrics import evaluate_objects
    from semcorr_ros.bageval.objects import load_eval_objects, pair_ground_truth
    from semcorr_ros.bageval.plots import (
        pick_contact_frames,
        plot_contact_sheet,
        plot_temporal,
    )
    from semcorr_ros.bageval.temporal import sequence_report

    progress = not args.no_progress
    loaded = load_eval_objects(args.reference)
    specs = loaded.specs
    ids = [o.object_id for o in specs]
    threads = args.threads
    args.threads = None
    cfg = engine_config(args)
    args.threads = threads
    _check_out_dir(args.out)
    warnings: list[str] = []
    by_instance = dict(index.ground_truth_by_instance)
    if not by_instance and index.ground_truth:  # an index built without instances (tests, other tools)
        for s, g in index.ground_truth.items():
            by_instance.setdefault(g.instance, {})[s] = g
    instances = {i: next(iter(recs.values())).category for i, recs in by_instance.items()}
    pairing, pair_warnings = pair_ground_truth(loaded, instances)
    warnings += pair_warnings
    gt = {oid: by_instance.get(inst) if inst else None for oid, inst in pairing.items()}
    for o in specs:
        g = gt.get(o.object_id)
        if g:
            names = set().union(*(set(r.names) for r in g.values()))
            if not names & set(o.names):
                warnings.append(f"no keypoint name of object {o.object_id!r} {o.names} is in its ground truth "
                                f"{sorted(names)}: nothing to score")
    if len(set(index.color_stamps)) < index.frames:
        warnings.append(f"{index.frames - len(set(index.color_stamps))} colour frame(s) repeat an earlier stamp: "
                        "outputs pair with frames by stamp, so repeated ones count once")
    node_log = None
    if args.mode == "node":
        from semcorr_ros.bageval.replay import run_node_mode

        result = run_node_mode(index, args.reference, cfg, rate=args.rate, launch=not args.no_launch,
                               node_name=args.node_name or ("semcorr" if args.no_launch else None),
                               domain_id=args.domain_id, ready_timeout=args.ready_timeout,
                               grace=args.grace, torch_threads=threads, node_executable=args.node_executable,
                               node_args=list(args.node_arg), progress=progress)
        run_info, node_log = result.info, result.node_log
        predictions = {oid: dict(result.object_predictions.get(oid, {})) for oid in ids}
        others = sorted(set(result.object_predictions) - set(ids))
        if others:
            warnings.append(f"the node published objects {others} that {args.reference} does not list: ignored")
        rej = run_info.get("node_counters", {}).get("frames_rejected")
        if rej:
            warnings.append(f"the node rejected {rej} frame(s): {run_info['node_diagnostics'].get('last_rejection')}")
    else:
        import torch

        from semcorr_ros.bageval.offline import run_offline_objects
        from semcorr_ros.engine import CorrespondenceEngine

        if threads:
            torch.set_num_threads(threads)
        t = time.perf_counter()
        engine = CorrespondenceEngine(cfg)
        load_s = time.perf_counter() - t
        predictions, run_info = run_offline_objects(index, specs, engine, slop=args.sync_slop, progress=progress)
        run_info["model_load_s"] = round(load_s, 2)
        if run_info["rejected"]:
            warnings.append(f"{sum(run_info['rejected'].values())} frame(s) rejected: "
                            f"{next(iter(run_info['rejected']))}")
    metrics = evaluate_objects(index.color_stamps, predictions, gt, {o.object_id: o.names for o in specs},
                               {o.spec.object_id: o.view_poses for o in loaded.objects})
    temporal_plots = []
    for o in specs:
        oid = o.object_id
        metrics["per_object"][oid]["ground_truth_instance"] = pairing.get(oid)
        if gt.get(oid):
            metrics["per_object"][oid]["temporal"], plot = sequence_report(index.color_stamps, predictions[oid],
                                                                           gt[oid], o.names)
            temporal_plots.append((oid, plot))
    lat = {s: p.latency_s for oid in ids for s, p in predictions[oid].items()}
    metrics["latency_p95_ms"] = _percentile(list(lat.values()), 95)
    frame_numbers = {s: i for i, s in reversed(list(enumerate(index.color_stamps)))}
    title = f"{index.path.name} ({args.mode} mode, {len(ids)} object{'s' if len(ids) > 1 else ''})"

    def render(stage: dict[str, Path]) -> None:
        sheet_pred, sheet_gt = _merge_for_sheet(ids, predictions, gt)
        chosen = pick_contact_frames(index.color_stamps, sheet_pred, sheet_gt, max(1, args.contact_frames))
        images = read_color_images(index, set(chosen))
        plot_contact_sheet(stage["contact_sheet"], images, chosen, sheet_pred, sheet_gt, specs[0].views[0],
                           frame_numbers, title=title)
        if temporal_plots:
            plot_temporal(temporal_plots, stage["temporal"], title=title)

    config = {"reference_kind": loaded.kind,
              "objects": [{"object_id": o.spec.object_id, "file": o.file,
                           "views": [v.reference_id for v in o.spec.views], "keypoints": list(o.spec.names),
                           "views_with_object_pose": [k for k, v in o.view_poses.items() if v is not None],
                           "ground_truth_instance": pairing.get(o.spec.object_id)}
                          for o in loaded.objects]}
    return _write_outputs(args, index, title, render, config, run_info, metrics, warnings, node_log, t_start,
                          list(lat.values()), temporal=bool(temporal_plots), cfg=cfg, threads=threads)


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

