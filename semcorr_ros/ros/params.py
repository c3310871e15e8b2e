"""ROS parameters of the correspondence node, derived from the option schema; validated on change.

Every parameter is an option of :mod:`semcorr_ros.options` (engine options: the fields of
:class:`semcorr_ros.config.EngineConfig`; node-only ones: :class:`semcorr_ros.options.node_only.NodeOptions`),
which gives its name, type, default, range or choices, description and whether it is read-only at run time. This module
turns them into ``rcl_interfaces/ParameterDescriptor`` and parameter values back into an ``EngineConfig``.
Nothing here talks to DDS except :func:`declare_all`, which declares them on a node.

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

from semcorr_ros.config import EngineConfig
from semcorr_ros.errors import BadReferenceError, ConfigError
from semcorr_ros.options import KEEP, Option, from_wire, param_default, schema, to_wire
from semcorr_ros.options.node_only import COLOR_TRANSPORTS, DEPTH_TRANSPORTS
from semcorr_ros.reference import (
    MAX_KEYPOINTS,
    MAX_PIXELS,
    ObjectSpec,
    ReferenceSpec,
    load_objects,
    load_reference,
    parse_intrinsics,
    read_depth,
)
from semcorr_ros.reference.sets import file_kind
from semcorr_ros.reference.single import read_document

__all__ = ["ParamSpec", "PARAMETERS", "PARAMETERS_BY_NAME", "MODEL_PARAMETERS", "REFERENCE_PARAMETERS",
           "SYNC_PARAMETERS", "COLOR_TRANSPORTS", "DEPTH_TRANSPORTS", "declare_all", "engine_config",
           "parameter_values", "parameters", "load_reference_from_params", "resolve_path", "check_node_choices"]

_TYPES = {"bool": ParameterType.PARAMETER_BOOL, "int": ParameterType.PARAMETER_INTEGER,
          "double": ParameterType.PARAMETER_DOUBLE, "string": ParameterType.PARAMETER_STRING,
          "bool[]": ParameterType.PARAMETER_BOOL_ARRAY, "int[]": ParameterType.PARAMETER_INTEGER_ARRAY,
          "double[]": ParameterType.PARAMETER_DOUBLE_ARRAY, "string[]": ParameterType.PARAMETER_STRING_ARRAY}

_READ_ONLY_NOTE = " Read-only at run time (the model is built once at start-up)."


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter (built from an :class:`~semcorr_ros.options.Option` by :func:`parameters`).

    Attributes:
        name: parameter name.
        type: ``rcl_interfaces/ParameterType`` constant.
        default: default value; None declares the parameter by type only ("not set" until a value is given).
        description: shown by ``ros2 param describe`` (with "Re-encodes the reference." where it applies).
        field: the :class:`EngineConfig` field it sets, if any.
        range: inclusive ``(from, to)`` of a number (enforced by rclpy through the descriptor).
        choices: valid string values as documented (checked on change).
        read_only: cannot change after start-up.
        option: the schema entry it comes from.
    """

    name: str
    type: int
    default: Any
    description: str
    field: str | None = None
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    read_only: bool = False
    option: Option | None = None

    @classmethod
    def of(cls, opt: Option) -> "ParamSpec":
        """The parameter of a schema option (which must have a ``param`` name)."""
        if opt.param is None:
            raise ValueError(f"option {opt.name!r} is not a ROS parameter")
        scalar = opt.kind.base in ("int", "float")
        return cls(opt.param, _TYPES[opt.kind.ros_type], param_default(opt), opt.full_description(),
                   field=opt.name if opt.engine else None, range=opt.range if scalar else None,
                   choices=opt.shown_choices or None, read_only=not opt.runtime, option=opt)

    def descriptor(self) -> ParameterDescriptor:
        """The ``ParameterDescriptor`` declared with the parameter (Markdown backticks dropped)."""
        text = self.description.replace("`", "") + (_READ_ONLY_NOTE if self.read_only else "")
        d = ParameterDescriptor(name=self.name, type=self.type, read_only=self.read_only, description=text)
        constraints = []
        if self.choices:
            constraints.append("one of: " + ", ".join(self.choices))
        if self.range is not None:
            lo, hi = self.range
            if self.type == ParameterType.PARAMETER_INTEGER:
                d.integer_range = [IntegerRange(from_value=int(lo), to_value=int(hi), step=1)]
            else:
                d.floating_point_range = [FloatingPointRange(from_value=float(lo), to_value=float(hi), step=0.0)]
            constraints.append(f"range [{lo}, {hi}]")
        elif self.option is not None and self.option.range is not None:
            constraints.append(f"each in [{self.option.range[0]}, {self.option.range[1]}]")
        d.additional_constraints = "; ".join(constraints)
        return d


def parameters(options: Iterable[Option] | None = None) -> tuple[ParamSpec, ...]:
    """The ROS parameters of ``options`` (default: the whole schema), in documentation order."""
    return tuple(ParamSpec.of(o) for o in (schema() if options is None else options) if o.param is not None)


#: Every parameter of the node, in documentation order.
PARAMETERS: tuple[ParamSpec, ...] = parameters()
PARAMETERS_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PARAMETERS}
MODEL_PARAMETERS = frozenset(p.name for p in PARAMETERS if p.read_only)
REFERENCE_PARAMETERS = frozenset(p.name for p in PARAMETERS if p.option and p.option.group == "reference"
                                 and p.option.runtime)
