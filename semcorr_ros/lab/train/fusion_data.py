"""Cached training data for fusion learning: per-image feature maps and per-pair, per-map similarity tensors.

The fusion weights enter the engine's matching only through the fused cosine similarity. With the maps
``f_m`` (``m = 1..M``) centred with the *source* image's means, resampled to the ``G x G`` grid and normalised
(exactly as :class:`~semcorr_ros.engine.fusion.FeatureFusion` does), the source keypoint descriptor is the
bilinear sample of the fused map, re-normalised (:func:`~semcorr_ros.engine.matching.sample_descriptors`), so
for fusion weights ``w``

    sim[k, j] = sum_m w_m S_m[k, j] / sqrt(sum_m w_m n_m[k]),
    S_m[k, j] = <d_m[k], f^tgt_m[j]>,   n_m[k] = ||d_m[k]||^2,   d_m[k] = bilinear sample of f^src_m at keypoint k.

``S`` and ``n`` do not depend on ``w``: they are computed once per pair (:func:`pair_tensors`) and an epoch of
training is a few small tensor products. The maps themselves come from the engine's own encode path
(:meth:`~semcorr_ros.engine.CorrespondenceEngine.encode_maps_batch`, bf16 on capable CPUs), once per image, kept
in memory and optionally in a disk cache file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from semcorr_ros.data.base import PairSample
from semcorr_ros.errors import DatasetError, SemcorrError

log = logging.getLogger(__name__)

ImageKey = tuple[str, str]  # (category, image name), the evaluation cache key


@dataclass
class DepthTensors:
    """Depth of one RGB-D pair as the depth-aware weights see it (:mod:`semcorr_ros.engine.depth_aware`).

    Attributes:
        cell_mean, cell_var: ``float32 [G*G]`` mean and variance of the target's valid depths per grid cell (m).
        cell_valid: ``bool [G*G]`` cells with at least one valid depth.
        extent: depth range of the source (reference) keypoints, metres (0 when unknown).
    """

    cell_mean: torch.Tensor
    cell_var: torch.Tensor
    cell_valid: torch.Tensor
    extent: float


def depth_tensors(tgt_depth: np.ndarray, src_depth: np.ndarray | None, src_xy: np.ndarray, grid: int,
                  radius: int = 2) -> DepthTensors:
    """Per-cell target depth statistics on the ``grid`` lattice and the source keypoints' depth range.

    Args:
        tgt_depth: ``[H, W]`` metres, NaN invalid.
        src_depth: ``[H, W]`` metres of the source image, or ``None`` (extent 0).
        src_xy: ``[K, 2]`` source keypoint pixels (valid rows).
        grid: the fusion grid side.
        radius: window half-size for the keypoint depth (the engine's ``depth_radius``).
    """
    from semcorr_ros.engine.depth_aware import cell_depth_stats
    from semcorr_ros.engine.geometry import keypoint_depth_range

    mean, var, valid = cell_depth_stats(torch.from_numpy(np.asarray(tgt_depth, np.float32)), grid)
    extent = 0.0
    if src_depth is not None and len(src_xy):
        extent = keypoint_depth_range(np.asarray(src_depth, np.float32), np.asarray(src_xy, float), radius)
    return DepthTensors(mean.reshape(-1).float(), var.reshape(-1).float(), valid.reshape(-1), extent)


@dataclass
class PairTensors:
    """Everything the fusion loss needs about one pair (``K`` valid keypoints, ``M`` maps, ``G x G`` grid).

    Attributes:
        pair_id: the dataset's pair id.
        category: the pair's category.
        sims: ``float16 [M, K, G*G]`` per-map similarities ``S_m`` of source keypoint descriptors to target cells.
        norms: ``float32 [M, K]`` squared norms ``n_m`` of the per-map source descriptors.
        target_idx: ``int64 [K, 4]`` the 4 grid cells around each target keypoint (flat indices).
        target_w: ``float32 [K, 4]`` their bilinear weights (sum to 1).
        depth: for RGB-D pairs, the target's per-cell depth statistics and the reference's keypoint depth range
            (what the depth-aware weights need, :class:`DepthTensors`); ``None`` without depth.
    """

    pair_id: str
    category: str
    sims: torch.Tensor
    norms: torch.Tensor
    target_idx: torch.Tensor
    target_w: torch.Tensor
    depth: DepthTensors | None = None

    @property
    def num_keypoints(self) -> int:
        return int(self.norms.shape[1])


def bilinear_target(uv: torch.Tensor, grid: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft positive of each keypoint on the ``grid x grid`` lattice (cell centres at ``(j + 0.5) / grid``).

    Args:
        uv: ``[K, 2]`` normalised ``(u, v)`` in ``[0, 1]``.

    Returns:
        ``(idx [K, 4] int64 flat cell indices, w [K, 4] bilinear weights)``; outside the centre range the
        position is clamped to the border cells.
    """
    g = (uv.double() * grid - 0.5).clamp(0, grid - 1)
    x0 = g[:, 0].floor().clamp(max=grid - 1)
    y0 = g[:, 1].floor().clamp(max=grid - 1)
    fx, fy = g[:, 0] - x0, g[:, 1] - y0
    x1 = (x0 + 1).clamp(max=grid - 1)
    y1 = (y0 + 1).clamp(max=grid - 1)
    idx = torch.stack([y0 * grid + x0, y0 * grid + x1, y1 * grid + x0, y1 * grid + x1], dim=1).long()
    w = torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=1).float()
    return idx, w


