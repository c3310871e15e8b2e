"""A calibrated match confidence: one probability per keypoint that its match is correct.

The ingredients, per keypoint, from :func:`semcorr_ros.engine.matching.match_keypoints` and the consensus prior:

- ``peak``: cosine similarity at the chosen cell;
- ``cycle = min((e / sigma_c)^2, 25)``: squared cycle-consistency error ``e`` (the match matched back into the
  reference lands ``e`` away from the keypoint; a mutual nearest neighbour has ``e`` below one cell), in units of
  ``cycle_sigma``;
- ``prior = min((d / sigma_p)^2, 25)``: squared distance ``d`` between the match and the consensus prior's
  position, in units of ``consensus_sigma`` (agreement with the rest of the object); 0 when there is no prior;
- ``no_prior``: 1 when no prior was available for this frame (or pass), else 0.

The confidence is a logistic model ``p = sigmoid(c0 + c1 peak + c2 cycle + c3 prior + c4 no_prior)``, its
coefficients fitted (maximum likelihood) to "correct at PCK@0.1" labels by ``tools/dev/calibrate_scores.py``;
``p`` then reads as the probability of a correct match on data like the calibration data.

A matcher whose scores sit on another scale (a trained KBCNet head: higher peaks for the same accuracy) keeps
the features and their relative weights but needs its own level: :func:`platt_rescale` fits ``a`` and ``b`` in
``sigmoid(a * (features @ c) + b)`` on labelled matches (Platt scaling of the existing logit), two parameters, so
the ranking of matches by confidence is unchanged and a few hundred labelled pairs are enough.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: Names of the features, in the order of the coefficients.
FEATURES = ("bias", "peak", "cycle", "prior", "no_prior")


def score_features(peak: torch.Tensor, cycle_error: torch.Tensor, uv: torch.Tensor, prior: torch.Tensor | None,
                   cycle_sigma: float, prior_sigma: float) -> torch.Tensor:
    """``[K, 5]`` features (see the module docstring) from ``[K]`` peaks, ``[K]`` cycle errors, ``[K, 2]`` matches
    and the optional ``[K, 2]`` prior positions (all normalised coordinates)."""
    k = peak.shape[0]
    cycle = ((cycle_error / cycle_sigma) ** 2).clamp(max=25.0)
    if prior is None:
        dist = peak.new_zeros(k)
        no_prior = peak.new_ones(k)
    else:
        dist = (((uv - prior.to(uv)).norm(dim=1) / prior_sigma) ** 2).clamp(max=25.0)
        no_prior = peak.new_zeros(k)
    return torch.stack([peak.new_ones(k), peak, cycle, dist, no_prior], dim=1)


def calibrated_score(features: torch.Tensor, coefficients: Sequence[float]) -> torch.Tensor:
    """``[K]`` probabilities ``sigmoid(features @ coefficients)``."""
    c = torch.as_tensor(list(coefficients), dtype=features.dtype, device=features.device)
    return torch.sigmoid(features @ c)


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iterations: int = 50) -> np.ndarray:
    """Maximum-likelihood logistic regression (Newton's method, L2 penalty ``l2``): ``w`` with
    ``P(y = 1 | x) = sigmoid(x @ w)``; ``x`` is ``[N, D]`` (include a column of ones for a bias), ``y`` ``[N]`` in
    {0, 1}."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    w = np.zeros(x.shape[1])
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + l2 * w
        hess = (x * (p * (1 - p))[:, None]).T @ x + l2 * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def platt_rescale(features: np.ndarray, correct: np.ndarray, coefficients: Sequence[float]) -> tuple[float, ...]:
    """Coefficients ``a c + b e_0`` of the calibrated score rescaled to labelled matches (module docstring).

    Args:
        features: ``[N, 5]`` score features of the matches (:func:`score_features`).
        correct: ``[N]`` bool, whether each match is correct.
        coefficients: the calibration ``c`` to rescale.

    Returns:
        Five coefficients for :func:`calibrated_score`.

    Raises:
        ValueError: fewer than 10 correct or 10 wrong matches (the level is not identifiable).
    """
    f = np.asarray(features, dtype=np.float64).reshape(-1, len(FEATURES))
    y = np.asarray(correct, dtype=bool).reshape(-1)
    if len(f) != len(y):
        raise ValueError(f"{len(f)} feature rows for {len(y)} labels")
    n_ok = int(y.sum())
    if min(n_ok, len(y) - n_ok) < 10:
        raise ValueError(f"need at least 10 correct and 10 wrong matches to fit a calibration, got {n_ok} correct "
                         f"of {len(y)}")
    c = np.asarray(coefficients, dtype=np.float64)
    z = f @ c
    b, a = fit_logistic(np.stack([np.ones_like(z), z], axis=1), y.astype(np.float64))
    out = a * c
    out[0] += b
    return tuple(float(v) for v in out)
