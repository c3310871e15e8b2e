"""Pictures of a bag run: PCK curve, latency histogram, contact sheet (matplotlib Agg, written atomically)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from semcorr_ros.bageval.metrics import FramePrediction
from semcorr_ros.eval.figures import save_figure
from semcorr_ros.eval.pck import box_unit, normalised_errors, within
from semcorr_ros.groundtruth import FrameGroundTruth

__all__ = ["plot_pck_curve", "plot_latency_hist", "plot_temporal", "pick_contact_frames", "plot_contact_sheet"]


def _figure(w: float, h: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h))


def plot_pck_curve(metrics: Mapping[str, Any], path: Path, title: str = "") -> Path:
    """PCK vs alpha (threshold alpha * max side of the GT object box): all scored keypoints and valid outputs."""
    fig = _figure(6.0, 4.2)
    ax = fig.add_subplot(111)
    curve = metrics.get("pck_curve")
    if curve:
        a = np.asarray(curve["alpha"], float)
        for key, label, style in (("pck", "PCK (invalid / missing = wrong)", "-"),
                                  ("pck_valid", "PCK among valid outputs", "--")):
            v = np.array([np.nan if x is None else x for x in curve[key]], float)
            ax.plot(a, v, style, label=label, lw=2)
        for alpha in (0.05, 0.1, 0.15):
            ax.axvline(alpha, color="0.85", lw=0.8, zorder=0)
        ax.legend(loc="lower right")
    else:
        ax.text(0.5, 0.5, "no ground truth in the bag:\nno PCK", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlim(0, 0.2)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("alpha (fraction of max(w, h) of the ground-truth object box)")
    ax.set_ylabel("PCK")
    ax.grid(alpha=0.3)
    ax.set_title(title or "PCK curve")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_latency_hist(latencies_ms: Sequence[float], path: Path, title: str = "", label: str = "latency") -> Path:
    fig = _figure(6.0, 4.2)
    ax = fig.add_subplot(111)
    v = np.asarray([x for x in latencies_ms if x is not None and np.isfinite(x)], float)
    if v.size:
        ax.hist(v, bins=min(40, max(5, v.size // 2)), color="#4477aa", alpha=0.85)
        for q, style in ((50, "-"), (95, "--")):
            p = float(np.percentile(v, q))
            ax.axvline(p, color="k", ls=style, lw=1.2, label=f"p{q} = {p:.0f} ms")
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no outputs", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(f"{label} (ms)")
    ax.set_ylabel("frames")
    ax.grid(alpha=0.3)
    ax.set_title(title or "latency")
    fig.tight_layout()
    return save_figure(fig, path)


_STATE_COLOURS = {"tracked": "#228833", "detecting": "#4477aa", "reacquired": "#ccbb44", "lost": "#ee6677"}


def plot_temporal(series: Mapping[str, Any] | Sequence[tuple[str, Mapping[str, Any]]], path: Path,
                  title: str = "") -> Path:
    """Per frame, each object's keypoint errors over time: every keypoint's error (thin lines; a gap where it is
    not visible or not output), their median (thick), the PCK threshold, frames where the visible object was not
    found shaded red; with tracking, a strip of the track state under each panel.

    Args:
        series: one object's plot data from :func:`semcorr_ros.bageval.temporal.sequence_report`, or a list of
            ``(object id, plot data)``.
    """
    items = [("", series)] if isinstance(series, Mapping) else list(series)
    fig = _figure(8.0, 2.6 * max(1, len(items)) + 0.4)
    for row, (oid, d) in enumerate(items):
        ax = fig.add_subplot(len(items), 1, row + 1)
        px, gx, ok = np.asarray(d["pred_xy"], float), np.asarray(d["gt_xy"], float), np.asarray(d["pred_ok"], bool)
        vis, size = np.asarray(d["gt_visible"], bool), np.asarray(d["size"], float)
        t = np.arange(len(size))
        if len(t) == 0:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", transform=ax.transAxes)
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            err = np.linalg.norm(px - gx, axis=-1) / size[:, None]
        err = np.where(ok & vis, err, np.nan)
        for k in range(err.shape[1]):
            ax.plot(t, err[:, k], lw=0.7, alpha=0.5)
        with warnings.catch_warnings():  # frames without any usable keypoint: NaN median, no warning
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nanmedian(err, axis=1)
        ax.plot(t, med, "k", lw=2, label="median keypoint error")
        ax.axhline(d.get("alpha", 0.1), color="k", ls="--", lw=1, label=f"PCK threshold {d.get('alpha', 0.1):g}")
        missed = np.asarray(d["visible"], bool) & ~np.asarray(d["found"], bool)
        for i in np.nonzero(missed)[0]:
            ax.axvspan(i - 0.5, i + 0.5, color="#ee6677", alpha=0.15, lw=0)
        hidden = ~np.asarray(d["visible"], bool)
        for i in np.nonzero(hidden)[0]:
            ax.axvspan(i - 0.5, i + 0.5, color="0.85", alpha=0.6, lw=0)
        status = d.get("track_status") or []
        if any(status):
            for i, st in enumerate(status):
                ax.axvspan(i - 0.5, i + 0.5, ymin=0.0, ymax=0.04, color=_STATE_COLOURS.get(st or "", "0.6"), lw=0)
        top = np.nanmax(med) if np.isfinite(med).any() else 0.3
        ax.set_ylim(0, max(0.3, min(1.0, 1.2 * float(top))))
        ax.set_xlim(-0.5, len(t) - 0.5)
        ax.set_ylabel("error / object size")
        ax.grid(alpha=0.3)
        ax.set_title((f"{oid}: " if oid else "") + "keypoint error over frames (grey: object hidden, red: not "
                     "found" + (", strip: track state" if any(status) else "") + ")", fontsize=9)
        if row == 0:
            handles, labels = ax.get_legend_handles_labels()
            if any(status):
                from matplotlib.patches import Patch

                handles += [Patch(color=c, label=k) for k, c in _STATE_COLOURS.items()]
            ax.legend(handles=handles, loc="upper right", fontsize=7, ncol=2 if any(status) else 1)
    fig.axes[-1].set_xlabel("frame (with ground truth)")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def pick_contact_frames(color_stamps: Sequence[int], predictions: Mapping[int, FramePrediction],
                        ground_truth: Mapping[int, FrameGroundTruth], count: int = 11) -> list[int]:
    """Up to ``count`` stamps spread evenly over the bag, preferring frames with an output (and ground truth)."""
    stamps = list(dict.fromkeys(color_stamps))
    pool = [s for s in stamps if s in predictions and (s in ground_truth or not ground_truth)] or \
        [s for s in stamps if s in predictions] or stamps
    if len(pool) <= count:
        return pool
    idx = np.unique(np.round(np.linspace(0, len(pool) - 1, count)).astype(int))
    return [pool[i] for i in idx]


def plot_contact_sheet(path: Path, images: Mapping[int, np.ndarray], stamps: Sequence[int],
                       predictions: Mapping[int, FramePrediction], ground_truth: Mapping[int, FrameGroundTruth],
                       reference: Any, frame_numbers: Mapping[int, int], alpha: float = 0.1,
                       title: str = "") -> Path:
    """A grid: the reference with its keypoints, then the chosen frames with ground truth (white rings), predicted
    keypoints (green: within alpha * box size of the ground truth, red: farther, grey x: invalid, orange: no
    ground truth) and a line from each ground-truth keypoint to its prediction."""
    panels = [s for s in stamps if s in images]
    n = len(panels) + 1
    cols = min(4, n)
    rows = int(np.ceil(n / cols))
    fig = _figure(3.6 * cols, 2.9 * rows + 0.5)
    ax = fig.add_subplot(rows, cols, 1)
    ax.imshow(reference.image)
    ax.scatter(reference.keypoints[:, 0], reference.keypoints[:, 1], s=18, c="#ffdd00", edgecolors="k", lw=0.5)
    ax.set_title(f"reference {reference.reference_id}", fontsize=8)
    ax.axis("off")
    for k, s in enumerate(panels):
        ax = fig.add_subplot(rows, cols, k + 2)
        img = images[s]
        ax.imshow(img)
        h, w = img.shape[:2]
        pred = predictions.get(s)
        gt = ground_truth.get(s)
        label = f"frame {frame_numbers.get(s, '?')}"
        if gt is not None:
            box = np.asarray(gt.object_box, float)
            size = box_unit(box)
            gidx = {nm: i for i, nm in enumerate(gt.names)}
            vis = np.asarray(gt.visible, bool)
            ax.scatter(gt.keypoints_2d[vis, 0], gt.keypoints_2d[vis, 1], s=40, facecolors="none",
                       edgecolors="white", lw=1.2)
        else:
            gidx, size = {}, np.nan
        n_ok = n_sc = 0
        if pred is not None:
            for i, name in enumerate(pred.names):
                x, y = pred.xy[i]
                g = gidx.get(name)
                if not pred.valid[i]:
                    if np.isfinite([x, y]).all():
                        ax.scatter([x], [y], marker="x", s=20, c="0.6", lw=1)
                    if g is not None and gt.visible[g]:
                        n_sc += 1
                    continue
                colour = "#ff9900"
                if g is not None and gt.visible[g] and np.isfinite(size):
                    gx, gy = gt.keypoints_2d[g]
                    ok = bool(within(normalised_errors(pred.xy[i:i + 1], gt.keypoints_2d[g:g + 1], size)[0], alpha))
                    colour = "#22cc44" if ok else "#ee2222"
                    ax.plot([gx, x], [gy, y], color=colour, lw=1.0)
                    n_sc += 1
                    n_ok += int(ok)
                ax.scatter([x], [y], s=18, c=colour, edgecolors="k", lw=0.4)
            if n_sc:
                label += f"  PCK@{alpha:g} {n_ok}/{n_sc}"
            if pred.latency_s is not None:
                label += f"  {pred.latency_s * 1e3:.0f} ms"
        else:
            label += "  (no output)"
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=80)