def _grid_maps(maps: Sequence[torch.Tensor], means: Sequence[torch.Tensor] | None, grid: int) -> list[torch.Tensor]:
    """Centre (optional), resample to ``grid`` and normalise each map, as FeatureFusion does: ``[C_m, G, G]``."""
    out = []
    for i, m in enumerate(maps):
        m = m.float()
        if means is not None:
            m = m - means[i]
        if m.shape[-2:] != (grid, grid):
            m = F.interpolate(m, size=(grid, grid), mode="bilinear", align_corners=False)
        out.append(F.normalize(m, dim=1)[0])
    return out


def pair_tensors(src_maps: Sequence[torch.Tensor], tgt_maps: Sequence[torch.Tensor], src_uv: torch.Tensor,
                 tgt_uv: torch.Tensor, grid: int, center: bool, pair_id: str = "", category: str = "") -> PairTensors:
    """Per-map similarity tensors of one pair.

    Args:
        src_maps, tgt_maps: ``M`` maps ``[1, C_m, h_m, w_m]`` each (unit norm along channels), in fusion order.
        src_uv, tgt_uv: ``[K, 2]`` normalised keypoints (valid rows only).
        grid: fusion grid side ``G``.
        center: subtract the source maps' spatial means from both images' maps (the engine's centring).
    """
    means = [m.float().mean(dim=(2, 3), keepdim=True) for m in src_maps] if center else None
    a = _grid_maps(src_maps, means, grid)
    b = _grid_maps(tgt_maps, means, grid)
    coords = (src_uv.float() * 2.0 - 1.0)[None, :, None, :]
    sims, norms = [], []
    for fa, fb in zip(a, b):
        d = F.grid_sample(fa[None], coords, mode="bilinear", padding_mode="border", align_corners=False)[0, :, :, 0].t()
        sims.append(d @ fb.reshape(fb.shape[0], -1))
        norms.append((d * d).sum(1))
    idx, w = bilinear_target(tgt_uv, grid)
    return PairTensors(pair_id, category, torch.stack(sims).half(), torch.stack(norms).float(), idx, w)


