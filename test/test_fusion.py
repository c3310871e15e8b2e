"""Fusion: weighted-mean cosine property, resampling, file format and strictness."""

import pytest
import torch
import torch.nn.functional as F

from semcorr_ros.engine.fusion import FeatureFusion, load_fusion, save_fusion
from semcorr_ros.errors import WeightsError


def test_fused_cosine_is_weighted_mean_of_cosines():
    torch.manual_seed(0)
    a = [F.normalize(torch.randn(2, c, 6, 6), dim=1) for c in (3, 5)]
    fusion = FeatureFusion(["s/a", "s/b"])
    with torch.no_grad():
        fusion.logits.copy_(torch.tensor([0.0, torch.log(torch.tensor(3.0))]))  # weights 1/4, 3/4
    f = fusion(a)
    assert f.shape == (2, 8, 6, 6)
    assert torch.allclose(f.norm(dim=1), torch.ones(2, 6, 6), atol=1e-5)
    cos = (f[0] * f[1]).sum(0)
    expect = 0.25 * (a[0][0] * a[0][1]).sum(0) + 0.75 * (a[1][0] * a[1][1]).sum(0)
    assert torch.allclose(cos, expect, atol=1e-5)


def test_resample_to_largest_grid():
    maps = [F.normalize(torch.randn(1, 4, 5, 5), dim=1), F.normalize(torch.randn(1, 4, 10, 10), dim=1)]
    out = FeatureFusion(["a/0", "b/0"])(maps)
    assert out.shape == (1, 8, 10, 10)
    assert torch.allclose(out.norm(dim=1), torch.ones(1, 10, 10), atol=1e-5)


def test_save_load_round_trip_and_strict_keys(tmp_path):
    f1 = FeatureFusion(["a/1", "b/2"])
    with torch.no_grad():
        f1.logits.copy_(torch.tensor([0.3, -1.2]))
    path = tmp_path / "fusion.safetensors"
    save_fusion(f1, path)
    f2 = FeatureFusion(["a/1", "b/2"])
    load_fusion(f2, path)
    assert torch.equal(f1.logits, f2.logits)
    with pytest.raises(WeightsError, match="trained for maps"):
        load_fusion(FeatureFusion(["a/1", "c/2"]), path)


def test_bad_files(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_fusion(FeatureFusion(["a/1"]), tmp_path / "missing.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError, match="cannot read"):
        load_fusion(FeatureFusion(["a/1"]), bad)


def test_wrong_number_of_maps():
    with pytest.raises(WeightsError, match="expects 2 maps"):
        FeatureFusion(["a/1", "b/1"])([torch.randn(1, 2, 3, 3)])


def test_initial_weights_and_centering():
    fusion = FeatureFusion(["a/0", "b/0"], weights=[3.0, 1.0], center=True)
    assert torch.allclose(fusion.weights, torch.tensor([0.75, 0.25]))
    base = F.normalize(torch.randn(1, 4, 1, 1), dim=1)
    # A map that is one vector everywhere plus small noise: after centering only the noise is left.
    noise = 0.01 * torch.randn(1, 4, 5, 5)
    m = F.normalize(base.expand(1, 4, 5, 5) + noise, dim=1)
    out = fusion([m, m])
    assert torch.allclose(out.norm(dim=1), torch.ones(1, 5, 5), atol=1e-5)
    cos_before = (m[0, :, 0, 0] * m[0, :, 4, 4]).sum()
    cos_after = (out[0, :, 0, 0] * out[0, :, 4, 4]).sum()
    assert cos_before > 0.99 and cos_after < 0.9
    with pytest.raises(WeightsError, match="positive"):
        FeatureFusion(["a/0"], weights=[0.0])


def test_default_model_loads_the_shipped_learned_fusion():
    """The package ships learned weights for the default model's maps; 'none' falls back to source_weights."""
    from importlib import resources

    from safetensors import safe_open

    from semcorr_ros.config import EngineConfig
    from semcorr_ros.engine.engine import _configured_fusion

    shipped = resources.files("semcorr_ros") / "models" / "fusion_default.safetensors"
    assert shipped.is_file()
    with safe_open(str(shipped), framework="pt") as f:
        logits = f.get_tensor("logits")
    keys = ["effnet-lite2/block14", "effnet-lite2/block19", "dinov2-s-imgfocus/layer7", "dinov2-s-imgfocus/layer8",
            "dinov2-s-imgfocus/layer9"]
    hand_set = [0.35, 0.35, 0.1, 0.1, 0.1]
    loaded = _configured_fusion(FeatureFusion(keys, weights=hand_set), EngineConfig().fusion_weights)
    assert torch.allclose(loaded.logits, logits) and not loaded.projected
    assert not torch.allclose(loaded.weights, torch.tensor(hand_set), atol=0.01)
    kept = _configured_fusion(FeatureFusion(keys, weights=hand_set), "none")
    assert torch.allclose(kept.weights, torch.tensor(hand_set))
    other = _configured_fusion(FeatureFusion(["x/1", "y/1"]), None)  # other maps: the shipped file does not apply
    assert torch.allclose(other.weights, torch.tensor([0.5, 0.5]))
