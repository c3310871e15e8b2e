"""2D consensus prior: one global affine map between the reference and the live frame, from the whole object.

Each keypoint is matched on its own by :func:`semcorr_ros.engine.matching.match_keypoints`; a repeated part (the
other wheel, the other eye) or background clutter can then win the argmax. This module looks at every cell of
the object at once and fits the single 2D transform that most of them agree on; the transformed reference
keypoints then serve as a soft prior on each keypoint's similarity map.

Math (all coordinates normalised, ``u = (x + 0.5) / W``; cell ``(i, j)`` of a ``G x G`` map at
``((j + 0.5) / G, (i + 0.5) / G)``):

0. Both maps are average-pooled to at most ``FIT_GRID`` cells a side (:func:`coarse_map`; cheap, and the fit
   needs the object's layout, not cell accuracy).
1. Reference cells ``R`` = cells whose centre lies in the reference keypoints' bounding box enlarged by
   ``margin`` of its side on each side; live cells ``T`` = all cells. With unit-norm descriptors ``a_r, b_t``
   the cosine similarity is ``S = A^T B`` (``|R| x |T|``).
2. Dense mutual nearest neighbours: ``(r, t)`` with ``t = argmax_t' S[r, t']`` and ``r = argmax_r' S[r', t]``;
   each pair has weight ``w = max(S[r, t], 0)``. Fewer than ``min_matches`` pairs: switched off.
3. RANSAC affine (:mod:`.ransac`): ``M`` hypotheses, each the exact affine ``q = L p + c`` through 3 sampled pairs
   (``[p 1] X = q``, solved batched; near-collinear samples dropped). Score of a hypothesis = ``sum_i w_i [||q_i -
   L p_i - c|| < tau]``. The best is refitted twice by weighted least squares on its inliers.
4. Sanity: at least ``min_inliers`` inliers and ``min_inlier_ratio`` of the pairs, the inlier source points
   not collinear, the singular values of ``L`` in ``[min_scale, max_scale]``, everything finite. Otherwise
   the prior is off for this frame (no NaN, no exception) and ``reason`` says why.
5. Prior for reference keypoint ``k``: ``mu_k = L u_k + c``. The matcher adds
   ``weight * exp(-||cell - mu_k||^2 / (2 sigma^2))`` to keypoint ``k``'s similarity map before the
   soft-argmax (see :func:`prior_bias`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from semcorr_ros.engine.norms import unit_norm
from semcorr_ros.engine.ransac import ransac, torch_triples
from semcorr_ros.errors import InputError

#: Side of the lattice the fit runs on: finer maps are average-pooled to it by :func:`coarse_map`. 32 -> 16
#: cuts the dense similarity 16x (about 17 -> 1.5 ms on 2 CPU cores with C = 1480); on pf-willow-dev
#: PCK@0.1 is unchanged within 0.4 points.
FIT_GRID = 16

__all__ = ["FIT_GRID", "ConsensusPrior", "coarse_map", "mutual_matches", "fit_affine_ransac", "consensus_prior",
           "prior_bias"]


@dataclass
class ConsensusPrior:
    """Result of :func:`consensus_prior`.

    Attributes:
        uv: ``[K, 2]`` transformed reference keypoints (normalised live coordinates); meaningless when not
            ``active`` (then a copy of the reference keypoints).
        active: whether the fit passed every check (use the prior only then).
        affine: ``[2, 3]`` ``[L | c]`` (identity when not active).
        n_matches: mutual nearest-neighbour pairs found.
        n_inliers: RANSAC inliers of the final fit.
        reason: ``"ok"`` or why the prior switched itself off.
    """

    uv: torch.Tensor
    active: bool
    affine: torch.Tensor
    n_matches: int
    n_inliers: int
    reason: str


def coarse_map(fmap: torch.Tensor, grid: int = FIT_GRID) -> torch.Tensor:
    """``[C, g, g]`` unit-norm average-pooled copy of ``fmap [C, G, G]`` with ``g = min(G, grid)``."""
    if fmap.shape[-1] <= grid and fmap.shape[-2] <= grid:
        return fmap
    return unit_norm(F.adaptive_avg_pool2d(fmap[None].float(), grid)[0], dim=0)


def _cell_centres(g: int, device: torch.device) -> torch.Tensor:
    """``[g*g, 2]`` normalised ``(u, v)`` of the cells of a ``g x g`` map, row-major."""
    c = (torch.arange(g, device=device, dtype=torch.float32) + 0.5) / g
    v, u = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([u.reshape(-1), v.reshape(-1)], dim=1)


def mutual_matches(src_map: torch.Tensor, tgt_map: torch.Tensor, src_mask: torch.Tensor | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Dense mutual nearest neighbours between two ``[C, G, G]`` unit-norm maps (same ``C``, any ``G``).

    Args:
        src_map, tgt_map: ``[C, Gs, Gs]`` and ``[C, Gt, Gt]``.
        src_mask: optional ``[Gs, Gs]`` bool: source cells to use (default all).

    Returns:
        ``(src_uv [N, 2], tgt_uv [N, 2], weight [N])`` with ``weight`` the clamped cosine similarity.
    """
    c, gs, _ = src_map.shape
    gt = tgt_map.shape[-1]
    a = src_map.reshape(c, -1).float()
    src_uv = _cell_centres(gs, src_map.device)
    if src_mask is not None:
        keep = src_mask.reshape(-1)
        a, src_uv = a[:, keep], src_uv[keep]
    if a.shape[1] == 0:
        z = src_uv.new_zeros(0, 2)
        return z, z, src_uv.new_zeros(0)
    sim = a.t() @ tgt_map.reshape(c, -1).float()                     # [Nr, Nt]
    best_t = sim.argmax(dim=1)                                        # [Nr]
    best_r = sim.argmax(dim=0)                                        # [Nt]
    mutual = best_r[best_t] == torch.arange(sim.shape[0], device=sim.device)
    r = torch.nonzero(mutual).reshape(-1)
    t = best_t[r]
    w = sim[r, t].clamp(min=0.0)
    w = torch.where(torch.isfinite(w), w, torch.zeros_like(w))
    return src_uv[r], _cell_centres(gt, tgt_map.device)[t], w


