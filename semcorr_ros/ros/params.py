"""ROS parameters of the correspondence node: one table, declared with descriptors, validated on change.

Defaults of every engine option come from :class:`semcorr_ros.config.EngineConfig` (the one place for
defaults); the table below adds the ROS-side description, type and range of each one, plus the node's own
options (topics' synchronisation, reference files, outputs). Nothing here talks to DDS except
:func:`declare_all`, which declares the table on a node.

Parameter groups:

- model (read-only at run time: the model is built once): ``backbone``, ``weights``, ``input_sizes``,
  ``source_weights``, ``fusion_weights``, ``matcher``, ``kbcnet_weights``, ``center_features``, ``device``, ``fp16``,
  ``cpu_bf16``, ``torch_threads``;
- engine (changeable at run time; some re-encode the reference): the remaining :class:`EngineConfig` fields;
- inputs: ``color_transport``, ``depth_transport``, ``rectified_input``, ``require_matching_frame_ids``,
  ``max_image_pixels``;
- synchronisation: ``sync_slop``, ``sync_buffer_size``, ``stamp_source``, ``sync_time_jump_reset``;
- reference: ``reference_file``, ``reference_image``, ``reference_depth``, ``reference_intrinsics``,
  ``max_reference_keypoints``;
- node: ``enabled``, ``fatal_after_failures``;
- outputs: ``publish_debug_image``, ``marker_scale``, ``diagnostics_period``.

QoS of every topic can be overridden at start-up with rclpy's ``qos_overrides.<topic>.<publisher|subscription>.
<policy>`` parameters (history, depth, reliability, durability), declared by the node itself.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor, ParameterType

from semcorr_ros.config import CONSENSUS_MODES, DEPTH_CELL_MODES, DEVICES, KBC_MODES, MATCHERS, EngineConfig
from semcorr_ros.errors import BadReferenceError, ConfigError
from semcorr_ros.reference import (MAX_KEYPOINTS, MAX_PIXELS, ReferenceSpec, load_reference, parse_intrinsics,
                                   read_depth)
from semcorr_ros.ros.stamps import STAMP_SOURCES

__all__ = ["ParamSpec", "PARAMETERS", "PARAMETERS_BY_NAME", "MODEL_PARAMETERS", "REFERENCE_PARAMETERS",
           "SYNC_PARAMETERS", "COLOR_TRANSPORTS", "DEPTH_TRANSPORTS", "declare_all", "engine_config",
           "load_reference_from_params", "resolve_path", "check_node_choices"]

#: Colour input transports: ``raw`` (sensor_msgs/Image on color/image_raw) or ``compressed`` (CompressedImage,
#: JPEG/PNG, on color/image_raw/compressed).
COLOR_TRANSPORTS = ("raw", "compressed")
#: Depth input transports: ``raw`` (Image) or ``compressedDepth`` (CompressedImage on
#: aligned_depth_to_color/image_raw/compressedDepth).
DEPTH_TRANSPORTS = ("raw", "compressedDepth")

_DEFAULTS = EngineConfig()

_STRING, _BOOL = ParameterType.PARAMETER_STRING, ParameterType.PARAMETER_BOOL
_INT, _DOUBLE = ParameterType.PARAMETER_INTEGER, ParameterType.PARAMETER_DOUBLE
_STRINGS = ParameterType.PARAMETER_STRING_ARRAY
_INTS, _DOUBLES = ParameterType.PARAMETER_INTEGER_ARRAY, ParameterType.PARAMETER_DOUBLE_ARRAY

_READ_ONLY_NOTE = " Read-only at run time (the model is built once at start-up)."


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter.

    Attributes:
        name: parameter name.
        type: ``rcl_interfaces/ParameterType`` constant.
        default: default value; None declares the parameter by type only ("not set" until a value is given).
        description: shown by ``ros2 param describe``.
        field: the :class:`EngineConfig` field it sets, if any.
        range: inclusive ``(from, to)`` for numbers (enforced by rclpy through the descriptor).
        choices: valid string values (documented in ``additional_constraints``, checked on change).
        read_only: cannot change after start-up.
    """

    name: str
    type: int
    default: Any
    description: str
    field: str | None = None
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False

    def descriptor(self) -> ParameterDescriptor:
        d = ParameterDescriptor(name=self.name, type=self.type, read_only=self.read_only,
                                description=self.description + (_READ_ONLY_NOTE if self.read_only else ""))
        constraints = []
        if self.choices:
            constraints.append("one of: " + ", ".join(self.choices))
        if self.range is not None:
            lo, hi = self.range
            if self.type == _INT:
                d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
            else:
                d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
            constraints.append(f"range [{lo}, {hi}]")
        d.additional_constraints = "; ".join(constraints)
        return d


