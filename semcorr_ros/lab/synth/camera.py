"""Camera geometry of the synthetic scenes: intrinsics, rigid poses, the smooth camera orbit, static views and
the choice of camera distance (framing).

Shapes and units: ``K`` [3, 3] in pixels; poses are 4x4 homogeneous ``T_a_b`` (``p_a = T_a_b @ p_b``) in metres;
angles in radians unless a name says ``_deg``; times in seconds.

Frames: the world has +z up with the floor at z = 0; azimuths are measured in the object frame (the category's
canonical frame yawed by ``yaw`` about the world z axis); cameras use the optical convention (x right, y down,
z forward), so ``look_at`` returns ``T_world_camera`` of an optical-frame camera.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from semcorr_ros.lab.synth.world import World


#: RealSense D435-like colour intrinsics at 640x480 (scaled with the width for other sizes).
DEFAULT_FX = 615.0


def intrinsics(width: int, height: int, fx: float | None = None) -> np.ndarray:
    """``K`` [3, 3]: ``fx = fy = 615 * width / 640`` unless given, principal point at the image centre."""
    f = float(fx) if fx is not None else DEFAULT_FX * width / 640.0
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])


def _rot_z(a: float) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _pose(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def look_at(position: np.ndarray, target: np.ndarray, roll: float = 0.0) -> np.ndarray:
    """``T_world_camera`` of an optical-frame camera at ``position`` looking at ``target`` (world z up)."""
    z = target - position
    z = z / np.linalg.norm(z)
    x = np.cross(z, [0.0, 0.0, 1.0])
    if np.linalg.norm(x) < 1e-9:  # looking straight down/up
        x = np.array([1.0, 0.0, 0.0])
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    if roll:
        c, s = np.cos(roll), np.sin(roll)
        x, y = c * x + s * y, -s * x + c * y
    return _pose(np.stack([x, y, z], 1), position)


@dataclass
class Orbit:
    """Smooth camera motion around ``centre`` (world), azimuth measured in the object frame (yaw ``yaw``)."""

    centre: np.ndarray
    yaw: float
    az0: float
    az_amp: float
    az_speed: float
    az_phase: float
    el0: float
    el_amp: float
    el_period: float
    el_phase: float
    dist: float
    dist_amp: float
    dist_period: float
    dist_phase: float
    look_amp: np.ndarray
    look_period: np.ndarray
    look_phase: np.ndarray
    roll_amp: float
    roll_period: float
    roll_phase: float
    #: ``full`` orbits: seconds of one 360-degree turn (the azimuth then grows steadily from ``az0``)
    full_period: float | None = None

    @staticmethod
    def sample(rng: np.random.Generator, centre: np.ndarray, yaw: float, radius: float, small: bool) -> "Orbit":
        """A random orbit around the reference's side of the object: object-frame azimuth centred at 20-50 deg
        (the reference view is at 35 deg) swinging +-25-45 deg, i.e. within about -25..95 deg of the front (+x).
        A robot looks at the side its reference shows; the categories are near-symmetric about the x-z plane, so
        views from behind would make left/right keypoints ambiguous by construction."""
        deg = np.pi / 180
        return Orbit(centre=np.asarray(centre, float), yaw=yaw, az0=rng.uniform(20, 50) * deg,
                     az_amp=rng.uniform(25, 45) * deg, az_speed=rng.uniform(18, 35) * deg,
                     az_phase=rng.uniform(-1.0, 1.0),
                     el0=(rng.uniform(18, 34) if small else rng.uniform(22, 42)) * deg,
                     el_amp=rng.uniform(3, 8) * deg,
                     el_period=rng.uniform(5, 10), el_phase=rng.uniform(0, 2 * np.pi), dist=1.0,
                     dist_amp=rng.uniform(0.03, 0.06) if small else rng.uniform(0.05, 0.12),
                     dist_period=rng.uniform(4, 9), dist_phase=rng.uniform(0, 2 * np.pi),
                     look_amp=rng.uniform(0.05, 0.2, 3) * radius, look_period=rng.uniform(3, 8, 3),
                     look_phase=rng.uniform(0, 2 * np.pi, 3), roll_amp=rng.uniform(0, 4) * deg,
                     roll_period=rng.uniform(4, 9), roll_phase=rng.uniform(0, 2 * np.pi))

    def azimuth(self, t: float) -> float:
        """Object-frame azimuth (rad) of the camera at time ``t`` (s): bounded, smooth, moving at ~az_speed
        (``full``: ``az0 + 2 pi t / full_period``, one turn)."""
        if self.full_period is not None:
            return self.az0 + 2 * np.pi * t / self.full_period
        return self.az0 + self.az_amp * np.sin(self.az_speed * t / self.az_amp + self.az_phase)

    def pose(self, t: float, dist_scale: float = 1.0) -> np.ndarray:
        el = self.el0 + self.el_amp * np.sin(2 * np.pi * t / self.el_period + self.el_phase)
        d = self.dist * dist_scale * (1 + self.dist_amp * np.sin(2 * np.pi * t / self.dist_period + self.dist_phase))
        a = self.azimuth(t) + self.yaw
        pos = self.centre + d * np.array([np.cos(el) * np.cos(a), np.cos(el) * np.sin(a), np.sin(el)])
        look = self.centre + self.look_amp * np.sin(2 * np.pi * t / self.look_period + self.look_phase)
        roll = self.roll_amp * np.sin(2 * np.pi * t / self.roll_period + self.roll_phase)
        return look_at(pos, look, roll)

    def max_height(self) -> float:
        return float(self.centre[2] + self.dist * (1 + self.dist_amp) * np.sin(self.el0 + self.el_amp))


def view_pose(centre: np.ndarray, yaw: float, azimuth: float, elevation: float, distance: float) -> np.ndarray:
    """``T_world_camera`` of a static view at object-frame ``azimuth``/``elevation`` (rad) looking at ``centre``."""
    a = azimuth + yaw
    pos = centre + distance * np.array([np.cos(elevation) * np.cos(a), np.cos(elevation) * np.sin(a),
                                        np.sin(elevation)])
    return look_at(pos, centre)


def _calibrate_distance(world: World, pose_fn, times: list[float], target: float, aspect: float,
                        fx_over_w: float, d0: float) -> float:
    """Scale of the camera distance such that the mean object fraction over ``times`` is ``target``."""
    w = 128
    h = max(16, int(round(w / aspect)))
    K = intrinsics(w, h, fx_over_w * w)
    scale = d0
    for _ in range(4):
        f = np.mean([world.target_fraction(pose_fn(t, scale), K, w, h) for t in times])
        if f <= 0:
            scale *= 0.7
            continue
        ratio = float(np.clip(np.sqrt(f / target), 0.5, 2.0))
        scale *= ratio
        if abs(ratio - 1) < 0.02:
            break
    return scale


def _fit_points_distance(orbit: Orbit, points_world: np.ndarray, K: np.ndarray, width: int, height: int,
                         d0: float, times: list[float], margin: float = 0.04) -> float:
    """The smallest orbit distance >= ``d0`` (in 4 % steps) at which every point projects inside the image,
    ``margin`` x the image size away from its border, at each of ``times``."""
    dist0 = orbit.dist
    lo_x, hi_x = margin * width, (1 - margin) * width
    lo_y, hi_y = margin * height, (1 - margin) * height
    d = d0
    try:
        for _ in range(60):
            orbit.dist = d
            ok = True
            for t in times:
                T_cw = np.linalg.inv(orbit.pose(t))
                p = points_world @ T_cw[:3, :3].T + T_cw[:3, 3]
                if (p[:, 2] <= 1e-3).any():
                    ok = False
                    break
                uv = p @ K.T
                u, v = uv[:, 0] / uv[:, 2], uv[:, 1] / uv[:, 2]
                if u.min() < lo_x or u.max() > hi_x or v.min() < lo_y or v.max() > hi_y:
                    ok = False
                    break
            if ok:
                return d
            d *= 1.04
        return d
    finally:
        orbit.dist = dist0


def _fit_distance(radius: float, K: np.ndarray, width: int, height: int, margin: float = 1.08) -> float:
    """Distance at which a sphere of ``radius`` centred on the optical axis fits the narrower field of view."""
    half = min(np.arctan(width / 2 / K[0, 0]), np.arctan(height / 2 / K[1, 1]))
    return margin * radius / np.sin(half)
