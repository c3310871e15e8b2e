"""Contrastive (InfoNCE) learning of the fusion weights on cached per-map similarities.

For every annotated source keypoint ``k`` of a pair, the fused source descriptor (bilinear at the keypoint) is
compared with every cell ``j`` of the target's fused map; the similarities divided by a temperature ``tau`` are
the logits of a softmax over the ``G x G`` cells, and the positive is the target keypoint's position: its 4
surrounding cells with bilinear weights (``target="bilinear"``, default) or the nearest cell (``"hard"``)::

    loss_k = - sum_j p_kj log softmax_j(sim[k, j] / tau)

The trainable parameters are the fusion logits ``a`` (``w = softmax(a)``, one per ``(source, layer)`` map) and,
optionally, ``log tau``. On RGB-D pairs (the synthetic scenes) the depth-aware module's two parameters are learned
with them (``learn_depth``): every target cell's similarity is multiplied by its depth weight
(:func:`semcorr_ros.engine.depth_aware.depth_weights`, as the engine's depth-aware pass does),

    w_c = floor + (1 - floor) exp(-(mu_c - m)^2 / (2 (s^2 + var_c))),   s = max(1.4826 MAD, spread * extent, sigma_min),

with the object depth model ``(m, MAD)`` fitted, as in the engine, at the first-pass matches (here: the cell
means at the fused-similarity argmax of each keypoint, recomputed at every step without gradient), ``extent``
the reference keypoints' depth range, and ``floor = sigmoid(.)``, ``spread = exp(.)`` trained through the loss.

The backbones are frozen and never run here: ``sim`` is assembled from the cached per-map
tensors of :mod:`semcorr_ros.lab.train.fusion_data`, so an epoch over hundreds of pairs takes well under a second on
the CPU. Training is deterministic for a given seed (pair order from a seeded generator, CPU float32 arithmetic).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from semcorr_ros.engine.fusion import FeatureFusion, save_fusion
from semcorr_ros.errors import ConfigError
from semcorr_ros.lab.train.fusion_data import DepthTensors, PairTensors

log = logging.getLogger(__name__)

TARGETS = ("bilinear", "hard")


def fused_similarity(sims: torch.Tensor, norms: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Fused cosine similarity from per-map tensors.

    Args:
        sims: ``[M, K, N]`` per-map ``<d_m[k], f_m[j]>`` (unnormalised source descriptors).
        norms: ``[M, K]`` ``||d_m[k]||^2``.
        weights: ``[M]`` fusion weights (sum 1).

    Returns:
        ``[K, N]`` ``sum_m w_m S_m / sqrt(sum_m w_m n_m)``: the engine's cosine between the re-normalised fused
        source descriptor and each fused target cell.
    """
    num = torch.einsum("m,mkn->kn", weights, sims.float())
    den = torch.einsum("m,mk->k", weights, norms).clamp_min(1e-12).sqrt()
    return num / den[:, None]


def info_nce(sim: torch.Tensor, target_idx: torch.Tensor, target_w: torch.Tensor, temperature: torch.Tensor | float,
             target: str = "bilinear") -> torch.Tensor:
    """Mean InfoNCE loss of ``K`` keypoints over ``N`` candidate cells.

    Args:
        sim: ``[K, N]`` similarities.
        target_idx: ``[K, P]`` flat indices of the positive cells.
        target_w: ``[K, P]`` their weights (sum 1 per row).
        temperature: softmax temperature (> 0).
        target: ``bilinear`` (soft positive over the ``P`` cells) or ``hard`` (the heaviest one only).

    Returns:
        Scalar loss (0 for ``K == 0``).
    """
    if target not in TARGETS:
        raise ConfigError(f"unknown InfoNCE target {target!r}; valid: {', '.join(TARGETS)}")
    if sim.shape[0] == 0:
        return sim.sum() * 0.0
    logp = torch.log_softmax(sim / temperature, dim=1)
    picked = logp.gather(1, target_idx)
    if target == "hard":
        best = target_w.argmax(dim=1, keepdim=True)
        return -picked.gather(1, best).mean()
    return -(picked * target_w).sum(1).mean()


