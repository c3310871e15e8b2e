"""Conversion between ``sensor_msgs`` messages and numpy arrays.

A small, self-written replacement for the parts of cv_bridge and sensor_msgs_py this package needs (neither is
installable here). Only message packages are imported -- never ``rclpy`` nodes -- and the engine never imports
this module.

Conventions (the engine's):

- colour images: ``uint8 [H, W, 3]`` RGB;
- depth maps: ``float32 [H, W]`` metres, NaN where invalid;
- intrinsics: ``float64 [3, 3]`` pinhole matrix K in pixels;
- point clouds: ``[N, 3]`` metres in the header's frame (the camera optical frame for this package);
- stamps: float seconds.

Message buffers are read with ``np.frombuffer``-style views (rclpy hands ``uint8[]`` fields over as
``array.array('B')``; ``bytes``/``bytearray``/``memoryview`` work too), so the only copy made while reading is the
one the conversion itself needs. Messages are written by assigning an ``array.array('B')`` filled with one
``frombytes`` call, which rosidl stores as is (no per-element checks) and rclpy publishes with a buffer copy.
"""

from __future__ import annotations

import array
import math
import sys
from typing import Any

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import Image
from std_msgs.msg import Header

from semcorr_ros.errors import ConfigError, InputError

__all__ = [
    "COLOR_ENCODINGS",
    "DEPTH_ENCODINGS",
    "image_to_rgb",
    "depth_to_metres",
    "rgb_to_image",
    "depth_to_image",
    "stamp_to_sec",
    "sec_to_stamp",
]

#: Supported colour encodings: name -> (channels in the message, message channel for output R, G, B).
COLOR_ENCODINGS: dict[str, tuple[int, tuple[int, int, int]]] = {
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}

#: Supported depth encodings: name -> element type (byte order comes from ``is_bigendian``).
#: Integer encodings hold ``depth_scale`` units (millimetres by default) with 0 invalid; ``32FC1`` holds metres.
DEPTH_ENCODINGS: dict[str, np.dtype] = {
    "16UC1": np.dtype(np.uint16),
    "mono16": np.dtype(np.uint16),
    "32FC1": np.dtype(np.float32),
}

_MACHINE_BIG_ENDIAN: bool = sys.byteorder == "big"

_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


# ----------------------------------------------------------------------------------------------- helpers


def _u8(data: Any) -> np.ndarray:
    """View a message's ``uint8[]`` field as a flat ``uint8`` array without copying (lists are converted)."""
    try:
        return np.frombuffer(data, dtype=np.uint8)
    except TypeError:  # a plain list/tuple of ints: slow path, but correct
        return np.asarray(data, dtype=np.uint8).reshape(-1)


def _to_byte_array(arr: np.ndarray) -> array.array:
    """Copy an array's bytes (C order) into an ``array.array('B')`` ready to assign to a ``uint8[]`` field."""
    out = array.array("B")
    if arr.size:
        out.frombytes(memoryview(np.ascontiguousarray(arr)).cast("B"))
    return out


def _byte_order(is_bigendian: Any) -> str:
    return ">" if bool(is_bigendian) else "<"


