"""correspond_node in-process over real DDS, with the embedded default model (one node for the whole module).

A fixture node publishes RGB-D frames with a known answer (test/_rgbd.py: the example reference shifted by a
few pixels at a known depth) and collects every output. Covers correctness of 2D/3D/pose outputs, markers,
point cloud, debug image, the rosbag round trip of CorrespondenceArray, run-time parameters (validation,
reference reload) and robustness against bad input.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from _rgbd import EXAMPLE_YAML, FRAME_ID, Collector, KnownScene, RgbdPublisher, diag_values, stamp_of, wait_until

pytestmark = pytest.mark.ros

PIXEL_TOL = 14.0      # px: the default model on the synthetic robot is within ~10 px
POINT_TOL = 0.02      # m, for points lifted at the true pixel vs the matched one (0.8 m away, fx = 600)
NODE = "/semcorr"


class Harness:
    def __init__(self, rclpy_mod: Any) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from geometry_msgs.msg import PoseStamped
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.node import Node
        from sensor_msgs.msg import Image, PointCloud2
        from visualization_msgs.msg import MarkerArray

        from semcorr_ros.msg import CorrespondenceArray, ObjectsArray
        from semcorr_ros.ros.node import CorrespondNode

        self.ctx = Context()
        rclpy_mod.init(context=self.ctx)
        self.node = CorrespondNode(context=self.ctx, overrides={
            "reference_file": str(EXAMPLE_YAML), "diagnostics_period": 0.2, "sync_buffer_size": 3,
            "torch_threads": 1})  # no OpenMP spin-waiting against the test process and other jobs
        self.fixture = Node("fixture", context=self.ctx)
        self.pub = RgbdPublisher(self.fixture)
        self.matches = Collector(self.fixture, CorrespondenceArray, f"{NODE}/matches")
        self.objects = Collector(self.fixture, ObjectsArray, f"{NODE}/objects")
        self.cloud = Collector(self.fixture, PointCloud2, f"{NODE}/matches_3d")
        self.pose = Collector(self.fixture, PoseStamped, f"{NODE}/pose")
        self.markers = Collector(self.fixture, MarkerArray, f"{NODE}/markers")
        self.debug = Collector(self.fixture, Image, f"{NODE}/debug_image", depth=5)
        self.diag = Collector(self.fixture, DiagnosticArray, "/diagnostics", depth=200)
        self.executor = SingleThreadedExecutor(context=self.ctx)
        self.executor.add_node(self.node)
        self.executor.add_node(self.fixture)
        import threading

        self.thread = threading.Thread(target=self.executor.spin, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.executor.shutdown(timeout_sec=2.0)
        self.thread.join(timeout=5.0)
        self.node.destroy_node()
        self.fixture.destroy_node()
        self.ctx.try_shutdown()

    # -- helpers
    def send_until_answered(self, scene: KnownScene, timeout: float = 60.0, period: float = 0.3,
                            **encodings: str) -> Any:
        """Publish fresh frames of ``scene`` every ``period`` s until a ~/matches message answers one of them."""
        sent: set[tuple[int, int]] = set()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            color, depth, info = scene.messages(self.pub.now(), **encodings)
            sent.add((color.header.stamp.sec, color.header.stamp.nanosec))
            self.pub.publish(color, depth, info)
            got = self.matches.wait_for(lambda m: (m.header.stamp.sec, m.header.stamp.nanosec) in sent, period)
            if got is not None:
                return got
        raise AssertionError(f"no ~/matches answer within {timeout} s")

    def latest_diag(self) -> dict[str, str]:
        own = [m for m in self.diag.snapshot() if m.status and m.status[0].name.startswith("semcorr:")]
        return diag_values(own[-1]) if own else {}

    def rejected(self) -> int:
        return int(self.latest_diag().get("frames_rejected", 0))

    def send_until_rejected(self, make: Any, timeout: float = 30.0, period: float = 0.25) -> dict[str, str]:
        """Publish ``make(stamp) -> (color, depth, info)`` until the diagnostics count one more rejected frame."""
        before = self.rejected()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pub.publish(*make(self.pub.now()))
            if wait_until(lambda: self.rejected() > before, period):
                return self.latest_diag()
        raise AssertionError(f"frame not counted as rejected within {timeout} s (diagnostics {self.latest_diag()})")


@pytest.fixture(scope="module")
def h() -> Any:
    import rclpy

    harness = Harness(rclpy)
    try:
        assert harness.node.wait_ready(240.0), "the default model did not load"
        assert wait_until(harness.pub.connected, 20.0), "fixture publishers not matched with the node"
        yield harness
    finally:
        harness.close()


@pytest.fixture(scope="module")
def answered(h: Harness) -> tuple[KnownScene, Any]:
    scene = KnownScene(24, 16)
    return scene, h.send_until_answered(scene)


def test_matches_known_shift(answered: tuple[KnownScene, Any]) -> None:
    scene, msg = answered
    assert msg.header.frame_id == FRAME_ID
    assert msg.reference_id == "example_robot"
    assert [c.name for c in msg.correspondences] == scene.spec.names
    assert [c.index for c in msg.correspondences] == list(range(len(scene.spec.names)))
    ref = np.array([[c.ref_x, c.ref_y] for c in msg.correspondences])
    np.testing.assert_allclose(ref, scene.spec.keypoints, atol=1e-3)
    assert all(c.valid and c.has_point for c in msg.correspondences)
    xy = np.array([[c.x, c.y] for c in msg.correspondences])
    err = np.linalg.norm(xy - scene.expected_xy, axis=1)
    assert err.max() <= PIXEL_TOL, f"pixel errors {err.round(1)}"
    pts = np.array([[c.point.x, c.point.y, c.point.z] for c in msg.correspondences])
    np.testing.assert_allclose(pts[:, 2], 0.8, atol=0.01)  # the object plane
    assert np.abs(pts - scene.expected_points).max() <= POINT_TOL
    # each point is exactly the back-projection of its own pixel at its depth
    K = scene.K
    np.testing.assert_allclose(pts[:, 0], (xy[:, 0] - K[0, 2]) / K[0, 0] * pts[:, 2], atol=1e-4)
    np.testing.assert_allclose(pts[:, 1], (xy[:, 1] - K[1, 2]) / K[1, 1] * pts[:, 2], atol=1e-4)
    assert all(0.0 <= c.score <= 1.0 for c in msg.correspondences)
    assert 0.0 < msg.processing_time <= msg.latency < 30.0


def test_pose_is_the_known_translation(h: Harness, answered: tuple[KnownScene, Any]) -> None:
    scene, msg = answered
    assert msg.pose_valid and msg.pose_inliers >= 4 and msg.pose_rmse < 0.01
    t = np.array([msg.pose.position.x, msg.pose.position.y, msg.pose.position.z])
    np.testing.assert_allclose(t, scene.expected_t, atol=0.01)
    q = msg.pose.orientation
    assert abs(q.w) > 0.995  # rotation within ~11 degrees of identity
    pose = h.pose.wait_for(lambda m: stamp_of(m) == stamp_of(msg), 5.0)
    assert pose is not None and pose.header.frame_id == FRAME_ID
    assert pose.pose == msg.pose


def test_cloud_and_markers(h: Harness, answered: tuple[KnownScene, Any]) -> None:
    from visualization_msgs.msg import Marker

    from semcorr_ros.ros.clouds import cloud_to_points

    _, msg = answered
    cloud = h.cloud.wait_for(lambda m: stamp_of(m) == stamp_of(msg), 5.0)
    assert cloud is not None and cloud.header.frame_id == FRAME_ID
    points, scores = cloud_to_points(cloud)
    with_point = [c for c in msg.correspondences if c.has_point]
    assert len(points) == len(with_point)
    np.testing.assert_allclose(points, [[c.point.x, c.point.y, c.point.z] for c in with_point], atol=1e-6)
    np.testing.assert_allclose(scores, [c.score for c in with_point], atol=1e-6)
    marks = h.markers.wait_for(lambda m: m.markers and stamp_of(m.markers[-1]) == stamp_of(msg), 5.0)
    assert marks is not None
    assert marks.markers[0].action == Marker.DELETEALL
    spheres = [m for m in marks.markers if m.type == Marker.SPHERE]
    labels = [m for m in marks.markers if m.type == Marker.TEXT_VIEW_FACING]
    assert len(spheres) == len(labels) == len(with_point)
    assert {m.text.split()[0] for m in labels} == {c.name for c in with_point}
    assert all(m.header.frame_id == FRAME_ID for m in marks.markers[1:])


def test_debug_image_overlay(h: Harness, answered: tuple[KnownScene, Any]) -> None:
    from semcorr_ros.ros.convert import image_to_rgb

    scene, msg = answered
    img = h.debug.wait_for(lambda m: stamp_of(m) == stamp_of(msg), 5.0)
    assert img is not None, "debug image not published although subscribed"
    rgb = image_to_rgb(img)
    assert rgb.shape == scene.rgb.shape and img.encoding == "rgb8"
    assert (rgb != scene.rgb).any(axis=2).sum() > 200  # something was drawn


def test_bgr_and_float_depth(h: Harness) -> None:
    scene = KnownScene(-30, 10)
    msg = h.send_until_answered(scene, color_encoding="bgr8", depth_encoding="32FC1")
    xy = np.array([[c.x, c.y] for c in msg.correspondences])
    assert np.linalg.norm(xy - scene.expected_xy, axis=1).max() <= PIXEL_TOL
    assert all(c.has_point for c in msg.correspondences)


def test_diagnostics(h: Harness, answered: tuple[KnownScene, Any]) -> None:
    assert wait_until(lambda: int(h.latest_diag().get("frames_published", 0)) >= 1, 5.0)
    d = h.latest_diag()
    assert d["state"] == "ready" and d["device"] == "cpu"
    assert d["model"] == "effnet-lite2+dinov2-s-imgfocus" and d["reference_id"] == "example_robot"
    for key in ("rate_hz", "latency_p50_ms", "latency_p95_ms", "frames_dropped", "frames_rejected"):
        assert key in d
    assert float(d["latency_p50_ms"]) > 0


def test_bag_round_trip(tmp_path: Path, answered: tuple[KnownScene, Any]) -> None:
    """Write the published CorrespondenceArray to an mcap rosbag2 with rosbags, read it back, compare."""
    from rclpy.serialization import deserialize_message, serialize_message
    from rosbags.rosbag2 import Reader, StoragePlugin, Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    from semcorr_ros.msg import CorrespondenceArray

    _, msg = answered
    repo = EXAMPLE_YAML.parent.parent
    store = get_typestore(Stores.ROS2_KILTED)
    for name in ("Correspondence", "CorrespondenceArray"):
        store.register(get_types_from_msg((repo / "msg" / f"{name}.msg").read_text(), f"semcorr_ros/msg/{name}"))
    raw = serialize_message(msg)
    bag = tmp_path / "bag"
    with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/semcorr/matches", "semcorr_ros/msg/CorrespondenceArray", typestore=store)
        writer.write(conn, int(stamp_of(msg) * 1e9), raw)
    assert list(bag.glob("*.mcap"))
    with Reader(bag) as reader:
        rows = list(reader.messages())
    assert len(rows) == 1
    conn, ts, data = rows[0]
    assert conn.msgtype == "semcorr_ros/msg/CorrespondenceArray" and ts == int(stamp_of(msg) * 1e9)
    back = deserialize_message(bytes(data), CorrespondenceArray)
    assert back == msg
    # an independent reader of the registered definitions sees the same values
    other = store.deserialize_cdr(bytes(data), "semcorr_ros/msg/CorrespondenceArray")
    assert other.reference_id == msg.reference_id
    assert [c.name for c in other.correspondences] == [c.name for c in msg.correspondences]
    assert other.correspondences[0].point.z == pytest.approx(msg.correspondences[0].point.z)


# ---------------------------------------------------------------------------------------------- parameters


def test_parameter_validation(h: Harness) -> None:
    from rclpy.parameter import Parameter

    def set_(name: str, value: Any) -> Any:
        return h.node.set_parameters([Parameter(name, value=value)])[0]

    res = set_("score_threshold", 2.0)
    assert not res.successful and "score_threshold" in res.reason
    res = set_("kbc", "maybe")
    assert not res.successful and "off" in res.reason and "auto" in res.reason
    res = set_("device", "cpu")
    assert not res.successful and "read-only" in res.reason
    assert h.node.get_parameter("score_threshold").value == pytest.approx(0.2)
    desc = h.node.describe_parameters(["score_threshold", "device", "sync_slop"])
    assert desc[0].floating_point_range[0].to_value == 1.0 and desc[0].description
    assert desc[1].read_only and "Read-only" in desc[1].description
    assert not desc[2].read_only


def test_score_threshold_applies_at_run_time(h: Harness) -> None:
    from rclpy.parameter import Parameter

    assert h.node.set_parameters([Parameter("score_threshold", value=1.0)])[0].successful
    try:
        msg = h.send_until_answered(KnownScene(10, 0))
        deadline = time.monotonic() + 20
        while any(c.valid for c in msg.correspondences) and time.monotonic() < deadline:
            msg = h.send_until_answered(KnownScene(10, 0))  # a frame taken before the change
        assert not any(c.valid or c.has_point for c in msg.correspondences)
    finally:
        assert h.node.set_parameters([Parameter("score_threshold", value=0.2)])[0].successful


def _write_reference(tmp_path: Path, name: str, body: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def test_reference_reload_and_rejection(h: Harness, tmp_path: Path) -> None:
    """A good reference replaces the active one at run time; bad ones are rejected and the good one stays."""
    from rclpy.parameter import Parameter

    image = str(EXAMPLE_YAML.parent / "example_reference.png")
    good = _write_reference(tmp_path, "subset", {
        "reference_id": "robot_subset", "image": image,
        "keypoints": {"left_hand": [176.0, 306.0], "right_hand": [466.0, 306.0], "chest_panel": [320.0, 250.0]}})
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("keypoints: [this is: not, valid")
    outside = _write_reference(tmp_path, "outside", {"image": image, "keypoints": {"far": [2000.0, 10.0]}})
    no_image = _write_reference(tmp_path, "noimage", {"image": "missing.png", "keypoints": {"a": [1.0, 2.0]}})
    many = _write_reference(tmp_path, "many", {"image": image, "keypoints": {
        f"k{i}": [float(i % 640), float(i % 480)] for i in range(20_000)}})
    bad_scale = _write_reference(tmp_path, "scale", {"image": image, "depth_scale": "abc",
                                                     "depth": str(EXAMPLE_YAML.parent / "example_reference_depth.png"),
                                                     "keypoints": {"a": [1.0, 2.0]}})

    def set_ref(path: Path | str) -> Any:
        return h.node.set_parameters([Parameter("reference_file", value=str(path))])[0]

    try:
        assert set_ref(good).successful
        scene = KnownScene(12, -8)
        deadline = time.monotonic() + 60
        msg = h.send_until_answered(scene)
        while msg.reference_id != "robot_subset" and time.monotonic() < deadline:
            msg = h.send_until_answered(scene)
        assert msg.reference_id == "robot_subset"
        assert [c.name for c in msg.correspondences] == ["left_hand", "right_hand", "chest_panel"]
        xy = np.array([[c.x, c.y] for c in msg.correspondences])
        np.testing.assert_allclose(xy, np.array([[188, 298], [478, 298], [332, 242]]), atol=PIXEL_TOL)

        for path, words in ((tmp_path / "missing.yaml", "not found"), (bad_yaml, "not valid YAML"),
                            (outside, "outside"), (no_image, "missing.png"), (many, "max_reference_keypoints"),
                            (bad_scale, "depth_scale")):
            res = set_ref(path)
            assert not res.successful and words in res.reason, res.reason
            assert h.node.get_parameter("reference_file").value == str(good)
        res = h.node.set_parameters([Parameter("reference_intrinsics", value=[1.0, -1.0, 0.0, 0.0])])[0]
        assert not res.successful and "intrinsics" in res.reason
        msg = h.send_until_answered(scene)
        assert msg.reference_id == "robot_subset"
    finally:
        assert set_ref(EXAMPLE_YAML).successful
    deadline = time.monotonic() + 60
    msg = h.send_until_answered(KnownScene(0, 0))
    while msg.reference_id != "example_robot" and time.monotonic() < deadline:
        msg = h.send_until_answered(KnownScene(0, 0))
    assert msg.reference_id == "example_robot"


def test_objects_file_gives_every_object_per_frame(h: Harness, tmp_path: Path) -> None:
    """An objects file (a 2-view set + a single view): ~/objects lists both objects once per frame, ~/matches
    carries one array per object with the frame's stamp, the set's keypoints are the union of its views'."""
    from rclpy.parameter import Parameter

    image = str(EXAMPLE_YAML.parent / "example_reference.png")
    hands = _write_reference(tmp_path, "hands", {"reference_id": "hands_view", "image": image,
                                                 "keypoints": {"left_hand": [176.0, 306.0],
                                                               "right_hand": [466.0, 306.0]}})
    robot = _write_reference(tmp_path, "robot_set", {"object_id": "robot", "views": [str(EXAMPLE_YAML), str(hands)]})
    panel = _write_reference(tmp_path, "panel", {"reference_id": "panel", "image": image,
                                                 "keypoints": {"chest_panel": [320.0, 250.0]}})
    objects = _write_reference(tmp_path, "objects", {"objects": [str(robot), str(panel)]})
    try:
        res = h.node.set_parameters([Parameter("reference_file", value=str(objects))])[0]
        assert res.successful, res.reason
        scene = KnownScene(10, 6)
        deadline, got = time.monotonic() + 90, None
        while got is None and time.monotonic() < deadline:
            h.send_until_answered(scene)
            got = h.objects.wait_for(lambda m: [o.object_id for o in m.objects] == ["robot", "panel"], 1.0)
        assert got is not None, "no ~/objects message with both objects"
        robot_msg, panel_msg = got.objects
        assert robot_msg.view_id in ("example_robot", "hands_view") and panel_msg.view_id == "panel"
        assert [c.name for c in robot_msg.correspondences] == scene.spec.names  # the hands view adds no new name
        valid = [c for c in robot_msg.correspondences if c.valid]
        assert len(valid) >= len(scene.spec.names) - 2
        for c in valid:
            expect = scene.expected_xy[scene.spec.names.index(c.name)]
            assert np.hypot(c.x - expect[0], c.y - expect[1]) <= PIXEL_TOL, c.name
        assert panel_msg.correspondences[0].name == "chest_panel"
        def per_object() -> list[str]:  # ~/matches may arrive after ~/objects (another topic)
            return sorted(m.object_id for m in h.matches.snapshot() if stamp_of(m) == stamp_of(got))

        wait_until(lambda: len(per_object()) >= 2, 5.0)
        assert per_object() == ["panel", "robot"]
        assert all(m.header.stamp == got.header.stamp for m in got.objects)
        assert 0.0 < got.processing_time <= got.latency
        m = h.diag.wait_for(lambda m: "robot (2 views)" in str(diag_values(m).get("objects")), 10.0)
        assert m is not None and diag_values(m)["objects"] == "robot (2 views), panel (1 view)"
    finally:
        assert h.node.set_parameters([Parameter("reference_file", value=str(EXAMPLE_YAML))])[0].successful
    deadline = time.monotonic() + 60
    msg = h.send_until_answered(KnownScene(0, 0))
    while msg.object_id != "example_robot" and time.monotonic() < deadline:
        msg = h.send_until_answered(KnownScene(0, 0))
    assert msg.object_id == msg.view_id == msg.reference_id == "example_robot"


