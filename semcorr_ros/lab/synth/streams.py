"""Random streams of the synthetic scenes: one independent, stable ``numpy`` generator per (seed, category,
purpose[, index]), so that every part of a scene (instance, materials, room, clutter, trajectory, depth noise,
the reference) draws from its own stream and changing one never shifts another.

No arrays, units or frames here: the streams feed :mod:`.scene`, :mod:`.reference` and :mod:`.assembly`.
"""

from __future__ import annotations

import zlib

import numpy as np


def _rng(spec_seed: int, category: str, purpose: str, *extra: int) -> np.random.Generator:
    """An independent, stable stream per (seed, category, purpose[, index])."""
    return np.random.default_rng([int(spec_seed), zlib.crc32(category.encode()), zlib.crc32(purpose.encode()),
                                  *[int(e) for e in extra]])
