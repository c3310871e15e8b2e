"""Run a keypoint predictor over a pair dataset and score it with PCK.

``evaluate`` never dies on one bad pair: a sample that cannot be read (:class:`DatasetError`) or a predictor
that raises a :class:`SemcorrError` is logged, listed in :attr:`EvalReport.skipped` and left out of the scores.
Any other exception from the predictor is a bug and propagates.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
from tqdm import tqdm

from semcorr_ros.data.base import PairSample, keypoint_bbox
from semcorr_ros.errors import ConfigError, InputError, SemcorrError
from semcorr_ros.eval.pck import (
    DEFAULT_ALPHAS,
    REL_TOL,
    PCKAccumulator,
    alpha_key,
    check_alphas,
    check_mode,
    normalisers,
)

log = logging.getLogger(__name__)

ON_ERROR_CHOICES = ("skip", "raise")

Predictor = Callable[[PairSample], np.ndarray]


@dataclass(frozen=True)
class SkippedPair:
    """A pair left out of the scores, and why (``stage``: ``load``, ``predict`` or ``score``)."""

    pair_id: str
    reason: str
    stage: str

    def to_json_dict(self) -> dict[str, str]:
        return {"pair_id": self.pair_id, "stage": self.stage, "reason": self.reason}


def _json_number(value: float) -> float | None:
    """``nan``/``inf`` are not JSON: they become ``None``."""
    return float(value) if math.isfinite(value) else None


def _keyed(values: dict[float, float]) -> dict[str, float | None]:
    return {alpha_key(a): _json_number(v) for a, v in values.items()}


@dataclass
class EvalReport:
    """Result of :func:`evaluate`.

    Attributes:
        accumulator: every scored pair's normalised keypoint errors (PCK at any alpha, dense curves).
        alphas: the reported alphas.
        threshold: ``bbox`` or ``img``.
        skipped: pairs left out, with the reason.
        timing: ``total_s`` (wall time of the run), ``load_s`` and ``predict_s`` (summed over pairs),
            ``s_per_pair`` (total / pairs attempted), ``predict_s_per_pair`` (predict time / pairs predicted).
        dataset: a label for the dataset (its ``name`` attribute, when it has one).
        confidence: when the predictor returned scores, :func:`~semcorr_ros.eval.calibration.confidence_summary`
            at the middle alpha (PCK of the most confident keypoints, reliability bins).
    """

    accumulator: PCKAccumulator
    alphas: tuple[float, ...]
    threshold: str
    skipped: list[SkippedPair] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)
    dataset: str = ""
    confidence: dict[str, Any] | None = None

    @property
    def pairs(self) -> int:
        """Pairs scored (skipped pairs excluded)."""
        return self.accumulator.num_pairs

    @property
    def pck(self) -> dict[float, float]:
        """Per-keypoint PCK ``{alpha: value}`` (the headline figure)."""
        return self.accumulator.pck(self.alphas)

    @property
    def pck_per_image(self) -> dict[float, float]:
        """Per-image PCK ``{alpha: value}``."""
        return self.accumulator.pck_per_image(self.alphas)

    def to_json_dict(self) -> dict[str, Any]:
        """JSON-ready results; alphas are string keys (``"0.05"``, ``"0.1"``, ...) and ``nan`` is ``null``.

        Keys: ``dataset``, ``threshold``, ``alphas``, ``pck``, ``pck_per_image``, ``per_category``
        (``{cat: {"pck", "pck_per_image", "pairs", "keypoints"}}``), ``pairs``, ``keypoints``, ``skipped``
        (``[{"pair_id", "stage", "reason"}]``), ``timing``.
        """
        per_cat = {
            cat: {"pck": _keyed(v["pck"]), "pck_per_image": _keyed(v["pck_per_image"]),  # type: ignore[arg-type]
                  "pairs": v["pairs"], "keypoints": v["keypoints"]}
            for cat, v in self.accumulator.per_category(self.alphas).items()
        }
        return {
            "dataset": self.dataset,
            "threshold": self.threshold,
            "alphas": [float(a) for a in self.alphas],
            "pck": _keyed(self.pck),
            "pck_per_image": _keyed(self.pck_per_image),
            "per_category": per_cat,
            "pairs": self.pairs,
            "keypoints": self.accumulator.num_keypoints,
            "skipped": [s.to_json_dict() for s in self.skipped],
            "timing": {k: _json_number(v) for k, v in self.timing.items()},
            **({"confidence": self.confidence} if self.confidence is not None else {}),
        }

    def format_table(self) -> str:
        """Readable per-category table (per-keypoint PCK) with an ``all`` row, skips and timing."""
        counts = self.accumulator.category_counts()
        rows: list[tuple[str, int, int, dict[float, float]]] = [
            (cat, n, k, self.accumulator.pck(self.alphas, cat)) for cat, (n, k) in counts.items()]
        rows.append(("all", self.pairs, self.accumulator.num_keypoints, self.pck))
        name_w = max([len("category")] + [len(r[0]) for r in rows])
        heads = [f"PCK@{alpha_key(a)}" for a in self.alphas]
        col_w = [max(8, len(h)) for h in heads]
        header = f"{'category':<{name_w}}  {'pairs':>6}  {'kps':>7}  " + "  ".join(
            f"{h:>{w}}" for h, w in zip(heads, col_w))
        lines = [f"PCK per keypoint, threshold={self.threshold}" + (f", dataset={self.dataset}" if self.dataset
                                                                   else ""), header, "-" * len(header)]
        for i, (cat, n, k, pck) in enumerate(rows):
            if i == len(rows) - 1:
                lines.append("-" * len(header))
            vals = "  ".join(f"{pck[a]:>{w}.4f}" for a, w in zip(self.alphas, col_w))
            lines.append(f"{cat:<{name_w}}  {n:>6}  {k:>7}  {vals}")
        per_img = "  ".join(f"@{alpha_key(a)}={v:.4f}" for a, v in self.pck_per_image.items())
        lines.append(f"PCK per image: {per_img}")
        lines.append(f"skipped: {len(self.skipped)} pair(s)")
        if self.timing:
            lines.append(f"time: {self.timing.get('total_s', float('nan')):.2f} s total, "
                         f"{self.timing.get('s_per_pair', float('nan')):.4f} s/pair "
                         f"(predict {self.timing.get('predict_s_per_pair', float('nan')):.4f} s/pair)")
        return "\n".join(lines)


def _pair_label(dataset: Sequence[PairSample], index: int) -> str:
    info = getattr(dataset, "pair_info", None)
    if callable(info):
        try:
            return str(info(index).pair_id)
        except Exception:  # a label is only for the report; never let it stop the run
            pass
    return f"#{index}"


def _unit(sample: PairSample, mode: str) -> float:
    """PCK length unit of one pair (target box, or target image)."""
    if mode == "img":
        return float(normalisers(sample.tgt_hw, "img"))
    box = sample.tgt_bbox
    if box is None:
        box = keypoint_bbox(sample.tgt_kps)
    return float(normalisers(box, "bbox"))


def _check_prediction(pred: Any, sample: PairSample) -> np.ndarray:
    try:
        arr = np.asarray(pred, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"predict returned {type(pred).__name__}, not a [K, 2] array: {exc}") from exc
    if arr.shape != sample.tgt_kps.shape:
        raise InputError(f"predict returned shape {arr.shape}; expected {sample.tgt_kps.shape} ([K, 2] x, y)")
    return arr


def _use_progress_bar(progress: bool) -> bool:
    stream = sys.stderr
    return bool(progress) and hasattr(stream, "isatty") and stream.isatty()


def evaluate(dataset: Sequence[PairSample], predict: Predictor, alphas: Iterable[float] = DEFAULT_ALPHAS,
             threshold: str = "bbox", progress: bool = True, on_error: str = "skip") -> EvalReport:
    """Predict every pair's target keypoints and score them with PCK.

    Args:
        dataset: any sequence of :class:`PairSample` (e.g. :func:`semcorr_ros.data.build_dataset`); reading item
            ``i`` may raise :class:`DatasetError`.
        predict: ``sample -> [K, 2]`` predicted target keypoints ``(x, y)``, 0-based pixels of the target image
            (non-finite rows = no prediction, scored wrong), or ``([K, 2], scores [K])`` to also assess the
            predictor's confidence (:attr:`EvalReport.confidence`).
        alphas: PCK alphas to report.
        threshold: ``bbox`` (``alpha * max side`` of the target box; the target keypoints' box when a sample has
            none) or ``img`` (``alpha * max side`` of the target image).
        progress: show a tqdm bar (only when stderr is a terminal).
        on_error: ``skip`` (log, record in ``report.skipped``, go on) or ``raise``; applies to
            :class:`DatasetError` while reading and :class:`SemcorrError` from ``predict``/scoring.

    Raises:
        ConfigError: bad ``alphas``, ``threshold`` or ``on_error``.
    """
    alphas_t = check_alphas(alphas)
    mode = check_mode(threshold)
    if on_error not in ON_ERROR_CHOICES:
        raise ConfigError(f"unknown on_error {on_error!r}; valid choices: {', '.join(ON_ERROR_CHOICES)}")
    acc = PCKAccumulator(alphas_t)
    conf_err: list[np.ndarray] = []
    conf_score: list[np.ndarray] = []
    skipped: list[SkippedPair] = []
    load_s = predict_s = 0.0
    n_predicted = 0
    warned_no_box = False
    shown_alpha = alphas_t[len(alphas_t) // 2]  # running PCK on the progress bar
    shown_hits = shown_total = 0
    label = str(getattr(dataset, "name", "") or "")
    t_start = time.perf_counter()
    n = len(dataset)
    bar = tqdm(total=n, desc=f"eval {label}".strip(), unit="pair", disable=not _use_progress_bar(progress),
               dynamic_ncols=True)
    try:
        for i in range(n):
            stage = "load"
            try:
                t0 = time.perf_counter()
                sample = dataset[i]
                t1 = time.perf_counter()
                load_s += t1 - t0
                stage = "predict"
                pred = predict(sample)
                predict_s += time.perf_counter() - t1
                n_predicted += 1
                stage = "score"
                score = None
                if isinstance(pred, tuple):
                    pred, score = pred
                pred = _check_prediction(pred, sample)
                if mode == "bbox" and sample.tgt_bbox is None and not warned_no_box:
                    log.warning("pair %s has no target box; using its target keypoints' box for the PCK "
                                "threshold (and for every such pair)", sample.pair_id)
                    warned_no_box = True
                if score is not None:
                    score = np.asarray(score, dtype=np.float64).reshape(-1)
                    if score.shape != (len(pred),):
                        raise InputError(f"predict returned {score.size} scores for {len(pred)} keypoints")
                err = acc.add(pred, sample.tgt_kps, _unit(sample, mode), sample.category, sample.pair_id)
                if score is not None:
                    conf_err.append(err)
                    conf_score.append(score)
                scored = err[~np.isnan(err)]
                shown_hits += int(np.count_nonzero(scored <= shown_alpha * (1.0 + REL_TOL)))
                shown_total += scored.size
            except SemcorrError as exc:
                if on_error == "raise":
                    raise
                pair_id = _pair_label(dataset, i)
                reason = f"{type(exc).__name__}: {exc}"
                log.warning("skipping pair %s (%s): %s", pair_id, stage, reason)
                skipped.append(SkippedPair(pair_id, reason, stage))
            bar.update(1)
            if not bar.disable and bar.n % 10 == 0 and shown_total:
                bar.set_postfix({f"PCK@{alpha_key(shown_alpha)}": f"{shown_hits / shown_total:.3f}",
                                 "skipped": len(skipped)})
    finally:
        bar.close()
    total_s = time.perf_counter() - t_start
    timing = {"total_s": total_s, "load_s": load_s, "predict_s": predict_s,
              "s_per_pair": total_s / n if n else float("nan"),
              "predict_s_per_pair": predict_s / n_predicted if n_predicted else float("nan")}
    if skipped:
        log.warning("evaluation skipped %d of %d pairs", len(skipped), n)
    confidence = None
    if conf_err:
        from semcorr_ros.eval.calibration import confidence_summary

        confidence = confidence_summary(np.concatenate(conf_err), np.concatenate(conf_score), alpha=shown_alpha)
    return EvalReport(accumulator=acc, alphas=alphas_t, threshold=mode, skipped=skipped, timing=timing,
                      dataset=label, confidence=confidence)
