"""``semcorr train-kbcnet --smoke`` (seconds, no data or weights): output file, plot, determinism, engine use;
plus the training pieces (soft labels, exact fused pairs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open

from semcorr_ros.cli import main
from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import CorrespondenceEngine
from semcorr_ros.engine.kbcnet import FORMAT, load_kbcnet
from semcorr_ros.lab.train import kbcnet_train as kt


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


def test_smoke_run_calibrates_the_heads_confidence(tmp_path, capsys):
    """The written calibration makes the engine's mean confidence over the calibration pairs equal their accuracy
    (a logistic fit with a bias matches the mean label), which the NN-fitted default does not."""
    out = _smoke(tmp_path, "a")
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["score_calibration"]
    head = load_kbcnet(out)
    assert head.score_calibration is not None and np.allclose(head.score_calibration, printed)
    images, pairs = kt.smoke_pairs()
    eng = CorrespondenceEngine(EngineConfig(device="cpu", fusion_weights="none", grid=8, kbc="off",
                                            matcher="kbcnet", kbcnet_weights=str(out)),
                               sources=[kt.smoke_source()])
    assert eng.score_coefficients() == head.score_calibration
    correct, feats, used = [], [], []
    for src, tgt, sxy, txy in pairs:
        res = eng.match_pair(images[src], sxy, images[tgt])
        correct += list(np.linalg.norm(res.xy - txy, axis=1) <= 0.1 * np.ptp(txy, axis=0).max())
        feats.append(res.score_features)
        used.append(res.score)
    f, accuracy = np.concatenate(feats), np.mean(correct)
    default = 1.0 / (1.0 + np.exp(-(f @ np.asarray(EngineConfig().score_calibration))))
    assert abs(np.concatenate(used).mean() - accuracy) < 0.01
    assert abs(default.mean() - accuracy) > 0.05  # the NN-fitted default was off for this head

    plain = tmp_path / "plain.safetensors"
    assert main(["train-kbcnet", "--smoke", "--no-calibrate", "--out", str(plain), "--no-progress"]) == 0
    assert load_kbcnet(plain).score_calibration is None
    assert main(["train-kbcnet", "--smoke", "--calibration-pairs", "0", "--out", str(plain), "--no-progress"]) == 1


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
