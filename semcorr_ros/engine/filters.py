"""Temporal filters of the tracking mode: the One-Euro filter on points and on rotations (numpy only).

The One-Euro filter (Casiez, Roussel and Vogel, "1 Euro Filter: A Simple Speed-based Low-pass Filter for Noisy
Input in Interactive Systems", CHI 2012) is a first-order low-pass filter whose cutoff frequency grows with the
signal's speed: at rest it smooths hard (``min_cutoff``), when the signal moves it follows it with little lag
(``beta`` times the speed is added to the cutoff). Per sample, with ``dt`` seconds since the previous one::

    alpha(fc) = 1 / (1 + 1 / (2 pi fc dt))
    dx_hat    = alpha(d_cutoff) * (x - x_hat_prev) / dt + (1 - alpha(d_cutoff)) * dx_hat_prev
    fc        = min_cutoff + beta * |dx_hat| / scale
    x_hat     = alpha(fc) * x + (1 - alpha(fc)) * x_hat_prev

``scale`` makes ``beta`` independent of units and object size: speeds are measured in ``scale`` units per
second (the tracker passes the object's size, pixels for 2D keypoints and metres for 3D points). Each row of a
``[N, D]`` array is one point with its own state and one cutoff from the norm of its velocity (all ``D``
coordinates of a point share it). :class:`RotationFilter` applies the same rule on the rotation group: the
derivative is the angular velocity, the update a geodesic step ``R_hat = R_prev exp(alpha log(R_prev^T R))``.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["alpha", "OneEuroFilter", "RotationFilter", "rotation_log", "rotation_exp"]


def alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray:
    """Smoothing factor of a first-order low-pass filter with ``cutoff`` Hz at sampling interval ``dt`` s."""
    tau = 1.0 / (2.0 * math.pi * np.asarray(cutoff, dtype=np.float64))
    return 1.0 / (1.0 + tau / dt)


class OneEuroFilter:
    """One-Euro filter of ``N`` points of dimension ``D`` (rows filtered independently).

    Args:
        min_cutoff: cutoff at rest, Hz (lower: smoother at rest, more lag on slow motion).
        beta: speed coefficient (higher: less lag when moving), per ``scale`` unit of speed.
        d_cutoff: cutoff of the speed estimate, Hz.
        max_gap: a row not updated for more than this many seconds restarts from its next measurement.
        reset_jump: a measurement farther than this many ``scale`` units from the row's estimate restarts the row
            there (a re-detected point is not dragged in from where it was); ``inf``: never.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 1.0, d_cutoff: float = 1.0, max_gap: float = 0.5,
                 reset_jump: float = math.inf) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError(f"One-Euro filter: min_cutoff and d_cutoff must be > 0 and beta >= 0, got "
                             f"{min_cutoff}, {d_cutoff}, {beta}")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.max_gap, self.reset_jump = float(max_gap), float(reset_jump)
        self.x: np.ndarray | None = None        # [N, D] estimates (NaN: no state)
        self.dx: np.ndarray | None = None       # [N, D] speed estimates, units per second
        self.t: np.ndarray | None = None        # [N] time of each row's last update, s (NaN: never)

    def reset(self) -> None:
        """Forget every row."""
        self.x = self.dx = self.t = None

    def __call__(self, x: np.ndarray, t: float, mask: np.ndarray | None = None, scale: float = 1.0) -> np.ndarray:
        """Filter one sample.

        Args:
            x: ``[N, D]`` measurements (rows with non-finite values count as missing).
            t: time of the sample, seconds (must increase; a sample at or before a row's last one restarts it).
            mask: ``[N]`` bool, rows to update (default: the finite rows); the others keep their state.
            scale: size of one speed unit (e.g. the object's size in the units of ``x``), > 0.

        Returns:
            ``[N, D]`` filtered values; rows without a measurement this sample are returned as given (``x``).
        """
        x = np.array(x, dtype=np.float64, copy=True)
        if x.ndim == 1:
            x = x[:, None]
        n, d = x.shape
        ok = np.isfinite(x).all(1)
        if mask is not None:
            ok &= np.asarray(mask, bool).reshape(n)
        scale = float(scale) if np.isfinite(scale) and scale > 0 else 1.0
        if self.x is None or self.x.shape != (n, d) or not np.isfinite(t):
            self.x, self.dx, self.t = np.full((n, d), np.nan), np.zeros((n, d)), np.full(n, np.nan)
        dt = t - self.t
        fresh = ok & ~(np.isfinite(dt) & (dt > 0) & (dt <= self.max_gap))
        if np.isfinite(self.reset_jump):
            jump = np.linalg.norm(x - self.x, axis=1) / scale
            fresh |= ok & np.isfinite(jump) & (jump > self.reset_jump)
        step = ok & ~fresh
        out = x.copy()
        if step.any():
            dts = dt[step][:, None]
            speed = (x[step] - self.x[step]) / dts
            dx = alpha(self.d_cutoff, dts) * speed + (1.0 - alpha(self.d_cutoff, dts)) * self.dx[step]
            cutoff = self.min_cutoff + self.beta * np.linalg.norm(dx, axis=1, keepdims=True) / scale
            a = alpha(cutoff, dts)
            out[step] = a * x[step] + (1.0 - a) * self.x[step]
            self.dx[step] = dx
        self.dx[fresh] = 0.0
        self.x[ok] = out[ok]
        self.t[ok] = t
        return out


