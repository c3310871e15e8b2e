"""``semcorr train-kbcnet --smoke`` (seconds, no data or weights): output file, plot, determinism, engine use;
plus the training pieces (soft labels, exact fused pairs)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors import safe_open

from semcorr_ros.cli import main
from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import CorrespondenceEngine
from semcorr_ros.engine.kbcnet import FORMAT, load_kbcnet
from semcorr_ros.train import kbcnet_train as kt


def _smoke(tmp_path, name, seed=0):
    out = tmp_path / f"{name}.safetensors"
    assert main(["train-kbcnet", "--smoke", "--seed", str(seed), "--out", str(out), "--no-progress"]) == 0
    return out


def test_smoke_run_writes_a_loadable_head_and_a_plot(tmp_path, capsys):
    out = _smoke(tmp_path, "a")
    assert out.is_file() and out.with_suffix(".png").stat().st_size > 1000
    with safe_open(str(out), framework="pt") as f:
        meta = f.metadata()
    assert meta["format"] == FORMAT and meta["train_data"] == "smoke"
    head = load_kbcnet(out, keys=["smoke/p4"])
    assert head.keys == ["smoke/p4"]
    assert "epoch losses" in capsys.readouterr().out


def test_smoke_run_is_deterministic_for_a_seed(tmp_path):
    a, b, c = _smoke(tmp_path, "a"), _smoke(tmp_path, "b"), _smoke(tmp_path, "c", seed=1)
    ha, hb, hc = (load_kbcnet(p).state_dict() for p in (a, b, c))
    assert all(torch.equal(ha[k], hb[k]) for k in ha)
    assert not all(torch.equal(ha[k], hc[k]) for k in ha)


def test_smoke_head_runs_in_the_engine(tmp_path):
    out = _smoke(tmp_path, "a")
    eng = CorrespondenceEngine(EngineConfig(device="cpu", fusion_weights="none", grid=8, kbc="off",
                                            matcher="kbcnet", kbcnet_weights=str(out)),
                               sources=[kt.smoke_source()])
    images, pairs = kt.smoke_pairs(n_images=1)
    src, tgt, sxy, _ = pairs[0]
    res = eng.match_pair(images[src], sxy, images[tgt])
    assert res.xy.shape == (len(sxy), 2) and np.isfinite(res.xy).all()


def test_training_needs_a_dataset_unless_smoke(capsys):
    assert main(["train-kbcnet", "--no-progress"]) == 1
    assert "--dataset and --root" in capsys.readouterr().err


def test_soft_labels_are_bilinear_and_sum_to_one():
    uv = torch.tensor([[0.5 / 4, 0.5 / 4], [1.0 / 4, 0.5 / 4], [0.99, 0.99]])
    lab = kt.soft_labels(uv, 4, 4)
    torch.testing.assert_close(lab.sum(1), torch.ones(3))
    assert lab[0, 0] == 1.0                                    # a cell centre
    assert lab[1, 0] == pytest.approx(0.5) and lab[1, 1] == pytest.approx(0.5)   # between two cells
    assert lab[2, 15] == 1.0                                   # clamped into the last cell


def test_cached_pairs_are_fused_exactly_like_the_engine():
    eng = CorrespondenceEngine(EngineConfig(device="cpu", fusion_weights="none", grid=8, kbc="off"),
                               sources=[kt.smoke_source()])
    images, pairs = kt.smoke_pairs(n_images=1)
    src, tgt, _, _ = pairs[0]
    cache = {k: kt.cache_image(eng.encode_maps(images[k]), 8, (64, 64)) for k in (src, tgt)}
    fs, ft = kt.fused_pair(cache[src], cache[tgt], eng.fusion.weights, eng.fusion.center)
    means = eng.fusion.map_means(eng.encode_maps(images[src]))
    torch.testing.assert_close(fs, eng.encode(images[src], means))
    torch.testing.assert_close(ft, eng.encode(images[tgt], means))
