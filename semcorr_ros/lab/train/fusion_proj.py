"""Projected fusion (``semcorr-fusion-v2``): the fusion logits plus one learned linear map per feature map.

The scalar fusion (:mod:`semcorr_ros.lab.train.fusion_train`) can only re-weight whole maps. Here every map ``m``
also gets a projection ``P_m`` (``[r, C_m]``, rank ``r``, default 64) and positive per-channel gains ``g_m``, used
after the centring and before the normalisation::

    f_m <- normalise(P_m diag(g_m) (f_m - mu_m)),     F = [sqrt(w_1) f_1, ..., sqrt(w_M) f_M],

trained with the same InfoNCE loss (the target keypoint's 4 cells, bilinear weights, against every cell of the
target's ``G x G`` map; learned temperature). ``P_m`` starts at the top-``r`` principal directions of the
training images' centred cells (PCA), ``g_m`` at 1, and two penalties keep them near there::

    proj_penalty * sum_m ||P_m - P0_m||^2 / ||P0_m||^2   +   gain_penalty * mean(log g^2).

Because the similarities now depend on the parameters, training cannot use the per-pair similarity tensors of
the scalar trainer: it keeps each image's maps resampled to the grid (float16, ~3 MB per image for the default
model) and recomputes the fused maps of the batch's images at every step (an epoch over 270 PF-WILLOW pairs takes
about 10 s on two CPU cores). The file written folds the gains into the projections (``P_m diag(g_m)``).

What it is for: adapting the metric to the categories of the training pairs. Measured (docs/training.md,
"Projected fusion"), it gains several PCK points on unseen images of the trained categories and does not transfer
from rendered scenes to real images, so it is opt-in (``semcorr train-fusion --fusion-model projected``) and the
shipped default stays the scalar fusion.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from semcorr_ros.engine.fusion import FeatureFusion
from semcorr_ros.errors import ConfigError
from semcorr_ros.lab.train.fusion_data import MapCache, bilinear_target, cached_pairs
from semcorr_ros.lab.train.fusion_train import TrainResult, grid_hits, info_nce, run_epoch

log = logging.getLogger(__name__)


@dataclass
class GridImage:
    """One image's maps as the projected-fusion trainer uses them.

    Attributes:
        maps: ``float16 [C_m, G*G]`` per map: the unit-norm map resampled to the grid (not centred).
        means: ``float32 [C_m]`` per map: the map's spatial mean at its native resolution (the engine's centring
            vector when this image is the reference).
    """

    maps: list[torch.Tensor]
    means: list[torch.Tensor]


def grid_image(maps: Sequence[torch.Tensor], grid: int) -> GridImage:
    """:class:`GridImage` of ``M`` maps ``[1, C_m, h_m, w_m]``. Resampling is linear, so resampling first and
    subtracting the native mean afterwards equals the engine's centre-then-resample."""
    out, means = [], []
    for m in maps:
        m = m.float()
        means.append(m.mean(dim=(2, 3))[0])
        if m.shape[-2:] != (grid, grid):
            m = F.interpolate(m, size=(grid, grid), mode="bilinear", align_corners=False)
        out.append(m[0].reshape(m.shape[1], -1).half())
    return GridImage(out, means)


@dataclass
class ProjPair:
    """One training pair: image keys, normalised source keypoints and the target's soft positive cells."""

    pair_id: str
    category: str
    src: Hashable
    tgt: Hashable
    src_uv: torch.Tensor     # [K, 2]
    target_idx: torch.Tensor  # [K, 4]
    target_w: torch.Tensor    # [K, 4]

    @property
    def num_keypoints(self) -> int:
        return int(self.src_uv.shape[0])


def build_projection_data(dataset, indices: Sequence[int], cache: MapCache, grid: int,
                          images: dict[Hashable, GridImage] | None = None,
                          progress: bool = True) -> tuple[dict[Hashable, GridImage], list[ProjPair]]:
    """Grid images and pairs of the pairs ``indices`` (unreadable pairs and pairs without a valid keypoint are
    skipped). ``images`` is extended in place when given (training and held-out pairs share one dict)."""
    images = {} if images is None else images
    pairs = []
    for s, su, tu, ks, kt in cached_pairs(dataset, indices, cache, progress):
        for k in (ks, kt):
            if k not in images:
                images[k] = grid_image(cache.maps[k], grid)
        idx, w = bilinear_target(tu, grid)
        pairs.append(ProjPair(s.pair_id, s.category, ks, kt, su, idx, w))
    return images, pairs


