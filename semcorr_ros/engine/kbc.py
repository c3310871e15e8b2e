"""Keypoint-bounding-box-centred cropping (KBC, seed paper 2), a plug-in around any matcher.

Small objects put their keypoints a few feature cells apart, so their descriptors blur into each other. KBC
crops each image around the object's keypoints (the reference's annotated keypoints; the live frame's
first-pass matches) so that the object fills the model input, matches inside the crops, and maps the result
back to full-image pixels.

Boxes are ``(x0, y0, x1, y1)`` in pixels (continuous, ``x1``/``y1`` exclusive edges). The source crop box is
the keypoints' bounding box, made square around its centre, enlarged by ``margin`` times its side on each side,
at least ``min_side`` pixels, and shifted (not shrunk) to stay inside the image where it fits. The target crop
frames the first-pass matches at the same relative scale (:func:`framed_box`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

Box = tuple[float, float, float, float]
#: smallest target crop side, pixels (the engine encodes no image below 8 x 8)
MIN_CROP_SIDE = 8.0
T = TypeVar("T")


def keypoint_box(xy: np.ndarray, image_size: tuple[int, int], margin: float = 0.25,
                 min_side: float = 32.0, weights: np.ndarray | None = None, pad: float = 0.0) -> Box | None:
    """Square crop box around keypoints.

    Args:
        xy: ``[K, 2]`` pixels (non-finite rows ignored).
        image_size: ``(width, height)``.
        margin: enlargement per side, as a fraction of the box side.
        min_side: smallest side in pixels.
        weights: optional ``[K]`` confidences; keypoints with weight <= 0 are ignored.
        pad: at least this many pixels are added on each side (room for the error of estimated keypoints).

    Returns:
        The box, or ``None`` when no keypoint is usable.
    """
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    ok = np.isfinite(xy).all(1)
    if weights is not None:
        ok &= np.asarray(weights).reshape(-1) > 0
    if not ok.any():
        return None
    width, height = image_size
    pts = xy[ok]
    lo, hi = pts.min(0), pts.max(0)
    centre = 0.5 * (lo + hi)
    spread = float((hi - lo).max())
    side = max(spread * (1.0 + 2.0 * margin), spread + 2.0 * pad, float(min_side))
    side = min(side, float(max(width, height)))
    return _place(centre, side, image_size)


def box_fraction(box: Box, image_size: tuple[int, int]) -> float:
    """Area of the box (clipped to the image) over the image area."""
    width, height = image_size
    w = max(0.0, min(box[2], width) - max(box[0], 0.0))
    h = max(0.0, min(box[3], height) - max(box[1], 0.0))
    return w * h / float(width * height)


def crop(image: np.ndarray, box: Box) -> np.ndarray:
    """Crop ``[H, W, ...]`` to the integer pixel box covering ``box``; outside the image is zero-padded."""
    x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
    x1, y1 = int(np.ceil(box[2])), int(np.ceil(box[3]))
    h, w = image.shape[:2]
    out = np.zeros((y1 - y0, x1 - x0) + image.shape[2:], dtype=image.dtype)
    if image.dtype.kind == "f":
        out[...] = np.nan if image.ndim == 2 else 0
    sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = image[sy0:sy1, sx0:sx1]
    return out


def crop_origin(box: Box) -> np.ndarray:
    """Pixel offset ``[2]`` of the crop made by :func:`crop` (full = crop + origin)."""
    return np.array([np.floor(box[0]), np.floor(box[1])], dtype=np.float64)


def to_crop(xy: np.ndarray, box: Box) -> np.ndarray:
    """Full-image pixels -> crop pixels."""
    return np.asarray(xy, dtype=np.float64) - crop_origin(box)


def from_crop(xy: np.ndarray, box: Box) -> np.ndarray:
    """Crop pixels -> full-image pixels."""
    return np.asarray(xy, dtype=np.float64) + crop_origin(box)


MatchFn = Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def framed_box(src_xy: np.ndarray, src_box: Box, tgt_xy: np.ndarray, tgt_size: tuple[int, int],
               weights: np.ndarray | None = None) -> Box | None:
    """Target crop box that frames the object like ``src_box`` frames it in the source.

    The scale is the median ratio of pairwise distances between target and source keypoints, the centre maps
    the source box centre through the median translation at that scale; both are robust to a minority of wrong
    first-pass matches. The two crops then show the object at the same size, which is what lets features that
    are not scale invariant match inside them.

    Args:
        src_xy: ``[K, 2]`` source keypoints.
        src_box: the source crop box.
        tgt_xy: ``[K, 2]`` estimated target keypoints (first pass).
        tgt_size: ``(width, height)`` of the target image.
        weights: ``[K]``: keypoints with weight <= 0 are ignored.

    Returns:
        The box (shifted inside the image where it fits), or ``None`` with fewer than two usable keypoints.
    """
    src_xy = np.asarray(src_xy, dtype=np.float64).reshape(-1, 2)
    tgt_xy = np.asarray(tgt_xy, dtype=np.float64).reshape(-1, 2)
    ok = np.isfinite(src_xy).all(1) & np.isfinite(tgt_xy).all(1)
    if weights is not None:
        ok &= np.asarray(weights).reshape(-1) > 0
    if ok.sum() < 2:
        return None
    s, t = src_xy[ok], tgt_xy[ok]
    i, j = np.triu_indices(len(s), 1)
    ds = np.linalg.norm(s[i] - s[j], axis=1)
    dt = np.linalg.norm(t[i] - t[j], axis=1)
    good = ds > 1e-6
    if not good.any():
        return None
    scale = float(np.clip(np.median(dt[good] / ds[good]), 0.05, 20.0))
    src_centre = np.array([(src_box[0] + src_box[2]) / 2.0, (src_box[1] + src_box[3]) / 2.0])
    centre = src_centre * scale + np.median(t - s * scale, axis=0)
    side = min((src_box[2] - src_box[0]) * scale, float(max(tgt_size)))
    return _place(centre, side, tgt_size)


def _place(centre: np.ndarray, side: float, size: tuple[int, int]) -> Box:
    width, height = size
    x0, y0 = centre - side / 2.0
    x0 = min(max(x0, 0.0), max(width - side, 0.0)) if side <= width else (width - side) / 2.0
    y0 = min(max(y0, 0.0), max(height - side, 0.0)) if side <= height else (height - side) / 2.0
    return (float(x0), float(y0), float(x0 + side), float(y0 + side))


def kbc_boxes(src_xy: np.ndarray, src_size: tuple[int, int], coarse_xy: np.ndarray, coarse_score: np.ndarray,
              tgt_size: tuple[int, int], margin: float = 0.25, max_fraction: float = 1.0,
              min_score: float = 0.0) -> tuple[Box, Box] | None:
    """Decide whether to crop, and where.

    Args:
        src_xy: ``[K, 2]`` source keypoints (pixels).
        src_size, tgt_size: ``(width, height)`` of the two images.
        coarse_xy, coarse_score: first-pass matches in the target and their scores.
        margin: source box enlargement per side (fraction of its side).
        max_fraction: crop only when the object's box covers less than this fraction of either image.
        min_score: first-pass matches at or below this score do not shape the target box.

    Returns:
        ``(src_box, tgt_box)``, or ``None`` when the object is large enough or no box can be formed.
    """
    src_box = keypoint_box(src_xy, src_size, margin)
    if src_box is None:
        return None
    tgt_box = framed_box(src_xy, src_box, coarse_xy, tgt_size,
                         weights=(np.asarray(coarse_score) > min_score).astype(float))
    if tgt_box is None or tgt_box[2] - tgt_box[0] < MIN_CROP_SIDE:  # collapsed first-pass matches: no crop
        return None
    if min(box_fraction(src_box, src_size), box_fraction(tgt_box, tgt_size)) >= max_fraction:
        return None
    return src_box, tgt_box


def object_boxes(src_xy: np.ndarray, src_size: tuple[int, int], object_box: Sequence[float],
                 tgt_size: tuple[int, int], margin: float = 0.25, max_fraction: float = 1.0) -> tuple[Box, Box] | None:
    """Crop boxes when the target object's box is known (a detector, a tracker, a benchmark's box).

    The target box is ``object_box`` ``(x0, y0, x1, y1)`` made square and enlarged like a keypoint box
    (:func:`keypoint_box` of its corners); it crops only when it covers less than ``max_fraction`` of the target.

    Returns:
        ``(src_box, tgt_box)`` or ``None``.
    """
    box = keypoint_box(np.asarray(object_box, dtype=np.float64).reshape(2, 2), tgt_size, margin)
    if box is None or box_fraction(box, tgt_size) >= max_fraction:
        return None
    return keypoint_box(src_xy, src_size, margin), box


def kbc_refine(match_crops: Callable[[Box, Box], tuple[np.ndarray, T]], src_xy: np.ndarray,
               src_size: tuple[int, int], coarse_xy: np.ndarray, coarse_score: np.ndarray,
               tgt_size: tuple[int, int], margin: float = 0.25, max_fraction: float = 1.0, min_score: float = 0.0,
               object_box: Sequence[float] | None = None) -> tuple[np.ndarray, T] | None:
    """The KBC second pass around a first pass that is already done.

    Decides whether and where to crop (:func:`kbc_boxes` from the first-pass matches, or :func:`object_boxes`
    when ``object_box`` is given), calls ``match_crops(src_box, tgt_box) -> (tgt_xy [K, 2] crop pixels,
    payload)`` and maps the matches back to full-image pixels.

    Returns:
        ``(tgt_xy [K, 2] full-image pixels, payload)``, or ``None`` when it does not crop.
    """
    if object_box is not None:
        boxes = object_boxes(src_xy, src_size, object_box, tgt_size, margin, max_fraction)
    else:
        boxes = kbc_boxes(src_xy, src_size, coarse_xy, coarse_score, tgt_size, margin, max_fraction, min_score)
    if boxes is None:
        return None
    cxy, payload = match_crops(*boxes)
    return from_crop(cxy, boxes[1]), payload


def kbc_match(match: MatchFn, src_image: np.ndarray, src_xy: np.ndarray, tgt_image: np.ndarray,
              margin: float = 0.25, max_fraction: float = 1.0,
              min_score: float = 0.0) -> tuple[np.ndarray, np.ndarray, bool]:
    """Wrap any matcher ``match(src_image, src_xy, tgt_image) -> (tgt_xy [K,2], score [K])`` with KBC.

    1. First pass on the full images gives a coarse estimate of the object in the target.
    2. If the object is small (see :func:`kbc_boxes`), crop the source around its keypoints and the target
       framed like the source crop around the first-pass matches (:func:`framed_box`), match inside the
       crops, and map back (:func:`kbc_refine`, which the engine uses with its own crop pass).

    Returns:
        ``(tgt_xy [K, 2], score [K], cropped)``.
    """
    xy, score = match(src_image, src_xy, tgt_image)
    sh, sw = src_image.shape[:2]
    th, tw = tgt_image.shape[:2]
    out = kbc_refine(lambda sb, tb: match(crop(src_image, sb), to_crop(src_xy, sb), crop(tgt_image, tb)),
                     src_xy, (sw, sh), xy, score, (tw, th), margin, max_fraction, min_score)
    return (xy, score, False) if out is None else (out[0], out[1], True)