def _valid_uv(sample: PairSample) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised source/target keypoints of the rows finite and inside both images."""
    sh, sw = sample.src_hw
    th, tw = sample.tgt_hw
    s, t = sample.src_kps, sample.tgt_kps
    ok = np.isfinite(s).all(1) & np.isfinite(t).all(1)
    with np.errstate(invalid="ignore"):
        ok &= (s[:, 0] >= -0.5) & (s[:, 0] <= sw - 0.5) & (s[:, 1] >= -0.5) & (s[:, 1] <= sh - 0.5)
        ok &= (t[:, 0] >= -0.5) & (t[:, 0] <= tw - 0.5) & (t[:, 1] >= -0.5) & (t[:, 1] <= th - 0.5)
    su = torch.from_numpy((s[ok] + 0.5) / np.array([sw, sh]))
    tu = torch.from_numpy((t[ok] + 0.5) / np.array([tw, th]))
    return su.float(), tu.float()


class MapCache:
    """Per-image feature maps of a dataset's images, computed once by an engine (or any encoder).

    Maps are kept (and cached on disk) in bfloat16, half the memory of float32 (about 3.4 MB per image for the
    default model); training reads them back as float32.

    Args:
        encode_batch: ``(images, keys) -> list of per-image map lists`` (e.g. the engine's
            :meth:`encode_maps_batch`).
        keys: the fusion's map names (``source/layer``), stored with a disk cache to detect a mismatch.
        cache_file: optional ``.pt`` file: loaded when it exists and matches ``keys``/``fingerprint``,
            written after new images were encoded.
        fingerprint: anything identifying the encoder configuration (JSON-serialisable).
        batch_size: images per encode call.
    """

    def __init__(self, encode_batch, keys: Sequence[str], cache_file: str | Path | None = None,
                 fingerprint: object = None, batch_size: int = 8) -> None:
        self.encode_batch = encode_batch
        self.keys = list(keys)
        self.cache_file = Path(cache_file) if cache_file else None
        self.fingerprint = json.dumps(fingerprint, sort_keys=True, default=str)
        self.batch_size = max(1, int(batch_size))
        self.maps: dict[Hashable, list[torch.Tensor]] = {}
        self._dirty = False
        if self.cache_file is not None and self.cache_file.is_file():
            try:
                blob = torch.load(self.cache_file, map_location="cpu", weights_only=True)
            except Exception as exc:  # a corrupt/foreign cache is only a cache: recompute
                log.warning("ignoring unreadable feature cache %s: %s", self.cache_file, exc)
                blob = None
            if isinstance(blob, dict) and blob.get("keys") == self.keys and blob.get("fingerprint") == self.fingerprint:
                self.maps = {tuple(k): list(v) for k, v in zip(blob["names"], blob["maps"])}
                log.info("feature cache %s: %d images", self.cache_file, len(self.maps))
            elif blob is not None:
                log.warning("feature cache %s was made with other sources/settings; recomputing", self.cache_file)

    def ensure(self, dataset: Sequence[PairSample], indices: Sequence[int], progress: bool = True) -> None:
        """Encode every not yet cached image of the pairs ``indices`` (unreadable pairs are skipped later)."""
        todo: dict[Hashable, np.ndarray] = {}
        for i in indices:
            info = dataset.pair_info(i) if hasattr(dataset, "pair_info") else None
            if info is not None and all((info.category, n) in self.maps for n in (info.src_name, info.tgt_name)):
                continue
            try:
                s = dataset[i]
            except DatasetError as exc:
                log.warning("skipping pair %d: %s", i, exc)
                continue
            for name, img in ((s.src_name, s.src_image), (s.tgt_name, s.tgt_image)):
                key = (s.category, name)
                if key not in self.maps and key not in todo:
                    todo[key] = img
        if not todo:
            return
        items = list(todo.items())
        bar = tqdm(total=len(items), desc="encode", unit="img", disable=not progress, leave=False)
        for j in range(0, len(items), self.batch_size):
            chunk = items[j:j + self.batch_size]
            out = self.encode_batch([im for _, im in chunk], None)
            for (key, _), maps in zip(chunk, out):
                self.maps[key] = [m.detach().cpu().to(torch.bfloat16) for m in maps]
            bar.update(len(chunk))
        bar.close()
        self._dirty = True
        self.save()

    def save(self) -> None:
        """Write the disk cache when one is configured and something new was encoded."""
        if self.cache_file is None or not self._dirty:
            return
        self.cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_file.with_name(self.cache_file.name + ".tmp")
        names = list(self.maps)
        torch.save({"keys": self.keys, "fingerprint": self.fingerprint, "names": [list(n) for n in names],
                    "maps": [self.maps[n] for n in names]}, tmp)
        tmp.replace(self.cache_file)
        self._dirty = False


def cached_pairs(dataset: Sequence[PairSample], indices: Sequence[int], cache: MapCache, progress: bool = True):
    """Encode (:meth:`MapCache.ensure`) and yield ``(sample, src_uv, tgt_uv, src_key, tgt_key)`` for every pair of
    ``indices`` that can be read, has a valid keypoint and whose images are cached (others are skipped, unreadable
    ones with a log line)."""
    cache.ensure(dataset, indices, progress)
    for i in tqdm(indices, desc="pairs", unit="pair", disable=not progress, leave=False):
        try:
            s = dataset[i]
        except SemcorrError as exc:
            log.warning("skipping pair %d: %s", i, exc)
            continue
        su, tu = _valid_uv(s)
        ks, kt = (s.category, s.src_name), (s.category, s.tgt_name)
        if len(su) and ks in cache.maps and kt in cache.maps:
            yield s, su, tu, ks, kt


def build_pair_tensors(dataset: Sequence[PairSample], indices: Sequence[int], cache: MapCache, grid: int,
                       center: bool, progress: bool = True) -> list[PairTensors]:
    """:class:`PairTensors` of the pairs ``indices`` (pairs that cannot be read or have no valid keypoint are
    skipped, see :func:`cached_pairs`)."""
    out = []
    for s, su, tu, ks, kt in cached_pairs(dataset, indices, cache, progress):
        with torch.no_grad():
            p = pair_tensors(cache.maps[ks], cache.maps[kt], su, tu, grid, center, s.pair_id, s.category)
            if s.tgt_depth is not None:
                sh, sw = s.src_hw
                p.depth = depth_tensors(s.tgt_depth, s.src_depth, su.double().numpy() * [sw, sh] - 0.5, grid)
            out.append(p)
    return out


def cache_name(parts: object) -> str:
    """A short stable file name for a disk cache of ``parts`` (JSON-serialisable)."""
    return "fusion_maps_" + hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
