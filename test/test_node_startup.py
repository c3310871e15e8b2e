"""correspond_node start-up and run-time states over real DDS, with a small toy engine (fast, no weights).

Covers: starting without a usable reference, missing camera info, run-time changes that re-encode the
reference or rebuild the synchroniser, and start-up parameters that are rejected.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest

from _rgbd import EXAMPLE_YAML, Collector, KnownScene, RgbdPublisher, diag_values, wait_until

pytestmark = pytest.mark.ros

NS = "/toy"


def _toy_engine(config: Any) -> Any:
    from semcorr_ros.engine import CorrespondenceEngine

    from _toy import ToySource

    return CorrespondenceEngine(config, sources=[ToySource(input_size=96)])


@pytest.fixture
def toy(rclpy_context: Any, tmp_path: Path) -> Any:
    """A node in namespace /toy whose reference_file does not exist, plus a fixture node; spun in a thread."""
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    from semcorr_ros.msg import CorrespondenceArray
    from semcorr_ros.ros.node import CorrespondNode

    node = CorrespondNode(context=rclpy_context, namespace=NS, engine_factory=_toy_engine, overrides={
        "reference_file": str(tmp_path / "missing.yaml"), "diagnostics_period": 0.2, "kbc": "off"})
    fixture = Node("toy_fixture", context=rclpy_context)
    ns = type("Toy", (), {})()
    ns.node, ns.tmp = node, tmp_path
    ns.pub = RgbdPublisher(fixture, NS)
    ns.matches = Collector(fixture, CorrespondenceArray, f"{NS}/semcorr/matches")
    ns.diag = Collector(fixture, DiagnosticArray, "/diagnostics", depth=100)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    executor.add_node(fixture)
    thread = threading.Thread(target=executor.spin, daemon=True)
    thread.start()
    try:
        assert node.wait_ready(60.0)
        assert wait_until(ns.pub.connected, 10.0)
        yield ns
    finally:
        executor.shutdown(timeout_sec=2.0)
        thread.join(timeout=5.0)
        node.destroy_node()
        fixture.destroy_node()


def _diag(toy: Any) -> dict[str, str]:
    own = [m for m in toy.diag.snapshot() if m.status and m.status[0].name.startswith("semcorr:")]
    return diag_values(own[-1]) if own else {}


def _send_until(toy: Any, make: Any, done: Any, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        toy.pub.publish(*make(toy.pub.now()))
        if wait_until(done, 0.25):
            return True
    return False


def test_starts_without_reference_then_accepts_one(toy: Any) -> None:
    from diagnostic_msgs.msg import DiagnosticStatus
    from rclpy.parameter import Parameter

    scene = KnownScene(4, 4)
    # no usable reference: state no_reference (ERROR), frames rejected with the reason, node alive
    assert _send_until(toy, scene.messages, lambda: int(_diag(toy).get("frames_rejected", 0)) > 0)
    d = _diag(toy)
    assert d["state"] == "no_reference" and "not found" in d["reference_error"]
    assert "no active reference" in d["last_rejection"] and "missing.yaml" in d["last_rejection"]
    own = [m for m in toy.diag.snapshot() if m.status and m.status[0].name.startswith("semcorr:")]
    assert own[-1].status[0].level == DiagnosticStatus.ERROR
    assert not toy.matches.snapshot()

    broken = toy.tmp / "broken.yaml"
    broken.write_text("keypoints: {a: [1, 2, 3]}\nimage: x.png\n")
    res = toy.node.set_parameters([Parameter("reference_file", value=str(broken))])[0]
    assert not res.successful and "[x, y]" in res.reason

    assert toy.node.set_parameters([Parameter("reference_file", value=str(EXAMPLE_YAML))])[0].successful
    assert wait_until(lambda: toy.node.state() == "ready", 30.0)
    got = _send_until(toy, scene.messages, lambda: bool(toy.matches.snapshot()))
    assert got, "no answer after a good reference was set"
    assert toy.matches.snapshot()[-1].reference_id == "example_robot"


def test_missing_camera_info_is_rejected_until_it_arrives(toy: Any) -> None:
    from rclpy.parameter import Parameter

    assert toy.node.set_parameters([Parameter("reference_file", value=str(EXAMPLE_YAML))])[0].successful
    assert wait_until(lambda: toy.node.state() == "ready", 30.0)
    scene = KnownScene(0, 0)

    def no_info(t: float) -> tuple:
        c, d, _ = scene.messages(t)
        return c, d, None

    assert _send_until(toy, no_info, lambda: "CameraInfo" in _diag(toy).get("last_rejection", ""))
    assert "/toy/color/camera_info" in _diag(toy)["last_rejection"]
    assert not toy.matches.snapshot()
    assert _send_until(toy, scene.messages, lambda: bool(toy.matches.snapshot()))


def test_run_time_changes_reencode_and_resync(toy: Any) -> None:
    from rclpy.parameter import Parameter

    node = toy.node
    assert node.set_parameters([Parameter("reference_file", value=str(EXAMPLE_YAML))])[0].successful
    assert wait_until(lambda: node.state() == "ready", 30.0)
    ref_before = node.engine.reference
    assert node.set_parameters([Parameter("kbc", value="on"), Parameter("kbc_margin", value=0.5)])[0].successful
    assert wait_until(lambda: node.engine.reference is not ref_before, 30.0), "reference not re-encoded"
    assert node.engine.config.kbc == "on" and node.engine.config.kbc_margin == 0.5
    assert node.engine.reference.crop is not None
    assert node.set_parameters([Parameter("sync_slop", value=0.05),
                                Parameter("sync_buffer_size", value=2)])[0].successful
    scene = KnownScene(2, 2)
    assert _send_until(toy, scene.messages, lambda: bool(toy.matches.snapshot()))
    assert node.sync_stats()["consumed"] >= 1
    res = node.set_parameters([Parameter("sync_buffer_size", value=0)])[0]
    assert not res.successful


def test_bad_start_up_parameters_raise(rclpy_context: Any) -> None:
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException

    from semcorr_ros.errors import ConfigError
    from semcorr_ros.ros.node import CorrespondNode

    with pytest.raises(ConfigError, match="kbc"):
        CorrespondNode(context=rclpy_context, start=False, overrides={"kbc": "sometimes"})
    with pytest.raises(InvalidParameterValueException):
        CorrespondNode(context=rclpy_context, start=False, overrides={"score_threshold": 3.0})
    with pytest.raises(InvalidParameterTypeException):
        CorrespondNode(context=rclpy_context, start=False, overrides={"score_threshold": "high"})
    with pytest.raises(ConfigError, match="input_sizes"):
        CorrespondNode(context=rclpy_context, start=False, overrides={"input_sizes": [320]})


def test_model_failure_is_reported(rclpy_context: Any) -> None:
    from semcorr_ros.errors import WeightsError
    from semcorr_ros.ros.node import CorrespondNode

    def broken(config: Any) -> Any:
        raise WeightsError("weights file /nope.pth not found")

    node = CorrespondNode(context=rclpy_context, engine_factory=broken)
    try:
        with pytest.raises(WeightsError):
            node.wait_ready(10.0)
        assert node.state() == "error" and isinstance(node.fatal_error, WeightsError)
    finally:
        node.destroy_node()
