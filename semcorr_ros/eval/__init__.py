"""Evaluation: PCK metric, the benchmark runner and result plots.

:func:`evaluate` runs a predictor over a :mod:`semcorr_ros.data` dataset and returns an :class:`EvalReport`;
:mod:`semcorr_ros.eval.pck_plots` (matplotlib, imported on use) draws PCK curves and matches.
"""

from semcorr_ros.eval.benchmark import EvalReport, SkippedPair, evaluate
from semcorr_ros.eval.pck import (
                                  DEFAULT_ALPHAS,
                                  THRESHOLD_MODES,
                                  PairRecord,
                                  PCKAccumulator,
                                  alpha_key,
                                  correct,
                                  distances,
                                  normalisers,
                                  pck_thresholds,
)

__all__ = ["DEFAULT_ALPHAS", "THRESHOLD_MODES", "EvalReport", "PCKAccumulator", "PairRecord", "SkippedPair",
           "alpha_key", "correct", "distances", "evaluate", "normalisers", "pck_thresholds"]
