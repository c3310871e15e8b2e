"""Depth and pinhole-camera geometry: validate inputs, sample depth robustly, lift pixels to 3D.

Conventions (as everywhere in the package): pixels ``(x, y)`` are 0-based floats with pixel centres at
integers (x right, y down); 3D points are in the camera optical frame (x right, y down, z forward), metres;
``K`` is the 3x3 intrinsics ``[[fx, s, cx], [0, fy, cy], [0, 0, 1]]`` (skew ``s`` is allowed, usually 0).
Invalid depth is ``NaN`` after :func:`validate_depth`. Pure numpy.

Lens distortion: :mod:`semcorr_ros.engine.distortion` (its names are re-exported here).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from semcorr_ros.engine.distortion import (DISTORTION_MODELS, Distortion, active, distort_normalised,
                                           undistort_normalised)
from semcorr_ros.errors import ConfigError, InputError

__all__ = ["validate_depth", "validate_intrinsics", "sample_depth", "backproject", "project", "lift",
           "DISTORTION_MODELS", "Distortion", "distort_points", "undistort_points"]

def validate_depth(depth: np.ndarray, image_shape: Sequence[int] | None = None,
                   depth_scale: float = 0.001) -> np.ndarray:
    """Check a depth image and convert it to float32 metres with ``NaN`` marking invalid pixels.

    Args:
        depth: ``[H, W]`` (or ``[H, W, 1]``) depth image. Floating dtypes are metres; non-finite or ``<= 0``
            values are invalid (ROS ``32FC1``). ``uint16`` is millimetres (ROS ``16UC1``), ``0`` invalid.
        image_shape: optional shape of the matching colour image; only its first two entries ``(H, W)`` are
            used. A different depth size raises :class:`InputError` naming both sizes.
        depth_scale: metres per ``uint16`` unit (default ``0.001``: millimetres). Ignored for float depth.

    Returns:
        ``[H, W]`` float32 depth in metres, ``NaN`` where invalid. Always a new array.

    Raises:
        InputError: not an array, wrong ndim, unsupported dtype, size mismatch, or a bad ``depth_scale``.
    """
    if not isinstance(depth, np.ndarray):
        raise InputError(f"depth must be a numpy array, got {type(depth).__name__}")
    if depth.ndim == 3 and depth.shape[2] == 1:
        depth = depth[:, :, 0]
    if depth.ndim != 2:
        raise InputError(f"depth must have shape [H, W] (or [H, W, 1]), got shape {tuple(depth.shape)}")
    if image_shape is not None:
        if len(image_shape) < 2:
            raise InputError(f"image_shape must start with (H, W), got {tuple(image_shape)}")
        ih, iw = int(image_shape[0]), int(image_shape[1])
        if depth.shape != (ih, iw):
            raise InputError(f"depth size {depth.shape[0]}x{depth.shape[1]} (HxW) does not match "
                             f"image size {ih}x{iw} (HxW); register depth to the colour image first")
    if depth.dtype == np.uint16:
        if not (np.isfinite(depth_scale) and depth_scale > 0):
            raise InputError(f"depth_scale must be a finite positive number, got {depth_scale!r}")
        out = depth.astype(np.float32) * np.float32(depth_scale)
        out[depth == 0] = np.nan
        return out
    if np.issubdtype(depth.dtype, np.floating):
        out = depth.astype(np.float32)  # copies
        with np.errstate(invalid="ignore"):
            out[~(np.isfinite(out) & (out > 0))] = np.nan
        return out
    raise InputError(f"depth dtype must be uint16 (millimetres) or float (metres), got {depth.dtype}")


def validate_intrinsics(K: np.ndarray | Sequence[float]) -> np.ndarray:
    """Check a pinhole intrinsics matrix.

    Args:
        K: ``[3, 3]`` intrinsics, or the 9 row-major values of a ROS ``CameraInfo.k``.

    Returns:
        ``[3, 3]`` float64 copy.

    Raises:
        InputError: wrong shape, non-finite entries, ``fx <= 0`` or ``fy <= 0``, or a bottom row other
            than ``[0, 0, 1]``.
    """
    try:
        k = np.array(K, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"intrinsics K must be numeric, got {type(K).__name__}") from exc
    if k.shape == (9,):
        k = k.reshape(3, 3)
    if k.shape != (3, 3):
        raise InputError(f"intrinsics K must have shape [3, 3] (or 9 values), got shape {k.shape}")
    if not np.all(np.isfinite(k)):
        raise InputError(f"intrinsics K must be finite, got {k.tolist()}")
    if not (k[0, 0] > 0 and k[1, 1] > 0):
        raise InputError(f"intrinsics K needs fx > 0 and fy > 0, got fx={k[0, 0]}, fy={k[1, 1]}")
    if not np.array_equal(k[2], [0.0, 0.0, 1.0]):
        raise InputError(f"intrinsics K bottom row must be [0, 0, 1], got {k[2].tolist()}")
    return k


def _as_xy(xy: np.ndarray) -> np.ndarray:
    """``[K, 2]`` float64 view of keypoint pixels, or :class:`InputError`."""
    a = np.asarray(xy, dtype=np.float64)
    if a.ndim != 2 or a.shape[1] != 2:
        raise InputError(f"keypoints xy must have shape [K, 2], got shape {a.shape}")
    return a


def keypoint_depth_range(depth: np.ndarray, xy: np.ndarray, radius: int = 2) -> float:
    """Depth range (max - min, metres) of the keypoints ``xy`` with a valid depth (:func:`sample_depth`);
    0 when none has one. The object's depth extent seen from a reference view."""
    z, ok = sample_depth(depth, xy, radius)
    return float(np.max(z[ok]) - np.min(z[ok])) if ok.any() else 0.0


