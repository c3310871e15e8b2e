"""Percentage of Correct Keypoints (PCK), vectorised.

A predicted target keypoint is correct at ``alpha`` when its distance to the ground truth is
``<= alpha * L``, where ``L`` is ``max(width, height)`` of the target bounding box (``bbox`` mode, standard for
PF-WILLOW / SPair) or of the target image (``img`` mode). Non-finite predictions are wrong; keypoints whose ground
truth is non-finite are not scored. A distance within a relative ``1e-9`` of the threshold counts as on it, so the
rounding of ``alpha * L`` never flips the boundary case (distance == threshold is correct).

:class:`PCKAccumulator` stores each keypoint's *normalised error* ``distance / L`` (``inf`` for a non-finite
prediction), so PCK at any ``alpha`` (a dense curve too) is computed after the fact.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np

from semcorr_ros.errors import ConfigError, InputError

DEFAULT_ALPHAS: tuple[float, ...] = (0.05, 0.1, 0.15)
THRESHOLD_MODES: tuple[str, ...] = ("bbox", "img")
#: relative tolerance of the ``distance <= threshold`` test
REL_TOL = 1e-9


def alpha_key(alpha: float) -> str:
    """The string key of ``alpha`` in JSON results: ``0.05 -> "0.05"``, ``0.1 -> "0.1"``."""
    return f"{float(alpha):g}"


def check_alphas(alphas: Iterable[float]) -> tuple[float, ...]:
    """Validate PCK alphas (finite, > 0, at least one), keeping their order.

    Raises:
        ConfigError: empty, non-numeric, non-finite or non-positive alphas.
    """
    try:
        out = tuple(float(a) for a in alphas)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"alphas must be numbers, got {alphas!r}") from exc
    if not out or not all(np.isfinite(a) and a > 0 for a in out):
        raise ConfigError(f"alphas must be one or more finite numbers > 0, got {alphas!r}")
    return out


def check_mode(mode: str) -> str:
    """Validate a threshold mode. Raises :class:`ConfigError` listing ``bbox``, ``img``."""
    if mode not in THRESHOLD_MODES:
        raise ConfigError(f"unknown PCK threshold mode {mode!r}; valid modes: {', '.join(THRESHOLD_MODES)}")
    return mode


def normalisers(ref: np.ndarray | Sequence[float], mode: str = "bbox") -> np.ndarray:
    """PCK length unit ``L`` in pixels.

    Args:
        ref: ``bbox`` mode: target boxes ``[N, 4]`` (or one ``[4]``) ``(x0, y0, x1, y1)``;
            ``img`` mode: target image sizes ``[N, 2]`` (or one ``[2]``) ``(height, width)``.
        mode: ``bbox`` or ``img``.

    Returns:
        ``[N]`` (or a 0-d array for one box/size): ``max(x1 - x0, y1 - y0)`` or ``max(height, width)``.

    Raises:
        ConfigError: unknown mode. InputError: wrong shape, non-finite values, or a unit that is not > 0.
    """
    check_mode(mode)
    width = 4 if mode == "bbox" else 2
    arr = np.asarray(ref, dtype=np.float64)
    if arr.shape[-1:] != (width,) or arr.ndim > 2:
        what = "boxes [N, 4] (x0, y0, x1, y1)" if mode == "bbox" else "image sizes [N, 2] (height, width)"
        raise InputError(f"PCK {mode} mode needs {what}, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"PCK {mode} reference has non-finite values: {arr.tolist()}")
    if mode == "bbox":
        unit = np.maximum(arr[..., 2] - arr[..., 0], arr[..., 3] - arr[..., 1])
    else:
        unit = arr.max(axis=-1)
    if not (unit > 0).all():
        raise InputError(f"PCK {mode} reference has an empty extent (max side <= 0): {arr.tolist()}")
    return unit


def pck_thresholds(ref: np.ndarray | Sequence[float], alpha: float, mode: str = "bbox") -> np.ndarray:
    """Distance thresholds in pixels: ``alpha * L`` with ``L`` from :func:`normalisers` (same arguments)."""
    return float(alpha) * normalisers(ref, mode)


def _check_points(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if gt.ndim != 2 or gt.shape[1] != 2:
        raise InputError(f"ground-truth keypoints must be [K, 2] (x, y), got shape {gt.shape}")
    if pred.shape != gt.shape:
        raise InputError(f"predicted keypoints have shape {pred.shape}, ground truth {gt.shape}")
    return pred, gt


def distances(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Euclidean distances ``[K]`` between ``pred [K, 2]`` and ``gt [K, 2]``; ``inf`` where ``pred`` is
    non-finite, ``nan`` where ``gt`` is non-finite. Raises :class:`InputError` on shape mismatch."""
    pred, gt = _check_points(pred, gt)
    with np.errstate(invalid="ignore"):
        d = np.hypot(pred[:, 0] - gt[:, 0], pred[:, 1] - gt[:, 1])
    d[~np.isfinite(pred).all(axis=1)] = np.inf
    d[~np.isfinite(gt).all(axis=1)] = np.nan
    return d


