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

File format (``semcorr-fusion-v1``): a safetensors file with the tensor ``logits`` ``[M]`` and metadata
``{"format": "semcorr-fusion-v1", "keys": "<json list of 'source/layer' names>"}``; loading checks the keys
match the configured maps exactly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from semcorr_ros.errors import WeightsError

FORMAT = "semcorr-fusion-v1"


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
            ``[B, sum C_m, G, G]`` fused map, unit norm along dim 1.
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
            if m.shape[-2:] != (grid, grid):
                m = F.interpolate(m, size=(grid, grid), mode="bilinear", align_corners=False)
            out.append(F.normalize(m, dim=1) * w[i].sqrt())
        return torch.cat(out, dim=1)


def save_fusion(fusion: FeatureFusion, path: str | os.PathLike) -> None:
    """Write the fusion logits in the ``semcorr-fusion-v1`` format (atomically)."""
    from safetensors.torch import save_file

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"logits": fusion.logits.detach().cpu().float().contiguous()}, str(tmp),
              metadata={"format": FORMAT, "keys": json.dumps(fusion.keys)})
    os.replace(tmp, path)


def load_fusion(fusion: FeatureFusion, path: str | os.PathLike) -> None:
    """Load logits written by :func:`save_fusion` into ``fusion``; strict about format and keys."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"fusion weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            names = set(f.keys())
            logits = f.get_tensor("logits") if "logits" in names else None
    except Exception as exc:  # safetensors raises several types for corrupted files
        raise WeightsError(f"cannot read fusion weights {path}: {exc}") from exc
    if meta.get("format") != FORMAT or logits is None:
        raise WeightsError(f"{path} is not a {FORMAT} file (format={meta.get('format')!r}, tensors={sorted(names)})")
    keys = json.loads(meta.get("keys", "[]"))
    if keys != fusion.keys:
        raise WeightsError(f"fusion weights {path} were trained for maps {keys}, but the engine has {fusion.keys}")
    if logits.shape != fusion.logits.shape or not torch.isfinite(logits).all():
        raise WeightsError(f"fusion logits in {path} have shape {tuple(logits.shape)} or non-finite values")
    with torch.no_grad():
        fusion.logits.copy_(logits)