def sample_depth(depth: np.ndarray, xy: np.ndarray, radius: int = 2, min_valid: int = 1,
                 cluster_gap: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Robust depth per keypoint: median of the valid depths in a window around the nearest pixel.

    The window is the ``(2 * radius + 1)^2`` pixels centred on the rounded pixel (``floor(x + 0.5)``),
    truncated at the image border (pixels outside are simply absent, not repeated). Depths that are
    non-finite or ``<= 0`` are ignored. Fully vectorised over keypoints and window pixels.

    Depth discontinuities: with ``cluster_gap=None`` (default) the plain median is used; it is robust as
    long as most of the window lies on one surface, but a window straddling an object edge returns the
    depth of whichever surface covers more than half of it. With ``cluster_gap=g`` the sorted valid depths
    are split wherever consecutive values differ by more than ``g * depth`` (relative gap, e.g. ``0.05``),
    and the median of the *nearest* cluster holding at least ``min_valid`` samples is returned (foreground
    wins; raise ``min_valid`` so that a few flying pixels cannot form that cluster).

    Args:
        depth: ``[H, W]`` float depth in metres, ``NaN`` invalid (the output of :func:`validate_depth`).
        xy: ``[K, 2]`` pixels ``(x, y)``.
        radius: window half size in pixels, ``>= 0``.
        min_valid: minimum number of valid depths (in the chosen cluster) for a keypoint to be ``ok``.
        cluster_gap: optional relative gap for the nearest-cluster rule, ``> 0``.

    Returns:
        ``z``: ``[K]`` float64 metres, ``NaN`` where not ok; ``ok``: ``[K]`` bool. Keypoints with non-finite
        ``xy`` or whose rounded pixel lies outside the image are not ok.
    """
    if not isinstance(depth, np.ndarray) or depth.ndim != 2 or not np.issubdtype(depth.dtype, np.floating):
        raise InputError("depth must be a float [H, W] array in metres (use validate_depth first), got "
                         f"{getattr(depth, 'dtype', type(depth).__name__)} {np.shape(depth)}")
    if int(radius) != radius or radius < 0:
        raise ConfigError(f"radius must be an integer >= 0, got {radius!r}")
    if int(min_valid) != min_valid or min_valid < 1:
        raise ConfigError(f"min_valid must be an integer >= 1, got {min_valid!r}")
    if cluster_gap is not None and not (np.isfinite(cluster_gap) and cluster_gap > 0):
        raise ConfigError(f"cluster_gap must be None or a finite number > 0, got {cluster_gap!r}")
    a = _as_xy(xy)
    h, w = depth.shape
    n = a.shape[0]
    z = np.full(n, np.nan)
    finite = np.all(np.isfinite(a), axis=1)
    centre = np.zeros((n, 2), dtype=np.int64)
    centre[finite] = np.floor(a[finite] + 0.5).astype(np.int64)
    inside = finite & (centre[:, 0] >= 0) & (centre[:, 0] < w) & (centre[:, 1] >= 0) & (centre[:, 1] < h)
    if n == 0 or h == 0 or w == 0 or not inside.any():
        return z, np.zeros(n, dtype=bool)
    r = int(radius)
    d = np.arange(-r, r + 1)
    dy, dx = (g.ravel() for g in np.meshgrid(d, d, indexing="ij"))  # [M] window offsets
    c = centre[inside]
    px = c[:, :1] + dx[None, :]  # [K', M]
    py = c[:, 1:] + dy[None, :]
    in_img = (px >= 0) & (px < w) & (py >= 0) & (py < h)
    vals = depth[np.clip(py, 0, h - 1), np.clip(px, 0, w - 1)].astype(np.float64)
    with np.errstate(invalid="ignore"):
        good = in_img & np.isfinite(vals) & (vals > 0)
    vals = np.sort(np.where(good, vals, np.inf), axis=1)  # valid depths first, ascending
    count = good.sum(axis=1)
    rows = np.arange(vals.shape[0])
    if cluster_gap is None:
        start = np.zeros_like(count)
        size = count
    else:
        start, size = _nearest_cluster(vals, count, float(cluster_gap), int(min_valid))
    ok_in = size >= min_valid
    lo = np.clip(start + (size - 1) // 2, 0, vals.shape[1] - 1)
    hi = np.clip(start + size // 2, 0, vals.shape[1] - 1)
    med = 0.5 * (vals[rows, lo] + vals[rows, hi])
    z_in = np.where(ok_in, med, np.nan)
    z[inside] = z_in
    ok = np.zeros(n, dtype=bool)
    ok[inside] = ok_in
    return z, ok


def _nearest_cluster(vals: np.ndarray, count: np.ndarray, gap: float,
                     min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Start index and size of the nearest cluster of ``>= min_size`` values in each sorted row.

    ``vals``: ``[K, M]`` ascending, valid values first then ``inf``; ``count``: ``[K]`` valid values per row.
    A new cluster starts where a value exceeds its predecessor by more than ``gap`` times the predecessor.
    Rows without such a cluster get size 0.
    """
    k, m = vals.shape
    j = np.arange(m)[None, :]
    valid = j < count[:, None]
    with np.errstate(invalid="ignore"):
        jump = np.ones((k, m), dtype=bool)
        jump[:, 1:] = (vals[:, 1:] - vals[:, :-1]) > gap * vals[:, :-1]
    jump |= ~valid  # the invalid tail never joins a valid cluster
    start = np.maximum.accumulate(np.where(jump, j, 0), axis=1)  # first index of each element's cluster
    ends = np.where(np.roll(jump, -1, axis=1) | (j == m - 1), j, m)  # last index of a cluster
    end = np.minimum.accumulate(ends[:, ::-1], axis=1)[:, ::-1]
    size = np.where(valid, end - start + 1, 0)
    big = size >= min_size
    first = np.argmax(big, axis=1)
    rows = np.arange(k)
    has = big[rows, first]
    return np.where(has, start[rows, first], 0), np.where(has, size[rows, first], 0)


def backproject(xy: np.ndarray, z: np.ndarray, K: np.ndarray,
                distortion: Distortion | None = None) -> np.ndarray:
    """Lift pixels with known depth to 3D: ``p = z * [x_n, y_n, 1]^T``, ``(x_n, y_n)`` the normalised ray.

    Without distortion (``None`` or all-zero coefficients) the ray is ``K^-1 [x, y, 1]^T``, exactly as before
    distortion support existed; otherwise it comes from :func:`undistort_points`.

    Args:
        xy: ``[K, 2]`` pixels (of the distorted image when ``distortion`` is given); z: ``[K]`` depth along the
        optical axis, metres; K: ``[3, 3]`` intrinsics; distortion: optional lens distortion of that image.

    Returns:
        ``[K, 3]`` points in the camera optical frame, metres; ``NaN`` rows where ``z`` or ``xy`` is not
        finite, ``z <= 0``, or the pixel cannot be undistorted (see :func:`undistort_points`).
    """
    a = _as_xy(xy)
    zz = np.asarray(z, dtype=np.float64)
    if zz.shape != (a.shape[0],):
        raise InputError(f"z must have shape [{a.shape[0]}] to match xy, got shape {zz.shape}")
    k = validate_intrinsics(K)
    dist = active(distortion)
    if dist is None:
        rays = np.linalg.solve(k, np.concatenate([a, np.ones((a.shape[0], 1))], axis=1).T).T  # [K, 3], z = 1
    else:
        rays = np.concatenate([undistort_points(a, k, dist), np.ones((a.shape[0], 1))], axis=1)
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(zz) & (zz > 0)) | ~np.all(np.isfinite(a), axis=1) | ~np.all(np.isfinite(rays), axis=1)
    pts = rays * zz[:, None]
    pts[bad] = np.nan
    return pts


