"""Node mode of ``semcorr bag-eval``: replay a bag into ``correspond_node`` over real DDS and record its outputs.

:func:`run_node_mode`:

1. starts ``correspond_node`` as a child process (unless ``launch=False``: a node the user already runs), with a
   parameters file holding the reference and the engine options, its inputs remapped to the bag's topics, on a
   private ``ROS_DOMAIN_ID`` and -- when ``FASTDDS_DEFAULT_PROFILES_FILE`` is unset -- the localhost Fast DDS
   profile shipped with the package (``fastdds_localhost.xml``: shared memory large enough for whole images;
   with Fast DDS's default transports best-effort 640x480 images between processes are mostly lost);
2. waits until the node is ready: its ``/diagnostics`` status says ``state = ready`` (model loaded and warmed up,
   reference active), and the replay's publishers and the ``matches`` subscription are matched with the node's
   endpoints. A node that exits, reports ``error``/``no_reference``, or is not ready within ``ready_timeout``
   stops the run with the reason and the tail of its log;
3. publishes the bag's colour, depth and camera-info messages (raw CDR, unchanged: the original stamps) with the
   sensor-data QoS at the recorded pace divided by ``rate``, recording the publish time of every colour message;
4. records every ``matches`` message with its receive time; latency = receive time - publish time of the colour
   message with the same stamp (both on this process's monotonic clock);
5. after the last frame waits until the output for the last colour frame arrived or ``grace`` seconds passed,
   reads the node's last diagnostics, then stops the child: SIGINT, then SIGKILL after ``stop_timeout``. The
   child is stopped whatever happens (exceptions, Ctrl-C, SIGTERM to this process); on Linux it also gets
   ``PR_SET_PDEATHSIG`` so it cannot outlive a killed parent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from semcorr_ros.bageval.bag import BagIndex, header_stamp_ns, iter_raw
from semcorr_ros.bageval.metrics import FramePrediction
from semcorr_ros.config import EngineConfig
from semcorr_ros.errors import SemcorrError

__all__ = ["NodeError", "ReplayResult", "FASTDDS_PROFILE", "node_parameters", "node_command", "find_node_executable",
           "run_node_mode", "sigterm_as_interrupt"]

log = logging.getLogger(__name__)

#: Localhost Fast DDS profile shipped with the package (a copy of tools/fastdds_localhost.xml).
FASTDDS_PROFILE = Path(__file__).resolve().parent / "fastdds_localhost.xml"
_DIAG_SUFFIX = ": semantic correspondence"
#: Environment variables that make rmw_fastrtps replace the transports of a profile (see test/conftest.py).
_PROFILE_OVERRIDES = ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_STATIC_PEERS", "ROS_LOCALHOST_ONLY")


class NodeError(SemcorrError, RuntimeError):
    """The correspondence node could not be started, did not become ready, or died."""


@dataclass
class ReplayResult:
    predictions: dict[int, FramePrediction]
    publish_times: dict[int, float]
    info: dict[str, Any] = field(default_factory=dict)
    node_log: str | None = None
    #: object id -> (stamp -> output): the node's ``matches`` messages that carry an ``object_id`` (a reference
    #: set or objects file: one message per object and frame); ``predictions`` then holds the first of each frame
    object_predictions: dict[str, dict[int, FramePrediction]] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------ the child

def node_parameters(cfg: EngineConfig, reference_file: Path, torch_threads: int | None = None) -> dict[str, Any]:
    """The node's parameters for an engine configuration (from the option schema: :mod:`semcorr_ros.ros.params`)."""
    from semcorr_ros.ros.params import parameter_values

    values = parameter_values(cfg)
    values.update({"reference_file": str(reference_file), "publish_debug_image": False,
                   "diagnostics_period": 0.25})
    if torch_threads:
        values["torch_threads"] = int(torch_threads)
    return values


def find_node_executable() -> Path:
    """``correspond_node`` next to this Python (the venv's ``bin/``), else ``<prefix>/lib/semcorr_ros/``, else PATH.

    Raises:
        NodeError: none found.
    """
    candidates = [Path(sys.executable).parent / "correspond_node",
                  Path(sys.prefix) / "bin" / "correspond_node",
                  Path(sys.prefix) / "lib" / "semcorr_ros" / "correspond_node"]
    found = shutil.which("correspond_node")
    if found:
        candidates.append(Path(found))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return c
    raise NodeError(f"correspond_node not found (looked in {', '.join(str(c.parent) for c in candidates)}); "
                    f"install the package (bash tools/setup.sh) or pass --node-executable")


