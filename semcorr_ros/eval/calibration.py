"""How much a matcher's confidence means: PCK of the most confident keypoints, and a reliability table.

Given every scored keypoint's normalised error ``e`` (distance / PCK unit, see :mod:`semcorr_ros.eval.pck`) and
its confidence ``s``, a keypoint is correct at ``alpha`` when ``e <= alpha``. A useful score ranks correct
keypoints first: the PCK of the top ``f`` fraction by score should fall from high to the overall PCK as ``f``
grows to 1. The reliability table bins keypoints by score (equal-width bins on [0, 1]) and gives each bin's mean
score and accuracy; a calibrated score has accuracy close to its mean score in every bin.
Its picture: :func:`semcorr_ros.eval.pck_plots.plot_reliability`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from semcorr_ros.eval.pck import within

DEFAULT_FRACTIONS = (0.1, 0.25, 0.5, 0.75, 1.0)


def confidence_summary(errors: np.ndarray, scores: np.ndarray, alpha: float = 0.1,
                       fractions: Sequence[float] = DEFAULT_FRACTIONS, bins: int = 10) -> dict:
    """Top-fraction PCK and reliability bins.

    Args:
        errors: ``[N]`` normalised errors (NaN: not scored, ignored).
        scores: ``[N]`` confidences in [0, 1] (NaN ignored).
        alpha: PCK threshold.
        fractions: fractions of the most confident keypoints to report.
        bins: number of equal-width score bins.

    Returns:
        ``{"alpha", "keypoints", "pck_top": {"10%": ..}, "reliability": [{"lo", "hi", "count", "mean_score",
        "accuracy"}], "ece"}`` where ``ece`` is the count-weighted mean |accuracy - mean score| over the bins.
    """
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    ok = np.isfinite(e) & np.isfinite(s)
    e, s = e[ok], s[ok]
    correct = within(e, alpha)
    order = np.argsort(-s, kind="stable")
    top = {}
    for f in fractions:
        n = int(np.ceil(f * len(s)))
        top[f"{round(100 * f):d}%"] = float(correct[order[:n]].mean()) if n else None
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        m = idx == b
        count = int(m.sum())
        row = {"lo": float(edges[b]), "hi": float(edges[b + 1]), "count": count,
               "mean_score": float(s[m].mean()) if count else None,
               "accuracy": float(correct[m].mean()) if count else None}
        if count:
            ece += count * abs(row["accuracy"] - row["mean_score"])
        table.append(row)
    return {"alpha": float(alpha), "keypoints": int(len(s)), "pck_top": top, "reliability": table,
            "ece": float(ece / len(s)) if len(s) else None}
