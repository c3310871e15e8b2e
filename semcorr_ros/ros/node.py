"""``correspond_node``: semantic keypoint correspondences for a live RGB-D stream (rclpy).

Inputs (relative names, sensor-data QoS; defaults follow realsense2_camera): ``color/image_raw``,
``aligned_depth_to_color/image_raw``, ``color/camera_info`` (or image_transport's ``.../compressed`` and
``.../compressedDepth`` with ``color_transport`` / ``depth_transport``). Outputs (private names, i.e. under
the node's name, ``/semcorr`` by default): ``~/matches`` (CorrespondenceArray), ``~/matches_3d``
(PointCloud2), ``~/pose`` (PoseStamped), ``~/markers`` (MarkerArray), ``~/debug_image`` (Image, drawn only
while subscribed); and ``/diagnostics``. Service ``~/set_enabled`` (std_srvs/SetBool) pauses and resumes.

Threads: the executor thread only buffers messages (:class:`~semcorr_ros.ros.sync.LatestSetSync`), answers
parameter requests and publishes diagnostics. Three worker threads form a pipeline (:mod:`semcorr_ros.ros.pipeline`)
so that the engine never waits for anything but itself: the *conversion* thread takes the *latest* complete
(colour, depth, info) set just before the engine is expected to be free and converts it to arrays; the *inference*
thread builds the engine, then runs it on each converted frame; the *publishing* thread builds and sends the
output messages. Each hand-over holds one item: an older set, frame or result is replaced and counted as dropped,
never queued. The node holds no algorithm: it converts, calls the engine, converts back.

Fail-safe: every callback survives any exception. A bad frame is a rejection (counted by class, logged
throttled, its reason in ``/diagnostics``); a bad parameter or reference is refused with its reason and the
last good state stays active. What cannot be recovered -- the model does not build, the inference thread
fails outside a frame, ``fatal_after_failures`` consecutive frames fail unexpectedly -- sets
:attr:`CorrespondNode.fatal_error`; ``correspond_node`` then exits with code 1 so that ``respawn`` restarts it.

In-process use::

    node = CorrespondNode(context=ctx, overrides={"reference_file": "/path/ref.yaml"})
    executor = SingleThreadedExecutor(context=ctx); executor.add_node(node)
    threading.Thread(target=executor.spin, daemon=True).start()
    node.wait_ready(60.0)
"""

from __future__ import annotations

import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_msgs.msg import Header
from std_srvs.srv import SetBool

from semcorr_ros.config import EngineConfig
from semcorr_ros.errors import BadReferenceError, SemcorrError
from semcorr_ros.ros import params
from semcorr_ros.ros.diagnostics import FrameStats, KindThrottle, diagnostic_array, loss_reasons, status_level
from semcorr_ros.ros.engine_updates import EngineUpdates
from semcorr_ros.ros.frames import frame_from_messages
from semcorr_ros.ros.node_inputs import COMPRESSED_INPUT_TOPICS, INPUT_TOPICS, RgbdInputs, describe
from semcorr_ros.ros.outputs import OUTPUT_TOPICS, Outputs
from semcorr_ros.ros.pipeline import LatestBox, Pacer
from semcorr_ros.ros.sync import COLOR, DEPTH, INFO

__all__ = ["CorrespondNode", "main", "INPUT_TOPICS", "COMPRESSED_INPUT_TOPICS", "OUTPUT_TOPICS"]

_THROTTLE_S = 5.0
_STOP_TIMEOUT_S = 3.0  # longest wait for the frame in flight at shutdown (its work is bounded by the caps)


@dataclass
class _Job:
    """A converted frame on its way through the pipeline (and, once matched, its result)."""

    frame: Any  # RgbdFrame
    arrival: float  # system time the colour message arrived
    convert_s: float  # conversion seconds
    results: Any = None  # MatchResult, or list[ObjectResult] when ``reference_id`` is None
    reference_id: str | None = None
    processing: float = 0.0  # conversion + engine seconds
    tracking: bool = False  # results of the tracking mode (list[ObjectResult] with track status)


