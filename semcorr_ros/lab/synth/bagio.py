"""rosbag2 output of a synthetic scene, written with the pure-Python ``rosbags`` (no ROS install needed).

Per frame, all with the same ``header.stamp`` (also the bag's log time) and ``frame_id``
``camera_color_optical_frame``:

- :data:`COLOR_TOPIC` ``sensor_msgs/msg/Image`` ``rgb8``
- :data:`DEPTH_TOPIC` ``sensor_msgs/msg/Image`` ``16UC1`` millimetres, 0 = invalid (aligned to colour)
- :data:`INFO_TOPIC` ``sensor_msgs/msg/CameraInfo`` (plumb_bob, zero distortion)
- :data:`~semcorr_ros.groundtruth.GT_TOPIC` ``std_msgs/msg/String``: :class:`FrameGroundTruth` JSON

Message definitions come from the ``rosbags`` kilted type store (identical to humble's for these three types);
the bag is rosbag2 format version 8 (readable by ``ros2 bag`` from jazzy on, and by ``rosbags``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from semcorr_ros.groundtruth import GT_MSGTYPE, GT_TOPIC, FrameGroundTruth

COLOR_TOPIC = "/camera/camera/color/image_raw"
DEPTH_TOPIC = "/camera/camera/aligned_depth_to_color/image_raw"
INFO_TOPIC = "/camera/camera/color/camera_info"
FRAME_ID = "camera_color_optical_frame"
#: topic -> message type, in the order connections are added
TOPICS = {COLOR_TOPIC: "sensor_msgs/msg/Image", DEPTH_TOPIC: "sensor_msgs/msg/Image",
          INFO_TOPIC: "sensor_msgs/msg/CameraInfo", GT_TOPIC: GT_MSGTYPE}
STORAGES = ("mcap", "sqlite3")
BAG_VERSION = 8


def typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


class SceneBagWriter:
    """Context manager writing the frames of one scene into a new rosbag2 folder ``path``."""

    def __init__(self, path, storage: str = "mcap", frame_id: str = FRAME_ID):
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            from semcorr_ros.errors import ConfigError

            raise ConfigError(f"storage must be one of {', '.join(STORAGES)}, got {storage!r}")
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.ts = typestore()
        self.frame_id = frame_id
        self.writer = Writer(path, version=BAG_VERSION, storage_plugin=plugin)
        self.conns: dict[str, object] = {}
        self.count = 0

    def __enter__(self) -> "SceneBagWriter":
        self.writer.open()
        for topic, msgtype in TOPICS.items():
            self.conns[topic] = self.writer.add_connection(topic, msgtype, typestore=self.ts)
        return self

    def __exit__(self, *exc) -> None:
        self.writer.close()

    def _header(self, stamp_ns: int):
        T = self.ts.types
        return T["std_msgs/msg/Header"](stamp=T["builtin_interfaces/msg/Time"](
            sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000)), frame_id=self.frame_id)

    def write_frame(self, rgb: np.ndarray, depth_mm: np.ndarray, K: np.ndarray, gt: FrameGroundTruth,
                    more: Sequence[FrameGroundTruth] = ()) -> None:
        """One frame: colour, aligned depth, camera info and ground truth, all stamped ``gt.stamp_ns``; ``more``:
        the ground truth of further objects (several-object scenes), one more record each on the same topic."""
        T = self.ts.types
        stamp = int(gt.stamp_ns)
        h, w = depth_mm.shape
        Image = T["sensor_msgs/msg/Image"]
        rgb = np.ascontiguousarray(rgb, np.uint8)
        dep = np.ascontiguousarray(depth_mm, "<u2")
        msgs = {
            COLOR_TOPIC: Image(header=self._header(stamp), height=h, width=w, encoding="rgb8", is_bigendian=0,
                               step=w * 3, data=rgb.reshape(-1)),
            DEPTH_TOPIC: Image(header=self._header(stamp), height=h, width=w, encoding="16UC1", is_bigendian=0,
                               step=w * 2, data=dep.view(np.uint8).reshape(-1)),
            INFO_TOPIC: camera_info(self.ts, self._header(stamp), K, w, h),
            GT_TOPIC: T["std_msgs/msg/String"](data=gt.to_json()),
        }
        for topic, msg in msgs.items():
            self.writer.write(self.conns[topic], stamp, self.ts.serialize_cdr(msg, TOPICS[topic]))
        for g in more:
            msg = T["std_msgs/msg/String"](data=g.to_json())
            self.writer.write(self.conns[GT_TOPIC], stamp, self.ts.serialize_cdr(msg, TOPICS[GT_TOPIC]))
        self.count += 1


def camera_info(ts, header, K: np.ndarray, width: int, height: int):
    """A distortion-free ``sensor_msgs/msg/CameraInfo`` for ``K``."""
    T = ts.types
    K = np.asarray(K, np.float64)
    P = np.zeros((3, 4))
    P[:, :3] = K
    return T["sensor_msgs/msg/CameraInfo"](
        header=header, height=height, width=width, distortion_model="plumb_bob", d=np.zeros(5),
        k=K.reshape(-1).copy(), r=np.eye(3).reshape(-1), p=P.reshape(-1), binning_x=0, binning_y=0,
        roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))