def correct(pred: np.ndarray, gt: np.ndarray, thr: float | np.ndarray) -> np.ndarray:
    """``bool [K]``: ``||pred_k - gt_k|| <= thr`` (``thr`` in pixels, scalar or ``[K]``).

    Non-finite predictions (and non-finite ground truth) are not correct.
    """
    return within(distances(pred, gt), thr)


def box_unit(box: np.ndarray | Sequence[float]) -> float:
    """PCK unit ``L`` of one box ``(x0, y0, x1, y1)``: its max side in pixels; ``nan`` when the box has non-finite
    values or no extent (its keypoints are not scored). The lenient form of :func:`normalisers` ``bbox`` mode."""
    b = np.asarray(box, dtype=np.float64).reshape(-1)
    if b.shape != (4,) or not np.isfinite(b).all():
        return float("nan")
    unit = float(max(b[2] - b[0], b[3] - b[1]))
    return unit if unit > 0 else float("nan")


def normalised_errors(pred: np.ndarray, gt: np.ndarray, unit: float | np.ndarray,
                      valid: np.ndarray | None = None) -> np.ndarray:
    """``[K]`` normalised errors ``||pred_k - gt_k|| / unit``: ``inf`` where the prediction is non-finite or not
    ``valid`` (a wrong keypoint), ``nan`` where the ground truth is non-finite (not scored).

    Args:
        pred, gt: ``[K, 2]`` pixels ``(x, y)``.
        unit: ``L`` in pixels (scalar or ``[K]``), see :func:`normalisers` / :func:`box_unit`.
        valid: ``bool [K]``; ``None``: every finite prediction counts.
    """
    err = distances(pred, gt) / np.asarray(unit, dtype=np.float64)
    if valid is not None:
        err[~np.asarray(valid, dtype=bool).reshape(-1) & ~np.isnan(err)] = np.inf
    return err


def within(errors: np.ndarray | float, alpha: float | np.ndarray) -> np.ndarray:
    """``bool``: normalised ``errors <= alpha`` (the PCK hit test, inclusive within :data:`REL_TOL`; ``inf`` and
    ``nan`` never pass). ``alpha`` broadcasts against ``errors`` (e.g. ``errors[:, None]`` and ``alphas[None]``);
    ``alpha = 0`` is allowed (an exact hit)."""
    with np.errstate(invalid="ignore"):
        return np.asarray(errors, dtype=np.float64) <= np.asarray(alpha, dtype=np.float64) * (1.0 + REL_TOL)


def pck_of_errors(errors: np.ndarray | Sequence[float], alpha: float) -> float:
    """PCK at ``alpha`` of normalised errors ``[N]`` (``nan`` entries are not scored): the fraction that pass
    :func:`within`; ``nan`` when nothing is scored."""
    e = np.asarray(errors, dtype=np.float64).reshape(-1)
    e = e[~np.isnan(e)]
    return float(within(e, alpha).mean()) if e.size else float("nan")


@dataclass(frozen=True)
class PairRecord:
    """What the accumulator keeps of one pair: ``errors [K_scored]`` = distance / L (``inf`` = no prediction)."""

    pair_id: str
    category: str
    errors: np.ndarray


