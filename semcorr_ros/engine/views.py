"""What the engine keeps of a reference: encoded views (the full image and, once KBC needs it, its crop) and the
reference's keypoints, depth and 3D points."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from semcorr_ros.engine import kbc

__all__ = ["View", "Reference"]


@dataclass
class View:
    """Features of one image (or crop) around a set of keypoints."""

    size: tuple[int, int]          # (width, height) pixels
    fmap: torch.Tensor             # [C, G, G], possibly depth-weighted (used for the cycle check)
    desc: torch.Tensor             # [K, C] keypoint descriptors
    uv: torch.Tensor               # [K, 2] normalised keypoints
    means: list[torch.Tensor]      # per-map centering vectors [1, C_m, 1, 1], reused for live maps
    coarse: torch.Tensor | None = None  # fmap pooled for the consensus fit, computed on first use


@dataclass
class Reference:
    """A cached reference: keypoints, optional 3D, features of the full image and (once KBC first needs them)
    of its KBC crop."""

    reference_id: str
    names: list[str]
    keypoints: np.ndarray          # [K, 2] pixels
    image: np.ndarray              # uint8 [H, W, 3], kept for the lazily computed crop
    depth: np.ndarray | None       # [H, W] metres (NaN invalid)
    full: View
    crop_box: kbc.Box | None
    crop: View | None
    points3d: np.ndarray | None    # [K, 3] reference camera frame, metres (NaN where unknown)
    has_3d: np.ndarray | None      # [K] bool
    depth_extent: float            # depth range of the reference keypoints, metres (0 when unknown)
    intrinsics: np.ndarray | None = None  # [3, 3] reference camera K (for the 3D consensus prior)
