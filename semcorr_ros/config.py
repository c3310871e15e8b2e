"""The one typed place for defaults: engine options as a dataclass, validated on construction.

Every field is declared with :func:`semcorr_ros.options.option`: type, default, range or choices, one-line
description, whether it can change at run time and its tier live here once; validation, the node's ROS
parameters, the CLI flags and the docs table (``python -m semcorr_ros.options --markdown``) derive from them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from typing import Any

from semcorr_ros.errors import ConfigError
from semcorr_ros.options import ADVANCED, EXPERIMENTAL, option, validate

#: The embedded default model: real pretrained weights that ship inside installed packages (no download).
DEFAULT_SOURCES: tuple[str, ...] = ("effnet-lite2", "dinov2-s-imgfocus")

#: Fusion weight of each default source (split equally among its layers), chosen on pf-willow-dev; used when no
#: fusion weights file applies (the default model loads the shipped, learned models/fusion_default.safetensors).
DEFAULT_SOURCE_WEIGHTS: dict[str, float] = {"effnet-lite2": 0.7, "dinov2-s-imgfocus": 0.3}

#: Calibrated-confidence coefficients (bias, peak, cycle, prior, no_prior) fitted on the PF-WILLOW development split
#: with the hand-set fusion (source_weights): `python lab/dev/calibrate_scores.py <pf-willow-dev root>` (ECE
#: 0.409 -> 0.024 in-sample; 0.025 with the shipped learned fusion).
DEFAULT_SCORE_CALIBRATION: tuple[float, ...] = (-1.1842, 4.7543, -0.0099, -0.1443, -1.2658)

DEVICES = ("auto", "cpu", "cuda")
KBC_MODES = ("off", "on", "auto")
MATCHERS = ("nn", "kbcnet")
DEPTH_CELL_MODES = ("mean", "max")
CONSENSUS_MODES = ("auto", "2d", "3d")
RUNTIMES = ("auto", "torch", "openvino")
TRACKING_MODES = ("off", "on")
TRACKING_FILTERS = ("one-euro", "off")

_model = partial(option, group="model", runtime=False)
_matching = partial(option, group="matching")
_crop = partial(option, group="crop")
_depth = partial(option, group="depth")
_consensus = partial(option, group="consensus")
_pose = partial(option, group="pose")


@dataclass
class EngineConfig:
    """Options of :class:`semcorr_ros.engine.CorrespondenceEngine` (each field's description: its ``option``;
    the table of all of them: docs/node.md, ``python -m semcorr_ros.options --markdown``).

    Units: depths and distances in metres, ``*_sigma``/``*_threshold`` of the consensus and ``cycle_sigma`` as
    fractions of the image side, ``softargmax_radius``/``grid`` in feature cells, ``depth_radius`` in pixels.
    """

    # -- model (built once: read-only in the node)
    sources: tuple[str, ...] = _model(
        DEFAULT_SOURCES, "Feature sources to fuse (effnet-lite2, dinov2-s-imgfocus = the embedded default; "
        "dinov2_vit{s,b,l,g}14[_reg] need a weights file; sd: docs/sources.md).", min_items=1, param="backbone",
        flag="--backbone", metavar="SRC,SRC,...")
    weights: dict[str, str] = _model(
        description="Weights files as SOURCE=PATH entries, e.g. `['dinov2_vitb14=/models/dinov2_vitb14.pth']` "
        "(sd: a local diffusers model folder); not set: the weights shipped with the installed packages.", factory=dict,
        metavar="SOURCE=PATH")
    #: Per-source layer indices overriding the source's defaults: Python API only (no ROS parameter or flag).
    layers: dict[str, tuple[int, ...]] = field(default_factory=dict)
    input_sizes: dict[str, int] = _model(
        description="Square model input side per backbone entry (same order, 0 = that source's default); not set: the "
        "defaults.", factory=dict, tier=ADVANCED, metavar="N,N,...")
    source_weights: dict[str, float] = _model(
        description="Relative fusion weight per backbone entry (same order) when no fusion weights file applies "
        "(the default backbone uses the shipped learned file, see `fusion_weights`); not set: the engine's defaults "
        "(effnet-lite2 0.7, dinov2-s-imgfocus 0.3, others 1.0).", factory=lambda: dict(DEFAULT_SOURCE_WEIGHTS),
        range=(0.0, 1e6), tier=ADVANCED, metavar="W,W,...")
    fusion_weights: str | None = _model(
        None, "Fusion weights file, `semcorr-fusion-v1` or `-v2` (projected, from `train-fusion --fusion-model "
        "projected`; not with `matcher: kbcnet`) (`\"\"` = the file shipped with the package when it fits the "
        "backbone, else source_weights; `none` = source_weights).", metavar="PATH")
    center_features: bool = _model(
        True, "Subtract each feature map's spatial mean (per image) before normalising.", tier=ADVANCED)
    device: str = _model(
        "auto", "Inference device: auto (CUDA when available), cpu, cuda or cuda:N.", choices=DEVICES,
        pattern=r"cuda:\d+", pattern_label="cuda:N")
    fp16: bool = _model(False, "Half-precision autocast on CUDA (ignored on the CPU).")
    cpu_bf16: bool = _model(
        True, "Run the backbones in bfloat16 on CPUs with native bfloat16 (AVX512-BF16/AMX; ~1.5x faster, "
        "features within cosine 0.998 of float32); ignored elsewhere.")
    runtime: str = _model(
        "auto", "Runtime of the feature sources: torch, openvino (CPU; the sources compiled once at start-up, cached "
        "on disk) or auto (openvino for the DINOv2 sources on the CPU when installed, else torch; docs/sources.md).",
        choices=RUNTIMES)
    # 32 = DINOv2-S's patch grid at 224 px upsampled 2x; chosen on pf-willow-dev: better and cheaper than 40.
    grid: int = _model(32, "Side, in cells, of the lattice the fused feature map is resampled to.",
                       range=(4, 256), tier=ADVANCED)
    # -- matching
    softargmax_radius: int = _matching(
        4, "Half-size, in feature cells, of the soft-argmax window around the argmax.", range=(0, 10),
        tier=ADVANCED)
    softargmax_temperature: float = _matching(
        0.02, "Softmax temperature on cosine similarities in that window.", range=(1e-4, 10.0), tier=ADVANCED)
    cycle_sigma: float = _matching(
        0.05, "Scale (fraction of the image side) of the cycle-consistency error in the score.",
        range=(1e-4, 10.0), tier=ADVANCED)
    score_threshold: float = _matching(
        0.2, "Matches scoring below are published with valid = false (the score is a calibrated probability of "
        "a correct match).", range=(0.0, 1.0))
    # Fitted by lab/dev/calibrate_scores.py; a kbcnet head carrying its own calibration replaces the default.
    score_calibration: tuple[float, ...] | None = _matching(
        DEFAULT_SCORE_CALIBRATION, "Coefficients of the calibrated confidence (bias, peak, cycle, prior, "
        "no_prior); not set: the engine's fitted defaults, or with matcher kbcnet the head's own calibration "
        "when its file has one.", length=5, runtime=False, tier=ADVANCED, metavar="B,P,C,PR,NP")
    # -- depth-aware weighting and lifting
    depth_aware: bool = _depth(
        True, "Weight the live features by how plausible each cell's depth is for the object.", reencodes=True)
    depth_floor: float = _depth(
        0.25, "Weight of cells at implausible depths (0 removes them, 1 disables the weighting).", range=(0.0, 1.0),
        reencodes=True, tier=ADVANCED)
    depth_sigma_min: float = _depth(0.05, "Smallest object depth spread, metres.", range=(1e-4, 100.0),
                                    reencodes=True, tier=ADVANCED)
    depth_spread: float = _depth(
        1.0, "Object depth spread as a multiple of the reference keypoints' depth range (learned by "
        "train-fusion on RGB-D data).", range=(0.0, 10.0), reencodes=True, tier=ADVANCED)
    depth_cells: str = _depth(
        "mean", "Depth-aware cell statistic: mean (Gaussian overlap of the cell's mean depth with the object's) "
        "or max (the cell's most plausible pixel: cells holding any pixel in the object's depth range keep "
        "weight 1; see docs/accuracy.md).", choices=DEPTH_CELL_MODES, reencodes=True, tier=EXPERIMENTAL)
    depth_radius: int = _depth(2, "Half-size in pixels of the window for robust depth sampling at a keypoint.",
                               range=(0, 50), reencodes=True, tier=ADVANCED)
    depth_scale: float = _depth(0.001, "Metres per unit of integer (16UC1/mono16) depth images; RealSense: 0.001.",
                                range=(1e-9, 1e3))
    # -- keypoint-bounding-box-centred cropping
    kbc: str = _crop(
        "auto", "Keypoint-bounding-box-centred cropping for small objects: off, on (always) or auto (when the "
        "object covers less than kbc_max_fraction of the image).", choices=KBC_MODES, reencodes=True)
    kbc_margin: float = _crop(0.25, "KBC box enlargement per side, fraction of the box side.", range=(0.0, 5.0),
                              reencodes=True, tier=ADVANCED)
    # 0.3 crops 4 of 450 full-size pf-willow-dev pairs and raises the 3% small-object setting 0.129 -> 0.157
    # PCK@0.1 (always cropping: 0.194, at a second encode per frame).
    kbc_max_fraction: float = _crop(0.3, "Object area fraction below which kbc=auto crops.", range=(0.0, 1.0),
                                    tier=ADVANCED)
    # -- tracking mode (:mod:`semcorr_ros.engine.tracking`; docs/tracking.md)
    tracking: str = _crop(
        "off", "Tracking mode: on = each object keeps its state from frame to frame, a tracked frame is one encode "
        "of a crop around the predicted object and the outputs are filtered over time; off = every frame is "
        "matched on its own (docs/tracking.md).", choices=TRACKING_MODES)
    # 10 (vs 30): small objects PCK@0.1 0.580 -> 0.604, rotation median 23.2 -> 19.0 deg with tracking_anchor_pose
    # (lab/dev/measure_tracking.py, docs/tracking.md)
    tracking_redetect_every: int = _crop(
        10, "In tracking mode, re-detect each object on the full frame every this many frames (0: only when "
        "its track is lost).", range=(0, 100000), tier=ADVANCED)
    tracking_max_gap: float = _crop(
        0.5, "In tracking mode, a gap between frame stamps longer than this (seconds), or a stamp going "
        "backwards, restarts every track.", range=(0.0, 3600.0), tier=ADVANCED)
    tracking_min_keypoints: int = _crop(
        3, "A track is lost when fewer keypoints than this are valid.", range=(1, 100000), tier=ADVANCED)
    tracking_min_score: float = _crop(
        0.3, "A track is lost when the mean confidence of its keypoints falls below this.", range=(0.0, 1.0),
        tier=ADVANCED)
    tracking_max_jump: float = _crop(
        0.5, "A track is lost when its valid keypoints land farther from their prediction than this (median, "
        "fraction of the object's size).", range=(0.0, 100.0), tier=ADVANCED)
    tracking_reacquire_ratio: float = _crop(
        0.8, "After a loss, a detection re-acquires the object only when its mean keypoint score reaches this "
        "fraction of the track's running score level (0: any detection that passes the loss rule; the level is "
        "forgotten 30 frames after the last detection).", range=(0.0, 2.0), tier=ADVANCED)
    tracking_velocity: bool = _crop(
        True, "Predict the next box with a constant-velocity model (off: around the last keypoints).",
        tier=ADVANCED)
    tracking_arbitrate: bool = _crop(
        True, "At a periodic re-detection, keep per keypoint the detection or the track, whichever fits the "
        "joint 3D pose of both better (off: the detection replaces the track).", tier=ADVANCED)
    tracking_anchor_pose: bool = _crop(
        True, "On a tracked frame, output the track's pose estimate moved by the rigid motion of the tracked 3D "
        "points since its anchor frame (off: the frame's own pose from the reference's 3D points).", tier=ADVANCED)
    tracking_pose_window: int = _crop(
        10, "With tracking_anchor_pose: average about this many frames' own poses (each mapped into one frame "
        "by the tracked motion) into the output pose (1: carry the last detection's pose alone).",
        range=(1, 1000), tier=ADVANCED)
    tracking_filter: str = _crop(
        "one-euro", "Temporal filter of the tracked keypoints (2D and 3D) and pose: one-euro or off.",
        choices=TRACKING_FILTERS, tier=ADVANCED)
    tracking_min_cutoff: float = _crop(
        1.0, "One-Euro filter: cutoff frequency at rest, Hz (lower: smoother, more lag).", range=(1e-3, 1000.0),
        tier=ADVANCED)
    tracking_beta: float = _crop(
        10.0, "One-Euro filter: speed coefficient (higher: less lag on fast motion), per object size per second.",
        range=(0.0, 1e6), tier=ADVANCED)
    # -- pose
    pose_threshold: float = _pose(0.02, "RANSAC inlier distance of the pose, metres.", range=(1e-6, 10.0))
    pose_iterations: int = _pose(200, "RANSAC hypotheses of the pose.", range=(1, 100000), tier=ADVANCED)
    pose_min_inliers: int = _pose(4, "Fewest inliers for a valid pose.", range=(3, 100000))
    # -- consensus prior (:mod:`semcorr_ros.engine.consensus`, :mod:`semcorr_ros.engine.prior3d`)
    consensus_prior: bool = _consensus(
        True, "Bias each keypoint's similarity map towards where one global 2D affine (RANSAC on dense mutual "
        "matches of the whole object) puts it; off for a frame when the fit is degenerate.")
    consensus_weight: float = _consensus(
        0.2, "Height of the Gaussian bump added to the cosine similarities at the consensus prior.",
        range=(0.0, 10.0), tier=ADVANCED)
    consensus_sigma: float = _consensus(
        0.1, "Width (standard deviation, fraction of the image side) of that bump.", range=(1e-3, 10.0),
        tier=ADVANCED)
    consensus_threshold: float = _consensus(
        0.1, "RANSAC inlier distance of the consensus affine, fraction of the image side.", range=(1e-3, 1.0),
        tier=ADVANCED)
    consensus_min_inliers: int = _consensus(8, "Fewest RANSAC inliers for the consensus prior to be used.",
                                            range=(3, 100000), tier=ADVANCED)
    # 2d by default: on synthetic RGB-D scenes 3d gained ~1 point PCK@0.1 with a same-instance reference and lost
    # ~1 with another instance of the category (docs/accuracy.md); auto suits same-object references.
    consensus_mode: str = _consensus(
        "2d", "Consensus model: `2d` (image-plane affine), `3d` (3D similarity from the dense matches lifted with "
        "the reference's and the frame's depth; no prior where it cannot be fitted) or `auto` (3d when both have "
        "depth and intrinsics, else 2d). See docs/accuracy.md.", choices=CONSENSUS_MODES, tier=EXPERIMENTAL)
    # Off: on pf-willow-dev's 3% small-object setting with kbc on it lowers PCK@0.1 0.230 -> 0.223.
    consensus_in_crop: bool = _consensus(
        False, "Apply the consensus prior in the KBC crop pass too (measured on small objects: no gain, see "
        "docs/accuracy.md).", tier=EXPERIMENTAL)
    pose_from_prior: bool = _pose(
        False, "When the keypoint RANSAC finds no valid pose, seed one from the 3D consensus prior's rotation and "
        "translation.", tier=EXPERIMENTAL)
    multiscale: tuple[float, ...] = _model(
        (1.0,), "Input-size scales every backbone is run at (e.g. `[0.75, 1.0, 1.25]`, ~3x the encode cost); the "
        "maps of all scales are fused together. `[1.0]`: single scale.", range=(0.25, 4.0), min_items=1,
        unique=True, tier=EXPERIMENTAL, metavar="S,S,...")
    matcher: str = _model(
        "nn", "Keypoint matcher: nn (cosine nearest neighbour) or kbcnet (the learned KBCNet head: cross-scale "
        "feature alignment + centre-pivot 4D decoder; needs kbcnet_weights or a shipped head). See "
        "docs/kbcnet.md.", choices=MATCHERS, tier=EXPERIMENTAL)
    kbcnet_weights: str | None = _model(
        None, "KBCNet head file from `semcorr train-kbcnet` (`\"\"` = the head shipped with the package, if any); "
        "used with matcher kbcnet.", tier=EXPERIMENTAL, metavar="PATH")

    def __post_init__(self) -> None:
        validate(self)

    def replace(self, **changes: Any) -> "EngineConfig":
        """A copy with ``changes`` applied (validated); unknown names raise :class:`ConfigError`."""
        known = {f.name for f in fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ConfigError(f"unknown engine option(s) {unknown}; valid options: {sorted(known)}")
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view (for JSON reports)."""
        return asdict(self)
