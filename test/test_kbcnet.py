"""KBCNet head: centre-pivot 4D convolution vs a naive dense 4D convolution, shapes, gradients, readout, files,
and the engine's ``matcher: kbcnet`` path on the toy feature source."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import CorrespondenceEngine
from semcorr_ros.engine.kbcnet import (
    CenterPivotConv4d,
    CrossScaleAlignment,
    Decoder4d,
    KBCNetHead,
    kbcnet_match,
    load_kbcnet,
    readout,
    save_kbcnet,
)
from semcorr_ros.errors import ConfigError, WeightsError

from _toy import ToySource, texture  # noqa: E402  (test helper next to this file)


def naive_conv4d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Dense 4D convolution, stride 1, zero padding ``k // 2``, by explicit loops over the kernel taps.

    ``x [B, C, Hs, Ws, Ht, Wt]``, ``weight [O, C, k, k, k, k]`` -> ``[B, O, Hs, Ws, Ht, Wt]``.
    """
    b, c, hs, ws, ht, wt = x.shape
    o, _, k = weight.shape[:3]
    r = k // 2
    xp = F.pad(x, (r, r, r, r, r, r, r, r))
    out = torch.zeros(b, o, hs, ws, ht, wt, dtype=x.dtype)
    for a, bb, p, q in itertools.product(range(k), repeat=4):
        patch = xp[:, :, a:a + hs, bb:bb + ws, p:p + ht, q:q + wt]
        out += torch.einsum("oc,bcijkl->boijkl", weight[:, :, a, bb, p, q], patch)
    if bias is not None:
        out += bias[None, :, None, None, None, None]
    return out


@pytest.mark.parametrize("k,shape", [(3, (2, 3, 4, 5, 3, 4)), (5, (1, 2, 5, 4, 4, 6))])
def test_center_pivot_equals_dense_conv_with_two_centre_slices(k, shape):
    torch.manual_seed(0)
    b, c, *dims = shape
    conv = CenterPivotConv4d(c, 3, k).double()
    x = torch.randn(*shape, dtype=torch.float64)
    r = k // 2
    dense = torch.zeros(3, c, k, k, k, k, dtype=torch.float64)
    dense[:, :, :, :, r, r] += conv.src.weight.detach()   # source slice at the target centre
    dense[:, :, r, r, :, :] += conv.tgt.weight.detach()   # target slice at the source centre
    expected = naive_conv4d(x, dense, conv.src.bias.detach())
    torch.testing.assert_close(conv(x), expected, rtol=1e-10, atol=1e-10)
    # and the dense kernel really is zero off the two slices
    mask = torch.zeros(k, k, k, k, dtype=torch.bool)
    mask[:, :, r, r] = True
    mask[r, r, :, :] = True
    assert (dense[:, :, ~mask] == 0).all()


def test_shapes_and_non_square_maps():
    torch.manual_seed(0)
    head = KBCNetHead(in_channels=12, dim=8, heads=2, hidden=4)
    src, tgt = F.normalize(torch.randn(2, 12, 8, 8), dim=1), F.normalize(torch.randn(2, 12, 6, 10), dim=1)
    corr = head(src, tgt)
    assert corr.shape == (2, 8, 8, 6, 10)
    maps = readout(corr, torch.rand(2, 5, 2))
    assert maps.shape == (2, 5, 6, 10)
    aligned = CrossScaleAlignment(12, dim=8, heads=2)(src)
    assert aligned.shape == src.shape
    torch.testing.assert_close(aligned.norm(dim=1), torch.ones(2, 8, 8))
    assert Decoder4d(hidden=4)(corr.detach()).shape == corr.shape


