"""The tracking mode's output: temporal filtering, the anchored pose and the object-order result of a view.

Used by :class:`semcorr_ros.engine.tracking.Tracker` once per object and frame.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import stages
from semcorr_ros.engine.filters import nearest_rotation, rotation_log
from semcorr_ros.engine.pose import estimate_pose
from semcorr_ros.engine.types import MatchResult, PoseResult
from semcorr_ros.engine.views import Reference

if TYPE_CHECKING:
    from semcorr_ros.engine.tracking import Track

__all__ = ["pose_expected", "reset_filters", "reset_pose_filters", "PoseAnchor", "anchored_pose", "filtered", "size_3d"]


def pose_expected(ref: Reference, f: stages.Frame) -> bool:
    """Whether a pose can be estimated: reference 3D, frame depth and intrinsics."""
    return ref.points3d is not None and f.depth is not None and f.K is not None


def reset_filters(tr: Track) -> None:
    for flt in (tr.f2d, tr.f3d, tr.ft, tr.fR):
        if flt is not None:
            flt.reset()


def reset_pose_filters(tr: Track) -> None:
    """Forget the pose's filter state and estimate (another view: another reference frame)."""
    tr.anchor = None
    for flt in (tr.ft, tr.fR):
        if flt is not None:
            flt.reset()


#: a frame's own pose farther than this from the track's estimate (degrees) is not averaged in ...
POSE_GATE_DEG = 45.0
#: ... and after this many such frames in a row the estimate restarts from the newest one
POSE_MISSES = 3


@dataclass
class PoseAnchor:
    """The anchored pose's state: a frame's live 3D points (object order) and the object's pose estimate in
    that frame's camera (the weighted mean of the frames' own poses mapped into it)."""

    points: np.ndarray                          # [K, 3] metres, NaN where none
    ok: np.ndarray                              # [K] bool
    pose: PoseResult
    weight: float = 1.0                         # frames averaged (capped at tracking_pose_window)
    misses: int = 0


def _motion(a: PoseAnchor, res: MatchResult, has3: np.ndarray, cfg: EngineConfig) -> PoseResult:
    """The rigid motion of the live 3D points from the anchor's frame to this one."""
    return estimate_pose(a.points, res.points3d, mask=a.ok & has3, threshold=0.5 * cfg.pose_threshold,
                         iterations=cfg.pose_iterations, min_inliers=cfg.pose_min_inliers)


def _compose(m: PoseResult, p: PoseResult) -> tuple[np.ndarray, np.ndarray]:
    """``m o p`` (rotation, translation)."""
    mR = np.asarray(m.R)
    return mR @ np.asarray(p.R), mR @ np.asarray(p.t).reshape(3) + np.asarray(m.t).reshape(3)


def _average(a: PoseAnchor, m: PoseResult, own: PoseResult, window: int) -> None:
    """Fold this frame's own pose, mapped into the anchor's frame by the inverse motion, into the estimate."""
    mR = np.asarray(m.R)
    R = mR.T @ np.asarray(own.R)
    t = mR.T @ (np.asarray(own.t).reshape(3) - np.asarray(m.t).reshape(3))
    angle = np.degrees(np.linalg.norm(rotation_log(np.asarray(a.pose.R).T @ R)))
    if angle > POSE_GATE_DEG:
        a.misses += 1
        if a.misses >= POSE_MISSES:
            a.pose, a.weight, a.misses = replace(a.pose, R=R, t=t), 1.0, 0
        return
    w = a.weight
    mean_R = nearest_rotation(w * np.asarray(a.pose.R) + R)  # chordal mean: the nearest rotation to the sum
    mean_t = (w * np.asarray(a.pose.t).reshape(3) + t) / (w + 1.0)
    a.pose, a.weight, a.misses = replace(a.pose, R=mean_R, t=mean_t), min(w + 1.0, float(window)), 0


def anchored_pose(tr: Track, res: MatchResult, status: str, cfg: EngineConfig) -> PoseResult | None:
    """The pose to output for ``res``: the track's pose estimate moved by the rigid motion of the live 3D points
    since the anchor's frame.

    The motion between two frames of one track is fitted on the same live keypoints (one instance, whatever the
    keypoints' semantic errors), so it is far tighter than a fit to the reference's 3D points, whose instance
    differs. Every frame's own pose (from the reference's points) is mapped back into the anchor's frame and
    averaged into the estimate (the last ``tracking_pose_window`` frames, about; one far from the estimate is
    left out), so one detection's error is not carried for the whole track. A detection re-anchors the track on
    its own frame and carries the estimate over. The frame's own pose is kept when there is no anchor or the
    motion cannot be fitted (RANSAC at half ``pose_threshold``, at least ``pose_min_inliers`` inliers)."""
    has3 = np.asarray(res.has_3d, bool) & np.asarray(res.valid, bool) & np.isfinite(res.points3d).all(1)
    own = res.pose if res.pose is not None and res.pose.valid else None
    a = tr.anchor
    detection = status != "tracked"
    window = cfg.tracking_pose_window
    motion = None
    if a is not None and len(a.points) == len(has3) and (window > 1 or not detection):
        motion = _motion(a, res, has3, cfg)
    if motion is None or not motion.valid:
        if detection:
            tr.anchor = PoseAnchor(res.points3d.copy(), has3.copy(), own) if own is not None else None
        return res.pose
    if own is not None and window > 1:
        _average(a, motion, own, window)
    R, t = _compose(motion, a.pose)
    out = replace(a.pose, R=R, t=t, inliers=motion.inliers, n_inliers=motion.n_inliers)
    if detection:
        tr.anchor = PoseAnchor(res.points3d.copy(), has3.copy(), out, a.weight)
    return out


def filtered(res: MatchResult, tr: Track, valid: np.ndarray, stamp: float, size: float,
              ref: Reference, pose: PoseResult | None = None) -> MatchResult:
    """``res`` with its valid keypoints, 3D points and pose (``pose``, default ``res.pose``) filtered; the
    measurements kept as ``raw_*``."""
    xy = tr.f2d(res.xy, stamp, mask=valid, scale=size)
    xy[~valid] = res.xy[~valid]
    has3 = np.asarray(res.has_3d, bool) & valid & np.isfinite(res.points3d).all(1)
    size3 = size_3d(ref)
    pts = tr.f3d(res.points3d, stamp, mask=has3, scale=size3)
    pts[~has3] = res.points3d[~has3]
    pose = res.pose if pose is None else pose
    if pose is not None and pose.valid:
        R = tr.fR(pose.R, stamp)
        t = tr.ft(np.asarray(pose.t, float).reshape(1, 3), stamp, scale=size3)[0]
        pose = replace(pose, R=R, t=t)
    return replace(res, xy=xy, points3d=pts, pose=pose, raw_xy=res.xy, raw_points3d=res.points3d, raw_pose=res.pose)


def size_3d(ref: Reference) -> float:
    """The object's 3D size, metres: the largest distance between two reference keypoints (0.1 when unknown)."""
    if ref.points3d is None:
        return 0.1
    p = ref.points3d[np.isfinite(ref.points3d).all(1)]
    if len(p) < 2:
        return 0.1
    d = float(np.max(np.linalg.norm(p[:, None] - p[None], axis=-1)))
    return d if d > 1e-3 else 0.1