def _engine(name: str, type_: int, description: str, range_: tuple[float, float] | None = None,
            choices: tuple[str, ...] | None = None, read_only: bool = False, field: str | None = None) -> ParamSpec:
    field = field or name
    return ParamSpec(name, type_, getattr(_DEFAULTS, field), description, field=field, range=range_,
                     choices=choices, read_only=read_only)


#: Every parameter of the node, in documentation order.
PARAMETERS: tuple[ParamSpec, ...] = (
    # -- model (read-only)
    ParamSpec("backbone", _STRINGS, list(_DEFAULTS.sources),
              "Feature sources to fuse (effnet-lite2, dinov2-s-imgfocus = the embedded default; "
              "dinov2_vit{s,b,l,g}14[_reg] need a weights file).", field="sources", read_only=True),
    ParamSpec("weights", _STRINGS, None,
              "Weights files as SOURCE=PATH entries, e.g. ['dinov2_vitb14=/models/dinov2_vitb14.pth']; "
              "not set: the weights shipped with the installed packages.", field="weights", read_only=True),
    ParamSpec("input_sizes", _INTS, None,
              "Square model input side per backbone entry (same order, 0 = that source's default); not set: "
              "the defaults.", field="input_sizes", read_only=True),
    ParamSpec("source_weights", _DOUBLES, None,
              "Relative fusion weight per backbone entry (same order) when no fusion weights file applies; not "
              "set: the engine's defaults (effnet-lite2 0.7, dinov2-s-imgfocus 0.3, others 1.0).",
              field="source_weights", read_only=True),
    ParamSpec("score_calibration", _DOUBLES, None,
              "Coefficients of the calibrated confidence (bias, peak, cycle, prior, no_prior); not set: the "
              "engine's fitted defaults, or with matcher kbcnet the head's own calibration when its file has one.",
              field="score_calibration",
              read_only=True),
    ParamSpec("fusion_weights", _STRING, "",
              "Fusion weights file, semcorr-fusion-v1 or -v2 (projected) ('' = the file shipped with the package "
              "when it fits the backbone, else source_weights; 'none' = source_weights).", field="fusion_weights",
              read_only=True),
    _engine("matcher", _STRING, "Keypoint matcher: nn (cosine nearest neighbour) or kbcnet (the learned KBCNet "
            "head: cross-scale feature alignment + centre-pivot 4D decoder; needs kbcnet_weights or a shipped "
            "head).", choices=MATCHERS, read_only=True),
    ParamSpec("kbcnet_weights", _STRING, "",
              "KBCNet head file from `semcorr train-kbcnet` ('' = the head shipped with the package, if any); used "
              "with matcher kbcnet.", field="kbcnet_weights", read_only=True),
    _engine("center_features", _BOOL, "Subtract each feature map's spatial mean before normalising.",
            read_only=True),
    _engine("device", _STRING, "Inference device: auto (CUDA when available), cpu, cuda or cuda:N.",
            choices=(*DEVICES, "cuda:N"), read_only=True),
    _engine("fp16", _BOOL, "Half-precision autocast on CUDA (ignored on the CPU).", read_only=True),
    _engine("cpu_bf16", _BOOL, "Run the backbones in bfloat16 on CPUs with native bfloat16 (AVX512-BF16/"
            "AMX); ignored elsewhere.", read_only=True),
    ParamSpec("torch_threads", _INT, 0, "PyTorch CPU threads (0 = PyTorch's default).", range=(0, 256),
              read_only=True),
    # -- engine (changeable)
    _engine("score_threshold", _DOUBLE, "Matches scoring below are published with valid = false (the score is a "
            "calibrated probability of a correct match).", (0.0, 1.0)),
    _engine("kbc", _STRING, "Keypoint-bounding-box-centred cropping for small objects: off, on (always) or "
            "auto (when the object covers less than kbc_max_fraction of the image). Re-encodes the reference.",
            choices=KBC_MODES),
    _engine("kbc_margin", _DOUBLE, "KBC box enlargement per side, fraction of the box side. Re-encodes the "
            "reference.", (0.0, 5.0)),
    _engine("kbc_max_fraction", _DOUBLE, "Object area fraction below which kbc=auto crops.", (0.0, 1.0)),
    _engine("depth_aware", _BOOL, "Weight the live features by how plausible each cell's depth is for the "
            "object. Re-encodes the reference."),
    _engine("depth_scale", _DOUBLE, "Metres per unit of integer (16UC1/mono16) depth images; RealSense: 0.001.",
            (1e-9, 1e3)),
    _engine("depth_floor", _DOUBLE, "Weight of cells at implausible depths (0 removes them, 1 disables the "
            "weighting). Re-encodes the reference.", (0.0, 1.0)),
    _engine("depth_sigma_min", _DOUBLE, "Smallest object depth spread, metres. Re-encodes the reference.",
            (1e-4, 100.0)),
    _engine("depth_spread", _DOUBLE, "Object depth spread as a multiple of the reference keypoints' depth range "
            "(learned by train-fusion on RGB-D data). Re-encodes the reference.", (0.0, 10.0)),
    _engine("depth_cells", _STRING, "Depth-aware cell statistic: mean (Gaussian overlap of the cell's mean depth "
            "with the object's) or max (the cell's most plausible pixel: cells holding any pixel in the object's "
            "depth range keep weight 1). Re-encodes the reference.", choices=DEPTH_CELL_MODES),
    _engine("depth_radius", _INT, "Half-size in pixels of the window for robust depth sampling at a keypoint. "
            "Re-encodes the reference.", (0, 50)),
    _engine("multiscale", _DOUBLES, "Input-size scales every backbone is run at (e.g. [0.75, 1.0, 1.25]); the "
            "maps of all scales are fused together. [1.0]: single scale.", read_only=True),
    _engine("grid", _INT, "Side, in cells, of the lattice the fused feature map is resampled to.", (4, 256),
            read_only=True),
    _engine("softargmax_radius", _INT, "Half-size, in feature cells, of the soft-argmax window.", (0, 10)),
    _engine("softargmax_temperature", _DOUBLE, "Softmax temperature on cosine similarities in that window.",
            (1e-4, 10.0)),
    _engine("cycle_sigma", _DOUBLE, "Scale (fraction of the image side) of the cycle-consistency error in the "
            "score.", (1e-4, 10.0)),
    _engine("pose_threshold", _DOUBLE, "RANSAC inlier distance of the pose, metres.", (1e-6, 10.0)),
    _engine("pose_iterations", _INT, "RANSAC hypotheses of the pose.", (1, 100000)),
    _engine("pose_min_inliers", _INT, "Fewest inliers for a valid pose.", (3, 100000)),
    _engine("consensus_prior", _BOOL, "Bias each keypoint's similarity map towards where one global 2D affine "
            "(RANSAC on dense mutual matches of the whole object) puts it; off for a frame when the fit is "
            "degenerate."),
    _engine("consensus_weight", _DOUBLE, "Height of the Gaussian bump added to the cosine similarities at the "
            "consensus prior.", (0.0, 10.0)),
    _engine("consensus_sigma", _DOUBLE, "Width (standard deviation, fraction of the image side) of that bump.",
            (1e-3, 10.0)),
    _engine("consensus_threshold", _DOUBLE, "RANSAC inlier distance of the consensus affine, fraction of the "
            "image side.", (1e-3, 1.0)),
    _engine("consensus_min_inliers", _INT, "Fewest RANSAC inliers for the consensus prior to be used.",
            (3, 100000)),
    _engine("consensus_mode", _STRING, "Consensus model: 2d (image-plane affine), 3d (3D similarity from the "
            "dense matches lifted with the reference's and the frame's depth; no prior where it cannot be fitted) "
            "or auto (3d when both have depth and intrinsics, else 2d).", choices=CONSENSUS_MODES),
    _engine("consensus_in_crop", _BOOL, "Apply the consensus prior in the KBC crop pass too."),
    _engine("pose_from_prior", _BOOL, "When the keypoint RANSAC finds no valid pose, seed one from the 3D "
            "consensus prior's rotation and translation."),
    # -- inputs
    ParamSpec("color_transport", _STRING, "raw", "Colour input: raw (sensor_msgs/Image on color/image_raw) or "
              "compressed (CompressedImage, JPEG/PNG, on color/image_raw/compressed).", choices=COLOR_TRANSPORTS,
              read_only=True),
    ParamSpec("depth_transport", _STRING, "raw", "Depth input: raw (Image on aligned_depth_to_color/image_raw) "
              "or compressedDepth (CompressedImage on aligned_depth_to_color/image_raw/compressedDepth).",
              choices=DEPTH_TRANSPORTS, read_only=True),
    ParamSpec("rectified_input", _BOOL, False, "The images are rectified (image_proc's image_rect): intrinsics "
              "from CameraInfo.p, no distortion. false: raw images, K and the distortion model D (plumb_bob, "
              "rational_polynomial, equidistant) are used to lift keypoints to 3D."),
    ParamSpec("require_matching_frame_ids", _BOOL, True, "Reject sets whose colour, depth and camera-info "
              "frame_id differ (depth not aligned to colour is lifted to 3D wrongly); empty frame_ids are not "
              "compared."),
    ParamSpec("max_image_pixels", _INT, MAX_PIXELS, "Largest width x height accepted for a live image or a "
              "reference image; larger ones are rejected before they are decoded.", range=(1, 1 << 28),
              read_only=True),
    # -- synchronisation
    ParamSpec("sync_slop", _DOUBLE, 0.02, "Largest |t_depth - t_colour| for a colour and a depth frame to pair, "
              "seconds (of header stamps, or of arrival times when those are used).", range=(0.0, 1.0)),
    ParamSpec("sync_buffer_size", _INT, 5, "Frames buffered per input stream while waiting for a partner; "
              "older ones are dropped and counted.", range=(1, 100)),
    ParamSpec("stamp_source", _STRING, "auto", "Time base that pairs colour and depth: header (the messages' "
              "stamps), arrival (when they arrive) or auto (header stamps, switching to arrival times when a "
              "camera publishes zero or constant stamps; /diagnostics says so).", choices=STAMP_SOURCES),
    ParamSpec("sync_time_jump_reset", _DOUBLE, 1.0, "A frame this many seconds older than the newest one of its "
              "stream (a bag looping, simulated time restarting) clears the buffers instead of being dropped.",
              range=(0.001, 1e6)),
    # -- reference
    ParamSpec("reference_file", _STRING, "",
              "Reference YAML: named keypoints in pixels, optionally image, depth and intrinsics (format: "
              "semcorr_ros.reference). Absolute, relative to the working directory, or "
              "package://semcorr_ros/<path>. '' = no reference (frames are rejected until one is set). "
              "Changing it reloads the reference; a bad one is rejected and the old one stays active."),
    ParamSpec("reference_image", _STRING, "", "Reference image overriding the YAML's 'image' ('' = the YAML's)."),
    ParamSpec("reference_depth", _STRING, "",
              "Reference depth overriding the YAML's 'depth': 16-bit PNG in millimetres or .npy in metres "
              "('' = the YAML's)."),
    ParamSpec("reference_intrinsics", _DOUBLES, None,
              "Reference camera intrinsics [fx, fy, cx, cy] overriding the YAML's (not set = the YAML's)."),
    ParamSpec("max_reference_keypoints", _INT, MAX_KEYPOINTS, "Most keypoints a reference may have (the "
              "matching cost grows with them); a reference with more is rejected.", range=(1, 4096),
              read_only=True),
    # -- node
    ParamSpec("enabled", _BOOL, True, "Run inference (false pauses it: frames are dropped and counted, nothing "
              "is published; also the ~/set_enabled std_srvs/SetBool service)."),
    ParamSpec("fatal_after_failures", _INT, 50, "Exit with code 1 (so that launch's respawn restarts the node) "
              "after this many consecutive frames failed with an unexpected error (e.g. CUDA out of memory); "
              "0 = never.", range=(0, 1_000_000), read_only=True),
    # -- outputs
    ParamSpec("publish_debug_image", _BOOL, True,
              "Publish ~/debug_image (drawn only while someone subscribes)."),
    ParamSpec("marker_scale", _DOUBLE, 0.02, "Diameter of the keypoint spheres in ~/markers, metres.",
              range=(0.001, 1.0)),
    ParamSpec("diagnostics_period", _DOUBLE, 1.0, "Seconds between /diagnostics messages.", range=(0.1, 60.0),
              read_only=True),
)