def test_untrained_head_is_close_to_raw_cosine():
    torch.manual_seed(0)
    head = KBCNetHead(in_channels=12, dim=8, heads=2, hidden=4)
    src, tgt = F.normalize(torch.randn(1, 12, 8, 8), dim=1), F.normalize(torch.randn(1, 12, 8, 8), dim=1)
    raw = torch.einsum("cij,ckl->ijkl", src[0], tgt[0])
    assert (head(src, tgt)[0] - raw).abs().max() < 0.05


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    head = KBCNetHead(in_channels=12, dim=8, heads=2, hidden=4)
    src, tgt = F.normalize(torch.randn(2, 12, 8, 8), dim=1), F.normalize(torch.randn(2, 12, 8, 8), dim=1)
    maps = readout(head(src, tgt), torch.rand(2, 3, 2))
    loss = F.cross_entropy((maps / head.temperature).flatten(2).flatten(0, 1), torch.randint(0, 64, (6,)))
    loss.backward()
    for name, p in head.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_readout_of_a_delta_correlation_lands_on_the_right_cell():
    g = 8
    corr = torch.zeros(1, g, g, g, g)
    src_cell, tgt_cell = (2, 5), (6, 1)                     # (row, col)
    corr[0, src_cell[0], src_cell[1], tgt_cell[0], tgt_cell[1]] = 1.0
    uv = torch.tensor([[[(src_cell[1] + 0.5) / g, (src_cell[0] + 0.5) / g]]])
    tmap = readout(corr, uv)[0, 0]
    assert tmap.argmax().item() == tgt_cell[0] * g + tgt_cell[1] and tmap.max().item() == pytest.approx(1.0)

    class Identity(KBCNetHead):  # aligned descriptors = the input maps, no decoder correction
        def align(self, fmap):
            return fmap

        def correction(self, ds, dt):
            return torch.zeros(1, *ds.shape[-2:], *dt.shape[-2:])

    # one-hot descriptors whose correlation is that delta
    src_idx = src_cell[0] * g + src_cell[1]
    ds = torch.eye(g * g).reshape(g * g, g, g)
    dt = torch.zeros(g * g, g, g)
    dt[src_idx, tgt_cell[0], tgt_cell[1]] = 1.0
    head = Identity(in_channels=g * g, dim=4, heads=1, hidden=2)
    m = kbcnet_match(head, ds, dt, uv[0], radius=2)
    expected = torch.tensor([(tgt_cell[1] + 0.5) / g, (tgt_cell[0] + 0.5) / g])
    torch.testing.assert_close(m.uv[0], expected, atol=1e-4, rtol=0)
    assert m.peak[0].item() == pytest.approx(1.0)
    assert m.cycle_error[0].item() == pytest.approx(0.0, abs=1e-6)   # reads back onto the source cell


def test_sparse_matching_equals_the_dense_readout():
    from semcorr_ros.engine.matching import soft_argmax

    torch.manual_seed(0)
    head = KBCNetHead(in_channels=12, dim=8, heads=2, hidden=4).eval()
    with torch.no_grad():                                    # a clearly non-trivial correction
        for conv in (head.decoder.convs[-1].src, head.decoder.convs[-1].tgt):
            conv.weight.normal_(0, 0.3)
    src, tgt = F.normalize(torch.randn(12, 8, 8), dim=0), F.normalize(torch.randn(12, 8, 8), dim=0)
    uv = torch.rand(5, 2)
    m = kbcnet_match(head, src, tgt, uv, radius=2)
    with torch.no_grad():
        sim = readout(head(src[None], tgt[None]), uv[None])[0]
    ref_uv, ref_peak = soft_argmax(sim, 2, float(head.temperature.detach()))
    torch.testing.assert_close(m.uv, ref_uv, atol=1e-5, rtol=0)
    torch.testing.assert_close(m.peak, ref_peak, atol=1e-5, rtol=0)
    m2 = kbcnet_match(head, src, tgt, uv, radius=2)          # second frame: cached reference descriptors
    torch.testing.assert_close(m2.uv, m.uv)


def test_empty_keypoints():
    head = KBCNetHead(in_channels=4, dim=4, heads=1, hidden=2)
    m = kbcnet_match(head, torch.randn(4, 8, 8), torch.randn(4, 8, 8), torch.zeros(0, 2))
    assert m.uv.shape == (0, 2) and m.score.shape == (0,)
    assert readout(torch.zeros(1, 4, 4, 4, 4), torch.zeros(1, 0, 2)).shape == (1, 0, 4, 4)


