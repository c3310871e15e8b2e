"""launch/correspond.launch.py run for real: ``launch.LaunchService`` as ``ros2 launch`` runs it, real DDS.

The launch system comes from ``../shared/ros2-launch-kit`` (installed by tools/setup.sh); without it these
tests skip. Each launch runs in a driver process (test/_launch_driver.py, which reports the pids of the
processes it starts); this process watches the ROS graph with its own rclpy context.

- A user's params file and camera namespace (one launch shared by the first tests, ended by the last one):
  the node comes up with its inputs under the camera namespace and its outputs under its name; the params
  file's reference_file and publish_debug_image stay (no launch argument overrides them); a frame published on
  the remapped topics is answered correctly against that reference; SIGINT to the process group (Ctrl-C)
  ends everything cleanly.
- The package's params file with ``namespace``, ``use_sim_time``, ``reference_file`` and ``respawn``: the
  node lives in the namespace, the launch argument's reference wins over the params file's, and a killed node
  comes back after ``respawn_delay``, but not when the launch shuts down (SIGINT to the launch process alone).
- A bad boolean or duration argument fails the launch with a message naming it, before any process starts.
"""

from __future__ import annotations

import os
import signal
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from _launch_run import LaunchRun, ProcessEvent, pid_alive, require_launch_kit
from _rgbd import EXAMPLE_YAML, Collector, KnownScene, RgbdPublisher, wait_until

require_launch_kit()

pytestmark = pytest.mark.ros

CAMERA_INPUTS = ("color/image_raw", "aligned_depth_to_color/image_raw", "color/camera_info")
OUTPUTS = ("matches", "matches_3d", "pose", "markers", "debug_image")
START_TIMEOUT_S = 90.0  # node process up and visible in the graph (its parameters are declared before the model)
MODEL_TIMEOUT_S = 180.0  # first answer: the default model loads in its inference thread (~5-60 s on a CPU)
STOP_TIMEOUT_S = 30.0


