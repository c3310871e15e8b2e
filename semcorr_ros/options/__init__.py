"""The one option schema: every engine and node option defined once, everything else derived from it.

An option is a field of a dataclass declared with :func:`option`: the field gives its name, type and default,
:func:`option` the rest (one-line description, range or choices, whether it can change at run time, tier
``core`` / ``advanced`` / ``experimental``, group, ROS parameter and CLI flag names). Derived from it:

- validation: :class:`semcorr_ros.config.EngineConfig` checks its fields with :func:`validate`;
- the node's ROS parameters and descriptors (:mod:`semcorr_ros.ros.params`);
- the engine flags of the ``semcorr`` subcommands (:mod:`semcorr_ros.cli.common`);
- the parameter table of docs/node.md (:func:`semcorr_ros.options.docs.markdown_table`):
  ``python -m semcorr_ros.options --markdown`` prints it, ``--update-docs docs/node.md`` rewrites it.

Engine options are the fields of ``EngineConfig``; node-only options (synchronisation, reference files,
outputs, ...) are the fields of :class:`semcorr_ros.options.node_only.NodeOptions`; the docs table:
:mod:`semcorr_ros.options.docs`. Adding an option means adding one field (plus the code
that uses it). Values on the wire (ROS parameters, CLI flags) follow the field type: ``tuple[X, ...]`` is a list;
``dict[str, str]`` is a list of ``KEY=VALUE`` entries; ``dict[str, int | float]`` is a list with one number per
backbone entry (``0`` for an int: that source's default); ``str | None`` is ``""`` for None; other optional
lists are *not set* for "the default". This module is free of rclpy (docs and the CLI import it).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from semcorr_ros.errors import ConfigError

__all__ = ["CORE", "ADVANCED", "EXPERIMENTAL", "TIERS", "GROUPS", "Kind", "Option", "option", "options_of",
           "validate", "schema", "engine_options", "node_options", "from_wire", "to_wire", "param_default", "KEEP"]

CORE, ADVANCED, EXPERIMENTAL = "core", "advanced", "experimental"
#: ``core``: what a user sets; ``advanced``: constants tuned once (change only with a measurement);
#: ``experimental``: measured no gain, or needs a part that does not ship (docs/ablation.md, docs/accuracy.md).
TIERS = (CORE, ADVANCED, EXPERIMENTAL)
#: Documentation order of the option groups.
GROUPS = ("model", "matching", "crop", "depth", "consensus", "pose", "inputs", "synchronisation", "reference",
          "node", "outputs")

_META_KEY = "semcorr_option"
_DERIVE = object()


class _Keep:
    """Marker returned by :func:`from_wire`: the wire value says "not set", keep the current value."""

    def __repr__(self) -> str:
        return "KEEP"


KEEP: Any = _Keep()


@dataclass(frozen=True)
class Kind:
    """Shape of an option's value, read from the field's type hint.

    Attributes:
        base: ``bool``, ``int``, ``float``, ``str``, ``list`` (``tuple[X, ...]``) or ``map`` (``dict[str, X]``).
        item: item type of a list or a map (``str``, ``int`` or ``float``), else None.
        optional: the type admits None.
    """

    base: str
    item: type | None = None
    optional: bool = False

    @property
    def ros_type(self) -> str:
        """ROS parameter type name: ``bool``, ``int``, ``double``, ``string`` or one of them with ``[]``."""
        names = {bool: "bool", int: "int", float: "double", str: "string"}
        if self.base in ("list", "map"):
            return names[self.item] + "[]"  # type: ignore[index]
        return {"bool": "bool", "int": "int", "float": "double", "str": "string"}[self.base]

    @classmethod
    def of(cls, hint: Any) -> "Kind":
        """The kind of a resolved type hint; raises TypeError for a type the schema cannot express."""
        args = typing.get_args(hint)
        optional = False
        if typing.get_origin(hint) in (typing.Union, types.UnionType):
            rest = [a for a in args if a is not type(None)]
            optional = len(rest) < len(args)
            if len(rest) != 1:
                raise TypeError(f"unsupported option type {hint!r}")
            hint, args = rest[0], typing.get_args(rest[0])
        origin = typing.get_origin(hint)
        if hint in (bool, int, float, str):
            return cls(hint.__name__, None, optional)
        if origin is tuple and len(args) == 2 and args[1] is Ellipsis and args[0] in (str, int, float):
            return cls("list", args[0], optional)
        if origin is dict and len(args) == 2 and args[0] is str and args[1] in (str, int, float):
            return cls("map", args[1], optional)
        raise TypeError(f"unsupported option type {hint!r}")


@dataclass(frozen=True)
class Option:
    """One option of the schema (built by :func:`options_of` from a dataclass field declared with :func:`option`).

    Attributes:
        name: the dataclass field (``EngineConfig`` or ``NodeOptions``).
        kind: shape of the value.
        default: default value as the dataclass holds it.
        description: one line, Markdown (backticks are dropped in ROS descriptors).
        tier: ``core``, ``advanced`` or ``experimental``.
        group: one of :data:`GROUPS`.
        runtime: can change while the node runs (a ROS parameter that is not read-only).
        reencodes: changing it at run time re-encodes the active reference.
        range: inclusive ``(lo, hi)`` of a number, or of every item of a list or map.
        choices: valid string values.
        pattern: regular expression of further valid strings (shown as ``pattern_label``).
        pattern_label: how the pattern is shown, e.g. ``cuda:N``.
        min_items: fewest items of a list.
        length: exact number of items of a list.
        unique: list items may not repeat.
        engine: a field of ``EngineConfig`` (else a node-only option).
        param: ROS parameter name, None when not a ROS parameter.
        flag: CLI flag (``--name``), None when not a flag.
        metavar: CLI metavar.
    """

    name: str
    kind: Kind
    default: Any
    description: str
    tier: str = CORE
    group: str = "node"
    runtime: bool = True
    reencodes: bool = False
    range: tuple[float, float] | None = None
    choices: tuple[str, ...] | None = None
    pattern: str | None = None
    pattern_label: str | None = None
    min_items: int = 0
    length: int | None = None
    unique: bool = False
    engine: bool = False
    param: str | None = None
    flag: str | None = None
    metavar: str | None = None

    @property
    def shown_choices(self) -> tuple[str, ...]:
        """Choices as documented (the pattern's label last)."""
        return (*(self.choices or ()), *((self.pattern_label,) if self.pattern_label else ()))

    def full_description(self) -> str:
        """The description, with "Re-encodes the reference." when changing it does."""
        return self.description + (" Re-encodes the reference." if self.reencodes else "")

    def check(self, value: Any) -> Any:
        """Validate ``value`` and return it normalised (lists as tuples of the item type).

        Raises:
            ConfigError: the message names the option and the valid range or choices.
        """
        k = self.kind
        if value is None:
            if k.optional:
                return None
            raise ConfigError(f"{self.name} must be set (got None)")
        if k.base in ("int", "float"):
            if self.range is not None:
                _check_range(self.name, value, *self.range)
        elif k.base == "str":
            self._check_choice(value)
        elif k.base == "list":
            value = self._check_list(value)
        elif k.base == "map" and self.range is not None:
            for key, v in dict(value).items():
                _check_range(f"{self.name}[{key!r}]", v, *self.range)
        return value

    def _check_choice(self, value: Any) -> None:
        if not self.choices or value in self.choices:
            return
        if self.pattern and isinstance(value, str) and re.fullmatch(self.pattern, value):
            return
        extra = f" (or {self.pattern_label!r})" if self.pattern_label else ""
        raise ConfigError(f"{self.name} must be one of {self.choices}{extra}, got {value!r}")

    def _check_list(self, value: Any) -> tuple:
        item = self.kind.item
        try:
            out = tuple(value) if item is str else tuple(item(v) for v in value)  # type: ignore[misc]
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{self.name} must be a list of {_plural(item)}, got {value!r}") from exc
        if len(out) < self.min_items or (self.unique and len(set(out)) != len(out)):
            repeats = " and no repeats" if self.unique else ""
            raise ConfigError(f"{self.name} needs at least {self.min_items} entr{'y' if self.min_items == 1 else 'ies'}"
                              f"{repeats}, got {list(out)}")
        if self.length is not None and len(out) != self.length:
            raise ConfigError(f"{self.name} needs {self.length} entries, got {list(out)}")
        for v in out:
            if item is float and not math.isfinite(v):
                raise ConfigError(f"{self.name} entries must be finite, got {list(out)}")
            if self.range is not None:
                _check_range(f"{self.name} entries", v, *self.range)
            if item is str:
                self._check_choice(v)
        return out


def _plural(item: Any) -> str:
    return {str: "strings", int: "integers", float: "numbers"}.get(item, "values")


def _check_range(name: str, value: Any, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (lo <= value <= hi):
        raise ConfigError(f"{name} must be a number in [{lo}, {hi}], got {value!r}")


def option(default: Any = dataclasses.MISSING, description: str = "", *, factory: Callable[[], Any] | None = None,
           tier: str = CORE, group: str = "node", runtime: bool = True, reencodes: bool = False,
           range: tuple[float, float] | None = None, choices: Sequence[str] | None = None,
           pattern: str | None = None, pattern_label: str | None = None, min_items: int = 0,
           length: int | None = None, unique: bool = False, param: Any = _DERIVE, flag: Any = _DERIVE,
           metavar: str | None = None) -> Any:
    """Declare a dataclass field as an option of the schema (see :class:`Option` for the arguments).

    ``param`` defaults to the field name and ``flag`` to ``--field-name`` for engine options (node options: no
    flag); pass None for "not exposed there". ``factory`` replaces ``default`` for mutable defaults.
    """
    if tier not in TIERS:
        raise ValueError(f"tier must be one of {TIERS}, got {tier!r}")
    if group not in GROUPS:
        raise ValueError(f"group must be one of {GROUPS}, got {group!r}")
    meta = {"description": description, "tier": tier, "group": group, "runtime": runtime, "reencodes": reencodes,
            "range": range, "choices": tuple(choices) if choices else None, "pattern": pattern,
            "pattern_label": pattern_label, "min_items": min_items, "length": length, "unique": unique,
            "param": param, "flag": flag, "metavar": metavar}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata={_META_KEY: meta})
    return dataclasses.field(default=default, metadata={_META_KEY: meta})


@functools.cache
def options_of(cls: type, engine: bool | None = None) -> tuple[Option, ...]:
    """The options declared by the fields of dataclass ``cls``, in field order.

    ``engine`` marks them as ``EngineConfig`` fields (default: whether ``cls`` is ``EngineConfig`` or a subclass).
    """
    if engine is None:
        from semcorr_ros.config import EngineConfig  # here: config imports this module

        engine = issubclass(cls, EngineConfig)
    module = sys.modules.get(cls.__module__)
    hints = typing.get_type_hints(cls, vars(module) if module else None)
    out = []
    for f in dataclasses.fields(cls):
        meta = f.metadata.get(_META_KEY)
        if meta is None:
            continue
        meta = dict(meta)
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default  # type: ignore[misc]
        if meta["param"] is _DERIVE:
            meta["param"] = f.name
        if meta["flag"] is _DERIVE:
            meta["flag"] = "--" + f.name.replace("_", "-") if engine else None
        out.append(Option(name=f.name, kind=Kind.of(hints[f.name]), default=default, engine=engine, **meta))
    return tuple(out)


def validate(obj: Any) -> None:
    """Check every option field of dataclass instance ``obj`` in place (normalising lists to tuples).

    Raises:
        ConfigError: the first bad value (the message names the option and its range or choices).
    """
    for opt in options_of(type(obj)):
        value = getattr(obj, opt.name)
        checked = opt.check(value)
        if checked is not value:
            object.__setattr__(obj, opt.name, checked)


# ------------------------------------------------------------------------------------------------ the schema


def engine_options() -> tuple[Option, ...]:
    """The options of :class:`semcorr_ros.config.EngineConfig`."""
    from semcorr_ros.config import EngineConfig

    return options_of(EngineConfig)


def node_options() -> tuple[Option, ...]:
    """The node-only options (:class:`semcorr_ros.options.node_only.NodeOptions`)."""
    from semcorr_ros.options.node_only import NodeOptions

    return options_of(NodeOptions, engine=False)


def schema(extra: Iterable[Option] = ()) -> tuple[Option, ...]:
    """Every option (engine, then node, then ``extra``), stably ordered by :data:`GROUPS`."""
    opts = [*engine_options(), *node_options(), *extra]
    return tuple(sorted(opts, key=lambda o: GROUPS.index(o.group)))


# ------------------------------------------------------------------------------------ wire values (ROS, CLI)


def from_wire(opt: Option, value: Any, label: str, sources: Sequence[str] = ()) -> Any:
    """The option value for a value as ROS parameters or CLI flags carry it (see the module docstring).

    ``sources`` (the backbone entries) maps per-source lists. Returns :data:`KEEP` for "not set".

    Raises:
        ConfigError: malformed entries (the message starts with ``label``, e.g. ``parameter 'weights'``).
    """
    k = opt.kind
    if k.base == "str":
        return (value or None) if k.optional else value
    if k.base not in ("list", "map"):
        return value
    items = [] if value is None else list(value)
    if k.base == "list":
        if k.item is str:
            items = [str(v).strip() for v in items if str(v).strip()]
        if not items and k.optional:
            return KEEP
        return tuple(items)
    if k.item is str:
        out = {}
        for entry in items:
            key, sep, val = str(entry).partition("=")
            if not sep or not key.strip() or not val.strip():
                raise ConfigError(f"{label} expects SOURCE=PATH entries, got {entry!r}")
            out[key.strip()] = val.strip()
        return out
    if not items:
        return KEEP
    if len(items) != len(sources):
        raise ConfigError(f"{label} needs one entry per backbone entry {list(sources)}, got {items}")
    if k.item is int:
        if any(int(v) < 0 for v in items):
            raise ConfigError(f"{label} entries must be >= 0 (0 = default), got {items}")
        return {s: int(v) for s, v in zip(sources, items) if int(v) > 0}
    return {s: float(v) for s, v in zip(sources, items)}


def to_wire(opt: Option, value: Any, sources: Sequence[str] = ()) -> Any:
    """The ROS parameter value of an option value (the inverse of :func:`from_wire`; None = not set)."""
    k = opt.kind
    if k.base == "str":
        return "" if value is None else str(value)
    if k.base == "bool":
        return bool(value)
    if k.base in ("int", "float"):
        return int(value) if k.base == "int" else float(value)
    if value is None:
        return None
    if k.base == "list":
        return [k.item(v) for v in value]  # type: ignore[misc]
    if k.item is str:
        return [f"{key}={v}" for key, v in value.items()] or None
    if not value:
        return None
    return [k.item(value.get(s, 0 if k.item is int else 1.0)) for s in sources]  # type: ignore[misc]


def param_default(opt: Option) -> Any:
    """Default of the ROS parameter: the option default on the wire; None = declared by type only."""
    k = opt.kind
    if k.base == "map" or (k.base == "list" and k.optional):
        return None
    return to_wire(opt, opt.default)
