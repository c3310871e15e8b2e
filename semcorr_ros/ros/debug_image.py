"""The debug overlay: the live colour image with the matched keypoints drawn on it (presentation only)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

if TYPE_CHECKING:  # the engine package imports torch: not needed to draw
    from semcorr_ros.engine.types import MatchResult

__all__ = ["draw_overlay"]

_VALID = (40, 220, 60)
_INVALID = (230, 40, 40)


def draw_overlay(rgb: np.ndarray, result: MatchResult, title: str = "") -> np.ndarray:
    """Draw the matches of ``result`` on a copy of ``rgb``.

    Valid matches: green circle with the keypoint name and score; invalid ones: small red cross at the raw match
    (when it lies inside the image). ``title`` is written in the top-left corner.

    Args:
        rgb: ``uint8 [H, W, 3]`` live colour image (not modified; read-only views are fine).
        result: the engine's matches for that image.

    Returns:
        ``uint8 [H, W, 3]`` new image.
    """
    img = Image.fromarray(np.array(rgb, dtype=np.uint8, copy=True), mode="RGB")
    draw = ImageDraw.Draw(img)
    h, w = rgb.shape[:2]
    r = max(3, round(min(h, w) / 80))
    for i, name in enumerate(result.names):
        x, y = (float(v) for v in result.xy[i])
        if not (np.isfinite(x) and np.isfinite(y)) or not (0 <= x < w and 0 <= y < h):
            continue
        if bool(result.valid[i]):
            draw.ellipse([x - r, y - r, x + r, y + r], outline=_VALID, width=2)
            draw.text((x + r + 2, y - r - 2), f"{name} {float(result.score[i]):.2f}", fill=_VALID)
        else:
            draw.line([x - r, y - r, x + r, y + r], fill=_INVALID, width=2)
            draw.line([x - r, y + r, x + r, y - r], fill=_INVALID, width=2)
    if title:
        draw.rectangle([0, 0, min(w - 1, 8 + 6 * len(title)), 14], fill=(0, 0, 0))
        draw.text((4, 2), title, fill=(255, 255, 255))
    return np.asarray(img)
