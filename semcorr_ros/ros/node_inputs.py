"""The node's input side: colour, depth and camera-info subscriptions, the stamp source and the synchroniser.

Subscription callbacks run on the executor thread and only buffer: each message goes into the latest-set
synchroniser (:class:`~semcorr_ros.ros.sync.LatestSetSync`) under the stamp :class:`~semcorr_ros.ros.stamps.
StampSource` chooses (header stamp, or the middleware's source timestamp for cameras whose stamps are unusable),
together with that arrival time. Nothing here raises into rclpy: a message that cannot be buffered is handed to
the node's ``reject`` callback.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping
from typing import Any

from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image

from semcorr_ros.errors import SemcorrError
from semcorr_ros.ros.convert import stamp_to_sec
from semcorr_ros.ros.diagnostics import SyncAccounting
from semcorr_ros.ros.outputs import QOS_OVERRIDES
from semcorr_ros.ros.stamps import StampSource
from semcorr_ros.ros.sync import COLOR, DEPTH, INFO, LatestSetSync

__all__ = ["INPUT_TOPICS", "COMPRESSED_INPUT_TOPICS", "RgbdInputs", "describe"]

#: Input topic names (relative: resolved in the node's namespace; remap them to the camera's topics).
INPUT_TOPICS = {COLOR: "color/image_raw", DEPTH: "aligned_depth_to_color/image_raw", INFO: "color/camera_info"}
#: The inputs with ``color_transport: compressed`` / ``depth_transport: compressedDepth`` (image_transport names).
COMPRESSED_INPUT_TOPICS = {COLOR: INPUT_TOPICS[COLOR] + "/compressed",
                           DEPTH: INPUT_TOPICS[DEPTH] + "/compressedDepth"}


def describe(exc: BaseException) -> str:
    """An error for a log line or a diagnostics value: the message of ours, ``Type: message`` of others."""
    return str(exc) if isinstance(exc, SemcorrError) else f"{type(exc).__name__}: {exc}"


def _arrival_time(info: Any) -> float:
    """When a message was sent, seconds of the system clock: the middleware's source timestamp (the publisher's
    write time: not delayed by a busy executor), else its reception time, else now."""
    for key in ("source_timestamp", "received_timestamp"):
        ns = info.get(key) if isinstance(info, dict) else None
        if ns:
            return ns * 1e-9
    return time.time()


class RgbdInputs:
    """Subscriptions and synchroniser of one node.

    Args:
        node: the rclpy node to subscribe on.
        values: the node's parameter values (read live: ``color_transport``, ``depth_transport``, ``sync_*``,
            ``stamp_source``).
        reject: ``reject(reason, count, kind)``, called for messages that cannot be buffered.

    Buffered items are ``(message, arrival time)`` for colour and depth, the message for camera info.
    """

    def __init__(self, node: Any, values: Mapping[str, Any], reject: Callable[..., None]) -> None:
        self._node, self._values, self._reject = node, values, reject
        self.last_info: CameraInfo | None = None
        #: the newest header stamp seen per stream, seconds
        self.newest_stamp: dict[str, float] = {}
        self.accounting = SyncAccounting()
        self._late_seen = 0
        self.stamps = StampSource(str(values["stamp_source"]))
        self.sync = self._make_sync()
        self.subscriptions = self._subscribe()
        #: resolved camera-info topic (for messages)
        self.info_topic: str = self.subscriptions[2].topic_name

    def _subscribe(self) -> list[Any]:
        """Colour, depth and camera-info subscriptions (sensor-data QoS, overridable with qos_overrides.*)."""
        color_compressed = self._values["color_transport"] == "compressed"
        depth_compressed = self._values["depth_transport"] == "compressedDepth"

        def sub(msg_type: Any, topic: str, callback: Callable[..., None]) -> Any:
            # a copy each: rclpy writes the overrides into the profile it is given
            return self._node.create_subscription(msg_type, topic, callback, copy.copy(qos_profile_sensor_data),
                                                  qos_overriding_options=QOS_OVERRIDES)

        return [sub(CompressedImage if color_compressed else Image,
                    (COMPRESSED_INPUT_TOPICS if color_compressed else INPUT_TOPICS)[COLOR], self._on_color),
                sub(CompressedImage if depth_compressed else Image,
                    (COMPRESSED_INPUT_TOPICS if depth_compressed else INPUT_TOPICS)[DEPTH], self._on_depth),
                sub(CameraInfo, INPUT_TOPICS[INFO], self._on_info)]

    def _make_sync(self) -> LatestSetSync:
        sync = LatestSetSync(float(self._values["sync_slop"]), int(self._values["sync_buffer_size"]),
                             info_latched=True, time_jump_reset=float(self._values["sync_time_jump_reset"]))
        sync.add(INFO, 0.0, self.last_info)  # None until camera info arrives: such sets are rejected, counted
        return sync

    def rebuild(self) -> None:
        """New synchroniser and stamp source after a change of their parameters (counters are kept)."""
        self.stamps = StampSource(str(self._values["stamp_source"]))
        old, self.sync = self.sync, self._make_sync()
        old.close()  # wakes the inference thread, which then waits on the new one
        self.accounting.retire(old.stats())

    def stats(self) -> dict[str, int]:
        """Synchroniser counters summed over the node's lifetime."""
        return self.accounting.totals(self.sync.stats())

    def losses(self, totals: dict[str, int]) -> tuple[int, int]:
        """Colour frames that never paired and frames dropped as late since the last call: ``(never, late)``."""
        never = self.accounting.update(totals, float(self._values["sync_slop"]))
        late, self._late_seen = totals.get("late", 0) - self._late_seen, totals.get("late", 0)
        return never, late

    # ------------------------------------------------------------------ callbacks (executor thread)
    def _add(self, stream: str, msg: Any, info: Any = None) -> None:
        try:
            arrival = _arrival_time(info)
            header_t = stamp_to_sec(msg.header.stamp)
            self.newest_stamp[stream] = header_t
            t, switched = self.stamps.stamp(stream, header_t, arrival)
            if switched:
                self.sync.reset()  # buffered frames carry header stamps: another time base
                self._node.get_logger().warning(
                    f"{self.stamps.reason}: pairing colour and depth by arrival time from now on (parameter "
                    f"stamp_source=auto; set header or arrival to choose)")
            self.accounting.note(stream, t)
            self.sync.add(stream, t, (msg, arrival))
        except Exception as exc:  # noqa: BLE001 -- a subscription callback must never stop the executor
            self._reject(f"{stream} frame not buffered: {describe(exc)}", 1, "stamp")

    def _on_color(self, msg: Image | CompressedImage, info: Any = None) -> None:
        self._add(COLOR, msg, info)

    def _on_depth(self, msg: Image | CompressedImage, info: Any = None) -> None:
        self._add(DEPTH, msg, info)

    def _on_info(self, msg: CameraInfo) -> None:
        try:
            self.last_info = msg
            self.sync.add(INFO, 0.0, msg)  # latched: the latest info is used whatever its stamp
        except Exception as exc:  # noqa: BLE001
            self._reject(f"camera info not buffered: {describe(exc)}", 1, "camera_info")