class Probe:
    """A node of this test process that looks at the graph, reads parameters and talks to the launched node."""

    def __init__(self) -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node

        self.context = Context()
        rclpy.init(context=self.context)
        self.node = Node("launch_probe", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._spinner = threading.Thread(target=self.executor.spin, daemon=True)
        self._spinner.start()
        self._clients: dict[str, Any] = {}

    def close(self) -> None:
        """Stop spinning, destroy the node, shut the context down."""
        self.executor.shutdown(timeout_sec=2.0)
        self._spinner.join(timeout=5.0)
        self.node.destroy_node()
        self.context.try_shutdown()

    def has_node(self, name: str, namespace: str) -> bool:
        """Whether ``namespace``/``name`` is in the graph now."""
        return (name, namespace) in self.node.get_node_names_and_namespaces()

    def wait_node(self, name: str, namespace: str, run: LaunchRun) -> None:
        """Wait (``START_TIMEOUT_S``) until the node ``namespace``/``name`` is in the graph."""
        ok = wait_until(lambda: self.has_node(name, namespace) or run.proc.poll() is not None, START_TIMEOUT_S)
        assert ok and self.has_node(name, namespace), (
            f"{namespace}/{name} not in the graph: {self.node.get_node_names_and_namespaces()}\n{run.tail()}")

    def wait_topics(self, kind: str, name: str, namespace: str, expected: set[str]) -> set[str]:
        """The node's subscription (``kind="sub"``) or publisher topics once ``expected`` are all among them."""
        by_node = (self.node.get_subscriber_names_and_types_by_node if kind == "sub"
                   else self.node.get_publisher_names_and_types_by_node)

        def topics() -> set[str]:
            return {topic for topic, _types in by_node(name, namespace)}

        wait_until(lambda: expected <= topics(), 20.0)
        return topics()

    def parameters(self, node_fqn: str, names: list[str], timeout: float = 30.0) -> dict[str, Any]:
        """Parameter values of the remote node ``node_fqn`` (its ``get_parameters`` service).

        A request sent before the service's server is matched is lost (a respawned node's server replaces
        the dead one's, which the graph may still list), so it is repeated every 2 s until ``timeout``.
        """
        from rclpy.parameter import parameter_value_to_python
        from rclpy.parameter_client import AsyncParameterClient

        client = self._clients.setdefault(node_fqn, AsyncParameterClient(self.node, node_fqn))
        deadline = time.monotonic() + timeout
        assert client.wait_for_services(timeout_sec=timeout), f"no parameter services of {node_fqn}"
        while True:
            future = client.get_parameters(names)
            if wait_until(future.done, min(2.0, max(deadline - time.monotonic(), 0.0))):
                return {n: parameter_value_to_python(v) for n, v in zip(names, future.result().values)}
            future.cancel()
            assert time.monotonic() < deadline, f"{node_fqn} did not answer get_parameters"


def write_reference(folder: Path, reference_id: str) -> Path:
    """A copy of the example reference with another ``reference_id`` (its images referenced by absolute path)."""
    doc = yaml.safe_load(EXAMPLE_YAML.read_text())
    doc["reference_id"] = reference_id
    for key in ("image", "depth"):
        doc[key] = str(EXAMPLE_YAML.parent / doc[key])
    path = folder / f"{reference_id}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def write_params(path: Path, parameters: dict[str, Any]) -> Path:
    """A user's params file: ``/**: ros__parameters: parameters``."""
    path.write_text(yaml.safe_dump({"/**": {"ros__parameters": parameters}}))
    return path


def node_pids(run: LaunchRun) -> list[int]:
    """The pids of the node processes the launch started so far."""
    return [e.pid for e in run.events()[0] if e.name.startswith("correspond_node")]


def assert_clean_stop(run: LaunchRun, group: bool) -> list[ProcessEvent]:
    """SIGINT (see :meth:`LaunchRun.interrupt`) ends the launch in time with exit code 0; the node exited 0 and
    every node process is gone. With ``group`` (Ctrl-C), the node stopped on the SIGINT itself.

    Returns:
        The process starts reported during the whole run.
    """
    code = run.interrupt(group, STOP_TIMEOUT_S)
    text = run.output()
    assert code == 0, text[-4000:]
    starts, exits = run.events()
    last = starts[-1]
    assert [e.returncode for e in exits if e.pid == last.pid] == [0], text[-4000:]
    if group:  # not on the launch's escalation to SIGTERM after 5 s
        assert "escalating to 'SIGTERM'" not in text, text[-4000:]
    assert not any(pid_alive(e.pid) for e in starts), "a node process outlived the launch"
    assert "Traceback" not in text, text[-4000:]
    return starts


@pytest.fixture(scope="module")
def probe() -> Iterator[Probe]:
    p = Probe()
    try:
        yield p
    finally:
        p.close()


# --- a user's params file, camera namespace /cam (one launch for the tests up to the SIGINT one) ------------


@pytest.fixture(scope="module")
def user_setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("launch_user")
    reference = write_reference(folder, "user_params_ref")
    params = write_params(folder / "my_params.yaml", {"reference_file": str(reference),
                                                      "publish_debug_image": False})
    return {"folder": folder, "reference": reference, "params": params}


@pytest.fixture(scope="module")
def user_run(user_setup: dict[str, Path], probe: Probe) -> Iterator[LaunchRun]:
    args = {"camera_namespace": "/cam", "params_file": str(user_setup["params"]), "device": "cpu"}
    run = LaunchRun(args, user_setup["folder"] / "launch.log", dict(os.environ))
    try:
        probe.wait_node("semcorr", "/", run)
        yield run
    finally:
        run.close()


def running(run: LaunchRun) -> LaunchRun:
    """``run``, asserted still running (the shared launch ends in the SIGINT test, the last one using it)."""
    assert run.proc.poll() is None, f"the launch is not running (exit code {run.proc.returncode}):\n{run.tail()}"
    return run


@pytest.mark.slow
def test_node_up_with_inputs_under_the_camera_namespace(user_run: LaunchRun, probe: Probe) -> None:
    running(user_run)
    assert len(node_pids(user_run)) == 1
    expected = {f"/cam/{t}" for t in CAMERA_INPUTS}
    subs = probe.wait_topics("sub", "semcorr", "/", expected)
    assert expected <= subs, subs
    assert not {f"/{t}" for t in CAMERA_INPUTS} & subs, f"inputs not remapped: {subs}"
    outputs = {f"/semcorr/{t}" for t in OUTPUTS} | {"/diagnostics"}
    pubs = probe.wait_topics("pub", "semcorr", "/", outputs)
    assert outputs <= pubs, pubs


@pytest.mark.slow
def test_user_params_file_wins_when_no_argument_is_given(user_run: LaunchRun, user_setup: dict[str, Path],
                                                         probe: Probe) -> None:
    running(user_run)
    values = probe.parameters("/semcorr", ["reference_file", "publish_debug_image", "device", "use_sim_time"])
    assert values == {"reference_file": str(user_setup["reference"]), "publish_debug_image": False,
                      "device": "cpu", "use_sim_time": False}


@pytest.mark.slow
def test_frame_on_the_remapped_topics_is_answered(user_run: LaunchRun, probe: Probe) -> None:
    from semcorr_ros.msg import CorrespondenceArray

    running(user_run)
    publisher = RgbdPublisher(probe.node, prefix="/cam")
    matches = Collector(probe.node, CorrespondenceArray, "/semcorr/matches")
    assert wait_until(publisher.connected, 20.0), "the node did not subscribe to /cam/..."
    scene = KnownScene(6, -4)
    deadline = time.monotonic() + MODEL_TIMEOUT_S
    answer = None
    while answer is None and time.monotonic() < deadline:  # a frame every 0.2 s (the model may still load)
        publisher.publish(*scene.messages(publisher.now()))
        answer = matches.wait_for(lambda m: True, 0.2)
    assert answer is not None, f"no answer on /semcorr/matches:\n{user_run.tail()}"
    assert answer.reference_id == "user_params_ref"
    assert len(answer.correspondences) == len(scene.expected_xy)
    valid = [c for c in answer.correspondences if c.valid]
    assert len(valid) >= 8, [(c.name, c.score) for c in answer.correspondences]
    errors = [float(((c.x - scene.expected_xy[c.index][0]) ** 2 + (c.y - scene.expected_xy[c.index][1]) ** 2)
                    ** 0.5) for c in valid]
    assert statistics.median(errors) <= 6.0 and max(errors) <= 16.0, errors


@pytest.mark.slow
def test_sigint_stops_the_launch_cleanly(user_run: LaunchRun) -> None:
    starts = assert_clean_stop(running(user_run), group=True)
    assert len(starts) == 1


# --- the package's params file with namespace, use_sim_time, reference_file, respawn ------------------------


@pytest.mark.slow
def test_namespace_sim_time_reference_argument_and_respawn(tmp_path: Path, probe: Probe) -> None:
    reference = write_reference(tmp_path, "launch_argument_ref")
    args = {"namespace": "/robot1", "use_sim_time": "true", "reference_file": str(reference),
            "respawn": "true", "respawn_delay": "0.5"}
    run = LaunchRun(args, tmp_path / "launch.log", dict(os.environ))
    try:
        first = run.wait_started(1, START_TIMEOUT_S)
        probe.wait_node("semcorr", "/robot1", run)
        assert not probe.has_node("semcorr", "/")
        pubs = probe.wait_topics("pub", "semcorr", "/robot1", {"/robot1/semcorr/matches"})
        assert "/robot1/semcorr/matches" in pubs, pubs
        subs = probe.wait_topics("sub", "semcorr", "/robot1", {"/camera/camera/color/image_raw"})
        assert "/camera/camera/color/image_raw" in subs, subs  # the default camera namespace
        names = ["use_sim_time", "reference_file", "publish_debug_image"]
        expected = {"use_sim_time": True, "reference_file": str(reference), "publish_debug_image": True}
        assert probe.parameters("/robot1/semcorr", names) == expected

        os.kill(first.pid, signal.SIGKILL)
        died = run.wait_exited(first.pid, 10.0)
        second = run.wait_started(2, 30.0)
        assert second.pid != first.pid and pid_alive(second.pid)
        assert 0.45 <= second.time - died.time < 1.9, "respawn_delay:=0.5 not applied"
        # the killed process cannot answer: the parameters come from the respawned node
        assert probe.parameters("/robot1/semcorr", names, timeout=START_TIMEOUT_S) == expected

        starts = assert_clean_stop(run, group=False)  # as `kill -INT <launch pid>` does
        assert [e.pid for e in starts] == [first.pid, second.pid], "respawned while shutting down"
    finally:
        run.close()


# --- bad arguments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("argument", "value", "message"), [
    ("debug_image", "maybe", "launch argument debug_image:='maybe' is not a boolean"),
    ("respawn_delay", "-1", "launch argument respawn_delay:='-1' is not a duration"),
])
def test_bad_argument_fails_the_launch(tmp_path: Path, argument: str, value: str, message: str) -> None:
    run = LaunchRun({argument: value}, tmp_path / "launch.log", dict(os.environ))
    try:
        code = run.proc.wait(timeout=60.0)
        text = run.output()
        assert code != 0, text
        assert message in text, text
        assert run.events() == ([], []), "a process was started"
    finally:
        run.close()
