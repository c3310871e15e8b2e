"""One RANSAC loop for every robust fit of the engine: the keypoint pose (:mod:`.pose`), the 3D consensus
similarity (:mod:`.prior3d`) and the 2D consensus affine (:mod:`.consensus`).

The loop is model- and backend-agnostic (numpy arrays or torch tensors): the caller draws minimal samples
with a seeded generator (:func:`distinct_triples`, :func:`random_triples`, :func:`torch_triples`), and passes

- ``fit(samples [M, 3]) -> hypotheses``: batched minimal fits (degenerate samples dropped; raise
  :class:`~semcorr_ros.errors.InputError` with a reason when none is left);
- ``residuals(hypotheses) -> [M, N]``: every hypothesis scored on every datum;
- ``refit(inliers [N] bool) -> model | None``: least squares on the inliers (``None`` or ``InputError``: degenerate);
- ``residual(model) -> [N]``.

Then: inliers ``residual < threshold``; the best hypothesis by ``select`` (default: most inlier weight, then most
inliers); up to ``rounds`` refits on the current inliers, stopping early when the inliers no longer change
(``monotone``: a round that loses inliers is also dropped and stops the loop).

Each caller keeps its own sampler: they draw different random streams, and a seeded result (tests, benchmark
numbers) depends on the exact stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np
import torch

from semcorr_ros.errors import InputError

__all__ = ["RansacFit", "ransac", "most_weight", "most_inliers_least_cost", "distinct_triples", "random_triples",
           "torch_triples"]

Array = Any  # np.ndarray or torch.Tensor


@dataclass
class RansacFit:
    """Result of :func:`ransac`.

    Attributes:
        model: the refined model, ``None`` when no hypothesis or no refit survived.
        inliers: ``[N]`` bool, the model's inliers (the best hypothesis' when no refit succeeded; ``None`` when
            there was no hypothesis).
        reason: ``"ok"``, or why there is no model (from ``fit``/``refit``; empty when refinement found too
            few inliers).
    """

    model: Any
    inliers: Array | None
    reason: str


def most_weight(inl: Array, res: Array, weight: Array) -> int:
    """Index of the hypothesis with the most inlier weight (``inl [M, N]``, ``weight [N]``), ties: most inliers."""
    count = inl.sum(1)
    return int((count * (1.0 + 1e-6) if weight is None else (inl * weight[None]).sum(1) + count * 1e-6).argmax())


def most_inliers_least_cost(inl: np.ndarray, res: np.ndarray, weight: Any = None) -> int:
    """Index of the hypothesis with the most inliers, ties broken by the lowest sum of inlier residuals."""
    cost = np.where(inl, res, 0.0).sum(axis=1)
    return int(np.lexsort((cost, -inl.sum(axis=1)))[0])


def ransac(samples: Array, fit: Callable[[Array], Any], residuals: Callable[[Any], Array],
           refit: Callable[[Array], Any], residual: Callable[[Any], Array], threshold: float, *,
           weight: Array | None = None, select: Callable[[Array, Array, Array | None], int] = most_weight,
           rounds: int = 2, monotone: bool = False) -> RansacFit:
    """Hypothesise-and-verify over minimal ``samples [M, s]`` (indices into the ``N`` data), then refine.

    See the module docstring for the callables. Returns :class:`RansacFit`; never raises for degenerate data.
    """
    try:
        hyps = fit(samples)
    except InputError as exc:
        return RansacFit(None, None, str(exc))
    res = residuals(hyps)                                               # [M, N]
    inl = res < threshold
    cur = inl[select(inl, res, weight)]
    model, reason = None, ""
    for _ in range(rounds):
        if int(cur.sum()) < samples.shape[1]:
            break
        try:
            new_model = refit(cur)
        except InputError as exc:
            reason = str(exc)
            break
        if new_model is None:
            break
        new = residual(new_model) < threshold
        if monotone and model is not None and new.sum() < cur.sum():
            break
        model = new_model
        if bool((new == cur).all()):
            break
        cur = new
    return RansacFit(model, cur, "ok" if model is not None else reason)


def distinct_triples(n: int, iterations: int, seed: int | None) -> np.ndarray:
    """``[M, 3]`` index triples of ``n`` points: all ``C(n, 3)`` when at most ``iterations``, else ``iterations``
    random triples of distinct indices from ``np.random.default_rng(seed)``."""
    if n * (n - 1) * (n - 2) // 6 <= iterations:
        return np.array(list(combinations(range(n), 3)), dtype=np.int64)
    rng = np.random.default_rng(seed)
    i0 = rng.integers(0, n, iterations)
    i1 = rng.integers(0, n - 1, iterations)
    i1 += i1 >= i0
    lo, hi = np.minimum(i0, i1), np.maximum(i0, i1)
    i2 = rng.integers(0, n - 2, iterations)
    i2 += i2 >= lo
    i2 += i2 >= hi
    return np.stack([i0, i1, i2], axis=1)


def random_triples(n: int, iterations: int, seed: int) -> np.ndarray:
    """``[M, 3]`` random triples from ``np.random.default_rng(seed)``, first two indices distinct (the third may
    repeat one: the fit drops such samples)."""
    rng = np.random.default_rng(seed)
    i0 = rng.integers(0, n, iterations)
    i1 = (i0 + rng.integers(1, n, iterations)) % n
    i2 = rng.integers(0, n, iterations)
    return np.stack([i0, i1, i2], axis=1)


def torch_triples(n: int, iterations: int, seed: int, device: torch.device) -> torch.Tensor:
    """``[M, 3]`` random triples (repeats possible) from a CPU ``torch.Generator`` seeded with ``seed``."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    return torch.randint(n, (iterations, 3), generator=gen).to(device)
