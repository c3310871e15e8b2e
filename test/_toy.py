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


def shifted_pairs(n: int = 4) -> list:
    """``n`` pairs of a texture and the same texture rolled by a known shift, 6 keypoints each."""
    from semcorr_ros.data.base import PairSample

    out = []
    kps = np.array([[30, 40], [90, 30], [60, 70], [100, 90], [40, 100], [75, 55]], float)
    for i in range(n):
        img = texture(128, 144, seed=i)
        dx, dy = 8 + 4 * i, 6 + 2 * i
        shifted = np.roll(img, (dy, dx), axis=(0, 1))
        out.append(PairSample(f"toy/{i}", "toy", f"a{i}", f"b{i}", img, shifted, kps, kps + [dx, dy]))
    return out


def write_willow(root) -> None:
    """A PF-WILLOW-format folder: 2 categories x 3 images (a texture rolled by known shifts), 5 keypoints."""
    import scipy.io
    from PIL import Image

    kps = np.array([[40, 50], [110, 45], [80, 95], [130, 110], [60, 120]], float)
    for c, cat in enumerate(("thing(G)", "other(G)")):
        (root / cat).mkdir(parents=True)
        img = np.asarray(Image.fromarray(texture(40, 50, seed=c)).resize((200, 160), Image.BILINEAR))
        for j in range(3):
            d = np.array([6 * j, 4 * j])
            Image.fromarray(np.roll(img, (d[1], d[0]), axis=(0, 1))).save(root / cat / f"im{j}.png")
            scipy.io.savemat(root / cat / f"im{j}.mat", {"pts_coord": (kps + d + 1).T})
