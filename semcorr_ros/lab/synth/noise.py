"""A RealSense-like depth sensor model applied to clean ray-cast depth.

- noise whose standard deviation grows with the square of the distance (``sigma = a + b z^2``), per pixel plus a
  small spatially smooth component;
- quantisation to millimetres (the 16UC1 ``aligned_depth_to_color`` convention, 0 = invalid);
- holes: random single-pixel dropouts and a few blobs, missing depth along depth discontinuities (a band of
  1-2 pixels, most of it dropped), nothing closer than ``min_range`` or beyond ``max_range``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DepthNoise:
    sigma_base_m: float = 0.0008
    sigma_quad: float = 0.0019  # sigma (m) grows by this times z^2 (z in m): 1.3 mm at 0.5 m, 2.7 mm at 1 m
    smooth_fraction: float = 0.5  # std of the smooth component relative to sigma
    min_range_m: float = 0.15
    max_range_m: float = 4.0
    dropout: float = 0.004  # single-pixel dropout probability
    blob_fraction: float = 0.02  # fraction of the image in hole blobs
    edge_jump_m: float = 0.02  # a neighbour this much farther (and 3 % of z) makes an edge pixel
    edge_drop: float = 0.75  # probability that a pixel of the edge band is dropped


def _upsample(coarse: np.ndarray, h: int, w: int) -> np.ndarray:
    """Bilinear upsampling of a small grid to ``h x w``."""
    ch, cw = coarse.shape
    ys = np.linspace(0, ch - 1.0001, h)
    xs = np.linspace(0, cw - 1.0001, w)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    a = coarse[y0][:, x0]
    b = coarse[y0][:, x0 + 1]
    c = coarse[y0 + 1][:, x0]
    d = coarse[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def clean_depth_mm(z: np.ndarray) -> np.ndarray:
    """Metres (inf/NaN = no hit) -> uint16 millimetres, 0 where invalid or beyond 65.535 m."""
    ok = np.isfinite(z) & (z > 0) & (z < 65.5)
    return np.where(ok, np.rint(np.where(ok, z, 0) * 1000.0), 0).astype(np.uint16)


def noisy_depth_mm(z: np.ndarray, rng: np.random.Generator, model: DepthNoise = DepthNoise()) -> np.ndarray:
    """Apply the sensor model to clean depth ``z`` [H, W] metres (inf = no return); uint16 millimetres."""
    h, w = z.shape
    z = z.astype(np.float32)
    valid = np.isfinite(z) & (z >= model.min_range_m) & (z <= model.max_range_m)
    zc = np.where(np.isfinite(z), z, np.float32(0))
    sigma = np.float32(model.sigma_base_m) + np.float32(model.sigma_quad) * zc * zc
    smooth = _upsample(rng.standard_normal((h // 24 + 2, w // 24 + 2)).astype(np.float32), h, w)
    noise = rng.standard_normal((h, w), dtype=np.float32) + np.float32(model.smooth_fraction) * smooth
    zn = zc + sigma * noise
    # depth discontinuities: a pixel next to a much farther one (or next to no return)
    far = np.zeros((h, w), bool)
    zz = np.where(np.isfinite(z), z, np.float32(1e4))
    thr = np.maximum(np.float32(model.edge_jump_m), np.float32(0.03) * zc)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        nb = np.roll(zz, (dy, dx), axis=(0, 1))
        far |= (nb - zz) > thr
    # widen the band by one pixel (towards either side) at random
    band = far.copy()
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        band |= np.roll(far, (dy, dx), axis=(0, 1)) & (rng.random((h, w)) < 0.5)
    holes = band & (rng.random((h, w)) < model.edge_drop)
    holes |= rng.random((h, w)) < model.dropout
    if model.blob_fraction > 0:
        blobs = _upsample(rng.standard_normal((h // 12 + 2, w // 12 + 2)).astype(np.float32), h, w)
        holes |= blobs > np.quantile(blobs, 1.0 - model.blob_fraction)
    ok = valid & ~holes & (zn > 0)
    return np.where(ok, np.rint(zn * 1000.0), 0).clip(0, 65535).astype(np.uint16)
