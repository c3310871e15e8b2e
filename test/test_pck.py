"""PCK metric: hand-computed answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semcorr_ros.errors import ConfigError, InputError
from semcorr_ros.eval.pck import (
    PCKAccumulator,
    alpha_key,
    box_unit,
    correct,
    distances,
    normalised_errors,
    normalisers,
    pck_of_errors,
    pck_thresholds,
    within,
)


def test_thresholds_bbox_and_img() -> None:
    assert float(normalisers([10, 20, 40, 60], "bbox")) == 40.0  # w 30, h 40
    np.testing.assert_allclose(pck_thresholds([[0, 0, 30, 10], [5, 5, 15, 55]], 0.1), [3.0, 5.0])
    np.testing.assert_allclose(pck_thresholds([[200, 300], [480, 640]], 0.05, mode="img"), [15.0, 32.0])
    assert pck_thresholds([0, 0, 100, 50], 0.15).shape == ()


def test_threshold_errors() -> None:
    with pytest.raises(ConfigError, match="bbox, img"):
        normalisers([0, 0, 1, 1], "box")
    with pytest.raises(InputError, match=r"\[N, 4\]"):
        normalisers([0, 0, 1], "bbox")
    with pytest.raises(InputError, match="empty extent"):
        normalisers([5, 5, 5, 5], "bbox")
    with pytest.raises(InputError, match="non-finite"):
        normalisers([0, 0, np.nan, 5], "bbox")


def test_correct_three_keypoints_at_known_distances() -> None:
    gt = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    pred = gt + np.array([[3.0, 4.0], [0.0, 6.0], [1.0, 1.0]])  # distances 5, 6, sqrt(2)
    np.testing.assert_allclose(distances(pred, gt), [5.0, 6.0, math.sqrt(2)])
    np.testing.assert_array_equal(correct(pred, gt, 5.0), [True, False, True])  # distance == thr counts
    np.testing.assert_array_equal(correct(pred, gt, 4.99), [False, False, True])
    np.testing.assert_array_equal(correct(pred, gt, [5.0, 6.0, 1.0]), [True, True, False])


def test_non_finite_predictions_are_wrong() -> None:
    gt = np.zeros((3, 2))
    pred = np.array([[np.nan, 0.0], [np.inf, np.inf], [0.0, 0.0]])
    np.testing.assert_array_equal(correct(pred, gt, 1e9), [False, False, True])
    assert np.isinf(distances(pred, gt)[:2]).all()


def test_boundary_survives_float_rounding() -> None:
    # 0.29 * 100 == 28.999999999999996 in floating point; a distance of exactly 29 must still count.
    thr = pck_thresholds([0, 0, 100, 100], 0.29)
    assert correct(np.array([[29.0, 0.0]]), np.zeros((1, 2)), thr)[0]
    acc = PCKAccumulator(alphas=(0.29,))
    acc.add(np.array([[29.0, 0.0]]), np.zeros((1, 2)), 100.0)
    assert acc.pck() == {0.29: 1.0}


def test_shape_mismatch() -> None:
    with pytest.raises(InputError, match="shape"):
        correct(np.zeros((3, 2)), np.zeros((4, 2)), 1.0)
    with pytest.raises(InputError, match=r"\[K, 2\]"):
        distances(np.zeros((3, 3)), np.zeros((3, 3)))


def _two_pair_accumulator() -> PCKAccumulator:
    acc = PCKAccumulator()  # alphas 0.05, 0.1, 0.15; unit 100 px -> thresholds 5, 10, 15 px
    gt1 = np.zeros((2, 2))
    acc.add(gt1 + [[4.0, 0.0], [0.0, 12.0]], gt1, 100.0, "a", "p1")  # errors 0.04, 0.12
    gt2 = np.array([[50.0, 50.0], [60.0, 60.0], [70.0, 70.0], [80.0, 80.0], [np.nan, np.nan]])
    pred2 = gt2 + [[0.0, 0.0], [9.0, 0.0], [0.0, -14.0], [0.0, 0.0], [1.0, 1.0]]
    pred2[3] = np.nan  # no prediction: wrong; the last keypoint has no ground truth: not scored
    acc.add(pred2, gt2, 100.0, "b", "p2")  # errors 0, 0.09, 0.14, inf
    return acc


def test_accumulator_pooled_and_per_image_hand_computed() -> None:
    acc = _two_pair_accumulator()
    assert acc.num_pairs == 2 and acc.num_keypoints == 6
    pck = acc.pck()
    assert pck == pytest.approx({0.05: 2 / 6, 0.1: 3 / 6, 0.15: 5 / 6})
    per_image = acc.pck_per_image()  # pair 1: 1/2, 1/2, 2/2; pair 2: 1/4, 2/4, 3/4
    assert per_image == pytest.approx({0.05: (1 / 2 + 1 / 4) / 2, 0.1: 0.5, 0.15: (1 + 3 / 4) / 2})
    cats = acc.per_category()
    assert list(cats) == ["a", "b"]
    assert cats["a"]["pairs"] == 1 and cats["a"]["keypoints"] == 2
    assert cats["a"]["pck"] == pytest.approx({0.05: 0.5, 0.1: 0.5, 0.15: 1.0})
    assert cats["b"]["pck"] == pytest.approx({0.05: 0.25, 0.1: 0.5, 0.15: 0.75})
    assert cats["b"]["pck_per_image"] == cats["b"]["pck"]
    assert acc.category_counts() == {"a": (1, 2), "b": (1, 4)}


def test_accumulator_dense_curve_from_stored_errors() -> None:
    acc = _two_pair_accumulator()
    np.testing.assert_allclose(acc.errors(), [0.04, 0.12, 0.0, 0.09, 0.14, np.inf])
    curve = acc.curve([0.01, 0.04, 0.1, 0.13, 0.2, 10.0])
    np.testing.assert_allclose(curve, [1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 5 / 6])
    np.testing.assert_allclose(acc.curve([0.1], category="b"), [0.5])
    assert acc.pck(alphas=[0.12]) == pytest.approx({0.12: 4 / 6})


def test_accumulator_empty_and_errors() -> None:
    acc = PCKAccumulator(alphas=(0.1,))
    assert math.isnan(acc.pck()[0.1]) and math.isnan(acc.pck_per_image()[0.1])
    assert acc.per_category() == {}
    acc.add(np.zeros((0, 2)), np.zeros((0, 2)), 10.0, "c")  # a pair with no keypoints
    assert acc.num_pairs == 1 and math.isnan(acc.pck_per_image()[0.1])
    with pytest.raises(InputError, match="unit"):
        acc.add(np.zeros((1, 2)), np.zeros((1, 2)), 0.0)
    with pytest.raises(ConfigError, match="alphas"):
        PCKAccumulator(alphas=())
    with pytest.raises(ConfigError, match="alphas"):
        PCKAccumulator(alphas=(0.1, -0.05))


def test_alpha_key() -> None:
    assert [alpha_key(a) for a in (0.05, 0.1, 0.15, 0.2)] == ["0.05", "0.1", "0.15", "0.2"]


def test_shared_helpers_hand_computed() -> None:
    """The one PCK implementation that eval, bag-eval and the lab scripts share."""
    assert box_unit([10, 20, 40, 60]) == 40.0
    assert math.isnan(box_unit([0, 0, np.nan, 5])) and math.isnan(box_unit([3, 3, 3, 3]))
    pred = np.array([[3.0, 4.0], [0.0, 0.0], [np.nan, 0.0], [1.0, 1.0]])
    gt = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 0.0], [np.nan, 1.0]])
    err = normalised_errors(pred, gt, 50.0, valid=np.array([True, False, True, True]))
    assert err[0] == pytest.approx(0.1) and err[1] == np.inf and err[2] == np.inf and math.isnan(err[3])
    np.testing.assert_array_equal(within(err, 0.1), [True, False, False, False])
    assert bool(within(0.1 * (1 + 1e-12), 0.1)) and not bool(within(0.1001, 0.1)) and bool(within(0.0, 0.0))
    assert pck_of_errors(err, 0.1) == pytest.approx(1 / 3)  # nan = not scored
    assert math.isnan(pck_of_errors([], 0.1))
