"""Projected fusion (semcorr-fusion-v2): the engine's forward, the file format, the trainer and the CLI."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semcorr_ros.cli import main
from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import CorrespondenceEngine
from semcorr_ros.engine.fusion import FORMAT_V2, FeatureFusion, load_fusion, save_fusion
from semcorr_ros.engine.matching import sample_descriptors, similarity
from semcorr_ros.errors import ConfigError, WeightsError
from semcorr_ros.lab.train.fusion_data import MapCache
from semcorr_ros.lab.train.fusion_proj import (
    ProjectedFusionModel,
    _similarities,
    build_projection_data,
    grid_image,
    pca_projections,
    projected_hit_rate,
    train_projected_fusion,
)
from semcorr_ros.lab.train.fusion_train import write_outputs

from _toy import ToySource, shifted_pairs, write_willow  # noqa: E402  (test helper next to this file)


def _maps(seed, shapes=((6, 5), (4, 9))):
    g = torch.Generator().manual_seed(seed)
    return [F.normalize(torch.randn(1, c, s, s, generator=g), dim=1) for c, s in shapes]


def _projections(seed=1, shapes=((3, 6), (2, 4))):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(r, c, generator=g) for r, c in shapes]


# -- the engine's projected fusion ------------------------------------------------------------------------------

def test_projected_forward_is_centre_project_resample_normalise():
    maps, means_src = _maps(0), _maps(5)
    fusion = FeatureFusion(["a/0", "b/0"], grid=8, weights=[0.3, 0.7], center=True)
    projs = _projections()
    fusion.set_projections(projs)
    means = fusion.map_means(means_src)
    out = fusion(maps, means)
    assert out.shape == (1, 3 + 2, 8, 8) and fusion.projected
    parts = []
    for m, mu, p, w in zip(maps, means, projs, (0.3, 0.7)):
        x = F.interpolate(m - mu, size=(8, 8), mode="bilinear", align_corners=False)  # resample, then project
        x = torch.einsum("rc,bchw->brhw", p, x)
        parts.append(F.normalize(x, dim=1) * w ** 0.5)
    assert torch.allclose(out, torch.cat(parts, 1), atol=1e-5)
    assert torch.allclose(out.norm(dim=1), torch.ones(1, 8, 8), atol=1e-5)


def test_projection_errors():
    fusion = FeatureFusion(["a/0", "b/0"], grid=8)
    with pytest.raises(WeightsError, match="one matrix per map"):
        fusion.set_projections(_projections()[:1])
    with pytest.raises(WeightsError, match="finite"):
        fusion.set_projections([_projections()[0], torch.full((2, 4), float("nan"))])
    fusion.set_projections(_projections(shapes=((3, 6), (2, 5))))  # b/0 has 4 channels, not 5
    with pytest.raises(WeightsError, match="expects 5 channels, the map has 4"):
        fusion(_maps(0))


def test_v2_file_round_trip_and_v1_clears_projections(tmp_path):
    keys = ["a/0", "b/0"]
    fusion = FeatureFusion(keys, grid=8, weights=[0.2, 0.8], center=True)
    fusion.set_projections(_projections())
    save_fusion(fusion, tmp_path / "v2.safetensors")
    plain = FeatureFusion(keys, grid=8, center=True)
    save_fusion(plain, tmp_path / "v1.safetensors")

    loaded = FeatureFusion(keys, grid=8, center=True)
    load_fusion(loaded, tmp_path / "v2.safetensors")
    assert loaded.projected and torch.allclose(loaded.logits, fusion.logits)
    maps = _maps(2)
    assert torch.allclose(loaded(maps), fusion(maps), atol=1e-6)
    load_fusion(loaded, tmp_path / "v1.safetensors")
    assert not loaded.projected and torch.allclose(loaded(maps), plain(maps))

    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(tmp_path / "v2.safetensors"), framework="pt") as f:
        assert f.metadata()["format"] == FORMAT_V2
    save_file({"logits": torch.zeros(2), "proj.0": torch.ones(3, 6)}, str(tmp_path / "half.safetensors"),
              metadata={"format": FORMAT_V2, "keys": json.dumps(keys)})
    with pytest.raises(WeightsError, match=r"lacks the tensors \['proj.1'\]"):
        load_fusion(loaded, tmp_path / "half.safetensors")
    assert not loaded.projected  # a failed load changes nothing
    with pytest.raises(WeightsError, match="trained for maps"):
        load_fusion(FeatureFusion(["a/0", "c/0"]), tmp_path / "v2.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00garbage")
    with pytest.raises(WeightsError, match="cannot read"):
        load_fusion(loaded, tmp_path / "bad.safetensors")


# -- the trainer ----------------------------------------------------------------------------------------------------

def test_trainer_similarities_equal_the_engines():
    """The trainer's fused similarities (grid images, centring with the source's native means) are the engine's
    FeatureFusion + sample_descriptors + cosine for the same parameters."""
    src, tgt = _maps(0), _maps(1)
    grid = 8
    images = {"s": grid_image(src, grid), "t": grid_image(tgt, grid)}
    projs = _projections()
    model = ProjectedFusionModel(projs, init_logits=torch.log(torch.tensor([0.3, 0.7])))
    with torch.no_grad():
        model.log_gains[0].copy_(torch.tensor([0.1, -0.2, 0.3, 0.0, 0.5, -0.4]))
    uv = torch.tensor([[0.2, 0.3], [0.7, 0.55], [0.01, 0.99]])
    from semcorr_ros.lab.train.fusion_proj import ProjPair

    pair = ProjPair("p", "c", "s", "t", uv, torch.zeros(3, 4, dtype=torch.long), torch.full((3, 4), 0.25))
    got = _similarities(model, images, [pair], grid)[0]

    fusion = FeatureFusion(["a/0", "b/0"], grid=grid, weights=[0.3, 0.7], center=True)
    fusion.set_projections(model.folded_projections())
    means = fusion.map_means(src)
    fs, ft = fusion(src, means)[0], fusion(tgt, means)[0]
    expect = similarity(sample_descriptors(fs, uv), ft).reshape(3, -1)
    assert torch.allclose(got, expect, atol=2e-3)  # grid images are stored in float16


def test_pca_projections_are_orthonormal_principal_directions():
    images = {k: grid_image(_maps(k, shapes=((6, 5),)), 8) for k in range(3)}
    (p,) = pca_projections(images, [0, 1, 2], rank=4)
    assert p.shape == (4, 6)
    assert torch.allclose(p @ p.t(), torch.eye(4), atol=1e-5)
    (full,) = pca_projections(images, [0, 1, 2], rank=10)  # capped at the channels
    assert full.shape == (6, 6)


@pytest.fixture(scope="module")
def toy_data():
    engine = CorrespondenceEngine(EngineConfig(device="cpu", fusion_weights="none"),
                                  sources=[ToySource(input_size=128), ToySource(input_size=128, seed=3,
                                                                                   channels=24, name="toy2")])
    ds = shifted_pairs()
    cache = MapCache(engine.encode_maps_batch, engine.fusion.keys)
    images, pairs = build_projection_data(ds, [0, 1, 2], cache, grid=16, progress=False)
    images, held = build_projection_data(ds, [3], cache, grid=16, images=images, progress=False)
    return engine, images, pairs, held


def test_training_lowers_the_loss_is_deterministic_and_the_engine_loads_it(toy_data, tmp_path):
    engine, images, pairs, held = toy_data
    assert len(pairs) == 3 and len(held) == 1 and len(images) == 8
    keys = engine.fusion.keys
    kw = dict(rank=8, epochs=6, batch_pairs=1, seed=3, progress=False, proj_penalty=1.0, holdout=held)
    a = train_projected_fusion(images, pairs, keys, 16, **kw)
    b = train_projected_fusion(images, pairs, keys, 16, **kw)
    assert a.loss_curve[-1] < a.loss_curve[0] and len(a.holdout_curve) == 7
    assert a.loss_curve == b.loss_curve and all(torch.equal(x, y) for x, y in zip(a.projections, b.projections))
    assert [tuple(p.shape) for p in a.projections] == [(8, 48), (8, 24)]
    # the projections moved away from the PCA start
    assert any(not torch.allclose(p, a.model.initial_projection(i)) for i, p in enumerate(a.model.proj))
    assert 0.0 <= projected_hit_rate(a.model, images, held, 16) <= 1.0

    out, plot = write_outputs(a, tmp_path / "proj.safetensors")
    assert plot.is_file()
    eng = CorrespondenceEngine(EngineConfig(device="cpu", fusion_weights=str(out), grid=16),
                               sources=[ToySource(input_size=128), ToySource(input_size=128, seed=3, channels=24,
                                                                             name="toy2")])
    assert eng.fusion.projected
    s = shifted_pairs()[3]
    res = eng.match_pair(s.src_image, s.src_kps, s.tgt_image)
    assert res.xy.shape == (6, 2) and np.isfinite(res.xy).all()
    # the engine's similarities are the trained model's
    sim_engine = _engine_similarity(eng, s)
    sim_model = _similarities(a.model, images, held, 16)[0]
    assert torch.allclose(sim_engine, sim_model, atol=5e-3)


def test_engine_rejects_a_projected_fusion_for_other_maps_at_start(tmp_path):
    sources = [ToySource(input_size=128), ToySource(input_size=128, seed=3, channels=24, name="toy2")]
    fusion = FeatureFusion(["toy/p8", "toy2/p8"], grid=16, center=True)
    fusion.set_projections([torch.randn(4, 48), torch.randn(4, 20)])  # toy2 has 24 channels
    save_fusion(fusion, tmp_path / "bad.safetensors")
    with pytest.raises(WeightsError, match="toy2/p8 expects 20 channels, the source gives 24"):
        CorrespondenceEngine(EngineConfig(device="cpu", grid=16, fusion_weights=str(tmp_path / "bad.safetensors")),
                             sources=sources)


def _engine_similarity(engine, s):
    from semcorr_ros.engine.matching import pixels_to_uv

    src, tgt = engine.encode_maps(s.src_image), engine.encode_maps(s.tgt_image)
    means = engine.fusion.map_means(src)
    fs, ft = engine.fusion(src, means)[0], engine.fusion(tgt, means)[0]
    uv = pixels_to_uv(torch.as_tensor(s.src_kps, dtype=torch.float32), s.src_image.shape[1], s.src_image.shape[0])
    return similarity(sample_descriptors(fs, uv), ft).reshape(len(uv), -1)


def test_fixed_temperature_stays(toy_data):
    engine, images, pairs, _ = toy_data
    r = train_projected_fusion(images, pairs, engine.fusion.keys, 16, rank=4, epochs=2, temperature=0.07,
                               learn_temperature=False, progress=False)
    assert r.temperature == pytest.approx(0.07) and r.loss_curve[-1] < r.loss_curve[0]


def test_trainer_rejects_bad_input(toy_data):
    engine, images, pairs, _ = toy_data
    with pytest.raises(ConfigError, match="rank >= 1"):
        train_projected_fusion(images, pairs, engine.fusion.keys, 16, rank=0, progress=False)
    with pytest.raises(ConfigError, match="fusion has 1"):
        train_projected_fusion(images, pairs, engine.fusion.keys[:1], 16, progress=False)
    with pytest.raises(ConfigError, match="no training pair"):
        train_projected_fusion(images, [], engine.fusion.keys, 16, progress=False)


# -- CLI and engine options -----------------------------------------------------------------------------------------

def test_cli_trains_a_projected_fusion_that_eval_loads(tmp_path, capsys):
    """End to end with the embedded default model: --fusion-model projected writes a v2 file; `semcorr eval`
    uses it; the kbcnet matcher refuses it."""
    root = tmp_path / "willow"
    write_willow(root)
    out = tmp_path / "proj.safetensors"
    rc = main(["train-fusion", "--dataset", "pf-willow", "--root", str(root), "--holdout-categories", "other(G)",
               "--fusion-model", "projected", "--rank", "16", "--epochs", "2", "--out", str(out),
               "--json", str(tmp_path / "s.json"), "--evaluate", "--no-progress", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["fusion_model"] == "projected" and s["ranks"] == [16] * len(s["keys"])
    assert s["train_pairs"] == 6 and s["holdout_pairs"] == 6 and len(s["loss_curve"]) == 3
    assert set(s["holdout_eval"]) == {"uniform_map", "uniform_source", "hand_set", "learned"}
    assert s["holdout_eval"]["learned"]["projected"] and not s["holdout_eval"]["uniform_map"]["projected"]
    assert "semcorr-fusion-v2" in capsys.readouterr().out

    rc = main(["eval", "--dataset", "pf-willow", "--root", str(root), "--fusion-weights", str(out),
               "--no-progress", "--device", "cpu", "--json", str(tmp_path / "e.json"), "--categories", "other(G)"])
    assert rc == 0 and json.loads((tmp_path / "e.json").read_text())["pairs"] == 6
    capsys.readouterr()
    rc = main(["eval", "--dataset", "pf-willow", "--root", str(root), "--fusion-weights", str(out),
               "--matcher", "kbcnet", "--no-progress", "--device", "cpu"])
    assert rc == 1 and "needs a plain fusion" in capsys.readouterr().err

    rc = main(["train-fusion", "--dataset", "pf-willow", "--root", str(root), "--fusion-model", "projected",
               "--learn-depth", "--out", str(tmp_path / "x.safetensors"), "--no-progress", "--device", "cpu"])
    assert rc == 1 and "not supported with --fusion-model projected" in capsys.readouterr().err


# -- choosing the number of epochs on a validation split -------------------------------------------------------------

class _Pairs:
    """pair_info over (category, src, tgt) triples: the dataset interface group_split needs."""

    def __init__(self, triples):
        from semcorr_ros.data.base import PairInfo

        self.infos = [PairInfo(f"{c}/{a}-{b}", c, a, b) for c, a, b in triples]

    def pair_info(self, i):
        return self.infos[i]


def test_group_split_keeps_scenes_whole():
    from semcorr_ros.lab.train.fusion_split import group_split

    # 5 synthetic scenes of 4 frames (reference -> frame pairs), the same scene names in two categories
    triples = [(c, f"s{s}_ref", f"s{s}_f{i}") for c in ("mug", "lamp") for s in range(5) for i in range(4)]
    ds = _Pairs(triples)
    idx = list(range(len(triples)))
    fit, val = group_split(ds, idx, 0.3, seed=0)
    assert sorted(fit + val) == idx and not set(fit) & set(val)
    assert len(val) >= 0.3 * len(idx) and fit
    scene = lambda i: (triples[i][0], triples[i][1])  # noqa: E731
    assert not {scene(i) for i in fit} & {scene(i) for i in val}      # no scene on both sides
    assert all(sum(scene(j) == scene(i) for j in val) == 4 for i in val)  # whole scenes
    assert group_split(ds, idx, 0.3, seed=0) == (fit, val) and group_split(ds, idx, 0.3, seed=1) != (fit, val)
    # images shared across pairs join their groups: a chain a-b, b-c is one group
    with pytest.raises(ConfigError, match="at least two independent groups"):
        group_split(_Pairs([("x", "a", "b"), ("x", "b", "c")]), [0, 1], 0.5)
    with pytest.raises(ConfigError, match="fraction must be in"):
        group_split(ds, idx, 1.0)


def test_validation_curve_and_best_epoch(toy_data):
    engine, images, pairs, held = toy_data
    res = train_projected_fusion(images, pairs, engine.fusion.keys, 16, rank=8, epochs=4, batch_pairs=1, seed=3,
                                 progress=False, proj_penalty=1.0, validation=held)
    assert len(res.validation_curve) == 5 and all(0.0 <= v <= 1.0 for v in res.validation_curve)
    assert res.validation_curve[-1] == projected_hit_rate(res.model, images, held, 16)  # the final model's
    best = res.best_epoch()
    assert res.validation_curve[best] == max(res.validation_curve)
    assert all(res.validation_curve[e] < res.validation_curve[best] for e in range(best))  # earliest on ties
    assert train_projected_fusion(images, pairs, engine.fusion.keys, 16, rank=8, epochs=1, progress=False,
                                  batch_pairs=1).best_epoch() is None


def test_cli_validation_chooses_the_epochs(tmp_path, capsys):
    root = tmp_path / "willow"
    write_willow(root)
    out = tmp_path / "proj.safetensors"
    rc = main(["train-fusion", "--dataset", "pf-willow", "--root", str(root), "--fusion-model", "projected",
               "--rank", "16", "--epochs", "3", "--validation", "0.4", "--out", str(out),
               "--json", str(tmp_path / "s.json"), "--no-progress", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "s.json").read_text())
    sel = s["projected"]["epoch_selection"]
    assert sel["validation_pairs"] == 6 and sel["fit_pairs"] == 6 and len(sel["hit_rate_curve"]) == 4
    assert sel["chosen_epochs"] == max(range(4), key=lambda e: (sel["hit_rate_curve"][e], -e))
    assert s["epochs"] == sel["chosen_epochs"] and s["train_pairs"] == 12   # retrained on all training pairs
    assert "epoch choice on 6 validation pairs" in capsys.readouterr().out
    rc = main(["train-fusion", "--dataset", "pf-willow", "--root", str(root), "--validation", "0.4",
               "--out", str(out), "--no-progress", "--device", "cpu"])
    assert rc == 1 and "--fusion-model projected only" in capsys.readouterr().err
    rc = main(["train-fusion", "--dataset", "pf-willow", "--root", str(root), "--fusion-model", "projected",
               "--holdout-categories", "other(G)", "--validation", "0.4", "--out", str(out), "--no-progress",
               "--device", "cpu"])
    assert rc == 1 and "at least two independent groups" in capsys.readouterr().err
