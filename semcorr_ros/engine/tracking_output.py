"""The tracking mode's output: temporal filtering, the anchored pose and the object-order result of a view.

Used by :class:`semcorr_ros.engine.tracking.Tracker` once per object and frame.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import stages
from semcorr_ros.engine.objects import ObjectModel
from semcorr_ros.engine.pose import estimate_pose
from semcorr_ros.engine.types import MatchResult, PoseResult
from semcorr_ros.engine.views import Reference

if TYPE_CHECKING:
    from semcorr_ros.engine.tracking import Track

__all__ = ["pose_expected", "reset_filters", "reset_pose_filters", "anchored_pose", "filtered", "size_3d",
           "object_order"]


def pose_expected(ref: Reference, f: stages.Frame) -> bool:
    """Whether a pose can be estimated: reference 3D, frame depth and intrinsics."""
    return ref.points3d is not None and f.depth is not None and f.K is not None


def reset_filters(tr: Track) -> None:
    for flt in (tr.f2d, tr.f3d, tr.ft, tr.fR):
        if flt is not None:
            flt.reset()


def reset_pose_filters(tr: Track) -> None:
    for flt in (tr.ft, tr.fR):
        if flt is not None:
            flt.reset()


def anchored_pose(tr: Track, res: MatchResult, status: str, cfg: EngineConfig) -> PoseResult | None:
    """The pose to output for ``res``: on a detection its own (and it becomes the track's anchor); on a tracked
    frame the anchor's pose moved by the rigid motion of the live 3D points since the anchor's frame.

    The motion between two frames of one track is fitted on the same live keypoints (one instance, whatever the
    keypoints' semantic errors), so it is far tighter than a fit to the reference's 3D points, whose instance
    differs. The frame's own pose is kept when there is no anchor or the motion cannot be fitted (RANSAC at
    half ``pose_threshold``, at least ``pose_min_inliers`` inliers)."""
    has3 = np.asarray(res.has_3d, bool) & np.asarray(res.valid, bool) & np.isfinite(res.points3d).all(1)
    if status != "tracked":
        ok = res.pose is not None and res.pose.valid
        tr.anchor = (res.pose, res.points3d.copy(), has3.copy()) if ok else None
        return res.pose
    if tr.anchor is None or len(tr.anchor[1]) != len(has3):
        return res.pose
    a_pose, a_pts, a_ok = tr.anchor
    motion = estimate_pose(a_pts, res.points3d, mask=a_ok & has3, threshold=0.5 * cfg.pose_threshold,
                           iterations=cfg.pose_iterations, min_inliers=cfg.pose_min_inliers)
    if not motion.valid:
        return res.pose
    R = np.asarray(motion.R) @ np.asarray(a_pose.R)
    t = np.asarray(motion.R) @ np.asarray(a_pose.t).reshape(3) + np.asarray(motion.t).reshape(3)
    return replace(a_pose, R=R, t=t, inliers=motion.inliers, n_inliers=motion.n_inliers)


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


def object_order(obj: ObjectModel, v: int, r: MatchResult) -> MatchResult:
    """A view's result in the object's keypoint order (keypoints the view lacks: NaN, invalid)."""
    k, idx = len(obj.names), obj.index[v]
    if len(idx) == k and np.array_equal(idx, np.arange(k)):
        return r
    xy, ref_xy, pts = np.full((k, 2), np.nan), np.full((k, 2), np.nan), np.full((k, 3), np.nan)
    score, valid, has3 = np.zeros(k), np.zeros(k, bool), np.zeros(k, bool)
    xy[idx], ref_xy[idx], pts[idx] = r.xy, r.ref_xy, r.points3d
    score[idx], valid[idx], has3[idx] = r.score, r.valid, r.has_3d
    feats = None
    if r.score_features is not None:
        feats = np.zeros((k, r.score_features.shape[1]))
        feats[idx] = r.score_features
    pose = r.pose
    if pose is not None:
        inl = np.zeros(k, bool)
        inl[idx] = pose.inliers
        pose = replace(pose, inliers=inl)
    return replace(r, names=list(obj.names), xy=xy, ref_xy=ref_xy, score=score, valid=valid, points3d=pts,
                   has_3d=has3, score_features=feats, pose=pose)
