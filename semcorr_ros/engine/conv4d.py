"""Centre-pivot 4D convolutions on correlation volumes ``[B, C, Hs, Ws, Ht, Wt]`` (the KBCNet decoder,
:mod:`semcorr_ros.engine.kbcnet`)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CenterPivotConv4d", "Decoder4d", "upsample4d"]


class CenterPivotConv4d(nn.Module):
    """Centre-pivot 4D convolution of a correlation tensor ``x [B, C, Hs, Ws, Ht, Wt]`` (stride 1, zero padding).

    A dense 4D convolution with kernel ``K[o, c, a, b, p, q]`` (``a, b, p, q`` in ``-r..r``, ``k = 2r + 1``) costs
    ``k^4`` multiply-adds per cell and channel pair. The centre-pivot kernel keeps only its two 2D slices through
    the centre::

        K[o, c, a, b, p, q] = S[o, c, a, b] * [p = q = 0]  +  T[o, c, p, q] * [a = b = 0]

    so that::

        y[o, i, j, k, l] = sum_c sum_{a,b} S[o, c, a, b] x[c, i + a, j + b, k, l]      (conv over the source dims
                         + sum_c sum_{p,q} T[o, c, p, q] x[c, i, j, k + p, l + q]      at every target cell, and
                         + bias[o]                                                     over the target dims at
                                                                                       every source cell)

    at ``2 k^2`` per cell. Each term is an ordinary ``conv2d``: the target (resp. source) dims are folded into the
    batch. The centre tap ``K[.., 0, 0, 0, 0] = S[.., 0, 0] + T[.., 0, 0]``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        pad = kernel_size // 2
        self.src = nn.Conv2d(in_channels, out_channels, kernel_size, padding=pad, bias=True)
        self.tgt = nn.Conv2d(in_channels, out_channels, kernel_size, padding=pad, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, hs, ws, ht, wt = x.shape
        # conv over (Hs, Ws) for every target cell: [B*Ht*Wt, C, Hs, Ws]
        xs = x.permute(0, 4, 5, 1, 2, 3).reshape(b * ht * wt, c, hs, ws)
        ys = self.src(xs)
        o = ys.shape[1]
        ys = ys.reshape(b, ht, wt, o, hs, ws).permute(0, 3, 4, 5, 1, 2)
        # conv over (Ht, Wt) for every source cell: [B*Hs*Ws, C, Ht, Wt]
        xt = x.permute(0, 2, 3, 1, 4, 5).reshape(b * hs * ws, c, ht, wt)
        yt = self.tgt(xt).reshape(b, hs, ws, o, ht, wt).permute(0, 3, 1, 2, 4, 5)
        return ys + yt


class Decoder4d(nn.Module):
    """Refines a correlation ``[B, Hs, Ws, Ht, Wt]``: ``corr + CP(ReLU(GN(CP(... CP(corr)))))``.

    ``layers`` centre-pivot convolutions: ``1 -> hidden``, ``hidden -> hidden`` ..., ``hidden -> 1``; GroupNorm
    (over channels and all four dims) + ReLU between them; the last one starts near zero (``init_scale``) so the
    untrained decoder is close to the identity.
    """

    def __init__(self, hidden: int = 8, layers: int = 3, kernel_size: int = 3, groups: int = 2,
                 init_scale: float = 1e-3) -> None:
        super().__init__()
        if layers < 2:
            raise ValueError(f"the decoder needs at least 2 layers, got {layers}")
        chans = [1] + [hidden] * (layers - 1) + [1]
        self.convs = nn.ModuleList(CenterPivotConv4d(a, b, kernel_size) for a, b in zip(chans[:-1], chans[1:]))
        self.norms = nn.ModuleList(nn.GroupNorm(groups, hidden) for _ in range(layers - 1))
        last = self.convs[-1]
        with torch.no_grad():
            for conv in (last.src, last.tgt):
                conv.weight.mul_(init_scale)
            last.src.bias.zero_()

    def forward(self, corr: torch.Tensor) -> torch.Tensor:
        return corr + self.delta(corr)

    def delta(self, corr: torch.Tensor) -> torch.Tensor:
        """The learned correction alone (``forward = corr + delta``)."""
        b = corr.shape[0]
        shape4 = corr.shape[1:]
        x = corr[:, None]
        for conv, norm in zip(self.convs[:-1], self.norms):
            x = conv(x)
            x = F.relu(norm(x.reshape(b, x.shape[1], -1)).reshape(b, x.shape[1], *shape4))
        return self.convs[-1](x)[:, 0]


def upsample4d(x: torch.Tensor, size: tuple[int, int, int, int]) -> torch.Tensor:
    """Bilinear resampling ``[B, hs, ws, ht, wt] -> [B, *size]`` (target dims, then source dims)."""
    b, hs, ws, ht, wt = x.shape
    Hs, Ws, Ht, Wt = size
    y = F.interpolate(x.reshape(b * hs * ws, 1, ht, wt), size=(Ht, Wt), mode="bilinear", align_corners=False)
    y = y.reshape(b, hs, ws, Ht * Wt).permute(0, 3, 1, 2).reshape(b * Ht * Wt, 1, hs, ws)
    y = F.interpolate(y, size=(Hs, Ws), mode="bilinear", align_corners=False)
    return y.reshape(b, Ht, Wt, Hs, Ws).permute(0, 3, 4, 1, 2)
