"""Random materials: a base colour plus a *solid* procedural texture.

A texture is a function of the 3D position in the frame of the thing it paints (the object frame for the target
object, the world frame for the room and clutter), so the same surface point has the same albedo in every frame
and from every viewpoint. Shading (Lambert + ambient, shadows) is applied by the renderer.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("plain", "stripes", "checks", "bands", "rings", "angular", "dots")


def hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    import colorsys

    return np.asarray(colorsys.hsv_to_rgb(h % 1.0, s, v), dtype=np.float32)


def random_colour(rng: np.random.Generator, s=(0.15, 0.9), v=(0.3, 0.95)) -> np.ndarray:
    return hsv_to_rgb(rng.random(), rng.uniform(*s), rng.uniform(*v))


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _smooth_step(x: np.ndarray, w: float = 0.15) -> np.ndarray:
    return np.clip(0.5 + x * np.float32(1 / (2 * w)), 0.0, 1.0).astype(np.float32)


@dataclass
class Material:
    """Base/second/third colours ``colours`` [3, 3] (RGB in [0, 1]), a texture ``kind`` and its parameters.

    ``scale`` is the pattern's period in metres; ``dirs`` [3, 3] random unit directions; ``phase`` [3];
    ``window`` the half-angle (radians) of a print window centred on the azimuth ``window_yaw`` (0: none), between
    the heights ``window_z``; ``grain`` the amplitude of a fine brightness noise; ``emissive`` materials ignore the
    light (a bulb).
    """

    kind: str
    colours: np.ndarray
    scale: float
    dirs: np.ndarray
    phase: np.ndarray
    count: int = 8
    window: float = 0.0
    window_z: tuple[float, float] = (-1e9, 1e9)
    window_yaw: float = 0.0
    grain: float = 0.05
    emissive: bool = False

    def albedo(self, p) -> np.ndarray:
        """Albedo [N, 3] float32 at points ``p`` (this material's frame, metres): ``[N, 3]`` or a sequence of
        the three coordinate arrays ``(x, y, z)`` (faster)."""
        p = _Points(p)
        c0, c1, c2 = (self.colours[i] for i in range(3))
        m = self._pattern(self.kind, p)
        out = c0[None] + m[:, None] * (c1 - c0)[None]
        if self.window > 0:  # a "label"/print: a second pattern in an angular window
            ang = np.abs(np.angle(np.exp(1j * (np.arctan2(p.y, p.x) - self.window_yaw)))).astype(np.float32)
            inside = (ang < self.window) & (p.z > self.window_z[0]) & (p.z < self.window_z[1])
            if inside.any():
                q = p.take(inside)
                m2 = self._pattern("checks" if self.count % 2 else "dots", q, scale=self.scale * 0.5)
                edge = np.abs(ang[inside] - self.window) < 0.04
                lab = c2[None] * (1 - m2[:, None]) + (1 - c2[None]) * m2[:, None]
                lab[edge] = c1
                out[inside] = lab
        if self.grain > 0:
            d, ph = self.dirs, self.phase
            g = np.sin(p.dot(d[0] * 613.0) + ph[0]) * np.sin(p.dot(d[1] * 487.0) + ph[1])
            g *= np.float32(self.grain)
            g += np.float32(1.0)
            out *= g[:, None]
        return np.clip(out, 0.0, 1.0, out=out)

    def _pattern(self, kind: str, p: "_Points", scale: float | None = None) -> np.ndarray:
        s = float(scale or self.scale)
        d, ph = self.dirs, self.phase
        two_pi = 2 * np.pi
        if kind == "plain":
            return (0.075 * (1 + np.sin(p.dot(d[0] * (two_pi / (4 * s))) + ph[0]))).astype(np.float32)
        if kind == "stripes":
            return _smooth_step(np.sin(p.dot(d[0] * (two_pi / s)) + ph[0]), 0.2)
        if kind == "checks":
            k = sum(np.floor(c * np.float32(1 / s) + np.float32(ph[i] / two_pi)).astype(np.int64)
                    for i, c in enumerate(p.xyz))
            return (k & 1).astype(np.float32)
        if kind == "bands":
            n = sum(np.sin(p.dot(d[i] * (two_pi / (s * (1 + 0.6 * i)))) + ph[i]) for i in range(3)) / 3
            return _smooth_step(n, 0.12)
        if kind == "rings":
            w = p.z + np.float32(0.15 * s) * np.sin(p.dot(d[0] * (two_pi / (3 * s))))
            return _smooth_step(np.sin(w * np.float32(two_pi / s) + ph[0]), 0.25)
        if kind == "angular":
            a = np.arctan2(p.y, p.x)
            return _smooth_step(np.sin(a * self.count + ph[0] + p.z * np.float32(2.0 / s)), 0.25)
        if kind == "dots":
            f = [(c * np.float32(1 / s) + np.float32(ph[i] / two_pi)) % 1.0 - 0.5 for i, c in enumerate(p.xyz)]
            return ((f[0] * f[0] + f[1] * f[1] + f[2] * f[2]) < 0.09).astype(np.float32)
        raise ValueError(f"unknown texture kind {kind!r}")  # pragma: no cover


class _Points:
    """Points as three float32 coordinate arrays (dot products without BLAS)."""

    def __init__(self, p):
        if isinstance(p, np.ndarray) and p.ndim == 2:
            p = [p[:, 0], p[:, 1], p[:, 2]]
        self.xyz = [np.asarray(c, dtype=np.float32) for c in p]
        self.x, self.y, self.z = self.xyz

    def dot(self, v) -> np.ndarray:
        return self.x * np.float32(v[0]) + self.y * np.float32(v[1]) + self.z * np.float32(v[2])

    def take(self, mask) -> "_Points":
        return _Points([c[mask] for c in self.xyz])


def random_material(rng: np.random.Generator, kinds=KINDS, scale=(0.006, 0.03), s=(0.15, 0.9), v=(0.3, 0.95),
                    grain=(0.02, 0.08), label: float = 0.0, label_z=(-1e9, 1e9)) -> Material:
    """A random material of one of ``kinds``; ``label`` > 0 adds a print window of that half-angle."""
    kind = str(kinds[int(rng.integers(len(kinds)))])
    c0 = random_colour(rng, s, v)
    c1 = random_colour(rng, s, v)
    if np.abs(c1 - c0).sum() < 0.5:  # keep patterns visible
        c1 = np.clip(1.0 - c0 + rng.uniform(-0.1, 0.1, 3), 0.05, 0.95).astype(np.float32)
    c2 = random_colour(rng, (0.3, 1.0), (0.5, 1.0))
    return Material(kind=kind, colours=np.stack([c0, c1, c2]).astype(np.float32),
                    scale=float(rng.uniform(*scale)), dirs=_unit(rng.normal(size=(3, 3))),
                    phase=rng.uniform(0, 2 * np.pi, 3), count=int(rng.integers(5, 17)), window=label,
                    window_z=tuple(float(z) for z in label_z), grain=float(rng.uniform(*grain)))


def object_materials(category: str, part_names: list[str], params: dict, rng: np.random.Generator) -> list[Material]:
    """Materials for the parts of one object instance (category-aware: a bottle's label, a mug's print, a lamp's
    bulb)."""
    mats = []
    for part in part_names:
        if part == "inside":
            m = random_material(rng, ("plain", "bands"), s=(0.0, 0.4), v=(0.6, 0.95))
        elif part == "bulb":
            m = random_material(rng, ("plain",), s=(0.1, 0.35), v=(0.95, 1.0), grain=(0.0, 0.01))
            m.colours[0] = hsv_to_rgb(0.13, 0.25, 1.0)
            m.emissive = True
        elif part == "label":
            zb = params["body_fraction"] * params["height"]
            m = random_material(rng, ("stripes", "bands", "checks", "dots"), scale=(0.008, 0.02),
                                label=float(rng.uniform(0.5, 1.1)),
                                label_z=(params["label_low"] * zb + 0.006, params["label_high"] * zb - 0.006))
        elif part == "body" and category == "mug" and rng.random() < 0.6:
            h = params["height"]
            m = random_material(rng, KINDS, label=float(rng.uniform(0.4, 0.9)), label_z=(0.25 * h, 0.8 * h))
            m.window_yaw = float(rng.choice([np.pi, np.pi / 2, -np.pi / 2]))  # away from the handle or aside
        elif part in ("cap", "joint", "socket"):
            m = random_material(rng, ("plain", "stripes", "rings"), scale=(0.002, 0.008))
        else:
            m = random_material(rng)
        mats.append(m)
    return mats
