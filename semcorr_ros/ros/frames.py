"""One synchronised RGB-D input set (colour, depth, CameraInfo) -> checked engine arrays.

Colour comes as ``sensor_msgs/Image`` or ``sensor_msgs/CompressedImage`` (image_transport's ``compressed``:
JPEG/PNG), depth as ``Image`` or ``CompressedImage`` (``compressedDepth``). Every problem raises
:class:`~semcorr_ros.errors.InputError` whose ``kind`` names the class of problem (``color``, ``depth``,
``camera_info``, ``size``, ``frame_id``), so the node can log it (throttled), count the frame under that class
and go on with the next one.

Checks made here, each with its own message:

- image sizes against ``max_pixels`` (before any pixel is converted or decoded);
- encodings, truncated data, zero sizes (:mod:`semcorr_ros.ros.convert`, :mod:`semcorr_ros.ros.compressed`);
- colour vs depth vs camera-info sizes;
- colour vs depth ``frame_id`` (and camera info's): depth that is not aligned to colour would be lifted to 3D
  at the wrong pixels; an empty ``frame_id`` is not compared;
- camera info: calibrated ``K`` (or ``P`` for rectified images) and a known distortion model;
- a depth image with at least one valid pixel.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Header

from semcorr_ros.errors import InputError, SemcorrError
from semcorr_ros.ros.camera import camera_info_to_camera
from semcorr_ros.ros.convert import depth_to_metres, image_to_rgb, stamp_to_sec

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
        distortion: the colour camera's lens distortion (None: a pinhole image, e.g. rectified or zero ``D``).
    """

    header: Header
    stamp: float
    rgb: np.ndarray
    depth: np.ndarray
    K: np.ndarray
    distortion: Any = None


def _check_pixels(msg: Image, what: str, max_pixels: int, kind: str) -> None:
    n = int(msg.width) * int(msg.height)
    if n > max_pixels:
        raise InputError(f"{what} is {msg.width}x{msg.height} = {n} pixels, more than max_image_pixels="
                         f"{max_pixels}", kind=kind)


def _convert(kind: str, what: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except SemcorrError as exc:
        raise InputError(f"{what}: {exc}", kind=kind) from exc


def _color(msg: Image | CompressedImage, max_pixels: int) -> np.ndarray:
    if isinstance(msg, CompressedImage):
        from semcorr_ros.ros.compressed import compressed_to_rgb

        return _convert("color", "colour image (compressed)", compressed_to_rgb, msg, max_pixels)
    _check_pixels(msg, "colour image", max_pixels, "color")
    return _convert("color", "colour image", image_to_rgb, msg)


def _depth(msg: Image | CompressedImage, depth_scale: float, max_pixels: int) -> np.ndarray:
    if isinstance(msg, CompressedImage):
        from semcorr_ros.ros.compressed import compressed_depth_to_metres

        return _convert("depth", "depth image (compressedDepth)", compressed_depth_to_metres, msg, depth_scale,
                        max_pixels)
    _check_pixels(msg, "depth image", max_pixels, "depth")
    return _convert("depth", "depth image", depth_to_metres, msg, depth_scale)


def _check_frame_ids(color: Any, depth: Any, info: CameraInfo) -> None:
    c, d, i = color.header.frame_id, depth.header.frame_id, info.header.frame_id
    if c and d and c != d:
        raise InputError(f"depth frame_id {d!r} differs from the colour frame_id {c!r}: the depth image is not "
                         "aligned to colour and would be lifted to 3D at the wrong pixels (subscribe to depth "
                         "aligned to colour, e.g. aligned_depth_to_color/image_raw, or set "
                         "require_matching_frame_ids:=false if the frames are aligned)", kind="frame_id")
    if c and i and c != i:
        raise InputError(f"camera info frame_id {i!r} differs from the colour frame_id {c!r}: it is not the colour "
                         "camera's calibration (remap color/camera_info to the colour camera's camera_info, or set "
                         "require_matching_frame_ids:=false)", kind="frame_id")


def frame_from_messages(color: Image | CompressedImage, depth: Image | CompressedImage, info: CameraInfo | None,
                        depth_scale: float, info_topic: str = "camera info", *, max_pixels: int = 4096 * 4096,
                        check_frame_ids: bool = True, rectified: bool = False) -> RgbdFrame:
    """Convert and cross-check one input set.

    Args:
        color: colour image (rgb8, bgr8, rgba8, bgra8 or mono8), or a compressed one (JPEG/PNG).
        depth: depth image aligned to ``color`` (16UC1/mono16 in ``depth_scale`` units, or 32FC1 metres), or
            compressedDepth.
        info: the colour camera's CameraInfo; None when none was received yet.
        depth_scale: metres per integer depth unit.
        info_topic: name used in the error when ``info`` is None.
        max_pixels: largest accepted ``width * height`` of either image.
        check_frame_ids: reject a set whose non-empty ``frame_id`` values differ.
        rectified: the images are rectified (image_proc's ``image_rect``): intrinsics from ``P``, no distortion;
            else ``K`` and the distortion model ``D`` of the raw image.

    Raises:
        InputError: see the module docstring; ``kind`` says which check failed.
    """
    if info is None:
        raise InputError(f"no CameraInfo received on {info_topic} yet: cannot lift matches to 3D",
                         kind="camera_info")
    if check_frame_ids:
        _check_frame_ids(color, depth, info)
    rgb = _color(color, max_pixels)
    d = _depth(depth, depth_scale, max_pixels)
    h, w = rgb.shape[:2]
    if d.shape != (h, w):
        raise InputError(f"depth image is {d.shape[1]}x{d.shape[0]} but the colour image is {w}x{h}: "
                         "subscribe to depth aligned to colour (e.g. aligned_depth_to_color/image_raw)", kind="size")
    K, distortion = _convert("camera_info", "camera info", camera_info_to_camera, info, rectified)
    iw, ih = int(info.width), int(info.height)
    if iw and ih and (iw, ih) != (w, h):
        raise InputError(f"camera info is for {iw}x{ih} images but the colour image is {w}x{h}", kind="size")
    if not np.isfinite(d).any():
        raise InputError("depth image has no valid pixel (all zero, NaN or inf)", kind="depth")
    return RgbdFrame(header=color.header, stamp=stamp_to_sec(color.header.stamp), rgb=rgb, depth=d, K=K,
                     distortion=distortion)
