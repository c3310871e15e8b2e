"""The optional Stable Diffusion source ``sd``: clear errors without diffusers / CUDA / a model folder, and (when
diffusers is installed) features of a tiny random diffusers model fused by the engine.

The first tests need no diffusers (CI, which lacks the optional extra, runs them); the tiny-model tests are skipped
there by ``pytest.importorskip("diffusers")``.
"""

import json
import sys

import numpy as np
import pytest
import torch

from semcorr_ros.cli import main
from semcorr_ros.config import EngineConfig
from semcorr_ros.engine.features import SOURCE_NAMES, build_source
from semcorr_ros.engine.features.sd import StableDiffusionSource
from semcorr_ros.errors import ConfigError, WeightsError

from _toy import ToySource, texture

TINY_SIZE = 128  # tiny model: VAE factor 8 x 3 UNet downsamplings = stride 64, "native" 16 x 8 = 128 px


def _fake_folder(root):
    """A folder that looks like a diffusers model (configs only, no weights)."""
    for sub in ("unet", "vae"):
        (root / sub).mkdir(parents=True)
        (root / sub / "config.json").write_text(json.dumps({"_class_name": sub}))
    return root


@pytest.fixture
def cuda_present(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


def test_registered():
    assert "sd" in SOURCE_NAMES


def test_missing_diffusers_gives_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now raises ImportError
    with pytest.raises(ConfigError, match=r"needs the optional dependency diffusers: pip install diffusers==0\.42\.1"):
        StableDiffusionSource(_fake_folder(tmp_path / "m"), allow_cpu=True)


def test_missing_diffusers_cli_exits_1(tmp_path, monkeypatch, capsys, cuda_present):
    monkeypatch.setitem(sys.modules, "diffusers", None)
    folder = _fake_folder(tmp_path / "m")
    assert main(["bench", "--backbone", "sd", "--weights", f"sd={folder}", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "semcorr bench: error: the sd source needs the optional dependency diffusers" in err
    assert "Traceback" not in err


def test_bad_model_folder(tmp_path):
    with pytest.raises(WeightsError, match="needs a local diffusers model folder"):
        StableDiffusionSource(None, allow_cpu=True)
    with pytest.raises(WeightsError, match="model folder not found"):
        StableDiffusionSource(tmp_path / "nope", allow_cpu=True)
    (tmp_path / "model.safetensors").write_bytes(b"x")
    with pytest.raises(WeightsError, match="is a file; expected a diffusers model folder"):
        StableDiffusionSource(tmp_path / "model.safetensors", allow_cpu=True)
    (tmp_path / "m" / "unet").mkdir(parents=True)
    (tmp_path / "m" / "unet" / "config.json").write_text("{}")
    with pytest.raises(WeightsError, match=r"vae/config\.json is missing"):
        StableDiffusionSource(tmp_path / "m", allow_cpu=True)


def test_bad_layers_and_size_before_loading(tmp_path):
    folder = _fake_folder(tmp_path / "m")  # configs without block lists: SD 1.x defaults (4 blocks, stride 64)
    with pytest.raises(ConfigError, match="valid layers are integers 0..3"):
        StableDiffusionSource(folder, layers=(4,), allow_cpu=True)
    with pytest.raises(ConfigError, match="multiples of 64"):
        StableDiffusionSource(folder, input_size=500, allow_cpu=True)


def test_cpu_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="the sd source needs a CUDA device"):
        build_source("sd", weights=_fake_folder(tmp_path / "m"))
    assert main(["bench", "--backbone", "sd", "--weights", f"sd={tmp_path / 'm'}", "--device", "cpu",
                 "--no-progress"]) == 1


# ---------------------------------------------------------------- with diffusers (optional extra)
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A tiny randomly initialised SD-shaped model (4 UNet blocks, 4 VAE blocks) saved as a diffusers folder."""
    diffusers = pytest.importorskip("diffusers")
    root = tmp_path_factory.mktemp("tiny_sd")
    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(sample_size=16, block_out_channels=(16, 16, 32, 32), layers_per_block=1,
                                          norm_num_groups=8, cross_attention_dim=16, attention_head_dim=4)
    vae = diffusers.AutoencoderKL(block_out_channels=(8,) * 4, norm_num_groups=8, latent_channels=4,
                                  down_block_types=("DownEncoderBlock2D",) * 4,
                                  up_block_types=("UpDecoderBlock2D",) * 4)
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    return root


def test_tiny_model_features(tiny_model):
    src = StableDiffusionSource(tiny_model, allow_cpu=True)
    assert src.input_size == TINY_SIZE and src.layer_names == ("up1", "up2") and src.timestep == 261
    assert src.vae.decoder is None
    assert torch.equal(src.prompt, torch.zeros(1, 77, 16))
    x = torch.rand(2, 3, 90, 150, generator=torch.Generator().manual_seed(1))
    maps = src(x)
    # up_blocks[1]: 32 channels at S/16; up_blocks[2]: 16 channels at S/8, resized to S/16
    assert [tuple(m.shape) for m in maps] == [(2, 32, 8, 8), (2, 16, 8, 8)]
    for m in maps:
        assert torch.isfinite(m).all()
        torch.testing.assert_close(m.norm(dim=1), torch.ones(2, 8, 8), atol=1e-4, rtol=0)
    # deterministic (fixed noise), independent of the batch, and image-dependent
    again = src(x[1:])
    for m, m1 in zip(maps, again):
        torch.testing.assert_close(m[1:], m1, atol=1e-5, rtol=0)
        assert (m[0] - m[1]).abs().max() > 1e-3
    # another timestep gives other features; one layer only; other input size
    other = StableDiffusionSource(tiny_model, layers=(3,), input_size=192, timestep=500, allow_cpu=True)
    (m3,) = other(x)
    assert other.layer_names == ("up3",) and tuple(m3.shape) == (2, 16, 24, 24)
    with pytest.raises(ConfigError, match="timestep"):
        StableDiffusionSource(tiny_model, timestep=1000, allow_cpu=True)


def test_tiny_model_refuses_cpu_at_run_time(tiny_model, cuda_present):
    src = build_source("sd", weights=tiny_model)  # "CUDA present": builds, but runs only on a CUDA device
    with pytest.raises(ConfigError, match="needs a CUDA device; it was placed on 'cpu'"):
        src(torch.rand(1, 3, 64, 64))


def test_tiny_model_missing_weights_file(tiny_model, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken)
    for f in (broken / "unet").glob("*.safetensors"):
        f.unlink()
    with pytest.raises(WeightsError, match="cannot load unet/"):
        StableDiffusionSource(broken, allow_cpu=True)


def test_engine_fuses_sd_with_another_source(tiny_model):
    from semcorr_ros.engine import CorrespondenceEngine

    sd = StableDiffusionSource(tiny_model, allow_cpu=True)
    cfg = EngineConfig(sources=("sd", "toy"), device="cpu", fusion_weights="none", kbc="off", grid=8)
    eng = CorrespondenceEngine(cfg, sources=[sd, ToySource()])
    assert eng.fusion.keys == ["sd/up1", "sd/up2", "toy/p8"]
    img = texture(96, 128, seed=2)
    kps = np.array([[30.0, 30.0], [90.0, 60.0]])
    eng.set_reference(img, kps, names=["a", "b"])
    res = eng.match(np.roll(img, 8, axis=1))
    assert res.xy.shape == (2, 2) and np.isfinite(res.xy).all()
    assert ((res.score >= 0) & (res.score <= 1)).all()


def test_tiny_model_with_text_encoder(tiny_model, tmp_path):
    """With text_encoder/ + tokenizer/ the prompt is the text encoder's embedding of "" (not zeros)."""
    import shutil

    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    root = tmp_path / "with_text"
    shutil.copytree(tiny_model, root)
    (tmp_path / "vocab.json").write_text(json.dumps({"<|startoftext|>": 0, "<|endoftext|>": 1, "a</w>": 2, "a": 3}))
    (tmp_path / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"), model_max_length=77)
    tok.save_pretrained(root / "tokenizer")
    torch.manual_seed(0)
    enc = CLIPTextModel(CLIPTextConfig(vocab_size=4, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, max_position_embeddings=77, bos_token_id=0,
                                       eos_token_id=1, pad_token_id=1)).eval()
    enc.save_pretrained(root / "text_encoder")
    src = StableDiffusionSource(root, allow_cpu=True)
    ids = torch.tensor([[0] + [1] * 76])  # "" -> <start>, <end>, then <end> padding
    with torch.no_grad():
        expected = enc(ids)[0]
    assert tuple(src.prompt.shape) == (1, 77, 16)
    torch.testing.assert_close(src.prompt, expected)
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    zero_prompt = StableDiffusionSource(tiny_model, allow_cpu=True)
    assert (src(x)[0] - zero_prompt(x)[0]).abs().max() > 1e-4
