"""Confidence assessment: top-fraction PCK and reliability bins, hand-computed; the runner accepts scores."""

import numpy as np
import pytest

from semcorr_ros.data.base import PairSample
from semcorr_ros.eval.benchmark import evaluate
from semcorr_ros.eval.calibration import confidence_summary
from semcorr_ros.eval.pck_plots import plot_reliability


def test_summary_hand_computed():
    # 4 keypoints: the two most confident are correct, the others wrong (alpha 0.1); one unscored.
    errors = np.array([0.05, 0.5, 0.08, 0.3, np.nan])
    scores = np.array([0.95, 0.15, 0.85, 0.25, 0.99])
    c = confidence_summary(errors, scores, alpha=0.1, fractions=(0.5, 1.0), bins=2)
    assert c["keypoints"] == 4
    assert c["pck_top"] == {"50%": 1.0, "100%": 0.5}
    low, high = c["reliability"]
    assert (low["count"], low["accuracy"]) == (2, 0.0) and abs(low["mean_score"] - 0.2) < 1e-12
    assert (high["count"], high["accuracy"]) == (2, 1.0) and abs(high["mean_score"] - 0.9) < 1e-12
    assert abs(c["ece"] - 0.15) < 1e-12          # (2 * 0.2 + 2 * 0.1) / 4


def test_boundaries_and_plot(tmp_path):
    c = confidence_summary(np.array([0.1, 0.2]), np.array([1.0, 0.0]), alpha=0.1, bins=4)
    assert c["reliability"][-1]["count"] == 1 and c["reliability"][0]["count"] == 1  # 1.0 in the last bin
    assert c["reliability"][-1]["accuracy"] == 1.0                                      # e == alpha is correct
    p = plot_reliability(c, tmp_path / "rel.png", title="t")
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _pairs(n=4):
    img = np.zeros((20, 20, 3), np.uint8)
    kps = np.array([[2.0, 2.0], [10.0, 10.0], [17.0, 3.0]])
    return [PairSample(pair_id=f"p{i}", category="c", src_name="a", tgt_name="b", src_image=img, tgt_image=img,
                       src_kps=kps, tgt_kps=kps, tgt_bbox=np.array([0.0, 0.0, 20.0, 20.0])) for i in range(n)]


def test_runner_collects_scores_and_rejects_bad_ones():
    pairs = _pairs()

    def predict(s):  # first keypoint exact and confident, the others far off and unsure
        return s.tgt_kps + [[0, 0], [15, 0], [-15, 0]], np.array([0.9, 0.1, 0.2])

    report = evaluate(pairs, predict, progress=False)
    c = report.to_json_dict()["confidence"]
    assert c["keypoints"] == 12 and c["pck_top"]["25%"] == 1.0 and c["pck_top"]["100%"] == pytest.approx(1 / 3)
    bad = evaluate(pairs, lambda s: (s.tgt_kps, np.ones(2)), progress=False)
    assert bad.pairs == 0 and len(bad.skipped) == 4 and "scores" in bad.skipped[0].reason
    plain = evaluate(pairs, lambda s: s.tgt_kps, progress=False)
    assert plain.confidence is None and "confidence" not in plain.to_json_dict()
