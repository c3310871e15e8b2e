"""The package is built and installed correctly, and DDS works on this machine.

* the tests import the installed ``semcorr_ros`` (with the generated messages), not the sources;
* the messages serialise and deserialise;
* the launchers run with the configured interpreter without an activated venv;
* images go through DDS in one process (reliable) and between two processes (best effort, the
  sensor-data QoS a camera driver uses), with the Fast DDS profile set by conftest.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import pytest

WIDTH, HEIGHT = 640, 480


def _sys_path_dirs() -> set[Path]:
    return {Path(entry or os.getcwd()).resolve() for entry in sys.path}


def test_installed_package_is_imported(repo_root: Path) -> None:
    import semcorr_ros
    import semcorr_ros.msg

    package_dir = Path(os.path.abspath(semcorr_ros.__file__)).parent
    assert package_dir != repo_root / "semcorr_ros", "the source folder shadows the installation"
    assert (package_dir / "msg").is_dir()
    assert repo_root.resolve() not in _sys_path_dirs()
    assert hasattr(semcorr_ros.msg, "Correspondence")
    assert hasattr(semcorr_ros.msg, "CorrespondenceArray")


def test_messages_round_trip() -> None:
    from geometry_msgs.msg import Point
    from rclpy.serialization import deserialize_message, serialize_message

    from semcorr_ros.msg import Correspondence, CorrespondenceArray

    msg = CorrespondenceArray()
    msg.header.frame_id = "camera_color_optical_frame"
    msg.header.stamp.sec = 12
    msg.header.stamp.nanosec = 345
    msg.reference_id = "mug.png"
    msg.correspondences = [
        Correspondence(
            name="handle_top", index=0, ref_x=10.5, ref_y=20.25, x=100.0, y=200.5, score=0.75,
            valid=True, point=Point(x=0.1, y=-0.2, z=0.9), has_point=True,
        ),
        Correspondence(name="rim_left", index=1, valid=False),
    ]
    msg.pose_valid = True
    msg.pose.position.z = 0.5
    msg.pose.orientation.w = 1.0
    msg.pose_inliers = 2
    msg.pose_rmse = 0.003
    msg.processing_time = 0.02
    msg.latency = 0.05

    data = serialize_message(msg)
    assert isinstance(data, bytes) and len(data) > 0
    back = deserialize_message(data, CorrespondenceArray)
    assert serialize_message(back) == data  # float32 fields come back rounded, so compare bytes
    assert back.header == msg.header and back.reference_id == "mug.png"
    assert back.pose == msg.pose and back.pose_inliers == 2
    assert back.pose_rmse == pytest.approx(0.003) and back.latency == pytest.approx(0.05)
    assert len(back.correspondences) == 2
    first = back.correspondences[0]
    assert (first.name, first.index, first.valid, first.has_point) == ("handle_top", 0, True, True)
    assert (first.ref_x, first.ref_y, first.x, first.y, first.score) == (10.5, 20.25, 100.0, 200.5, 0.75)
    assert back.correspondences[0].point.z == pytest.approx(0.9)
    assert back.correspondences[1].valid is False
    assert back.correspondences[1].has_point is False


def _launcher(prefix: Path, relative: str) -> Path:
    path = prefix / relative
    if not path.exists():
        pytest.skip(f"{path} not installed here (not a venv install)")
    assert os.access(path, os.X_OK), f"{path} is not executable"
    return path


def _bare_env() -> dict[str, str]:
    """The environment of a fresh shell: no activated venv, no ROS bootstrap done yet."""
    env = dict(os.environ)
    for name in ("_ROS_WHEELS_BOOTSTRAP_COMPLETE", "LD_LIBRARY_PATH", "VIRTUAL_ENV", "PYTHONPATH"):
        env.pop(name, None)
    return env


def test_launchers_use_the_configured_interpreter() -> None:
    prefix = Path(sys.prefix)
    semcorr = _launcher(prefix, "bin/semcorr")
    node = _launcher(prefix, "lib/semcorr_ros/correspond_node")
    _launcher(prefix, "bin/correspond_node")
    for launcher in (semcorr, node):
        shebang = launcher.read_text().splitlines()[0]
        assert shebang.startswith("#!/"), shebang
        interpreter = shebang[2:].strip()
        # The launcher's interpreter imports rclpy and the installed messages on its own
        # (the ROS wheels' bootstrap sets LD_LIBRARY_PATH), from any directory.
        result = subprocess.run(
            [interpreter, "-c", "import rclpy, semcorr_ros.msg, semcorr_ros; print(semcorr_ros.__file__)"],
            cwd="/", env=_bare_env(), capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "site-packages" in result.stdout or "dist-packages" in result.stdout


def test_semcorr_help_through_launcher() -> None:
    import importlib.util

    if importlib.util.find_spec("semcorr_ros.cli") is None:
        pytest.skip("semcorr_ros.cli not written yet")
    semcorr = _launcher(Path(sys.prefix), "bin/semcorr")
    result = subprocess.run(
        [str(semcorr), "--help"], cwd="/", env=_bare_env(), capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "usage" in result.stdout.lower()


def test_share_files_installed() -> None:
    from ament_index_python.packages import get_package_share_directory

    share = Path(get_package_share_directory("semcorr_ros"))
    assert (share / "package.xml").is_file()
    assert (share / "msg" / "CorrespondenceArray.msg").is_file()
    assert (share / "launch").is_dir()
    assert (share / "config").is_dir()


# --- DDS -------------------------------------------------------------------------------------------


def _topic() -> str:
    return "semcorr_test_" + uuid.uuid4().hex[:12]


def _image(index: int):
    from sensor_msgs.msg import Image

    msg = Image()
    msg.header.frame_id = str(index)
    msg.height, msg.width = HEIGHT, WIDTH
    msg.encoding = "rgb8"
    msg.step = WIDTH * 3
    msg.data = bytes([index % 256]) * (WIDTH * HEIGHT * 3)
    return msg


@pytest.mark.ros
def test_image_reliable_in_one_process(rclpy_context, spin_until) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    node = rclpy.create_node("semcorr_test_inproc", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    try:
        topic = _topic()
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        received: list[Image] = []
        node.create_subscription(Image, topic, received.append, qos)
        publisher = node.create_publisher(Image, topic, qos)
        assert spin_until(executor, lambda: publisher.get_subscription_count() >= 1, 5.0)
        for i in range(5):
            publisher.publish(_image(i))
        assert spin_until(executor, lambda: len(received) >= 5, 10.0), f"got {len(received)} of 5"
        assert [m.header.frame_id for m in received] == ["0", "1", "2", "3", "4"]
        last = received[-1]
        assert (last.width, last.height, last.encoding, last.step) == (WIDTH, HEIGHT, "rgb8", WIDTH * 3)
        assert len(last.data) == WIDTH * HEIGHT * 3 and bytes(last.data[:3]) == b"\x04\x04\x04"
    finally:
        executor.shutdown()
        node.destroy_node()


_PUBLISHER = textwrap.dedent(
    """
    import sys, time
    import rclpy
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    topic, count = sys.argv[1], int(sys.argv[2])
    rclpy.init()
    node = rclpy.create_node("semcorr_test_publisher")
    publisher = node.create_publisher(Image, topic, qos_profile_sensor_data)
    deadline = time.monotonic() + 15.0
    while publisher.get_subscription_count() < 1:
        if time.monotonic() > deadline:
            sys.exit("no subscriber matched")
        time.sleep(0.02)
    time.sleep(0.2)  # let the subscriber also match this publisher
    msg = Image(height=480, width=640, encoding="rgb8", step=640 * 3)
    for i in range(count):
        msg.header.frame_id = str(i)
        msg.header.stamp = node.get_clock().now().to_msg()
        msg.data = bytes([i % 256]) * (640 * 480 * 3)
        publisher.publish(msg)
        time.sleep(1.0 / 30.0)
    time.sleep(0.5)
    node.destroy_node()
    rclpy.shutdown()
    """
)


@pytest.mark.ros
def test_image_best_effort_across_processes(rclpy_context, spin_until, ros_env, tmp_path) -> None:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    count = 30
    topic = _topic()
    node = rclpy.create_node("semcorr_test_subscriber", context=rclpy_context)
    executor = SingleThreadedExecutor(context=rclpy_context)
    executor.add_node(node)
    received: dict[str, Image] = {}
    node.create_subscription(
        Image, topic, lambda m: received.setdefault(m.header.frame_id, m), qos_profile_sensor_data
    )
    child = subprocess.Popen(
        [sys.executable, "-c", _PUBLISHER, topic, str(count)],
        cwd=tmp_path, env=ros_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        spin_until(executor, lambda: child.poll() is not None or len(received) >= count, 30.0)
        spin_until(executor, lambda: len(received) >= count, 0.5)
        output = child.communicate(timeout=10)[0]
        assert child.returncode == 0, output
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        executor.shutdown()
        node.destroy_node()
    assert len(received) >= int(0.9 * count), f"only {len(received)} of {count} images arrived"
    frame = received[max(received, key=int)]
    assert (frame.width, frame.height, frame.encoding) == (WIDTH, HEIGHT, "rgb8")
    assert len(frame.data) == WIDTH * HEIGHT * 3
    assert bytes(frame.data[:1]) == bytes([int(frame.header.frame_id) % 256])
