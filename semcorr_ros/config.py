"""The one typed place for defaults: engine options as dataclasses, validated on construction.

The ROS node declares its parameters from these defaults and the CLI builds its flags from them, so a default
changes in exactly one place.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from semcorr_ros.errors import ConfigError

#: The embedded default model: real pretrained weights that ship inside installed packages (no download).
DEFAULT_SOURCES: tuple[str, ...] = ("effnet-lite2", "dinov2-s-imgfocus")

#: Fusion weight of each default source (split equally among its layers), chosen on pf-willow-dev; used when no
#: fusion weights file applies (the default model loads the shipped, learned models/fusion_default.safetensors).
DEFAULT_SOURCE_WEIGHTS: dict[str, float] = {"effnet-lite2": 0.7, "dinov2-s-imgfocus": 0.3}

#: Calibrated-confidence coefficients (bias, peak, cycle, prior, no_prior) fitted on pf-willow-dev with the default
#: engine of the time (hand-set fusion): `python tools/dev/calibrate_scores.py ../shared/data/pf-willow-dev` (ECE
#: 0.409 -> 0.024 in-sample; 0.025 with the shipped learned fusion).
DEFAULT_SCORE_CALIBRATION: tuple[float, ...] = (-1.1842, 4.7543, -0.0099, -0.1443, -1.2658)

DEVICES = ("auto", "cpu", "cuda")
KBC_MODES = ("off", "on", "auto")
MATCHERS = ("nn", "kbcnet")
DEPTH_CELL_MODES = ("mean", "max")
CONSENSUS_MODES = ("auto", "2d", "3d")


@dataclass
class EngineConfig:
    """Options of :class:`semcorr_ros.engine.CorrespondenceEngine`.

    Attributes:
        sources: feature sources to fuse (names from ``semcorr_ros.engine.features.SOURCE_NAMES``).
        weights: per-source weight file path (official DINOv2 ``.pth``/safetensors; ``sd``: a local diffusers
            model folder); default: the weights that ship with the installed packages, where a source has them.
        layers: per-source layer indices overriding the source's defaults.
        input_sizes: per-source square model input side in pixels overriding the source's default.
        source_weights: relative weight of each source in the fusion when no fusion weights file is used;
            a source's weight is split equally among its layers; sources not listed get 1.0. The default
            favours EfficientNet-Lite2 (chosen on pf-willow-dev); the default model uses the shipped learned
            fusion file instead (``fusion_weights``).
        fusion_weights: path of a fusion weights file (``semcorr-fusion-v1`` safetensors, per-layer weights
            learned by training, or ``semcorr-fusion-v2``, also a learned projection per map); ``None`` uses the
            file shipped with the package when it matches the configured maps, else ``source_weights``;
            ``"none"`` forces ``source_weights``.
        center_features: subtract each map's spatial mean (per image) before normalising: removes the
            component shared by every pixel of an image, which otherwise inflates all similarities.
        device: ``auto`` (CUDA when available), ``cpu`` or ``cuda``.
        fp16: half precision autocast on CUDA (ignored on the CPU).
        cpu_bf16: run the backbones in bfloat16 on CPUs with native bfloat16 arithmetic (AVX512-BF16 or AMX;
            about 1.5x faster here, features within cosine 0.998 of float32); ignored elsewhere.
        grid: side, in cells, of the common lattice the fused feature map is resampled to (32 = DINOv2-S's
            patch grid at 224 px upsampled 2x; chosen on pf-willow-dev: better and cheaper than 40).
        softargmax_radius: half-size, in feature cells, of the window around the argmax for the soft-argmax.
        softargmax_temperature: softmax temperature on cosine similarities inside that window.
        cycle_sigma: scale (fraction of the image side) of the cycle-consistency error in the score.
        score_threshold: matches scoring below are marked invalid.
        score_calibration: coefficients of the calibrated confidence (:mod:`semcorr_ros.engine.confidence`:
            bias, peak, cycle, prior, no_prior), fitted by ``tools/dev/calibrate_scores.py``; ``None`` gives the
            raw score ``peak x exp(-cycle / 2)``. With ``matcher: kbcnet`` a head that carries its own calibration
            (``semcorr train-kbcnet`` writes one) replaces the default coefficients (not other ones).
        depth_aware: weight the live feature map by how plausible each cell's depth is for the object.
        depth_floor: weight of cells at implausible depths (0 removes them, 1 disables the weighting).
        depth_sigma_min: smallest object depth spread, metres.
        depth_spread: the object depth model's spread is at least ``depth_spread`` times the depth range of the
            reference keypoints (learnable: ``semcorr train-fusion --dataset synth`` fits it with ``depth_floor``).
        depth_cells: how a feature cell's depth is compared with the object's depth model: ``mean`` (Gaussian
            overlap of the cell's depth mean and variance) or ``max`` (the cell's most plausible pixel under a
            plateau model: cells holding any pixel in the object's depth range keep weight 1); see
            :mod:`semcorr_ros.engine.depth_aware`.
        depth_radius: half-size in pixels of the window for robust depth sampling at a keypoint.
        depth_scale: metres per unit of uint16 depth images (RealSense: 0.001).
        kbc: keypoint-bounding-box-centred cropping: ``off``, ``on`` (always) or ``auto`` (when the object
            covers less than ``kbc_max_fraction`` of the image).
        kbc_margin: the keypoint box is enlarged by this fraction of its side on each side.
        kbc_max_fraction: ``auto`` crops when the (square, margin-enlarged) object box covers less than this
            fraction of either image; 0.3 was chosen on pf-willow-dev: it crops 4 of 450 full-size pairs and
            raises the 3% small-object setting from 0.129 to 0.157 PCK@0.1 (always cropping: 0.194, at a second
            encode per frame).
        pose_threshold: RANSAC inlier distance, metres.
        pose_iterations: RANSAC hypotheses.
        pose_min_inliers: fewest inliers for a valid pose.
        consensus_prior: fit one global 2D affine reference -> live from dense mutual nearest neighbours of the
            object's cells (RANSAC, :mod:`semcorr_ros.engine.consensus`) and bias every keypoint's similarity
            map towards its transformed reference position (full-frame pass only; off for a frame when the
            fit is degenerate).
        consensus_weight: height of the Gaussian bump added to the cosine similarities at the prior position.
        consensus_sigma: width (standard deviation, fraction of the image side) of that bump.
        consensus_threshold: RANSAC inlier distance of the affine fit, fraction of the image side.
        consensus_min_inliers: fewest RANSAC inliers (mutual matches) for the prior to be used.
        consensus_mode: which consensus model to fit: ``2d`` (the image-plane affine), ``3d`` (a 3D similarity
            from the same matches lifted with the reference's and the live frame's depth and intrinsics,
            :mod:`semcorr_ros.engine.prior3d`; no prior on frames where it cannot be fitted) or ``auto`` (3D when
            both sides have depth and intrinsics and the fit passes its checks, else 2D). ``2d`` by default: on
            synthetic RGB-D scenes the 3D prior gained ~1 point PCK@0.1 with a same-instance reference and lost ~1
            with another instance of the category (docs/accuracy.md); ``auto`` suits same-object references.
        consensus_in_crop: also bias the KBC crop pass: the full-frame 3D prior mapped into the crop, else a 2D
            affine fitted between the two crops, else the full-frame 2D prior mapped into the crop. Off by default:
            on pf-willow-dev's 3% small-object setting with ``kbc: on`` it lowers PCK@0.1 from 0.230 to 0.223
            (docs/accuracy.md).
        pose_from_prior: when the keypoint RANSAC finds no valid pose, seed one from the 3D prior's rotation and
            translation (the keypoint pairs it explains, refitted rigidly).
        multiscale: scales of the model input size the images are encoded at (each source is run at
            ``round(scale x input_size)``, snapped to its size multiple); the maps of all scales are fused together
            (the similarity is the weighted mean over scales). ``(1.0,)``: single scale.
        matcher: how keypoints are matched into the live map: ``nn`` (cosine nearest neighbour of the reference
            descriptors, window soft-argmax) or ``kbcnet`` (the learned KBCNet head: cross-scale feature alignment +
            centre-pivot 4D-convolution decoder on the dense correlation, :mod:`semcorr_ros.engine.kbcnet`).
        kbcnet_weights: path of a ``semcorr-kbcnet-v1`` head (``semcorr train-kbcnet``); ``None`` uses the file
            shipped with the package when there is one (needed with ``matcher: kbcnet``).
    """

    sources: tuple[str, ...] = DEFAULT_SOURCES
    weights: dict[str, str] = field(default_factory=dict)
    layers: dict[str, tuple[int, ...]] = field(default_factory=dict)
    input_sizes: dict[str, int] = field(default_factory=dict)
    source_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_SOURCE_WEIGHTS))
    fusion_weights: str | None = None
    center_features: bool = True
    device: str = "auto"
    fp16: bool = False
    cpu_bf16: bool = True
    grid: int = 32
    softargmax_radius: int = 4
    softargmax_temperature: float = 0.02
    cycle_sigma: float = 0.05
    score_threshold: float = 0.2
    score_calibration: tuple[float, ...] | None = DEFAULT_SCORE_CALIBRATION
    depth_aware: bool = True
    depth_floor: float = 0.25
    depth_sigma_min: float = 0.05
    depth_spread: float = 1.0
    depth_cells: str = "mean"
    depth_radius: int = 2
    depth_scale: float = 0.001
    kbc: str = "auto"
    kbc_margin: float = 0.25
    kbc_max_fraction: float = 0.3
    pose_threshold: float = 0.02
    pose_iterations: int = 200
    pose_min_inliers: int = 4
    consensus_prior: bool = True
    consensus_weight: float = 0.2
    consensus_sigma: float = 0.1
    consensus_threshold: float = 0.1
    consensus_min_inliers: int = 8
    consensus_mode: str = "2d"
    consensus_in_crop: bool = False
    pose_from_prior: bool = False
    multiscale: tuple[float, ...] = (1.0,)
    matcher: str = "nn"
    kbcnet_weights: str | None = None

    def __post_init__(self) -> None:
        self.sources = tuple(self.sources)
        if not self.sources:
            raise ConfigError("sources must name at least one feature source")
        if self.device not in DEVICES and not str(self.device).startswith("cuda:"):
            raise ConfigError(f"device must be one of {DEVICES} (or 'cuda:N'), got {self.device!r}")
        if self.matcher not in MATCHERS:
            raise ConfigError(f"matcher must be one of {MATCHERS}, got {self.matcher!r}")
        if self.kbc not in KBC_MODES:
            raise ConfigError(f"kbc must be one of {KBC_MODES}, got {self.kbc!r}")
        for name, w in self.source_weights.items():
            _check_range(f"source_weights[{name!r}]", w, 0.0, 1e6)
        _check_range("grid", self.grid, 4, 256)
        _check_range("softargmax_radius", self.softargmax_radius, 0, 10)
        _check_range("softargmax_temperature", self.softargmax_temperature, 1e-4, 10.0)
        _check_range("cycle_sigma", self.cycle_sigma, 1e-4, 10.0)
        _check_range("score_threshold", self.score_threshold, 0.0, 1.0)
        if self.score_calibration is not None:
            self.score_calibration = tuple(float(c) for c in self.score_calibration)
            if len(self.score_calibration) != 5 or not all(math.isfinite(c) for c in self.score_calibration):
                raise ConfigError("score_calibration needs 5 finite coefficients (bias, peak, cycle, prior, "
                                  f"no_prior), got {self.score_calibration}")
        _check_range("depth_floor", self.depth_floor, 0.0, 1.0)
        _check_range("depth_sigma_min", self.depth_sigma_min, 1e-4, 100.0)
        _check_range("depth_spread", self.depth_spread, 0.0, 10.0)
        if self.depth_cells not in DEPTH_CELL_MODES:
            raise ConfigError(f"depth_cells must be one of {DEPTH_CELL_MODES}, got {self.depth_cells!r}")
        _check_range("depth_radius", self.depth_radius, 0, 50)
        _check_range("depth_scale", self.depth_scale, 1e-9, 1e3)
        _check_range("kbc_margin", self.kbc_margin, 0.0, 5.0)
        _check_range("kbc_max_fraction", self.kbc_max_fraction, 0.0, 1.0)
        _check_range("pose_threshold", self.pose_threshold, 1e-6, 10.0)
        _check_range("pose_iterations", self.pose_iterations, 1, 100000)
        _check_range("pose_min_inliers", self.pose_min_inliers, 3, 100000)
        _check_range("consensus_weight", self.consensus_weight, 0.0, 10.0)
        _check_range("consensus_sigma", self.consensus_sigma, 1e-3, 10.0)
        _check_range("consensus_threshold", self.consensus_threshold, 1e-3, 1.0)
        _check_range("consensus_min_inliers", self.consensus_min_inliers, 3, 100000)
        if self.consensus_mode not in CONSENSUS_MODES:
            raise ConfigError(f"consensus_mode must be one of {CONSENSUS_MODES}, got {self.consensus_mode!r}")
        try:
            self.multiscale = tuple(float(s) for s in self.multiscale)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"multiscale must be a list of numbers, got {self.multiscale!r}") from exc
        if not self.multiscale or len(set(self.multiscale)) != len(self.multiscale):
            raise ConfigError(f"multiscale needs at least one scale and no repeats, got {self.multiscale}")
        for s in self.multiscale:
            _check_range("multiscale entries", s, 0.25, 4.0)

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


def _check_range(name: str, value: float, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (lo <= value <= hi):
        raise ConfigError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")
