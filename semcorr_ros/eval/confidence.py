"""How much a matcher's confidence means: PCK of the most confident keypoints, and a reliability table.

Given every scored keypoint's normalised error ``e`` (distance / PCK unit, see :mod:`semcorr_ros.eval.pck`) and
its confidence ``s``, a keypoint is correct at ``alpha`` when ``e <= alpha``. A useful score ranks correct
keypoints first: the PCK of the top ``f`` fraction by score should fall from high to the overall PCK as ``f``
grows to 1. The reliability table bins keypoints by score (equal-width bins on [0, 1]) and gives each bin's mean
score and accuracy; a calibrated score has accuracy close to its mean score in every bin.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

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
    correct = e <= alpha * (1.0 + 1e-9)
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


def plot_reliability(summary: dict, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Two panels: accuracy per score bin against the diagonal, and PCK of the top fraction by score."""
    from matplotlib.figure import Figure

    from semcorr_ros.eval.plots import save_figure

    fig = Figure(figsize=(10, 4))
    a, b = fig.subplots(1, 2)
    rows = [r for r in summary["reliability"] if r["count"]]
    centres = [(r["lo"] + r["hi"]) / 2 for r in rows]
    width = rows[0]["hi"] - rows[0]["lo"] if rows else 0.1
    a.bar(centres, [r["accuracy"] for r in rows], width=width * 0.9, alpha=0.7, label="accuracy")
    a.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    for c, r in zip(centres, rows):
        a.text(c, 0.02, str(r["count"]), ha="center", fontsize=7, rotation=90)
    a.set(xlabel="confidence", ylabel=f"PCK@{summary['alpha']:g}", xlim=(0, 1), ylim=(0, 1),
          title=f"reliability (ECE {summary['ece']:.3f})" if summary["ece"] is not None else "reliability")
    a.legend(loc="upper left")
    labels = list(summary["pck_top"])
    b.plot(range(len(labels)), [summary["pck_top"][k] for k in labels], "o-")
    b.set_xticks(range(len(labels)), labels)
    b.set(xlabel="most confident fraction of keypoints", ylabel=f"PCK@{summary['alpha']:g}", ylim=(0, 1),
          title="PCK of the most confident keypoints")
    b.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path)
