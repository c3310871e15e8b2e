"""Fusion training: exact cached similarities, InfoNCE, a tiny training run on toy sources, splits, the CLI."""

import json

import numpy as np
import pytest
import scipy.io
import torch
import torch.nn.functional as F
from PIL import Image

from semcorr_ros.cli import main
from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import CorrespondenceEngine
from semcorr_ros.engine.features.base import FeatureSource
from semcorr_ros.engine.fusion import FeatureFusion, load_fusion
from semcorr_ros.engine.matching import sample_descriptors, similarity
from semcorr_ros.errors import ConfigError
from semcorr_ros.lab.train.fusion_data import MapCache, bilinear_target, build_pair_tensors, pair_tensors
from semcorr_ros.lab.train.fusion_split import load_split, make_split, save_split
from semcorr_ros.lab.train.fusion_train import batch_loss, fused_similarity, info_nce, train_fusion, write_outputs

from _toy import ToySource, shifted_pairs, texture, write_willow  # noqa: E402  (test helper next to this file)


class NoiseSource(FeatureSource):
    """Maps that ignore the image (a fixed random pattern): useless for matching."""

    def __init__(self, name: str = "noise") -> None:
        super().__init__()
        self.name, self.input_size, self.layer_names = name, 64, ("n",)
        self.register_buffer("pattern", torch.randn(1, 16, 8, 8, generator=torch.Generator().manual_seed(3)))

    def forward_features(self, images):
        return [self.pattern.expand(images.shape[0], -1, -1, -1)]


# -- exactness of the cached similarities ------------------------------------------------------------------------

@pytest.mark.parametrize("center", [False, True])
def test_cached_similarity_equals_engine_fusion(center):
    torch.manual_seed(0)
    src = [F.normalize(torch.randn(1, c, s, s), dim=1) for c, s in ((6, 5), (4, 9))]
    tgt = [F.normalize(torch.randn(1, c, s, s), dim=1) for c, s in ((6, 5), (4, 9))]
    uv = torch.tensor([[0.2, 0.3], [0.7, 0.55], [0.01, 0.99]])
    p = pair_tensors(src, tgt, uv, uv, grid=8, center=center)
    fusion = FeatureFusion(["a/0", "b/0"], grid=8, weights=[0.3, 0.7], center=center)
    means = fusion.map_means(src)
    fs, ft = fusion(src, means)[0], fusion(tgt, means)[0]
    expect = similarity(sample_descriptors(fs, uv), ft).reshape(3, -1)
    got = fused_similarity(p.sims, p.norms, fusion.weights)
    assert torch.allclose(got, expect, atol=2e-3)  # sims are stored in float16


def test_bilinear_target():
    idx, w = bilinear_target(torch.tensor([[0.5 / 4, 0.5 / 4], [0.5, 0.5], [1.0, 1.0]]), 4)
    assert torch.allclose(w.sum(1), torch.ones(3))
    assert idx[0, w[0].argmax()] == 0 and w[0].max() == 1  # at a cell centre: one-hot
    assert set(idx[1].tolist()) == {5, 6, 9, 10} and torch.allclose(w[1], torch.full((4,), 0.25))
    assert (idx[2][w[2] > 0] == 15).all()  # past the last centre: clamped to the corner cell


# -- InfoNCE -----------------------------------------------------------------------------------------------------

def test_info_nce_prefers_the_right_cell():
    sim = torch.tensor([[0.1, 0.9, 0.2, 0.0]])
    one = torch.ones(1, 1)
    right = info_nce(sim, torch.tensor([[1]]), one, 0.1)
    wrong = info_nce(sim, torch.tensor([[2]]), one, 0.1)
    assert right < wrong
    hard = info_nce(sim, torch.tensor([[1, 2]]), torch.tensor([[0.8, 0.2]]), 0.1, target="hard")
    assert torch.isclose(hard, right)
    with pytest.raises(ConfigError):
        info_nce(sim, torch.tensor([[1]]), one, 0.1, target="soft")
    assert info_nce(sim[:0], torch.zeros(0, 1, dtype=torch.long), one[:0], 0.1) == 0


def _hand_pair(good_first: bool):
    """A pair whose map 0 (or 1) puts each keypoint's positive cell highest; the other map is noise."""
    torch.manual_seed(1)
    k, n = 3, 16
    good = torch.full((k, n), -0.2)
    pos = torch.tensor([2, 7, 11])
    good[torch.arange(k), pos] = 0.9
    noise = torch.rand(k, n) * 0.6 - 0.3
    sims = torch.stack([good, noise] if good_first else [noise, good]).half()
    from semcorr_ros.lab.train.fusion_data import PairTensors

    return PairTensors("p", "c", sims, torch.ones(2, k), torch.stack([pos, pos, pos, pos], 1),
                       torch.full((k, 4), 0.25))