def _weighted_affine(p: torch.Tensor, q: torch.Tensor, w: torch.Tensor) -> torch.Tensor | None:
    """Weighted least-squares ``[2, 3]`` affine ``q ~ L p + c``; ``None`` when ill-conditioned."""
    x = torch.cat([p, torch.ones_like(p[:, :1])], dim=1).double()     # [N, 3]
    sw = w.double().clamp(min=0).sqrt()[:, None]
    sol = torch.linalg.lstsq(x * sw, q.double() * sw, driver="gelsd" if x.device.type == "cpu" else None)
    a = sol.solution.t()                                              # [2, 3]
    if not torch.isfinite(a).all():
        return None
    return a.float()


def fit_affine_ransac(src: torch.Tensor, dst: torch.Tensor, weight: torch.Tensor | None = None, *,
                      threshold: float = 0.1, iterations: int = 256, min_inliers: int = 8,
                      min_inlier_ratio: float = 0.2, min_scale: float = 0.2, max_scale: float = 5.0, seed: int = 0
                      ) -> tuple[torch.Tensor | None, torch.Tensor, str]:
    """Robust 2D affine ``dst ~ L src + c`` by vectorised RANSAC over minimal 3-point samples.

    Args:
        src, dst: ``[N, 2]`` corresponding points (normalised coordinates).
        weight: optional ``[N]`` non-negative weights (inlier counts are weighted sums).
        threshold: inlier distance (normalised units).
        iterations: hypotheses.
        min_inliers: fewest inliers for a valid fit.
        min_inlier_ratio: fewest inliers as a fraction of the (finite) matches (unrelated maps still give
            chance mutual matches; on pf-willow-dev 95% of the pairs have a ratio above 0.39).
        min_scale, max_scale: allowed range of the singular values of ``L``.
        seed: sampling seed (deterministic results).

    Returns:
        ``(affine [2, 3] or None, inliers [N] bool, reason)``; ``None`` with a reason when degenerate.
    """
    n = src.shape[0]
    none = torch.zeros(n, dtype=torch.bool, device=src.device)
    w = torch.ones(n, device=src.device) if weight is None else weight.float()
    ok = torch.isfinite(src).all(1) & torch.isfinite(dst).all(1) & torch.isfinite(w) & (w >= 0)
    if int(ok.sum()) < max(3, min_inliers):
        return None, none, f"too few matches ({int(ok.sum())} < {max(3, min_inliers)})"
    idx_ok = torch.nonzero(ok).reshape(-1)
    p, q, w = src[idx_ok].float(), dst[idx_ok].float(), w[idx_ok]
    ph = torch.cat([p, torch.ones_like(p[:, :1])], dim=1)              # [N, 3]

    def fit(samp: torch.Tensor) -> torch.Tensor:
        ps, qs = p[samp], q[samp]                                      # [M, 3, 2]
        e1, e2 = ps[:, 1] - ps[:, 0], ps[:, 2] - ps[:, 0]
        area = (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).abs()
        longest = torch.stack([(e1 * e1).sum(1), (e2 * e2).sum(1), ((e2 - e1) ** 2).sum(1)]).amax(0)
        good = area > 0.05 * longest                                   # not (near-)collinear / coincident
        x = torch.cat([ps, torch.ones_like(ps[..., :1])], dim=2)       # [M, 3, 3]
        x = torch.where(good[:, None, None], x, torch.eye(3, device=p.device).expand_as(x))
        sol, info = torch.linalg.solve_ex(x, qs)                       # [M, 3, 2]: [L^T; c]
        good &= (info == 0) & torch.isfinite(sol).all(dim=(1, 2))
        if not bool(good.any()):
            raise InputError("all samples degenerate (collinear matches)")
        return sol[good]

    found = ransac(torch_triples(len(p), iterations, seed, p.device), fit,
                   lambda sol: (ph[None] @ sol - q[None]).norm(dim=2),
                   lambda inl: _weighted_affine(p[inl], q[inl], w[inl] + 1e-6),
                   lambda a: (ph @ a.t() - q).norm(dim=1), threshold, weight=w)
    if found.inliers is None:
        return None, none, found.reason
    affine, best = found.model, found.inliers
    n_inl = int(best.sum())
    if affine is None or n_inl < min_inliers:
        return None, none, f"too few inliers ({n_inl} < {min_inliers})"
    if n_inl < min_inlier_ratio * len(p):
        return None, none, f"inlier ratio too low ({n_inl}/{len(p)} < {min_inlier_ratio})"
    pc = p[best] - p[best].mean(0)
    sv = torch.linalg.svdvals(pc.double())
    if not sv[0] > 0 or sv[1] < 0.1 * sv[0]:
        return None, none, "inlier matches are collinear"
    sl = torch.linalg.svdvals(affine[:, :2].double())
    if not (min_scale <= float(sl[1]) and float(sl[0]) <= max_scale):
        return None, none, f"implausible scale (singular values {float(sl[0]):.3g}, {float(sl[1]):.3g})"
    inliers = none.clone()
    inliers[idx_ok[best]] = True
    return affine, inliers, "ok"