def rotation_log(R: np.ndarray) -> np.ndarray:
    """Rotation vector ``[3]`` (axis times angle, radians) of a ``[3, 3]`` rotation."""
    R = np.asarray(R, dtype=np.float64)
    c = np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)
    angle = math.acos(c)
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    if angle < 1e-6:
        return 0.5 * w
    if math.pi - angle < 1e-4:  # near 180 degrees: the axis from the symmetric part
        axis = np.sqrt(np.clip((np.diag(R) + 1.0) / 2.0, 0.0, None))
        k = int(np.argmax(axis))
        signs = np.sign(R[k] + R[:, k])
        signs[k] = 1.0
        axis = axis * np.where(signs == 0, 1.0, signs)
        return axis / (np.linalg.norm(axis) or 1.0) * angle
    return w * (angle / (2.0 * math.sin(angle)))


def nearest_rotation(M: np.ndarray) -> np.ndarray:
    """The rotation nearest to a ``[3, 3]`` matrix (Frobenius norm; SVD with the determinant fixed)."""
    u, _, vt = np.linalg.svd(np.asarray(M, dtype=np.float64))
    return u @ np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt)) or 1.0]) @ vt


def rotation_exp(w: np.ndarray) -> np.ndarray:
    """Rotation ``[3, 3]`` of a rotation vector ``w [3]`` (Rodrigues)."""
    w = np.asarray(w, dtype=np.float64).reshape(3)
    angle = float(np.linalg.norm(w))
    if angle < 1e-12:
        return np.eye(3)
    k = w / angle
    Kx = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * Kx + (1.0 - math.cos(angle)) * (Kx @ Kx)


class RotationFilter:
    """One-Euro filter of a rotation ``[3, 3]`` (speed = angular speed, radians per second; ``beta`` per rad/s).

    Args:
        min_cutoff, beta, d_cutoff, max_gap: as :class:`OneEuroFilter`.
        reset_angle: a measurement more than this many radians from the estimate restarts the filter there.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 1.0, d_cutoff: float = 1.0, max_gap: float = 0.5,
                 reset_angle: float = math.radians(45.0)) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("rotation filter: min_cutoff and d_cutoff must be > 0 and beta >= 0")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.max_gap, self.reset_angle = float(max_gap), float(reset_angle)
        self.R: np.ndarray | None = None
        self.w = np.zeros(3)
        self.t = math.nan

    def reset(self) -> None:
        self.R, self.w, self.t = None, np.zeros(3), math.nan

    def __call__(self, R: np.ndarray, t: float) -> np.ndarray:
        """Filter one rotation measured at time ``t`` (seconds); a non-finite ``R`` leaves the state as it is
        and is returned unchanged."""
        R = np.asarray(R, dtype=np.float64)
        if R.shape != (3, 3) or not np.isfinite(R).all():
            return R
        dt = t - self.t
        if self.R is None or not (np.isfinite(dt) and 0 < dt <= self.max_gap):
            self.R, self.w, self.t = R.copy(), np.zeros(3), t
            return R.copy()
        delta = rotation_log(self.R.T @ R)  # in the estimate's frame
        if np.linalg.norm(delta) > self.reset_angle:
            self.R, self.w, self.t = R.copy(), np.zeros(3), t
            return R.copy()
        ad = float(alpha(self.d_cutoff, dt))
        self.w = ad * delta / dt + (1.0 - ad) * self.w
        a = float(alpha(self.min_cutoff + self.beta * float(np.linalg.norm(self.w)), dt))
        out = self.R @ rotation_exp(a * delta)
        out = nearest_rotation(out)  # keep it a rotation despite rounding
        self.R, self.t = out, t
        return out.copy()