def test_gradients_reach_the_fusion_logits_and_favour_the_informative_map():
    p = _hand_pair(good_first=True)
    logits = torch.zeros(2, requires_grad=True)
    log_tau = torch.tensor(np.log(0.1), dtype=torch.float32, requires_grad=True)
    batch_loss([p], logits, log_tau).backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0 and log_tau.grad is not None
    assert logits.grad[0] < 0 < logits.grad[1]  # descent raises the informative map's weight
    res = train_fusion([p], ["good/0", "noise/0"], epochs=100, seed=0, progress=False)
    assert res.weights["good/0"] > 0.65 and res.loss_curve[-1] < res.loss_curve[0]


def test_train_fusion_rejects_bad_input():
    p = _hand_pair(True)
    with pytest.raises(ConfigError, match="maps"):
        train_fusion([p], ["only/0"], epochs=1, progress=False)
    with pytest.raises(ConfigError):
        train_fusion([p], ["a/0", "b/0"], epochs=1, lr=0, progress=False)


# -- a tiny training run on toy sources through the engine's encode path ----------------------------------------

@pytest.fixture(scope="module")
def toy_setup():
    engine = CorrespondenceEngine(EngineConfig(device="cpu", fusion_weights="none"),
                                  sources=[ToySource(input_size=128), NoiseSource()])
    pairs = shifted_pairs()
    cache = MapCache(engine.encode_maps_batch, engine.fusion.keys)
    tensors = build_pair_tensors(pairs, range(len(pairs)), cache, grid=16, center=True, progress=False)
    return engine, tensors


def test_tiny_training_lowers_loss_writes_loadable_file(toy_setup, tmp_path):
    engine, tensors = toy_setup
    keys = engine.fusion.keys
    assert keys == ["toy/p8", "noise/n"] and len(tensors) == 4 and tensors[0].sims.shape == (2, 6, 256)
    res = train_fusion(tensors, keys, epochs=25, seed=0, batch_pairs=2, progress=False)
    assert res.loss_curve[-1] < res.loss_curve[0]
    assert res.weights["toy/p8"] > 0.5
    out, plot = write_outputs(res, tmp_path / "fusion.safetensors")
    assert plot.is_file() and plot.stat().st_size > 1000
    f = FeatureFusion(keys)
    load_fusion(f, out)
    assert torch.allclose(f.logits, res.logits)
    cfg = EngineConfig(device="cpu", fusion_weights=str(out))
    eng2 = CorrespondenceEngine(cfg, sources=[ToySource(input_size=128), NoiseSource()])
    assert torch.allclose(eng2.fusion.logits, res.logits)


def test_training_is_deterministic(toy_setup):
    engine, tensors = toy_setup
    a = train_fusion(tensors, engine.fusion.keys, epochs=5, seed=7, batch_pairs=1, progress=False)
    b = train_fusion(tensors, engine.fusion.keys, epochs=5, seed=7, batch_pairs=1, progress=False)
    c = train_fusion(tensors, engine.fusion.keys, epochs=5, seed=8, batch_pairs=1, progress=False)
    assert torch.equal(a.logits, b.logits) and a.loss_curve == b.loss_curve
    assert not torch.equal(a.logits, c.logits)  # the seed sets the pair order


def test_map_cache_disk_round_trip(toy_setup, tmp_path):
    engine, _ = toy_setup
    pairs = shifted_pairs(2)
    calls = []

    def encode(images, keys):
        calls.append(len(images))
        return engine.encode_maps_batch(images, keys)

    c1 = MapCache(encode, engine.fusion.keys, tmp_path / "c.pt", {"v": 1})
    c1.ensure(pairs, range(2), progress=False)
    assert sum(calls) == 4 and (tmp_path / "c.pt").is_file()
    c2 = MapCache(encode, engine.fusion.keys, tmp_path / "c.pt", {"v": 1})
    c2.ensure(pairs, range(2), progress=False)
    assert sum(calls) == 4 and len(c2.maps) == 4  # nothing re-encoded
    c3 = MapCache(encode, engine.fusion.keys, tmp_path / "c.pt", {"v": 2})  # other settings: recompute
    assert not c3.maps


# -- splits ------------------------------------------------------------------------------------------------------

class _Infos:
    """Minimal dataset: 2 categories x 6 images, every ordered pair."""

    name = "fake"

    def __init__(self):
        from semcorr_ros.data.base import PairInfo

        self._infos = [PairInfo(f"{c}/{s}-{t}", c, s, t) for c in ("A", "B") for s in "abcdef" for t in "abcdef"
                       if s != t]

    def __len__(self):
        return len(self._infos)

    def pair_info(self, i):
        return self._infos[i]

    @property
    def categories(self):
        return ["A", "B"]

    @property
    def pair_ids(self):
        return [i.pair_id for i in self._infos]