def _default_engine_factory(config: EngineConfig) -> Any:
    from semcorr_ros.engine import CorrespondenceEngine

    return CorrespondenceEngine(config)


class CorrespondNode(Node):
    """The correspondence node.

    Args:
        node_name: node name (outputs live under it: ``/<namespace>/<node_name>/matches``).
        overrides: parameter values ``{name: value}`` replacing the defaults (like ``-p name:=value``).
        engine_factory: builds the engine from an :class:`EngineConfig` (tests inject small engines);
            default: :class:`semcorr_ros.engine.CorrespondenceEngine`.
        start: start the inference thread now (else call :meth:`start`).
        **kwargs: passed to :class:`rclpy.node.Node` (``context``, ``namespace``, ``cli_args``,
            ``parameter_overrides``...).

    Raises:
        ConfigError: start-up parameters the engine does not accept (the message names them).
    """

    def __init__(self, node_name: str = "semcorr", *, overrides: Mapping[str, Any] | None = None,
                 engine_factory: Callable[[EngineConfig], Any] | None = None, start: bool = True,
                 **kwargs: Any) -> None:
        extra = [Parameter(k, value=v) for k, v in (overrides or {}).items()]
        kwargs["parameter_overrides"] = list(kwargs.get("parameter_overrides") or []) + extra
        super().__init__(node_name, **kwargs)
        self._values: dict[str, Any] = params.declare_all(self)
        params.check_node_choices(self._values)
        self._config = params.engine_config(self._values)
        self._engine_factory = engine_factory or _default_engine_factory
        self._engine: Any = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self._enabled = bool(self._values["enabled"])
        self._failures = 0  # consecutive frames failed with an unexpected error
        self._updates = EngineUpdates(self.get_logger())
        self._validated_reference: Any = None
        self._stats = FrameStats()
        self._disabled_frames = 0
        self._reject_throttle = KindThrottle(_THROTTLE_S)
        try:
            self._updates.request_reference(params.load_reference_from_params(self._values))
        except Exception as exc:  # noqa: BLE001 -- a bad reference never stops the node
            self._updates.request_reference(None, describe(exc))
            self.get_logger().error(f"bad reference, none active: {describe(exc)}")

        self._inputs = RgbdInputs(self, self._values, self._reject)
        self._outputs = Outputs(self)
        self._enable_service = self.create_service(SetBool, "~/set_enabled", self._on_set_enabled)
        self._diag_timer = self.create_timer(float(self._values["diagnostics_period"]), self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._frames, self._results, self._pacer = LatestBox(), LatestBox(), Pacer()
        self._tracks: list[tuple[str, str, int]] = []  # (object id, track status, frames since detection)
        self._superseded = [0, 0]  # converted frames, results replaced before the next stage took them
        self._worker = self._thread(self._run_inference, "inference")
        self._threads = (self._worker, self._thread(self._run_conversion, "conversion"),
                         self._thread(self._run_publishing, "publishing"))
        if start:
            self.start()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the worker threads (the inference thread builds the engine, then frames flow)."""
        if not self._worker.is_alive() and not self._stop.is_set():
            for thread in self._threads:
                thread.start()

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the engine is built (True) or ``timeout`` passes (False).

        Raises:
            the engine's error when it failed to build.
        """
        done = self._ready.wait(timeout)
        if self._fatal is not None:
            raise self._fatal
        return done

    @property
    def fatal_error(self) -> BaseException | None:
        """The error that stopped the inference thread (the node cannot go on; the process exits 1), else None."""
        return self._fatal

    @property
    def engine(self) -> Any:
        """The engine once built (None before)."""
        return self._engine

    @property
    def worker_alive(self) -> bool:
        """Whether a worker thread still runs (after :meth:`close`: the frame in flight did not stop in time)."""
        return any(t.is_alive() for t in self._threads)

    def close(self, timeout: float = _STOP_TIMEOUT_S) -> bool:
        """Stop the inference thread, waiting at most ``timeout`` s for the frame in progress. Idempotent.

        Returns:
            True when the thread stopped (or never ran).
        """
        self._stop.set()
        self._inputs.sync.close()
        self._frames.close()
        self._results.close()
        deadline = time.monotonic() + (timeout if self._ready.is_set() else min(timeout, 1.0))
        for thread in self._threads:  # a model still loading cannot be interrupted: do not wait for it
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self.get_logger().warning(f"{thread.name} thread still busy after {timeout:.1f} s: not waiting "
                                          "longer")
                return False
        return True

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()

    def _fail(self, what: str, exc: BaseException) -> None:
        """Unrecoverable: remember why (the runner exits with code 1) and say so."""
        if self._fatal is None:
            self._fatal = exc
        self.get_logger().fatal(f"{what}: {describe(exc)}; the node stops (exit code 1, respawn restarts it)")
        self.get_logger().debug(traceback.format_exc())

    # ------------------------------------------------------------------ inputs (executor thread)
    def _on_set_enabled(self, request: SetBool.Request, response: SetBool.Response) -> SetBool.Response:
        """``~/set_enabled``: the same as setting the parameter ``enabled``."""
        try:
            result = self.set_parameters([Parameter("enabled", value=bool(request.data))])[0]
            response.success = bool(result.successful)
            response.message = ("inference " + ("enabled" if request.data else "paused")) if result.successful \
                else result.reason
        except Exception as exc:  # noqa: BLE001 -- a service callback must never stop the executor
            response.success, response.message = False, describe(exc)
        return response

    # ------------------------------------------------------------------ parameters (executor thread)
    def _validate_parameters(self, changed: list[Parameter]) -> SetParametersResult:
        try:
            names = {p.name for p in changed}
            merged = {**self._values, **{p.name: p.value for p in changed}}
            params.check_node_choices(merged)
            params.engine_config(merged)
            if names & params.REFERENCE_PARAMETERS:
                self._validated_reference = params.load_reference_from_params(merged)
        except Exception as exc:  # noqa: BLE001 -- any bad value is refused with its reason, never raised
            reason = describe(exc)
            self.get_logger().error(f"parameter change rejected: {reason}")
            return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _apply_parameters(self, changed: list[Parameter]) -> None:
        try:
            names = {p.name for p in changed}
            self._values.update({p.name: p.value for p in changed})
            self._enabled = bool(self._values["enabled"])
            if any(params.PARAMETERS_BY_NAME[n].field for n in names if n in params.PARAMETERS_BY_NAME):
                self._updates.request_config(params.engine_config(self._values))
            if names & params.REFERENCE_PARAMETERS:
                self._updates.request_reference(self._validated_reference)
            if names & params.SYNC_PARAMETERS:
                self._inputs.rebuild()
        except Exception as exc:  # noqa: BLE001 -- validated already; never let the parameter service raise
            self.get_logger().error(f"applying parameters failed: {describe(exc)}")

    # ------------------------------------------------------------------ worker threads
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

    def _convert(self, items: dict[str, Any]) -> _Job | None:
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
        return _Job(frame, arrival, seconds)

    def _infer(self, engine: Any, job: _Job) -> None:
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

    def _publish(self, job: _Job) -> None:
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

    # ------------------------------------------------------------------ diagnostics (executor thread)
    def sync_stats(self) -> dict[str, int]:
        """Synchroniser counters summed over the node's lifetime (the synchroniser is rebuilt on changes)."""
        return self._inputs.stats()

    def state(self) -> str:
        """``error``, ``loading``, ``paused``, ``no_reference`` or ``ready``."""
        if self._fatal is not None:
            return "error"
        if self._engine is None or not self._ready.is_set():
            return "loading"
        if not self._enabled:
            return "paused"
        return "no_reference" if self._engine.reference is None else "ready"

    def _publish_diagnostics(self) -> None:
        try:
            self._publish_diagnostics_once()
        except Exception as exc:  # noqa: BLE001 -- a timer callback must not stop the executor
            self.get_logger().error(f"diagnostics failed: {type(exc).__name__}: {exc}", throttle_duration_sec=30.0)

    def _log_sync_losses(self, sync: dict[str, int]) -> None:
        """Turn the synchroniser's unpaired and late colour frames into rejections / warnings with a reason."""
        never, late = self._inputs.losses(sync)
        newest = self._inputs.newest_stamp
        if never:
            c, d = newest.get(COLOR), newest.get(DEPTH)
            seen = "no depth frame received" if d is None else f"newest colour stamp {c:.3f}, depth {d:.3f}"
            self._reject(f"{never} colour frame(s) found no depth frame within sync_slop="
                         f"{self._values['sync_slop']} s ({seen})", count=never, kind="unpaired")
        if late > 0 and self._reject_throttle.allow("late", late) is not None:
            self.get_logger().warning(
                f"{late} colour frame(s) dropped: stamp not newer than the last processed frame (newest colour "
                f"stamp {newest.get(COLOR, float('nan')):.3f}); frames out of order, or a camera "
                f"publishing zero/constant stamps with stamp_source={self._values['stamp_source']}")

    def _publish_diagnostics_once(self) -> None:
        sync = self.sync_stats()
        self._log_sync_losses(sync)
        snap = self._stats.snapshot()
        state = self.state()
        level, message = status_level(state, snap, float(self._values["diagnostics_period"]))
        device = str(getattr(self._engine, "device", self._config.device))
        spec, stamps = self._updates.active, self._inputs.stamps
        shed = self._inputs.accounting.shed + sum(self._superseded)
        values = {
            "node": self.get_fully_qualified_name(), "state": state, "enabled": self._enabled, "device": device,
            "model": "+".join(self._config.sources),
            "reference_id": spec.reference_id if spec else "", "keypoints": len(spec.names) if spec else 0,
            "reference_error": self._updates.error,
            "objects": ", ".join(f"{o.object_id} ({len(o.views)} view{'s' if len(o.views) > 1 else ''})"
                                 for o in self._updates.objects),
            "tracking": ", ".join(f"{o}: {status} ({n} frames since detection)" for o, status, n in self._tracks)
                        if getattr(getattr(self._engine, "config", None), "tracking", "off") == "on" else "off",
            "rate_hz": snap.rate_hz, "latency_p50_ms": snap.latency_p50 * 1e3,
            "latency_p95_ms": snap.latency_p95 * 1e3, "latency_max_ms": snap.latency_max * 1e3,
            "processing_p50_ms": snap.processing_p50 * 1e3,
            "stamp_source": stamps.active + (f" ({stamps.reason})" if stamps.reason else ""),
            "frames_received": sync.get("added_color", 0), "frames_processed": sync.get("consumed", 0),
            "frames_published": snap.published, "frames_dropped": sync.get("dropped", 0) + shed,
            "frames_late": sync.get("late", 0), "frames_disabled": self._disabled_frames,
            "frames_rejected": snap.rejected, "frames_unpaired": self._inputs.accounting.never_paired,
            "last_rejection": snap.last_rejection, "fatal_error": describe(self._fatal) if self._fatal else "",
            **loss_reasons(sync, snap, shed, self._disabled_frames,
                           float(self._values["sync_time_jump_reset"])),
        }
        header = Header(stamp=self.get_clock().now().to_msg())
        name = f"{self.get_name()}: semantic correspondence"
        self._outputs.diagnostics.publish(diagnostic_array(header, name, device, level, message, values))


def main(args: list[str] | None = None) -> int:
    """Entry point of ``correspond_node``: spin until SIGINT/SIGTERM; 0 on a clean stop, 1 on a start-up error."""
    from semcorr_ros.ros.runner import run_node

    return run_node(CorrespondNode, args, name="correspond_node")


if __name__ == "__main__":
    raise SystemExit(main())