# ---------------------------------------------------------------------------------------------- robustness


def _bad_cases() -> dict[str, Any]:
    scene = KnownScene(0, 0)

    def wrong_encoding(t: float) -> tuple:
        c, d, i = scene.messages(t)
        c.encoding = "yuv422"
        return c, d, i

    def size_mismatch(t: float) -> tuple:
        c, d, i = scene.messages(t)
        from semcorr_ros.ros.convert import depth_to_image

        return c, depth_to_image(scene.depth[::2, ::2], "16UC1", d.header), i

    def truncated(t: float) -> tuple:
        import array

        c, d, i = scene.messages(t)
        c.data = array.array("B", bytes(c.data)[: len(c.data) // 2])
        return c, d, i

    def zero_depth(t: float) -> tuple:
        c, d, i = scene.messages(t)
        d.data = array_of_zeros(len(d.data))
        return c, d, i

    def nan_depth(t: float) -> tuple:
        from semcorr_ros.ros.convert import depth_to_image

        c, d, i = scene.messages(t)
        return c, depth_to_image(np.full(scene.depth.shape, np.nan, np.float32), "32FC1", d.header), i

    def uncalibrated(t: float) -> tuple:
        c, d, i = scene.messages(t)
        i.k = np.zeros(9)
        return c, d, i

    def never_pair(t: float) -> tuple:
        c, _, i = scene.messages(t)
        _, d, _ = scene.messages(t - 0.37)  # never within the slop of any colour stamp sent 0.25 s apart
        return c, d, i

    return {"wrong_encoding": (wrong_encoding, "yuv422"), "size_mismatch": (size_mismatch, "320x240"),
            "truncated": (truncated, "data size mismatch"), "zero_depth": (zero_depth, "no valid pixel"),
            "nan_depth": (nan_depth, "no valid pixel"), "uncalibrated": (uncalibrated, "all zero"),
            "never_pair": (never_pair, "no depth frame within sync_slop")}


def array_of_zeros(n: int) -> Any:
    import array

    return array.array("B", bytes(n))


@pytest.mark.parametrize("case", list(_bad_cases()))
def test_bad_input_is_rejected_and_node_recovers(h: Harness, case: str) -> None:
    make, words = _bad_cases()[case]
    d = h.send_until_rejected(make)
    assert words in d["last_rejection"], d["last_rejection"]
    assert d["state"] == "ready"
    scene = KnownScene(6, 6)
    msg = h.send_until_answered(scene)  # the next good frame is answered
    assert msg.reference_id == "example_robot" and len(msg.correspondences) == 10