def test_image_split_shares_no_image_and_round_trips(tmp_path):
    ds = _Infos()
    sp = make_split(ds, image_fraction=0.5, seed=3)
    tr = {(ds.pair_info(i).category, n) for i in sp.train for n in (ds.pair_info(i).src_name, ds.pair_info(i).tgt_name)}
    ho = {(ds.pair_info(i).category, n) for i in sp.holdout for n in (ds.pair_info(i).src_name,
                                                                       ds.pair_info(i).tgt_name)}
    assert tr and ho and not tr & ho
    assert len(sp.train) == len(sp.holdout) == 2 * 6  # 3 images a side per category
    assert make_split(ds, 0.5, seed=3).holdout == sp.holdout
    save_split(sp, ds, tmp_path / "s.json")
    back = load_split(ds, tmp_path / "s.json")
    assert back.train == sp.train and back.holdout == sp.holdout
    loco = make_split(ds, categories=["B"])
    assert all(ds.pair_info(i).category == "B" for i in loco.holdout) and len(loco.train) == 30
    with pytest.raises(ConfigError, match="unknown holdout"):
        make_split(ds, categories=["Z"])


# -- CLI -----------------------------------------------------------------------------------------------------------

def test_cli_help_and_bad_root(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["train-fusion", "--help"])
    assert e.value.code == 0 and "--holdout-images" in capsys.readouterr().out
    rc = main(["train-fusion", "--dataset", "pf-willow", "--root", str(tmp_path / "nowhere"), "--no-progress"])
    assert rc == 1 and "does not exist" in capsys.readouterr().err
    rc = main(["train-fusion", "--dataset", "ap10k", "--root", str(tmp_path), "--no-progress"])
    assert rc == 1 and "no annotations" in capsys.readouterr().err


def test_cli_learn_depth_needs_rgbd_data(tmp_path, capsys):
    root = tmp_path / "willow" / "thing(G)"
    root.mkdir(parents=True)
    kps = np.array([[40, 50], [110, 45], [80, 95]], float)
    for j in range(2):
        Image.fromarray(texture(160, 200, seed=j)).save(root / f"im{j}.png")
        scipy.io.savemat(root / f"im{j}.mat", {"pts_coord": (kps + 1).T})
    rc = main(["train-fusion", "--dataset", "pf-willow", "--root", str(root.parent), "--learn-depth", "--epochs", "1",
               "--out", str(tmp_path / "f.safetensors"), "--no-progress", "--device", "cpu"])
    assert rc == 1 and "--learn-depth needs RGB-D" in capsys.readouterr().err
    rc = main(["train-fusion", "--dataset", "pf-willow", "--root", str(root.parent), "--learn-depth",
               "--depth-cells", "max", "--out", str(tmp_path / "f.safetensors"), "--no-progress"])
    assert rc == 1 and "--depth-cells mean only" in capsys.readouterr().err


def test_cli_trains_on_a_willow_fixture(tmp_path, capsys):
    """End to end with the embedded default model: 2 categories x 3 images, one category held out."""
    root = tmp_path / "willow"
    write_willow(root)
    out = tmp_path / "w" / "fusion.safetensors"
    rc = main(["train-fusion", "--dataset", "pf-willow", "--root", str(root), "--holdout-categories", "other(G)",
               "--epochs", "3", "--out", str(out), "--json", str(tmp_path / "s.json"), "--evaluate",
               "--write-split", str(tmp_path / "split.json"), "--no-progress", "--device", "cpu",
               "--cache-dir", str(tmp_path / "cache")])
    assert rc == 0, capsys.readouterr().err
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["train_pairs"] == 6 and s["holdout_pairs"] == 6 and len(s["loss_curve"]) == 4
    assert abs(sum(s["weights"].values()) - 1) < 1e-5
    assert set(s["holdout_eval"]) == {"uniform_map", "uniform_source", "hand_set", "learned"}
    assert out.is_file() and (out.parent / "fusion_loss.png").is_file()
    assert list((tmp_path / "cache").glob("*.pt"))
    # the written file is what `semcorr eval --fusion-weights` loads
    rc = main(["eval", "--dataset", "pf-willow", "--root", str(root), "--fusion-weights", str(out),
               "--no-progress", "--device", "cpu", "--json", str(tmp_path / "e.json"), "--categories", "other(G)"])
    assert rc == 0
    assert json.loads((tmp_path / "e.json").read_text())["pairs"] == 6


