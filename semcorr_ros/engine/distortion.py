"""Lens distortion models of ROS ``CameraInfo`` on normalised image coordinates (pixels: :mod:`.geometry`).

Lens distortion (:class:`Distortion`) follows the models ROS ``CameraInfo`` names (``sensor_msgs``'
``distortion_models``), as published for OpenCV: with normalised undistorted coordinates ``(x, y)``,
``r^2 = x^2 + y^2``,

- ``plumb_bob`` (Brown-Conrady; ``d = k1, k2, p1, p2, k3``) and ``rational_polynomial``
  (``d = k1, k2, p1, p2, k3, k4, k5, k6``)::

      g  = (1 + k1 r^2 + k2 r^4 + k3 r^6) / (1 + k4 r^2 + k5 r^4 + k6 r^6)
      x' = x g + 2 p1 x y + p2 (r^2 + 2 x^2)
      y' = y g + p1 (r^2 + 2 y^2) + 2 p2 x y

- ``equidistant`` (Kannala-Brandt / OpenCV fisheye; ``d = k1, k2, k3, k4``)::

      theta = atan(r),  theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8)
      (x', y') = (theta_d / r) (x, y)

and the distorted pixel is ``K [x', y', 1]^T``. The inverse, :func:`undistort_normalised` (behind
:func:`semcorr_ros.engine.geometry.undistort_points`), is solved by Newton iteration.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semcorr_ros.errors import InputError

__all__ = ["DISTORTION_MODELS", "Distortion", "active", "distort_normalised", "undistort_normalised"]

#: Supported distortion models (ROS ``CameraInfo.distortion_model``) -> names of their coefficients, in the
#: order of ``CameraInfo.d``.
DISTORTION_MODELS: dict[str, tuple[str, ...]] = {
    "plumb_bob": ("k1", "k2", "p1", "p2", "k3"),
    "rational_polynomial": ("k1", "k2", "p1", "p2", "k3", "k4", "k5", "k6"),
    "equidistant": ("k1", "k2", "k3", "k4"),
}


@dataclass(frozen=True)
class Distortion:
    """Lens distortion of a camera: a model of :data:`DISTORTION_MODELS` and its coefficients.

    Attributes:
        model: ``plumb_bob``, ``rational_polynomial`` or ``equidistant`` (the ROS ``distortion_model`` names).
        coeffs: the coefficients in ``CameraInfo.d`` order (5, 8 and 4 of them respectively), unitless
            (they act on normalised image coordinates).

    Raises:
        InputError: unknown model (lists the valid ones), a wrong number of coefficients, or non-finite ones.
    """

    model: str
    coeffs: tuple[float, ...]

    def __post_init__(self) -> None:
        names = DISTORTION_MODELS.get(self.model)
        if names is None:
            raise InputError(f"unknown distortion model {self.model!r}; supported: {', '.join(DISTORTION_MODELS)}")
        try:
            c = tuple(float(v) for v in self.coeffs)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{self.model} distortion coefficients must be numbers, got {self.coeffs!r}") from exc
        if len(c) != len(names):
            raise InputError(f"{self.model} needs {len(names)} coefficients ({', '.join(names)}), got {len(c)}")
        if not all(np.isfinite(c)):
            raise InputError(f"{self.model} distortion coefficients must be finite, got {list(c)}")
        object.__setattr__(self, "coeffs", c)

    @property
    def is_zero(self) -> bool:
        """True when every coefficient is 0 (the camera is an ideal pinhole)."""
        return not any(self.coeffs)


_NEWTON_ITERATIONS = 50
_NEWTON_TOL = 1e-12  # normalised units, relative to max(1, |x'|): ~1e-9 px at f = 1000 px


def active(distortion: Distortion | None) -> Distortion | None:
    """The distortion to apply, or None for an ideal pinhole (None or all-zero coefficients)."""
    if distortion is None:
        return None
    if not isinstance(distortion, Distortion):
        raise InputError(f"distortion must be a Distortion or None, got {type(distortion).__name__}")
    return None if distortion.is_zero else distortion


def _brown(xn: np.ndarray, d: Distortion) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Brown-Conrady / rational model at normalised ``xn [N, 2]``: ``(x' [N, 2], J00, J01, J11)``, the
    Jacobian ``d x' / d xn`` being symmetric (``J10 = J01``)."""
    k1, k2, p1, p2, k3, k4, k5, k6 = (d.coeffs + (0.0, 0.0, 0.0))[:8]
    x, y = xn[:, 0], xn[:, 1]
    r2 = x * x + y * y
    a = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    b = 1.0 + r2 * (k4 + r2 * (k5 + r2 * k6))
    g = a / b
    dg = ((k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2)) * b - a * (k4 + r2 * (2.0 * k5 + 3.0 * k6 * r2))) / (b * b)
    out = np.stack([x * g + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x),
                    y * g + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y], axis=1)
    j00 = g + 2.0 * x * x * dg + 2.0 * p1 * y + 6.0 * p2 * x
    j01 = 2.0 * x * y * dg + 2.0 * p1 * x + 2.0 * p2 * y
    j11 = g + 2.0 * y * y * dg + 6.0 * p1 * y + 2.0 * p2 * x
    return out, j00, j01, j11


