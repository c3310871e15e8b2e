"""3D consensus prior (the robot case): one similarity transform reference -> live from depth, whole object.

The 2D prior (:mod:`semcorr_ros.engine.consensus`) fits one global affine map between the images; a rotating
3D object is not an affine map of the image plane (parallax, foreshortening), so with depth and intrinsics on
both sides the same dense matches are lifted to 3D and one *3D similarity* is fitted instead. It is exact for a
rigid object under any viewpoint change (``s = 1``) and still a good model for another instance of the same
category (``s != 1``).

Math (pixels ``(x, y)``, camera optical frames, metres; cell ``(i, j)`` of a ``g x g`` coarse map at normalised
``((j + 0.5) / g, (i + 0.5) / g)``, pixel ``x = u W - 0.5``):

1. Dense mutual nearest neighbours of the coarse maps inside the enlarged reference keypoint box, exactly as the
   2D prior (:func:`semcorr_ros.engine.consensus.mutual_matches`): pairs ``(p_i, q_i)`` of cell centres, weight
   ``w_i``.
2. Lift both ends with the median of the valid depths in a window around the cell centre
   (:func:`semcorr_ros.engine.geometry.lift`): ``P_i = z K_r^-1 [p_i 1]``, ``Q_i = z' K_l^-1 [q_i 1]``. Pairs
   without depth on either side are dropped, and so are reference cells outside the reference keypoints' depth
   range (plus a margin): background seen around the object; fewer than ``min_inliers`` left: off.
3. RANSAC similarity ``Q ~ s R P + t`` (:mod:`.ransac`): hypotheses are Umeyama fits
   (:func:`semcorr_ros.engine.pose._batch_fit`) of random minimal 3-point samples, samples collinear in either set
   skipped; score ``sum_i w_i [||Q_i - s R P_i - t|| < tau]`` (``tau`` in metres, from the caller; the engine
   converts the 2D prior's threshold at the object's depth). The best is refitted twice by weighted Umeyama with
   scale on its inliers (:func:`semcorr_ros.engine.pose.umeyama`).
4. Sanity: at least ``min_inliers`` inliers and ``min_inlier_ratio`` of the pairs, inliers not collinear (a
   plane is fine: it fixes a similarity), ``s`` in ``[min_scale, max_scale]``, everything finite. Otherwise off,
   with a reason.
5. Prior for reference keypoint ``k`` with reference point ``X_k``: ``mu_k = pi(K_l (s R X_k + t))``, the
   projection into the live image, normalised. Keypoints without reference depth are back-projected at the
   median depth of the inlier reference cells. A projection behind the camera or non-finite: off.

Never raises on bad data and never returns NaN: a switched-off prior has ``active=False`` and a reason; the
engine then falls back to the 2D prior (``consensus_mode: auto``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from semcorr_ros.engine import geometry
from semcorr_ros.engine.consensus import mutual_matches
from semcorr_ros.engine.pose import _batch_fit, _batch_residuals, _collinear, umeyama
from semcorr_ros.engine.ransac import random_triples, ransac
from semcorr_ros.engine.types import PoseResult
from semcorr_ros.errors import InputError

__all__ = ["Prior3D", "reference_mask", "lift_cells", "fit_similarity_ransac", "consensus_prior_3d",
           "pose_from_prior"]


@dataclass
class Prior3D:
    """Result of :func:`consensus_prior_3d`.

    Attributes:
        uv: ``[K, 2]`` projected reference keypoints, normalised live coordinates (a copy of the reference
            keypoints when not ``active``).
        active: whether the fit passed every check.
        R, t, scale: the similarity ``p_live = scale * R @ p_ref + t`` (identity when not active).
        n_matches: mutual matches with depth on both sides.
        n_inliers: RANSAC inliers of the final fit.
        rmse: RMS 3D residual of the inliers, metres (``nan`` when not active).
        reason: ``"ok"`` or why the prior switched itself off.
    """

    uv: torch.Tensor
    active: bool
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    t: np.ndarray = field(default_factory=lambda: np.zeros(3))
    scale: float = 1.0
    n_matches: int = 0
    n_inliers: int = 0
    rmse: float = float("nan")
    reason: str = "ok"


def reference_mask(ref_uv: torch.Tensor, g: int, margin: float = 0.25) -> torch.Tensor:
    """``[g, g]`` bool: cells whose centre lies in the keypoints' box enlarged by ``margin`` of its side (at least
    one cell) on each side; the same cells the 2D prior uses."""
    lo, hi = ref_uv.amin(0), ref_uv.amax(0)
    pad = torch.clamp((hi - lo) * margin, min=1.0 / g)
    c = (torch.arange(g, device=ref_uv.device, dtype=torch.float32) + 0.5) / g
    v, u = torch.meshgrid(c, c, indexing="ij")
    centres = torch.stack([u, v], dim=-1)
    return ((centres >= (lo - pad)) & (centres <= (hi + pad))).all(-1)


def lift_cells(depth_m: np.ndarray, uv: np.ndarray, K: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray]:
    """3D points ``[N, 3]`` and ``ok [N]`` of normalised positions ``uv [N, 2]`` in an image with depth ``depth_m``
    (float metres, NaN invalid) and intrinsics ``K``: robust (median) depth in a ``2 radius + 1`` window."""
    h, w = depth_m.shape
    xy = np.asarray(uv, dtype=np.float64) * np.array([w, h], dtype=np.float64) - 0.5
    pts, ok = geometry.lift(depth_m, xy, K, radius)
    ok &= np.all(np.isfinite(pts), axis=1)
    return pts, ok


def fit_similarity_ransac(src: np.ndarray, dst: np.ndarray, weight: np.ndarray | None = None, *,
                          threshold: float = 0.05, iterations: int = 256, min_inliers: int = 8,
                          min_inlier_ratio: float = 0.2, min_scale: float = 0.2, max_scale: float = 5.0,
                          seed: int = 0) -> tuple[tuple[np.ndarray, np.ndarray, float] | None, np.ndarray, str]:
    """Robust 3D similarity ``dst ~ s R src + t`` by RANSAC over minimal 3-point samples, then weighted Umeyama.

    Args:
        src, dst: ``[N, 3]`` corresponding points (metres); non-finite rows are ignored.
        weight: optional ``[N]`` non-negative weights (inlier scores are weighted sums).
        threshold: inlier distance, metres.
        iterations: hypotheses.
        min_inliers: fewest inliers for a valid fit (at least 3).
        min_inlier_ratio: fewest inliers as a fraction of the usable pairs.
        min_scale, max_scale: allowed range of ``s``.
        seed: sampling seed (deterministic results).

    Returns:
        ``((R, t, s) or None, inliers [N] bool, reason)``.
    """
    a = np.asarray(src, dtype=np.float64).reshape(-1, 3)
    b = np.asarray(dst, dtype=np.float64).reshape(-1, 3)
    n = a.shape[0]
    none = np.zeros(n, dtype=bool)
    w = np.ones(n) if weight is None else np.asarray(weight, dtype=np.float64).reshape(-1)
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(a).all(1) & np.isfinite(b).all(1) & np.isfinite(w) & (w >= 0)
    need = max(3, int(min_inliers))
    if int(ok.sum()) < need:
        return None, none, f"too few 3D matches ({int(ok.sum())} < {need})"
    idx = np.flatnonzero(ok)
    p, q, w = a[idx], b[idx], w[idx]
    m = len(p)

    def fit(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        keep = ~(_collinear(p[samples]) | _collinear(q[samples])) & (samples[:, 2] != samples[:, 0]) \
            & (samples[:, 2] != samples[:, 1])
        if not keep.any():
            raise InputError("all samples degenerate (collinear 3D matches)")
        rs, ts, ss = _batch_fit(p[samples[keep]], q[samples[keep]], with_scale=True)
        good = np.isfinite(rs).all(axis=(1, 2)) & np.isfinite(ts).all(1) & np.isfinite(ss) & (ss > 0)
        if not good.any():
            raise InputError("all samples degenerate (non-finite fits)")
        return rs[good], ts[good], ss[good]

    def refit(inl: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        try:
            return umeyama(p[inl], q[inl], with_scale=True, weights=w[inl] + 1e-6)
        except InputError as exc:
            raise InputError(f"inlier 3D matches degenerate ({exc})") from exc

    found = ransac(random_triples(m, iterations, seed), fit, lambda h: _batch_residuals(p, q, *h), refit,
                   lambda f: np.linalg.norm(q - (f[2] * p @ f[0].T + f[1]), axis=1), threshold, weight=w)
    best = found.inliers
    if found.model is None:
        return None, none, found.reason or f"too few inliers ({int(best.sum())} < {need})"
    r, t, s = found.model
    n_inl = int(best.sum())
    if n_inl < need:
        return None, none, f"too few inliers ({n_inl} < {need})"
    if n_inl < min_inlier_ratio * m:
        return None, none, f"inlier ratio too low ({n_inl}/{m} < {min_inlier_ratio})"
    sv = np.linalg.svd(p[best] - p[best].mean(0), compute_uv=False)
    if not sv[0] > 0 or sv[1] < 0.05 * sv[0]:
        return None, none, "inlier 3D matches are collinear"
    if not (np.isfinite(r).all() and np.isfinite(t).all() and np.isfinite(s)):
        return None, none, "non-finite fit"
    if not min_scale <= s <= max_scale:
        return None, none, f"implausible scale {s:.3g}"
    inliers = none.copy()
    inliers[idx[best]] = True
    return (r, t, float(s)), inliers, "ok"


def consensus_prior_3d(ref_map: torch.Tensor, live_map: torch.Tensor, ref_uv: torch.Tensor,
                       ref_depth: np.ndarray, ref_K: np.ndarray, ref_points: np.ndarray | None,
                       live_depth: np.ndarray, live_K: np.ndarray, *, margin: float = 0.25,
                       threshold: float = 0.1, iterations: int = 256, min_inliers: int = 8,
                       depth_radius: int | None = None, depth_gate: float | None = 0.1, seed: int = 0) -> Prior3D:
    """Fit the 3D similarity reference -> live from dense mutual matches lifted with depth; project the keypoints.

    Args:
        ref_map, live_map: ``[C, g, g]`` unit-norm coarse maps (:func:`semcorr_ros.engine.consensus.coarse_map`).
        ref_uv: ``[K, 2]`` normalised reference keypoints.
        ref_depth, live_depth: ``[H, W]`` float metres, NaN invalid (:func:`geometry.validate_depth`).
        ref_K, live_K: ``[3, 3]`` intrinsics of the two cameras.
        ref_points: optional ``[K, 3]`` reference keypoints in 3D (NaN rows where unknown).
        threshold: RANSAC inlier distance as a fraction of the live image side (like the 2D prior); converted
            to metres at the median depth of the live matches: ``tau = threshold * max(W, H) / f * z_med``.
        depth_radius: window half-size (pixels) for the cells' depth; default a quarter of a live cell.
        depth_gate: reference cells deeper or shallower than the reference keypoints' depth range by more than
            ``max(depth_gate, a quarter of that range)`` metres are background, not object: dropped (``None``
            keeps all; needs ``ref_points``).
        iterations, min_inliers, margin, seed: see :func:`fit_similarity_ransac` and the 2D prior.

    Returns:
        :class:`Prior3D` (``active`` False, with a reason, on degenerate input).
    """
    def off(reason: str, n: int = 0) -> Prior3D:
        return Prior3D(uv=ref_uv.clone(), active=False, n_matches=n, reason=reason)

    k = ref_uv.shape[0]
    if k == 0:
        return off("no keypoints")
    if ref_depth is None or live_depth is None or ref_K is None or live_K is None:
        return off("no depth or intrinsics")
    if not (torch.isfinite(ref_map).all() and torch.isfinite(live_map).all() and torch.isfinite(ref_uv).all()):
        return off("non-finite input")
    g = ref_map.shape[-1]
    src, dst, w = mutual_matches(ref_map, live_map, reference_mask(ref_uv, g, margin))
    if src.shape[0] == 0:
        return off("no mutual matches")
    lh, lw = live_depth.shape
    rh, rw = ref_depth.shape
    if depth_radius is None:
        depth_radius = int(max(2, min(8, min(lh, lw) / live_map.shape[-1] / 4)))
    src_np, dst_np = src.double().cpu().numpy(), dst.double().cpu().numpy()
    p3, okp = lift_cells(ref_depth, src_np, ref_K, depth_radius)
    q3, okq = lift_cells(live_depth, dst_np, live_K, depth_radius)
    both = okp & okq
    if ref_points is not None and depth_gate is not None:
        zk = np.asarray(ref_points, dtype=np.float64).reshape(-1, 3)[:, 2]
        zk = zk[np.isfinite(zk)]
        if zk.size:
            gate = max(depth_gate, 0.25 * float(zk.max() - zk.min()))
            with np.errstate(invalid="ignore"):
                both &= (p3[:, 2] >= zk.min() - gate) & (p3[:, 2] <= zk.max() + gate)
    n = int(both.sum())
    if n < max(3, min_inliers):
        return off(f"too few matches with depth ({n} < {max(3, min_inliers)})", n)
    z_med = float(np.median(q3[both, 2]))
    tau = threshold * max(lh, lw) / float(min(live_K[0, 0], live_K[1, 1])) * z_med
    fit, inliers, reason = fit_similarity_ransac(p3[both], q3[both], w.double().cpu().numpy()[both],
                                                 threshold=tau, iterations=iterations, min_inliers=min_inliers,
                                                 seed=seed)
    if fit is None:
        return off(reason, n)
    r, t, s = fit
    # reference keypoints in 3D; unknown depth -> the median depth of the inlier reference cells
    kuv = ref_uv.double().cpu().numpy()
    kxy = kuv * np.array([rw, rh], dtype=np.float64) - 0.5
    pts = np.full((k, 3), np.nan) if ref_points is None else np.array(ref_points, dtype=np.float64).reshape(k, 3)
    missing = ~np.isfinite(pts).all(1)
    if missing.any():
        z_ref = float(np.median(p3[both][inliers, 2]))
        pts[missing] = geometry.backproject(kxy[missing], np.full(int(missing.sum()), z_ref), ref_K)
    live = s * pts @ r.T + t
    xy = geometry.project(live, live_K)
    if not np.isfinite(xy).all():
        return off("a keypoint projects behind the live camera", n)
    uv = (xy + 0.5) / np.array([lw, lh], dtype=np.float64)
    if not np.isfinite(uv).all():
        return off("non-finite prior", n)
    res = np.linalg.norm(q3[both][inliers] - (s * p3[both][inliers] @ r.T + t), axis=1)
    return Prior3D(uv=torch.as_tensor(uv, dtype=ref_uv.dtype, device=ref_uv.device), active=True, R=r, t=t,
                   scale=s, n_matches=n, n_inliers=int(inliers.sum()), rmse=float(np.sqrt(np.mean(res ** 2))),
                   reason="ok")


def pose_from_prior(prior: Prior3D, src: np.ndarray, dst: np.ndarray, mask: np.ndarray, threshold: float,
                    min_inliers: int) -> PoseResult | None:
    """Rigid keypoint pose seeded by the 3D prior's transform (used when the keypoint RANSAC finds no pose).

    The keypoint pairs ``(src, dst)`` (reference / live camera, metres, ``mask`` the usable ones) within
    ``threshold`` of the prior's rotation and translation (scale dropped: the pose is rigid) are its inliers; with
    at least ``min_inliers`` of them (and a non-degenerate set) the pose is the rigid Umeyama refit on them, else
    ``None``.
    """
    if not prior.active:
        return None
    a = np.asarray(src, dtype=np.float64)
    b = np.asarray(dst, dtype=np.float64)
    use = np.asarray(mask, dtype=bool) & np.isfinite(a).all(1) & np.isfinite(b).all(1)
    if use.sum() < max(3, min_inliers):
        return None
    res = np.full(len(a), np.inf)
    res[use] = np.linalg.norm(b[use] - (a[use] @ prior.R.T + prior.t), axis=1)
    cur = res < threshold
    if cur.sum() < max(3, min_inliers):
        return None
    try:
        r, t, _ = umeyama(a[cur], b[cur])
    except InputError:
        return None
    res = np.full(len(a), np.inf)
    res[use] = np.linalg.norm(b[use] - (a[use] @ r.T + t), axis=1)
    inl = res < threshold
    if inl.sum() < max(3, min_inliers):
        return None
    return PoseResult(R=r, t=t, valid=True, inliers=inl, n_inliers=int(inl.sum()),
                      rmse=float(np.sqrt(np.mean(res[inl] ** 2))), scale=1.0)
