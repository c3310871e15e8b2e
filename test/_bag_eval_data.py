"""Small rosbag2 files for the bag-eval tests: the known-shift RGB-D scene (see ``_rgbd``) with ground truth.

Frame ``i`` is the example reference shifted by ``offsets[i]``; its ground truth (``semcorr-gt-v1``) is the
shifted keypoints, their back-projection at ``OBJECT_Z`` and an object pose that is a pure translation, so that
``relative_pose(frame_pose, reference_pose)`` is the known shift. The reference YAML written next to the bag is
the example reference plus ``object_pose`` (identity: the object's frame is the reference camera's).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import yaml

from semcorr_ros.groundtruth import GT_MSGTYPE, GT_TOPIC, FrameGroundTruth

from _rgbd import EXAMPLE_YAML, OBJECT_Z, KnownScene, example

NS = "/camera/camera"
COLOR = f"{NS}/color/image_raw"
DEPTH = f"{NS}/aligned_depth_to_color/image_raw"
INFO = f"{NS}/color/camera_info"
T0_NS = 1_700_000_000 * 10**9


def write_reference(folder: Path) -> Path:
    """The example reference copied into ``folder`` with an identity ``object_pose``; returns the YAML path."""
    folder.mkdir(parents=True, exist_ok=True)
    doc = yaml.safe_load(EXAMPLE_YAML.read_text())
    for key in ("image", "depth"):
        shutil.copy(EXAMPLE_YAML.parent / doc[key], folder / doc[key])
    doc["object_pose"] = np.eye(4).tolist()
    path = folder / "reference.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def ground_truth(scene: KnownScene, index: int, stamp_ns: int) -> FrameGroundTruth:
    pose = np.eye(4)
    pose[:3, 3] = scene.expected_t
    h, w = scene.rgb.shape[:2]
    xy = scene.expected_xy
    visible = (xy[:, 0] >= 0) & (xy[:, 0] <= w - 1) & (xy[:, 1] >= 0) & (xy[:, 1] <= h - 1)
    obj = np.isfinite(scene.depth) & (scene.depth < 1.0)
    ys, xs = np.nonzero(obj)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], float)
    return FrameGroundTruth(stamp_ns=stamp_ns, frame_index=index, category="robot", instance="example_robot",
                            names=list(scene.spec.names), keypoints_2d=xy, visible=visible,
                            keypoints_3d=scene.expected_points, object_pose=pose, object_box=box,
                            object_fraction=float(obj.mean()))


def write_bag(path: Path, offsets: list[tuple[int, int]], *, rate_hz: float = 10.0, with_gt: bool = True,
              with_info: bool = True, with_depth: bool = True, storage: str = "mcap", color_topic: str = COLOR,
              bad_gt: int = 0, info_frames: int | None = None) -> Path:
    """Write a rosbag2 folder at ``path`` with one frame per offset; ``bad_gt`` frames get unparsable GT;
    ``info_frames``: camera info only with the first N frames (default: every frame)."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore
    from std_msgs.msg import String

    typestore = get_typestore(Stores.ROS2_JAZZY)
    spec = example()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        c_color = writer.add_connection(color_topic, "sensor_msgs/msg/Image", typestore=typestore)
        c_depth = writer.add_connection(DEPTH, "sensor_msgs/msg/Image", typestore=typestore) if with_depth else None
        c_info = writer.add_connection(INFO, "sensor_msgs/msg/CameraInfo", typestore=typestore) \
            if with_info else None
        c_gt = writer.add_connection(GT_TOPIC, GT_MSGTYPE, typestore=typestore) if with_gt else None
        for i, (dx, dy) in enumerate(offsets):
            scene = KnownScene(dx, dy, spec)
            t_ns = T0_NS + int(round(i * 1e9 / rate_hz))
            color, depth, info = scene.messages(t_ns * 1e-9)
            # stamp exactly t_ns (sec_to_stamp from float may round)
            for m in (color, depth, info):
                m.header.stamp.sec, m.header.stamp.nanosec = divmod(t_ns, 10**9)
            writer.write(c_color, t_ns, serialize_message(color))
            if c_depth is not None:
                writer.write(c_depth, t_ns, serialize_message(depth))
            if c_info is not None and (info_frames is None or i < info_frames):
                writer.write(c_info, t_ns, serialize_message(info))
            if c_gt is not None:
                text = "{not json" if i < bad_gt else ground_truth(scene, i, t_ns).to_json()
                writer.write(c_gt, t_ns, serialize_message(String(data=text)))
    return path


__all__ = ["NS", "COLOR", "DEPTH", "INFO", "OBJECT_Z", "write_bag", "write_reference", "ground_truth"]