def consensus_prior(ref_map: torch.Tensor, live_map: torch.Tensor, ref_uv: torch.Tensor, *,
                    margin: float = 0.25, threshold: float = 0.1, iterations: int = 256,
                    min_inliers: int = 8, seed: int = 0) -> ConsensusPrior:
    """Fit the global affine reference -> live from dense mutual matches around the reference keypoints.

    Args:
        ref_map: ``[C, Gr, Gr]`` unit-norm reference map.
        live_map: ``[C, Gl, Gl]`` unit-norm live map.
        ref_uv: ``[K, 2]`` normalised reference keypoints (their box, enlarged by ``margin`` of its side on
            each side and at least two cells wide, selects the reference cells).
        threshold, iterations, min_inliers, seed: see :func:`fit_affine_ransac`.

    Returns:
        :class:`ConsensusPrior` (``active`` False, with a reason, on degenerate input).
    """
    eye = torch.eye(2, 3, device=ref_uv.device)

    def off(reason: str, n_matches: int = 0) -> ConsensusPrior:
        return ConsensusPrior(uv=ref_uv.clone(), active=False, affine=eye, n_matches=n_matches, n_inliers=0,
                              reason=reason)

    if ref_uv.shape[0] == 0:
        return off("no keypoints")
    # a map's sum is non-finite exactly when an element is (unit-norm values cannot overflow it): one pass, no mask
    if not (torch.isfinite(ref_map.sum()) and torch.isfinite(live_map.sum()) and torch.isfinite(ref_uv).all()):
        return off("non-finite input")
    g = ref_map.shape[-1]
    lo, hi = ref_uv.amin(0), ref_uv.amax(0)
    pad = torch.clamp((hi - lo) * margin, min=1.0 / g)
    centres = _cell_centres(g, ref_map.device).reshape(g, g, 2)
    mask = ((centres >= (lo - pad)) & (centres <= (hi + pad))).all(-1)
    src, dst, w = mutual_matches(ref_map, live_map, mask)
    n = src.shape[0]
    affine, inliers, reason = fit_affine_ransac(src, dst, w, threshold=threshold, iterations=iterations,
                                                min_inliers=min_inliers, seed=seed)
    if affine is None:
        return off(reason, n)
    uv = ref_uv.float() @ affine[:, :2].t() + affine[:, 2]
    if not torch.isfinite(uv).all():
        return off("non-finite prior", n)
    return ConsensusPrior(uv=uv.to(ref_uv.dtype), active=True, affine=affine, n_matches=n,
                          n_inliers=int(inliers.sum()), reason="ok")


def prior_bias(prior_uv: torch.Tensor, h: int, w: int, weight: float, sigma: float) -> torch.Tensor:
    """``[K, h, w]`` additive bias ``weight * exp(-||cell - prior_k||^2 / (2 sigma^2))`` (normalised units)."""
    ys = (torch.arange(h, device=prior_uv.device, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, device=prior_uv.device, dtype=torch.float32) + 0.5) / w
    dx2 = (xs[None, :] - prior_uv[:, :1].float()) ** 2                 # [K, w]
    dy2 = (ys[None, :] - prior_uv[:, 1:].float()) ** 2                 # [K, h]
    d2 = dy2[:, :, None] + dx2[:, None, :]
    return weight * torch.exp(-d2 / (2.0 * sigma ** 2))