def _centred(img: GridImage, i: int, means: Sequence[torch.Tensor] | None) -> torch.Tensor:
    x = img.maps[i].float()
    return x - means[i][:, None] if means is not None else x


def pca_projections(images: dict[Hashable, GridImage], keys: Sequence[Hashable], rank: int,
                    center: bool = True) -> list[torch.Tensor]:
    """Per map, the top-``rank`` principal directions ``[min(rank, C_m), C_m]`` (rows, unit norm) of the cells of
    the images ``keys``, each image centred with its own means and every cell normalised."""
    if not keys:
        raise ConfigError("PCA initialisation needs at least one training image")
    n_maps = len(images[keys[0]].maps)
    out = []
    for i in range(n_maps):
        c = images[keys[0]].maps[i].shape[0]
        cov = torch.zeros(c, c, dtype=torch.float64)
        n = 0
        for k in keys:
            img = images[k]
            x = F.normalize(_centred(img, i, img.means if center else None), dim=0).double()
            cov += x @ x.t()
            n += x.shape[1]
        _, vecs = torch.linalg.eigh(cov / n)
        r = min(rank, c)
        out.append(vecs[:, -r:].flip(1).t().float().contiguous())
    return out


class ProjectedFusionModel(nn.Module):
    """Trainable logits ``[M]``, projections ``P_m [r_m, C_m]``, log-gains ``[C_m]`` and log-temperature."""

    def __init__(self, projections: Sequence[torch.Tensor], init_logits: torch.Tensor | None = None,
                 temperature: float = 0.05, center: bool = True) -> None:
        super().__init__()
        m = len(projections)
        self.center = center
        self.logits = nn.Parameter(torch.zeros(m) if init_logits is None else init_logits.detach().clone().float())
        self.log_tau = nn.Parameter(torch.tensor(math.log(temperature)))
        self.proj = nn.ParameterList([nn.Parameter(p.detach().clone().float()) for p in projections])
        self.log_gains = nn.ParameterList([nn.Parameter(torch.zeros(p.shape[1])) for p in projections])
        for i, p in enumerate(projections):
            self.register_buffer(f"proj0_{i}", p.detach().clone().float())

    def initial_projection(self, i: int) -> torch.Tensor:
        return getattr(self, f"proj0_{i}")

    def folded_projections(self) -> list[torch.Tensor]:
        """``P_m diag(g_m)``: what the engine applies (the file's ``proj.<m>``)."""
        return [(p * g.exp()[None, :]).detach().clone() for p, g in zip(self.proj, self.log_gains)]

    def fused(self, img: GridImage, means: Sequence[torch.Tensor]) -> torch.Tensor:
        """``[sum r_m, G*G]`` fused map of ``img`` centred with ``means`` (the source image's)."""
        w = torch.softmax(self.logits, 0)
        parts = []
        for i in range(len(self.proj)):
            x = _centred(img, i, means if self.center else None) * self.log_gains[i].exp()[:, None]
            parts.append(F.normalize(self.proj[i] @ x, dim=0) * w[i].sqrt())
        return torch.cat(parts, 0)

    def penalty(self, proj_penalty: float, gain_penalty: float) -> torch.Tensor:
        r = self.logits.new_zeros(())
        if proj_penalty > 0:
            r = r + proj_penalty * sum((p - self.initial_projection(i)).pow(2).sum()
                                       / self.initial_projection(i).pow(2).sum() for i, p in enumerate(self.proj))
        if gain_penalty > 0:
            r = r + gain_penalty * torch.cat(list(self.log_gains)).pow(2).mean()
        return r