PARAMETERS_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PARAMETERS}
MODEL_PARAMETERS = frozenset(p.name for p in PARAMETERS if p.read_only)
REFERENCE_PARAMETERS = frozenset({"reference_file", "reference_image", "reference_depth", "reference_intrinsics"})
SYNC_PARAMETERS = frozenset({"sync_slop", "sync_buffer_size", "stamp_source", "sync_time_jump_reset"})


def declare_all(node: Any) -> dict[str, Any]:
    """Declare every parameter of :data:`PARAMETERS` on ``node``; return ``{name: value}`` (None = not set).

    Values given by ``--params-file`` / ``-p`` / ``parameter_overrides`` replace the defaults; a value of the
    wrong type raises rclpy's ``InvalidParameterTypeException`` naming the parameter.
    """
    from rclpy.parameter import Parameter

    out: dict[str, Any] = {}
    for spec in PARAMETERS:
        default = spec.default if spec.default is not None else Parameter.Type(spec.type)
        param = node.declare_parameter(spec.name, default, spec.descriptor())
        out[spec.name] = param.value
    return out


def check_node_choices(values: Mapping[str, Any]) -> None:
    """Check the node's own string parameters with fixed choices (engine options: :func:`engine_config`).

    Raises:
        ConfigError: a value outside its choices (the message lists them).
    """
    for name, value in values.items():
        spec = PARAMETERS_BY_NAME.get(name)
        if spec is not None and spec.field is None and spec.choices and value not in spec.choices:
            raise ConfigError(f"parameter {name!r} must be one of {list(spec.choices)}, got {value!r}")


