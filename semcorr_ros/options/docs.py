"""The parameter table of docs/node.md, generated from the option schema.

``python -m semcorr_ros.options --markdown`` prints it; ``--update-docs docs/node.md`` rewrites the table of
that file's ``## Parameters`` section; ``--check docs/node.md`` exits 1 when it is out of date.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from semcorr_ros.options import Option, param_default, schema

__all__ = ["markdown_table", "docs_table", "update_docs", "main"]

_HEADER = ("| name | type | default | range / choices | at run time | tier | description |\n"
           "|---|---|---|---|---|---|---|")


def _doc_value(value: Any) -> str:
    if value is None:
        return "*(not set)*"
    return f"`{json.dumps(value)}`"


def _doc_constraint(opt: Option) -> str:
    if opt.shown_choices:
        return ", ".join(opt.shown_choices)
    if opt.range is not None:
        lo, hi = opt.range
        text = f"[{lo}, {hi}]"
        return text if opt.kind.base in ("int", "float") else f"each in {text}"
    return ""


def markdown_table(options: Iterable[Option] | None = None) -> str:
    """The Markdown table of the node's ROS parameters (one row per option with a ``param``)."""
    rows = [_HEADER]
    for opt in schema() if options is None else options:
        if opt.param is None:
            continue
        cells = [f"`{opt.param}`", opt.kind.ros_type, _doc_value(param_default(opt)), _doc_constraint(opt),
                 "yes" if opt.runtime else "read-only", opt.tier, opt.full_description()]
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(rows) + "\n"


def docs_table(text: str) -> tuple[int, int]:
    """Line span ``[start, end)`` of the table in the ``## Parameters`` section of a Markdown text.

    Raises:
        ValueError: no such section or no table in it.
    """
    lines = text.split("\n")
    try:
        head = lines.index("## Parameters")
    except ValueError:
        raise ValueError("no '## Parameters' section") from None
    end_section = next((i for i in range(head + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    start = next((i for i in range(head + 1, end_section) if lines[i].startswith("|")), None)
    if start is None:
        raise ValueError("no table in the '## Parameters' section")
    end = next((i for i in range(start, end_section) if not lines[i].startswith("|")), end_section)
    return start, end


def update_docs(text: str, table: str | None = None) -> str:
    """``text`` with the table of its ``## Parameters`` section replaced by :func:`markdown_table`."""
    lines = text.split("\n")
    start, end = docs_table(text)
    new = (table or markdown_table()).rstrip("\n").split("\n")
    return "\n".join(lines[:start] + new + lines[end:])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m semcorr_ros.options --markdown`` | ``--update-docs MD`` | ``--check MD``; returns the exit status."""
    import argparse
    from pathlib import Path

    p = argparse.ArgumentParser(prog="python -m semcorr_ros.options", description=main.__doc__)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--markdown", action="store_true", help="print the parameter table")
    g.add_argument("--update-docs", type=Path, metavar="MD", help="rewrite the table of MD's '## Parameters'")
    g.add_argument("--check", type=Path, metavar="MD", help="exit 1 when MD's table differs from the schema")
    args = p.parse_args(argv)
    if args.markdown:
        sys.stdout.write(markdown_table())
        return 0
    path = args.update_docs or args.check
    text = path.read_text()
    new = update_docs(text)
    if args.check:
        if new != text:
            print(f"{path}: parameter table out of date; run python -m semcorr_ros.options --update-docs {path}",
                  file=sys.stderr)
            return 1
        return 0
    if new != text:
        path.write_text(new)
    return 0
