"""Tracking mode ("streams, not snapshots"): per-object state from frame to frame. ROS-free.

Per object the :class:`Tracker` keeps a :class:`Track`: the chosen view, the last (filtered) keypoints, their
velocity, the object's depth model and the temporal filters. Per frame and object:

1. **Tracked frame** (a live track): predict the keypoints (last keypoints + constant velocity), frame a crop
   around them at the reference crop's scale (:func:`semcorr_ros.engine.kbc.framed_box`), encode that crop
   only (one encode), match with a prior at the predicted keypoints and the carried-over depth model, lift,
   pose (:func:`tracked_pass`).
2. **Loss rule** (:func:`track_check`): the track is lost when fewer than ``tracking_min_keypoints`` keypoints
   are valid, or the mean confidence is below ``tracking_min_score``, or the valid keypoints land farther than
   ``tracking_max_jump`` object sizes (median) from their prediction or spread over a box more than 1.5 times
   larger or smaller than predicted, or -- with a pose to estimate -- enough
   keypoints have 3D points but fewer than ``pose_min_inliers`` of them fit one rigid pose (inconsistent).
3. **Detection** on the full frame (the engine's normal pipeline, :func:`semcorr_ros.engine.objects.match_object`)
   when there is no track (first frame, after a reset), in the same frame when the tracked pass is lost, every
   frame while lost, and every ``tracking_redetect_every`` frames. A detection that passes the check (without
   the prediction test) starts or continues the track.
4. **Filter** (``tracking_filter: one-euro``): the 2D keypoints, the 3D points and the pose go through One-Euro
   filters (:mod:`semcorr_ros.engine.filters`) while the track lives; the raw measurements stay in the result
   (``raw_xy``, ``raw_points3d``, ``raw_pose``).
5. **Reset** of every track on a stamp going backwards, a gap longer than ``tracking_max_gap`` seconds, a
   non-finite stamp, or a change of the engine's objects or views.

States (``ObjectResult.track_status``): ``detecting`` (a full-frame detection with no track yet, or a periodic
re-detection), ``tracked``, ``lost`` (neither the track nor a detection found the object this frame),
``reacquired`` (a detection found it again after a loss; the track restarts).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import depth_aware, geometry, kbc, stages
from semcorr_ros.engine.filters import OneEuroFilter, RotationFilter
from semcorr_ros.engine.matching import pixels_to_uv
from semcorr_ros.engine.objects import ObjectModel, ObjectResult, match_object
from semcorr_ros.engine.pose import estimate_pose
from semcorr_ros.engine.types import MatchResult, PoseResult
from semcorr_ros.engine.views import Reference, View

__all__ = ["TRACK_STATES", "Track", "Tracker", "track_check", "tracked_pass", "predict_keypoints",
           "similarity_fill", "object_size", "arbitrate"]

TRACK_STATES = ("detecting", "tracked", "lost", "reacquired")
#: a tracked frame whose keypoints spread over more than this factor more (or less) than predicted is lost
MAX_SCALE_CHANGE = 1.5
#: smallest live crop side of a tracked frame, pixels
MIN_CROP_SIDE = 16.0
#: at a re-detection, a detected keypoint farther than this (object sizes) from the track's disagrees with it
DISAGREE = 0.1

#: ``tracking_view(ref) -> (reference crop box, its encoded view)`` (the engine's, cached per reference)
TrackingView = Callable[[Reference], tuple[kbc.Box, View]]


# ---------------------------------------------------------------------------------------------------- helpers
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
    mean_score = float(np.nanmean(np.where(np.isfinite(result.score), result.score, 0.0)))
    if mean_score < cfg.tracking_min_score:
        return f"mean score {mean_score:.2f} (< {cfg.tracking_min_score:g})"
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


def tracked_pass(ctx: stages.Context, f: stages.Frame, view: View, src_box: kbc.Box, predicted: np.ndarray,
                 weights: np.ndarray, depth_model: depth_aware.DepthModel | None) -> kbc.Box | None:
    """One tracked frame of one view: crop around the predicted keypoints, one encode, match, lift, pose.

    Args:
        ctx: the view's stage context (``ctx.ref`` the view, ``ctx.encode`` encodes the crop).
        f: the frame (its ``m``, ``valid``, ``points``, ``pose`` are set here).
        view: the reference crop's encoded view; ``src_box`` its box in the reference image.
        predicted: ``[K, 2]`` predicted live pixels of every keypoint of the view (the prior's centres).
        weights: ``[K]`` > 0 for the keypoints that frame the crop (the ones predicted from a measurement).
        depth_model: the object's depth model carried over from the previous frame (weights the live cells).

    Returns:
        The live crop box, or None when no crop can be framed (``f`` is then left untouched).
    """
    cfg = ctx.config
    box = kbc.framed_box(ctx.ref.keypoints, src_box, predicted, f.size, weights=weights)
    if box is None or box[2] - box[0] < MIN_CROP_SIDE:
        return None
    cimg = kbc.crop(f.image, box)
    csize = (cimg.shape[1], cimg.shape[0])
    with f.timed("features"):
        cfmap = ctx.encode(cimg, view.means)
    prior = None
    if cfg.consensus_weight > 0 and np.isfinite(predicted).all():
        prior = pixels_to_uv(_tensor(kbc.to_crop(predicted, box), ctx), *csize)
    cdepth = None if f.depth is None else kbc.crop(f.depth, box)
    with f.timed("match"):
        cell_w = None
        if cdepth is not None and cfg.depth_aware and depth_model is not None:
            cell_w = depth_aware.cell_weights(cdepth, depth_model, cfmap.shape[-1], cfg, ctx.device)
        m = ctx.matcher(view, cfmap, csize, cell_w, prior)
        if cdepth is not None and cfg.depth_aware and depth_model is None:
            m, depth_model = stages.rematch(ctx, view, cfmap, csize, cdepth, m, prior)
    f.m = replace(m, xy=kbc.from_crop(m.xy, box))
    f.depth_model, f.kbc_used = (depth_model if cfg.depth_aware else None), True
    f.prior, f.prior_mode = (prior, "track") if prior is not None else (None, "none")
    stages.lift(ctx, f)
    stages.pose(ctx, f)
    return box


def _tensor(xy: np.ndarray, ctx: stages.Context) -> torch.Tensor:
    return torch.as_tensor(xy, dtype=torch.float32, device=ctx.device)


# ---------------------------------------------------------------------------------------------------- state
@dataclass
class Track:
    """One object's state between frames (keypoints in the object's order, ``K`` = its keypoint count)."""

    object_id: str
    view_index: int
    stamp: float                                # seconds, of the last frame
    xy: np.ndarray                              # [K, 2] last measured pixels (NaN where none)
    ok: np.ndarray                              # [K] bool: xy measured and valid in the last frame
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # [2] pixels per second
    size: float = float("nan")                  # object size, pixels
    depth_model: depth_aware.DepthModel | None = None
    frames_since_detection: int = 0
    lost: bool = False                          # lost: detect on the full frame every frame until found
    score: np.ndarray | None = None             # [K] last confidences (object order)
    #: the last detection's pose and 3D points (object order): tracked poses are this pose moved rigidly
    anchor: tuple[PoseResult, np.ndarray, np.ndarray] | None = None
    f2d: OneEuroFilter | None = None
    f3d: OneEuroFilter | None = None
    ft: OneEuroFilter | None = None
    fR: RotationFilter | None = None


class Tracker:
    """The tracking mode's state for all objects of an engine (:meth:`CorrespondenceEngine.track` drives it)."""

    def __init__(self) -> None:
        self.tracks: dict[str, Track] = {}
        self.stamp: float | None = None
        self._objects: list[tuple[ObjectModel, tuple[Reference, ...]]] = []
        #: why the last reset happened (diagnostics)
        self.last_reset = ""

    def reset(self, why: str = "reset") -> None:
        """Forget every track (the next frame is a detection of every object)."""
        self.tracks.clear()
        self.stamp = None
        self.last_reset = why

    def _check_objects(self, objects: Sequence[ObjectModel]) -> None:
        now = [(o, tuple(o.views)) for o in objects]
        same = len(now) == len(self._objects) and all(
            a is b and len(va) == len(vb) and all(x is y for x, y in zip(va, vb))
            for (a, va), (b, vb) in zip(now, self._objects))
        if not same:
            if self._objects:
                self.reset("the objects or their views changed")
            self._objects = now

    def _check_stamp(self, stamp: float, cfg: EngineConfig) -> None:
        if not np.isfinite(stamp):
            self.reset("non-finite stamp")
        elif self.stamp is not None:
            dt = stamp - self.stamp
            if dt < 0:
                self.reset(f"stamp went backwards by {-dt:.3f} s")
            elif dt > cfg.tracking_max_gap:
                self.reset(f"gap of {dt:.3f} s between frames (> {cfg.tracking_max_gap:g} s)")
        self.stamp = stamp if np.isfinite(stamp) else None

    def step(self, objects: Sequence[ObjectModel], base: stages.Frame, stamp: float, cfg: EngineConfig,
             context: Callable[[Reference], stages.Context], tracking_view: TrackingView,
             object_boxes: dict[str, Sequence[float]] | None = None) -> list[ObjectResult]:
        """Process one validated frame ``base`` for every object.

        Args:
            stamp: the frame's time, seconds (monotonic within a stream).
            context: stage context of a view for this frame (its full-frame encode shared by all objects).
            tracking_view: the reference crop of a view (box and encoded view).
            object_boxes: optional per-object boxes for the detections (as :meth:`match_objects`).
        """
        self._check_objects(objects)
        self._check_stamp(stamp, cfg)
        boxes = object_boxes or {}
        return [self._object(obj, base, stamp, cfg, context, tracking_view, boxes.get(obj.object_id))
                for obj in objects]

    # ------------------------------------------------------------------------------------------------ per object
    def _object(self, obj: ObjectModel, base: stages.Frame, stamp: float, cfg: EngineConfig,
                context: Callable[[Reference], stages.Context], tracking_view: TrackingView,
                object_box: Sequence[float] | None) -> ObjectResult:
        tr = self.tracks.get(obj.object_id)
        if tr is not None and (tr.view_index >= len(obj.views) or len(tr.xy) != len(obj.names)):
            tr = None
        timing_start = time.perf_counter()
        reason = ""
        periodic = tr is not None and not tr.lost and cfg.tracking_redetect_every > 0 \
            and tr.frames_since_detection + 1 >= cfg.tracking_redetect_every
        if tr is not None and not tr.lost and not periodic:
            out = self._tracked(obj, tr, base, stamp, cfg, context, tracking_view)
            if isinstance(out, ObjectResult):
                return self._finish(obj, tr, out, base, stamp, cfg, "tracked", timing_start)
            reason = out
        det = match_object(obj, base, context, object_box)
        if periodic and tr is not None and cfg.tracking_arbitrate and det.view_index == tr.view_index:
            det.result, _ = self._arbitrate(obj, tr, det, base, stamp, cfg)
        ok = np.isfinite(stamp) and not track_check(det.result, cfg, pose_expected=_pose_expected(
            obj.views[det.view_index], base))
        if ok:
            if tr is None:
                status = "detecting"
            elif tr.lost or reason:
                status = "reacquired"
            else:
                status = "detecting"
            if tr is None or tr.lost or reason:
                tr = self._new_track(obj, det, stamp, cfg, tracking_view)
            elif tr.view_index != det.view_index:
                tr.view_index = det.view_index
                _reset_pose_filters(tr)
            tr.frames_since_detection = -1  # +1 in _finish
            tr.lost = False
            return self._finish(obj, tr, det, base, stamp, cfg, status, timing_start, reason)
        if periodic and tr is not None:
            # the periodic detection failed: the track may still hold; the tracked pass decides
            out = self._tracked(obj, tr, base, stamp, cfg, context, tracking_view)
            if isinstance(out, ObjectResult):
                return self._finish(obj, tr, out, base, stamp, cfg, "tracked", timing_start)
            reason = out
        if tr is not None:
            tr.lost = True
            _reset_filters(tr)
            tr.frames_since_detection += 1
            tr.stamp = stamp
            det.track_status, det.frames_since_detection = "lost", tr.frames_since_detection
        else:
            det.track_status, det.frames_since_detection = "detecting", 0
        det.track_reason = reason or track_check(det.result, cfg)
        return det

    def _arbitrate(self, obj: ObjectModel, tr: Track, det: ObjectResult, base: stages.Frame, stamp: float,
                   cfg: EngineConfig) -> tuple[MatchResult, np.ndarray]:
        v = tr.view_index
        ref, idx = obj.views[v], obj.index[v]
        dt = max(stamp - tr.stamp, 0.0) if np.isfinite(tr.stamp) else 0.0
        pred = predict_keypoints(tr.xy, tr.ok, tr.velocity if cfg.tracking_velocity else np.zeros(2), dt)
        ref_pts = None
        if ref.points3d is not None:
            ref_pts = np.full((len(obj.names), 3), np.nan)
            ref_pts[idx] = ref.points3d
        score = tr.score if tr.score is not None else np.full(len(obj.names), np.nan)
        return arbitrate(det.result, pred, score, ref_pts, base, cfg, tr.size)

    def _tracked(self, obj: ObjectModel, tr: Track, base: stages.Frame, stamp: float, cfg: EngineConfig,
                 context: Callable[[Reference], stages.Context], tracking_view: TrackingView) -> ObjectResult | str:
        """The tracked pass of the track's view: its result (object order), or why the track is lost."""
        v = tr.view_index
        ref, idx = obj.views[v], obj.index[v]
        dt = max(stamp - tr.stamp, 0.0) if np.isfinite(tr.stamp) else 0.0
        vel = tr.velocity if cfg.tracking_velocity else np.zeros(2)
        pred_obj = predict_keypoints(tr.xy, tr.ok, vel, dt)
        pred = pred_obj[idx]
        measured = np.isfinite(pred).all(1)
        full = similarity_fill(ref.keypoints, pred, measured)
        if full is None or measured.sum() < 2:
            return "too few keypoints to predict the object"
        ctx = context(ref)
        src_box, view = tracking_view(ref)
        f = replace(base, timings={}, t0=time.perf_counter())
        box = tracked_pass(ctx, f, view, src_box, full, measured.astype(float), tr.depth_model)
        if box is None:
            return "no crop could be framed around the prediction"
        res = _object_order(obj, v, f.result(ref))
        reason = track_check(res, cfg, pred_obj, tr.size, _pose_expected(ref, base))
        if reason:
            return reason
        scores = np.full(len(obj.views), np.nan)
        scores[v] = float(np.sum(f.m.score))
        src = np.where(np.isin(np.arange(len(obj.names)), idx), v, -1)
        return ObjectResult(obj.object_id, ref.reference_id, v, scores, res, src)

    def _new_track(self, obj: ObjectModel, det: ObjectResult, stamp: float, cfg: EngineConfig,
                   tracking_view: TrackingView) -> Track:
        k = len(obj.names)
        tr = Track(obj.object_id, det.view_index, stamp, np.full((k, 2), np.nan), np.zeros(k, bool))
        if cfg.tracking_filter == "one-euro":
            mc, beta = cfg.tracking_min_cutoff, cfg.tracking_beta
            # a keypoint that jumps by more than a third of the object is re-measured, not dragged
            tr.f2d = OneEuroFilter(mc, beta, max_gap=cfg.tracking_max_gap, reset_jump=0.33)
            tr.f3d = OneEuroFilter(mc, beta, max_gap=cfg.tracking_max_gap, reset_jump=0.33)
            tr.ft = OneEuroFilter(mc, beta, max_gap=cfg.tracking_max_gap, reset_jump=0.5)
            tr.fR = RotationFilter(mc, beta, max_gap=cfg.tracking_max_gap)
        tracking_view(obj.views[det.view_index])  # encode the reference crop now, not on the first tracked frame
        self.tracks[obj.object_id] = tr
        return tr

    def _finish(self, obj: ObjectModel, tr: Track, out: ObjectResult, base: stages.Frame, stamp: float,
                cfg: EngineConfig, status: str, t0: float, reason: str = "") -> ObjectResult:
        """Filter the result, update the track, set the state fields."""
        res = out.result
        valid = np.asarray(res.valid, bool) & np.isfinite(res.xy).all(1)
        size = object_size(res.xy, valid)
        size = size if np.isfinite(size) else tr.size
        ref = obj.views[out.view_index]
        pose = res.pose
        if cfg.tracking_anchor_pose:
            pose = _anchored_pose(tr, res, status, cfg)
        if tr.f2d is not None:
            res = _filtered(res, tr, valid, stamp, size, ref, pose)
        elif pose is not res.pose:
            res = replace(res, pose=pose, raw_pose=res.pose)
        # the track predicts from the measurements (the filter only smooths the output: no lag fed back)
        raw = res.raw_xy if res.raw_xy is not None else res.xy
        dt = stamp - tr.stamp
        both = valid & tr.ok
        if both.any() and np.isfinite(dt) and dt > 0:
            v_now = np.median(raw[both] - tr.xy[both], axis=0) / dt
            tr.velocity = v_now if not np.any(tr.velocity) else 0.5 * tr.velocity + 0.5 * v_now
        elif not both.any():
            tr.velocity = np.zeros(2)
        tr.xy = np.where(valid[:, None], raw, np.nan)
        tr.ok, tr.size, tr.stamp = valid, size, stamp
        tr.score = np.asarray(res.score, float).copy()
        tr.depth_model = None
        if cfg.depth_aware and base.depth is not None and valid.any():
            tr.depth_model = depth_aware.model_at(base.depth, raw[valid], res.score[valid], ref.depth_extent, cfg)
        tr.frames_since_detection += 1
        res.timings["tracking_total"] = time.perf_counter() - t0
        out.result = res
        out.track_status, out.frames_since_detection, out.track_reason = status, tr.frames_since_detection, reason
        return out