def _similarities(model: ProjectedFusionModel, images: dict[Hashable, GridImage], pairs: Sequence[ProjPair],
                  grid: int) -> list[torch.Tensor]:
    """``[K, G*G]`` fused cosine similarity of every pair's source keypoints to the target cells (each image's
    fused map computed once per call and reference)."""
    memo: dict[tuple[Hashable, Hashable], torch.Tensor] = {}

    def fused(key: Hashable, ref: Hashable) -> torch.Tensor:
        if (key, ref) not in memo:
            memo[(key, ref)] = model.fused(images[key], images[ref].means)
        return memo[(key, ref)]

    out = []
    for p in pairs:
        fs, ft = fused(p.src, p.src), fused(p.tgt, p.src)
        coords = (p.src_uv * 2.0 - 1.0)[None, :, None, :]
        d = F.grid_sample(fs.reshape(1, fs.shape[0], grid, grid), coords, mode="bilinear", padding_mode="border",
                          align_corners=False)[0, :, :, 0].t()
        out.append(F.normalize(d, dim=1) @ ft)
    return out


def _loss(model, images, pairs, grid, target) -> torch.Tensor:
    tau = model.log_tau.exp()
    total, count = model.logits.new_zeros(()), 0
    for p, sim in zip(pairs, _similarities(model, images, pairs, grid)):
        total = total + info_nce(sim, p.target_idx, p.target_w, tau, target) * p.num_keypoints
        count += p.num_keypoints
    return total / max(count, 1)


@torch.no_grad()
def _mean_loss(model, images, pairs, grid, target, chunk: int = 32) -> float:
    if not pairs:
        return float("nan")
    total = count = 0.0
    for j in range(0, len(pairs), chunk):
        part = pairs[j:j + chunk]
        k = sum(p.num_keypoints for p in part)
        total += float(_loss(model, images, part, grid, target)) * k
        count += k
    return total / max(count, 1)


@torch.no_grad()
def projected_hit_rate(model: ProjectedFusionModel, images: dict[Hashable, GridImage], pairs: Sequence[ProjPair],
                       grid: int, radius_cells: float = 1.0) -> float:
    """Fraction of keypoints whose fused-similarity argmax cell is within ``radius_cells`` of the target (a quick
    diagnostic like :func:`~semcorr_ros.lab.train.fusion_train.argmax_pck`, not the benchmark PCK)."""
    hits = n = 0
    for j in range(0, len(pairs), 32):
        part = pairs[j:j + 32]
        for p, sim in zip(part, _similarities(model, images, part, grid)):
            hits += grid_hits(sim, p.target_idx, p.target_w, grid, radius_cells)
            n += p.num_keypoints
    return hits / max(n, 1)


@dataclass
class ProjectedTrainResult(TrainResult):
    """:class:`TrainResult` plus the learned projections (gains folded in)."""

    projections: list[torch.Tensor] = field(default_factory=list)
    center: bool = True
    model: ProjectedFusionModel | None = None
    validation_curve: list[float] = field(default_factory=list)   # hit rate on the validation pairs per epoch

    def best_epoch(self) -> int | None:
        """The epoch (0 = start) with the highest validation hit rate, the earliest on ties; None without one."""
        if not self.validation_curve:
            return None
        return int(max(range(len(self.validation_curve)), key=lambda e: (self.validation_curve[e], -e)))

    def fusion(self, grid: int | None = None, center: bool | None = None) -> FeatureFusion:
        """A projected :class:`FeatureFusion` (``semcorr-fusion-v2``) with the learned parameters."""
        f = FeatureFusion(self.keys, grid=grid, center=self.center if center is None else center)
        with torch.no_grad():
            f.logits.copy_(self.logits)
        f.set_projections(self.projections)
        return f


