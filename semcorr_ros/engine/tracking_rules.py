"""The tracking mode's rules: prediction, the loss rule, the re-acquisition rule and the re-detection arbiter.

Pure functions of one frame's result and the track's prediction (:mod:`semcorr_ros.engine.tracking` applies
them; docs/tracking.md describes them).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import geometry, stages
from semcorr_ros.engine.pose import estimate_pose
from semcorr_ros.engine.types import MatchResult

__all__ = ["MAX_SCALE_CHANGE", "DISAGREE", "object_size", "similarity_fill", "predict_keypoints", "track_check",
           "mean_score", "reacquire_check", "arbitrate", "FORGET_LEVEL"]

#: a tracked frame whose keypoints spread over more than this factor more (or less) than predicted is lost
MAX_SCALE_CHANGE = 1.5
#: at a re-detection, a detected keypoint farther than this (object sizes) from the track's disagrees with it
DISAGREE = 0.1
#: frames after the last detection at which a lost track forgets its score level (any detection re-acquires)
FORGET_LEVEL = 30


def object_size(xy: np.ndarray, ok: np.ndarray | None = None) -> float:
    """The object's size in pixels: the larger side of the box of the usable keypoints ``xy [K, 2]`` (NaN when
    fewer than two)."""
    xy = np.asarray(xy, float).reshape(-1, 2)
    use = np.isfinite(xy).all(1) if ok is None else (np.asarray(ok, bool) & np.isfinite(xy).all(1))
    if use.sum() < 2:
        return float("nan")
    p = xy[use]
    return float(max((p.max(0) - p.min(0)).max(), 1.0))


def similarity_fill(src: np.ndarray, dst: np.ndarray, ok: np.ndarray) -> np.ndarray | None:
    """``dst [K, 2]`` with the rows where ``ok`` is false replaced by the 2D similarity (least squares, Umeyama)
    taking the ``ok`` rows of ``src [K, 2]`` onto those of ``dst``; one usable row: a translation; none: None."""
    src, dst = np.asarray(src, float).reshape(-1, 2), np.asarray(dst, float).reshape(-1, 2)
    ok = np.asarray(ok, bool) & np.isfinite(src).all(1) & np.isfinite(dst).all(1)
    if not ok.any():
        return None
    out = dst.copy()
    s, d = src[ok], dst[ok]
    if ok.sum() == 1:
        out[~ok] = src[~ok] + (d[0] - s[0])
        return out
    ms, md = s.mean(0), d.mean(0)
    a, b = s - ms, d - md
    var = float((a ** 2).sum())
    if var < 1e-12:
        out[~ok] = src[~ok] + (md - ms)
        return out
    u, sv, vt = np.linalg.svd(b.T @ a)
    sign = np.diag([1.0, np.sign(np.linalg.det(u @ vt)) or 1.0])
    R = u @ sign @ vt
    scale = float((sv * np.diag(sign)).sum() / var)
    out[~ok] = (src[~ok] - ms) @ R.T * scale + md
    return out


def predict_keypoints(xy: np.ndarray, ok: np.ndarray, velocity: np.ndarray, dt: float) -> np.ndarray:
    """Constant-velocity prediction: ``xy [K, 2] + velocity [2] * dt`` (rows that are not ``ok`` stay NaN)."""
    out = np.asarray(xy, float) + np.asarray(velocity, float).reshape(1, 2) * float(dt)
    out[~np.asarray(ok, bool)] = np.nan
    return out


def track_check(result: MatchResult, cfg: EngineConfig, predicted: np.ndarray | None = None,
                size: float = float("nan"), pose_expected: bool = False) -> str:
    """The loss rule: why ``result`` does not continue a track (``""``: it does).

    Args:
        result: the object's matches in one frame.
        predicted: ``[K, 2]`` predicted pixels (NaN where none), for the jump test; None: no jump test.
        size: the object's size in pixels (the jump's unit).
        pose_expected: whether a pose can be estimated (reference 3D, frame depth and intrinsics).
    """
    k = len(result.score)
    if k == 0:
        return "no keypoints"
    valid = np.asarray(result.valid, bool) & np.isfinite(result.xy).all(1)
    n_valid = int(valid.sum())
    if n_valid < min(cfg.tracking_min_keypoints, k):
        return f"{n_valid} valid keypoints (< {min(cfg.tracking_min_keypoints, k)})"
    score = mean_score(result)
    if score < cfg.tracking_min_score:
        return f"mean score {score:.2f} (< {cfg.tracking_min_score:g})"
    if predicted is not None and np.isfinite(size) and size > 0:
        both = valid & np.isfinite(predicted).all(1)
        if both.any():
            jump = float(np.median(np.linalg.norm(result.xy[both] - predicted[both], axis=1))) / size
            if jump > cfg.tracking_max_jump:
                return f"keypoints moved {jump:.2f} object sizes from their prediction (> {cfg.tracking_max_jump:g})"
        if both.sum() >= 2:
            ratio = object_size(result.xy, both) / object_size(predicted, both)
            if not (1.0 / MAX_SCALE_CHANGE <= ratio <= MAX_SCALE_CHANGE):
                return f"the object's size changed {ratio:.2f}x from its prediction"
    if pose_expected:
        n3d = int(np.sum(np.asarray(result.has_3d, bool) & valid))
        inliers = 0 if result.pose is None else int(result.pose.n_inliers)
        if n3d >= 2 * cfg.pose_min_inliers and inliers < cfg.pose_min_inliers:
            return f"{inliers} pose inliers of {n3d} 3D keypoints (< {cfg.pose_min_inliers}): inconsistent"
    return ""


def mean_score(result: MatchResult) -> float:
    """The mean confidence of a result's keypoints (non-finite scores count as 0; NaN without keypoints)."""
    score = np.asarray(result.score, float)
    if score.size == 0:
        return float("nan")
    return float(np.mean(np.where(np.isfinite(score), score, 0.0)))


