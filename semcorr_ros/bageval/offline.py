"""Offline mode of ``semcorr bag-eval``: every frame of the bag through :class:`CorrespondenceEngine`, no DDS.

Frames are paired and converted as in the node (colour pivot, nearest depth within ``slop`` s, latest camera
info, :func:`semcorr_ros.ros.frames.frame_from_messages`); the engine is warmed up on the reference first (as the
node does before it reports ready). Latency = the engine's time for the frame. No frame is dropped for load;
a frame the engine or the conversion rejects has no output (its reason is counted). With ``tracking: on`` every
frame goes through :meth:`CorrespondenceEngine.track` with its stamp (in bag order), and each prediction carries
its track status; ``info`` then counts the encodes per frame.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from semcorr_ros.bageval.bag import BagIndex, iter_frames
from semcorr_ros.bageval.metrics import FramePrediction
from semcorr_ros.errors import SemcorrError
from semcorr_ros.reference import ReferenceSpec

__all__ = ["run_offline", "run_offline_objects"]


def run_offline(index: BagIndex, spec: ReferenceSpec, engine: Any, *, slop: float = 0.02, progress: bool = True,
                on_frame: Callable[[int], None] | None = None) -> tuple[dict[int, FramePrediction], dict[str, Any]]:
    """Run ``engine`` (already built) on every colour frame of the bag.

    Returns:
        ``(colour stamp -> prediction, info)``; info has ``rejected`` (reason -> count), ``engine_s``,
        ``warmup_s`` and ``device``.
    """
    engine.set_reference(spec.image, spec.keypoints, spec.names, depth=spec.depth, intrinsics=spec.intrinsics,
                         reference_id=spec.reference_id)
    tracking = _tracking(engine)

    def step(frame: Any) -> list[tuple[str | None, Any, str | None, str | None]]:
        if tracking:
            [r] = engine.track(frame.rgb, frame.depth, frame.K, frame.stamp_ns * 1e-9, distortion=frame.distortion)
            return [(None, r.result, None, r.track_status)]
        return [(None, engine.match(frame.rgb, frame.depth, frame.K, distortion=frame.distortion), None, None)]

    warmup_s = _warm_up(lambda: engine.match(spec.image, spec.depth, spec.intrinsics))
    out, info = _run_frames(index, engine, step, slop, progress, on_frame, warmup_s)
    return out.get(None, {}), info


def run_offline_objects(index: BagIndex, objects: list[Any], engine: Any, *, slop: float = 0.02,
                        progress: bool = True, on_frame: Callable[[int], None] | None = None,
                        ) -> tuple[dict[str, dict[int, FramePrediction]], dict[str, Any]]:
    """As :func:`run_offline` for a reference set or an objects file (``objects``: their
    :class:`~semcorr_ros.reference.sets.ObjectSpec` objects): ``engine.set_objects`` once, then
    ``engine.match_objects`` on every frame (one encode, each object's views matched, the best view chosen).

    Returns:
        ``(object id -> (colour stamp -> prediction with its chosen view_id), info)``; latency = the engine's
        time for the whole frame (all objects), the same for every object of a frame.
    """
    engine.set_objects(objects)
    tracking = _tracking(engine)

    def step(frame: Any) -> list[tuple[str | None, Any, str | None, str | None]]:
        if tracking:
            results = engine.track(frame.rgb, frame.depth, frame.K, frame.stamp_ns * 1e-9,
                                   distortion=frame.distortion)
        else:
            results = engine.match_objects(frame.rgb, frame.depth, frame.K, distortion=frame.distortion)
        return [(r.object_id, r.result, r.view_id, r.track_status if tracking else None) for r in results]

    first = objects[0].views[0]
    warmup_s = _warm_up(lambda: engine.match_objects(first.image, first.depth, first.intrinsics))
    out, info = _run_frames(index, engine, step, slop, progress, on_frame, warmup_s)
    info["objects"] = [{"object_id": o.object_id, "views": [v.reference_id for v in o.views]} for o in objects]
    return {o.object_id: out.get(o.object_id, {}) for o in objects}, info


def _warm_up(call: Callable[[], Any]) -> float:
    """One engine call before the timed frames, like the node before it reports ready; its seconds."""
    t = time.perf_counter()
    try:
        call()
    except SemcorrError:
        pass
    return time.perf_counter() - t


def _run_frames(index: BagIndex, engine: Any, step: Callable[[Any], list[tuple]], slop: float, progress: bool,
                on_frame: Callable[[int], None] | None, warmup_s: float
                ) -> tuple[dict[str | None, dict[int, FramePrediction]], dict[str, Any]]:
    """Every frame of the bag through ``step(frame) -> [(object id, MatchResult, view id, track status)]``:
    predictions per object id and colour stamp (a repeated stamp once), rejections counted, engine time."""
    from tqdm import tqdm

    depth_scale = float(getattr(getattr(engine, "config", None), "depth_scale", 0.001))
    encodes = _Encodes(engine)
    predictions: dict[str | None, dict[int, FramePrediction]] = {}
    seen: set[int] = set()
    rejected: Counter[str] = Counter()
    total = 0.0
    bar = tqdm(total=index.frames, desc="offline", unit="frame", disable=not progress)
    try:
        for i, frame in enumerate(iter_frames(index, depth_scale, slop)):
            bar.update(1)
            if on_frame is not None:
                on_frame(i)
            if frame.error is not None:
                rejected[frame.error] += 1
                continue
            if frame.stamp_ns in seen:
                continue
            t = time.perf_counter()
            encodes.start()
            try:
                rows = step(frame)
            except SemcorrError as exc:
                rejected[str(exc)] += 1
                continue
            dt = time.perf_counter() - t
            total += dt
            seen.add(frame.stamp_ns)
            for oid, result, view_id, status in rows:
                pred = FramePrediction.from_result(frame.stamp_ns, result, dt)
                pred.object_id, pred.view_id, pred.track_status = oid, view_id, status
                predictions.setdefault(oid, {})[frame.stamp_ns] = pred
            encodes.done("tracked" if rows and all(r[3] == "tracked" for r in rows) else None)
    finally:
        bar.close()
    info = {"rejected": dict(rejected), "engine_s": round(total, 3), "warmup_s": round(warmup_s, 3),
            "device": str(getattr(engine, "device", "?")), "sync_slop_s": slop,
            "tracking": _tracking(engine), **encodes.summary()}
    return predictions, info


def _tracking(engine: Any) -> bool:
    return getattr(getattr(engine, "config", None), "tracking", "off") == "on"


class _Encodes:
    """Image encodes per frame (the engine's ``encodes`` counter), overall and on tracked frames."""

    def __init__(self, engine: Any) -> None:
        self.engine, self.frames, self.total, self.tracked_frames, self.tracked = engine, 0, 0, 0, 0
        self._before = 0

    def start(self) -> None:
        self._before = int(getattr(self.engine, "encodes", 0))

    def done(self, status: str | None) -> None:
        n = int(getattr(self.engine, "encodes", 0)) - self._before
        self.frames, self.total = self.frames + 1, self.total + n
        if status == "tracked":
            self.tracked_frames, self.tracked = self.tracked_frames + 1, self.tracked + n

    def summary(self) -> dict[str, Any]:
        if not hasattr(self.engine, "encodes") or not self.frames:
            return {}
        out: dict[str, Any] = {"encodes_per_frame": round(self.total / self.frames, 3)}
        if self.tracked_frames:
            out["encodes_per_tracked_frame"] = round(self.tracked / self.tracked_frames, 3)
        return out
