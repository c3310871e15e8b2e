"""Multi-scale encoding: scaled input sizes, one source per (source, scale), the engine's fused maps."""

import numpy as np
import pytest

from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import CorrespondenceEngine
from semcorr_ros.engine.multiscale import base_name, expand_sources, scaled_input_size

from _toy import ToySource, texture


def test_scaled_input_size_snaps_to_the_multiple_and_range():
    assert scaled_input_size(320, 0.75, 32, 64, 1024) == 256    # 240 = 7.5 x 32: halves go up
    assert scaled_input_size(320, 1.25, 32, 64, 1024) == 416    # 400 = 12.5 x 32
    assert scaled_input_size(224, 0.75, 14, 56, 1036) == 168
    assert scaled_input_size(224, 1.25, 14, 56, 1036) == 280
    assert scaled_input_size(224, 0.1, 14, 56, 1036) == 56      # clamped to the valid range
    assert scaled_input_size(224, 10.0, 14, 56, 1036) == 1036
    for s in (0.5, 0.75, 1.25, 2.0):
        assert scaled_input_size(320, s, 32, 64, 1024) % 32 == 0


def test_expand_sources_names_and_sizes():
    a, b = ToySource(), ToySource(seed=1, name="toy2")
    out = expand_sources([a, b], (1.0, 0.5), built=False)
    assert [s.name for s in out] == ["toy", "toy2", "toy@0.5", "toy2@0.5"]
    assert out[0] is a and out[2].input_size == 64 and a.input_size == 128
    assert out[2].conv is a.conv                                 # shared weights, no copy
    assert base_name("toy2@0.5") == "toy2" and base_name("toy") == "toy"


def _engine(scales):
    return CorrespondenceEngine(EngineConfig(device="cpu", fusion_weights="none", kbc="off", grid=16,
                                             multiscale=scales, source_weights={"toy": 2.0, "toy2": 1.0}),
                                sources=[ToySource(), ToySource(seed=1, name="toy2")])


def test_single_scale_is_unchanged_and_multiscale_adds_maps():
    one, three = _engine((1.0,)), _engine((0.75, 1.0, 1.25))
    assert len(one.sources) == 2 and len(three.sources) == 6
    assert len(three.fusion.keys) == 3 * len(one.fusion.keys) == len(set(three.fusion.keys))
    # each scale's copy keeps its source's configured weight
    w = dict(zip(three.fusion.keys, three.fusion.weights.tolist()))
    assert w["toy@0.75/p8"] == pytest.approx(2 * w["toy2@0.75/p8"]) == pytest.approx(w["toy/p8"])
    img = texture(128, 128, seed=3)
    f1, f3 = one.encode(img), three.encode(img)
    assert f1.shape[1:] == f3.shape[1:] == (16, 16) and f3.shape[0] == 3 * f1.shape[0]
    np.testing.assert_allclose(f3.norm(dim=0).numpy(), 1.0, atol=1e-4)


def test_multiscale_engine_matches_a_shifted_copy():
    eng = _engine((0.75, 1.0, 1.25))
    img = texture(128, 128, seed=3)
    kps = np.array([[40.0, 40.0], [80.0, 48.0], [56.0, 88.0]])
    eng.set_reference(img, kps)
    res = eng.match(np.roll(img, (8, 16), axis=(0, 1)))
    assert np.abs(res.xy - (kps + [16, 8])).max() <= 6.0          # under one 8-pixel cell