def test_file_round_trip_and_strict_checks(tmp_path):
    torch.manual_seed(0)
    head = KBCNetHead(in_channels=12, keys=["a/1", "b/2"], dim=8, heads=2, hidden=4)
    path = tmp_path / "head.safetensors"
    save_kbcnet(head, path)
    loaded = load_kbcnet(path, keys=["a/1", "b/2"])
    for (n1, t1), (n2, t2) in zip(head.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(t1, t2)
    with pytest.raises(WeightsError, match="trained for maps"):
        load_kbcnet(path, keys=["a/1"])
    with pytest.raises(WeightsError, match="not found.*train-kbcnet"):
        load_kbcnet(tmp_path / "missing.safetensors")
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(WeightsError, match="cannot read"):
        load_kbcnet(bad)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file({"x": torch.zeros(2)}, str(other), metadata={"format": "semcorr-fusion-v1"})
    with pytest.raises(WeightsError, match="not a semcorr-kbcnet-v1 file"):
        load_kbcnet(other)
    # right tag, wrong tensors
    sd = {k: v.clone() for k, v in head.state_dict().items()}
    sd.pop("log_temperature")
    import json
    save_file(sd, str(other), metadata={"format": "semcorr-kbcnet-v1", "keys": json.dumps(head.keys),
                                        "config": json.dumps(head.config)})
    with pytest.raises(WeightsError, match="missing \\['log_temperature'\\]"):
        load_kbcnet(other)


# ------------------------------------------------------------------------------------------------ engine


def _engine(**cfg):
    cfg.setdefault("kbc", "off")
    cfg.setdefault("grid", 16)
    return CorrespondenceEngine(EngineConfig(device="cpu", fusion_weights="none", **cfg),
                                sources=[ToySource(), ToySource(seed=1, name="toy2")])


def test_config_matcher_choices():
    assert EngineConfig().matcher == "nn" and EngineConfig().kbcnet_weights is None
    with pytest.raises(ConfigError, match="'nn', 'kbcnet'"):
        EngineConfig(matcher="dense")


def test_engine_kbcnet_without_weights_says_how_to_get_them(tmp_path):
    with pytest.raises((ConfigError, WeightsError), match="train-kbcnet"):
        _engine(matcher="kbcnet", kbcnet_weights=str(tmp_path / "nope.safetensors"))


def test_engine_with_wrong_maps_head_is_rejected(tmp_path):
    path = tmp_path / "head.safetensors"
    save_kbcnet(KBCNetHead(in_channels=96, keys=["other/x"], dim=8, heads=2, hidden=4), path)
    with pytest.raises(WeightsError, match="trained for maps"):
        _engine(matcher="kbcnet", kbcnet_weights=str(path))


@pytest.mark.parametrize("kbc", ["off", "on"])
def test_engine_kbcnet_matches_a_shift(tmp_path, kbc):
    torch.manual_seed(0)
    path = tmp_path / "head.safetensors"
    save_kbcnet(KBCNetHead(in_channels=96, keys=["toy/p8", "toy2/p8"], dim=8, heads=2, hidden=4), path)
    eng = _engine(matcher="kbcnet", kbcnet_weights=str(path), kbc=kbc)
    img = texture(128, 128, seed=3)
    kps = np.array([[40.0, 40.0], [80.0, 48.0], [56.0, 88.0]])
    eng.set_reference(img, kps)
    res = eng.match(np.roll(img, (8, 16), axis=(0, 1)))
    assert res.kbc_used == (kbc == "on")
    assert np.isfinite(res.xy).all() and np.isfinite(res.score).all()
    err = np.abs(res.xy - (kps + [16, 8])).max(axis=1)
    if kbc == "off":
        assert err.max() <= 4.0
    else:  # an untrained head on toy features inside rescaled crops: most keypoints, not all (NN too misses by 5 px)
        assert (err <= 6.0).sum() >= 2


def test_head_calibration_round_trip_and_bad_metadata(tmp_path):
    import json

    from safetensors.torch import save_file

    head = KBCNetHead(in_channels=12, keys=["a/1"], dim=8, heads=2, hidden=4)
    path = tmp_path / "head.safetensors"
    save_kbcnet(head, path)
    assert load_kbcnet(path).score_calibration is None  # files without one (older heads) still load
    head.score_calibration = (-2.0, 4.5, -0.01, -0.1, -1.0)
    save_kbcnet(head, path)
    assert load_kbcnet(path).score_calibration == (-2.0, 4.5, -0.01, -0.1, -1.0)
    meta = {"format": "semcorr-kbcnet-v1", "keys": json.dumps(head.keys), "config": json.dumps(head.config)}
    sd = {k: v.contiguous() for k, v in head.state_dict().items()}
    for bad, why in (("[1, 2, 3]", "5 finite"), ('[1, 2, 3, 4, "nan"]', "5 finite"), ("{oops", "bad score_cal"),
                     ("[1, 2, 3, 4, [5]]", "bad score_cal")):
        save_file(sd, str(path), metadata={**meta, "score_calibration": bad})
        with pytest.raises(WeightsError, match=why):
            load_kbcnet(path)


def test_engine_uses_the_heads_calibration_unless_told_otherwise(tmp_path):
    from semcorr_ros.config import DEFAULT_SCORE_CALIBRATION
    from semcorr_ros.engine.confidence import calibrated_score

    torch.manual_seed(0)
    head = KBCNetHead(in_channels=96, keys=["toy/p8", "toy2/p8"], dim=8, heads=2, hidden=4)
    own = (-3.0, 4.0, -0.01, -0.1, -1.0)
    head.score_calibration = own
    path = tmp_path / "head.safetensors"
    save_kbcnet(head, path)
    img = texture(128, 128, seed=3)
    kps = np.array([[40.0, 40.0], [80.0, 48.0], [56.0, 88.0]])
    mine = (-1.0, 3.0, 0.0, 0.0, 0.0)
    for calib, expect in ((DEFAULT_SCORE_CALIBRATION, own), (mine, mine), (None, None)):
        eng = _engine(matcher="kbcnet", kbcnet_weights=str(path), score_calibration=calib)
        assert eng.score_coefficients() == expect
        eng.set_reference(img, kps)
        res = eng.match(np.roll(img, (8, 16), axis=(0, 1)))
        if expect is not None:
            want = calibrated_score(torch.as_tensor(res.score_features), expect).numpy()
            assert np.allclose(res.score, want, atol=1e-5)
    assert _engine().score_coefficients() == DEFAULT_SCORE_CALIBRATION  # nn: the config's
