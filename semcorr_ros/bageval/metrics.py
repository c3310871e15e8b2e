"""Scores of a bag run: PCK, 3D error, pose error, latency, dropped frames (numpy only, no ROS).

Definitions (``docs/bag_eval.md`` has the same text):

- A *scored keypoint* is a keypoint of a frame that has ground truth, whose name is both in the reference and in
  the ground truth, that is ``visible`` in the ground truth, and whose frame has a finite ``object_box``.
- PCK@alpha: a scored keypoint is correct when its output is ``valid`` and lies within ``alpha * max(w, h)`` of the
  ground-truth pixel, ``w, h`` being the size of the frame's ground-truth ``object_box``. A keypoint without an
  output or with ``valid = false`` counts as wrong. ``pck`` is over the scored keypoints of frames that got an
  output; ``pck_all_frames`` also counts every scored keypoint of a dropped frame as wrong; ``pck_valid`` is over
  the scored keypoints whose output is valid only; ``coverage`` = valid outputs / scored keypoints.
- 3D error: ``|point - keypoints_3d|`` in mm for scored keypoints whose output is valid and has a point.
- Pose error: with a valid output pose and a reference ``object_pose``, the ground-truth reference-to-live
  transform is ``relative_pose(frame.object_pose, reference object_pose)``; rotation error = angle of
  ``R_gt R_pred^T`` (degrees), translation error = ``|t_pred - t_gt|`` (mm).
- Latency: per frame with an output (node mode: receive time of the output - publish time of the colour message
  with the same stamp; offline: the engine's time). Dropped rate = colour frames without output / colour frames.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from semcorr_ros.eval.pck import box_unit, normalised_errors, within
from semcorr_ros.groundtruth import FrameGroundTruth, relative_pose

__all__ = ["FramePrediction", "PCK_ALPHAS", "CURVE_ALPHAS", "evaluate", "evaluate_objects", "rotation_error_deg",
           "pose_errors"]

PCK_ALPHAS: tuple[float, ...] = (0.05, 0.1, 0.15)
CURVE_ALPHAS: np.ndarray = np.round(np.linspace(0.0, 0.2, 41), 4)


@dataclass
class FramePrediction:
    """One output (a ``CorrespondenceArray`` or an engine ``MatchResult``) as plain arrays.

    Attributes:
        stamp_ns: the colour stamp it belongs to.
        names: ``K`` keypoint names; ``xy`` ``[K, 2]`` pixels; ``valid``/``has_point`` ``[K]`` bool;
        score: ``[K]``; points3d: ``[K, 3]`` metres (camera optical frame).
        pose: ``[4, 4]`` reference-to-live transform when ``pose_valid``, else None.
        latency_s: node mode: receive - publish time; offline: engine time. processing_s: engine time.
        object_id, view_id: for an object of a reference set or objects file: the object and its chosen view
            (the pose maps that view's camera frame to the live one).
        track_status: tracking mode: ``tracked``, ``detecting``, ``lost`` or ``reacquired``; else None.
    """

    stamp_ns: int
    names: list[str]
    xy: np.ndarray
    valid: np.ndarray
    score: np.ndarray
    points3d: np.ndarray
    has_point: np.ndarray
    pose: np.ndarray | None = None
    latency_s: float | None = None
    processing_s: float | None = None
    object_id: str | None = None
    view_id: str | None = None
    track_status: str | None = None

    @property
    def pose_valid(self) -> bool:
        return self.pose is not None

    @staticmethod
    def from_message(msg: Any, latency_s: float | None = None) -> "FramePrediction":
        """From a ``semcorr_ros/CorrespondenceArray``."""
        cs = list(msg.correspondences)
        pose = None
        if msg.pose_valid:
            p, q = msg.pose.position, msg.pose.orientation
            pose = np.eye(4)
            pose[:3, :3] = _quat_to_R(q.x, q.y, q.z, q.w)
            pose[:3, 3] = [p.x, p.y, p.z]
        return FramePrediction(
            stamp_ns=int(msg.header.stamp.sec) * 1_000_000_000 + int(msg.header.stamp.nanosec),
            names=[c.name for c in cs], xy=np.array([[c.x, c.y] for c in cs], float).reshape(-1, 2),
            valid=np.array([bool(c.valid) for c in cs], bool), score=np.array([c.score for c in cs], float),
            points3d=np.array([[c.point.x, c.point.y, c.point.z] for c in cs], float).reshape(-1, 3),
            has_point=np.array([bool(c.has_point) for c in cs], bool), pose=pose, latency_s=latency_s,
            processing_s=float(msg.processing_time), object_id=str(getattr(msg, "object_id", "") or "") or None,
            view_id=str(getattr(msg, "view_id", "") or "") or None,
            track_status=str(getattr(msg, "track_status", "") or "") or None)

    @staticmethod
    def from_result(stamp_ns: int, result: Any, latency_s: float) -> "FramePrediction":
        """From an engine ``MatchResult``."""
        pose = None
        if result.pose is not None and result.pose.valid:
            pose = np.eye(4)
            pose[:3, :3] = result.pose.R
            pose[:3, 3] = np.asarray(result.pose.t).reshape(3)
        return FramePrediction(stamp_ns=stamp_ns, names=list(result.names), xy=np.asarray(result.xy, float),
                               valid=np.asarray(result.valid, bool), score=np.asarray(result.score, float),
                               points3d=np.asarray(result.points3d, float), has_point=np.asarray(result.has_3d, bool),
                               pose=pose, latency_s=latency_s, processing_s=latency_s)


def _quat_to_R(x: float, y: float, z: float, w: float) -> np.ndarray:
    n = math.sqrt(x * x + y * y + z * z + w * w) or 1.0
    x, y, z, w = x / n, y / n, z / n, w / n
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def rotation_error_deg(R_pred: np.ndarray, R_gt: np.ndarray) -> float:
    """Angle of the rotation taking ``R_pred`` to ``R_gt``, degrees."""
    c = (np.trace(np.asarray(R_gt) @ np.asarray(R_pred).T) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(c, -1.0, 1.0))))


def pose_errors(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    """``(rotation error deg, translation error mm)`` between two ``[4, 4]`` transforms."""
    return rotation_error_deg(pred[:3, :3], gt[:3, :3]), float(np.linalg.norm(pred[:3, 3] - gt[:3, 3]) * 1e3)


def _stats(values: Sequence[float], scale: float = 1.0, digits: int = 2) -> dict[str, Any]:
    v = np.asarray([x for x in values if x is not None and np.isfinite(x)], float) * scale
    if v.size == 0:
        return {"n": 0, "median": None, "mean": None, "p90": None, "max": None}
    return {"n": int(v.size), "median": round(float(np.median(v)), digits), "mean": round(float(v.mean()), digits),
            "p90": round(float(np.percentile(v, 90)), digits), "max": round(float(v.max()), digits)}


def _ratio(num: float, den: float, digits: int = 4) -> float | None:
    return round(float(num) / float(den), digits) if den else None


def evaluate(color_stamps: Sequence[int], predictions: Mapping[int, FramePrediction],
             ground_truth: Mapping[int, FrameGroundTruth], reference_names: Sequence[str],
             reference_pose: np.ndarray | None = None, alphas: Sequence[float] = PCK_ALPHAS,
             curve_alphas: Sequence[float] = CURVE_ALPHAS,
             view_poses: Mapping[str, np.ndarray | None] | None = None) -> dict[str, Any]:
    """Every figure of a run (see the module docstring for the definitions).

    Args:
        color_stamps: the colour frames of the bag (ns), in order.
        predictions: colour stamp -> output (frames without one were dropped).
        ground_truth: colour stamp -> ground truth (may be empty).
        reference_names: the reference's keypoint names (only names also in the ground truth are scored).
        reference_pose: the reference's ``object_pose`` (None: no pose error).
        view_poses: a reference set's ``object_pose`` per view id: a frame's pose error is taken against the
            view its prediction says it chose (``FramePrediction.view_id``; ``reference_pose`` otherwise).

    Returns:
        A JSON-ready dict: ``frames``, ``latency_ms``, ``has_ground_truth`` and, with ground truth, ``pck``,
        ``pck_valid``, ``pck_all_frames``, ``coverage``, ``pck_curve``, ``per_keypoint``, ``error_3d_mm``,
        ``pixel_error``, ``pose``; plus ``per_frame`` rows.
    """
    alphas = tuple(float(a) for a in alphas)
    curve = np.asarray(curve_alphas, float)
    n_frames = len(color_stamps)
    stamps = list(dict.fromkeys(int(s) for s in color_stamps))
    answered = [s for s in stamps if s in predictions]
    lat = [predictions[s].latency_s for s in answered]
    proc = [predictions[s].processing_s for s in answered]
    out: dict[str, Any] = {
        "frames": {"color": n_frames, "unique_stamps": len(stamps), "with_output": len(answered),
                   "dropped": len(stamps) - len(answered), "dropped_rate": _ratio(len(stamps) - len(answered),
                                                                                  len(stamps)),
                   "with_ground_truth": sum(1 for s in stamps if s in ground_truth)},
        "latency_ms": {k: v for k, v in _stats(lat, 1e3, 1).items()},
        "processing_ms": _stats(proc, 1e3, 1),
    }
    pose_frames = [predictions[s] for s in answered]
    out["pose_validity_rate"] = _ratio(sum(p.pose_valid for p in pose_frames), len(pose_frames))
    gt_stamps = [s for s in stamps if s in ground_truth]
    out["has_ground_truth"] = bool(gt_stamps)
    if not gt_stamps:
        out["per_frame"] = [{"stamp_ns": s, "output": s in predictions,
                             "latency_ms": _ms(predictions[s].latency_s) if s in predictions else None}
                            for s in stamps]
        return out

    ref_names = [str(n) for n in reference_names]
    gt_names = set().union(*(set(ground_truth[s].names) for s in gt_stamps))
    names = [n for n in ref_names if n in gt_names]
    out["keypoints"] = {"scored": names, "reference_only": [n for n in ref_names if n not in gt_names],
                        "ground_truth_only": sorted(gt_names - set(ref_names))}
    # per scored keypoint: (frame stamp, name, answered, valid, dist/threshold-normaliser, err3d_mm)
    rows: list[tuple[int, str, bool, bool, float, float]] = []
    per_frame: list[dict[str, Any]] = []
    rot_err: list[float] = []
    trans_err: list[float] = []
    no_box = 0
    for s in gt_stamps:
        gt = ground_truth[s]
        pred = predictions.get(s)
        size = box_unit(gt.object_box)
        frame_row: dict[str, Any] = {"stamp_ns": s, "frame_index": gt.frame_index, "output": pred is not None,
                                     "latency_ms": _ms(pred.latency_s) if pred else None}
        if not np.isfinite(size):
            no_box += 1
            frame_row["scored"] = 0
            per_frame.append(frame_row)
            continue
        pidx = {n: i for i, n in enumerate(pred.names)} if pred is not None else {}
        gidx = {n: i for i, n in enumerate(gt.names)}
        n_scored = n_correct = 0
        for name in names:
            g = gidx.get(name)
            if g is None or not bool(gt.visible[g]):
                continue
            i = pidx.get(name)
            answered_kp = i is not None
            valid = bool(answered_kp and pred.valid[i] and np.isfinite(pred.xy[i]).all())
            d = float(normalised_errors(pred.xy[i:i + 1], gt.keypoints_2d[g:g + 1], size)[0]) if valid else np.inf
            e3 = float("nan")
            if valid and pred.has_point[i] and np.isfinite(gt.keypoints_3d[g]).all():
                e3 = float(np.linalg.norm(pred.points3d[i] - gt.keypoints_3d[g]) * 1e3)
            rows.append((s, name, pred is not None, valid, d, e3))
            n_scored += 1
            n_correct += bool(within(d, 0.1))
        frame_row.update({"scored": n_scored, "correct@0.1": int(n_correct),
                          "pck@0.1": _ratio(n_correct, n_scored) if pred is not None else None})
        if pred is not None:
            frame_row["pose_valid"] = pred.pose_valid
            ref_pose = reference_pose
            if view_poses is not None and pred.view_id in view_poses:
                ref_pose = view_poses[pred.view_id]
            if pred.pose_valid and ref_pose is not None:
                re, te = pose_errors(pred.pose, relative_pose(gt.object_pose, ref_pose))
                rot_err.append(re)
                trans_err.append(te)
                frame_row.update({"rot_err_deg": round(re, 3), "trans_err_mm": round(te, 2)})
        per_frame.append(frame_row)

    ans = np.array([r[2] for r in rows], bool)
    val = np.array([r[3] for r in rows], bool)
    dist = np.array([r[4] for r in rows], float)
    e3 = np.array([r[5] for r in rows], float)
    kp_names = np.array([r[1] for r in rows], object)

    def pck(a: float, mask: np.ndarray) -> float | None:
        return _ratio(int(np.sum(within(dist[mask], a))), int(mask.sum()))

    out["scored_keypoints"] = {"with_output": int(ans.sum()), "all_frames": len(rows),
                               "frames_without_object_box": no_box}
    out["pck"] = {f"{a:g}": pck(a, ans) for a in alphas}
    out["pck_valid"] = {f"{a:g}": pck(a, val) for a in alphas}
    out["pck_all_frames"] = {f"{a:g}": pck(a, np.ones_like(ans)) for a in alphas}
    out["coverage"] = _ratio(int(val.sum()), int(ans.sum()))
    out["pck_curve"] = {"alpha": curve.tolist(), "pck": [pck(a, ans) for a in curve],
                        "pck_valid": [pck(a, val) for a in curve]}
    out["pixel_error"] = _stats(dist[val] * 1.0, 1.0, 4) | {"unit": "fraction of max(object_box w, h)"}
    out["error_3d_mm"] = _stats(e3[val], 1.0, 1)
    per_kp: dict[str, Any] = {}
    for name in names:
        m = (kp_names == name) & ans
        mv = m & val
        per_kp[name] = {"scored": int(m.sum()), "coverage": _ratio(int(mv.sum()), int(m.sum())),
                        **{f"pck@{a:g}": pck(a, m) for a in alphas},
                        "pck_valid@0.1": pck(0.1, mv), "error_3d_mm_median": _stats(e3[mv], 1.0, 1)["median"]}
    out["per_keypoint"] = per_kp
    with_pose = [predictions[s] for s in gt_stamps if s in predictions]
    out["pose"] = {
        "reference_has_object_pose": reference_pose is not None or any(
            v is not None for v in (view_poses or {}).values()),
        "validity_rate": _ratio(sum(p.pose_valid for p in with_pose), len(with_pose)),
        "rotation_error_deg": _stats(rot_err, 1.0, 2),
        "translation_error_mm": _stats(trans_err, 1.0, 1),
    }
    out["per_frame"] = per_frame
    return out


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v * 1e3, 2)


#: object keys in the pooled evaluation of several objects (a stamp of object k is ``stamp + k * _OBJECT_KEY``)
_OBJECT_KEY = 10 ** 20


def evaluate_objects(color_stamps: Sequence[int], predictions: Mapping[str, Mapping[int, FramePrediction]],
                     ground_truth: Mapping[str, Mapping[int, FrameGroundTruth] | None],
                     names: Mapping[str, Sequence[str]],
                     view_poses: Mapping[str, Mapping[str, np.ndarray | None]],
                     alphas: Sequence[float] = PCK_ALPHAS) -> dict[str, Any]:
    """The figures of several objects (a reference set is one object): per object as :func:`evaluate`, and
    overall, every scored keypoint of every object pooled (so ``pck`` is correct / scored over all of them).

    Args:
        color_stamps: the colour frames of the bag (ns), in order.
        predictions: object id -> (colour stamp -> its output), the object's keypoint names.
        ground_truth: object id -> (colour stamp -> the ground truth of that object's instance); None or empty:
            the object has no ground truth (it is reported, not scored).
        names: object id -> its keypoint names (the union of its views').
        view_poses: object id -> (view id -> that view's ``object_pose`` or None).

    Returns:
        The pooled figures in :func:`evaluate`'s layout (``frames``/latency over the bag's frames;
        ``per_keypoint`` keyed ``<object>/<keypoint>``), plus ``per_object``: object id -> its own figures (with
        ``views``: how often each view was chosen, over the frames with an output) and ``objects``: the ids.
    """
    ids = list(predictions)
    frames_pred: dict[int, FramePrediction] = {}
    for oid in ids:
        for s, p in predictions[oid].items():
            frames_pred.setdefault(s, p)
    base = evaluate(color_stamps, frames_pred, {}, [], None, alphas)
    per_object: dict[str, Any] = {}
    pooled_stamps: list[int] = []
    pooled_pred: dict[int, FramePrediction] = {}
    pooled_gt: dict[int, FrameGroundTruth] = {}
    pooled_names: list[str] = []
    pooled_poses: dict[str, np.ndarray | None] = {}
    from dataclasses import replace

    for k, oid in enumerate(ids):
        preds = predictions[oid]
        gt = ground_truth.get(oid) or {}
        poses = view_poses.get(oid) or {}
        m = evaluate(color_stamps, preds, gt, names[oid], None, alphas, view_poses=poses)
        views: dict[str, int] = {}
        for p in preds.values():
            if p.view_id is not None:
                views[p.view_id] = views.get(p.view_id, 0) + 1
        m["views"] = views
        per_object[oid] = m
        if not gt:
            continue
        off = (k + 1) * _OBJECT_KEY
        pooled_stamps += [int(s) + off for s in color_stamps]
        for s, p in preds.items():
            pooled_pred[int(s) + off] = replace(p, names=[f"{oid}/{n}" for n in p.names],
                                                view_id=None if p.view_id is None else f"{oid}/{p.view_id}")
        for s, g in gt.items():
            pooled_gt[int(s) + off] = replace(g, names=[f"{oid}/{n}" for n in g.names])
        pooled_names += [f"{oid}/{n}" for n in names[oid]]
        pooled_poses.update({f"{oid}/{v}": pose for v, pose in poses.items()})
    if pooled_gt:
        pooled = evaluate(pooled_stamps, pooled_pred, pooled_gt, pooled_names, None, alphas,
                          view_poses=pooled_poses)
        pooled.pop("per_frame", None)
        for key in ("frames", "latency_ms", "processing_ms", "pose_validity_rate"):
            pooled[key] = base[key]
        with_gt = {int(s) for g in ground_truth.values() if g for s in g}
        pooled["frames"]["with_ground_truth"] = sum(1 for s in dict.fromkeys(int(x) for x in color_stamps)
                                                    if s in with_gt)
        out = pooled
    else:
        out = base
        out.pop("per_frame", None)
    out["objects"] = ids
    out["per_object"] = per_object
    return out