def node_command(executable: Path, params_file: Path, node_name: str, index: BagIndex,
                 extra: list[str] | None = None) -> list[str]:
    """The child's command line: parameters file, node name, inputs remapped to the bag's topics."""
    from semcorr_ros.ros.node import INPUT_TOPICS
    from semcorr_ros.ros.sync import COLOR, DEPTH, INFO

    return [str(executable), "--ros-args", "--params-file", str(params_file), "-r", f"__node:={node_name}",
            "-r", f"{INPUT_TOPICS[COLOR]}:={index.color_topic}",
            "-r", f"{INPUT_TOPICS[DEPTH]}:={index.depth_topic}",
            "-r", f"{INPUT_TOPICS[INFO]}:={index.info_topic}", *(extra or [])]


def _pdeathsig() -> None:  # pragma: no cover -- runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 -- not Linux: the parent's finally still stops the child
        pass


class NodeProcess:
    """The child node: started by :meth:`start`, always stopped by :meth:`stop` (idempotent)."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path) -> None:
        self.cmd, self.env, self.log_path = cmd, env, log_path
        self.proc: subprocess.Popen | None = None
        self.exit_code: int | None = None
        self.stop_s: float | None = None
        self.killed = False

    def start(self) -> None:
        log_f = open(self.log_path, "wb")
        try:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL, stdout=log_f, stderr=subprocess.STDOUT,
                                         env=self.env, preexec_fn=_pdeathsig if sys.platform == "linux" else None)
        except OSError as exc:
            raise NodeError(f"cannot start {self.cmd[0]}: {exc}") from exc
        finally:
            log_f.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.exit_code is not None:
            return
        t0 = time.monotonic()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                self.proc.kill()
                self.proc.wait()
        self.exit_code = self.proc.returncode
        self.stop_s = time.monotonic() - t0


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt in the main thread while the replay runs (so cleanup happens)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _prepare_environment(launch: bool, domain_id: int | None) -> tuple[dict[str, str], int | None, str | None]:
    """Environment of this process and of the child: (child env, domain id for rclpy.init, profile used)."""
    profile = os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or None
    if launch and profile is None:
        profile = str(FASTDDS_PROFILE)
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = profile
        for name in _PROFILE_OVERRIDES:
            os.environ.pop(name, None)
    if launch and domain_id is None:
        current = os.environ.get("ROS_DOMAIN_ID", "0")
        domain_id = random.SystemRandom().choice([d for d in range(1, 102) if str(d) != current])
    env = dict(os.environ)
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    env.setdefault("AMENT_PREFIX_PATH", sys.prefix)
    return env, domain_id, profile


# ------------------------------------------------------------------------------------------------ the run

def run_node_mode(index: BagIndex, reference_file: Path, cfg: EngineConfig, *, rate: float = 1.0,
                  launch: bool = True, node_name: str | None = None, domain_id: int | None = None,
                  ready_timeout: float = 120.0, grace: float = 5.0, stop_timeout: float = 10.0,
                  torch_threads: int | None = None, node_executable: Path | None = None,
                  node_args: list[str] | None = None, progress: bool = True,
                  on_ready: Callable[[], None] | None = None) -> ReplayResult:
    """Replay ``index``'s bag into a correspondence node and record its outputs (see the module docstring).

    Raises:
        NodeError: the node did not start, failed, or was not ready in time (with its log tail).
    """
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, qos_profile_sensor_data
    from rclpy.signals import SignalHandlerOptions
    from sensor_msgs.msg import CameraInfo, Image
    from tqdm import tqdm

    from semcorr_ros.msg import CorrespondenceArray

    if rate <= 0:
        raise NodeError(f"--rate must be > 0, got {rate}")
    if node_name is None:
        node_name = f"semcorr_bag_eval_{os.getpid()}" if launch else "semcorr"
    node_name = node_name.strip("/")
    base_name = node_name.rsplit("/", 1)[-1]  # the diagnostics status carries the name without namespace
    if launch and (not base_name or base_name != node_name):
        raise NodeError(f"--node-name must be a plain node name when the node is launched, got {node_name!r}")
    t_start = time.monotonic()
    exe = (node_executable or find_node_executable()) if launch else None
    env, domain_id, profile = _prepare_environment(launch, domain_id)
    work = Path(tempfile.mkdtemp(prefix="semcorr_bag_eval_"))
    info: dict[str, Any] = {"launched": launch, "node_name": node_name, "domain_id": domain_id,
                            "fastdds_profile": profile, "rate": rate}
    child: NodeProcess | None = None
    if launch:
        import yaml

        params_file = work / "params.yaml"
        params = node_parameters(cfg, reference_file.resolve(), torch_threads)
        params_file.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}, sort_keys=False))
        cmd = node_command(exe, params_file, node_name, index, node_args)
        info.update({"command": cmd, "parameters": params})
        child = NodeProcess(cmd, env, work / "node.log")
        try:
            child.start()  # first: the model loads while this process sets up DDS
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise

    context = Context()
    lock = threading.Lock()
    predictions: dict[int, FramePrediction] = {}
    object_predictions: dict[str, dict[int, FramePrediction]] = {}
    publish_times: dict[int, float] = {}
    extra_outputs = [0]
    diag: dict[str, str] = {}
    executor = spinner = node = None
    ok = False
    try:
        with sigterm_as_interrupt():
            # No rclpy signal handlers in this process: Ctrl-C / SIGTERM must raise here (KeyboardInterrupt), so the
            # child is stopped and nothing is half-written, instead of silently shutting the context down.
            rclpy.init(context=context, domain_id=domain_id, signal_handler_options=SignalHandlerOptions.NO)
            node = rclpy.create_node("semcorr_bag_eval", context=context)
            pubs = {"color": node.create_publisher(Image, index.color_topic, qos_profile_sensor_data),
                    "depth": node.create_publisher(Image, index.depth_topic, qos_profile_sensor_data),
                    "info": node.create_publisher(CameraInfo, index.info_topic, qos_profile_sensor_data)}
            matches_topic = f"/{node_name}/matches"

            def on_matches(msg: Any) -> None:
                t = time.monotonic()
                try:
                    pred = FramePrediction.from_message(msg)
                except Exception as exc:  # noqa: BLE001 -- never kill the executor
                    log.warning("unreadable matches message: %s", exc)
                    return
                with lock:
                    sent = publish_times.get(pred.stamp_ns)
                    per_object = object_predictions.setdefault(pred.object_id, {}) if pred.object_id else None
                    seen = pred.stamp_ns in (predictions if per_object is None else per_object)
                    if sent is None or seen:
                        extra_outputs[0] += 1  # not one of ours (another source) or a duplicate
                        return
                    pred.latency_s = t - sent
                    if per_object is not None:
                        per_object[pred.stamp_ns] = pred
                    predictions.setdefault(pred.stamp_ns, pred)

            def on_diag(msg: Any) -> None:
                for st in msg.status:
                    if st.name == f"{base_name}{_DIAG_SUFFIX}":
                        with lock:
                            diag.clear()
                            diag.update({kv.key: kv.value for kv in st.values})

            sub = node.create_subscription(CorrespondenceArray, matches_topic, on_matches, QoSProfile(depth=100))
            node.create_subscription(DiagnosticArray, "/diagnostics", on_diag, QoSProfile(depth=10))
            executor = SingleThreadedExecutor(context=context)
            executor.add_node(node)
            spinner = threading.Thread(target=executor.spin, name="bag-eval-spin", daemon=True)
            spinner.start()

            # -- wait until ready
            t_wait = time.monotonic()
            where = (f"node log {child.log_path}" if child else
                     f"is correspond_node running as '{node_name}' on ROS_DOMAIN_ID="
                     f"{os.environ.get('ROS_DOMAIN_ID', '0')} with the same Fast DDS settings?")
            while True:
                with lock:
                    state = diag.get("state")
                    d = dict(diag)
                connected = all(p.get_subscription_count() > 0 for p in pubs.values()) and \
                    sub.get_publisher_count() > 0
                if state == "ready" and connected:
                    break
                if child is not None and not child.alive():
                    child.stop()
                    raise NodeError(f"correspond_node exited with code {child.exit_code} before it was ready; "
                                    f"its log ({child.log_path}):\n{child.log_tail()}")
                if state == "error":
                    raise NodeError(f"the node's model failed to load: {d.get('fatal_error')}"
                                    + (f"; log tail:\n{child.log_tail()}" if child else ""))
                if state == "no_reference" and (launch or time.monotonic() - t_wait > 5.0):
                    raise NodeError(f"the node has no active reference: {d.get('reference_error') or '?'}")
                if time.monotonic() - t_wait > ready_timeout:
                    what = f"state {state!r}" if state else "no /diagnostics from it"
                    missing = [r for r, p in pubs.items() if p.get_subscription_count() == 0]
                    raise NodeError(f"the node was not ready after {ready_timeout:.0f} s ({what}; inputs without "
                                    f"a subscriber: {missing or 'none'}; matches publisher seen: "
                                    f"{sub.get_publisher_count() > 0}); {where}"
                                    + (f"\n{child.log_tail()}" if child else ""))
                time.sleep(0.05)
            info["ready_after_s"] = round(time.monotonic() - t_start, 2)
            info["node_reference_id"] = d.get("reference_id")
            info["node_device"] = d.get("device")
            info["node_model"] = d.get("model")
            base = {k: d.get(k, "0") for k in ("frames_received", "frames_published", "frames_dropped",
                                               "frames_rejected", "frames_unpaired")}
            if on_ready is not None:
                on_ready()

            # -- replay
            bar = tqdm(total=index.frames, desc="replay", unit="frame", disable=not progress)
            t0_wall = time.monotonic()
            t0_bag = None
            sent_colour = 0
            # A bag with camera info only now and then (latched at the start): re-send the latest one with every
            # colour frame, so that one lost best-effort message cannot leave the node without intrinsics.
            resend_info = index.counts.get(index.info_topic, 0) < index.frames
            last_info: bytes | None = None
            info["camera_info_resent"] = resend_info
            try:
                for role, t_bag, raw in iter_raw(index):
                    if t0_bag is None:
                        t0_bag = t_bag
                    due = t0_wall + (t_bag - t0_bag) * 1e-9 / rate
                    delay = due - time.monotonic()
                    if delay > 0:
                        time.sleep(delay)
                    if child is not None and not child.alive():
                        raise NodeError(f"correspond_node died during the replay (code {child.proc.returncode}); "
                                        f"log tail:\n{child.log_tail()}")
                    if role == "info":
                        last_info = raw
                    elif role == "color" and resend_info and last_info is not None:
                        pubs["info"].publish(last_info)
                    if role == "color":
                        stamp = header_stamp_ns(raw)
                        with lock:
                            publish_times.setdefault(stamp, time.monotonic())
                        pubs["color"].publish(raw)
                        sent_colour += 1
                        bar.update(1)
                        if sent_colour % 5 == 0:
                            with lock:
                                bar.set_postfix(outputs=len(predictions), refresh=False)
                    else:
                        pubs[role].publish(raw)
                replay_s = time.monotonic() - t0_wall
                # -- grace: the output of the last frame, or give up after `grace` seconds
                last = index.color_stamps[-1] if index.color_stamps else None
                t_end = time.monotonic()
                while time.monotonic() - t_end < grace:
                    with lock:
                        if last in predictions:
                            break
                    time.sleep(0.02)
                time.sleep(min(0.3, grace))  # the newest diagnostics
            finally:
                bar.close()
            with lock:
                d = dict(diag)
                info["extra_outputs"] = extra_outputs[0]
            info["replay_s"] = round(replay_s, 3)
            info["input_rate_hz"] = round(sent_colour / replay_s, 2) if replay_s > 0 else None
            info["node_counters"] = {k: int(float(d.get(k, 0))) - int(float(base[k])) for k in base}
            info["node_diagnostics"] = d
            ok = True
    finally:
        if executor is not None:
            executor.shutdown(timeout_sec=2.0)
        if spinner is not None:
            spinner.join(timeout=5.0)
        if node is not None:
            with contextlib.suppress(Exception):
                node.destroy_node()
        context.try_shutdown()
        if child is not None:
            child.stop(stop_timeout)
            info.update({"exit_code": child.exit_code, "stop_s": round(child.stop_s or 0.0, 2),
                         "killed": child.killed})
        node_log = None
        if child is not None:
            try:
                node_log = child.log_path.read_text(errors="replace")
            except OSError:
                node_log = None
        if ok or child is None:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log.warning("the node's log and parameters file are kept in %s", work)
    with lock:
        return ReplayResult(predictions=dict(predictions), publish_times=dict(publish_times), info=info,
                            node_log=node_log,
                            object_predictions={k: dict(v) for k, v in object_predictions.items()})
