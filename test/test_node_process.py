"""correspond_node as a separate process (the installed launcher), the default model, real DDS.

- A 640x480 RGB-D stream at 30 Hz for 20 s with a known answer (lab/dev/measure_node_rate.py, which also
  serves as the measurement script): correct matches and 3D points, no backlog (latency bounded, not growing),
  bounded memory, drops reported in /diagnostics, then a clean SIGINT shutdown (exit code 0, no traceback).
- SIGTERM while frames are being processed: exit code 0, no traceback.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from _rgbd import Collector, KnownScene, RgbdPublisher, wait_until

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
LAUNCHER = Path(sys.prefix) / "lib" / "semcorr_ros" / "correspond_node"


def test_stream_at_30hz_then_sigint(tmp_path: Path, ros_env: dict[str, str]) -> None:
    out = tmp_path / "node_rate.json"
    proc = subprocess.run([sys.executable, str(REPO / "lab" / "dev" / "measure_node_rate.py"), "--duration", "20",
                           "--json", str(out)], env=ros_env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=420)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    r = json.loads(out.read_text())
    print("\nnode figures:", json.dumps({k: v for k, v in r.items() if k not in ("node_diagnostics", "command")},
                                         indent=1))
    # the stream went in, the node answered correctly
    assert r["stream_rate_hz"] > 25 and r["node_frames_received"] >= 0.8 * r["frames_sent"]
    assert r["matches_received"] >= 10
    assert r["pixel_error_median"] <= 6.0 and r["pixel_error_max"] <= 16.0
    assert r["error_3d_median_m"] <= 0.01
    # slower than the camera: frames dropped and reported, none rejected, no backlog
    assert r["node_frames_dropped"] > 0
    assert r["node_frames_rejected"] == 0, r["node_diagnostics"].get("last_rejection")
    proc_ms = r["processing_p50_ms"]
    assert r["latency_p50_ms"] <= proc_ms + 250, "frames wait in a queue"
    assert r["latency_p95_ms"] <= 4 * proc_ms + 500 and r["latency_max_ms"] < 5000
    assert r["latency_p50_last_third_ms"] <= 2 * r["latency_p50_first_third_ms"] + 150, "latency grows: backlog"
    assert r["rss_mib_max"] - r["rss_mib_after_warmup"] < 150, "memory grows"
    d = r["node_diagnostics"]
    assert d["state"] == "ready" and float(d["rate_hz"]) > 0 and float(d["latency_p95_ms"]) > 0
    # clean shutdown
    assert r["exit_code"] == 0 and not r["traceback"], f"see {r['node_log']}"
    assert r["shutdown_s"] < 10


@pytest.fixture
def term_node(tmp_path: Path, ros_env: dict[str, str]) -> Any:
    out, err = open(tmp_path / "stdout.txt", "w"), open(tmp_path / "stderr.txt", "w")
    cmd = [str(LAUNCHER), "--ros-args", "--params-file", str(REPO / "config" / "correspond.yaml"),
           "-r", "__node:=semcorr_term", "-p", "backbone:=[effnet-lite2]", "-p", "torch_threads:=1"]
    proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=ros_env, cwd=tmp_path)
    try:
        yield proc, tmp_path
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        out.close()
        err.close()


def test_sigterm_while_processing(term_node: Any, rclpy_context: Any) -> None:
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from semcorr_ros.msg import CorrespondenceArray

    proc, logs = term_node
    fixture = Node("term_fixture", context=rclpy_context)
    pub = RgbdPublisher(fixture)
    matches = Collector(fixture, CorrespondenceArray, "/semcorr_term/matches")
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(fixture)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    stop = threading.Event()
    scene = KnownScene(5, 5)

    def stream() -> None:
        while not stop.is_set():
            pub.publish(*scene.messages(pub.now()))
            time.sleep(0.05)

    streamer = threading.Thread(target=stream, daemon=True)
    streamer.start()
    try:
        assert wait_until(lambda: bool(matches.snapshot()) or proc.poll() is not None, 180.0), "no answer"
        assert proc.poll() is None, "node died"
        assert matches.snapshot()[-1].reference_id == "example_robot"
        time.sleep(0.3)  # mid-frame, most likely
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=20)
    finally:
        stop.set()
        streamer.join(2.0)
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=5.0)
        fixture.destroy_node()
    text = (logs / "stdout.txt").read_text() + (logs / "stderr.txt").read_text()
    assert code == 0, text[-3000:]
    assert "Traceback" not in text, text[-3000:]
    assert "SIGTERM: shutting down" in text


def test_bad_references_over_the_parameter_service_keep_the_process(term_node: Any, rclpy_context: Any) -> None:
    """The reported fault: ``ros2 param set`` of a reference with ``depth_scale: abc`` (or ``image: 5``) ended the
    process through rclpy's parameter service. Now refused with the field named; the process answers on."""
    import yaml
    from rcl_interfaces.msg import Parameter as ParameterMsg
    from rcl_interfaces.msg import ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from semcorr_ros.msg import CorrespondenceArray

    proc, logs = term_node
    example = REPO / "config"
    bad = {"depth_scale": {"image": str(example / "example_reference.png"), "depth_scale": "abc",
                           "depth": str(example / "example_reference_depth.png"), "keypoints": {"a": [1.0, 2.0]}},
           "'image'": {"image": 5, "keypoints": {"a": [1.0, 2.0]}},
           "'depth'": {"image": str(example / "example_reference.png"), "depth": True, "keypoints": {"a": [1, 2]}}}
    fixture = Node("param_fixture", context=rclpy_context)
    pub = RgbdPublisher(fixture)
    matches = Collector(fixture, CorrespondenceArray, "/semcorr_term/matches")
    client = fixture.create_client(SetParameters, "/semcorr_term/set_parameters")
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(fixture)
    spinner = threading.Thread(target=executor.spin, daemon=True)
    spinner.start()
    scene = KnownScene(5, 5)

    def answered(timeout: float) -> bool:
        before = len(matches.snapshot())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and proc.poll() is None:
            pub.publish(*scene.messages(pub.now()))
            if wait_until(lambda: len(matches.snapshot()) > before, 0.2):
                return True
        return False

    try:
        assert answered(180.0), "no answer before the test"
        assert client.wait_for_service(timeout_sec=10.0)
        for words, body in bad.items():
            path = logs / f"bad_{len(words)}.yaml"
            path.write_text(yaml.safe_dump(body))
            future = client.call_async(SetParameters.Request(parameters=[ParameterMsg(
                name="reference_file",
                value=ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(path)))]))
            assert wait_until(future.done, 20.0), "no answer from the parameter service"
            res = future.result().results[0]
            assert not res.successful and words in res.reason, res.reason
            assert proc.poll() is None, "node died"
            assert answered(5.0), f"no answer after the bad reference {words}"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
    finally:
        executor.shutdown(timeout_sec=2.0)
        spinner.join(timeout=5.0)
        fixture.destroy_node()


def test_unrecoverable_start_up_exits_with_code_1(tmp_path: Path, ros_env: dict[str, str]) -> None:
    """A model that cannot be built ends the process with code 1 and the reason (launch's respawn restarts it)."""
    cmd = [str(LAUNCHER), "--ros-args", "-r", "__node:=semcorr_fatal", "-p", "backbone:=[dinov2_vits14]",
           "-p", f"weights:=[dinov2_vits14={tmp_path / 'missing.pth'}]"]
    proc = subprocess.run(cmd, env=ros_env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 1, text[-3000:]
    assert "missing.pth" in text and "Traceback" not in text, text[-3000:]
