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
from semcorr_ros.engine import depth_aware, kbc, stages
from semcorr_ros.engine.filters import OneEuroFilter, RotationFilter
from semcorr_ros.engine.matching import pixels_to_uv
from semcorr_ros.engine.objects import ObjectModel, ObjectResult, match_object, object_order
from semcorr_ros.engine.tracking_output import (PoseAnchor, anchored_pose, filtered, pose_expected,
                                                reset_filters, reset_pose_filters)
from semcorr_ros.engine.tracking_rules import (arbitrate, mean_score, object_size, predict_keypoints,
                                               reacquire_check, similarity_fill, track_check)
from semcorr_ros.engine.types import MatchResult
from semcorr_ros.engine.views import Reference, View

__all__ = ["TRACK_STATES", "Track", "Tracker", "track_check", "tracked_pass", "predict_keypoints",
           "similarity_fill", "object_size", "arbitrate", "reacquire_check", "mean_score"]

TRACK_STATES = ("detecting", "tracked", "lost", "reacquired")
#: smallest live crop side of a tracked frame, pixels
MIN_CROP_SIDE = 16.0

#: ``tracking_view(ref) -> (reference crop box, its encoded view)`` (the engine's, cached per reference)
TrackingView = Callable[[Reference], tuple[kbc.Box, View]]



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
    #: running mean of the accepted detections' mean scores (the re-acquisition rule's reference)
    level: float = float("nan")
    n_level: int = 0
    score: np.ndarray | None = None             # [K] last confidences (object order)
    #: the pose estimate in a recent frame and that frame's 3D points: tracked poses are it moved rigidly
    anchor: PoseAnchor | None = None
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
        ok = np.isfinite(stamp) and not track_check(det.result, cfg, pose_expected=pose_expected(
            obj.views[det.view_index], base))
        if ok and tr is not None:
            # a detection after a loss (or a periodic one) must be as confident as the object was
            weak = reacquire_check(det.result, tr.level, tr.frames_since_detection, cfg)
            if weak:
                ok, reason = False, reason or weak
        if ok:
            if tr is None:
                status = "detecting"
            elif tr.lost or reason:
                status = "reacquired"
            else:
                status = "detecting"
            if tr is None or tr.lost or reason:
                tr = self._new_track(obj, det, stamp, cfg, tracking_view, tr)
            elif tr.view_index != det.view_index:
                tr.view_index = det.view_index
                reset_pose_filters(tr)
            tr.frames_since_detection = -1  # +1 in _finish
            tr.lost = False
            _add_level(tr, mean_score(det.result))
            return self._finish(obj, tr, det, base, stamp, cfg, status, timing_start, reason)
        if periodic and tr is not None:
            # the periodic detection failed: the track may still hold; the tracked pass decides
            out = self._tracked(obj, tr, base, stamp, cfg, context, tracking_view)
            if isinstance(out, ObjectResult):
                return self._finish(obj, tr, out, base, stamp, cfg, "tracked", timing_start)
            reason = out
        if tr is not None:
            tr.lost = True
            reset_filters(tr)
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
        res = object_order(obj, v, f.result(ref))
        reason = track_check(res, cfg, pred_obj, tr.size, pose_expected(ref, base))
        if reason:
            return reason
        scores = np.full(len(obj.views), np.nan)
        scores[v] = float(np.sum(f.m.score))
        src = np.where(np.isin(np.arange(len(obj.names)), idx), v, -1)
        return ObjectResult(obj.object_id, ref.reference_id, v, scores, res, src)

    def _new_track(self, obj: ObjectModel, det: ObjectResult, stamp: float, cfg: EngineConfig,
                   tracking_view: TrackingView, old: Track | None = None) -> Track:
        k = len(obj.names)
        tr = Track(obj.object_id, det.view_index, stamp, np.full((k, 2), np.nan), np.zeros(k, bool))
        if old is not None:  # the object is the same: its score level carries over
            tr.level, tr.n_level = old.level, old.n_level
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
            pose = anchored_pose(tr, res, status, cfg)
        if tr.f2d is not None:
            res = filtered(res, tr, valid, stamp, size, ref, pose)
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


#: the score level is the mean of the last this many detections (a running mean, older ones fading)
LEVEL_WINDOW = 10


def _add_level(tr: Track, score: float) -> None:
    """Fold an accepted detection's mean score into the track's level."""
    if not np.isfinite(score):
        return
    tr.n_level = min(tr.n_level + 1, LEVEL_WINDOW)
    tr.level = score if not np.isfinite(tr.level) else tr.level + (score - tr.level) / tr.n_level
