"""``correspond_node``: semantic keypoint correspondences for a live RGB-D stream (rclpy).

Inputs (relative names, sensor-data QoS; defaults follow realsense2_camera): ``color/image_raw``,
``aligned_depth_to_color/image_raw``, ``color/camera_info``. Outputs (private names, i.e. under the node's name,
``/semcorr`` by default): ``~/matches`` (CorrespondenceArray), ``~/matches_3d`` (PointCloud2), ``~/pose``
(PoseStamped), ``~/markers`` (MarkerArray), ``~/debug_image`` (Image, drawn only while subscribed); and
``/diagnostics``.

Threads: the executor thread only buffers messages (:class:`~semcorr_ros.ros.sync.LatestSetSync`), answers
parameter requests and publishes diagnostics; one inference thread builds the engine, then repeatedly takes the
*latest* complete (colour, depth, info) set, runs the engine and publishes. Older sets are dropped and counted,
never queued. The node holds no algorithm: it converts, calls the engine, converts back.

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
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from semcorr_ros.config import EngineConfig
from semcorr_ros.errors import BadReferenceError, ConfigError, SemcorrError
from semcorr_ros.ros import params
from semcorr_ros.ros.convert import stamp_to_sec
from semcorr_ros.ros.diagnostics import FrameStats, KindThrottle, SyncAccounting, diagnostic_array, status_level
from semcorr_ros.ros.engine_updates import EngineUpdates
from semcorr_ros.ros.inputs import frame_from_messages
from semcorr_ros.ros.outputs import OUTPUT_TOPICS, Outputs
from semcorr_ros.ros.sync import COLOR, DEPTH, INFO, LatestSetSync

__all__ = ["CorrespondNode", "main", "INPUT_TOPICS", "OUTPUT_TOPICS"]

#: Input topic names (relative: resolved in the node's namespace; remap them to the camera's topics).
INPUT_TOPICS = {COLOR: "color/image_raw", DEPTH: "aligned_depth_to_color/image_raw", INFO: "color/camera_info"}
_THROTTLE_S = 5.0


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
        self._config = params.engine_config(self._values)
        self._engine_factory = engine_factory or _default_engine_factory
        self._engine: Any = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._fatal: BaseException | None = None
        self._updates = EngineUpdates(self.get_logger())
        self._validated_reference: Any = None
        self._stats = FrameStats()
        self._last_info: CameraInfo | None = None
        self._newest_stamp: dict[str, float] = {}
        self._reject_throttle = KindThrottle(_THROTTLE_S)
        self._sync_acc = SyncAccounting()
        self._sync = self._make_sync()
        try:
            self._updates.request_reference(params.load_reference_from_params(self._values))
        except BadReferenceError as exc:
            self._updates.request_reference(None, str(exc))
            self.get_logger().error(f"bad reference, none active: {exc}")

        sub_qos = qos_profile_sensor_data
        self._subs = [self.create_subscription(Image, INPUT_TOPICS[COLOR], self._on_color, sub_qos),
                      self.create_subscription(Image, INPUT_TOPICS[DEPTH], self._on_depth, sub_qos),
                      self.create_subscription(CameraInfo, INPUT_TOPICS[INFO], self._on_info, sub_qos)]
        self._info_topic = self._subs[2].topic_name
        self._outputs = Outputs(self)
        self._diag_timer = self.create_timer(float(self._values["diagnostics_period"]), self._publish_diagnostics)
        self.add_on_set_parameters_callback(self._validate_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self._worker = threading.Thread(target=self._run, name=f"{node_name}-inference", daemon=True)
        if start:
            self.start()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Start the inference thread (builds the engine, then processes frames)."""
        if not self._worker.is_alive() and not self._stop.is_set():
            self._worker.start()

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
        """The error that stopped the inference thread (model failed to build), else None."""
        return self._fatal

    @property
    def engine(self) -> Any:
        """The engine once built (None before)."""
        return self._engine

    def close(self, timeout: float = 10.0) -> None:
        """Stop the inference thread (finishes the frame in progress). Idempotent."""
        self._stop.set()
        self._sync.close()
        if self._worker.is_alive():  # a model still loading cannot be interrupted: do not wait for it
            self._worker.join(timeout if self._ready.is_set() else min(timeout, 1.0))
            if self._worker.is_alive():
                self.get_logger().warning("inference thread did not stop in time")

    def destroy_node(self) -> None:
        self.close()
        super().destroy_node()

    # ------------------------------------------------------------------ inputs (executor thread)
    def _make_sync(self) -> LatestSetSync:
        sync = LatestSetSync(float(self._values["sync_slop"]), int(self._values["sync_buffer_size"]),
                             info_latched=True)
        sync.add(INFO, 0.0, self._last_info)  # None until camera info arrives: such sets are rejected, counted
        return sync

    def _add(self, stream: str, msg: Any) -> None:
        t = stamp_to_sec(msg.header.stamp)
        self._newest_stamp[stream] = t
        self._sync_acc.note(stream, t)
        self._sync.add(stream, t, msg)

    def _on_color(self, msg: Image) -> None:
        self._add(COLOR, msg)

    def _on_depth(self, msg: Image) -> None:
        self._add(DEPTH, msg)

    def _on_info(self, msg: CameraInfo) -> None:
        self._last_info = msg
        self._add(INFO, msg)

    # ------------------------------------------------------------------ parameters (executor thread)
    def _validate_parameters(self, changed: list[Parameter]) -> SetParametersResult:
        names = {p.name for p in changed}
        merged = {**self._values, **{p.name: p.value for p in changed}}
        try:
            params.engine_config(merged)
            if names & params.REFERENCE_PARAMETERS:
                self._validated_reference = params.load_reference_from_params(merged)
        except (ConfigError, BadReferenceError) as exc:
            self.get_logger().error(f"parameter change rejected: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

    def _apply_parameters(self, changed: list[Parameter]) -> None:
        names = {p.name for p in changed}
        self._values.update({p.name: p.value for p in changed})
        if any(params.PARAMETERS_BY_NAME[n].field for n in names if n in params.PARAMETERS_BY_NAME):
            self._updates.request_config(params.engine_config(self._values))
        if names & params.REFERENCE_PARAMETERS:
            self._updates.request_reference(self._validated_reference)
        if names & params.SYNC_PARAMETERS:
            old, self._sync = self._sync, self._make_sync()
            old.close()  # wakes the inference thread, which then waits on the new one
            self._sync_acc.retire(old.stats())

    # ------------------------------------------------------------------ inference thread
    def _run(self) -> None:
        try:
            threads = int(self._values["torch_threads"])
            if threads > 0:
                import torch

                torch.set_num_threads(threads)
            t0 = time.monotonic()
            engine = self._engine_factory(self._config)
        except Exception as exc:  # noqa: BLE001 -- any failure to build is reported, then the node idles
            self._fatal = exc
            self.get_logger().fatal(f"the model failed to load: {type(exc).__name__}: {exc}")
            self._ready.set()
            return
        self._engine = engine
        self.get_logger().info(f"model {'+'.join(self._config.sources)} ready on {getattr(engine, 'device', '?')} "
                               f"in {time.monotonic() - t0:.1f} s")
        self._updates.apply(engine)
        self._warm_up(engine)
        self._ready.set()
        while not self._stop.is_set():
            self._updates.apply(engine)
            got = self._sync.wait_for_set(timeout=0.1)
            if got is not None and not self._stop.is_set():
                self._process(engine, got[1])

    def _warm_up(self, engine: Any) -> None:
        """Match the reference into itself once: the first call of a model at a new size is several times slower."""
        spec = self._updates.active
        if spec is None:
            return
        try:
            engine.match(spec.image, spec.depth, spec.intrinsics)
        except SemcorrError:
            pass

    def _reject(self, reason: str, count: int = 1) -> None:
        """Count rejected frames; log the reason, at most once per ``_THROTTLE_S`` per kind of reason."""
        self._stats.record_rejected(reason, count)
        suppressed = self._reject_throttle.allow(reason, count)
        if suppressed is not None:
            more = f" ({suppressed} more like it since the last message)" if suppressed else ""
            self.get_logger().error(f"frame rejected: {reason}{more}")

    def _process(self, engine: Any, items: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        try:
            if engine.reference is None:
                raise BadReferenceError(f"no active reference ({self._updates.error})")
            frame = frame_from_messages(items[COLOR], items[DEPTH], items[INFO], engine.config.depth_scale,
                                        self._info_topic)
            result = engine.match(frame.rgb, frame.depth, frame.K)
            processing = time.perf_counter() - t0
            latency = self._outputs.publish(frame, result, engine.reference.reference_id, processing,
                                            float(self._values["marker_scale"]),
                                            bool(self._values["publish_debug_image"]))
            self._stats.record_published(latency, processing)
        except SemcorrError as exc:
            self._reject(str(exc))
        except Exception as exc:  # noqa: BLE001 -- the inference thread must survive anything
            if self._stop.is_set() or not self.context.ok():
                return  # shutting down: publishers are gone
            self._reject(f"unexpected {type(exc).__name__}: {exc}")
            self.get_logger().debug(traceback.format_exc())

    # ------------------------------------------------------------------ diagnostics (executor thread)
    def sync_stats(self) -> dict[str, int]:
        """Synchroniser counters summed over the node's lifetime (the synchroniser is rebuilt on changes)."""
        return self._sync_acc.totals(self._sync.stats())

    def state(self) -> str:
        """``error``, ``loading``, ``no_reference`` or ``ready``."""
        if self._fatal is not None:
            return "error"
        if self._engine is None or not self._ready.is_set():
            return "loading"
        return "no_reference" if self._engine.reference is None else "ready"

    def _publish_diagnostics(self) -> None:
        try:
            self._publish_diagnostics_once()
        except Exception as exc:  # noqa: BLE001 -- a timer callback must not stop the executor
            self.get_logger().error(f"diagnostics failed: {type(exc).__name__}: {exc}", throttle_duration_sec=30.0)

    def _publish_diagnostics_once(self) -> None:
        sync = self.sync_stats()
        never = self._sync_acc.update(sync, float(self._values["sync_slop"]))
        if never:
            c, d = self._newest_stamp.get(COLOR), self._newest_stamp.get(DEPTH)
            seen = "no depth frame received" if d is None else f"newest colour stamp {c:.3f}, depth {d:.3f}"
            self._reject(f"{never} colour frame(s) found no depth frame within sync_slop="
                         f"{self._values['sync_slop']} s ({seen})", count=never)
        snap = self._stats.snapshot()
        state = self.state()
        level, message = status_level(state, snap, float(self._values["diagnostics_period"]))
        device = str(getattr(self._engine, "device", self._config.device))
        spec = self._updates.active
        values = {
            "state": state, "device": device, "model": "+".join(self._config.sources),
            "reference_id": spec.reference_id if spec else "", "keypoints": len(spec.names) if spec else 0,
            "reference_error": self._updates.error,
            "rate_hz": snap.rate_hz, "latency_p50_ms": snap.latency_p50 * 1e3,
            "latency_p95_ms": snap.latency_p95 * 1e3, "latency_max_ms": snap.latency_max * 1e3,
            "processing_p50_ms": snap.processing_p50 * 1e3,
            "frames_received": sync.get("added_color", 0), "frames_processed": sync.get("consumed", 0),
            "frames_published": snap.published, "frames_dropped": sync.get("dropped", 0) + self._sync_acc.shed,
            "frames_rejected": snap.rejected, "frames_unpaired": self._sync_acc.never_paired,
            "last_rejection": snap.last_rejection, "fatal_error": str(self._fatal or ""),
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
