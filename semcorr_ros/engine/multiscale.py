"""Multi-scale feature extraction: every feature source run at several model input sizes, fused as more maps.

The sources resize each image to a fixed square input (``input_size``), so "encoding at scale ``s``" means running
the backbone at input side ``round(s x input_size)`` (snapped to the source's size multiple: 32 for
EfficientNet-Lite2, the 14-pixel patch for DINOv2). A larger input sees finer detail (more cells per object
part), a smaller one a wider context per cell. Each scaled copy is one more source named ``"<name>@<scale>"``;
its maps enter the fusion like any other map (centred with the reference's means, resampled to the common grid,
normalised), so the fused cosine similarity is the weighted mean of the per-scale similarities: an average over
scales, with each source keeping its configured weight split equally over its scales and layers. The scale 1.0
copy is the source itself (same name), so ``multiscale: [1.0]`` is exactly the single-scale engine.

Built sources (``EngineConfig.sources``) are rebuilt at the scaled size (their static padding and position
embeddings depend on it); injected sources (tests, custom models) are shallow copies with the input size changed.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch

from semcorr_ros.engine.features.base import FeatureSource
from semcorr_ros.errors import ConfigError

__all__ = ["base_name", "scaled_input_size", "expand_sources"]

_SEP = "@"


def base_name(name: str) -> str:
    """The configured source name of a (possibly scaled) source name ``"<name>@<scale>"``."""
    return name.split(_SEP, 1)[0]


def _size_rule(src: FeatureSource) -> tuple[int, int, int]:
    """``(multiple, lo, hi)`` of valid input sizes of ``src``."""
    from semcorr_ros.engine.features import dinov2, effnet

    if isinstance(src, dinov2.Dinov2Source):
        return dinov2.PATCH, *dinov2.INPUT_SIZE_RANGE
    if isinstance(src, effnet.EfficientNetLite2Source):
        return 32, *effnet.INPUT_SIZE_RANGE
    return 1, 8, 4096


def scaled_input_size(size: int, scale: float, multiple: int = 1, lo: int = 8, hi: int = 4096) -> int:
    """``scale x size`` snapped to the nearest multiple of ``multiple`` (halves up) inside ``[lo, hi]``."""
    s = int(math.floor(scale * size / multiple + 0.5)) * multiple
    return int(min(max(s, lo + (-lo) % multiple), hi - hi % multiple))


def expand_sources(sources: Sequence[FeatureSource], scales: Sequence[float], *, built: bool,
                   weights: dict[str, str] | None = None, layers: dict | None = None,
                   dtype: torch.dtype | None = None) -> list[FeatureSource]:
    """One source per ``(source, scale)``, scale-major in the order of ``scales``.

    Args:
        sources: the single-scale sources.
        scales: input-size factors (a factor 1.0 keeps the source itself).
        built: the sources were built from the configuration (rebuild them with :func:`build_source` at the
            scaled size); otherwise shallow copies with ``input_size`` changed.
        weights, layers, dtype: as given to :func:`semcorr_ros.engine.features.build_source` (built sources).
    """
    from semcorr_ros.engine.features import build_source

    out: list[FeatureSource] = []
    for scale in scales:
        for src in sources:
            if scale == 1.0:
                out.append(src)
                continue
            multiple, lo, hi = _size_rule(src)
            size = scaled_input_size(src.input_size, scale, multiple, lo, hi)
            name = f"{src.name}{_SEP}{scale:g}"
            if built:
                try:
                    new = build_source(src.name, weights=(weights or {}).get(src.name),
                                       layers=(layers or {}).get(src.name), input_size=size, dtype=dtype)
                except ConfigError as exc:
                    raise ConfigError(f"multiscale {scale:g}: cannot build {src.name} at input {size}: {exc}") from exc
            else:
                new = copy.copy(src)
                new.input_size = size
            new.name = name
            out.append(new)
    return out
