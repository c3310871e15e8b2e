"""A reference from one frame of a rosbag2 or of live camera topics: colour, aligned depth and intrinsics, no
keypoints yet.

From a bag the frame is read and converted with bag-eval's reader (:mod:`semcorr_ros.bageval.bag`, the node's
own message conversion); topics default to realsense2_camera's names and are auto-detected as there. Live
(:func:`capture_live`), the first complete set on the node's three input topics is taken, paired and converted
the way the node does it (:class:`~semcorr_ros.ros.sync.LatestSetSync`,
:func:`~semcorr_ros.ros.frames.frame_from_messages`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semcorr_ros.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class Captured:
    """What :func:`capture_from_bag` wrote: the YAML, the frame's index and stamp, and the bag's ground truth of
    that frame as ``{name: [x, y]}`` (visible keypoints only; empty when the bag has none)."""

    path: Path
    frame: int
    stamp_ns: int
    ground_truth: dict[str, list[float]]


def capture_from_bag(bag: str | Path, out: str | Path, *, frame: int | None = None, time_s: float | None = None,
                     color_topic: str | None = None, depth_topic: str | None = None,
                     info_topic: str | None = None, depth_scale: float = 0.001,
                     reference_id: str | None = None) -> Captured:
    """Write ``out`` (YAML, empty keypoints) + ``<stem>.png`` + ``<stem>_depth.png`` from one bag frame.

    Args:
        frame: 0-based index among the colour frames; or ``time_s``: seconds after the first colour stamp
            (the nearest frame is taken). Neither: frame 0.

    Raises:
        BagError: the bag cannot be read or lacks a topic; InputError: no such frame, or it cannot be converted.
    """
    from semcorr_ros.bageval.bag import iter_frames, scan_bag
    from semcorr_ros.reference import write_reference

    if frame is not None and time_s is not None:
        raise InputError("give --frame or --time, not both")
    index = scan_bag(bag, color_topic, depth_topic, info_topic)
    stamps = index.color_stamps
    if time_s is not None:
        target = stamps[0] + int(round(time_s * 1e9))
        frame = int(np.argmin([abs(s - target) for s in stamps]))
    frame = 0 if frame is None else int(frame)
    if not 0 <= frame < len(stamps):
        raise InputError(f"frame {frame} is not in the bag: it has {len(stamps)} colour frames (0..{len(stamps) - 1})")
    stamp = stamps[frame]
    picked = None
    for f in iter_frames(index, depth_scale=depth_scale):
        if f.stamp_ns == stamp:
            picked = f
            break
    if picked is None or picked.error:
        raise InputError(f"frame {frame} (stamp {stamp} ns) cannot be used: "
                         f"{picked.error if picked else 'not decoded'}")
    gt = index.ground_truth.get(stamp)
    truth = {}
    if gt is not None:
        truth = {n: [round(float(x), 2), round(float(y), 2)]
                 for n, (x, y), v in zip(gt.names, gt.keypoints_2d, gt.visible) if v}
    out = Path(out)
    extra = {"captured_from": {"bag": str(Path(index.path).resolve()), "topic": index.color_topic,
                               "frame": frame, "stamp_ns": int(stamp)}}
    write_reference(out, picked.rgb, None, [], depth=picked.depth, intrinsics=picked.K,
                    reference_id=reference_id, depth_scale=depth_scale, extra=extra)
    log.info("captured frame %d of %s -> %s", frame, index.path, out)
    return Captured(out, frame, int(stamp), truth)


#: The node's default input topics (realsense2_camera's names), under ``--namespace`` when given.
LIVE_TOPICS = ("color/image_raw", "aligned_depth_to_color/image_raw", "color/camera_info")


def live_topics(namespace: str = "", color_topic: str | None = None, depth_topic: str | None = None,
                info_topic: str | None = None) -> tuple[str, str, str]:
    """The three topics to capture from: explicit names win, else the node's defaults under ``namespace``."""
    ns = "/" + namespace.strip("/") if namespace.strip("/") else ""
    given = (color_topic, depth_topic, info_topic)
    return tuple(g if g else f"{ns}/{d}" for g, d in zip(given, LIVE_TOPICS))  # type: ignore[return-value]


