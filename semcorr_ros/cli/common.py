"""Options shared by subcommands: engine flags derived from the option schema, JSON output, threads.

Every option of :mod:`semcorr_ros.options` with a ``flag`` becomes a flag of the subcommands that build an
engine, in three help groups: core options first, then advanced (constants tuned once) and experimental ones.
Booleans get ``--x`` / ``--no-x``; lists and per-backbone values are comma-separated (``default`` keeps the
default); ``--weights SOURCE=PATH`` repeats.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from semcorr_ros.config import EngineConfig
from semcorr_ros.errors import ConfigError
from semcorr_ros.options import ADVANCED, CORE, EXPERIMENTAL, KEEP, Option, from_wire, schema

#: Help groups of the engine flags, by tier: (title, description).
FLAG_GROUPS: dict[str, tuple[str, str | None]] = {
    CORE: ("engine options", None),
    ADVANCED: ("advanced engine options", "constants tuned once; change them together with a measurement"),
    EXPERIMENTAL: ("experimental engine options", "measured no gain, or need a part that does not ship "
                   "(docs/ablation.md, docs/accuracy.md)"),
}


def flag_options(options: Iterable[Option] | None = None) -> tuple[Option, ...]:
    """The options that are CLI flags (default: from the whole schema), in documentation order."""
    return tuple(o for o in (schema() if options is None else options) if o.flag)


def _dest(opt: Option) -> str:
    return str(opt.flag).lstrip("-").replace("-", "_")


def _help(opt: Option) -> str:
    return opt.description.replace("`", "").replace("%", "%%") + " (default: %(default)s)"


def _text_default(opt: Option) -> Any:
    k = opt.kind
    if k.base in ("list", "map") and (k.optional or k.base == "map"):
        return None
    if k.base == "list":
        return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in opt.default)
    return opt.default


def add_engine_arguments(parser: argparse.ArgumentParser, options: Iterable[Option] | None = None) -> None:
    """Add the engine flags of ``options`` (default: the schema) to ``parser``, grouped by tier."""
    groups = {tier: parser.add_argument_group(title, desc) for tier, (title, desc) in FLAG_GROUPS.items()}
    for opt in flag_options(options):
        g, k = groups[opt.tier], opt.kind
        kw: dict[str, Any] = {"dest": _dest(opt), "help": _help(opt)}
        if opt.metavar:
            kw["metavar"] = opt.metavar
        if k.base == "bool":
            g.add_argument(opt.flag, action=argparse.BooleanOptionalAction, default=opt.default, **kw)
        elif k.base == "map" and k.item is str:
            g.add_argument(opt.flag, action="append", default=None, **{**kw, "help": _help(opt).replace(
                " (default: %(default)s)", " (repeatable)")})
        elif k.base in ("list", "map"):
            g.add_argument(opt.flag, default=_text_default(opt), **kw)
        elif k.base == "str" and opt.choices and not opt.pattern:
            g.add_argument(opt.flag, choices=opt.choices, default=opt.default, **kw)
        else:
            kw.setdefault("metavar", "|".join(opt.shown_choices) or {"int": "N", "float": "X"}.get(k.base, "VALUE"))
            g.add_argument(opt.flag, type={"int": int, "float": float}.get(k.base, str), default=opt.default, **kw)


def _wire(opt: Option, value: Any) -> Any:
    """A flag's parsed value as a ROS-style wire value (lists from comma-separated text)."""
    k = opt.kind
    if not isinstance(value, str) or k.base not in ("list", "map") or k.item is str and k.base == "map":
        return value
    if value.strip() == "default":
        return KEEP
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if k.item is str:
        return parts
    try:
        return [k.item(p) for p in parts]  # type: ignore[misc]
    except ValueError:
        raise ConfigError(f"{opt.flag} expects comma-separated numbers, got {value!r}") from None


def engine_config(args: argparse.Namespace, options: Iterable[Option] | None = None) -> EngineConfig:
    """Build the validated :class:`EngineConfig` from parsed flags (and apply ``--threads``).

    Raises:
        ConfigError: a value the engine does not accept (the message names the option and valid choices).
    """
    changes: dict[str, Any] = {}
    per_source: list[tuple[Option, Any]] = []
    for opt in flag_options(options):
        if not opt.engine or not hasattr(args, _dest(opt)):
            continue
        wire = _wire(opt, getattr(args, _dest(opt)))
        if wire is KEEP:
            continue
        if opt.kind.base == "map" and opt.kind.item is not str:
            per_source.append((opt, wire))
            continue
        value = from_wire(opt, wire, str(opt.flag))
        if value is not KEEP:
            changes[opt.name] = value
    cfg = EngineConfig(**changes)
    later = {}
    for opt, wire in per_source:
        value = from_wire(opt, wire, str(opt.flag), cfg.sources)
        if value is not KEEP:
            later[opt.name] = value
    threads = getattr(args, "threads", None)
    if threads:
        import torch

        torch.set_num_threads(threads)
    return cfg.replace(**later) if later else cfg


def parse_engine_flags(argv: Sequence[str], options: Iterable[Option] | None = None) -> EngineConfig:
    """The :class:`EngineConfig` of engine flags alone (for tools and tests)."""
    p = argparse.ArgumentParser()
    add_engine_arguments(p, options)
    return engine_config(p.parse_args(list(argv)), options)


def add_json_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="write machine-readable results")


def write_json(path: Path | None, data: dict[str, Any]) -> None:
    """Write ``data`` to ``path`` atomically (nothing half-written on interruption)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=_jsonable) + "\n")
    os.replace(tmp, path)


def _jsonable(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (np.floating, np.integer, np.bool_)):
        return obj.item()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