def depth_cell_weights(sim: torch.Tensor, depth: DepthTensors, floor: torch.Tensor, spread: torch.Tensor,
                       sigma_min: float) -> torch.Tensor | None:
    """Depth-aware weights ``[N]`` of the target cells for one pair (differentiable in ``floor`` and
    ``spread``), or ``None`` when no first-pass match lands on a cell with valid depth.

    Args:
        sim: ``[K, N]`` fused similarities (the first pass: each keypoint's argmax cell gives its depth).
        depth: the pair's :class:`DepthTensors`.
        floor, spread: scalar tensors, the module's parameters.
        sigma_min: lower bound of the spread, metres.
    """
    with torch.no_grad():
        best = sim.argmax(dim=1)
        ok = depth.cell_valid[best]
        if not bool(ok.any()):
            return None
        z = depth.cell_mean[best][ok].double()
        m = z.median()
        mad = (z - m).abs().median()
        base = max(1.4826 * float(mad), float(sigma_min))
    s = torch.clamp(spread * depth.extent, min=base)
    gauss = torch.exp(-((depth.cell_mean - float(m)) ** 2) / (2.0 * (s ** 2 + depth.cell_var)))
    w = floor + (1.0 - floor) * gauss
    return torch.where(depth.cell_valid, w, torch.ones_like(w))


def batch_loss(pairs: Sequence[PairTensors], logits: torch.Tensor, log_tau: torch.Tensor,
               target: str = "bilinear", depth_params: tuple[torch.Tensor, torch.Tensor] | None = None,
               sigma_min: float = 0.05) -> torch.Tensor:
    """Mean InfoNCE over every keypoint of ``pairs`` (each keypoint counts once).

    ``depth_params = (floor_logit, log_spread)``: pairs with depth get the depth-aware cell weights
    (:func:`depth_cell_weights`, ``floor = sigmoid(floor_logit)``, ``spread = exp(log_spread)``).
    """
    w = torch.softmax(logits, dim=0)
    tau = log_tau.exp()
    total, count = logits.new_zeros(()), 0
    for p in pairs:
        k = p.num_keypoints
        if k == 0:
            continue
        sim = fused_similarity(p.sims, p.norms, w)
        if depth_params is not None and p.depth is not None:
            cw = depth_cell_weights(sim, p.depth, torch.sigmoid(depth_params[0]), depth_params[1].exp(), sigma_min)
            if cw is not None:
                sim = sim * cw[None]
        total = total + info_nce(sim, p.target_idx, p.target_w, tau, target) * k
        count += k
    return total / max(count, 1)


@torch.no_grad()
def argmax_pck(pairs: Sequence[PairTensors], weights: torch.Tensor, radius_cells: float = 1.0) -> float:
    """Fraction of keypoints whose fused-similarity argmax cell is within ``radius_cells`` of the target
    position (a quick training-time diagnostic, not the benchmark PCK)."""
    hits = n = 0
    for p in pairs:
        if p.num_keypoints == 0:
            continue
        sim = fused_similarity(p.sims, p.norms, weights)
        hits += grid_hits(sim, p.target_idx, p.target_w, int(round(math.sqrt(sim.shape[1]))), radius_cells)
        n += p.num_keypoints
    return hits / max(n, 1)


