"""Training of the KBCNet head (CSFA + centre-pivot 4D decoder) on cached, frozen backbone features.

Every image is encoded once by the engine's frozen feature sources. For each map ``m`` the cache keeps the map
resampled to the training lattice ``r_m`` (bilinear, as the fusion does) and its spatial mean ``mu_m`` at native
resolution. Because resampling is linear, ``resample(m - mu) = r_m - mu``, so a pair's fused maps are rebuilt
exactly as the engine builds them (the target centred with the *source's* means, as the live frame is centred
with the reference's)::

    F_src = concat_m sqrt(w_m) normalize(r_m^src - mu_m^src),   F_tgt = concat_m sqrt(w_m) normalize(r_m^tgt - mu_m^src)

Loss: for each source keypoint the head's target map (the refined correlation read out at the keypoint, see
:func:`semcorr_ros.engine.kbcnet.readout`) divided by the learned temperature is a distribution over target
cells; the loss is its cross-entropy against the ground-truth position spread bilinearly over the four cells
around it (soft labels), averaged over the keypoints that exist in both images.

Deterministic for a given seed (torch and the pair order are seeded; CPU kernels used here are deterministic).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from semcorr_ros.engine.kbcnet import KBCNetHead, readout, save_kbcnet

log = logging.getLogger(__name__)


@dataclass
class CachedImage:
    """Per-map features of one image on the training lattice."""

    maps: list[torch.Tensor]       # [C_m, G, G] resampled, not normalised
    means: list[torch.Tensor]      # [C_m, 1, 1] spatial means at native resolution
    size: tuple[int, int]          # (width, height)


@dataclass
class TrainPair:
    src: Hashable
    tgt: Hashable
    src_uv: torch.Tensor           # [K, 2] normalised
    tgt_uv: torch.Tensor           # [K, 2] normalised


@dataclass
class TrainResult:
    head: KBCNetHead
    losses: list[float] = field(default_factory=list)          # per step
    epoch_losses: list[float] = field(default_factory=list)    # mean per epoch
    seconds: float = 0.0


def cache_image(maps: Sequence[torch.Tensor], grid: int, size: tuple[int, int]) -> CachedImage:
    """Build the cache entry of one image from the engine's normalised maps ``[1, C_m, h, w]``."""
    rs, mus = [], []
    for m in maps:
        m = m.float().cpu()  # training runs on the CPU, whatever device encoded the images
        mus.append(m.mean(dim=(2, 3), keepdim=True)[0])
        rs.append(F.interpolate(m, size=(grid, grid), mode="bilinear", align_corners=False)[0])
    return CachedImage(maps=rs, means=mus, size=size)


def fused_pair(src: CachedImage, tgt: CachedImage, weights: torch.Tensor, center: bool) -> tuple[torch.Tensor,
                                                                                               torch.Tensor]:
    """Fused maps ``[C, G, G]`` of a pair exactly as the engine fuses a reference and a live frame."""
    out_s, out_t = [], []
    for i, (ms, mt) in enumerate(zip(src.maps, tgt.maps)):
        mu = src.means[i] if center else 0.0
        out_s.append(F.normalize(ms - mu, dim=0) * weights[i].sqrt())
        out_t.append(F.normalize(mt - mu, dim=0) * weights[i].sqrt())
    return torch.cat(out_s), torch.cat(out_t)


