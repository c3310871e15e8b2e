"""Tests of semcorr_ros.engine.pose: Umeyama and RANSAC with exact answers."""

from __future__ import annotations

import time

import numpy as np
import pytest

from semcorr_ros.engine.pose import estimate_pose, umeyama
from semcorr_ros.engine.types import PoseResult
from semcorr_ros.errors import ConfigError, InputError


def rot(axis, angle: float) -> np.ndarray:
    """Rodrigues: rotation by ``angle`` radians about ``axis``."""
    k = np.asarray(axis, float) / np.linalg.norm(axis)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * kx + (1 - np.cos(angle)) * kx @ kx


R0 = rot([1.0, 2.0, -0.5], 0.7)
T0 = np.array([0.1, -0.2, 0.35])


def cloud(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.uniform(-0.15, 0.15, (n, 3)) + [0.0, 0.0, 1.0]


def assert_finite_identity(res: PoseResult, k: int):
    assert not res.valid
    np.testing.assert_array_equal(res.R, np.eye(3))
    np.testing.assert_array_equal(res.t, np.zeros(3))
    assert np.isnan(res.rmse)
    assert res.inliers.shape == (k,) and res.inliers.dtype == bool and not res.inliers.any()
    assert res.n_inliers == 0


# --- umeyama ----------------------------------------------------------------------------------------------

def test_umeyama_rigid_exact():
    src = cloud(10)
    r, t, s = umeyama(src, src @ R0.T + T0)
    np.testing.assert_allclose(r, R0, atol=1e-12)
    np.testing.assert_allclose(t, T0, atol=1e-12)
    assert s == 1.0


def test_umeyama_similarity_exact():
    src = cloud(6)
    r, t, s = umeyama(src, 2.5 * src @ R0.T + T0, with_scale=True)
    np.testing.assert_allclose(r, R0, atol=1e-12)
    np.testing.assert_allclose(t, T0, atol=1e-12)
    assert s == pytest.approx(2.5, abs=1e-12)


def test_umeyama_weights_ignore_zero_weight_outlier():
    src = cloud(5)
    dst = src @ R0.T + T0
    dst[4] += 1.0
    r, t, _ = umeyama(src, dst, weights=np.array([1, 2, 1, 3, 0.0]))
    np.testing.assert_allclose(r, R0, atol=1e-12)
    np.testing.assert_allclose(t, T0, atol=1e-12)


def test_umeyama_reflection_gives_proper_rotation():
    # src covariance diag(18, 8, 2); dst = src mirrored in z. Best proper rotation: flip the axis of least
    # variance back, i.e. R = I (hand computation: cov = diag(18, 8, -2) = U D V^T with U = diag(1, 1, -1)).
    src = np.array([[3, 0, 0], [-3, 0, 0], [0, 2, 0], [0, -2, 0], [0, 0, 1], [0, 0, -1.0]])
    dst = src * [1.0, 1.0, -1.0]
    r, t, s = umeyama(src, dst)
    assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(r, np.eye(3), atol=1e-12)
    np.testing.assert_allclose(t, 0.0, atol=1e-12)
    res = estimate_pose(src, dst, threshold=2.5, min_inliers=3)
    assert np.linalg.det(res.R) == pytest.approx(1.0, abs=1e-9)


@pytest.mark.parametrize("src", [np.zeros((2, 3)), np.outer(np.arange(5.0), [1, 2, 3]), np.ones((4, 3)),
                                 np.full((4, 3), np.nan)])
def test_umeyama_degenerate_raises(src):
    with pytest.raises(InputError):
        umeyama(src, src)


def test_umeyama_shape_mismatch_raises():
    with pytest.raises(InputError):
        umeyama(cloud(4), cloud(5))
    with pytest.raises(InputError):
        umeyama(cloud(4), cloud(4), weights=np.ones(3))


# --- estimate_pose ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("n", [3, 8, 30])  # exhaustive triples (n = 3, 8) and random sampling (n = 30)
def test_estimate_pose_exact(n):
    src = cloud(n)
    res = estimate_pose(src, src @ R0.T + T0, min_inliers=3)
    assert res.valid and res.n_inliers == n and res.inliers.all()
    np.testing.assert_allclose(res.R, R0, atol=1e-6)
    np.testing.assert_allclose(res.t, T0, atol=1e-6)
    assert res.rmse < 1e-9 and res.scale == 1.0


def test_estimate_pose_with_scale():
    src = cloud(12)
    res = estimate_pose(src, 0.5 * src @ R0.T + T0, with_scale=True)
    assert res.valid and res.inliers.all()
    np.testing.assert_allclose(res.R, R0, atol=1e-6)
    np.testing.assert_allclose(res.t, T0, atol=1e-6)
    assert res.scale == pytest.approx(0.5, abs=1e-9)


@pytest.mark.parametrize("noise", [0.0, 0.002])
def test_estimate_pose_30_percent_outliers_flagged_exactly(noise):
    rng = np.random.default_rng(3)
    src = cloud(30)
    dst = src @ R0.T + T0 + rng.normal(0.0, noise, (30, 3))
    out = np.zeros(30, bool)
    out[rng.choice(30, 9, replace=False)] = True
    dst[out] += rng.uniform(0.3, 1.0, (9, 3)) * rng.choice([-1, 1], (9, 3))
    res = estimate_pose(src, dst)
    assert res.valid
    np.testing.assert_array_equal(res.inliers, ~out)
    assert res.n_inliers == 21
    tol = 1e-6 if noise == 0 else 0.02
    np.testing.assert_allclose(res.R, R0, atol=tol)
    np.testing.assert_allclose(res.t, T0, atol=tol)
    if noise:
        assert 0.001 < res.rmse < 0.006


def test_estimate_pose_mask_and_nan_rows():
    src = cloud(10)
    dst = src @ R0.T + T0
    dst[0] += 1.0  # masked out anyway
    src[3] = np.nan
    dst[5, 1] = np.inf
    mask = np.ones(10, bool)
    mask[0] = False
    res = estimate_pose(src, dst, mask=mask)
    assert res.valid and res.n_inliers == 7
    np.testing.assert_array_equal(np.flatnonzero(~res.inliers), [0, 3, 5])
    np.testing.assert_allclose(res.R, R0, atol=1e-9)


@pytest.mark.parametrize("case", ["two", "collinear", "nan", "empty", "masked"])
def test_estimate_pose_degenerate_is_invalid_not_nan(case):
    src = {"two": cloud(2), "collinear": np.outer(np.arange(6.0), [0.1, 0.2, 0.3]),
           "nan": np.full((6, 3), np.nan), "empty": np.zeros((0, 3)), "masked": cloud(6)}[case]
    mask = np.zeros(len(src), bool) if case == "masked" else None
    res = estimate_pose(src, src + T0, mask=mask)
    assert_finite_identity(res, len(src))


def test_estimate_pose_too_few_inliers_is_invalid_but_finite():
    src = cloud(3)
    res = estimate_pose(src, src @ R0.T + T0, min_inliers=4)
    assert not res.valid and res.n_inliers == 3 and np.isnan(res.rmse)
    assert np.isfinite(res.R).all() and np.isfinite(res.t).all()


def test_estimate_pose_deterministic_with_seed():
    rng = np.random.default_rng(5)
    src = cloud(40)
    dst = src @ R0.T + T0 + rng.normal(0, 0.005, (40, 3))
    dst[:15] += rng.uniform(-0.5, 0.5, (15, 3))
    a, b = estimate_pose(src, dst, seed=7), estimate_pose(src, dst, seed=7)
    np.testing.assert_array_equal(a.R, b.R)
    np.testing.assert_array_equal(a.inliers, b.inliers)


def test_estimate_pose_rejects_bad_options():
    src = cloud(5)
    with pytest.raises(InputError):
        estimate_pose(src, cloud(6))
    with pytest.raises(InputError):
        estimate_pose(src, src, mask=np.ones(4, bool))
    for kw in ({"threshold": 0.0}, {"threshold": np.nan}, {"iterations": 0}, {"min_inliers": 2}):
        with pytest.raises(ConfigError):
            estimate_pose(src, src, **kw)


def test_estimate_pose_is_fast():
    rng = np.random.default_rng(0)
    src = cloud(50)
    dst = src @ R0.T + T0 + rng.normal(0, 0.003, (50, 3))
    dst[:15] += 0.5
    estimate_pose(src, dst)
    t0 = time.perf_counter()
    for _ in range(20):
        estimate_pose(src, dst, iterations=200)
    assert (time.perf_counter() - t0) / 20 < 0.05  # ~1.5 ms measured; generous for loaded CI machines