def grid_hits(sim: torch.Tensor, target_idx: torch.Tensor, target_w: torch.Tensor, grid: int,
              radius_cells: float) -> int:
    """How many of the ``K`` rows of ``sim`` (``[K, grid*grid]``) have their argmax cell within ``radius_cells``
    of the bilinear target position."""
    best = sim.argmax(1)
    bx, by = (best % grid).float(), (best // grid).float()
    tx = ((target_idx % grid).float() * target_w).sum(1)
    ty = ((target_idx // grid).float() * target_w).sum(1)
    return int((((bx - tx) ** 2 + (by - ty) ** 2).sqrt() <= radius_cells).sum())


def run_epoch(pairs: Sequence, batch_pairs: int, gen: torch.Generator, step) -> float:
    """One pass over ``pairs`` in a random order drawn from ``gen``, ``batch_pairs`` at a time; ``step(batch)``
    takes one optimiser step and returns the batch's mean loss per keypoint. Returns the epoch's mean loss per
    keypoint."""
    order = torch.randperm(len(pairs), generator=gen).tolist()
    total, count = 0.0, 0
    for j in range(0, len(order), batch_pairs):
        batch = [pairs[i] for i in order[j:j + batch_pairs]]
        k = sum(p.num_keypoints for p in batch)
        total += step(batch) * k
        count += k
    return total / max(count, 1)


@dataclass
class TrainResult:
    """Outcome of :func:`train_fusion`."""

    keys: list[str]
    logits: torch.Tensor
    temperature: float
    loss_curve: list[float]
    holdout_curve: list[float] = field(default_factory=list)
    seconds: float = 0.0
    depth_floor: float | None = None   # learned depth-aware parameters (None: not learned)
    depth_spread: float | None = None

    @property
    def weights(self) -> dict[str, float]:
        return {k: float(v) for k, v in zip(self.keys, torch.softmax(self.logits, 0))}

    def fusion(self, grid: int | None = None, center: bool = False) -> FeatureFusion:
        """A :class:`FeatureFusion` with the learned logits."""
        f = FeatureFusion(self.keys, grid=grid, center=center)
        with torch.no_grad():
            f.logits.copy_(self.logits)
        return f


def train_fusion(pairs: Sequence[PairTensors], keys: Sequence[str], epochs: int = 40, seed: int = 0,
                 lr: float = 0.05, batch_pairs: int = 16, temperature: float = 0.05,
                 learn_temperature: bool = True, init_logits: torch.Tensor | None = None,
                 target: str = "bilinear", holdout: Sequence[PairTensors] = (), progress: bool = True,
                 learn_depth: bool = False, depth_floor: float = 0.25, depth_spread: float = 1.0,
                 depth_sigma_min: float = 0.05) -> TrainResult:
    """Learn fusion logits (and optionally the temperature) with InfoNCE.

    Args:
        pairs: training pairs' cached tensors (their ``M`` must equal ``len(keys)``).
        keys: the fusion's map names, in order.
        epochs: passes over ``pairs``.
        seed: pair order (the only randomness).
        lr: Adam learning rate.
        batch_pairs: pairs per optimisation step.
        temperature: initial (or fixed) InfoNCE temperature.
        learn_temperature: also learn ``log tau``.
        init_logits: starting logits ``[M]`` (default zeros = uniform weights).
        target: ``bilinear`` or ``hard`` positive.
        holdout: pairs whose loss is tracked each epoch (never trained on).
        progress: tqdm bar over epochs.
        learn_depth: also learn the depth-aware ``floor`` and ``spread`` on the pairs that carry depth (see the
            module docstring); needs at least one such pair.
        depth_floor, depth_spread: their initial values (the engine defaults); ``depth_sigma_min`` stays fixed.

    Returns:
        :class:`TrainResult` with one mean training loss per epoch (``loss_curve[0]`` is before training).

    Raises:
        ConfigError: no training keypoints, bad options or tensors that do not fit ``keys``.
    """
    if epochs < 0 or batch_pairs < 1 or not lr > 0 or not temperature > 0:
        raise ConfigError(f"need epochs >= 0, batch_pairs >= 1, lr > 0, temperature > 0; got {epochs}, "
                          f"{batch_pairs}, {lr}, {temperature}")
    if target not in TARGETS:
        raise ConfigError(f"unknown InfoNCE target {target!r}; valid: {', '.join(TARGETS)}")
    pairs = [p for p in pairs if p.num_keypoints > 0]
    if not pairs:
        raise ConfigError("no training pair has a valid keypoint")
    if learn_depth and not any(p.depth is not None for p in pairs):
        raise ConfigError("learn_depth needs training pairs with depth (e.g. --dataset synth)")
    if learn_depth and not (0.0 < depth_floor < 1.0 and depth_spread > 0):
        raise ConfigError(f"need 0 < depth_floor < 1 and depth_spread > 0, got {depth_floor}, {depth_spread}")
    m = len(keys)
    bad = [p.pair_id for p in list(pairs) + list(holdout) if p.sims.shape[0] != m]
    if bad:
        raise ConfigError(f"pair tensors of {bad[0]!r} have {pairs[0].sims.shape[0]} maps, fusion has {m}")
    t0 = time.perf_counter()
    logits = torch.zeros(m) if init_logits is None else init_logits.detach().clone().float()
    logits.requires_grad_(True)
    log_tau = torch.tensor(math.log(temperature), requires_grad=learn_temperature)
    params = [logits] + ([log_tau] if learn_temperature else [])
    dparams = None
    if learn_depth:
        dparams = (torch.tensor(math.log(depth_floor / (1.0 - depth_floor)), requires_grad=True),
                   torch.tensor(math.log(depth_spread), requires_grad=True))
        params += list(dparams)
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(int(seed))

    def mean_loss(items: Sequence[PairTensors]) -> float:
        with torch.no_grad():
            return float(batch_loss(items, logits, log_tau, target, dparams, depth_sigma_min)) if items \
                else float("nan")

    curve, hcurve = [mean_loss(pairs)], []
    if holdout:
        hcurve.append(mean_loss(holdout))
    bar = tqdm(range(epochs), desc="train-fusion", unit="epoch", disable=not progress)

    def step(batch: list[PairTensors]) -> float:
        opt.zero_grad()
        loss = batch_loss(batch, logits, log_tau, target, dparams, depth_sigma_min)
        loss.backward()
        opt.step()
        with torch.no_grad():
            log_tau.clamp_(math.log(1e-3), math.log(10.0))
            if dparams is not None:  # keep the config's ranges: floor in [0.01, 0.99], spread in [0.05, 10]
                dparams[0].clamp_(math.log(0.01 / 0.99), math.log(0.99 / 0.01))
                dparams[1].clamp_(math.log(0.05), math.log(10.0))
        return float(loss.detach())

    for _ in bar:
        curve.append(run_epoch(pairs, batch_pairs, gen, step))
        if holdout:
            hcurve.append(mean_loss(holdout))
        post = {"loss": f"{curve[-1]:.4f}", "tau": f"{float(log_tau.detach().exp()):.4f}"}
        if dparams is not None:
            floor, spread = torch.sigmoid(dparams[0].detach()), dparams[1].detach().exp()
            post.update(floor=f"{float(floor):.3f}", spread=f"{float(spread):.3f}")
        bar.set_postfix(post)
    bar.close()
    result = TrainResult(list(keys), logits.detach().clone(), float(log_tau.detach().exp()), curve, hcurve,
                         time.perf_counter() - t0)
    if dparams is not None:
        result.depth_floor = float(torch.sigmoid(dparams[0].detach()))
        result.depth_spread = float(dparams[1].detach().exp())
    return result


def write_outputs(result: TrainResult, out: str | Path) -> tuple[Path, Path]:
    """Write the weights file (``semcorr-fusion-v1``, or ``-v2`` for a projected result) and the loss curve PNG
    next to it.

    Returns:
        ``(weights path, plot path)``; the plot is ``<out stem>_loss.png``.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_fusion(result.fusion(), out)
    plot = out.with_name(out.stem + "_loss.png")
    plot_loss(result, plot)
    return out, plot


def plot_loss(result: TrainResult, path: Path) -> None:
    """Training (and held-out) InfoNCE loss per epoch, PNG."""
    from matplotlib.figure import Figure

    from semcorr_ros.eval.figures import save_figure

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    ep = np.arange(len(result.loss_curve))
    ax.plot(ep, result.loss_curve, label="train (epoch mean; 0 = before training)")
    if result.holdout_curve:
        ax.plot(np.arange(len(result.holdout_curve)), result.holdout_curve, label="held-out")
    ax.set_xlabel("epoch")
    ax.set_ylabel("InfoNCE loss")
    ax.set_title("fusion training: " + ", ".join(f"{k.split('/')[-1]} {v:.2f}" for k, v in result.weights.items())
                 if len(result.keys) <= 6 else "fusion training", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