def soft_labels(uv: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear soft one-hot ``[N, h*w]`` of normalised positions ``uv [N, 2]`` on an ``h x w`` lattice."""
    x = (uv[:, 0] * w - 0.5).clamp(0, w - 1)
    y = (uv[:, 1] * h - 0.5).clamp(0, h - 1)
    x0, y0 = x.floor().long().clamp(max=w - 1), y.floor().long().clamp(max=h - 1)
    x1, y1 = (x0 + 1).clamp(max=w - 1), (y0 + 1).clamp(max=h - 1)
    fx, fy = x - x0, y - y0
    out = torch.zeros(uv.shape[0], h * w, dtype=uv.dtype, device=uv.device)
    rows = torch.arange(uv.shape[0], device=uv.device)
    for xi, yi, wt in ((x0, y0, (1 - fx) * (1 - fy)), (x1, y0, fx * (1 - fy)), (x0, y1, (1 - fx) * fy),
                       (x1, y1, fx * fy)):
        out.index_put_((rows, yi * w + xi), wt, accumulate=True)
    return out


def keypoint_loss(head: KBCNetHead, src: torch.Tensor, tgt: torch.Tensor, src_uv: torch.Tensor,
                  tgt_uv: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the ground-truth target cells (soft labels) under the head's readout distributions.

    Args:
        src, tgt: fused maps ``[B, C, G, G]``.
        src_uv, tgt_uv: ``[B, K, 2]`` normalised keypoints (invalid rows: any finite value).
        valid: ``[B, K]`` bool.
    """
    corr = head(src, tgt)
    maps = readout(corr, src_uv)                                        # [B, K, Ht, Wt]
    b, k, h, w = maps.shape
    logits = (maps / head.temperature).reshape(b * k, h * w)[valid.reshape(-1)]
    labels = soft_labels(tgt_uv.reshape(b * k, 2)[valid.reshape(-1)], h, w)
    return -(labels * torch.log_softmax(logits, dim=1)).sum(1).mean()


def train_head(cache: dict[Hashable, CachedImage], pairs: Sequence[TrainPair], keys: Sequence[str],
               fusion_weights: torch.Tensor, center: bool, *, epochs: int = 4, batch_size: int = 4, lr: float = 2e-3,
               seed: int = 0, dim: int = 32, heads: int = 2, hidden: int = 8, layers: int = 3,
               temperature: float = 0.02, progress: bool = True,
               on_epoch: Callable[[int, float], None] | None = None,
               device: str | torch.device = "cpu") -> TrainResult:
    """Train a fresh head on cached pairs (Adam, cosine learning-rate decay). Deterministic for a seed on the CPU.

    The cache stays in host memory; each batch's fused maps are built there and moved to ``device`` (e.g.
    ``cuda``), where the head trains. The returned head is on the CPU.
    """
    from tqdm import tqdm

    if not pairs:
        raise ValueError("no training pairs")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    first = cache[pairs[0].src]
    channels = sum(m.shape[0] for m in first.maps)
    head = KBCNetHead(channels, keys=keys, dim=dim, heads=heads, hidden=hidden, layers=layers,
                      temperature=temperature)
    device = torch.device(device)
    head.to(device).train()
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    steps_per_epoch = math.ceil(len(pairs) / batch_size)
    total = max(1, epochs * steps_per_epoch)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    result = TrainResult(head=head)
    t0 = time.perf_counter()
    bar = tqdm(total=total, desc="train-kbcnet", unit="step", disable=not progress)
    for epoch in range(epochs):
        order = torch.randperm(len(pairs), generator=gen).tolist()
        epoch_losses = []
        for start in range(0, len(order), batch_size):
            batch = [pairs[i] for i in order[start:start + batch_size]]
            src, tgt, su, tu = [], [], [], []
            for p in batch:
                fs, ft = fused_pair(cache[p.src], cache[p.tgt], fusion_weights, center)
                src.append(fs)
                tgt.append(ft)
                su.append(p.src_uv)
                tu.append(p.tgt_uv)
            k = max(len(u) for u in su)
            src_uv = torch.full((len(batch), k, 2), 0.5)
            tgt_uv = torch.full((len(batch), k, 2), 0.5)
            valid = torch.zeros(len(batch), k, dtype=torch.bool)
            for i, (a, b) in enumerate(zip(su, tu)):
                ok = torch.isfinite(a).all(1) & torch.isfinite(b).all(1)
                src_uv[i, :len(a)][ok] = a[ok]
                tgt_uv[i, :len(b)][ok] = b[ok]
                valid[i, :len(a)] = ok
            if not valid.any():
                continue
            loss = keypoint_loss(head, torch.stack(src).to(device), torch.stack(tgt).to(device), src_uv.to(device),
                                 tgt_uv.to(device), valid.to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            value = loss.item()
            result.losses.append(value)
            epoch_losses.append(value)
            bar.update(1)
            bar.set_postfix(epoch=epoch + 1, loss=f"{value:.3f}")
        mean = float(np.mean(epoch_losses)) if epoch_losses else float("nan")
        result.epoch_losses.append(mean)
        if on_epoch is not None:
            on_epoch(epoch, mean)
    bar.close()
    result.seconds = time.perf_counter() - t0
    head.cpu().eval()
    return result


def plot_losses(result: TrainResult, path: Path, title: str = "KBCNet training") -> None:
    """Loss per step (and per-epoch mean) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    ax.plot(np.arange(1, len(result.losses) + 1), result.losses, lw=0.8, alpha=0.6, label="step")
    if result.epoch_losses:
        steps = len(result.losses) / max(1, len(result.epoch_losses))
        ax.plot((np.arange(len(result.epoch_losses)) + 1) * steps, result.epoch_losses, "o-", label="epoch mean")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def save_trained(result: TrainResult, path: Path, info: dict[str, str]) -> None:
    """Write the head (``semcorr-kbcnet-v1``) with training information in the metadata."""
    save_kbcnet(result.head, path, extra={f"train_{k}": str(v) for k, v in info.items()})


@dataclass
class CalibrationPair:
    """A labelled pair for :func:`calibrate_head`: image keys, keypoints in pixels and the PCK length unit."""

    src: Hashable
    tgt: Hashable
    src_xy: np.ndarray             # [K, 2] pixels (NaN rows: missing)
    tgt_xy: np.ndarray             # [K, 2] pixels
    unit: float                    # PCK length unit in the target, pixels (e.g. the longer side of its box)


@dataclass
class Calibration:
    coefficients: tuple[float, ...]
    matches: int
    accuracy: float                # fraction of the matches within alpha * unit
    ece_before: float              # of the engine's calibration on these matches
    ece_after: float


def calibrate_head(engine, head: KBCNetHead, images: dict, pairs: Sequence[CalibrationPair], alpha: float = 0.1,
                   progress: bool = True) -> Calibration:
    """Fit the head's own confidence calibration: run the full engine with ``head`` as its matcher over ``pairs``,
    label each match correct within ``alpha`` x the pair's unit, and rescale the engine's calibration to those
    labels (:func:`semcorr_ros.engine.confidence.platt_rescale`). ``head.score_calibration`` is set; the engine
    is left as it was.

    Raises:
        ValueError: too few correct or wrong matches to fit (see ``platt_rescale``).
    """
    from tqdm import tqdm

    from semcorr_ros.config import DEFAULT_SCORE_CALIBRATION
    from semcorr_ros.engine.confidence import calibrated_score, platt_rescale
    from semcorr_ros.eval.calibration import confidence_summary
    from semcorr_ros.eval.pck import within

    base = engine.config.score_calibration or DEFAULT_SCORE_CALIBRATION
    saved_head, saved_cache = engine.kbcnet, engine.cache_size
    engine.kbcnet = head.to(engine.device).eval().requires_grad_(False)
    engine.cache_size = max(saved_cache, len(images) + 1)
    feats, errs = [], []
    try:
        with torch.no_grad():
            for p in tqdm(pairs, desc="calibrate", unit="pair", disable=not progress):
                ok = np.isfinite(p.src_xy).all(axis=1) & np.isfinite(p.tgt_xy).all(axis=1)
                if not ok.any():
                    continue
                r = engine.match_pair(images[p.src], p.src_xy[ok], images[p.tgt], src_key=p.src, tgt_key=p.tgt)
                feats.append(r.score_features)
                errs.append(np.linalg.norm(r.xy - p.tgt_xy[ok], axis=1) / p.unit)
    finally:
        engine.kbcnet, engine.cache_size = saved_head, saved_cache
    f = np.concatenate(feats) if feats else np.zeros((0, 5))
    e = np.concatenate(errs) if errs else np.zeros(0)
    correct = within(e, alpha)
    coeffs = platt_rescale(f, correct, base)
    before, after = (confidence_summary(e, calibrated_score(torch.from_numpy(f), c).numpy(), alpha)["ece"]
                     for c in (base, coeffs))
    head.score_calibration = coeffs
    return Calibration(coeffs, int(len(e)), float(correct.mean()), float(before), float(after))


def build_cache(engine, items: Sequence[tuple[Hashable, np.ndarray]], grid: int,
                progress: bool = True) -> dict[Hashable, CachedImage]:
    """Encode each ``(key, image)`` once with the engine's frozen sources (batched) and cache it."""
    from tqdm import tqdm

    cache: dict[Hashable, CachedImage] = {}
    todo = [(k, im) for k, im in dict(items).items()]
    bar = tqdm(total=len(todo), desc="encode", unit="img", disable=not progress)
    for start in range(0, len(todo), 8):
        chunk = todo[start:start + 8]
        maps = engine.encode_maps_batch([im for _, im in chunk])
        for (key, im), ms in zip(chunk, maps):
            cache[key] = cache_image(ms, grid, (im.shape[1], im.shape[0]))
        bar.update(len(chunk))
    bar.close()
    return cache


def _make_smoke_source(base, input_size: int, channels: int, seed: int):
    class _Smoke(base):
        def __init__(self) -> None:
            super().__init__()
            self.name = "smoke"
            self.input_size = input_size
            self.layer_names = ("p4",)
            g = torch.Generator().manual_seed(seed)
            self.conv = nn.Conv2d(3, channels, 8, stride=4, padding=2, bias=False)
            with torch.no_grad():
                self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g))

        def forward_features(self, images: torch.Tensor) -> list[torch.Tensor]:
            x = images - images.mean(dim=(2, 3), keepdim=True)
            return [self.conv(x)]

    return _Smoke()


