"""Several objects, each seen from several views, matched into one live frame.

The live frame's backbones run once per frame (the expensive part); every view of every object is matched into
the shared maps (sparse K x HW work per view). Per object:

1. every view runs the first stages (``encode`` -- only the fusion, on the shared maps --, ``prior``, ``match``);
2. the view that explains the frame best is chosen: the largest *expected number of correct matches*, the sum of
   the calibrated confidences of its keypoints that land inside the image (the confidence already includes the
   agreement with the rest of the object through the consensus prior, so a view matched onto the wrong side of
   a near-symmetric object, whose matches do not fit one rigid object, scores low);
3. the chosen view runs the remaining stages (depth-aware re-match, KBC crop, lift, pose);
4. keypoints of the object that the chosen view does not show are taken from the other view that matched them
   with the highest confidence (a valid match there), marked by ``source_view``.

An object with one view runs exactly :data:`stages.PIPELINE` (the result equals
:meth:`CorrespondenceEngine.match`'s).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from semcorr_ros.engine import stages
from semcorr_ros.engine.types import MatchResult
from semcorr_ros.engine.views import Reference

__all__ = ["ObjectModel", "ObjectResult", "match_object", "object_order", "SELECT_STAGES", "FINISH_STAGES"]

#: stages every view of a multi-view object runs before the choice of the view
SELECT_STAGES: tuple[stages.Stage, ...] = (stages.encode, stages.prior, stages.match)
#: stages the chosen view runs after it
FINISH_STAGES: tuple[stages.Stage, ...] = (stages.depth_rematch, stages.crop, stages.lift, stages.pose)
assert SELECT_STAGES + FINISH_STAGES == stages.PIPELINE


@dataclass
class ObjectModel:
    """An object as the engine keeps it: its keypoint names (the union of its views') and its encoded views;
    ``index[v]`` maps view ``v``'s keypoints to positions in ``names``."""

    object_id: str
    names: list[str]
    views: list[Reference]
    index: list[np.ndarray] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.index:
            pos = {n: i for i, n in enumerate(self.names)}
            self.index = [np.array([pos[n] for n in v.names], dtype=np.int64) for v in self.views]


@dataclass
class ObjectResult:
    """One object in one live frame.

    Attributes:
        object_id: the object's id.
        view_id: ``reference_id`` of the chosen view; ``view_index`` its position in the object's views.
        view_scores: ``[V]`` each view's expected number of correct matches (the choice's criterion).
        result: matches of every keypoint of the object (``names`` = the object's), ``ref_xy`` the keypoint in
            the view it came from (NaN when no view matched it); the pose maps the chosen view's camera frame to
            the live one.
        source_view: ``[K]`` the view each keypoint's match comes from (-1: none).
        track_status: tracking mode (:mod:`semcorr_ros.engine.tracking`): ``tracked`` (found in the crop around
            its prediction), ``detecting`` (a full-frame detection: no track yet or a periodic re-detection),
            ``lost`` (neither the track nor a detection found it), ``reacquired`` (found again by a detection
            after a loss); always ``detecting`` without tracking.
        frames_since_detection: frames since the last full-frame detection of the object (0 on that frame).
        track_reason: why the track was lost in this frame (empty when it was not).
    """

    object_id: str
    view_id: str
    view_index: int
    view_scores: np.ndarray
    result: MatchResult
    source_view: np.ndarray
    track_status: str = "detecting"
    frames_since_detection: int = 0
    track_reason: str = ""


def view_score(frame: stages.Frame) -> float:
    """Expected number of correct matches of a view after its first pass (confidences inside the image)."""
    (w, h), xy = frame.size, frame.m.xy
    inside = (xy[:, 0] >= -0.5) & (xy[:, 0] <= w - 0.5) & (xy[:, 1] >= -0.5) & (xy[:, 1] <= h - 0.5)
    return float(np.sum(frame.m.score * inside))


def match_object(obj: ObjectModel, base: stages.Frame, context: Callable[[Reference], stages.Context],
                 object_box: Sequence[float] | None = None) -> ObjectResult:
    """Match one object into a validated live frame ``base`` (:func:`stages.Frame.start`); ``context(view)``
    gives the stage context of a view (its encode reusing the frame's shared maps)."""
    t0 = time.perf_counter()
    frames = [replace(base, timings={}, t0=time.perf_counter(), object_box=object_box) for _ in obj.views]
    ctxs = [context(v) for v in obj.views]
    if len(obj.views) == 1:
        for stage in stages.PIPELINE:
            stage(ctxs[0], frames[0])
        scores = np.array([view_score(frames[0])])
    else:
        for ctx, f in zip(ctxs, frames):
            for stage in SELECT_STAGES:
                stage(ctx, f)
        scores = np.array([view_score(f) for f in frames])
    best = int(np.argmax(scores))
    if len(obj.views) > 1:
        for stage in FINISH_STAGES:
            stage(ctxs[best], frames[best])
    chosen = frames[best].result(obj.views[best])
    result, source = _assemble(obj, best, chosen, frames, ctxs)
    timings: dict[str, float] = {}
    for f in frames:
        for key, value in f.timings.items():
            timings[key] = timings.get(key, 0.0) + value
    timings["total"] = time.perf_counter() - t0
    result.timings = timings
    return ObjectResult(obj.object_id, obj.views[best].reference_id, best, scores, result, source)


def object_order(obj: ObjectModel, v: int, r: MatchResult) -> MatchResult:
    """View ``v``'s result ``r`` in the object's keypoint order (keypoints the view lacks: NaN, invalid, score 0;
    ``r`` itself when the view has every keypoint in order). The arrays are new: callers may fill them in."""
    k, idx = len(obj.names), obj.index[v]
    if len(idx) == k and np.array_equal(idx, np.arange(k)):
        return r

    def scatter(a: np.ndarray | None) -> np.ndarray | None:
        if a is None:
            return None
        a = np.asarray(a)
        out = np.full((k, *a.shape[1:]), np.nan if a.dtype.kind == "f" else 0, dtype=a.dtype)
        out[idx] = a
        return out

    score, feats = np.zeros(k), scatter(r.score_features)
    score[idx] = r.score
    if feats is not None:
        feats[~np.isin(np.arange(k), idx)] = 0.0
    pose = r.pose if r.pose is None else replace(r.pose, inliers=scatter(np.asarray(r.pose.inliers, bool)))
    return replace(r, names=list(obj.names), xy=scatter(r.xy), ref_xy=scatter(r.ref_xy), score=score,
                   valid=scatter(np.asarray(r.valid, bool)), points3d=scatter(r.points3d),
                   has_3d=scatter(np.asarray(r.has_3d, bool)), score_features=feats, pose=pose)


def _assemble(obj: ObjectModel, best: int, chosen: MatchResult, frames: list[stages.Frame],
              ctxs: list[stages.Context]) -> tuple[MatchResult, np.ndarray]:
    """The chosen view's matches in the object's keypoint order, the keypoints it lacks filled from the other
    views' valid first-pass matches."""
    k = len(obj.names)
    idx = obj.index[best]
    out = object_order(obj, best, chosen)
    if out is chosen:
        return chosen, np.full(k, best)
    source = np.where(np.isin(np.arange(k), idx), best, -1)
    missing = np.setdiff1d(np.arange(k), idx)
    others = []
    for v, (f, ctx) in enumerate(zip(frames, ctxs)):
        if v != best and len(missing):
            stages.lift(ctx, f)  # validity and 3D of the other views' first-pass matches
            others.append((v, f.result(obj.views[v])))
    for j in missing:
        cands = [(r.score[r_i], v, r, r_i) for v, r in others
                 for r_i in np.where(obj.index[v] == j)[0] if r.valid[r_i]]
        if cands:
            _, v, r, r_i = max(cands, key=lambda c: c[0])
            out.xy[j], out.ref_xy[j], out.score[j], out.valid[j] = r.xy[r_i], r.ref_xy[r_i], r.score[r_i], r.valid[r_i]
            out.points3d[j], out.has_3d[j], source[j] = r.points3d[r_i], r.has_3d[r_i], v
            if out.score_features is not None and r.score_features is not None:
                out.score_features[j] = r.score_features[r_i]
    return out, source