def _as_list(value: Any) -> list:
    return [] if value is None else list(value)


def engine_config(values: Mapping[str, Any], base: EngineConfig | None = None) -> EngineConfig:
    """Build the validated :class:`EngineConfig` from parameter values (missing names keep ``base``'s).

    Raises:
        ConfigError: a value the engine does not accept (the message names the parameter and valid choices).
    """
    base = base or EngineConfig()
    changes: dict[str, Any] = {}
    for name, value in values.items():
        spec = PARAMETERS_BY_NAME.get(name)
        if spec is None or spec.field is None:
            continue
        if name == "backbone":
            value = tuple(str(v).strip() for v in _as_list(value) if str(v).strip())
        elif name == "weights":
            value = _parse_weights(_as_list(value))
        elif name in ("fusion_weights", "kbcnet_weights"):
            value = value or None
        elif name == "multiscale":
            value = tuple(float(v) for v in _as_list(value))
        elif name in ("input_sizes", "source_weights"):
            continue  # per backbone entry: below
        elif name == "score_calibration":
            if not _as_list(value):
                continue  # not set: the engine's default
            value = tuple(float(v) for v in _as_list(value))
        elif spec.choices and name != "device" and value not in spec.choices:
            raise ConfigError(f"parameter {name!r} must be one of {list(spec.choices)}, got {value!r}")
        changes[spec.field] = value
    cfg = base.replace(**changes) if changes else base
    if "input_sizes" in values:
        cfg = cfg.replace(input_sizes=_parse_input_sizes(_as_list(values["input_sizes"]), cfg.sources))
    weights = _as_list(values.get("source_weights"))
    if weights:
        if len(weights) != len(cfg.sources):
            raise ConfigError(f"parameter 'source_weights' needs one entry per backbone entry {list(cfg.sources)}, "
                              f"got {weights}")
        cfg = cfg.replace(source_weights={src: float(w) for src, w in zip(cfg.sources, weights)})
    return cfg


