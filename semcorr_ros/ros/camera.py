"""``sensor_msgs/CameraInfo`` <-> the engine's camera model: pinhole ``K`` (``float64 [3, 3]``, pixels) and the
lens distortion (:class:`semcorr_ros.engine.geometry.Distortion`) used to lift pixels of the raw image to 3D.

Only message packages are imported, never ``rclpy`` nodes; the engine is imported lazily (it loads torch).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from builtin_interfaces.msg import Time
from sensor_msgs.msg import CameraInfo
from std_msgs.msg import Header

from semcorr_ros.errors import InputError
from semcorr_ros.ros.convert import _header_or_default

if TYPE_CHECKING:  # importing semcorr_ros.engine loads torch: camera_info_to_camera imports it when called
    from semcorr_ros.engine.geometry import Distortion

__all__ = ["camera_info_to_K", "K_to_camera_info", "camera_info_to_camera"]


def _check_K(K: np.ndarray, what: str) -> None:
    if not np.all(np.isfinite(K)):
        raise InputError(f"{what} has non-finite entries: {K.ravel().tolist()}")
    if not np.any(K):
        raise InputError(f"{what} is all zero (camera not calibrated?)")
    if K[0, 0] <= 0 or K[1, 1] <= 0:
        raise InputError(f"{what} needs fx > 0 and fy > 0, got fx={K[0, 0]}, fy={K[1, 1]}")


def camera_info_to_K(msg: CameraInfo) -> np.ndarray:
    """Return the intrinsic matrix ``K`` (``float64 [3, 3]``, pixels) of a ``sensor_msgs/CameraInfo``.

    ``K`` applies to the (distorted) raw image; RealSense colour streams and aligned depth have zero distortion.

    Raises:
        InputError: ``k`` does not have 9 entries, is all zero (uncalibrated), has non-finite entries, or
            ``fx <= 0`` / ``fy <= 0``.
    """
    k = np.asarray(msg.k, dtype=np.float64).reshape(-1)
    if k.size != 9:
        raise InputError(f"CameraInfo.k must have 9 entries, got {k.size}")
    K = k.reshape(3, 3).copy()
    _check_K(K, "CameraInfo.k")
    return K


def K_to_camera_info(
    K: np.ndarray,
    width: int,
    height: int,
    header: Header | None = None,
    frame_id: str | None = None,
) -> CameraInfo:
    """Build a ``sensor_msgs/CameraInfo`` for an undistorted pinhole camera (inverse of :func:`camera_info_to_K`).

    Args:
        K: ``[3, 3]`` intrinsics in pixels (fx, fy > 0).
        width, height: image size in pixels (> 0).
        header: copied into the message (the caller's header is not aliased); empty when None.
        frame_id: when given, overrides ``header.frame_id`` (e.g. ``camera_color_optical_frame``).

    Returns:
        CameraInfo with ``distortion_model = 'plumb_bob'``, ``d`` = five zeros, ``r`` = identity,
        ``p = [K | 0]``, no binning and a zero ROI.

    Raises:
        InputError: bad ``K`` shape/values or non-positive size.
    """
    Km = np.asarray(K, dtype=np.float64)
    if Km.shape != (3, 3):
        raise InputError(f"K must be [3, 3], got shape {list(Km.shape)}")
    _check_K(Km, "K")
    if int(width) <= 0 or int(height) <= 0:
        raise InputError(f"camera image size must be positive, got width={width}, height={height}")
    src = _header_or_default(header)
    out_header = Header(
        stamp=Time(sec=int(src.stamp.sec), nanosec=int(src.stamp.nanosec)),
        frame_id=src.frame_id if frame_id is None else str(frame_id),
    )
    P = np.zeros((3, 4), dtype=np.float64)
    P[:, :3] = Km
    msg = CameraInfo(
        header=out_header,
        height=int(height),
        width=int(width),
        distortion_model="plumb_bob",
        d=[0.0] * 5,
    )
    msg.k = Km.reshape(9).copy()
    msg.r = np.eye(3, dtype=np.float64).reshape(9)
    msg.p = P.reshape(12)
    return msg


def camera_info_to_camera(msg: CameraInfo, rectified: bool = False) -> tuple[np.ndarray, Distortion | None]:
    """The camera model of a ``sensor_msgs/CameraInfo`` for lifting pixels of its images to 3D.

    Args:
        msg: the camera's CameraInfo.
        rectified: False (default) for the raw images (``image_raw``, RealSense's colour and aligned depth):
            ``K`` from ``msg.k`` and the lens distortion from ``distortion_model`` + ``d``. True for images that
            image_proc has rectified (``image_rect``, ``image_rect_color``): intrinsics from the left 3x3 of
            the projection matrix ``msg.p`` and no distortion. The translation column of ``P`` (a stereo
            baseline) and the rectification rotation ``R`` are not applied: 3D points come out in the
            rectified camera's own optical frame (the raw frame when ``R`` is the identity, as for monocular
            cameras).

    Returns:
        ``(K, distortion)``: ``float64 [3, 3]`` intrinsics in pixels and a
        :class:`~semcorr_ros.engine.geometry.Distortion`, or None when there is none to apply (rectified, an
        empty ``d``, or all coefficients zero -- whatever the model says). Models: ``plumb_bob`` (5
        coefficients), ``rational_polynomial`` (8), ``equidistant`` (4); a longer ``d`` is accepted when its
        extra entries are all zero (e.g. OpenCV's 14-entry vector without thin-prism and tilt terms).
        ``binning_x/y`` and ``roi`` are not applied (``K`` is for the full-resolution sensor image).

    Raises:
        InputError: ``k`` (or ``p``) of the wrong size, all zero (uncalibrated), non-finite, ``fx/fy <= 0`` or
            (rectified) a bottom row other than ``[0, 0, 1]``; non-finite ``d``; non-zero coefficients with an
            unknown or empty model (lists the supported ones); too few coefficients, or non-zero extra ones.
    """
    from semcorr_ros.engine.geometry import DISTORTION_MODELS, Distortion

    if rectified:
        p = np.asarray(msg.p, dtype=np.float64).reshape(-1)
        if p.size != 12:
            raise InputError(f"CameraInfo.p must have 12 entries, got {p.size}")
        K = p.reshape(3, 4)[:, :3].copy()
        _check_K(K, "CameraInfo.p")
        if not np.array_equal(K[2], [0.0, 0.0, 1.0]):
            raise InputError(f"CameraInfo.p: the left 3x3 must end in the row [0, 0, 1], got {K[2].tolist()}")
        return K, None
    K = camera_info_to_K(msg)
    d = np.asarray(msg.d, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(d)):
        raise InputError(f"CameraInfo.d has non-finite entries: {d.tolist()}")
    if not np.any(d):
        return K, None
    model = msg.distortion_model
    names = DISTORTION_MODELS.get(model)
    if names is None:
        raise InputError(f"CameraInfo.distortion_model {model!r} is not supported (d = {d.tolist()}); "
                         f"supported: {', '.join(DISTORTION_MODELS)}")
    n = len(names)
    if d.size < n or np.any(d[n:]):
        raise InputError(f"CameraInfo.d for {model} must hold {n} coefficients ({', '.join(names)}; further "
                         f"entries only if zero), got {d.size}: {d.tolist()}")
    return K, Distortion(model, tuple(d[:n].tolist()))
