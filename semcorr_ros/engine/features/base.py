"""The one small interface every feature source implements.

A *feature source* wraps a frozen pretrained backbone. It takes a batch of RGB images in [0, 1] at any size,
resizes them to its own (square) model input, and returns one dense feature map per selected layer, each
L2-normalised along channels. Feature maps are indexed in *normalised image coordinates*: cell centres of an
``h x w`` map sit at ``((j + 0.5) / w, (i + 0.5) / h)`` of the input image, whatever its aspect ratio, so maps of
different sources can be resampled onto one common grid by the fusion module.

Sources never choose a device: they run where their parameters are, and the caller moves them once
(``source.to(device)``) at the edge.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from semcorr_ros.errors import InputError


class FeatureSource(nn.Module, ABC):
    """A frozen backbone producing multi-layer, L2-normalised dense feature maps.

    Attributes:
        name: registry name of the source (e.g. ``"effnet-lite2"``).
        input_size: side in pixels of the square model input the images are resized to.
        layer_names: one name per returned map, e.g. ``("block14", "block19")``; the fusion module keeps one
            weight per ``(source, layer)``.
    """

    name: str = "base"
    input_size: int = 224
    layer_names: tuple[str, ...] = ()
    #: Replacement of :meth:`forward_features` set by the runtime set-up (an OpenVINO compiled model,
    #: :mod:`.runtime`); None: the PyTorch module runs.
    runner: Callable[[torch.Tensor], list[torch.Tensor]] | None = None

    @abstractmethod
    def forward_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Model-specific part.

        Args:
            images: ``[B, 3, S, S]`` float RGB in [0, 1], already resized to ``input_size`` (``S``), on the
                device of the parameters.

        Returns:
            One ``[B, C_l, h, w]`` map per entry of :attr:`layer_names` (all the same ``h, w``), not yet
            normalised.
        """

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Resize, run the backbone, L2-normalise.

        Args:
            images: ``[B, 3, H, W]`` float RGB in [0, 1] (any ``H, W``).

        Returns:
            One ``[B, C_l, h, w]`` map per layer, unit L2 norm along dim 1.
        """
        check_images(images)
        x = F.interpolate(images, size=(self.input_size, self.input_size), mode="bilinear",
                          align_corners=False, antialias=True)
        maps = (self.runner or self.forward_features)(x)
        return [F.normalize(m.float(), dim=1) for m in maps]


def check_images(images: torch.Tensor) -> None:
    """Raise :class:`InputError` unless ``images`` is a float ``[B, 3, H, W]`` batch with ``B >= 1``."""
    if not isinstance(images, torch.Tensor):
        raise InputError(f"images must be a torch.Tensor [B, 3, H, W], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] < 1:
        raise InputError(f"images must have shape [B, 3, H, W] with B >= 1, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise InputError(f"images must be float in [0, 1], got dtype {images.dtype}")
    if images.shape[2] < 8 or images.shape[3] < 8:
        raise InputError(f"images are too small: {tuple(images.shape[2:])} (need at least 8x8 pixels)")