def reacquire_check(result: MatchResult, level: float, frames_since_detection: int, cfg: EngineConfig) -> str:
    """The re-acquisition rule: why a detection after a loss does not restart the track (``""``: it does).

    While the object is hidden, the full-frame detection still finds *something*: the best-matching surface of
    the occluder or of the background, usually with lower confidences than the object had while tracked. A
    detection re-acquires only when its mean score reaches ``tracking_reacquire_ratio`` times the track's
    ``level`` (the running mean score of its accepted frames). After :data:`FORGET_LEVEL` frames without a
    detection the level is forgotten (the scene or the lighting may have changed), as it is with a ratio of 0
    or no level yet.
    """
    ratio = cfg.tracking_reacquire_ratio
    if ratio <= 0 or not np.isfinite(level) or frames_since_detection >= FORGET_LEVEL:
        return ""
    score = mean_score(result)
    if not np.isfinite(score) or score < ratio * level:
        return f"mean score {score:.2f} below {ratio:g} x the track's level {level:.2f}"
    return ""


def arbitrate(det: MatchResult, predicted: np.ndarray, track_score: np.ndarray, ref_points: np.ndarray | None,
              f: stages.Frame, cfg: EngineConfig, size: float) -> tuple[MatchResult, np.ndarray]:
    """Keypoint by keypoint, the better-supported of a re-detection ``det`` and the track's prediction.

    Both candidates of every keypoint (the detection's match and the track's predicted pixel, lifted with the
    frame's depth) go into one RANSAC pose from the reference's 3D points (``ref_points [K, 3]``, object order).
    Where the two disagree (more than :data:`DISAGREE` object sizes apart) the keypoint takes the candidate
    closer to that pose; the pose is then estimated again from the chosen points. Without depth, intrinsics,
    reference 3D or a valid joint pose, ``det`` is kept as it is.

    Returns:
        ``(result, taken)``: the arbitrated result and ``[K]`` bool, the keypoints taken from the track.
    """
    k = len(det.score)
    taken = np.zeros(k, bool)
    if f.depth is None or f.K is None or ref_points is None or not np.isfinite(size) or size <= 0:
        return det, taken
    pred_ok = np.isfinite(predicted).all(1)
    if not pred_ok.any():
        return det, taken
    trk_pts, trk_3d = geometry.lift(f.depth, np.where(pred_ok[:, None], predicted, 0.0), f.K, cfg.depth_radius,
                                    distortion=f.distortion)
    trk_3d = trk_3d & pred_ok
    det_ok = np.asarray(det.valid, bool) & np.asarray(det.has_3d, bool) & np.isfinite(det.points3d).all(1)
    ref_ok = np.isfinite(ref_points).all(1)
    src = np.vstack([ref_points, ref_points])
    dst = np.vstack([np.where(det_ok[:, None], det.points3d, np.nan), np.where(trk_3d[:, None], trk_pts, np.nan)])
    mask = np.concatenate([det_ok, trk_3d]) & np.concatenate([ref_ok, ref_ok])
    joint = estimate_pose(src, dst, mask=mask, threshold=cfg.pose_threshold, iterations=cfg.pose_iterations,
                          min_inliers=cfg.pose_min_inliers)
    if not joint.valid:
        return det, taken
    fit = np.where(ref_ok[:, None], ref_points, 0.0) @ np.asarray(joint.R).T + np.asarray(joint.t).reshape(1, 3)
    r_det = np.where(det_ok & ref_ok, np.linalg.norm(np.nan_to_num(det.points3d) - fit, axis=1), np.inf)
    r_trk = np.where(trk_3d & ref_ok, np.linalg.norm(np.nan_to_num(trk_pts) - fit, axis=1), np.inf)
    apart = np.linalg.norm(np.nan_to_num(det.xy, nan=1e9) - np.nan_to_num(predicted, nan=-1e9), axis=1) / size
    taken = trk_3d & (r_trk < r_det) & ~(apart <= DISAGREE)
    if not taken.any():
        return det, taken
    xy, pts = det.xy.copy(), det.points3d.copy()
    score, valid, has3 = det.score.copy(), np.asarray(det.valid, bool).copy(), np.asarray(det.has_3d, bool).copy()
    xy[taken], pts[taken], has3[taken], valid[taken] = predicted[taken], trk_pts[taken], True, True
    score[taken] = np.where(np.isfinite(track_score[taken]), track_score[taken], score[taken])
    pose = estimate_pose(ref_points, pts, mask=has3 & valid & ref_ok, threshold=cfg.pose_threshold,
                         iterations=cfg.pose_iterations, min_inliers=cfg.pose_min_inliers)
    return replace(det, xy=xy, points3d=pts, score=score, valid=valid, has_3d=has3, pose=pose), taken
