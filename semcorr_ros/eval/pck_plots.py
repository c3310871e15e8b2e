"""Pictures of evaluation results (PNG): PCK-vs-alpha curves, side-by-side keypoint matches, score reliability.

Uses matplotlib's Agg canvas directly (no pyplot, no global backend switch, no display needed); files are written
atomically by :func:`semcorr_ros.eval.figures.save_figure`. The evaluation itself (:mod:`semcorr_ros.eval.benchmark`)
never imports this module: plots depend on results, not the other way round.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping, Sequence, Union

import numpy as np

from semcorr_ros.errors import InputError
from semcorr_ros.eval.figures import save_figure
from semcorr_ros.eval.pck import PCKAccumulator, check_alphas

if TYPE_CHECKING:

    from semcorr_ros.eval.benchmark import EvalReport

#: alphas of the dense curve: 0.01, 0.015, ..., 0.2
DENSE_ALPHAS: np.ndarray = np.round(np.arange(0.01, 0.2 + 1e-9, 0.005), 4)

CurveSource = Union["EvalReport", PCKAccumulator, Mapping[float, float], Mapping[str, Mapping[float, float]]]


def _curves(source: CurveSource, alphas: np.ndarray) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """``{label: (alphas, pck)}`` with the overall curve first, and a y-axis label."""
    acc = getattr(source, "accumulator", source)
    if isinstance(acc, PCKAccumulator):
        curves = {"all": (alphas, acc.curve(alphas))}
        for cat in acc.categories:
            curves[cat] = (alphas, acc.curve(alphas, cat))
        return curves, "PCK (per keypoint)"
    if not isinstance(source, Mapping) or not source:
        raise InputError("plot_pck_curve needs an EvalReport, a PCKAccumulator, {alpha: pck} or "
                         f"{{label: {{alpha: pck}}}}; got {type(source).__name__}")
    values = list(source.values())
    if all(isinstance(v, Mapping) for v in values):
        named = {str(k): v for k, v in source.items()}  # type: ignore[misc]
    else:
        named = {"PCK": source}  # type: ignore[dict-item]
    curves = {}
    for label, curve in named.items():
        try:
            pts = sorted((float(a), float(v)) for a, v in curve.items())
        except (TypeError, ValueError) as exc:
            raise InputError(f"curve {label!r} must map alpha -> PCK numbers: {exc}") from exc
        if not pts:
            raise InputError(f"curve {label!r} is empty")
        curves[label] = (np.array([p[0] for p in pts]), np.array([p[1] for p in pts]))
    return curves, "PCK"


def plot_pck_curve(source: CurveSource, path: str | os.PathLike[str], alphas: Sequence[float] | None = None,
                   title: str | None = None, per_category: bool = True) -> Path:
    """Plot PCK against alpha and save it as a PNG.

    Args:
        source: an :class:`~semcorr_ros.eval.benchmark.EvalReport` or :class:`PCKAccumulator` (dense curve computed
            from the stored errors: overall line, plus one line per category), a ``{alpha: pck}`` curve, or
            ``{label: {alpha: pck}}`` curves.
        path: output ``.png`` file (written atomically).
        alphas: alphas of the dense curve (default :data:`DENSE_ALPHAS`, 0.01..0.2); ignored for given curves.
        title: figure title (default: the report's dataset and threshold when known).
        per_category: draw per-category lines next to the overall one.

    Returns:
        ``path``.
    """
    from matplotlib.figure import Figure

    a = np.asarray(check_alphas(DENSE_ALPHAS if alphas is None else alphas))
    curves, ylabel = _curves(source, a)
    fig = Figure(figsize=(6.4, 4.8))
    ax = fig.add_subplot(1, 1, 1)
    overall = next(iter(curves))
    for i, (label, (x, y)) in enumerate(curves.items()):
        if i > 0 and overall == "all" and not per_category:
            break
        if label == "all":
            ax.plot(x, y, color="black", linewidth=2.5, label=f"all ({np.interp(0.1, x, y):.3f} @0.1)"
                    if x.min() <= 0.1 <= x.max() else "all", zorder=3)
        else:
            ax.plot(x, y, linewidth=1.2, alpha=0.85, label=label)
    ax.set_xlabel("alpha (threshold / max side)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(0.0, 1.0)
    ax.grid(True, alpha=0.3)
    if title is None:
        dataset = getattr(source, "dataset", "")
        threshold = getattr(source, "threshold", "")
        title = " ".join(p for p in (dataset, f"threshold={threshold}" if threshold else "") if p) or "PCK"
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def _check_image(img: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4) or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InputError(f"{name} must be an image [H, W, 3] (or [H, W]), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise InputError(f"{name} must be uint8, got {arr.dtype}")
    return arr[:, :, :3]


def _check_kps(kps: np.ndarray | None, name: str, k: int | None) -> np.ndarray | None:
    if kps is None:
        return None
    arr = np.asarray(kps, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or (k is not None and arr.shape[0] != k):
        want = f"[{k}, 2]" if k is not None else "[K, 2]"
        raise InputError(f"{name} must be {want} (x, y), got shape {arr.shape}")
    return arr


def draw_matches(src_img: np.ndarray, tgt_img: np.ndarray, src_kps: np.ndarray, pred_kps: np.ndarray,
                 gt_kps: np.ndarray | None = None, valid: np.ndarray | None = None,
                 names: Sequence[str] | None = None, *, path: str | os.PathLike[str],
                 title: str | None = None) -> Path:
    """Save a side-by-side picture: source left, target right, a line per keypoint from its source position
    to its predicted target position (one colour per keypoint).

    Args:
        src_img, tgt_img: ``uint8 [H, W, 3]`` RGB (``[H, W]`` grey accepted).
        src_kps: ``[K, 2]`` source keypoints, ``(x, y)`` pixels.
        pred_kps: ``[K, 2]`` predicted target keypoints (non-finite rows are not drawn).
        gt_kps: ``[K, 2]`` ground-truth target keypoints, drawn as crosses.
        valid: ``bool [K]``; invalid matches are drawn dashed and faint.
        names: ``K`` keypoint names, written next to the source keypoints.
        path: output ``.png`` file (written atomically).
        title: figure title.

    Returns:
        ``path``.

    Raises:
        InputError: wrong image or keypoint shapes.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    src = _check_image(src_img, "src_img")
    tgt = _check_image(tgt_img, "tgt_img")
    src_k = np.asarray(_check_kps(src_kps, "src_kps", None))
    k = src_k.shape[0]
    pred_k = _check_kps(pred_kps, "pred_kps", k)
    gt_k = _check_kps(gt_kps, "gt_kps", k)
    ok = np.ones(k, bool) if valid is None else np.asarray(valid, dtype=bool).reshape(-1)
    if ok.shape[0] != k:
        raise InputError(f"valid must have {k} entries, got {ok.shape[0]}")
    if names is not None and len(names) != k:
        raise InputError(f"names must have {k} entries, got {len(names)}")

    gap = 10
    h = max(src.shape[0], tgt.shape[0])
    w = src.shape[1] + gap + tgt.shape[1]
    canvas = np.full((h, w, 3), 255, np.uint8)
    canvas[:src.shape[0], :src.shape[1]] = src
    off = src.shape[1] + gap
    canvas[:tgt.shape[0], off:] = tgt

    scale = max(1.0, 900.0 / w)  # small benchmark images are drawn at least 900 px wide
    title_px = 30.0 / scale if title else 0.0  # room for the title, in image pixels
    fig = Figure(figsize=(w * scale / 100.0, (h + title_px) * scale / 100.0))
    ax = fig.add_axes((0.0, 0.0, 1.0, h / (h + title_px)))
    ax.imshow(canvas, interpolation="nearest")
    ax.set_xlim(-0.5, w - 0.5)
    ax.set_ylim(h - 0.5, -0.5)
    ax.axis("off")
    cmap = colormaps["tab20" if k > 10 else "tab10"]
    for i in range(k):
        colour = cmap(i % cmap.N)
        sx, sy = src_k[i]
        if not np.isfinite(src_k[i]).all():
            continue
        ax.plot([sx], [sy], "o", color=colour, markersize=5, markeredgecolor="white", markeredgewidth=0.8)
        if names is not None:
            ax.text(sx + 3, sy - 3, str(names[i]), color=colour, fontsize=6,
                    bbox={"facecolor": "white", "alpha": 0.5, "pad": 0.5, "linewidth": 0})
        if pred_k is not None and np.isfinite(pred_k[i]).all():
            px, py = pred_k[i, 0] + off, pred_k[i, 1]
            style = {"linestyle": "-", "alpha": 0.9} if ok[i] else {"linestyle": "--", "alpha": 0.35}
            ax.plot([sx, px], [sy, py], color=colour, linewidth=1.2, **style)
            ax.plot([px], [py], "o", color=colour, markersize=5,
                    markerfacecolor=colour if ok[i] else "none", markeredgecolor="white" if ok[i] else colour,
                    markeredgewidth=0.8)
        if gt_k is not None and np.isfinite(gt_k[i]).all():
            ax.plot([gt_k[i, 0] + off], [gt_k[i, 1]], "x", color=colour, markersize=7, markeredgewidth=2.0)
    if title:
        fig.text(0.5, 1.0 - 0.5 * title_px / (h + title_px), title, ha="center", va="center", fontsize=9)
    return save_figure(fig, path)


def plot_reliability(summary: dict, path: str | os.PathLike[str], title: str | None = None) -> Path:
    """Two panels: accuracy per score bin against the diagonal, and PCK of the top fraction by score.

    Args:
        summary: the result of :func:`semcorr_ros.eval.calibration.confidence_summary`.
        path: output ``.png`` file (written atomically).
        title: figure title.
    """
    from matplotlib.figure import Figure

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
