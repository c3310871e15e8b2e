"""Sparse keypoint matching on dense feature maps.

All coordinates here are *normalised image coordinates* ``u = (x + 0.5) / W``, ``v = (y + 0.5) / H`` in [0, 1]
(``x, y`` pixel indices with pixel centres at integers), so feature maps of any resolution and images of any
size share one frame. A map of side ``G`` has its cell ``(i, j)`` centred at ``((j + 0.5) / G, (i + 0.5) / G)``.

Only the ``K`` reference descriptors are compared with the live map (``K x G^2`` similarities); no dense
``G^2 x G^2`` correlation is built on this path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from semcorr_ros.engine.consensus import prior_bias


@dataclass
class SparseMatches:
    """Matches of ``K`` reference keypoints in one target map (all torch tensors on the maps' device).

    Attributes:
        uv: ``[K, 2]`` matched normalised coordinates in the target.
        peak: ``[K]`` cosine similarity at the argmax.
        cycle_error: ``[K]`` distance (normalised units) between the source keypoint and the target match
            matched back into the source map.
        score: ``[K]`` confidence in [0, 1].
    """

    uv: torch.Tensor
    peak: torch.Tensor
    cycle_error: torch.Tensor
    score: torch.Tensor


def pixels_to_uv(xy: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``[K, 2]`` pixels -> normalised coordinates."""
    scale = xy.new_tensor([width, height])
    return (xy + 0.5) / scale


def uv_to_pixels(uv: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """``[K, 2]`` normalised coordinates -> pixels."""
    scale = uv.new_tensor([width, height])
    return uv * scale - 0.5


def sample_descriptors(fmap: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample and re-normalise descriptors.

    Args:
        fmap: ``[C, G, G]`` (unit norm along C).
        uv: ``[K, 2]`` normalised coordinates.

    Returns:
        ``[K, C]`` unit-norm descriptors.
    """
    grid = (uv * 2.0 - 1.0).to(fmap.dtype)[None, :, None, :]  # [1, K, 1, 2]
    desc = F.grid_sample(fmap[None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return F.normalize(desc[0, :, :, 0].t(), dim=1)


def similarity(desc: torch.Tensor, fmap: torch.Tensor) -> torch.Tensor:
    """Cosine similarity ``[K, G, G]`` of ``K`` descriptors ``[K, C]`` against a map ``[C, G, G]``."""
    c, h, w = fmap.shape
    return (desc @ fmap.reshape(c, h * w)).reshape(-1, h, w)


def soft_argmax(sim: torch.Tensor, radius: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax refined by a soft-argmax inside a ``(2r+1)^2`` window around it.

    Args:
        sim: ``[K, h, w]`` similarity maps.
        radius: window half-size in cells (0: plain argmax).
        temperature: softmax temperature on the similarities.

    Returns:
        ``(uv [K, 2], peak [K])``: refined normalised coordinates and the maximum similarity.
    """
    k, h, w = sim.shape
    peak, idx = sim.reshape(k, -1).max(dim=1)
    iy, ix = idx // w, idx % w
    if radius <= 0:
        return torch.stack([(ix + 0.5) / w, (iy + 0.5) / h], dim=1).to(sim.dtype), peak
    offs = torch.arange(-radius, radius + 1, device=sim.device)
    yy = (iy[:, None, None] + offs[None, :, None]).expand(k, 2 * radius + 1, 2 * radius + 1)
    xx = (ix[:, None, None] + offs[None, None, :]).expand(k, 2 * radius + 1, 2 * radius + 1)
    inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
    flat = sim.reshape(k, -1).gather(1, (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).reshape(k, -1))
    logits = torch.where(inside.reshape(k, -1), flat / temperature, torch.full_like(flat, -torch.inf))
    p = torch.softmax(logits, dim=1)
    x = (p * (xx.reshape(k, -1).to(sim.dtype) + 0.5)).sum(1) / w
    y = (p * (yy.reshape(k, -1).to(sim.dtype) + 0.5)).sum(1) / h
    return torch.stack([x, y], dim=1), peak


def prior_soft_argmax(sim: torch.Tensor, prior: torch.Tensor | None, prior_weight: float, prior_sigma: float,
                      radius: int, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`soft_argmax` of ``sim`` ``[K, H, W]`` with the consensus prior's Gaussian bump added first.

    Args:
        prior: ``[K, 2]`` bump centres (normalised uv) or ``None`` (no bias).
        prior_weight, prior_sigma: height and width of the bump (:func:`~semcorr_ros.engine.consensus.prior_bias`).

    Returns:
        ``(uv [K, 2], peak [K])``: the location from the biased map, the *unbiased* similarity at its argmax (so
        the peak stays a cosine similarity for the confidence).
    """
    if prior is None or prior_weight <= 0:
        return soft_argmax(sim, radius, temperature)
    biased = sim + prior_bias(prior.to(sim.device), sim.shape[1], sim.shape[2], prior_weight,
                              prior_sigma).to(sim.dtype)
    uv, _ = soft_argmax(biased, radius, temperature)
    k = sim.shape[0]
    peak = sim.reshape(k, -1).gather(1, biased.reshape(k, -1).argmax(dim=1, keepdim=True))[:, 0]
    return uv, peak


def match_keypoints(desc: torch.Tensor, src_uv: torch.Tensor, src_map: torch.Tensor, tgt_map: torch.Tensor,
                    *, radius: int = 2, temperature: float = 0.02, cycle_sigma: float = 0.05,
                    tgt_weights: torch.Tensor | None = None, prior: torch.Tensor | None = None,
                    prior_weight: float = 0.0, prior_sigma: float = 0.1,
                    sim: torch.Tensor | None = None) -> SparseMatches:
    """Match source keypoints into the target map; confidence from the peak and cycle consistency.

    The score is ``clamp(peak, 0, 1) * exp(-e^2 / (2 sigma^2))`` with ``e`` the cycle error: the target match's
    descriptor is matched back into the source map with a plain argmax, and ``e`` is its distance to the source
    keypoint (a mutual nearest neighbour has ``e`` below one source cell).

    Args:
        desc: ``[K, C]`` source descriptors at ``src_uv``.
        src_uv: ``[K, 2]`` source keypoints, normalised.
        src_map: ``[C, Gs, Gs]`` source map (for the cycle check).
        tgt_map: ``[C, Gt, Gt]`` target map.
        radius, temperature: soft-argmax window and temperature.
        cycle_sigma: scale of the cycle error in the score (normalised units).
        tgt_weights: optional ``[Gt, Gt]`` per-cell weights (depth-aware) multiplying the target similarities.
        prior: optional ``[K, 2]`` expected target positions (normalised; the consensus prior of
            :mod:`semcorr_ros.engine.consensus`): ``prior_weight * exp(-d^2 / (2 prior_sigma^2))`` (``d`` the
            cell's distance to the prior, normalised units) is added to the similarities before the
            soft-argmax; ``peak`` (and so the score) stays the raw similarity at the chosen cell.
        sim: ``similarity(desc, tgt_map)`` when the caller has it already (a second pass over the same map).

    Returns:
        :class:`SparseMatches`.
    """
    if desc.shape[0] == 0:
        z = desc.new_zeros(0)
        return SparseMatches(uv=desc.new_zeros(0, 2), peak=z, cycle_error=z, score=z)
    if sim is None:
        sim = similarity(desc, tgt_map)
    if tgt_weights is not None:
        sim = sim * tgt_weights[None]
    uv, peak = prior_soft_argmax(sim, prior, prior_weight, prior_sigma, radius, temperature)
    back_desc = sample_descriptors(tgt_map, uv)
    back_uv, _ = soft_argmax(similarity(back_desc, src_map), 0, temperature)
    err = (back_uv - src_uv).norm(dim=1)
    score = peak.clamp(0.0, 1.0) * torch.exp(-(err ** 2) / (2.0 * cycle_sigma ** 2))
    return SparseMatches(uv=uv, peak=peak, cycle_error=err, score=score)
