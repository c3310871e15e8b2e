"""Building the engine's parts from :class:`~semcorr_ros.config.EngineConfig`: device, feature sources, fusion,
the KBCNet head. The device is picked here, once, at the edge; the models read it from their inputs."""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import torch
from torch import nn

from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import multiscale
from semcorr_ros.engine.features import build_source, preferred_cpu_dtype
from semcorr_ros.engine.features.base import FeatureSource
from semcorr_ros.engine.features.runtime import apply_runtimes, resolve_runtime
from semcorr_ros.engine.fusion import FeatureFusion, load_fusion
from semcorr_ros.engine.kbcnet import KBCNetHead, load_kbcnet
from semcorr_ros.errors import ConfigError, WeightsError

__all__ = ["resolve_device", "configured_sources", "configured_fusion", "configured_kbcnet"]


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without CUDA raises :class:`ConfigError`."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available (use 'cpu' or 'auto')")
    return torch.device(name)


def configured_sources(cfg: EngineConfig, device: torch.device,
                       sources: Sequence[FeatureSource] | None = None) -> tuple[nn.ModuleList, dict[str, str]]:
    """The feature sources (``cfg.sources`` unless ``sources`` are given), expanded over ``cfg.multiscale``,
    frozen, in eval mode, on ``device``, each on its runtime (``cfg.runtime``, :mod:`.features.runtime`).

    Returns:
        the sources and, per source name, its runtime (``torch`` or ``openvino``).
    """
    built = sources is None
    dtype = preferred_cpu_dtype() if device.type == "cpu" and cfg.cpu_bf16 else None
    if dtype == torch.float32:
        dtype = None
    # built in float32 when a source may run in OpenVINO (it converts the float32 weights); the torch ones are
    # cast to ``dtype`` afterwards, as build_source would
    ov = any(resolve_runtime(cfg.runtime, n, device) == "openvino" for n in cfg.sources) if built else False
    build_dtype = None if ov else dtype
    if sources is None:
        sources = [build_source(n, weights=cfg.weights.get(n), layers=cfg.layers.get(n),
                                input_size=cfg.input_sizes.get(n), dtype=build_dtype) for n in cfg.sources]
    if tuple(cfg.multiscale) != (1.0,):
        sources = multiscale.expand_sources(sources, cfg.multiscale, built=built, weights=cfg.weights,
                                            layers=cfg.layers, dtype=build_dtype)
    runtimes = apply_runtimes(sources, cfg.runtime, device, cpu_bf16=cfg.cpu_bf16,
                              torch_dtype=dtype if ov else None)
    return nn.ModuleList(sources).eval().requires_grad_(False).to(device), runtimes


def configured_fusion(fusion: FeatureFusion, path: str | None) -> FeatureFusion:
    """Load trained fusion weights into ``fusion``: from ``path``, else the shipped file when it fits."""
    if path == "none":
        return fusion
    if path is not None:
        load_fusion(fusion, path)
        return fusion
    shipped = resources.files("semcorr_ros") / "models" / "fusion_default.safetensors"
    if shipped.is_file():
        try:
            load_fusion(fusion, str(shipped))
        except WeightsError:
            pass  # shipped weights are for other maps: keep the source_weights initialisation
    return fusion


def default_fusion(cfg: EngineConfig, sources: nn.ModuleList) -> FeatureFusion:
    """Fusion of every source layer, initialised from ``cfg.source_weights``, then ``cfg.fusion_weights``."""
    keys = layer_keys(sources)
    init = [cfg.source_weights.get(multiscale.base_name(s.name), 1.0) / len(s.layer_names)
            for s in sources for _ in s.layer_names]
    return configured_fusion(FeatureFusion(keys, grid=cfg.grid, weights=init, center=cfg.center_features),
                             cfg.fusion_weights)


def layer_keys(sources: nn.ModuleList) -> list[str]:
    """``source/layer`` names of every map the sources give, in order."""
    return [f"{s.name}/{layer}" for s in sources for layer in s.layer_names]


def configured_kbcnet(cfg: EngineConfig, keys: list[str], device: torch.device) -> KBCNetHead:
    """The KBCNet head of ``matcher: kbcnet``: from ``kbcnet_weights``, else the file shipped with the package."""
    path = cfg.kbcnet_weights
    if path is None:
        shipped = resources.files("semcorr_ros") / "models" / "kbcnet_default.safetensors"
        if not shipped.is_file():
            raise ConfigError("matcher 'kbcnet' needs a trained head and none ships with this package: train one "
                              "with `semcorr train-kbcnet --dataset pf-willow --root DIR --out head.safetensors` and "
                              "pass it with --kbcnet-weights (ROS parameter kbcnet_weights), or use matcher 'nn'")
        path = str(shipped)
    return load_kbcnet(path, keys=keys).to(device).eval().requires_grad_(False)
