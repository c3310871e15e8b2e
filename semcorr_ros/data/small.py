"""Small-object variant of any pair dataset, for measuring KBC (seed paper 2's setting).

The target image of every pair is shrunk so that its object's keypoint box covers about ``fraction`` of a
``width x height`` canvas, and pasted at a seeded random position over the (resized) target image of *another*
pair of the dataset, which acts as background clutter. Target keypoints and bounding box are transformed with
it, so the ``bbox`` PCK threshold scales with the object, as in SPair-71k's small-object split.
"""

from __future__ import annotations

import hashlib

import numpy as np
from PIL import Image

from semcorr_ros.data.base import PairDataset, PairSample, keypoint_bbox
from semcorr_ros.errors import ConfigError


class SmallObjectPairs:
    """Wrap a pair dataset so that every target object is small (sequence of :class:`PairSample`).

    Args:
        base: the dataset to wrap.
        fraction: target object's box area / canvas area, in (0, 0.5].
        size: ``(width, height)`` of the canvas (default 640x480, a RealSense colour frame).
        seed: placement and background choice are deterministic per pair id and seed.
    """

    def __init__(self, base: PairDataset, fraction: float = 0.03, size: tuple[int, int] = (640, 480),
                 seed: int = 0) -> None:
        if not 0.0 < fraction <= 0.5:
            raise ConfigError(f"small-object fraction must be in (0, 0.5], got {fraction}")
        self.base, self.fraction, self.size, self.seed = base, float(fraction), tuple(size), int(seed)
        self.categories = base.categories

    def __len__(self) -> int:
        return len(self.base)

    def pair_info(self, index: int):
        return self.base.pair_info(index)

    def __getitem__(self, index: int) -> PairSample:
        s = self.base[index]
        digest = hashlib.sha256(f"{self.seed}/{s.pair_id}".encode()).digest()
        rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
        width, height = self.size
        bg_index = (index + 1 + int(rng.integers(0, max(len(self.base) - 1, 1)))) % len(self.base)
        background = self.base[bg_index].tgt_image if len(self.base) > 1 else s.tgt_image
        canvas = np.asarray(Image.fromarray(background).resize((width, height), Image.BILINEAR)).copy()
        box = s.tgt_bbox if s.tgt_bbox is not None else keypoint_bbox(s.tgt_kps)
        area = max((box[2] - box[0]) * (box[3] - box[1]), 1.0)
        scale = min(np.sqrt(self.fraction * width * height / area), 1.0)
        th, tw = s.tgt_image.shape[:2]
        nw, nh = max(int(round(tw * scale)), 1), max(int(round(th * scale)), 1)
        small = np.asarray(Image.fromarray(s.tgt_image).resize((nw, nh), Image.BILINEAR))
        x0 = int(rng.integers(0, max(width - nw, 0) + 1))
        y0 = int(rng.integers(0, max(height - nh, 0) + 1))
        canvas[y0:y0 + nh, x0:x0 + nw] = small[:height - y0, :width - x0]
        sx, sy = nw / tw, nh / th
        # pixel centres: x' = (x + 0.5) * s - 0.5 + offset
        kps = (s.tgt_kps + 0.5) * [sx, sy] - 0.5 + [x0, y0]
        bbox = None if s.tgt_bbox is None else np.array([s.tgt_bbox[0] * sx + x0, s.tgt_bbox[1] * sy + y0,
                                                         s.tgt_bbox[2] * sx + x0, s.tgt_bbox[3] * sy + y0])
        return PairSample(pair_id=s.pair_id, category=s.category, src_name=s.src_name,
                          tgt_name=f"{s.tgt_name}@small:{s.pair_id}", src_image=s.src_image, tgt_image=canvas,
                          src_kps=s.src_kps, tgt_kps=kps, src_bbox=s.src_bbox, tgt_bbox=bbox, kp_ids=s.kp_ids,
                          kp_names=s.kp_names, meta=dict(s.meta, small_object_scale=scale))