def test_synth_pairs_train(toy_setup):
    """``--dataset synth``: reference -> frame pairs of a rendered scene, keypoints aligned by name."""
    pytest.importorskip("semcorr_ros.lab.synth")
    from semcorr_ros.lab.train.fusion_synth import SynthPairs

    ds = SynthPairs(categories=["mug"], scenes=1, frames=2, size=(160, 120))
    assert len(ds) == 2 and ds.categories == ["mug"]
    s = ds[1]
    assert s.src_image.shape == (120, 160, 3) and s.tgt_image.shape == (120, 160, 3)
    ok = np.isfinite(s.src_kps).all(1)
    assert ok.any() and np.array_equal(ok, np.isfinite(s.tgt_kps).all(1)) and s.kp_names[0] == "rim_front"
    engine, _ = toy_setup
    tensors = build_pair_tensors(ds, range(len(ds)), MapCache(engine.encode_maps_batch, engine.fusion.keys),
                                 grid=16, center=True, progress=False)
    assert len(tensors) == 2
    res = train_fusion(tensors, engine.fusion.keys, epochs=3, progress=False)
    assert len(res.loss_curve) == 4 and res.depth_floor is None
    # the scenes are RGB-D: depth for both views, so the depth-aware parameters can be learned too
    assert s.tgt_depth.shape == (120, 160) and s.src_depth.shape == (120, 160)
    assert all(t.depth is not None and t.depth.extent > 0 for t in tensors)
    res = train_fusion(tensors, engine.fusion.keys, epochs=3, progress=False, learn_depth=True)
    assert 0 < res.depth_floor < 1 and res.depth_spread > 0


# -- the depth-aware module's parameters ---------------------------------------------------------------------------

def test_depth_cell_weights_equal_the_engines_depth_weights():
    from semcorr_ros.engine.depth_aware import DepthModel, depth_weights
    from semcorr_ros.lab.train.fusion_data import depth_tensors
    from semcorr_ros.lab.train.fusion_train import depth_cell_weights

    rng = np.random.default_rng(0)
    depth = rng.uniform(0.8, 2.5, (64, 64)).astype(np.float32)
    depth[:8] = np.nan                                           # a band with no valid depth
    src_depth = np.full((64, 64), 1.0, np.float32)
    src_depth[:, 32:] = 1.3
    d = depth_tensors(depth, src_depth, np.array([[10.0, 10.0], [50.0, 50.0]]), grid=8)
    assert abs(d.extent - 0.3) < 1e-5
    sim = torch.rand(3, 64)
    floor, spread = torch.tensor(0.3), torch.tensor(1.5)
    got = depth_cell_weights(sim, d, floor, spread, sigma_min=0.05)
    z = d.cell_mean[sim.argmax(1)]
    m = float(z.double().median())
    mad = float((z.double() - m).abs().median())
    model = DepthModel(mean=m, sigma=max(1.4826 * mad, 1.5 * 0.3, 0.05))
    expect = depth_weights(torch.from_numpy(depth), model, 8, 0.3).reshape(-1)
    assert torch.allclose(got, expect, atol=1e-5)
    assert (got[:8] == 1).all()                                  # cells without depth keep weight 1


def test_learning_the_depth_floor_suppresses_a_distractor_at_the_wrong_depth():
    # Every keypoint has a same-looking distractor cell (similarity just below the true one's) at 3 m, behind
    # the object at 1 m. The first pass is right, so the depth model sits on the object; lowering the floor
    # suppresses the distractors, and the loss must drive it down.
    from semcorr_ros.lab.train.fusion_data import DepthTensors, PairTensors

    k, n = 4, 16
    sims = torch.full((1, k, n), 0.1)
    pos, dis = torch.tensor([1, 2, 5, 6]), torch.tensor([9, 10, 13, 14])
    sims[0, torch.arange(k), pos] = 0.8
    sims[0, torch.arange(k), dis] = 0.75
    mean = torch.full((n,), 3.0)
    mean[[0, 1, 2, 3, 4, 5, 6, 7]] = 1.0
    d = DepthTensors(mean, torch.zeros(n), torch.ones(n, dtype=torch.bool), extent=0.1)
    p = PairTensors("p", "c", sims.half(), torch.ones(1, k), pos[:, None].repeat(1, 4), torch.full((k, 4), 0.25),
                    depth=d)
    res = train_fusion([p], ["a/0"], epochs=60, lr=0.05, temperature=0.1, learn_temperature=False, progress=False,
                       learn_depth=True, depth_floor=0.5)
    assert res.depth_floor < 0.3 and res.loss_curve[-1] < res.loss_curve[0], res.depth_floor
    with pytest.raises(ConfigError, match="depth"):
        train_fusion([_hand_pair(True)], ["a/0", "b/0"], epochs=1, progress=False, learn_depth=True)