# ---------------------------------------------------------------------------------------------------- parts
def _pose_expected(ref: Reference, f: stages.Frame) -> bool:
    return ref.points3d is not None and f.depth is not None and f.K is not None


def _reset_filters(tr: Track) -> None:
    for flt in (tr.f2d, tr.f3d, tr.ft, tr.fR):
        if flt is not None:
            flt.reset()


def _reset_pose_filters(tr: Track) -> None:
    for flt in (tr.ft, tr.fR):
        if flt is not None:
            flt.reset()


def _anchored_pose(tr: Track, res: MatchResult, status: str, cfg: EngineConfig) -> PoseResult | None:
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


def _filtered(res: MatchResult, tr: Track, valid: np.ndarray, stamp: float, size: float,
              ref: Reference, pose: PoseResult | None = None) -> MatchResult:
    """``res`` with its valid keypoints, 3D points and pose (``pose``, default ``res.pose``) filtered; the
    measurements kept as ``raw_*``."""
    xy = tr.f2d(res.xy, stamp, mask=valid, scale=size)
    xy[~valid] = res.xy[~valid]
    has3 = np.asarray(res.has_3d, bool) & valid & np.isfinite(res.points3d).all(1)
    size3 = _size_3d(ref)
    pts = tr.f3d(res.points3d, stamp, mask=has3, scale=size3)
    pts[~has3] = res.points3d[~has3]
    pose = res.pose if pose is None else pose
    if pose is not None and pose.valid:
        R = tr.fR(pose.R, stamp)
        t = tr.ft(np.asarray(pose.t, float).reshape(1, 3), stamp, scale=size3)[0]
        pose = replace(pose, R=R, t=t)
    return replace(res, xy=xy, points3d=pts, pose=pose, raw_xy=res.xy, raw_points3d=res.points3d, raw_pose=res.pose)


def _size_3d(ref: Reference) -> float:
    """The object's 3D size, metres: the largest distance between two reference keypoints (0.1 when unknown)."""
    if ref.points3d is None:
        return 0.1
    p = ref.points3d[np.isfinite(ref.points3d).all(1)]
    if len(p) < 2:
        return 0.1
    d = float(np.max(np.linalg.norm(p[:, None] - p[None], axis=-1)))
    return d if d > 1e-3 else 0.1


def _object_order(obj: ObjectModel, v: int, r: MatchResult) -> MatchResult:
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