def capture_live(out: str | Path, *, topics: tuple[str, str, str], timeout: float = 10.0,
                 depth_scale: float = 0.001, sync_slop: float = 0.02, reference_id: str | None = None,
                 context: object | None = None) -> Captured:
    """Write ``out`` (YAML, empty keypoints) + images from the first complete (colour, depth, info) set on
    ``topics`` (raw ``sensor_msgs/Image`` colour and aligned depth, ``CameraInfo``; sensor-data QoS).

    Args:
        timeout: seconds to wait for a set.
        context: an initialised ``rclpy`` context to use (else one is made and shut down here).

    Raises:
        InputError: nothing complete within ``timeout`` (the message says what did arrive), or the set
            cannot be converted (wrong encoding, sizes that differ...).
    """
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import CameraInfo, Image

    from semcorr_ros.reference import write_reference
    from semcorr_ros.ros.convert import stamp_to_sec
    from semcorr_ros.ros.frames import frame_from_messages
    from semcorr_ros.ros.sync import COLOR, DEPTH, INFO, LatestSetSync

    own = context is None
    ctx = Context() if own else context
    if own:
        rclpy.init(context=ctx)
    sync = LatestSetSync(sync_slop, 8)
    counts = {COLOR: 0, DEPTH: 0, INFO: 0}
    errors: list[str] = []

    def on(stream: str) -> object:
        def callback(msg: object) -> None:
            counts[stream] += 1
            try:
                sync.add(stream, stamp_to_sec(msg.header.stamp), (msg, None) if stream != INFO else msg)
            except Exception as exc:  # noqa: BLE001 -- a bad stamp loses this message only
                errors.append(f"{stream}: {exc}")
        return callback

    try:
        node = rclpy.create_node("semcorr_reference_capture", context=ctx)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        for stream, topic, msg_type in zip((COLOR, DEPTH, INFO), topics, (Image, Image, CameraInfo)):
            node.create_subscription(msg_type, topic, on(stream), qos_profile_sensor_data)
        got, deadline = None, time.monotonic() + timeout
        while got is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
            got = sync.pop_latest()
        executor.shutdown(timeout_sec=1.0)
        node.destroy_node()
    finally:
        if own:
            ctx.try_shutdown()
    if got is None:
        seen = ", ".join(f"{counts[s]} on {t}" for s, t in zip((COLOR, DEPTH, INFO), topics))
        hint = " (no messages at all: is the camera running, the namespace right? see `ros2 topic list`)" \
            if not any(counts.values()) else ""
        more = f"; {errors[-1]}" if errors else ""
        raise InputError(f"no complete colour + depth + camera info set within {timeout:g} s: received {seen}"
                         f"{hint}{more}")
    stamp, items = got
    frame = frame_from_messages(items[COLOR][0], items[DEPTH][0], items.get(INFO), depth_scale, topics[2])
    extra = {"captured_from": {"topic": topics[0], "stamp_ns": int(round(stamp * 1e9))}}
    write_reference(Path(out), frame.rgb, None, [], depth=frame.depth, intrinsics=frame.K,
                    reference_id=reference_id, depth_scale=depth_scale, extra=extra)
    log.info("captured %s at %.3f -> %s", topics[0], stamp, out)
    return Captured(Path(out), 0, int(round(stamp * 1e9)), {})


def write_keypoints_json(path: str | Path, keypoints: dict[str, list[float]]) -> Path:
    """``{name: [x, y]}`` as JSON (a keypoints file for ``semcorr reference annotate --keypoints``)."""
    path = Path(path)
    path.write_text(json.dumps(keypoints, indent=1))
    return path
