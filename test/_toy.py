"""Small deterministic fixtures shared by engine tests (no pretrained weights needed)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from semcorr_ros.engine.features.base import FeatureSource


class ToySource(FeatureSource):
    """Fixed random projection of overlapping 16x16 patches at stride 8: distinctive for textured images."""

    def __init__(self, input_size: int = 128, channels: int = 48, seed: int = 0, name: str = "toy") -> None:
        super().__init__()
        self.name = name
        self.input_size = input_size
        self.layer_names = ("p8",)
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, channels, 16, stride=8, padding=4, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))

    def forward_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = images - images.mean(dim=(2, 3), keepdim=True)
        return [self.conv(x)]


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth random colour texture ``uint8 [h, w, 3]``."""
    rng = np.random.default_rng(seed)
    small = rng.random((h // 4 + 2, w // 4 + 2, 3))
    t = torch.from_numpy(small).permute(2, 0, 1)[None].float()
    big = torch.nn.functional.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0]
    return (big.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