def _parse_weights(entries: Iterable[str]) -> dict[str, str]:
    out = {}
    for item in entries:
        name, sep, path = str(item).partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"parameter 'weights' expects SOURCE=PATH entries, got {item!r}")
        out[name.strip()] = path.strip()
    return out


def _parse_input_sizes(sizes: list[int], sources: tuple[str, ...]) -> dict[str, int]:
    if not sizes:
        return {}
    if len(sizes) != len(sources):
        raise ConfigError(f"parameter 'input_sizes' needs one entry per backbone entry {list(sources)}, "
                          f"got {sizes}")
    if any(int(s) < 0 for s in sizes):
        raise ConfigError(f"parameter 'input_sizes' entries must be >= 0 (0 = default), got {sizes}")
    return {src: int(s) for src, s in zip(sources, sizes) if int(s) > 0}


# ------------------------------------------------------------------------------------------------ reference

_PACKAGE_PREFIX = "package://"


def resolve_path(path: str) -> Path:
    """Resolve ``package://<pkg>/<rest>`` through the ament index (falling back to ``<sys.prefix>/share/<pkg>``,
    the layout of a virtual environment) and ``~``; other paths are returned as given.

    Raises:
        BadReferenceError: the package cannot be found.
    """
    if not path.startswith(_PACKAGE_PREFIX):
        return Path(path).expanduser()
    pkg, _, rest = path[len(_PACKAGE_PREFIX):].partition("/")
    share: Path | None = None
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            share = Path(get_package_share_directory(pkg))
        except (PackageNotFoundError, LookupError, OSError, ValueError):
            share = None
    except ImportError:
        share = None
    if share is None:
        candidate = Path(sys.prefix) / "share" / pkg
        if not candidate.is_dir():
            raise BadReferenceError(f"cannot resolve {path!r}: package {pkg!r} not found (source the ROS "
                                    f"workspace or set AMENT_PREFIX_PATH)")
        share = candidate
    return share / rest


