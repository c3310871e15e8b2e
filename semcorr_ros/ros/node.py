"""``correspond_node``: semantic keypoint correspondences for a live RGB-D stream (rclpy).

Inputs (relative names, sensor-data QoS; defaults follow realsense2_camera): ``color/image_raw``,
``aligned_depth_to_color/image_raw``, ``color/camera_info`` (or image_transport's ``.../compressed`` and
``.../compressedDepth`` with ``color_transport`` / ``depth_transport``). Outputs (private names, i.e. under
the node's name, ``/semcorr`` by default): ``~/matches`` (CorrespondenceArray), ``~/matches_3d``
(PointCloud2), ``~/pose`` (PoseStamped), ``~/markers`` (MarkerArray), ``~/debug_image`` (Image, drawn only
while subscribed); and ``/diagnostics``. Service ``~/set_enabled`` (std_srvs/SetBool) pauses and resumes.

Threads: the executor thread only buffers messages (:class:`~semcorr_ros.ros.sync.LatestSetSync`), answers
parameter requests and publishes diagnostics (:mod:`semcorr_ros.ros.node_diagnostics`). Three worker threads
(:mod:`semcorr_ros.ros.node_workers`) form a pipeline (:mod:`semcorr_ros.ros.pipeline`)
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
from typing import Any

from rcl_interfaces.msg import SetParametersResult
from rclpy.node import Node
from rclpy.parameter import Parameter
from std_srvs.srv import SetBool

from semcorr_ros.config import EngineConfig
from semcorr_ros.ros import params
from semcorr_ros.ros.diagnostics import FrameStats, KindThrottle
from semcorr_ros.ros.engine_updates import EngineUpdates
from semcorr_ros.ros.node_diagnostics import NodeDiagnostics
from semcorr_ros.ros.node_inputs import COMPRESSED_INPUT_TOPICS, INPUT_TOPICS, RgbdInputs, describe
from semcorr_ros.ros.node_workers import WorkerStages
from semcorr_ros.ros.outputs import OUTPUT_TOPICS, Outputs
from semcorr_ros.ros.pipeline import LatestBox, Pacer

__all__ = ["CorrespondNode", "main", "INPUT_TOPICS", "COMPRESSED_INPUT_TOPICS", "OUTPUT_TOPICS"]

_THROTTLE_S = 5.0
_STOP_TIMEOUT_S = 3.0  # longest wait for the frame in flight at shutdown (its work is bounded by the caps)


def _default_engine_factory(config: EngineConfig) -> Any:
    from semcorr_ros.engine import CorrespondenceEngine

    return CorrespondenceEngine(config)


class CorrespondNode(WorkerStages, NodeDiagnostics, Node):
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

def main(args: list[str] | None = None) -> int:
    """Entry point of ``correspond_node``: spin until SIGINT/SIGTERM; 0 on a clean stop, 1 on a start-up error."""
    from semcorr_ros.ros.runner import run_node

    return run_node(CorrespondNode, args, name="correspond_node")


if __name__ == "__main__":
    raise SystemExit(main())
