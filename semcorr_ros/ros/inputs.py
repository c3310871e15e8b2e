"""One synchronised RGB-D input set (colour Image, depth Image, CameraInfo) -> checked engine arrays.

Every problem raises :class:`~semcorr_ros.errors.InputError` with a message that says what is wrong with which
input, so the node can log it (throttled), count the frame as rejected and go on with the next one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sensor_msgs.msg import CameraInfo, Image
from std_msgs.msg import Header

from semcorr_ros.errors import InputError
from semcorr_ros.ros.convert import camera_info_to_K, depth_to_metres, image_to_rgb, stamp_to_sec

__all__ = ["RgbdFrame", "frame_from_messages"]


@dataclass
class RgbdFrame:
    """A checked live frame.

    Attributes:
        header: the colour image's header (stamp, camera optical frame).
        stamp: the header stamp in seconds.
        rgb: ``uint8 [H, W, 3]`` RGB (possibly a read-only view of the message buffer).
        depth: ``float32 [H, W]`` metres aligned to ``rgb``, NaN where invalid (at least one valid pixel).
        K: ``float64 [3, 3]`` colour camera intrinsics, pixels.
    """

    header: Header
    stamp: float
    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray


def frame_from_messages(color: Image, depth: Image, info: CameraInfo | None, depth_scale: float,
                        info_topic: str = "camera info") -> RgbdFrame:
    """Convert and cross-check one input set.

    Args:
        color: colour image (rgb8, bgr8, rgba8, bgra8 or mono8).
        depth: depth image aligned to ``color`` (16UC1/mono16 in ``depth_scale`` units, or 32FC1 metres).
        info: the colour camera's CameraInfo; None when none was received yet.
        depth_scale: metres per integer depth unit.
        info_topic: name used in the error when ``info`` is None.

    Raises:
        InputError: no camera info, unsupported encoding, truncated data, zero size, colour/depth/camera-info
            size mismatch, uncalibrated intrinsics, or a depth image without a single valid pixel.
    """
    if info is None:
        raise InputError(f"no CameraInfo received on {info_topic} yet: cannot lift matches to 3D")
    try:
        rgb = image_to_rgb(color)
    except InputError as exc:
        raise InputError(f"colour image: {exc}") from exc
    try:
        d = depth_to_metres(depth, depth_scale)
    except InputError as exc:
        raise InputError(f"depth image: {exc}") from exc
    h, w = rgb.shape[:2]
    if d.shape != (h, w):
        raise InputError(f"depth image is {d.shape[1]}x{d.shape[0]} but the colour image is {w}x{h}: "
                         "subscribe to depth aligned to colour (e.g. aligned_depth_to_color/image_raw)")
    try:
        K = camera_info_to_K(info)
    except InputError as exc:
        raise InputError(f"camera info: {exc}") from exc
    iw, ih = int(info.width), int(info.height)
    if iw and ih and (iw, ih) != (w, h):
        raise InputError(f"camera info is for {iw}x{ih} images but the colour image is {w}x{h}")
    if not np.isfinite(d).any():
        raise InputError("depth image has no valid pixel (all zero, NaN or inf)")
    return RgbdFrame(header=color.header, stamp=stamp_to_sec(color.header.stamp), rgb=rgb, depth=d, K=K)
