"""The 3D consensus prior: RANSAC similarity on hand-made 3D sets, lifting + projection, fallbacks, engine use."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semcorr_ros.config import EngineConfig
from semcorr_ros.engine.prior3d import consensus_prior_3d, fit_similarity_ransac, pose_from_prior
from semcorr_ros.errors import ConfigError


def _rot(axis, angle):
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


R_TRUE = _rot([0.3, 1.0, 0.2], 0.5)
T_TRUE = np.array([0.1, -0.05, 0.3])
S_TRUE = 1.3


def _with_outliers(src, n_out, seed=0):
    rng = np.random.default_rng(seed)
    dst = S_TRUE * src @ R_TRUE.T + T_TRUE + rng.normal(0, 0.002, src.shape)
    idx = rng.choice(len(src), n_out, replace=False)
    dst[idx] += rng.uniform(-0.5, 0.5, (n_out, 3))
    return dst, idx


@pytest.mark.parametrize("shape", ["volume", "plane"])
def test_similarity_recovered_with_outliers(shape):
    rng = np.random.default_rng(1)
    src = rng.uniform(-0.2, 0.2, (80, 3)) + [0, 0, 1.0]
    if shape == "plane":                       # a plane fixes a similarity: must still work
        src[:, 2] = 1.0 + 0.3 * src[:, 0]
    dst, out = _with_outliers(src, 25)
    fit, inliers, reason = fit_similarity_ransac(src, dst, threshold=0.02)
    assert reason == "ok" and fit is not None
    r, t, s = fit
    np.testing.assert_allclose(r, R_TRUE, atol=0.02)
    np.testing.assert_allclose(t, T_TRUE, atol=0.02)
    assert abs(s - S_TRUE) < 0.02
    assert not inliers[out].any() or inliers[out].sum() <= 2
    assert inliers.sum() >= 50


def test_nan_rows_and_weights():
    rng = np.random.default_rng(2)
    src = rng.uniform(-0.2, 0.2, (40, 3)) + [0, 0, 1.0]
    dst, _ = _with_outliers(src, 5)
    src[:4] = np.nan
    dst[4:8, 1] = np.inf
    fit, inliers, reason = fit_similarity_ransac(src, dst, np.linspace(0, 1, 40), threshold=0.02)
    assert reason == "ok" and not inliers[:8].any()
    assert abs(fit[2] - S_TRUE) < 0.02


@pytest.mark.parametrize("case", ["too_few", "collinear", "all_nan", "scale", "noise"])
def test_degenerate_sets_switch_off(case):
    rng = np.random.default_rng(3)
    src = rng.uniform(-0.2, 0.2, (40, 3)) + [0, 0, 1.0]
    dst = S_TRUE * src @ R_TRUE.T + T_TRUE
    if case == "too_few":
        src, dst = src[:5], dst[:5]
    elif case == "collinear":
        src = np.linspace(0, 1, 40)[:, None] * np.array([[1.0, 2.0, 3.0]])
        dst = S_TRUE * src @ R_TRUE.T + T_TRUE
    elif case == "all_nan":
        src[:] = np.nan
    elif case == "scale":
        dst = 20.0 * src @ R_TRUE.T + T_TRUE      # scale 20: implausible
    elif case == "noise":
        dst = rng.uniform(-1, 1, dst.shape)
    fit, inliers, reason = fit_similarity_ransac(src, dst, threshold=0.01)
    assert fit is None and not inliers.any() and reason != "ok"


# ------------------------------------------------------------------ maps + depth -> projected prior
G = 16
W, H = 160, 120
K = np.array([[150.0, 0, W / 2 - 0.5], [0, 150.0, H / 2 - 0.5], [0, 0, 1]])


def _maps(shift):
    gen = torch.Generator().manual_seed(0)
    ref = F.normalize(torch.randn(32, G, G, generator=gen), dim=0)
    live = F.normalize(torch.randn(32, G, G, generator=gen), dim=0)
    di, dj = shift
    live[:, di:, dj:] = ref[:, :G - di, :G - dj]
    return ref, live


def _plane(z=1.0, tilt=0.0):
    return (z + tilt * np.arange(W)[None, :] / W + np.zeros((H, 1))).astype(np.float32)


def _kps():
    return torch.tensor([[0.3, 0.3], [0.6, 0.35], [0.45, 0.6], [0.35, 0.55]])


def test_projected_prior_follows_the_shift():
    ref, live = _maps((2, 3))
    depth = _plane(1.0)
    uv = _kps()
    pts = None
    p = consensus_prior_3d(ref, live, uv, depth, K, pts, depth, K)
    assert p.active and p.reason == "ok", p.reason
    torch.testing.assert_close(p.uv, uv + torch.tensor([3 / G, 2 / G]), atol=2e-3, rtol=0)
    assert abs(p.scale - 1.0) < 0.02 and np.isfinite(p.rmse)
    # a pure image shift at constant depth is a 3D translation of (shift px) * z / f
    np.testing.assert_allclose(p.t[:2], [3 * W / G / 150.0, 2 * H / G / 150.0], atol=0.01)


@pytest.mark.parametrize("case", ["no_live_depth", "nan_depth", "zero_depth", "sparse_depth", "unrelated",
                                  "no_keypoints"])
def test_fallback_cases_switch_off_without_nan(case):
    from semcorr_ros.engine.geometry import validate_depth

    ref, live = _maps((2, 3))
    ref_depth = live_depth = _plane(1.0)
    uv = _kps()
    if case == "no_live_depth":
        live_depth = None
    elif case == "nan_depth":
        live_depth = np.full((H, W), np.nan, np.float32)
    elif case == "zero_depth":
        live_depth = validate_depth(np.zeros((H, W), np.uint16))
    elif case == "sparse_depth":
        live_depth = np.full((H, W), np.nan, np.float32)
        live_depth[:12, :12] = 1.0                  # one corner only
    elif case == "unrelated":
        live = F.normalize(torch.randn(32, G, G, generator=torch.Generator().manual_seed(9)), dim=0)
    elif case == "no_keypoints":
        uv = uv[:0]
    p = consensus_prior_3d(ref, live, uv, ref_depth, K, None, live_depth, K)
    assert not p.active and p.reason != "ok"
    assert p.uv.shape == uv.shape and torch.isfinite(p.uv).all()
    assert np.isfinite(p.R).all() and np.isfinite(p.t).all()


def test_pose_from_prior_refits_rigidly():
    rng = np.random.default_rng(4)
    ref, live = _maps((2, 3))
    depth = _plane(1.0)
    p = consensus_prior_3d(ref, live, _kps(), depth, K, None, depth, K)
    src = rng.uniform(-0.2, 0.2, (6, 3)) + [0, 0, 1.0]
    dst = src @ p.R.T + p.t
    dst[0] += 0.5                                   # one wrong keypoint
    pose = pose_from_prior(p, src, dst, np.ones(6, bool), threshold=0.02, min_inliers=4)
    assert pose is not None and pose.valid and pose.n_inliers == 5 and not pose.inliers[0]
    assert pose_from_prior(p, src, dst, np.zeros(6, bool), 0.02, 4) is None


def test_config_modes():
    assert EngineConfig().consensus_mode == "2d"
    with pytest.raises(ConfigError):
        EngineConfig(consensus_mode="4d")
    with pytest.raises(ConfigError):
        EngineConfig(multiscale=())
    with pytest.raises(ConfigError):
        EngineConfig(multiscale=(1.0, 10.0))


# ------------------------------------------------------------------ engine on an RGB-D scene
@pytest.mark.parametrize("mode,expect", [("auto", "3d"), ("2d", "2d"), ("3d", "3d")])
def test_engine_uses_the_3d_prior_on_an_rgbd_scene(mode, expect):
    from semcorr_ros.engine import CorrespondenceEngine

    from _rgbd import KnownScene, example
    from _toy import ToySource

    spec = example()
    scene = KnownScene(40, 24, spec)   # one coarse cell (640 px / 16): the fit's resolution
    eng = CorrespondenceEngine(EngineConfig(device="cpu", fusion_weights="none", kbc="off", consensus_mode=mode,
                                            pose_from_prior=True),
                               sources=[ToySource(), ToySource(seed=1, name="toy2")])
    eng.set_reference(spec.image, spec.keypoints, depth=spec.depth, intrinsics=spec.intrinsics)
    res = eng.match(scene.rgb, scene.depth, scene.K)
    assert res.prior_mode_used == expect and res.prior_used
    assert np.isfinite(res.xy).all() and np.isfinite(res.score).all()
    if expect == "3d":
        tr = res.prior_transform
        assert tr is not None and tr.valid and abs(tr.scale - 1.0) < 0.1
        assert np.linalg.norm(tr.t - scene.expected_t) < 0.03   # coarse cells are ~5 cm at 0.8 m
    # without depth, auto and 2d use the 2D prior; 3d has none
    res2 = eng.match(scene.rgb)
    assert res2.prior_mode_used == ("none" if mode == "3d" else "2d")
    assert np.isfinite(res2.xy).all()


@pytest.mark.parametrize("in_crop", [True, False])
def test_crop_pass_gets_the_prior_in_crop_coordinates(in_crop):
    from semcorr_ros.engine import CorrespondenceEngine

    from _rgbd import KnownScene, example
    from _toy import ToySource

    spec = example()
    scene = KnownScene(40, 24, spec)
    eng = CorrespondenceEngine(EngineConfig(device="cpu", fusion_weights="none", kbc="on", consensus_mode="auto",
                                            consensus_in_crop=in_crop),
                               sources=[ToySource(), ToySource(seed=1, name="toy2")])
    eng.set_reference(spec.image, spec.keypoints, depth=spec.depth, intrinsics=spec.intrinsics)
    res = eng.match(scene.rgb, scene.depth, scene.K)
    assert res.kbc_used and res.prior_mode_used == "3d"
    assert ("consensus_crop" in res.timings) is in_crop
    # the crop pass's confidence features see the prior (no_prior = 0) only when it is applied there
    assert (res.score_features[:, 4] == 0).all() if in_crop else (res.score_features[:, 4] == 1).all()
    assert np.isfinite(res.xy).all()
    # without depth the crop gets a 2D prior (fitted in the crop, or the full-frame one mapped in)
    res2 = eng.match(scene.rgb)
    assert res2.kbc_used and np.isfinite(res2.xy).all()
