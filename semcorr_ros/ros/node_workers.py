"""The node's three worker threads, one stage each (:class:`~semcorr_ros.ros.node.CorrespondNode` mixes them in).

*conversion* takes the newest complete (colour, depth, info) set just before the engine is expected to be free and
converts it to arrays (:class:`Job`); *inference* builds the engine, then runs it on each converted frame;
*publishing* builds and sends the output messages. Each hand-over (:class:`~semcorr_ros.ros.pipeline.LatestBox`)
holds one item: an older one is replaced and counted, never queued. A failure inside a frame is that frame's
rejection; what escapes a loop ends the node (exit code 1).
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from semcorr_ros.errors import BadReferenceError, SemcorrError
from semcorr_ros.ros.frames import frame_from_messages
from semcorr_ros.ros.node_inputs import describe
from semcorr_ros.ros.sync import COLOR, DEPTH, INFO

__all__ = ["Job", "WorkerStages"]


@dataclass
class Job:
    """A converted frame on its way through the pipeline (and, once matched, its result)."""

    frame: Any  # RgbdFrame
    arrival: float  # system time the colour message arrived
    convert_s: float  # conversion seconds
    results: Any = None  # MatchResult, or list[ObjectResult] when ``reference_id`` is None
    reference_id: str | None = None
    processing: float = 0.0  # conversion + engine seconds
    tracking: bool = False  # results of the tracking mode (list[ObjectResult] with track status)


class WorkerStages:
    """The conversion, inference and publishing stages of the node (a mixin of
    :class:`~semcorr_ros.ros.node.CorrespondNode`, whose constructor sets the state used here)."""

    def _thread(self, loop: Callable[[], None], what: str) -> threading.Thread:
        def guarded() -> None:
            try:
                loop()
            except BaseException as exc:  # noqa: BLE001 -- anything escaping a loop ends the node cleanly (exit 1)
                if not self._stop.is_set():
                    self._fail(f"the {what} thread failed", exc)
            finally:
                self._ready.set()

        return threading.Thread(target=guarded, name=f"{self.get_name()}-{what}", daemon=True)

    def _running(self) -> bool:
        return not self._stop.is_set() and self._fatal is None

    def _run_inference(self) -> None:
        try:
            threads = int(self._values["torch_threads"])
            if threads > 0:
                import torch

                torch.set_num_threads(threads)
            t0 = time.monotonic()
            engine = self._engine_factory(self._config)
        except Exception as exc:  # noqa: BLE001 -- any failure to build is reported, then the node exits 1
            self._fail("the model failed to load", exc)
            return
        self._engine = engine
        self.get_logger().info(f"model {'+'.join(self._config.sources)} ready on {getattr(engine, 'device', '?')} "
                               f"in {time.monotonic() - t0:.1f} s")
        self._updates.apply(engine)
        self._warm_up(engine)
        self._ready.set()
        while self._running():
            self._updates.apply(engine)
            job = self._frames.take(timeout=0.1)
            if job is None or not self._running():
                continue
            if not self._enabled:
                self._disabled_frames += 1
                continue
            self._infer(engine, job)

    def _run_conversion(self) -> None:
        """Convert the newest set when the engine is about to be free (:class:`Pacer`).

        A set that arrives while the engine has just started is held unconverted until then, and replaced by a
        newer one if one came meanwhile: a frame converted early would wait a whole engine call in the box.
        """
        while not self._ready.wait(0.1):
            if self._stop.is_set():
                return
        held: tuple[float, dict[str, Any]] | None = None
        while self._running():
            self._pacer.wait_until_due(self._stop)
            if held is None:
                got = self._inputs.sync.wait_for_set(timeout=0.1)
            else:
                got = self._inputs.sync.pop_latest()
                if got is None:
                    got = held
                else:
                    self._superseded[0] += 1
                held = None
            if got is None or not self._running():
                continue
            if not self._enabled:
                self._disabled_frames += 1
                continue
            if self._pacer.due() > time.monotonic():  # the engine started while this set was awaited
                held = got
                continue
            job = self._convert(got[1])
            if job is not None and self._frames.put(job) is not None:
                self._superseded[0] += 1

    def _run_publishing(self) -> None:
        while self._running():
            job = self._results.take(timeout=0.1)
            if job is not None and self._running():
                self._publish(job)

    def _warm_up(self, engine: Any) -> None:
        """Match the reference into itself once: the first call of a model at a new size is several times slower."""
        spec = self._updates.active
        if spec is None:
            return
        try:
            engine.match(spec.image, spec.depth, spec.intrinsics)
        except Exception as exc:  # noqa: BLE001 -- a failed warm-up costs only speed on the first frame
            self.get_logger().warning(f"warm-up match failed ({describe(exc)}); the first frame will be slower")

    def _reject(self, reason: str, count: int = 1, kind: str = "other") -> None:
        """Count rejected frames under ``kind``; log the reason, at most once per ``_THROTTLE_S`` per kind."""
        self._stats.record_rejected(reason, count, kind)
        suppressed = self._reject_throttle.allow(kind + ":" + reason, count)
        if suppressed is not None:
            more = f" ({suppressed} more like it since the last message)" if suppressed else ""
            self.get_logger().error(f"frame rejected: {reason}{more}")

    def _convert(self, items: dict[str, Any]) -> Job | None:
        """Conversion thread: the set as an :class:`RgbdFrame` (None: rejected, counted)."""
        t0 = time.perf_counter()
        try:
            engine = self._engine
            if engine.reference is None:
                raise BadReferenceError(f"no active reference ({self._updates.error})", kind="no_reference")
            (color, arrival), (depth, _) = items[COLOR], items[DEPTH]
            frame = frame_from_messages(color, depth, items[INFO], engine.config.depth_scale,
                                        self._inputs.info_topic,
                                        max_pixels=int(self._values["max_image_pixels"]),
                                        check_frame_ids=bool(self._values["require_matching_frame_ids"]),
                                        rectified=bool(self._values["rectified_input"]))
        except Exception as exc:  # noqa: BLE001 -- the pipeline must survive anything
            self._frame_failed(exc)
            return None
        seconds = time.perf_counter() - t0
        self._pacer.converted(seconds)
        return Job(frame, arrival, seconds)

    def _infer(self, engine: Any, job: Job) -> None:
        """Inference thread: run the engine on one converted frame, hand the result to the publishing thread."""
        frame = job.frame
        self._pacer.started()
        t0 = time.perf_counter()
        try:
            extra = {"distortion": frame.distortion} if frame.distortion is not None else {}
            objects = getattr(engine, "objects", [])
            job.tracking = getattr(engine.config, "tracking", "off") == "on"
            if job.tracking:
                job.results = engine.track(frame.rgb, frame.depth, frame.K, frame.stamp, **extra)
                self._tracks = [(r.object_id, r.track_status, r.frames_since_detection) for r in job.results]
            elif len(objects) > 1 or (objects and len(objects[0].views) > 1):
                job.results = engine.match_objects(frame.rgb, frame.depth, frame.K, **extra)
            else:
                if engine.reference is None:
                    raise BadReferenceError(f"no active reference ({self._updates.error})", kind="no_reference")
                job.reference_id = engine.reference.reference_id
                job.results = engine.match(frame.rgb, frame.depth, frame.K, **extra)
        except Exception as exc:  # noqa: BLE001 -- the inference thread must survive anything
            self._frame_failed(exc)
            return
        finally:
            self._pacer.finished()
        job.processing = job.convert_s + time.perf_counter() - t0
        if self._results.put(job) is not None:
            self._superseded[1] += 1

    def _publish(self, job: Job) -> None:
        """Publishing thread: every output message of one frame."""
        try:
            show = (float(self._values["marker_scale"]), bool(self._values["publish_debug_image"]),
                    job.arrival if self._inputs.stamps.use_arrival else None)
            if job.reference_id is None:
                latency = self._outputs.publish_objects(job.frame, job.results, job.processing, *show,
                                                        tracking=job.tracking)
            else:
                latency = self._outputs.publish(job.frame, job.results, job.reference_id, job.processing, *show)
            self._stats.record_published(latency, job.processing)
            self._failures = 0
        except Exception as exc:  # noqa: BLE001 -- the publishing thread must survive anything
            self._frame_failed(exc)

    def _frame_failed(self, exc: Exception) -> None:
        """One frame failed: a bad input is a rejection; an unexpected error counts towards ``fatal_after_failures``."""
        if isinstance(exc, SemcorrError):
            self._reject(str(exc), kind=exc.kind)
            return
        if self._stop.is_set() or not self.context.ok():
            return  # shutting down: publishers are gone
        self._failures += 1
        self._reject(f"unexpected {type(exc).__name__}: {exc}", kind="engine_error")
        self.get_logger().debug(traceback.format_exc())
        limit = int(self._values["fatal_after_failures"])
        if limit and self._failures >= limit:
            self._fail(f"{self._failures} consecutive frames failed with unexpected errors",
                       RuntimeError(f"{self._failures} consecutive frames failed; last: "
                                    f"{type(exc).__name__}: {exc}"))

