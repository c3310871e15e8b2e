"""Calibrated confidence: features and the logistic model, hand-computed; config validation."""

import math

import pytest
import torch

from semcorr_ros.config import DEFAULT_SCORE_CALIBRATION, EngineConfig
from semcorr_ros.engine.confidence import FEATURES, calibrated_score, score_features
from semcorr_ros.errors import ConfigError


def test_features_hand_computed():
    peak = torch.tensor([0.8, 0.5])
    cycle_error = torch.tensor([0.0, 0.1])          # sigma 0.05 -> (0.1 / 0.05)^2 = 4
    uv = torch.tensor([[0.5, 0.5], [0.2, 0.2]])
    prior = torch.tensor([[0.5, 0.6], [0.9, 0.9]])  # distances 0.1 and ~0.99 -> (d / 0.1)^2 = 1 and capped 25
    f = score_features(peak, cycle_error, uv, prior, cycle_sigma=0.05, prior_sigma=0.1)
    assert f.shape == (2, len(FEATURES))
    assert torch.allclose(f[0], torch.tensor([1.0, 0.8, 0.0, 1.0, 0.0]), atol=1e-5)
    assert torch.allclose(f[1], torch.tensor([1.0, 0.5, 4.0, 25.0, 0.0]), atol=1e-5)
    g = score_features(peak, cycle_error, uv, None, cycle_sigma=0.05, prior_sigma=0.1)
    assert torch.equal(g[:, 3], torch.zeros(2)) and torch.equal(g[:, 4], torch.ones(2))


def test_calibrated_score_is_the_logistic_model():
    f = torch.tensor([[1.0, 0.8, 0.0, 1.0, 0.0]])
    c = (-1.0, 2.0, -0.5, -0.25, -1.0)
    expect = 1.0 / (1.0 + math.exp(-(-1.0 + 1.6 - 0.25)))
    assert abs(calibrated_score(f, c).item() - expect) < 1e-6
    # Monotone in the peak, decreasing with disagreement from the prior (with the shipped coefficients).
    base = torch.tensor([[1.0, 0.5, 0.0, 0.0, 0.0]])
    higher, far = base.clone(), base.clone()
    higher[0, 1] = 0.7
    far[0, 3] = 9.0
    s0, s1, s2 = (calibrated_score(x, DEFAULT_SCORE_CALIBRATION).item() for x in (base, higher, far))
    assert s1 > s0 > s2 and 0.0 < s2 < s0 < s1 < 1.0


def test_config_validation():
    assert EngineConfig(score_calibration=None).score_calibration is None
    assert EngineConfig(score_calibration=[1, 2, 3, 4, 5]).score_calibration == (1.0, 2.0, 3.0, 4.0, 5.0)
    with pytest.raises(ConfigError, match="score_calibration needs 5 entries"):
        EngineConfig(score_calibration=(1.0, 2.0))
    with pytest.raises(ConfigError, match="score_calibration entries must be finite"):
        EngineConfig(score_calibration=(1.0, 2.0, 3.0, 4.0, float("nan")))


def test_fit_logistic_recovers_the_generating_coefficients():
    import numpy as np

    from semcorr_ros.engine.confidence import fit_logistic

    rng = np.random.default_rng(0)
    x = np.column_stack([np.ones(20000), rng.normal(size=20000)])
    y = rng.random(20000) < 1.0 / (1.0 + np.exp(-(x @ [-0.5, 2.0])))
    w = fit_logistic(x, y)
    assert np.allclose(w, [-0.5, 2.0], atol=0.08)


def test_platt_rescale_fixes_the_level_and_keeps_the_ranking():
    import numpy as np

    from semcorr_ros.engine.confidence import platt_rescale

    rng = np.random.default_rng(1)
    c = np.asarray(DEFAULT_SCORE_CALIBRATION)
    f = np.column_stack([np.ones(5000), rng.uniform(0.3, 1.0, 5000), rng.uniform(0, 25, 5000),
                         rng.uniform(0, 25, 5000), np.zeros(5000)])
    z = f @ c
    # a matcher whose matches are correct less often than the calibration says: true logit 0.5 z - 1
    correct = rng.random(5000) < 1.0 / (1.0 + np.exp(-(0.5 * z - 1.0)))
    new = np.asarray(platt_rescale(f, correct, c))
    assert new.shape == (5,)
    assert np.allclose(new[1:], 0.5 * c[1:], rtol=0.15) and abs(new[0] - (0.5 * c[0] - 1.0)) < 0.2
    p_old, p_new = (1.0 / (1.0 + np.exp(-(f @ k))) for k in (c, new))
    assert abs(p_new.mean() - correct.mean()) < 0.02 < abs(p_old.mean() - correct.mean())
    assert np.array_equal(np.argsort(p_old), np.argsort(p_new))  # same ranking
    with pytest.raises(ValueError, match="10 correct and 10 wrong"):
        platt_rescale(f[:50], np.ones(50, bool), c)
    with pytest.raises(ValueError, match="feature rows"):
        platt_rescale(f[:50], np.ones(40, bool), c)
