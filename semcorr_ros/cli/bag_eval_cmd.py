"""``semcorr bag-eval BAG --reference REF``: replay a rosbag2 through the correspondence node and score it.

Node mode (default) replays the bag's colour, depth and camera-info topics over real DDS into a
``correspond_node`` child process (or an already running node with ``--no-launch``) and records
``/<node>/matches``; offline mode (``--mode offline``) runs the engine directly on every frame, which separates
model error from transport effects (dropped frames, latency). Both score against the bag's ground truth
(``semcorr-gt-v1`` on ``/semcorr/ground_truth``) and write ``bag_eval.json``, ``pck_curve.png``,
``latency_hist.png`` and ``contact_sheet.png`` to ``--out`` (:mod:`.bag_eval_output`: the report writing and
the printed summary). See docs/bag_eval.md.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from semcorr_ros.cli.bag_eval_output import _check_out_dir, _merge_for_sheet, _percentile, _write_outputs
from semcorr_ros.cli.common import add_engine_arguments, engine_config
from semcorr_ros.errors import BadReferenceError

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
