"""The engine's one RANSAC loop (semcorr_ros.engine.ransac) on a model small enough to check by hand: 2D lines."""

import numpy as np
import pytest
import torch

from semcorr_ros.engine.ransac import (
    distinct_triples,
    most_inliers_least_cost,
    most_weight,
    random_triples,
    ransac,
    torch_triples,
)
from semcorr_ros.errors import InputError


def _line_problem(n=40, outliers=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, n)
    y = 0.5 * x + 0.2 + rng.normal(0, 1e-3, n)
    y[:outliers] = rng.uniform(-3, 3, outliers)
    return np.c_[x, y], np.arange(n) >= outliers


def _line_fns(p):
    def fit(samples):  # first two points of each sample -> (slope, intercept) [M, 2]
        a, b = p[samples[:, 0]], p[samples[:, 1]]
        dx = b[:, 0] - a[:, 0]
        keep = np.abs(dx) > 1e-9
        if not keep.any():
            raise InputError("all samples vertical")
        k = (b[keep, 1] - a[keep, 1]) / dx[keep]
        return np.c_[k, a[keep, 1] - k * a[keep, 0]]

    def refit(inl):
        return np.polyfit(p[inl, 0], p[inl, 1], 1)

    def residuals(h):
        return np.abs(p[None, :, 1] - (h[:, :1] * p[None, :, 0] + h[:, 1:]))

    return fit, residuals, refit, lambda m: residuals(m[None])[0]


@pytest.mark.parametrize("select", [most_weight, most_inliers_least_cost])
def test_ransac_finds_the_line_and_its_inliers_exactly(select):
    p, truth = _line_problem()
    fit, residuals, refit, residual = _line_fns(p)
    found = ransac(random_triples(len(p), 64, seed=1), fit, residuals, refit, residual, 0.01,
                   weight=np.ones(len(p)), select=select)
    assert found.reason == "ok" and np.allclose(found.model, [0.5, 0.2], atol=2e-3)
    assert np.array_equal(found.inliers, truth)


def test_ransac_is_deterministic_and_reports_degenerate_data():
    p, _ = _line_problem()
    fns = _line_fns(p)
    a = ransac(distinct_triples(len(p), 30, seed=3), *fns, 0.01, select=most_inliers_least_cost, monotone=True)
    b = ransac(distinct_triples(len(p), 30, seed=3), *fns, 0.01, select=most_inliers_least_cost, monotone=True)
    assert np.array_equal(a.model, b.model) and np.array_equal(a.inliers, b.inliers)
    vertical = np.c_[np.zeros(10), np.arange(10.0)]
    found = ransac(random_triples(10, 16, seed=0), *_line_fns(vertical), 0.01)
    assert found.model is None and found.inliers is None and found.reason == "all samples vertical"


def test_samplers():
    assert distinct_triples(5, 10, seed=0).shape == (10, 3)                 # C(5, 3) = 10: every triple
    s = distinct_triples(30, 200, seed=0)
    assert s.shape == (200, 3) and (s[:, 0] != s[:, 1]).all() and (s[:, 2] != s[:, 0]).all() \
        and (s[:, 2] != s[:, 1]).all()
    r = random_triples(30, 200, seed=0)
    assert (r[:, 0] != r[:, 1]).all() and r.max() < 30
    t = torch_triples(30, 200, seed=0, device=torch.device("cpu"))
    assert t.shape == (200, 3) and torch.equal(t, torch_triples(30, 200, seed=0, device=torch.device("cpu")))
