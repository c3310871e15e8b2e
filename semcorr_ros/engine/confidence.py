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
"""

from __future__ import annotations

from collections.abc import Sequence

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
