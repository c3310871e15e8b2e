"""KBCNet head (seed paper 2): cross-scale feature alignment (CSFA) + centre-pivot 4D-convolution decoder.

The head sits on top of the engine's fused feature map ``F`` (``[B, C, G, G]``, unit norm along C, the same map
the nearest-neighbour matcher uses) and replaces the sparse cosine matching by a dense, learned one:

1. **CSFA** (:class:`CrossScaleAlignment`): a pyramid of the map at three scales, ``F`` itself (side ``G``) and
   ``F`` average-pooled by 2 and by 4 (sides ``G/2``, ``G/4``). All three are projected to a small dimension
   ``d``. The query scale (side ``G``, the lattice the correlation is built on) attends with a few heads to each
   of the two other scales (cross-attention, one per scale), and the two other scales are also resampled
   bilinearly to side ``G``. The four aligned maps plus the projected query are concatenated and mapped back
   to ``C`` channels by a linear layer; the result is added to ``F`` (residual) and re-normalised:

       D = normalize(F + W_out [P F, A_2, A_4, up(P F_2), up(P F_4)]),   A_s = MHA(q = P F, kv = P F_s).

   ``W_out`` starts near zero, so an untrained head's descriptors equal the fused map (the NN matcher's).
   In the paper the query is the backbone's middle level; here the fused map already is a bilinear resampling
   of backbone maps at stride 14-32, so a finer level would carry no new information: the query is the
   engine's lattice and the two context scales are coarser.
2. **4D correlation**: ``corr[b, i, j, k, l] = <D_s[b, :, i, j], D_t[b, :, k, l]>`` (cosine), shape
   ``[B, Hs, Ws, Ht, Wt]``.
3. **Centre-pivot 4D decoder** (:class:`CenterPivotConv4d`, :class:`Decoder4d`): a few centre-pivot 4D
   convolutions with GroupNorm + ReLU, the last one to one channel, added to the raw correlation (residual).
   With ``stride`` ``s > 1`` (default 2) the decoder runs on the correlation pooled by ``s`` in all four dims
   (``s^4`` times fewer cells: the correlation of the average-pooled descriptors) and its correction is resampled
   bilinearly back to full resolution: ``refined = corr + up(decoder_delta(pool(corr)))``.
4. **Readout** (:func:`readout`, :func:`kbcnet_match`): for each source keypoint, the refined correlation is
   sampled bilinearly over the source dims, giving a target map ``[Ht, Wt]``; a softmax with the learned
   temperature and a soft-argmax in a window around its argmax give the target position; ``peak`` is the refined
   correlation at the argmax and a cycle check reads the refined correlation back over the target dims.

File format (``semcorr-kbcnet-v1``): a safetensors file with the head's ``state_dict`` and metadata
``{"format": "semcorr-kbcnet-v1", "keys": "<json list of the fusion's 'source/layer' maps>",
"config": "<json of the constructor arguments>"}``, optionally ``"score_calibration": "<json list of 5
coefficients>"`` (the head's own confidence calibration, :attr:`KBCNetHead.score_calibration`; files written
before it existed have none). :func:`load_kbcnet` checks the format tag, that the maps the head was trained on
are the engine's, that the tensor names and shapes match exactly and that a calibration is 5 finite numbers.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from semcorr_ros.engine.conv4d import CenterPivotConv4d, Decoder4d, upsample4d
from semcorr_ros.engine.matching import SparseMatches, prior_soft_argmax, soft_argmax
from semcorr_ros.engine.safetensors_io import read_safetensors, write_safetensors
from semcorr_ros.errors import WeightsError

FORMAT = "semcorr-kbcnet-v1"
__all__ = ["FORMAT", "CenterPivotConv4d", "Decoder4d", "upsample4d", "CrossScaleAlignment", "KBCNetHead",
           "correlation4d", "readout", "transpose_corr", "kbcnet_match", "save_kbcnet", "load_kbcnet"]


# ------------------------------------------------------------------------------------------------ CSFA


class CrossScaleAlignment(nn.Module):
    """CSFA on a fused map ``[B, C, G, G]`` -> aligned descriptors ``[B, C, G, G]`` (unit norm; see the module doc).

    Args:
        in_channels: ``C``.
        dim: projection dimension ``d``.
        heads: attention heads (``d`` must be divisible by it).
        scales: pooling factors of the two context scales.
        init_scale: scale of the output layer's initial weights (near zero: the untrained output is ``F``).
    """

    def __init__(self, in_channels: int, dim: int = 32, heads: int = 2, scales: Sequence[int] = (2, 4),
                 init_scale: float = 1e-3) -> None:
        super().__init__()
        self.scales = tuple(int(s) for s in scales)
        self.proj = nn.Linear(in_channels, dim)
        self.attn = nn.ModuleList(nn.MultiheadAttention(dim, heads, batch_first=True) for _ in self.scales)
        self.out = nn.Linear(dim * (1 + 2 * len(self.scales)), in_channels)
        with torch.no_grad():
            self.out.weight.mul_(init_scale)
            self.out.bias.zero_()

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        b, c, h, w = fmap.shape
        q = self.proj(fmap.flatten(2).transpose(1, 2))                    # [B, HW, d]
        parts = [q]
        resampled = []
        for s, attn in zip(self.scales, self.attn):
            pooled = F.adaptive_avg_pool2d(fmap, (max(1, h // s), max(1, w // s)))
            kv = self.proj(pooled.flatten(2).transpose(1, 2))              # [B, hw_s, d]
            parts.append(attn(q, kv, kv, need_weights=False)[0])
            grid = kv.transpose(1, 2).reshape(b, -1, pooled.shape[2], pooled.shape[3])
            up = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
            resampled.append(up.flatten(2).transpose(1, 2))
        delta = self.out(torch.cat(parts + resampled, dim=2))            # [B, HW, C]
        out = fmap + delta.transpose(1, 2).reshape(b, c, h, w)
        return F.normalize(out, dim=1)


# ------------------------------------------------------------------------------------------------ head


def correlation4d(src: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
    """Cosine correlation ``[B, Hs, Ws, Ht, Wt]`` of unit-norm maps ``[B, C, Hs, Ws]`` and ``[B, C, Ht, Wt]``."""
    b, c, hs, ws = src.shape
    ht, wt = tgt.shape[-2:]
    corr = torch.bmm(src.reshape(b, c, hs * ws).transpose(1, 2), tgt.reshape(b, c, ht * wt))
    return corr.reshape(b, hs, ws, ht, wt)


class KBCNetHead(nn.Module):
    """CSFA + 4D correlation + centre-pivot decoder, with a learned softmax temperature for the readout.

    Args:
        in_channels: channels ``C`` of the fused map.
        keys: the fusion's ``"source/layer"`` map names the head is trained on (checked on load).
        dim, heads: CSFA projection dimension and attention heads.
        hidden, layers, kernel_size: decoder channels, number of centre-pivot convolutions, kernel side.
        temperature: initial softmax temperature of the readout (on correlation values).
    """

    def __init__(self, in_channels: int, keys: Sequence[str] = (), dim: int = 32, heads: int = 2, hidden: int = 8,
                 layers: int = 3, kernel_size: int = 3, stride: int = 2, temperature: float = 0.02) -> None:
        super().__init__()
        self.keys = list(keys)
        #: Coefficients of :func:`semcorr_ros.engine.confidence.calibrated_score` fitted to this head's scores
        #: (``semcorr train-kbcnet`` sets them), or ``None``.
        self.score_calibration: tuple[float, ...] | None = None
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.config: dict[str, Any] = {"in_channels": int(in_channels), "dim": int(dim), "heads": int(heads),
                                       "hidden": int(hidden), "layers": int(layers),
                                       "kernel_size": int(kernel_size), "stride": int(stride)}
        self.csfa = CrossScaleAlignment(in_channels, dim, heads)
        self.decoder = Decoder4d(hidden, layers, kernel_size)
        self.log_temperature = nn.Parameter(torch.tensor(math.log(temperature)))

    @property
    def in_channels(self) -> int:
        return self.config["in_channels"]

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def _check(self, *maps: torch.Tensor) -> None:
        for m in maps:
            if m.shape[1] != self.in_channels:
                raise WeightsError(f"the KBCNet head expects {self.in_channels}-channel fused maps, got "
                                   f"{m.shape[1]} (trained for maps {self.keys})")

    def align(self, fmap: torch.Tensor) -> torch.Tensor:
        """CSFA descriptors ``[B, C, H, W]`` (unit norm) of fused maps ``[B, C, H, W]``."""
        self._check(fmap)
        return self.csfa(fmap)

    def correction(self, ds: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
        """The decoder's correction ``[B, Hs, Ws, Ht, Wt]`` of the correlation of aligned descriptors.

        With ``stride`` ``s > 1`` the decoder runs on the correlation pooled by ``s`` in all four dims (= the
        correlation of the average-pooled descriptors, by bilinearity) and its output is resampled back.
        """
        stride = self.config["stride"]
        if stride == 1:
            return self.decoder.delta(correlation4d(ds, dt))
        hs, ws, ht, wt = (*ds.shape[-2:], *dt.shape[-2:])
        pool_s = F.adaptive_avg_pool2d(ds, (max(1, hs // stride), max(1, ws // stride)))
        pool_t = F.adaptive_avg_pool2d(dt, (max(1, ht // stride), max(1, wt // stride)))
        return upsample4d(self.decoder.delta(correlation4d(pool_s, pool_t)), (hs, ws, ht, wt))

    def forward(self, src_map: torch.Tensor, tgt_map: torch.Tensor) -> torch.Tensor:
        """Refined correlation ``[B, Hs, Ws, Ht, Wt]`` of fused maps ``[B, C, Hs, Ws]``, ``[B, C, Ht, Wt]``:
        ``corr(D_s, D_t) + correction(D_s, D_t)``."""
        self._check(src_map, tgt_map)
        if src_map.shape == tgt_map.shape:
            ds, dt = self.csfa(torch.cat([src_map, tgt_map])).chunk(2)
        else:
            ds, dt = self.csfa(src_map), self.csfa(tgt_map)
        return correlation4d(ds, dt) + self.correction(ds, dt)


def readout(corr: torch.Tensor, src_uv: torch.Tensor) -> torch.Tensor:
    """Target maps ``[B, K, Ht, Wt]``: ``corr [B, Hs, Ws, Ht, Wt]`` sampled bilinearly over the source dims at the
    normalised source keypoints ``src_uv [B, K, 2]`` (border padding, ``align_corners=False``)."""
    b, hs, ws, ht, wt = corr.shape
    k = src_uv.shape[1]
    vol = corr.reshape(b, hs, ws, ht * wt).permute(0, 3, 1, 2)          # [B, Ht*Wt, Hs, Ws]
    grid = (src_uv * 2.0 - 1.0).to(corr.dtype)[:, :, None, :]           # [B, K, 1, 2]
    out = F.grid_sample(vol, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[..., 0].permute(0, 2, 1).reshape(b, k, ht, wt)


def _sample(fmap: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear samples ``[B, K, C]`` of ``fmap [B, C, H, W]`` at ``uv [B, K, 2]`` (as :func:`readout`)."""
    grid = (uv * 2.0 - 1.0).to(fmap.dtype)[:, :, None, :]
    out = F.grid_sample(fmap, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[..., 0].transpose(1, 2)


def transpose_corr(corr: torch.Tensor) -> torch.Tensor:
    """``[B, Hs, Ws, Ht, Wt]`` -> ``[B, Ht, Wt, Hs, Ws]``."""
    return corr.permute(0, 3, 4, 1, 2)


def kbcnet_match(head: KBCNetHead, src_map: torch.Tensor, tgt_map: torch.Tensor, src_uv: torch.Tensor, *,
                 radius: int = 4, cycle_sigma: float = 0.05, tgt_weights: torch.Tensor | None = None,
                 prior: torch.Tensor | None = None, prior_weight: float = 0.0,
                 prior_sigma: float = 0.1) -> SparseMatches:
    """KBCNet counterpart of :func:`semcorr_ros.engine.matching.match_keypoints` (same arguments and result).

    Args:
        head: the trained head.
        src_map, tgt_map: fused maps ``[C, Gs, Gs]``, ``[C, Gt, Gt]``.
        src_uv: ``[K, 2]`` normalised source keypoints.
        radius: soft-argmax window half-size in cells (0: argmax); the temperature is the head's.
        cycle_sigma: scale of the cycle error in the score.
        tgt_weights: optional ``[Gt, Gt]`` per-cell weights multiplying the target maps (depth-aware).
        prior, prior_weight, prior_sigma: consensus prior bias added before the soft-argmax, as the NN matcher.
    """
    if src_uv.shape[0] == 0:
        z = src_uv.new_zeros(0)
        return SparseMatches(uv=src_uv.new_zeros(0, 2), peak=z, cycle_error=z, score=z)
    with torch.inference_mode():
        # Sparse evaluation of readout(head(src, tgt)): the raw correlation is linear in the source descriptor, so
        # its bilinear readout at a keypoint is the correlation of the bilinearly sampled (unnormalised)
        # descriptor; only the decoder's correction is dense (on the pooled lattice). The reference's aligned
        # descriptors are kept for the next frame, the live frame's (and the correction) for a second pass on it.
        cached = getattr(head, "_src_cache", None)
        if cached is not None and cached[0] is src_map:
            ds = cached[1]
        else:
            ds = head.align(src_map[None].float())
            head._src_cache = (src_map, ds)
        cached = getattr(head, "_tgt_cache", None)
        if cached is not None and cached[0] is tgt_map and cached[1] is ds:  # the depth-aware second pass
            dt, delta = cached[2], cached[3]
        else:
            dt = head.align(tgt_map[None].float())
            delta = head.correction(ds, dt)                             # [1, Hs, Ws, Ht, Wt]
            head._tgt_cache = (tgt_map, ds, dt, delta)
        uv_f = src_uv[None].float()
        sim = (_sample(ds, uv_f)[0] @ dt[0].flatten(1)).reshape(-1, *dt.shape[-2:]) + readout(delta, uv_f)[0]
        if tgt_weights is not None:
            sim = sim * tgt_weights[None].to(sim.dtype)
        temp = float(head.temperature)
        uv, peak = prior_soft_argmax(sim, prior, prior_weight, prior_sigma, radius, temp)
        back = ((_sample(dt, uv[None])[0] @ ds[0].flatten(1)).reshape(-1, *ds.shape[-2:])
                + readout(transpose_corr(delta), uv[None])[0])          # [K, Hs, Ws]
        back_uv, _ = soft_argmax(back, 0, temp)
        err = (back_uv - src_uv.float()).norm(dim=1)
        score = peak.clamp(0.0, 1.0) * torch.exp(-(err ** 2) / (2.0 * cycle_sigma ** 2))
    return SparseMatches(uv=uv, peak=peak, cycle_error=err, score=score)


# ------------------------------------------------------------------------------------------------ files


def save_kbcnet(head: KBCNetHead, path: str | os.PathLike, extra: dict[str, str] | None = None) -> None:
    """Write the head in the ``semcorr-kbcnet-v1`` format (atomically)."""
    tensors = {k: v.detach().cpu().float().contiguous() for k, v in head.state_dict().items()}
    meta = {"format": FORMAT, "keys": json.dumps(head.keys), "config": json.dumps(head.config)}
    if head.score_calibration is not None:
        meta["score_calibration"] = json.dumps([float(c) for c in head.score_calibration])
    meta.update(extra or {})
    write_safetensors(path, tensors, meta, make_parents=True)


def load_kbcnet(path: str | os.PathLike, keys: Sequence[str] | None = None) -> KBCNetHead:
    """Build a head from a ``semcorr-kbcnet-v1`` file; strict about format, maps and tensors.

    Args:
        path: the file.
        keys: the engine's fusion map names; when given they must equal those the head was trained on.

    Raises:
        WeightsError: missing, unreadable or corrupt file, another format, other maps, or mismatched tensors.
    """
    path = Path(path)
    meta, tensors = read_safetensors(path, "KBCNet weights", " (train one with `semcorr train-kbcnet` or pass an "
                                     "existing file with --kbcnet-weights)")
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{path} is not a {FORMAT} file (format={meta.get('format')!r}); train one with "
                           f"`semcorr train-kbcnet`")
    try:
        cfg = json.loads(meta["config"])
        trained_keys = json.loads(meta.get("keys", "[]"))
        head = KBCNetHead(keys=trained_keys, **cfg)
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{path}: bad KBCNet configuration metadata ({exc})") from exc
    if keys is not None and list(keys) != trained_keys:
        raise WeightsError(f"KBCNet weights {path} were trained for maps {trained_keys}, but the engine has "
                           f"{list(keys)}; train a head for this configuration with `semcorr train-kbcnet`")
    expected = head.state_dict()
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise WeightsError(f"KBCNet weights {path} do not fit the head: missing {missing}, unexpected {unexpected}")
    for name, value in tensors.items():
        if value.shape != expected[name].shape:
            raise WeightsError(f"KBCNet weights {path}: tensor {name!r} has shape {tuple(value.shape)}, expected "
                               f"{tuple(expected[name].shape)}")
        if not torch.isfinite(value).all():
            raise WeightsError(f"KBCNet weights {path}: tensor {name!r} has non-finite values")
    head.load_state_dict(tensors, strict=True)
    if "score_calibration" in meta:
        head.score_calibration = _calibration(meta["score_calibration"], path)
    return head.eval()


def _calibration(text: str, path: Path) -> tuple[float, ...]:
    from semcorr_ros.engine.confidence import FEATURES

    try:
        coeffs = json.loads(text)
        coeffs = tuple(float(c) for c in coeffs)
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"KBCNet weights {path}: bad score_calibration metadata ({exc})") from exc
    if len(coeffs) != len(FEATURES) or not all(math.isfinite(c) for c in coeffs):
        raise WeightsError(f"KBCNet weights {path}: score_calibration needs {len(FEATURES)} finite coefficients, "
                           f"got {coeffs}")
    return coeffs