class PCKAccumulator:
    """Collects per-pair normalised keypoint errors and summarises PCK.

    Two averages are reported: *per keypoint* (every scored keypoint of every pair pooled: the headline figure)
    and *per image* (the mean over pairs of each pair's fraction correct; pairs without a scored keypoint are
    left out of it). Results are ``{alpha: value}`` dicts with float keys; ``nan`` when nothing was scored.

    Args:
        alphas: the alphas reported by default (any others can be asked for later).
    """

    def __init__(self, alphas: Iterable[float] = DEFAULT_ALPHAS) -> None:
        self.alphas = check_alphas(alphas)
        self._records: list[PairRecord] = []
        self._cache: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    # -- collecting -------------------------------------------------------------------------------------------
    def add(self, pred: np.ndarray, gt: np.ndarray, unit: float, category: str = "all",
            pair_id: str | None = None) -> np.ndarray:
        """Score one pair.

        Args:
            pred: ``[K, 2]`` predicted target keypoints (pixels; non-finite = no prediction = wrong).
            gt: ``[K, 2]`` ground-truth target keypoints (non-finite rows are not scored).
            unit: ``L`` in pixels (see :func:`normalisers`), > 0.
            category: the pair's category.
            pair_id: the pair's id (default: its running number).

        Returns:
            ``[K]`` normalised errors (``nan`` for unscored keypoints).

        Raises:
            InputError: shape mismatch or a unit that is not a finite number > 0.
        """
        unit = float(unit)
        if not (np.isfinite(unit) and unit > 0):
            raise InputError(f"PCK unit must be a finite number > 0, got {unit}")
        err = normalised_errors(pred, gt, unit)
        scored = err[~np.isnan(err)]
        pid = str(pair_id) if pair_id is not None else str(len(self._records))
        self._records.append(PairRecord(pid, str(category), scored))
        self._cache = None
        return err

    def add_errors(self, errors: np.ndarray, category: str = "all", pair_id: str | None = None) -> None:
        """Add one pair from already normalised errors ``[K]`` (``nan`` entries are dropped)."""
        err = np.asarray(errors, dtype=np.float64).reshape(-1)
        pid = str(pair_id) if pair_id is not None else str(len(self._records))
        self._records.append(PairRecord(pid, str(category), err[~np.isnan(err)]))
        self._cache = None

    # -- raw data ---------------------------------------------------------------------------------------------
    @property
    def records(self) -> list[PairRecord]:
        """One :class:`PairRecord` per added pair, in order."""
        return list(self._records)

    @property
    def num_pairs(self) -> int:
        return len(self._records)

    @property
    def num_keypoints(self) -> int:
        """Scored keypoints over all pairs."""
        return int(sum(r.errors.size for r in self._records))

    @property
    def categories(self) -> list[str]:
        """Categories with at least one pair, sorted."""
        return sorted({r.category for r in self._records})

    def _arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``errors [N_kp]``, ``pair_index [N_kp]``, ``pair_category [N_pairs]`` (object array)."""
        if self._cache is None:
            errs = [r.errors for r in self._records]
            err = np.concatenate(errs) if errs else np.zeros(0)
            idx = np.repeat(np.arange(len(errs)), [e.size for e in errs]) if errs else np.zeros(0, np.int64)
            cats = np.array([r.category for r in self._records], dtype=object)
            self._cache = (err, idx, cats)
        return self._cache

    def errors(self, category: str | None = None) -> np.ndarray:
        """Normalised errors of every scored keypoint (of one category when given), pooled."""
        err, idx, cats = self._arrays()
        if category is None:
            return err.copy()
        return err[cats[idx] == category] if idx.size else err.copy()

    # -- summaries --------------------------------------------------------------------------------------------
    def curve(self, alphas: Iterable[float] | None = None, category: str | None = None,
              per_image: bool = False) -> np.ndarray:
        """PCK at each of ``alphas`` (default: :attr:`alphas`) as ``float [A]``.

        Args:
            alphas: any alphas > 0 (e.g. ``np.linspace(0.01, 0.2, 20)`` for a dense curve).
            category: restrict to one category (``None``: all pairs).
            per_image: mean of per-pair PCK instead of pooled keypoints.
        """
        a = np.asarray(check_alphas(self.alphas if alphas is None else alphas))
        err, idx, cats = self._arrays()
        if category is not None and idx.size:
            kp_mask = cats[idx] == category
            err, idx = err[kp_mask], idx[kp_mask]
        if err.size == 0:
            return np.full(a.shape, np.nan)
        hit = within(err[:, None], a[None, :])  # inf never passes
        if not per_image:
            return hit.mean(axis=0)
        n_pairs = len(self._records)
        per_pair_total = np.bincount(idx, minlength=n_pairs).astype(np.float64)
        per_pair_hits = np.stack([np.bincount(idx, weights=hit[:, j], minlength=n_pairs) for j in range(a.size)],
                                 axis=1)
        has = per_pair_total > 0
        return (per_pair_hits[has] / per_pair_total[has, None]).mean(axis=0)

    def pck(self, alphas: Iterable[float] | None = None, category: str | None = None) -> dict[float, float]:
        """Per-keypoint PCK ``{alpha: value}`` (the headline figure)."""
        a = check_alphas(self.alphas if alphas is None else alphas)
        return dict(zip(a, (float(v) for v in self.curve(a, category))))

    def pck_per_image(self, alphas: Iterable[float] | None = None,
                      category: str | None = None) -> dict[float, float]:
        """Per-image PCK ``{alpha: value}``: mean over pairs of each pair's fraction correct."""
        a = check_alphas(self.alphas if alphas is None else alphas)
        return dict(zip(a, (float(v) for v in self.curve(a, category, per_image=True))))

    def category_counts(self) -> dict[str, tuple[int, int]]:
        """``{category: (pairs, scored keypoints)}``."""
        out: dict[str, list[int]] = {}
        for r in self._records:
            c = out.setdefault(r.category, [0, 0])
            c[0] += 1
            c[1] += r.errors.size
        return {k: (v[0], v[1]) for k, v in sorted(out.items())}

    def per_category(self, alphas: Iterable[float] | None = None) -> dict[str, dict[str, object]]:
        """``{category: {"pck": {alpha: v}, "pck_per_image": {alpha: v}, "pairs": n, "keypoints": k}}``."""
        out: dict[str, dict[str, object]] = {}
        for cat, (n_pairs, n_kps) in self.category_counts().items():
            out[cat] = {"pck": self.pck(alphas, cat), "pck_per_image": self.pck_per_image(alphas, cat),
                        "pairs": n_pairs, "keypoints": n_kps}
        return out