def _checked_buffer(msg: Image, bytes_per_pixel: int) -> tuple[int, int, int, np.ndarray]:
    """Validate an Image's geometry against its data; return ``(height, width, step, flat uint8 data)``."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    encoding = msg.encoding
    if height <= 0 or width <= 0:
        raise InputError(f"Image ({encoding}) has zero size: width={width}, height={height}")
    row = width * bytes_per_pixel
    if step < row:
        raise InputError(
            f"Image ({encoding}) step {step} is smaller than width*bytes_per_pixel = "
            f"{width}*{bytes_per_pixel} = {row}"
        )
    buf = _u8(msg.data)
    expected = step * height
    if buf.size != expected:
        raise InputError(
            f"Image ({encoding}, {width}x{height}, step {step}) data size mismatch: "
            f"expected step*height = {expected} bytes, got {buf.size}"
        )
    return height, width, step, buf


def _header_or_default(header: Header | None) -> Header:
    return header if header is not None else Header()


# ----------------------------------------------------------------------------------------------- images


def image_to_rgb(msg: Image, *, copy: bool = False) -> np.ndarray:
    """Convert a colour or grey ``sensor_msgs/Image`` to an RGB array.

    Args:
        msg: image with encoding ``rgb8``, ``bgr8``, ``rgba8``, ``bgra8`` (alpha dropped) or ``mono8`` (grey
            replicated to three channels). Row padding (``step > width * channels``) is skipped.
        copy: when False (default) an unpadded ``rgb8`` image is returned as a *read-only view* of ``msg.data``
            (no copy at all; it keeps ``msg.data`` alive, and an ``array.array`` exporting its buffer cannot be
            resized until the view is gone); every other case -- and always when True -- returns a new,
            writable array.

    Returns:
        ``uint8 [H, W, 3]`` RGB, C-contiguous.

    Raises:
        InputError: unsupported encoding (the message lists the supported ones), zero width/height,
            ``step < width * bytes_per_pixel``, or ``len(data) != step * height``.
    """
    encoding = msg.encoding
    spec = COLOR_ENCODINGS.get(encoding)
    if spec is None:
        raise InputError(
            f"unsupported colour image encoding {encoding!r}; supported: {', '.join(COLOR_ENCODINGS)}"
        )
    channels, order = spec
    height, width, step, buf = _checked_buffer(msg, channels)
    src = np.ndarray((height, width, channels), dtype=np.uint8, buffer=buf, strides=(step, channels, 1))
    if encoding == "rgb8":
        if step == width * 3 and not copy:
            view = src.view()
            view.flags.writeable = False
            return view
        return np.array(src, dtype=np.uint8, order="C", copy=True)
    # One strided copy per output channel is ~4x faster than ascontiguousarray(src[..., ::-1]).
    out = np.empty((height, width, 3), dtype=np.uint8)
    for c, s in enumerate(order):
        out[..., c] = src[..., s]
    return out


def depth_to_metres(msg: Image, depth_scale: float = 0.001) -> np.ndarray:
    """Convert a depth ``sensor_msgs/Image`` to metres.

    Args:
        msg: ``16UC1`` or ``mono16`` (integer units of ``depth_scale`` metres -- millimetres by default --, 0 =
            invalid) or ``32FC1`` (metres; non-finite or ``<= 0`` = invalid). ``step`` padding is skipped and the
            data is byte-swapped when ``is_bigendian`` differs from this machine.
        depth_scale: metres per integer unit (RealSense: 0.001); ignored for ``32FC1``.

    Returns:
        ``float32 [H, W]`` metres, NaN where invalid; always a new array.

    Raises:
        InputError: unsupported encoding (lists the supported ones), zero size, ``step`` too small or a data
            size other than ``step * height``.
        ConfigError: ``depth_scale`` not finite and positive.
    """
    if not (isinstance(depth_scale, (int, float, np.floating, np.integer)) and math.isfinite(depth_scale)
            and depth_scale > 0):
        raise ConfigError(f"depth_scale must be a finite number > 0 (metres per unit), got {depth_scale!r}")
    encoding = msg.encoding
    base = DEPTH_ENCODINGS.get(encoding)
    if base is None:
        raise InputError(f"unsupported depth image encoding {encoding!r}; supported: {', '.join(DEPTH_ENCODINGS)}")
    height, width, step, buf = _checked_buffer(msg, base.itemsize)
    dtype = base.newbyteorder(_byte_order(msg.is_bigendian))
    src = np.ndarray((height, width), dtype=dtype, buffer=buf, strides=(step, base.itemsize))
    if base.kind == "u":
        out = np.multiply(src, np.float32(depth_scale), dtype=np.float32)
        np.copyto(out, np.float32(np.nan), where=src == 0)
    else:
        out = src.astype(np.float32, order="C", copy=True)  # also converts to native byte order
        valid = (out > 0) & (out < np.inf)  # False for NaN, -inf, +inf and <= 0
        np.copyto(out, np.float32(np.nan), where=~valid)
    return out


def rgb_to_image(arr: np.ndarray, encoding: str = "rgb8", header: Header | None = None) -> Image:
    """Build a ``sensor_msgs/Image`` from an RGB array (inverse of :func:`image_to_rgb`).

    Args:
        arr: ``uint8 [H, W, 3]`` RGB; for ``mono8`` also ``uint8 [H, W]`` grey. An RGB array written as
            ``mono8`` is reduced to luma ``round(0.299 R + 0.587 G + 0.114 B)`` (so grey RGB stays exact).
        encoding: one of :data:`COLOR_ENCODINGS`; alpha of ``rgba8``/``bgra8`` is 255.
        header: the message header (used as is); an empty one when None.

    Returns:
        An unpadded image (``step = width * channels``) in this machine's byte order.

    Raises:
        InputError: wrong dtype, shape or an empty image.
        ConfigError: unknown ``encoding`` (lists the valid ones).
    """
    spec = COLOR_ENCODINGS.get(encoding)
    if spec is None:
        raise ConfigError(f"unknown colour encoding {encoding!r}; valid: {', '.join(COLOR_ENCODINGS)}")
    a = np.asarray(arr)
    if a.dtype != np.uint8:
        raise InputError(f"rgb_to_image expects a uint8 array, got dtype {a.dtype}")
    grey_ok = encoding == "mono8" and a.ndim == 2
    if not grey_ok and (a.ndim != 3 or a.shape[2] != 3):
        expect = "[H, W, 3] or [H, W]" if encoding == "mono8" else "[H, W, 3]"
        raise InputError(f"rgb_to_image expects {expect} for {encoding}, got shape {list(a.shape)}")
    height, width = int(a.shape[0]), int(a.shape[1])
    if height == 0 or width == 0:
        raise InputError(f"rgb_to_image got an empty image of shape {list(a.shape)}")
    channels, order = spec
    if encoding == "rgb8":
        out = a
    elif encoding == "mono8":
        if grey_ok:
            out = a
        else:
            luma = a[..., 0] * np.uint32(299) + a[..., 1] * np.uint32(587) + a[..., 2] * np.uint32(114)
            out = ((luma + np.uint32(500)) // np.uint32(1000)).astype(np.uint8)
    else:
        out = np.empty((height, width, channels), dtype=np.uint8)
        for c, s in enumerate(order):
            out[..., s] = a[..., c]
        if channels == 4:
            out[..., 3] = 255
    msg = Image(
        header=_header_or_default(header),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(_MACHINE_BIG_ENDIAN),
        step=width * channels,
    )
    msg.data = _to_byte_array(out)
    return msg


def depth_to_image(
    depth_m: np.ndarray,
    encoding: str = "16UC1",
    header: Header | None = None,
    depth_scale: float = 0.001,
) -> Image:
    """Build a depth ``sensor_msgs/Image`` from metres (inverse of :func:`depth_to_metres`).

    Args:
        depth_m: ``[H, W]`` real-valued depth in metres; NaN, inf and ``<= 0`` are invalid.
        encoding: ``16UC1`` / ``mono16`` (``round(depth / depth_scale)``, i.e. millimetres by default; invalid,
            sub-unit and out-of-range (> 65535 units, 65.535 m at mm scale) values are written as 0) or ``32FC1``
            (metres, invalid written as NaN).
        header: the message header (used as is); an empty one when None.
        depth_scale: metres per integer unit; ignored for ``32FC1``.

    Returns:
        An unpadded image in this machine's byte order.

    Raises:
        InputError: not a real-valued ``[H, W]`` array, or empty.
        ConfigError: unknown ``encoding`` or a bad ``depth_scale``.
    """
    base = DEPTH_ENCODINGS.get(encoding)
    if base is None:
        raise ConfigError(f"unknown depth encoding {encoding!r}; valid: {', '.join(DEPTH_ENCODINGS)}")
    if not (isinstance(depth_scale, (int, float, np.floating, np.integer)) and math.isfinite(depth_scale)
            and depth_scale > 0):
        raise ConfigError(f"depth_scale must be a finite number > 0 (metres per unit), got {depth_scale!r}")
    d = np.asarray(depth_m)
    if d.ndim != 2 or d.dtype.kind not in "fiu":
        raise InputError(f"depth_to_image expects a real-valued [H, W] array, got shape {list(d.shape)} "
                         f"dtype {d.dtype}")
    height, width = int(d.shape[0]), int(d.shape[1])
    if height == 0 or width == 0:
        raise InputError(f"depth_to_image got an empty depth map of shape {list(d.shape)}")
    if base.kind == "u":
        units = np.divide(d, depth_scale, dtype=np.float64)
        np.rint(units, out=units)
        with np.errstate(invalid="ignore"):
            valid = (units > 0) & (units <= np.iinfo(np.uint16).max)  # False for NaN
        np.copyto(units, 0.0, where=~valid)
        out = units.astype(np.uint16)
    else:
        out = d.astype(np.float32, copy=True)
        valid = (out > 0) & (out < np.inf)
        np.copyto(out, np.float32(np.nan), where=~valid)
    msg = Image(
        header=_header_or_default(header),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=int(_MACHINE_BIG_ENDIAN),
        step=width * base.itemsize,
    )
    msg.data = _to_byte_array(out)
    return msg


# ----------------------------------------------------------------------------------------------- time


def stamp_to_sec(stamp: Time) -> float:
    """``builtin_interfaces/Time`` (or anything with ``sec`` and ``nanosec``) -> float seconds.

    A float64 keeps ~0.2 microsecond resolution for present-day epoch times: ample for frame pairing.
    """
    return int(stamp.sec) + int(stamp.nanosec) * 1e-9


def sec_to_stamp(t: float) -> Time:
    """Float seconds -> ``builtin_interfaces/Time`` (``nanosec`` in ``[0, 1e9)``, rounded to the nanosecond).

    Raises:
        InputError: ``t`` not finite or outside the int32 seconds range of the message.
    """
    if not math.isfinite(t):
        raise InputError(f"time stamp must be finite, got {t!r}")
    sec = math.floor(t)
    nanosec = int(round((t - sec) * 1e9))
    if nanosec >= 1_000_000_000:
        sec += 1
        nanosec -= 1_000_000_000
    if not _INT32_MIN <= sec <= _INT32_MAX:
        raise InputError(f"time stamp {t!r} s is outside the int32 seconds range of builtin_interfaces/Time")
    return Time(sec=int(sec), nanosec=nanosec)
