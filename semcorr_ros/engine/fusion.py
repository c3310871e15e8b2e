"""Learnable fusion of multi-source, multi-layer feature maps (seed paper 1).

Every input map ``f_m`` (one per ``(source, layer)``, ``m = 1..M``) is L2-normalised along channels. The fusion
has one logit ``a_m`` per map and weights ``w = softmax(a)``. The fused descriptor of a cell is the concatenation

    F = [sqrt(w_1) f_1, ..., sqrt(w_M) f_M],

so that ``||F|| = 1`` and the cosine similarity of two fused descriptors is the weighted mean of the per-map
cosine similarities, ``<F, F'> = sum_m w_m <f_m, f'_m>``. Uniform weights (all logits zero) are the untrained
default; ``semcorr train-fusion`` learns the logits contrastively and writes them with :func:`save_fusion`.

Optionally (``center``) a mean vector ``mu_m`` is subtracted from each map before it is resampled and
re-normalised: the
component every pixel shares carries no information about *where* a keypoint is. ``mu_m`` is the spatial mean
of the *reference* image's map, and the same vectors are subtracted from the live maps, so the transform is one
fixed affine map of the feature space per reference, independent of what else the live frame shows.

Maps of different resolutions are resampled bilinearly onto a common ``grid x grid`` lattice of the input image
(cell centres at normalised coordinates ``(j + 0.5) / grid``), then re-normalised.

Projected fusion (optional, ``semcorr-fusion-v2``): a learned linear map ``P_m`` (``[r_m, C_m]``) per input map,
applied after centring and before normalisation, ``f_m <- normalise(P_m (f_m - mu_m))``; the fused descriptor has
``sum_m r_m`` channels. ``semcorr train-fusion --fusion-model projected`` learns it (with per-channel gains folded
into ``P_m``); it adapts the metric to a category and is opt-in (see docs/training.md). The projection is applied at
each map's native resolution, then resampled (both are linear, so the order does not change the result).

File formats (safetensors, atomic writes):

- ``semcorr-fusion-v1``: the tensor ``logits`` ``[M]`` and metadata
  ``{"format": "semcorr-fusion-v1", "keys": "<json list of 'source/layer' names>"}``;
- ``semcorr-fusion-v2``: ``logits`` ``[M]`` and ``proj.<m>`` ``[r_m, C_m]`` for ``m = 0..M-1``, metadata
  ``{"format": "semcorr-fusion-v2", "keys": ...}``.

Loading checks that the keys match the configured maps exactly; a v1 file removes any projections, a v2 file
sets them (their input widths are checked against the maps at the first fusion).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from semcorr_ros.engine.norms import unit_norm
from semcorr_ros.engine.safetensors_io import read_safetensors, write_safetensors
from semcorr_ros.errors import WeightsError

FORMAT = "semcorr-fusion-v1"
FORMAT_V2 = "semcorr-fusion-v2"


class FeatureFusion(nn.Module):
    """Weighted concatenation of normalised feature maps on a common grid.

    Args:
        keys: one name per input map, ``"<source>/<layer>"``.
        grid: side of the common lattice in cells; ``None`` uses the largest input map side.
        weights: initial weights per map (positive; normalised), default uniform.
        center: subtract each map's spatial mean before resampling (then re-normalise).
    """

    def __init__(self, keys: Sequence[str], grid: int | None = None, weights: Sequence[float] | None = None,
                 center: bool = False) -> None:
        super().__init__()
        if len(keys) == 0:
            raise WeightsError("fusion needs at least one feature map key")
        if len(set(keys)) != len(keys):
            raise WeightsError(f"fusion keys must be unique, got {list(keys)}")
        self.keys = list(keys)
        self.grid = grid
        self.center = center
        logits = torch.zeros(len(keys))
        if weights is not None:
            w = torch.as_tensor(list(weights), dtype=torch.float32)
            if w.shape != logits.shape or not torch.isfinite(w).all() or (w <= 0).any():
                raise WeightsError(f"fusion needs {len(keys)} positive weights for {self.keys}, got {list(weights)}")
            logits = torch.log(w / w.sum())
        self.logits = nn.Parameter(logits, requires_grad=False)
        self.projections: nn.ParameterList | None = None

    def set_projections(self, projections: Sequence[torch.Tensor] | None) -> None:
        """Use the learned per-map projections ``[r_m, C_m]`` (``None``: plain fusion).

        Raises:
            WeightsError: not one 2-D finite matrix per map.
        """
        if projections is None:
            self.projections = None
            return
        projections = list(projections)
        if len(projections) != len(self.keys):
            raise WeightsError(f"projected fusion needs one matrix per map ({len(self.keys)}), got {len(projections)}")
        for key, p in zip(self.keys, projections):
            if p.dim() != 2 or min(p.shape) < 1 or not torch.isfinite(p).all():
                raise WeightsError(f"projection of {key} must be a finite [rank, channels] matrix, got "
                                   f"shape {tuple(p.shape)}")
        device = self.logits.device
        self.projections = nn.ParameterList(
            [nn.Parameter(p.detach().float().to(device), requires_grad=False) for p in projections])

    @property
    def projected(self) -> bool:
        """Whether the fusion has learned projections (a ``semcorr-fusion-v2`` file)."""
        return self.projections is not None

    @property
    def weights(self) -> torch.Tensor:
        """``[M]`` normalised fusion weights (sum to 1)."""
        return torch.softmax(self.logits, dim=0)

    @staticmethod
    def map_means(maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Spatial mean ``[B, C_m, 1, 1]`` of every map (the centering vectors of a reference)."""
        return [m.mean(dim=(2, 3), keepdim=True) for m in maps]

    def forward(self, maps: Sequence[torch.Tensor], means: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """Fuse.

        Args:
            maps: ``M`` maps ``[B, C_m, h_m, w_m]``, unit norm along dim 1.
            means: centering vectors ``[B or 1, C_m, 1, 1]`` (from :meth:`map_means` of the reference);
                ``None`` uses the maps' own means. Ignored unless ``center``.

        Returns:
            ``[B, sum C_m, G, G]`` fused map (``sum r_m`` channels when projected), unit norm along dim 1.
        """
        if len(maps) != len(self.keys):
            raise WeightsError(f"fusion expects {len(self.keys)} maps ({self.keys}), got {len(maps)}")
        grid = self.grid or max(max(m.shape[-2:]) for m in maps)
        w = self.weights.to(maps[0].device)
        out = []
        if self.center and means is None:
            means = self.map_means(maps)
        for i, m in enumerate(maps):
            if self.center:
                m = m - means[i]
            if self.projections is not None:
                p = self.projections[i]
                if p.shape[1] != m.shape[1]:
                    raise WeightsError(f"projection of {self.keys[i]} expects {p.shape[1]} channels, the map has "
                                       f"{m.shape[1]} (fusion weights trained for another model)")
                m = torch.einsum("rc,bchw->brhw", p.to(m), m)
            if m.shape[-2:] != (grid, grid):
                m = F.interpolate(m, size=(grid, grid), mode="bilinear", align_corners=False)
            out.append(unit_norm(m, dim=1) * w[i].sqrt())
        return torch.cat(out, dim=1)


def save_fusion(fusion: FeatureFusion, path: str | os.PathLike) -> None:
    """Write the fusion (atomically): ``semcorr-fusion-v1`` logits, or ``semcorr-fusion-v2`` when projected."""
    tensors = {"logits": fusion.logits.detach().cpu().float().contiguous()}
    fmt = FORMAT
    if fusion.projections is not None:
        fmt = FORMAT_V2
        tensors.update({f"proj.{i}": p.detach().cpu().float().contiguous() for i, p in enumerate(fusion.projections)})
    write_safetensors(path, tensors, {"format": fmt, "keys": json.dumps(fusion.keys)})


def load_fusion(fusion: FeatureFusion, path: str | os.PathLike) -> None:
    """Load a file written by :func:`save_fusion` (v1 or v2) into ``fusion``; strict about format and keys.

    Raises:
        WeightsError: missing, unreadable or corrupt file, another format, other maps, or bad tensors.
    """
    path = Path(path)
    meta, tensors = read_safetensors(path, "fusion weights")
    fmt = meta.get("format")
    logits = tensors.get("logits")
    if fmt not in (FORMAT, FORMAT_V2) or logits is None:
        raise WeightsError(f"{path} is not a {FORMAT} or {FORMAT_V2} file (format={fmt!r}, "
                           f"tensors={sorted(tensors)})")
    try:
        keys = json.loads(meta.get("keys", "[]"))
    except ValueError as exc:
        raise WeightsError(f"{path}: bad 'keys' metadata ({exc})") from exc
    if keys != fusion.keys:
        raise WeightsError(f"fusion weights {path} were trained for maps {keys}, but the engine has {fusion.keys}")
    if logits.shape != fusion.logits.shape or not torch.isfinite(logits).all():
        raise WeightsError(f"fusion logits in {path} have shape {tuple(logits.shape)} or non-finite values")
    projections = None
    if fmt == FORMAT_V2:
        missing = [f"proj.{i}" for i in range(len(keys)) if f"proj.{i}" not in tensors]
        if missing:
            raise WeightsError(f"{path} ({FORMAT_V2}) lacks the tensors {missing}")
        projections = [tensors[f"proj.{i}"] for i in range(len(keys))]
    fusion.set_projections(projections)  # validates before anything is changed
    with torch.no_grad():
        fusion.logits.copy_(logits)
