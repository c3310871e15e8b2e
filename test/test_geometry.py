"""Tests of semcorr_ros.engine.geometry with hand-computed answers."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from semcorr_ros.engine.geometry import (
    backproject,
    keypoint_depth_range,
    lift,
    project,
    sample_depth,
    validate_depth,
    validate_intrinsics,
)
from semcorr_ros.errors import ConfigError, InputError

K = np.array([[500.0, 0.0, 320.0], [0.0, 400.0, 240.0], [0.0, 0.0, 1.0]])


# --- validate_depth ---------------------------------------------------------------------------------------

def test_validate_depth_float_marks_invalid_as_nan():
    d = np.array([[1.5, 0.0, -1.0], [np.nan, np.inf, 2.25]], dtype=np.float64)
    out = validate_depth(d)
    assert out.dtype == np.float32 and out.shape == (2, 3)
    np.testing.assert_array_equal(np.isnan(out), [[False, True, True], [True, True, False]])
    assert out[0, 0] == 1.5 and out[1, 2] == 2.25
    assert d[0, 1] == 0.0  # input untouched


def test_validate_depth_uint16_mm_equals_float_m():
    mm = np.array([[1500, 0], [250, 65535]], dtype=np.uint16)
    m = np.array([[1.5, 0.0], [0.25, 65.535]], dtype=np.float32)
    a, b = validate_depth(mm), validate_depth(m)
    np.testing.assert_allclose(a, b, rtol=1e-6, equal_nan=True)
    assert np.isnan(a[0, 1])
    np.testing.assert_allclose(validate_depth(mm, depth_scale=0.0001)[0, 0], 0.15, rtol=1e-6)


def test_validate_depth_accepts_trailing_channel_and_checks_size():
    d = np.ones((4, 5, 1), np.float32)
    assert validate_depth(d, image_shape=(4, 5, 3)).shape == (4, 5)
    with pytest.raises(InputError) as err:
        validate_depth(d, image_shape=(6, 7, 3))
    assert "4x5" in str(err.value) and "6x7" in str(err.value)


@pytest.mark.parametrize("bad", [np.ones(5, np.float32), np.ones((2, 3, 2), np.float32),
                                 np.ones((2, 3), np.int32), np.ones((2, 3), bool), [[1.0, 2.0]]])
def test_validate_depth_rejects_bad_input(bad):
    with pytest.raises(InputError):
        validate_depth(bad)


def test_validate_depth_rejects_bad_scale():
    with pytest.raises(InputError):
        validate_depth(np.ones((2, 2), np.uint16), depth_scale=0.0)


# --- validate_intrinsics ----------------------------------------------------------------------------------

def test_validate_intrinsics_ok_and_flat():
    out = validate_intrinsics(K.astype(np.float32))
    assert out.dtype == np.float64 and out.shape == (3, 3)
    np.testing.assert_array_equal(validate_intrinsics(K.ravel().tolist()), K)


@pytest.mark.parametrize("edit", [(0, 0, 0.0), (1, 1, -400.0), (0, 2, np.nan), (2, 0, 1e-3), (2, 2, 2.0)])
def test_validate_intrinsics_rejects(edit):
    bad = K.copy()
    bad[edit[0], edit[1]] = edit[2]
    with pytest.raises(InputError):
        validate_intrinsics(bad)
    with pytest.raises(InputError):
        validate_intrinsics(np.eye(4))


# --- sample_depth -----------------------------------------------------------------------------------------

def _patch() -> np.ndarray:
    d = np.full((7, 7), np.nan, np.float32)
    # 3x3 window around pixel (x=3, y=3): valid 1, 2, 4, 10, 3 (0 and -2 are invalid even unvalidated)
    d[2:5, 2:5] = [[1.0, 2.0, 0.0], [4.0, np.nan, 10.0], [3.0, -2.0, np.nan]]
    return d


def test_keypoint_depth_range_skips_keypoints_without_depth():
    depth = np.full((20, 20), 1.0)
    depth[:, 10:] = 1.25
    depth[15:, :] = np.nan
    xy = np.array([[2.0, 2.0], [15.0, 5.0], [5.0, 18.0]])      # 1.0 m, 1.25 m, no depth
    assert keypoint_depth_range(depth, xy, radius=1) == pytest.approx(0.25)
    assert keypoint_depth_range(depth, xy[2:], radius=1) == 0.0


def test_sample_depth_median_ignores_invalid():
    z, ok = sample_depth(_patch(), np.array([[3.0, 3.0], [3.4, 2.6]]), radius=1)
    np.testing.assert_array_equal(ok, [True, True])
    np.testing.assert_array_equal(z, [3.0, 3.0])  # median of {1, 2, 3, 4, 10}


def test_sample_depth_even_count_and_min_valid():
    d = _patch()
    d[4, 2] = np.nan  # valid now {1, 2, 4, 10}
    z, ok = sample_depth(d, np.array([[3.0, 3.0]]), radius=1)
    assert ok[0] and z[0] == 3.0  # (2 + 4) / 2
    z, ok = sample_depth(d, np.array([[3.0, 3.0]]), radius=1, min_valid=5)
    assert not ok[0] and np.isnan(z[0])
    z, ok = sample_depth(d, np.array([[3.0, 3.0]]), radius=0)  # centre pixel alone is NaN
    assert not ok[0] and np.isnan(z[0])


def test_sample_depth_edges_truncate_window():
    d = np.full((4, 5), np.nan, np.float32)
    d[0, 0], d[0, 1], d[1, 0], d[1, 1] = 1.0, 2.0, 3.0, 100.0
    z, ok = sample_depth(d, np.array([[0.0, 0.0], [-0.4, 0.3]]), radius=1)
    # truncated window {1, 2, 3, 100} -> 2.5 (clamping indices would repeat pixels and give 2.0)
    np.testing.assert_array_equal(z, [2.5, 2.5])
    assert ok.all()


def test_sample_depth_outside_and_nonfinite():
    d = np.ones((4, 5), np.float32)
    xy = np.array([[-0.6, 1.0], [4.5, 1.0], [4.49, 3.49], [1.0, 3.5], [np.nan, 1.0], [1.0, np.inf]])
    z, ok = sample_depth(d, xy, radius=2)
    np.testing.assert_array_equal(ok, [False, False, True, False, False, False])
    assert z[2] == 1.0 and np.isnan(z[[0, 1, 3, 4, 5]]).all()


def test_sample_depth_rounds_half_up():
    d = np.full((1, 5), np.nan, np.float32)
    d[0, 3] = 7.0
    z, ok = sample_depth(d, np.array([[2.5, 0.0], [2.49, 0.0]]), radius=0)
    np.testing.assert_array_equal(ok, [True, False])


def test_sample_depth_all_invalid_no_warning_and_empty():
    d = np.full((6, 6), np.nan, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        z, ok = sample_depth(d, np.array([[2.0, 2.0]]))
        assert not ok[0] and np.isnan(z[0])
        z, ok = sample_depth(d, np.zeros((0, 2)))
    assert z.shape == (0,) and ok.shape == (0,) and ok.dtype == bool


def test_sample_depth_nearest_cluster():
    d = np.full((3, 3), 2.0, np.float32)
    d[0, :] = 1.0
    d[1, 0] = 1.0  # foreground 1.0 x4, background 2.0 x5
    xy = np.array([[1.0, 1.0]])
    assert sample_depth(d, xy, radius=1)[0][0] == 2.0  # plain median: background
    assert sample_depth(d, xy, radius=1, cluster_gap=0.1)[0][0] == 1.0  # nearest cluster
    assert sample_depth(d, xy, radius=1, cluster_gap=0.1, min_valid=5)[0][0] == 2.0  # 4 < 5: skip it
    d[1, 0] = 1.5  # a flying pixel between the surfaces forms a cluster of one
    assert sample_depth(d, xy, radius=1, cluster_gap=0.1, min_valid=2)[0][0] == 1.0
    assert sample_depth(d, xy, radius=1, cluster_gap=0.1, min_valid=1)[0][0] == 1.0


def test_sample_depth_matches_naive_loop():
    rng = np.random.default_rng(0)
    d = rng.uniform(0.5, 3.0, (20, 30)).astype(np.float32)
    d[rng.random(d.shape) < 0.4] = np.nan
    xy = rng.uniform(-2, 32, (200, 2))
    z, ok = sample_depth(d, xy, radius=2, min_valid=3)
    for i, (x, y) in enumerate(xy):
        cx, cy = int(np.floor(x + 0.5)), int(np.floor(y + 0.5))
        if not (0 <= cx < 30 and 0 <= cy < 20):
            assert not ok[i]
            continue
        win = d[max(cy - 2, 0):cy + 3, max(cx - 2, 0):cx + 3]
        v = win[np.isfinite(win)]
        assert ok[i] == (v.size >= 3)
        if ok[i]:
            assert z[i] == pytest.approx(float(np.median(v.astype(np.float64))), abs=1e-12)


def test_sample_depth_rejects_bad_args():
    d = np.ones((4, 4), np.float32)
    with pytest.raises(InputError):
        sample_depth(np.ones((4, 4), np.uint16), np.zeros((1, 2)))
    with pytest.raises(InputError):
        sample_depth(d, np.zeros((3,)))
    with pytest.raises(ConfigError):
        sample_depth(d, np.zeros((1, 2)), radius=-1)
    with pytest.raises(ConfigError):
        sample_depth(d, np.zeros((1, 2)), min_valid=0)
    with pytest.raises(ConfigError):
        sample_depth(d, np.zeros((1, 2)), cluster_gap=0.0)


# --- backproject / project / lift -------------------------------------------------------------------------

def test_backproject_hand_value_and_invalid():
    xy = np.array([[420.0, 140.0], [320.0, 240.0], [1.0, 1.0], [1.0, 1.0]])
    pts = backproject(xy, np.array([2.0, 1.0, np.nan, -1.0]), K)
    np.testing.assert_allclose(pts[0], [0.4, -0.5, 2.0], atol=1e-15)  # (100/500*2, -100/400*2, 2)
    np.testing.assert_allclose(pts[1], [0.0, 0.0, 1.0], atol=1e-15)
    assert np.isnan(pts[2:]).all()
    with pytest.raises(InputError):
        backproject(xy, np.ones(3), K)


def test_project_backproject_round_trip_with_skew():
    k = K.copy()
    k[0, 1] = 3.0
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 640, (50, 2))
    z = rng.uniform(0.2, 5.0, 50)
    pts = backproject(xy, z, k)
    np.testing.assert_allclose(pts[:, 2], z, rtol=1e-15)
    np.testing.assert_allclose(project(pts, k), xy, atol=1e-9)


def test_project_behind_camera_is_nan():
    out = project(np.array([[0.4, -0.5, 2.0], [0.0, 0.0, 0.0], [1.0, 1.0, -1.0], [np.nan, 0, 1]]), K)
    np.testing.assert_allclose(out[0], [420.0, 140.0])
    assert np.isnan(out[1:]).all()
    with pytest.raises(InputError):
        project(np.zeros((2, 2)), K)


def test_lift_on_plane_is_exact():
    depth = np.full((480, 640), 1.5, np.float32)
    depth[100:103, 200:203] = np.nan  # hole around (201, 101) except its ring of radius 2
    depth[300:320, 300:320] = np.nan  # full hole around (310, 310)
    xy = np.array([[420.0, 140.0], [201.3, 101.2], [0.0, 479.0], [310.0, 310.0], [700.0, 10.0]])
    pts, has = lift(depth, xy, K, radius=2)
    np.testing.assert_array_equal(has, [True, True, True, False, False])
    expect = np.stack([(xy[:3, 0] - 320) / 500 * 1.5, (xy[:3, 1] - 240) / 400 * 1.5, np.full(3, 1.5)], 1)
    np.testing.assert_allclose(pts[:3], expect, atol=1e-12)
    np.testing.assert_allclose(pts[0], [0.3, -0.375, 1.5], atol=1e-12)
    assert np.isnan(pts[3:]).all()