def project(points: np.ndarray, K: np.ndarray) -> np.ndarray:
    """Project 3D points to pixels: ``[x, y] = (K p)[:2] / p_z``.

    Args:
        points: ``[K, 3]`` camera optical frame, metres; K: ``[3, 3]`` intrinsics.

    Returns:
        ``[K, 2]`` pixels; ``NaN`` rows for points with ``z <= 0`` or non-finite coordinates.
    """
    p = np.asarray(points, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise InputError(f"points must have shape [K, 3], got shape {p.shape}")
    k = validate_intrinsics(K)
    with np.errstate(invalid="ignore"):
        good = np.all(np.isfinite(p), axis=1) & (p[:, 2] > 0)
    out = np.full((p.shape[0], 2), np.nan)
    q = p[good] @ k.T
    out[good] = q[:, :2] / q[:, 2:]
    return out


def lift(depth: np.ndarray, xy: np.ndarray, K: np.ndarray, radius: int = 2, min_valid: int = 1,
         cluster_gap: float | None = None,
         distortion: Distortion | None = None) -> tuple[np.ndarray, np.ndarray]:
    """3D points of keypoints from a depth image: :func:`sample_depth` then :func:`backproject`.

    The keypoint's own sub-pixel ``xy`` is back-projected (not the rounded pixel). With ``distortion`` the
    depth is still sampled at ``xy`` (depth registered to the distorted image, as RealSense's aligned depth
    is) and only the ray is undistorted.

    Args:
        depth: ``[H, W]`` float metres, ``NaN`` invalid; xy: ``[K, 2]`` pixels; K: ``[3, 3]`` intrinsics;
        radius, min_valid, cluster_gap: as in :func:`sample_depth`; distortion: optional lens distortion of
        the image (None or all-zero: the exact pinhole behaviour).

    Returns:
        ``points``: ``[K, 3]`` camera optical frame, metres, ``NaN`` where none; ``has_3d``: ``[K]`` bool
        (also False where the pixel cannot be undistorted).
    """
    k = validate_intrinsics(K)
    z, ok = sample_depth(depth, xy, radius=radius, min_valid=min_valid, cluster_gap=cluster_gap)
    if active(distortion) is None:
        return backproject(xy, z, k), ok
    pts = backproject(xy, z, k, distortion)
    return pts, ok & np.all(np.isfinite(pts), axis=1)


def undistort_points(xy: np.ndarray, K: np.ndarray, distortion: Distortion | None) -> np.ndarray:
    """Normalised undistorted image coordinates ``(X/Z, Y/Z)`` of distorted pixels (inverse of
    :func:`distort_points`).

    Solved per point by Newton iteration on the forward model (2D for ``plumb_bob`` /
    ``rational_polynomial``, on the angle for ``equidistant``) started at the distorted point, to a residual
    below ~1e-12 (normalised units). A solution is accepted only where the model is locally invertible
    (positive Jacobian; ``theta < 90`` degrees for ``equidistant``), which rejects the folded region beyond
    the calibrated field of view of a strongly distorting polynomial.

    Args:
        xy: ``[N, 2]`` pixels ``(x, y)`` of the distorted (raw) image.
        K: ``[3, 3]`` intrinsics of that image (skew allowed).
        distortion: the lens model; None or all-zero coefficients: plain ``K^-1``.

    Returns:
        ``[N, 2]`` float64 normalised coordinates (multiply by a depth ``Z`` for the 3D point ``(X, Y, Z)`` in
        the camera optical frame); NaN rows for non-finite pixels or pixels the iteration cannot undistort.

    Raises:
        InputError: wrong shapes, bad ``K`` or a ``distortion`` that is not a :class:`Distortion`.
    """
    a = _as_xy(xy)
    k = validate_intrinsics(K)
    dist = active(distortion)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        yd = (a[:, 1] - k[1, 2]) / k[1, 1]
        target = np.stack([(a[:, 0] - k[0, 2] - k[0, 1] * yd) / k[0, 0], yd], axis=1)  # distorted, normalised
        return target if dist is None else undistort_normalised(target, dist)


def distort_points(xy_norm: np.ndarray, K: np.ndarray, distortion: Distortion | None) -> np.ndarray:
    """Pixels of the distorted image for normalised undistorted coordinates (the forward lens model).

    Args:
        xy_norm: ``[N, 2]`` normalised coordinates ``(X/Z, Y/Z)`` of points in the camera optical frame.
        K: ``[3, 3]`` intrinsics; distortion: the lens model (None or all-zero: plain pinhole ``K``).

    Returns:
        ``[N, 2]`` float64 pixels ``K [x', y', 1]^T``; NaN rows for non-finite input.

    Raises:
        InputError: wrong shapes, bad ``K`` or a ``distortion`` that is not a :class:`Distortion`.
    """
    a = _as_xy(xy_norm)
    k = validate_intrinsics(K)
    dist = active(distortion)
    with np.errstate(invalid="ignore", over="ignore"):
        xd = a if dist is None else distort_normalised(a, dist)
        return np.stack([k[0, 0] * xd[:, 0] + k[0, 1] * xd[:, 1] + k[0, 2], k[1, 1] * xd[:, 1] + k[1, 2]], axis=1)
