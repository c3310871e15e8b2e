"""The 2D consensus prior: dense mutual matches -> RANSAC affine -> per-keypoint prior (hand-made maps)."""

import pytest
import torch
import torch.nn.functional as F

from semcorr_ros.config import EngineConfig
from semcorr_ros.engine.consensus import consensus_prior, fit_affine_ransac, mutual_matches, prior_bias
from semcorr_ros.engine.matching import match_keypoints, sample_descriptors
from semcorr_ros.errors import ConfigError

G = 32


def _random_map(seed: int, c: int = 64, g: int = G) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(c, g, g, generator=gen), dim=0)


def _cells_uv(ij: list[tuple[int, int]], g: int = G) -> torch.Tensor:
    return torch.tensor([[(j + 0.5) / g, (i + 0.5) / g] for i, j in ij])


def _shifted(ref: torch.Tensor, di: int, dj: int, seed: int = 99) -> torch.Tensor:
    live = _random_map(seed, ref.shape[0])
    live[:, di:, dj:] = ref[:, :G - di, :G - dj]
    return live


def test_shift_recovered_with_outliers():
    ref = _random_map(0)
    live = _shifted(ref, 3, 5)
    # outliers: copies of reference cells pasted at wrong places
    gen = torch.Generator().manual_seed(1)
    for _ in range(25):
        si, sj, ti, tj = torch.randint(0, G, (4,), generator=gen).tolist()
        live[:, ti, tj] = ref[:, si, sj]
    kps = _cells_uv([(5, 5), (5, 20), (20, 12), (24, 24)])
    prior = consensus_prior(ref, live, kps)
    assert prior.active and prior.reason == "ok"
    assert prior.n_inliers >= 100 and prior.n_matches >= prior.n_inliers
    torch.testing.assert_close(prior.affine[:, :2], torch.eye(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(prior.affine[:, 2], torch.tensor([5 / G, 3 / G]), atol=1e-4, rtol=0)
    torch.testing.assert_close(prior.uv, kps + torch.tensor([5 / G, 3 / G]), atol=1e-4, rtol=0)


def test_scale_recovered():
    ref = _random_map(2)
    live = _random_map(3)
    for i in range(G // 2):
        for j in range(G // 2):
            live[:, i + 4, j + 8] = ref[:, 2 * i, 2 * j]   # live = 0.5 * ref + offset
    kps = _cells_uv([(2, 2), (2, 28), (28, 14)])
    prior = consensus_prior(ref, live, kps)
    assert prior.active
    torch.testing.assert_close(prior.affine[:, :2], 0.5 * torch.eye(2), atol=3e-3, rtol=0)
    expected = 0.5 * kps + torch.tensor([8 / G + 0.25 / G, 4 / G + 0.25 / G])
    torch.testing.assert_close(prior.uv, expected, atol=3e-3, rtol=0)


def test_mutual_matches_identity():
    ref = _random_map(4)
    src, dst, w = mutual_matches(ref, ref)
    assert src.shape == (G * G, 2)
    torch.testing.assert_close(src, dst)
    torch.testing.assert_close(w, torch.ones(G * G), atol=1e-5, rtol=0)
    mask = torch.zeros(G, G, dtype=torch.bool)
    src, dst, w = mutual_matches(ref, ref, mask)
    assert src.shape == (0, 2) and w.shape == (0,)


@pytest.mark.parametrize("case", ["unrelated", "zeros", "nan", "no_keypoints", "collinear"])
def test_degenerate_inputs_switch_off(case):
    ref = _random_map(5)
    live = _random_map(6)
    kps = _cells_uv([(4, 4), (20, 25)])
    if case == "zeros":
        ref, live = torch.zeros_like(ref), torch.zeros_like(live)
    elif case == "nan":
        live[:, 3, 3] = float("nan")
    elif case == "no_keypoints":
        kps = kps[:0]
    elif case == "collinear":
        live[:, 10, :] = ref[:, 10, :]             # only one row of the object agrees
    prior = consensus_prior(ref, live, kps)
    assert not prior.active and prior.reason != "ok"
    assert torch.isfinite(prior.uv).all() and torch.isfinite(prior.affine).all()
    assert prior.uv.shape == kps.shape


def test_ransac_too_few_points():
    affine, inliers, reason = fit_affine_ransac(torch.rand(2, 2), torch.rand(2, 2))
    assert affine is None and not inliers.any() and "too few" in reason
    pts = torch.rand(30, 2)
    affine, _, reason = fit_affine_ransac(pts, pts * 20.0)       # scale 20: implausible
    assert affine is None and "scale" in reason


def test_prior_moves_keypoint_from_distractor_to_consistent_peak():
    ref = _random_map(7)
    live = _shifted(ref, 2, 2)
    kps = _cells_uv([(8, 8), (8, 20), (20, 8), (20, 20)])
    # keypoint 0's true cell (10, 10) is perturbed; an exact copy of its descriptor sits far away (a distractor)
    noise = _random_map(8)[:, 10, 10]
    live[:, 10, 10] = F.normalize(live[:, 10, 10] + 0.5 * noise, dim=0)
    live[:, 28, 3] = ref[:, 8, 8]
    desc = sample_descriptors(ref, kps)
    plain = match_keypoints(desc, kps, ref, live, radius=0)
    assert torch.allclose(plain.uv[0], _cells_uv([(28, 3)])[0])
    prior = consensus_prior(ref, live, kps)
    assert prior.active
    biased = match_keypoints(desc, kps, ref, live, radius=0, prior=prior.uv, prior_weight=0.3, prior_sigma=0.05)
    torch.testing.assert_close(biased.uv, _cells_uv([(10, 10), (10, 22), (22, 10), (22, 22)]))
    assert (biased.peak <= 1.0 + 1e-5).all()                    # the score uses the raw similarity
    assert biased.peak[0] < plain.peak[0]


def test_prior_bias_shape_and_peak():
    b = prior_bias(torch.tensor([[0.5, 0.25]]), 4, 8, 0.3, 0.1)
    assert b.shape == (1, 4, 8)
    assert float(b.max()) <= 0.3 and float(b.min()) > 0
    i, j = divmod(int(b.reshape(-1).argmax()), 8)
    assert (i, j) in {(0, 3), (0, 4), (1, 3), (1, 4)}


def test_config_validation():
    cfg = EngineConfig(consensus_prior=True, consensus_weight=0.2, consensus_sigma=0.05)
    assert cfg.consensus_prior
    with pytest.raises(ConfigError):
        EngineConfig(consensus_sigma=0.0)
    with pytest.raises(ConfigError):
        EngineConfig(consensus_min_inliers=2)


@pytest.mark.parametrize("enabled", [True, False])
def test_engine_uses_the_prior_on_a_shifted_copy(enabled):
    import numpy as np

    from semcorr_ros.engine import CorrespondenceEngine

    from _toy import ToySource, texture  # noqa: E402  (test helper next to this file)

    eng = CorrespondenceEngine(EngineConfig(device="cpu", fusion_weights="none", kbc="off", grid=16,
                                            consensus_prior=enabled),
                               sources=[ToySource(), ToySource(seed=1, name="toy2")])
    img = texture(128, 128, seed=3)
    kps = np.array([[40.0, 40.0], [80.0, 48.0], [56.0, 88.0]])
    eng.set_reference(img, kps)
    res = eng.match(np.roll(img, (8, 16), axis=(0, 1)))
    assert res.prior_used is enabled
    assert ("consensus" in res.timings) is enabled
    assert np.abs(res.xy - (kps + [16, 8])).max() <= 4.0
