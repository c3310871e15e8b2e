"""semcorr reference capture --live: a reference view from live camera topics over real DDS."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import yaml

from semcorr_ros.authoring.capture import live_topics
from semcorr_ros.authoring.document import read_draft
from semcorr_ros.cli import main
from semcorr_ros.reference.single import parse_intrinsics, read_depth

from _rgbd import KnownScene, RgbdPublisher


def _stream(ctx: Any, namespace: str, stop: threading.Event, scene: KnownScene) -> threading.Thread:
    from rclpy.node import Node

    node = Node("fake_camera", context=ctx)
    pub = RgbdPublisher(node, namespace)  # realsense2_camera's topic names under the camera's namespace

    def run() -> None:
        while not stop.wait(0.1):
            pub.publish(*scene.messages(pub.now()))
        node.destroy_node()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_live_capture_writes_the_cameras_frame(rclpy_context: Any, tmp_path, capsys) -> None:
    scene = KnownScene(4, 2)
    stop = threading.Event()
    thread = _stream(rclpy_context, "/cam_a", stop, scene)
    out = tmp_path / "live.yaml"
    try:
        code = main(["reference", "capture", str(out), "--live", "--namespace", "/cam_a", "--timeout", "20",
                     "--reference-id", "desk_mug"])
    finally:
        stop.set()
        thread.join(5.0)
    assert code == 0, capsys.readouterr().err
    doc = yaml.safe_load(out.read_text())
    assert doc["reference_id"] == "desk_mug" and doc["captured_from"]["topic"] == "/cam_a/color/image_raw"
    draft = read_draft(out)
    assert draft.keypoints == {}  # keypoints are placed next, with annotate or propose
    assert np.array_equal(draft.image, scene.rgb)  # the published frame, bit for bit
    depth = read_depth(out.parent / doc["depth"])
    valid = np.isfinite(scene.depth) & (scene.depth > 0)
    assert np.allclose(depth[valid], scene.depth[valid], atol=1e-3)
    assert np.allclose(parse_intrinsics(doc["intrinsics"]), scene.K)


def test_live_capture_without_a_camera_says_what_arrived(rclpy_context: Any, tmp_path, capsys) -> None:
    out = tmp_path / "none.yaml"
    assert main(["reference", "capture", str(out), "--live", "--namespace", "/nobody_here", "--timeout", "0.5"]) == 1
    err = capsys.readouterr().err
    assert "no complete colour + depth + camera info set within 0.5 s" in err
    assert "0 on /nobody_here/color/image_raw" in err and "is the camera running" in err
    assert not out.exists()


def test_live_capture_options_are_checked(tmp_path, capsys) -> None:
    assert main(["reference", "capture", str(tmp_path / "x.yaml"), "--live", "--frame", "2"]) == 1
    assert "go with --bag, not --live" in capsys.readouterr().err


def test_live_topics() -> None:
    assert live_topics("") == ("/color/image_raw", "/aligned_depth_to_color/image_raw", "/color/camera_info")
    assert live_topics("/camera/camera/")[0] == "/camera/camera/color/image_raw"
    assert live_topics("cam", depth_topic="/d")[1] == "/d"
