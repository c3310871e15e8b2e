"""Unit-norm feature maps, fast on the CPU.

``torch.nn.functional.normalize`` along the channels of a ``[B, C, H, W]`` map takes its norm with a strided
reduction that is 3-4x slower on the CPU than summing the squares (torch 2.13, 2 threads: [1, 1480, 32, 32]
10.3 ms vs 2.8 ms); the fused map is normalised on every frame, so the difference is per-frame time.
"""

from __future__ import annotations

import torch

__all__ = ["unit_norm"]


def unit_norm(x: torch.Tensor, dim: int, eps: float = 1e-12) -> torch.Tensor:
    """``x / max(||x||, eps)`` along ``dim`` (as ``F.normalize``); the norm is taken in float32 at least, so
    half-precision maps cannot overflow their squares."""
    acc = x if x.dtype in (torch.float32, torch.float64) else x.float()
    norm = acc.square().sum(dim=dim, keepdim=True).sqrt_().clamp_min_(eps)
    return x / norm.to(x.dtype)