def _theta_d(theta: np.ndarray, d: Distortion) -> tuple[np.ndarray, np.ndarray]:
    """Equidistant model: distorted angle ``theta_d(theta)`` and its derivative, radians."""
    k1, k2, k3, k4 = d.coeffs
    t2 = theta * theta
    td = theta * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
    return td, 1.0 + t2 * (3.0 * k1 + t2 * (5.0 * k2 + t2 * (7.0 * k3 + t2 * 9.0 * k4)))


def distort_normalised(xn: np.ndarray, d: Distortion) -> np.ndarray:
    """Normalised undistorted ``[N, 2]`` -> normalised distorted ``[N, 2]``."""
    if d.model != "equidistant":
        return _brown(xn, d)[0]
    r = np.hypot(xn[:, 0], xn[:, 1])
    td, _ = _theta_d(np.arctan(r), d)
    scale = np.divide(td, r, out=np.ones_like(r), where=r > 0)
    return xn * scale[:, None]


def undistort_normalised(target: np.ndarray, d: Distortion) -> np.ndarray:
    """Normalised distorted ``[N, 2]`` -> normalised undistorted ``[N, 2]`` by Newton iteration; NaN rows where it
    does not converge or converges outside the model's valid (invertible) region."""
    if d.model == "equidistant":
        return _undistort_equidistant(target, d)
    x = target.copy()
    tol = _NEWTON_TOL * np.maximum(1.0, np.abs(target).max(axis=1))
    todo = np.all(np.isfinite(target), axis=1)
    for _ in range(_NEWTON_ITERATIONS):
        sub = np.flatnonzero(todo)
        if sub.size == 0:
            break
        f, j00, j01, j11 = _brown(x[sub], d)
        res = f - target[sub]
        det = j00 * j11 - j01 * j01
        step = np.stack([j11 * res[:, 0] - j01 * res[:, 1], j00 * res[:, 1] - j01 * res[:, 0]], axis=1)
        x[sub] -= step / det[:, None]
        todo[sub[~(np.abs(res).max(axis=1) > tol[sub])]] = False  # converged, or NaN (rejected below)
    f, j00, j01, j11 = _brown(x, d)
    ok = (np.abs(f - target).max(axis=1) <= tol) & (j00 * j11 - j01 * j01 > 0) & (j00 > 0)
    x[~ok] = np.nan
    return x


def _undistort_equidistant(target: np.ndarray, d: Distortion) -> np.ndarray:
    """Equidistant model: distorted normalised ``[N, 2]`` -> undistorted ``[N, 2]`` (Newton on ``theta``)."""
    rd = np.hypot(target[:, 0], target[:, 1])
    theta = np.minimum(rd, 1.5)
    for _ in range(_NEWTON_ITERATIONS):
        td, dtd = _theta_d(theta, d)
        res = td - rd
        theta = theta - res / dtd
        if not np.any(np.abs(res) > _NEWTON_TOL):  # NaN rows compare False and stop nothing
            break
    td, dtd = _theta_d(theta, d)
    ok = (np.abs(td - rd) <= _NEWTON_TOL * np.maximum(1.0, rd)) & (dtd > 0) & (theta >= 0) & (theta < np.pi / 2)
    scale = np.divide(np.tan(theta), rd, out=np.ones_like(rd), where=rd > 0)
    out = target * scale[:, None]
    out[~ok] = np.nan
    return out