SYNC_PARAMETERS = frozenset(p.name for p in PARAMETERS if p.option and p.option.group == "synchronisation")


def declare_all(node: Any, specs: Iterable[ParamSpec] = PARAMETERS) -> dict[str, Any]:
    """Declare every parameter of ``specs`` on ``node``; return ``{name: value}`` (None = not set).

    Values given by ``--params-file`` / ``-p`` / ``parameter_overrides`` replace the defaults; a value of the
    wrong type raises rclpy's ``InvalidParameterTypeException`` naming the parameter.
    """
    from rclpy.parameter import Parameter

    out: dict[str, Any] = {}
    for spec in specs:
        default = spec.default if spec.default is not None else Parameter.Type(spec.type)
        param = node.declare_parameter(spec.name, default, spec.descriptor())
        out[spec.name] = param.value
    return out


def check_node_choices(values: Mapping[str, Any]) -> None:
    """Check the node's own parameters against the schema (engine options: :func:`engine_config`).

    Raises:
        ConfigError: a value outside its choices or range (the message names the parameter and lists them).
    """
    for name, value in values.items():
        spec = PARAMETERS_BY_NAME.get(name)
        if spec is None or spec.field is not None or spec.option is None or value is None:
            continue
        try:
            spec.option.check(value)
        except ConfigError as exc:
            raise ConfigError(f"parameter {exc}") from None


def engine_config(values: Mapping[str, Any], base: EngineConfig | None = None) -> EngineConfig:
    """Build the validated :class:`EngineConfig` from parameter values (missing or unset names keep ``base``'s).

    Raises:
        ConfigError: a value the engine does not accept (the message names the option and valid choices).
    """
    base = base or EngineConfig()
    changes: dict[str, Any] = {}
    per_source = []
    for name, value in values.items():
        spec = PARAMETERS_BY_NAME.get(name)
        if spec is None or spec.field is None or spec.option is None:
            continue
        if spec.option.kind.base == "map" and spec.option.kind.item is not str:
            per_source.append((spec, value))  # one entry per backbone entry: once the backbone is known
            continue
        v = from_wire(spec.option, value, f"parameter {name!r}")
        if v is not KEEP:
            changes[spec.field] = v
    cfg = base.replace(**changes) if changes else base
    later = {}
    for spec, value in per_source:
        v = from_wire(spec.option, value, f"parameter {spec.name!r}", cfg.sources)
        if v is not KEEP:
            later[spec.field] = v
    return cfg.replace(**later) if later else cfg


def parameter_values(cfg: EngineConfig) -> dict[str, Any]:
    """The parameter values that make the node build ``cfg`` (the inverse of :func:`engine_config`); options
    at their default in the unset form (per-source lists, score calibration) are left out."""
    out: dict[str, Any] = {}
    for spec in PARAMETERS:
        if spec.field is None or spec.option is None:
            continue
        value = getattr(cfg, spec.field)
        if spec.default is None and value == spec.option.default:
            continue
        wire = to_wire(spec.option, value, cfg.sources)
        if wire is not None:
            out[spec.name] = wire
    return out


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


def load_reference_from_params(values: Mapping[str, Any]) -> ReferenceSpec | list[ObjectSpec] | None:
    """Load the reference named by the ``reference_*`` parameter values; None when ``reference_file`` is ''.

    A single-view file gives its :class:`ReferenceSpec` (``reference_image``, ``reference_depth`` and
    ``reference_intrinsics`` override its fields); a reference set or an objects file gives its objects.

    Raises:
        BadReferenceError: missing or malformed files (the message names the file and the problem).
    """
    file = str(values.get("reference_file") or "")
    if not file:
        return None
    image = str(values.get("reference_image") or "")
    depth = str(values.get("reference_depth") or "")
    intrinsics = values.get("reference_intrinsics")
    max_pixels = int(values.get("max_image_pixels") or MAX_PIXELS)
    max_keypoints = int(values.get("max_reference_keypoints") or MAX_KEYPOINTS)
    path = resolve_path(file)
    kind = file_kind(read_document(path, max_keypoints), path)
    if kind != "view":
        overrides = [n for n, v in (("reference_image", image), ("reference_depth", depth),
                                    ("reference_intrinsics", intrinsics)) if v is not None and len(v) > 0]
        if overrides:
            raise BadReferenceError(f"{', '.join(overrides)} apply to a single-view reference only; {path} is "
                                    f"{'a reference set' if kind == 'set' else 'an objects file'}: set them in "
                                    f"its views' files")
        return load_objects(path, max_keypoints=max_keypoints, max_pixels=max_pixels)
    spec = load_reference(path, image_path=resolve_path(image) if image else None, max_keypoints=max_keypoints,
                          max_pixels=max_pixels)
    if depth:
        spec.depth = read_depth(resolve_path(depth), max_pixels=max_pixels)
        if spec.depth.shape != spec.image.shape[:2]:
            raise BadReferenceError(f"reference depth {depth} is {spec.depth.shape[1]}x{spec.depth.shape[0]} but "
                                    f"the image is {spec.image.shape[1]}x{spec.image.shape[0]}")
    if intrinsics is not None and len(intrinsics) > 0:
        spec.intrinsics = parse_intrinsics(list(intrinsics), "parameter reference_intrinsics")
    return spec
