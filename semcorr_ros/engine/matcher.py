"""Matching one encoded view's keypoints into a live feature map: the NN matcher or the KBCNet head, then the
(calibrated) confidence. The ``match`` and ``depth-aware re-match`` stages both call :class:`ViewMatcher`."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from semcorr_ros.config import DEFAULT_SCORE_CALIBRATION, EngineConfig
from semcorr_ros.engine import confidence
from semcorr_ros.engine.kbcnet import KBCNetHead, kbcnet_match
from semcorr_ros.engine.matching import match_keypoints, similarity, uv_to_pixels
from semcorr_ros.engine.views import View

__all__ = ["Matches", "ViewMatcher"]


@dataclass
class Matches:
    """Keypoint matches in one target image (or crop)."""

    xy: np.ndarray                 # [K, 2] float64 pixels of the target
    score: np.ndarray              # [K] confidence in [0, 1]
    feats: np.ndarray              # [K, 5] the confidence's ingredients (confidence.score_features)


class ViewMatcher:
    """``matcher(view, fmap, size, weights, prior) -> Matches``: NN (``kbcnet=None``) or KBCNet matching.

    Args:
        config: the engine options (window soft-argmax, cycle and prior parameters, score calibration).
        kbcnet: the KBCNet head of ``matcher: kbcnet``, else ``None``.
    """

    def __init__(self, config: EngineConfig, kbcnet: KBCNetHead | None = None) -> None:
        self.config = config
        self.kbcnet = kbcnet
        # the last (descriptors, map, similarity): the depth-aware pass matches the same view into the same map
        # again (only the cell weights differ), so its similarity is reused, not recomputed
        self._last_sim: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def coefficients(self) -> tuple[float, ...] | None:
        """Calibration of the match confidence in use: the config's ``score_calibration``, except that a KBCNet
        head with its own calibration (written by ``semcorr train-kbcnet``) replaces the engine's default one
        (the default is fitted to the NN matcher's scores); ``None``: raw scores."""
        coeffs = self.config.score_calibration
        head = getattr(self.kbcnet, "score_calibration", None)
        if head is not None and coeffs is not None and tuple(coeffs) == DEFAULT_SCORE_CALIBRATION:
            return head
        return coeffs

    def __call__(self, view: View, fmap: torch.Tensor, size: tuple[int, int], weights: torch.Tensor | None = None,
                 prior: torch.Tensor | None = None) -> Matches:
        """Match ``view``'s keypoints into ``fmap [C, G, G]`` of a ``size = (width, height)`` image.

        Args:
            weights: optional ``[G, G]`` cell weights of ``fmap`` (depth-aware matching).
            prior: optional ``[K, 2]`` consensus prior, normalised target coordinates.
        """
        cfg = self.config
        if self.kbcnet is not None:  # matcher: kbcnet (dense learned correlation, same outputs)
            m = kbcnet_match(self.kbcnet, view.fmap, fmap, view.uv, radius=cfg.softargmax_radius,
                             cycle_sigma=cfg.cycle_sigma, tgt_weights=weights, prior=prior,
                             prior_weight=cfg.consensus_weight, prior_sigma=cfg.consensus_sigma)
        else:
            last = self._last_sim
            if last is None or last[0] is not view.desc or last[1] is not fmap:
                last = self._last_sim = (view.desc, fmap, similarity(view.desc, fmap))
            m = match_keypoints(view.desc, view.uv, view.fmap, fmap, radius=cfg.softargmax_radius,
                                temperature=cfg.softargmax_temperature, cycle_sigma=cfg.cycle_sigma,
                                tgt_weights=weights, prior=prior, prior_weight=cfg.consensus_weight,
                                prior_sigma=cfg.consensus_sigma, sim=last[2])
        feats = confidence.score_features(m.peak, m.cycle_error, m.uv, prior, cfg.cycle_sigma, cfg.consensus_sigma)
        coeffs = self.coefficients()
        score = m.score if coeffs is None else confidence.calibrated_score(feats, coeffs)
        xy = uv_to_pixels(m.uv, *size).double().cpu().numpy()
        return Matches(xy=xy, score=score.double().cpu().numpy(), feats=feats.double().cpu().numpy())
