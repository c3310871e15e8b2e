"""Rigid / similarity pose from 3D-3D keypoint pairs: Umeyama least squares inside RANSAC (:mod:`.ransac`).

Frames: ``src`` points are in the reference camera frame, ``dst`` in the live camera frame (optical frames,
metres); the estimate maps ``dst ~ s * R @ src + t``. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from semcorr_ros.engine.ransac import distinct_triples, most_inliers_least_cost, ransac
from semcorr_ros.engine.types import PoseResult
from semcorr_ros.errors import ConfigError, InputError

__all__ = ["umeyama", "estimate_pose"]

_RANK_RTOL = 1e-9  # second singular value of the cross-covariance relative to the first: below = collinear
_SAMPLE_SIN = 1e-6  # |e1 x e2| / max|e|^2 of a minimal sample: below = collinear sample, skipped


def _as_points(a: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(a, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] != 3:
        raise InputError(f"{name} must have shape [N, 3], got shape {p.shape}")
    return p


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = False,
            weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Least-squares rigid (or similarity) transform, Umeyama (1991).

    Minimises ``sum_i w_i ||dst_i - (s R src_i + t)||^2`` over ``R`` in SO(3), ``t`` and (optionally)
    ``s > 0``. With weighted means ``mu_s, mu_d``, centred points ``a_i = src_i - mu_s``,
    ``b_i = dst_i - mu_d``, cross-covariance ``S = sum_i w_i b_i a_i^T / sum_i w_i = U D V^T`` (SVD) and
    ``E = diag(1, 1, sign(det U det V))`` (the reflection correction that forces ``det R = +1``):
    ``R = U E V^T``, ``s = trace(D E) / var_s`` with ``var_s = sum_i w_i ||a_i||^2 / sum_i w_i``
    (``s = 1`` when rigid), ``t = mu_d - s R mu_s``.

    Args:
        src, dst: ``[N, 3]`` corresponding points (metres), ``N >= 3``.
        with_scale: also estimate the scale ``s``.
        weights: optional ``[N]`` non-negative weights (default all 1).

    Returns:
        ``(R [3, 3], t [3], s)``.

    Raises:
        InputError: shape mismatch, non-finite values, bad weights, fewer than 3 points with positive
            weight, or a degenerate configuration (coincident or collinear points in ``src`` or ``dst``).
    """
    a, b = _as_points(src, "src"), _as_points(dst, "dst")
    if a.shape != b.shape:
        raise InputError(f"src and dst must have the same shape, got {a.shape} and {b.shape}")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise InputError("src and dst must be finite")
    w = np.ones(a.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (a.shape[0],) or not np.all(np.isfinite(w)) or np.any(w < 0):
        raise InputError(f"weights must be [{a.shape[0]}] finite and >= 0, got shape {w.shape}")
    if np.count_nonzero(w) < 3:
        raise InputError(f"umeyama needs at least 3 points with positive weight, got {np.count_nonzero(w)}")
    w = w / w.sum()
    mu_s, mu_d = w @ a, w @ b
    ac, bc = a - mu_s, b - mu_d
    cov = (bc * w[:, None]).T @ ac
    u, d, vt = np.linalg.svd(cov)
    if not d[0] > 0 or d[1] <= _RANK_RTOL * d[0]:
        raise InputError("degenerate point configuration: src or dst points are coincident or collinear")
    e = np.array([1.0, 1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    r = (u * e) @ vt
    s = float((d * e).sum() / (w @ (ac * ac).sum(axis=1))) if with_scale else 1.0
    if with_scale and not s > 0:
        raise InputError(f"degenerate similarity fit: scale {s} is not positive")
    t = mu_d - s * (r @ mu_s)
    return r, t, s


def _batch_fit(a: np.ndarray, b: np.ndarray, with_scale: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vectorised unweighted Umeyama on ``[M, n, 3]`` batches; returns ``R [M,3,3], t [M,3], s [M]``."""
    mu_s, mu_d = a.mean(axis=1), b.mean(axis=1)
    ac, bc = a - mu_s[:, None], b - mu_d[:, None]
    cov = np.einsum("mni,mnj->mij", bc, ac) / a.shape[1]
    u, d, vt = np.linalg.svd(cov)
    sign = np.sign(np.linalg.det(u) * np.linalg.det(vt))
    e = np.ones((a.shape[0], 3))
    e[:, 2] = np.where(sign == 0, 1.0, sign)
    r = (u * e[:, None, :]) @ vt
    if with_scale:
        var = (ac * ac).sum(axis=(1, 2)) / a.shape[1]
        s = (d * e).sum(axis=1) / np.maximum(var, np.finfo(float).tiny)
    else:
        s = np.ones(a.shape[0])
    t = mu_d - s[:, None] * np.einsum("mij,mj->mi", r, mu_s)
    return r, t, s


def _collinear(p: np.ndarray) -> np.ndarray:
    """``[M]`` bool: the triangles ``p [M, 3, 3]`` are (numerically) collinear or coincident."""
    e1, e2 = p[:, 1] - p[:, 0], p[:, 2] - p[:, 0]
    e3 = p[:, 2] - p[:, 1]
    longest = np.max(np.stack([(e * e).sum(-1) for e in (e1, e2, e3)]), axis=0)
    return ~(np.linalg.norm(np.cross(e1, e2), axis=-1) > _SAMPLE_SIN * longest)


def _residuals(a: np.ndarray, b: np.ndarray, r: np.ndarray, t: np.ndarray, s: float) -> np.ndarray:
    """``[N]`` distances ``||b - (s R a + t)||`` of one transform."""
    return np.linalg.norm(b - (s * (a @ r.T) + t), axis=1)


def _batch_residuals(a: np.ndarray, b: np.ndarray, rs: np.ndarray, ts: np.ndarray, ss: np.ndarray) -> np.ndarray:
    """``[M, N]`` distances of ``M`` transforms ``(rs [M, 3, 3], ts [M, 3], ss [M])``."""
    pred = ss[:, None, None] * (a[None] @ rs.transpose(0, 2, 1)) + ts[:, None, :]
    return np.linalg.norm(b[None] - pred, axis=2)


def _invalid(k: int, inliers: np.ndarray | None = None) -> PoseResult:
    inl = np.zeros(k, dtype=bool) if inliers is None else inliers
    return PoseResult(R=np.eye(3), t=np.zeros(3), valid=False, inliers=inl, n_inliers=int(inl.sum()),
                      rmse=float("nan"), scale=1.0)


def estimate_pose(src: np.ndarray, dst: np.ndarray, mask: np.ndarray | None = None, threshold: float = 0.02,
                  iterations: int = 200, min_inliers: int = 4, with_scale: bool = False,
                  seed: int | None = 0) -> PoseResult:
    """Robust reference-to-live pose from 3D keypoint pairs: RANSAC + Umeyama refit.

    Hypotheses are Umeyama fits of minimal 3-point samples (all ``C(n, 3)`` triples when that is at most
    ``iterations``, else ``iterations`` random distinct triples from ``np.random.default_rng(seed)``);
    samples collinear in ``src`` or ``dst`` are skipped. All hypotheses are fitted and scored at once:
    a pair is an inlier when ``||dst - (s R src + t)|| < threshold``; the best has most inliers, ties
    broken by the lower sum of inlier residuals. It is then refitted on its inliers (up to 3 rounds, a
    round kept only if it does not lose inliers). Deterministic for a fixed ``seed``.

    Args:
        src: ``[K, 3]`` reference points (reference camera frame, metres); ``NaN`` rows are ignored.
        dst: ``[K, 3]`` live points (live camera frame, metres); ``NaN`` rows are ignored.
        mask: optional ``[K]`` bool, pairs to use (e.g. ``match.valid & match.has_3d & ref_has_3d``).
        threshold: inlier distance, metres, ``> 0``.
        iterations: number of random hypotheses, ``>= 1``.
        min_inliers: inliers needed for ``valid``, ``>= 3``.
        with_scale: estimate a similarity scale as well (``PoseResult.scale``).
        seed: seed of the sampler.

    Returns:
        :class:`PoseResult` with ``inliers`` per input keypoint (False where masked out or non-finite) and
        ``rmse`` over the inliers, metres. ``valid`` iff a non-degenerate fit has ``>= min_inliers``
        inliers. Bad data (fewer than 3 usable pairs, all collinear, all non-finite, no consensus) never
        raises: it gives ``valid=False``, ``R = I``, ``t = 0``, ``rmse = nan``. A fit with too few
        inliers keeps its (finite) ``R``, ``t`` and inliers, with ``valid=False`` and ``rmse = nan``.

    Raises:
        InputError: wrong shapes. ConfigError: option out of range.
    """
    a, b = _as_points(src, "src"), _as_points(dst, "dst")
    if a.shape != b.shape:
        raise InputError(f"src and dst must have the same shape, got {a.shape} and {b.shape}")
    k = a.shape[0]
    if mask is None:
        use = np.ones(k, dtype=bool)
    else:
        use = np.asarray(mask)
        if use.shape != (k,):
            raise InputError(f"mask must have shape [{k}], got shape {use.shape}")
        use = use.astype(bool)
    if not (np.isfinite(threshold) and threshold > 0):
        raise ConfigError(f"threshold must be a finite number > 0 (metres), got {threshold!r}")
    if int(iterations) != iterations or iterations < 1:
        raise ConfigError(f"iterations must be an integer >= 1, got {iterations!r}")
    if int(min_inliers) != min_inliers or min_inliers < 3:
        raise ConfigError(f"min_inliers must be an integer >= 3, got {min_inliers!r}")
    use = use & np.all(np.isfinite(a), axis=1) & np.all(np.isfinite(b), axis=1)
    idx = np.flatnonzero(use)
    n = idx.size
    if n < 3:
        return _invalid(k)
    pa, pb = a[idx], b[idx]

    def fit(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        sa, sb = pa[samples], pb[samples]                                   # [M, 3, 3]
        keep = ~(_collinear(sa) | _collinear(sb))
        if not keep.any():
            raise InputError("all samples collinear")
        return _batch_fit(sa[keep], sb[keep], with_scale)

    found = ransac(distinct_triples(n, iterations, seed), fit, lambda h: _batch_residuals(pa, pb, *h),
                   lambda inl: umeyama(pa[inl], pb[inl], with_scale=with_scale),
                   lambda m: _residuals(pa, pb, *m), threshold, select=most_inliers_least_cost, rounds=3,
                   monotone=True)
    if found.model is None:
        return _invalid(k)
    r, t, s = found.model
    res_best = _residuals(pa, pb, r, t, s)
    cur = res_best < threshold
    inliers = np.zeros(k, dtype=bool)
    inliers[idx] = cur
    n_in = int(cur.sum())
    valid = n_in >= min_inliers
    rmse = float(np.sqrt(np.mean(res_best[cur] ** 2))) if valid else float("nan")
    return PoseResult(R=r, t=t, valid=bool(valid), inliers=inliers, n_inliers=n_in, rmse=rmse, scale=s)
