"""Temporal metrics of a sequence of per-frame keypoint predictions against ground truth (numpy only, no ROS).

Definitions (frames are taken in order and at a steady rate; all distances divided by the object's size in that
frame, ``max(w, h)`` of its ground-truth box, as PCK does):

- **Jitter** of a keypoint track: the RMS over the frames ``t`` where the keypoint is usable at ``t - 1``, ``t``
  and ``t + 1`` of the second difference ``x[t+1] - 2 x[t] + x[t-1]`` of its 2D position, divided by the
  object's size at ``t``. Usable: visible in the ground truth and, for a prediction, output as valid. The same
  figure of the ground truth itself (its own positions where visible) is the motion's share: a prediction that
  follows the object exactly has the ground truth's jitter. ``rms`` pools every keypoint's second differences.
- **Found**: a frame in which the object is visible (at least one visible keypoint) and at least
  ``min_fraction`` of its visible keypoints are valid and within ``alpha`` object sizes of the ground truth.
- **Track loss**: a visible frame that is not found, following a found frame. ``loss_rate`` = losses / visible
  frames that follow a found frame (the per-frame chance of losing a found object).
- **Frames to re-acquire**: per loss, the number of frames after the lost frame until the object is found again
  (0: found in the very next frame); a loss never re-acquired before the sequence ends is counted in
  ``not_reacquired``.
- **Re-appearances**: the object was found, then hidden (not visible: occluded or out of view) for one or more
  frames, then visible again; ``frames_to_reacquire_after_hidden`` counts, per re-appearance, the visible frames
  before it is found again (0: found in the first frame it is back); ``not_reacquired_after_hidden`` those
  never found again before the end.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["sequence_arrays", "second_differences", "jitter", "found_frames", "track_losses", "temporal_metrics",
           "sequence_report"]


def sequence_arrays(stamps: Sequence[int], predictions: Mapping[int, Any], ground_truth: Mapping[int, Any],
                    names: Sequence[str]) -> dict[str, np.ndarray]:
    """Aligned arrays of a run for the functions below.

    Args:
        stamps: the frames' stamps in order (the frames scored: those with ground truth).
        predictions: stamp -> object with ``names``, ``xy [K, 2]``, ``valid [K]`` (e.g.
            :class:`semcorr_ros.bageval.metrics.FramePrediction`); a missing stamp = no output.
        ground_truth: stamp -> object with ``names``, ``keypoints_2d [K, 2]``, ``visible [K]``, ``object_box``
            (e.g. :class:`semcorr_ros.groundtruth.FrameGroundTruth`).
        names: the keypoints to score, in order.

    Returns:
        ``pred_xy [T, N, 2]`` (NaN where no valid output), ``pred_ok [T, N]`` (valid output), ``gt_xy [T, N, 2]``,
        ``gt_visible [T, N]``, ``size [T]`` (object size, pixels; NaN without a box).
    """
    t, n = len(stamps), len(names)
    pred_xy, gt_xy = np.full((t, n, 2), np.nan), np.full((t, n, 2), np.nan)
    pred_ok, gt_vis, size = np.zeros((t, n), bool), np.zeros((t, n), bool), np.full(t, np.nan)
    for i, s in enumerate(stamps):
        gt = ground_truth.get(s)
        if gt is not None:
            gidx = {nm: j for j, nm in enumerate(gt.names)}
            box = np.asarray(gt.object_box, float).reshape(-1)
            if box.size == 4 and np.isfinite(box).all():
                size[i] = max(box[2] - box[0], box[3] - box[1])
            for k, nm in enumerate(names):
                g = gidx.get(nm)
                if g is not None:
                    gt_xy[i, k] = gt.keypoints_2d[g]
                    gt_vis[i, k] = bool(gt.visible[g]) and np.isfinite(gt.keypoints_2d[g]).all()
        pred = predictions.get(s)
        if pred is not None:
            pidx = {nm: j for j, nm in enumerate(pred.names)}
            for k, nm in enumerate(names):
                j = pidx.get(nm)
                if j is not None and bool(pred.valid[j]) and np.isfinite(pred.xy[j]).all():
                    pred_xy[i, k], pred_ok[i, k] = pred.xy[j], True
    return {"pred_xy": pred_xy, "pred_ok": pred_ok, "gt_xy": gt_xy, "gt_visible": gt_vis, "size": size}


def second_differences(xy: np.ndarray, ok: np.ndarray, size: np.ndarray) -> list[np.ndarray]:
    """Per keypoint, the norms of its second differences divided by the object's size (see the module doc).

    Args:
        xy: ``[T, N, 2]`` positions; ok: ``[T, N]`` usable; size: ``[T]`` object size (non-finite or <= 0: the
            frame's difference is skipped).

    Returns:
        ``N`` arrays of the normalised second-difference norms (possibly empty).
    """
    xy, ok, size = np.asarray(xy, float), np.asarray(ok, bool), np.asarray(size, float).reshape(-1)
    if xy.ndim != 3 or xy.shape[0] < 3:
        return [np.zeros(0) for _ in range(xy.shape[1] if xy.ndim == 3 else 0)]
    usable = ok & np.isfinite(xy).all(-1)
    mid = usable[:-2] & usable[1:-1] & usable[2:]
    good_size = np.isfinite(size[1:-1]) & (size[1:-1] > 0)
    mid &= good_size[:, None]
    d2 = xy[2:] - 2.0 * xy[1:-1] + xy[:-2]
    norm = np.linalg.norm(np.where(mid[..., None], d2, 0.0), axis=-1) / np.where(good_size, size[1:-1], 1.0)[:, None]
    return [norm[mid[:, k], k] for k in range(xy.shape[1])]


def jitter(xy: np.ndarray, ok: np.ndarray, size: np.ndarray) -> dict[str, Any]:
    """Jitter of every keypoint track (fraction of the object's size per frame squared).

    Returns:
        ``{"rms": pooled RMS or None, "per_keypoint": [RMS or None per keypoint], "samples": count}``.
    """
    per = second_differences(xy, ok, size)
    allv = np.concatenate(per) if per else np.zeros(0)
    return {"rms": _rms(allv), "per_keypoint": [_rms(v) for v in per], "samples": int(allv.size)}


def found_frames(pred_xy: np.ndarray, pred_ok: np.ndarray, gt_xy: np.ndarray, gt_visible: np.ndarray,
                 size: np.ndarray, alpha: float = 0.1, min_fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``(visible [T], found [T])``: whether the object is visible, and found (see the module doc), per frame."""
    pred_xy, gt_xy = np.asarray(pred_xy, float), np.asarray(gt_xy, float)
    pred_ok, gt_visible = np.asarray(pred_ok, bool), np.asarray(gt_visible, bool)
    size = np.asarray(size, float).reshape(-1)
    visible = gt_visible.any(1) & np.isfinite(size) & (size > 0)
    with np.errstate(invalid="ignore"):
        dist = np.linalg.norm(pred_xy - gt_xy, axis=-1) / np.where(size > 0, size, np.nan)[:, None]
    correct = pred_ok & gt_visible & np.isfinite(dist) & (dist <= alpha)
    n_vis = gt_visible.sum(1)
    frac = np.where(n_vis > 0, correct.sum(1) / np.maximum(n_vis, 1), 0.0)
    return visible, visible & (frac >= min_fraction)


def track_losses(visible: np.ndarray, found: np.ndarray) -> dict[str, Any]:
    """Losses and re-acquisitions of a found/visible sequence (see the module doc).

    Returns:
        ``{"losses", "at_risk" (visible frames after a found frame), "loss_rate" (None when no frame is at
        risk), "frames_to_reacquire" (list, one per re-acquired loss), "frames_to_reacquire_mean",
        "not_reacquired"}``.
    """
    visible, found = np.asarray(visible, bool).reshape(-1), np.asarray(found, bool).reshape(-1)
    losses, at_risk, gaps, open_losses = 0, 0, [], 0
    lost_at: int | None = None
    for t in range(1, len(found)):
        if lost_at is not None and found[t]:
            gaps.append(t - lost_at - 1)
            lost_at = None
        if found[t - 1] and visible[t]:
            at_risk += 1
            if not found[t]:
                losses += 1
                lost_at = t
    if lost_at is not None:
        open_losses = 1
    back, hidden_gaps, open_hidden = _reappearances(visible, found)
    return {"losses": losses, "at_risk": at_risk, "loss_rate": round(losses / at_risk, 4) if at_risk else None,
            "frames_to_reacquire": gaps, "frames_to_reacquire_mean": round(float(np.mean(gaps)), 3) if gaps else None,
            "not_reacquired": open_losses, "reappearances": back,
            "frames_to_reacquire_after_hidden": hidden_gaps,
            "frames_to_reacquire_after_hidden_mean": round(float(np.mean(hidden_gaps)), 3) if hidden_gaps else None,
            "not_reacquired_after_hidden": open_hidden}


def _reappearances(visible: np.ndarray, found: np.ndarray) -> tuple[int, list[int], int]:
    """``(re-appearances, visible frames until found again per re-appearance, 1 if the last one never was)``."""
    back, gaps, count, state = 0, [], 0, "none"  # state: none | found | missed | hidden | waiting
    for t in range(len(found)):
        if not visible[t]:
            if state == "found":  # hidden right after being found
                state = "hidden"
            continue
        if state == "hidden":
            back, state, count = back + 1, "waiting", 0
        if state == "waiting":
            if found[t]:
                gaps.append(count)
                state = "found"
            else:
                count += 1
        else:
            state = "found" if found[t] else "missed"
    return back, gaps, int(state == "waiting")


def temporal_metrics(arrays: Mapping[str, np.ndarray], alpha: float = 0.1, min_fraction: float = 0.5) -> dict[str, Any]:
    """Every temporal figure of one sequence from :func:`sequence_arrays`' output (JSON-ready).

    Returns:
        ``jitter`` (the prediction's, over frames where the keypoint is visible and valid), ``jitter_gt`` (the
        ground truth's own), ``jitter_ratio`` (prediction / ground truth, None when the latter is 0 or missing),
        ``found_rate`` (found / visible frames) and :func:`track_losses`' fields under ``losses``.
    """
    px, pok, gx, gvis, size = (arrays[k] for k in ("pred_xy", "pred_ok", "gt_xy", "gt_visible", "size"))
    pj = jitter(px, np.asarray(pok, bool) & np.asarray(gvis, bool), size)
    gj = jitter(gx, gvis, size)
    visible, found = found_frames(px, pok, gx, gvis, size, alpha, min_fraction)
    ratio = None
    if pj["rms"] is not None and gj["rms"]:
        ratio = round(pj["rms"] / gj["rms"], 3)
    return {"jitter": pj, "jitter_gt": gj, "jitter_ratio": ratio,
            "found_rate": round(float(found.sum() / visible.sum()), 4) if visible.any() else None,
            "losses": track_losses(visible, found)}


def _rms(v: np.ndarray) -> float | None:
    v = np.asarray(v, float)
    return round(float(np.sqrt(np.mean(v ** 2))), 6) if v.size else None


def sequence_report(color_stamps: Sequence[int], predictions: Mapping[int, Any], ground_truth: Mapping[int, Any],
                    reference_names: Sequence[str], alpha: float = 0.1) -> tuple[dict[str, Any], dict[str, Any]]:
    """The temporal block of a bag-eval report for one object: ``(figures, plot data)``.

    The frames are the colour frames with ground truth, in bag order (a repeated stamp once); the keypoints the
    reference's names that the ground truth has. ``figures`` = :func:`temporal_metrics` plus ``frames`` and, when
    the predictions carry a ``track_status`` (tracking mode), ``track_states`` (status -> frames). ``plot data``:
    the arrays and the per-frame ``visible`` / ``found`` flags and ``track_status`` for
    :func:`semcorr_ros.bageval.plots.plot_temporal`.
    """
    stamps = list(dict.fromkeys(s for s in color_stamps if s in ground_truth))
    gt_names = set().union(*(set(g.names) for g in ground_truth.values())) if ground_truth else set()
    names = [n for n in reference_names if n in gt_names]
    arrays = sequence_arrays(stamps, predictions, ground_truth, names)
    figures = temporal_metrics(arrays, alpha=alpha)
    figures["frames"] = len(stamps)
    status = [getattr(predictions.get(s), "track_status", None) for s in stamps]
    if any(status):
        counts: dict[str, int] = {}
        for st in status:
            key = st or "no output"
            counts[key] = counts.get(key, 0) + 1
        figures["track_states"] = counts
    visible, found = found_frames(arrays["pred_xy"], arrays["pred_ok"], arrays["gt_xy"], arrays["gt_visible"],
                                  arrays["size"], alpha)
    return figures, {**arrays, "visible": visible, "found": found, "track_status": status, "names": names,
                     "alpha": alpha}