def smoke_source(input_size: int = 64, channels: int = 16, seed: int = 0):
    """The ``--smoke`` feature source (a :class:`~semcorr_ros.engine.features.base.FeatureSource`)."""
    from semcorr_ros.engine.features.base import FeatureSource

    return _make_smoke_source(FeatureSource, input_size, channels, seed)


def smoke_pairs(n_images: int = 6, size: int = 64, k: int = 6, seed: int = 0):
    """Tiny synthetic pairs: smooth random textures and circularly shifted copies, keypoints moved by the shift.

    Returns ``(images {key: uint8 [size, size, 3]}, [(src_key, tgt_key, src_xy [K, 2], tgt_xy [K, 2])])``.
    """
    rng = np.random.default_rng(seed)
    images, pairs = {}, []
    for i in range(n_images):
        small = rng.random((size // 8 + 2, size // 8 + 2, 3))
        t = torch.from_numpy(small).permute(2, 0, 1)[None].float()
        img = F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)[0]
        img = (img.permute(1, 2, 0).numpy() * 255).astype(np.uint8)
        dy, dx = (int(v) for v in rng.integers(-size // 8, size // 8 + 1, 2))
        images[("smoke", f"a{i}")] = img
        images[("smoke", f"b{i}")] = np.roll(img, (dy, dx), axis=(0, 1))
        xy = rng.uniform(size * 0.2, size * 0.8, (k, 2))
        pairs.append((("smoke", f"a{i}"), ("smoke", f"b{i}"), xy, xy + [dx, dy]))
        pairs.append((("smoke", f"b{i}"), ("smoke", f"a{i}"), xy + [dx, dy], xy))
    return images, pairs
