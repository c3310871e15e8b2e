"""RGB-D fixtures with a known answer for the node tests, and small rclpy helpers.

The live frame is the example reference (config/example_reference.yaml: a synthetic robot at 0.8 m in front
of a wall at 1.5 m) shifted by ``(dx, dy)`` pixels, with its depth shifted the same way. Every keypoint's true
match is then ``ref + (dx, dy)``, its 3D point the back-projection at 0.8 m, and the object pose a pure
translation ``(dx * z / fx, dy * z / fy, 0)``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from semcorr_ros.reference import ReferenceSpec, load_reference
from semcorr_ros.ros.camera import K_to_camera_info
from semcorr_ros.ros.convert import depth_to_image, rgb_to_image, sec_to_stamp

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_YAML = REPO / "config" / "example_reference.yaml"
OBJECT_Z = 0.8
FRAME_ID = "camera_color_optical_frame"


def example() -> ReferenceSpec:
    return load_reference(EXAMPLE_YAML)


def shifted(a: np.ndarray, dx: int, dy: int, fill: Any) -> np.ndarray:
    """``a`` translated by ``(dx, dy)`` pixels; uncovered pixels set to ``fill``."""
    out = np.empty_like(a)
    out[...] = fill
    h, w = a.shape[:2]
    out[max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        a[max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


class KnownScene:
    """The example reference shifted by ``(dx, dy)``: arrays and the expected answer."""

    def __init__(self, dx: int, dy: int, spec: ReferenceSpec | None = None) -> None:
        self.spec = spec or example()
        self.dx, self.dy = dx, dy
        self.rgb = shifted(self.spec.image, dx, dy, self.spec.image[0, 0])
        self.depth = shifted(self.spec.depth, dx, dy, np.float32(1.5))
        self.K = self.spec.intrinsics
        self.expected_xy = self.spec.keypoints + np.array([dx, dy], float)
        fx, fy, cx, cy = self.K[0, 0], self.K[1, 1], self.K[0, 2], self.K[1, 2]
        x, y = self.expected_xy[:, 0], self.expected_xy[:, 1]
        self.expected_points = np.stack([(x - cx) / fx * OBJECT_Z, (y - cy) / fy * OBJECT_Z,
                                         np.full_like(x, OBJECT_Z)], axis=1)
        self.expected_t = np.array([dx * OBJECT_Z / fx, dy * OBJECT_Z / fy, 0.0])

    def messages(self, stamp: float, color_encoding: str = "rgb8",
                 depth_encoding: str = "16UC1") -> tuple[Image, Image, CameraInfo]:
        header = Header(frame_id=FRAME_ID, stamp=sec_to_stamp(stamp))
        h, w = self.rgb.shape[:2]
        return (rgb_to_image(self.rgb, color_encoding, header), depth_to_image(self.depth, depth_encoding, header),
                K_to_camera_info(self.K, w, h, header))


class RgbdPublisher:
    """Publishers for the node's three inputs (sensor-data QoS), under ``prefix`` (the node's namespace)."""

    def __init__(self, node: Any, prefix: str = "") -> None:
        self.node = node
        self.color = node.create_publisher(Image, f"{prefix}/color/image_raw", qos_profile_sensor_data)
        self.depth = node.create_publisher(Image, f"{prefix}/aligned_depth_to_color/image_raw",
                                           qos_profile_sensor_data)
        self.info = node.create_publisher(CameraInfo, f"{prefix}/color/camera_info", qos_profile_sensor_data)

    def now(self) -> float:
        return self.node.get_clock().now().nanoseconds * 1e-9

    def publish(self, color: Image | None, depth: Image | None, info: CameraInfo | None) -> None:
        if info is not None:
            self.info.publish(info)
        if depth is not None:
            self.depth.publish(depth)
        if color is not None:
            self.color.publish(color)

    def connected(self) -> bool:
        return all(p.get_subscription_count() > 0 for p in (self.color, self.depth, self.info))


class Collector:
    """Thread-safe store of the messages received on one topic."""

    def __init__(self, node: Any, msg_type: Any, topic: str, depth: int = 50) -> None:
        self._lock = threading.Lock()
        self.items: list[Any] = []
        self.sub = node.create_subscription(msg_type, topic, self._cb, depth)

    def _cb(self, msg: Any) -> None:
        with self._lock:
            self.items.append(msg)

    def snapshot(self) -> list[Any]:
        with self._lock:
            return list(self.items)

    def wait_for(self, predicate: Callable[[Any], bool], timeout: float) -> Any | None:
        """The first received message satisfying ``predicate`` (polling), or None after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for m in self.snapshot():
                if predicate(m):
                    return m
            time.sleep(0.02)
        return None


def stamp_of(msg: Any) -> float:
    return int(msg.header.stamp.sec) + int(msg.header.stamp.nanosec) * 1e-9


def diag_values(msg: Any) -> dict[str, str]:
    """Key/values of the first DiagnosticStatus."""
    return {kv.key: kv.value for kv in msg.status[0].values}


def wait_until(predicate: Callable[[], bool], timeout: float, period: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return False
        time.sleep(period)
    return True