def load_reference_from_params(values: Mapping[str, Any]) -> ReferenceSpec | None:
    """Load the reference named by the ``reference_*`` parameter values; None when ``reference_file`` is ''.

    Raises:
        BadReferenceError: missing or malformed files (the message names the file and the problem).
    """
    file = str(values.get("reference_file") or "")
    if not file:
        return None
    image = str(values.get("reference_image") or "")
    max_pixels = int(values.get("max_image_pixels") or MAX_PIXELS)
    spec = load_reference(resolve_path(file), image_path=resolve_path(image) if image else None,
                          max_keypoints=int(values.get("max_reference_keypoints") or MAX_KEYPOINTS),
                          max_pixels=max_pixels)
    depth = str(values.get("reference_depth") or "")
    if depth:
        spec.depth = read_depth(resolve_path(depth), max_pixels=max_pixels)
        if spec.depth.shape != spec.image.shape[:2]:
            raise BadReferenceError(f"reference depth {depth} is {spec.depth.shape[1]}x{spec.depth.shape[0]} but "
                                    f"the image is {spec.image.shape[1]}x{spec.image.shape[0]}")
    intrinsics = values.get("reference_intrinsics")
    if intrinsics is not None and len(intrinsics) > 0:
        spec.intrinsics = parse_intrinsics(list(intrinsics), "parameter reference_intrinsics")
    return spec