def train_projected_fusion(images: dict[Hashable, GridImage], pairs: Sequence[ProjPair], keys: Sequence[str],
                           grid: int, rank: int = 64, epochs: int = 10, seed: int = 0, lr: float = 0.05,
                           lr_proj: float = 0.002, lr_gain: float = 0.02, proj_penalty: float = 10.0,
                           gain_penalty: float = 3.0, batch_pairs: int = 16, temperature: float = 0.05,
                           learn_temperature: bool = True, init_logits: torch.Tensor | None = None,
                           target: str = "bilinear", center: bool = True,
                           holdout: Sequence[ProjPair] = (), validation: Sequence[ProjPair] = (),
                           progress: bool = True) -> ProjectedTrainResult:
    """Learn the projected fusion with InfoNCE (see the module docstring).

    Args:
        images: grid images of every pair's source and target (:func:`build_projection_data`).
        pairs: training pairs; ``holdout``: pairs whose loss is tracked per epoch (never trained on);
            ``validation``: pairs whose argmax hit rate (:func:`projected_hit_rate`) is tracked per epoch
            (``validation_curve`` of the result, epoch 0 = the start), to choose the number of epochs.
        keys: the fusion's map names, in order (one per map of the images).
        grid: the fusion grid side of the images.
        rank: projection rank per map (capped at the map's channels).
        epochs, seed, batch_pairs: passes, pair-order seed, pairs per Adam step.
        lr, lr_proj, lr_gain: Adam learning rates of logits and temperature, projections, log-gains.
        proj_penalty, gain_penalty: the penalties' weights (>= 0).
        temperature: initial InfoNCE temperature; ``learn_temperature``: also learn it.
        init_logits: starting logits (default uniform); ``target``: ``bilinear`` or ``hard`` positive.
        center: centre the maps with the source image's means (the engine's ``center_features``).
        progress: tqdm bar over epochs.

    Raises:
        ConfigError: no training keypoints, bad options, or images that do not fit ``keys``.
    """
    if epochs < 0 or batch_pairs < 1 or rank < 1 or not (lr > 0 and lr_proj > 0 and lr_gain > 0) \
            or not temperature > 0 or proj_penalty < 0 or gain_penalty < 0:
        raise ConfigError(f"need epochs >= 0, batch_pairs >= 1, rank >= 1, positive learning rates and temperature, "
                          f"penalties >= 0; got epochs {epochs}, batch {batch_pairs}, rank {rank}, lr {lr}/{lr_proj}/"
                          f"{lr_gain}, temperature {temperature}, penalties {proj_penalty}/{gain_penalty}")
    pairs = [p for p in pairs if p.num_keypoints > 0]
    if not pairs:
        raise ConfigError("no training pair has a valid keypoint")
    n_maps = len(images[pairs[0].src].maps)
    if n_maps != len(keys):
        raise ConfigError(f"images have {n_maps} maps, fusion has {len(keys)} ({list(keys)})")
    t0 = time.perf_counter()
    train_keys = sorted({k for p in pairs for k in (p.src, p.tgt)}, key=str)
    torch.manual_seed(int(seed))
    model = ProjectedFusionModel(pca_projections(images, train_keys, rank, center), init_logits, temperature, center)
    model.log_tau.requires_grad_(learn_temperature)
    opt = torch.optim.Adam([{"params": [model.logits, model.log_tau], "lr": lr},
                            {"params": list(model.proj), "lr": lr_proj},
                            {"params": list(model.log_gains), "lr": lr_gain}])
    gen = torch.Generator().manual_seed(int(seed))
    curve = [_mean_loss(model, images, pairs, grid, target)]
    hcurve = [_mean_loss(model, images, holdout, grid, target)] if holdout else []
    vcurve = [projected_hit_rate(model, images, validation, grid)] if validation else []
    bar = tqdm(range(epochs), desc="train-fusion (projected)", unit="epoch", disable=not progress)

    def step(batch: list[ProjPair]) -> float:
        opt.zero_grad()
        loss = _loss(model, images, batch, grid, target)
        (loss + model.penalty(proj_penalty, gain_penalty)).backward()
        opt.step()
        with torch.no_grad():
            model.log_tau.clamp_(math.log(1e-3), math.log(10.0))
        return float(loss.detach())

    for _ in bar:
        curve.append(run_epoch(pairs, batch_pairs, gen, step))
        if holdout:
            hcurve.append(_mean_loss(model, images, holdout, grid, target))
        if validation:
            vcurve.append(projected_hit_rate(model, images, validation, grid))
        bar.set_postfix(loss=f"{curve[-1]:.4f}", tau=f"{float(model.log_tau.detach().exp()):.4f}")
    bar.close()
    return ProjectedTrainResult(list(keys), model.logits.detach().clone(), float(model.log_tau.detach().exp()),
                                curve, hcurve, time.perf_counter() - t0, projections=model.folded_projections(),
                                center=center, model=model, validation_curve=vcurve)
