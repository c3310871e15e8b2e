"""Plain result types of the engine (numpy arrays, no torch, no ROS).

Conventions used everywhere in the package:
- pixel coordinates are ``(x, y)`` floats, 0-based, pixel centres at integers (x right, y down);
- 3D points are in the camera optical frame (x right, y down, z forward), metres;
- ``K`` is the 3x3 pinhole intrinsics matrix ``[[fx, 0, cx], [0, fy, cy], [0, 0, 1]]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class PoseResult:
    """Rigid transform taking reference-camera points to live-camera points: ``p_live = R @ p_ref + t``.

    Attributes:
        R: ``[3, 3]`` rotation.
        t: ``[3]`` translation, metres.
        valid: whether enough inliers supported the estimate.
        inliers: ``[K]`` bool, per reference keypoint (False where a keypoint had no 3D-3D pair).
        n_inliers: number of inliers.
        rmse: root mean square 3D residual of the inliers, metres (``nan`` when not valid).
        scale: similarity scale (1.0 for a rigid fit).
    """

    R: np.ndarray
    t: np.ndarray
    valid: bool
    inliers: np.ndarray
    n_inliers: int
    rmse: float
    scale: float = 1.0


@dataclass
class MatchResult:
    """Correspondences of the reference keypoints in one live frame.

    Attributes:
        names: ``K`` keypoint names (from the reference).
        ref_xy: ``[K, 2]`` reference pixels.
        xy: ``[K, 2]`` live pixels (float, may lie anywhere inside the image).
        score: ``[K]`` confidence in [0, 1].
        valid: ``[K]`` bool: score above the threshold and the match inside the image.
        points3d: ``[K, 3]`` live 3D points (camera optical frame, metres), ``nan`` where none.
        has_3d: ``[K]`` bool: a valid depth was found around the live pixel.
        pose: the reference-to-live rigid transform, when the reference has 3D and depth was given.
        kbc_used: whether the KBC crop path produced these matches.
        depth_weighted: whether depth-aware weighting was applied.
        prior_used: whether a consensus prior (a valid global 2D affine or 3D similarity fit) biased the
            full-frame matching.
        prior_mode_used: which consensus prior biased the full-frame matching: ``"none"``, ``"2d"`` or ``"3d"``;
            ``"track"``: a tracked frame, biased towards the keypoints predicted from the previous frames.
        prior_transform: the 3D consensus fit ``p_live = scale * R @ p_ref + t`` when one was attempted (``valid``
            when it passed its checks; ``inliers`` empty: they are coarse cells, not keypoints), else None.
        score_features: ``[K, 5]`` the confidence's ingredients (:mod:`semcorr_ros.engine.confidence`), for
            calibration and diagnostics.
        timings: seconds per stage (``features``, ``match``, ``kbc``, ``lift``, ``pose``, ``total``).
        raw_xy, raw_points3d, raw_pose: in tracking mode with a filter (:mod:`semcorr_ros.engine.tracking`) the
            frame's own measurements, before temporal filtering (``xy``, ``points3d`` and ``pose`` are then the
            filtered ones); None when nothing was filtered.
    """

    names: list[str]
    ref_xy: np.ndarray
    xy: np.ndarray
    score: np.ndarray
    valid: np.ndarray
    points3d: np.ndarray
    has_3d: np.ndarray
    pose: PoseResult | None = None
    kbc_used: bool = False
    depth_weighted: bool = False
    prior_used: bool = False
    prior_mode_used: str = "none"
    prior_transform: PoseResult | None = None
    score_features: np.ndarray | None = None
    timings: dict[str, float] = field(default_factory=dict)
    raw_xy: np.ndarray | None = None
    raw_points3d: np.ndarray | None = None
    raw_pose: PoseResult | None = None

    @staticmethod
    def empty(names: list[str] | None = None) -> "MatchResult":
        """A result with zero keypoints (empty input gives empty output)."""
        return MatchResult(names=list(names or []), ref_xy=np.zeros((0, 2)), xy=np.zeros((0, 2)),
                           score=np.zeros(0), valid=np.zeros(0, bool), points3d=np.zeros((0, 3)),
                           has_3d=np.zeros(0, bool))
