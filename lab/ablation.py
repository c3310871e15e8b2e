#!/usr/bin/env python3
"""Ablation tables: fusion sources, matcher, depth-aware weighting and KBC, on held-apart data.

Usage (after `bash tools/setup.sh`; run from the repository root or anywhere):

    .venv/bin/python lab/ablation.py [--out out/ablation] [--doc docs/ablation.md] [--blocks fusion matcher synth]
                                       [--force] [--kbcnet-weights PATH] [--wait-synth-until HH:MM]

Runs the real CLI (`semcorr train-fusion`, `train-kbcnet`, `eval`, `bench`) as subprocesses, logs every exact
command (``<out>/logs/<step>.log`` starts with ``$ <command>``), and writes ``<out>/ablation.json`` and the
markdown page ``--doc`` (one table per block; each row: configuration, data, PCK@0.05, PCK@0.1, latency p50 of
`semcorr bench --frames 20` with the same engine flags, and the command).

Blocks:

1. ``fusion`` -- pf-willow-dev (all 450 pairs): each source alone, uniform fusion (equal weight per map; equal
   weight per source), the hand-set weights (effnet 0.7 / dinov2 0.3, chosen on this split), the shipped default
   (learned on rendered scenes) and a fusion learned here by `semcorr train-fusion --dataset synth` (synthetic
   scenes only: neither sees a PF-WILLOW image).
2. ``matcher`` -- nn vs the KBCNet head on fold A of docs/kbcnet.md (trained on car(G), motorbike(G),
   winebottle(M); evaluated on car(M), motorbike(S)), and on the same fold uniform fusion vs the projected fusion
   (`semcorr train-fusion --fusion-model projected`, trained on the same training sub-classes). The head is
   trained for ``--kbcnet-epochs`` (default 1); when that exceeds ``--kbcnet-timeout`` the run falls back to
   ``--kbcnet-fallback`` (if present) and says so.
3. ``synth`` -- depth-aware off/on and KBC off/auto/on on the synthetic RGB-D scenes, read from
   ``lab/synth_benchmark.py``'s ``summary.json`` (never re-run here; ``--wait-synth-until`` polls for it).

Re-runs are cheap: a step whose output (JSON / weights) exists is skipped unless ``--force``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shlex
import sys
import time
from pathlib import Path

# The parts stand next to this script (lab/ is no package): ablation_steps.py (the step runner), ablation_blocks.py
# (the three blocks) and ablation_page.py (the markdown page). Run as a script, lab/ is on sys.path already; loaded
# otherwise (tests: importlib from the file), it is added at the end.
_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.append(_HERE)

from ablation_blocks import block_fusion, block_matcher, block_synth, write_uniform_source  # noqa: E402
from ablation_page import _load_range, markdown  # noqa: E402
from ablation_steps import REPO, Runner, StepFailed, _load  # noqa: E402

# what tests and other scripts use from here (defined in the modules above)
__all__ = ["Runner", "StepFailed", "main", "markdown", "write_uniform_source"]

# the development copy of PF-WILLOW next to the work tree, unless SEMCORR_PFWILLOW_ROOT (as in tools/run.sh) or --data
DEFAULT_DATA = Path(os.environ.get("SEMCORR_PFWILLOW_ROOT") or REPO.parent / "shared" / "data" / "pf-willow-dev")


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _machine() -> str:
    cores = os.cpu_count()
    return f"{cores} CPU cores, no GPU" if cores else "CPU"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--out", type=Path, default=Path("out/ablation"), help="output folder (default out/ablation)")
    p.add_argument("--doc", type=Path, default=REPO / "docs" / "ablation.md", help="markdown page to write")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="pf-willow-dev folder")
    p.add_argument("--blocks", nargs="+", choices=("fusion", "matcher", "synth"),
                   default=["fusion", "matcher", "synth"])
    p.add_argument("--force", action="store_true", help="re-run steps whose output exists")
    p.add_argument("--synth-scenes", type=int, default=6, help="train-fusion synth scenes per category (6)")
    p.add_argument("--synth-frames", type=int, default=8, help="train-fusion synth frames per scene (8)")
    p.add_argument("--kbcnet-epochs", type=int, default=1)
    p.add_argument("--kbcnet-timeout", type=float, default=480.0,
                   help="seconds the head's training may take before falling back (default 480)")
    p.add_argument("--kbcnet-fallback", type=Path, default=REPO / "out" / "kbcnet" / "e3.safetensors")
    p.add_argument("--kbcnet-weights", type=Path, default=None, help="use this head, do not train one")
    p.add_argument("--synth-summary", type=Path, default=REPO / "out" / "synth_benchmark" / "summary.json")
    p.add_argument("--wait-synth-until", default=None, metavar="HH:MM",
                   help="poll for --synth-summary until this UTC time (default: do not wait)")
    args = p.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "ablation.json"
    previous = _load(json_path) if json_path.is_file() else {}
    runner = Runner(out, args.force, previous.get("steps"))
    t0 = time.perf_counter()
    load_before = round(os.getloadavg()[0], 1)
    blocks = dict(previous.get("blocks", {}))
    failures = []

    def finish() -> dict:
        result = {"command": shlex.join([Path(sys.executable).name, "lab/ablation.py", *(argv or sys.argv[1:])]),
                  "machine": _machine(), "load_before": load_before, "load_after": round(os.getloadavg()[0], 1),
                  "wall_s": round(time.perf_counter() - t0, 1),
                  "finished_utc": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  "skipped_steps": sum(1 for s in runner.steps if s.get("skipped")),
                  "compute_s": round(sum((s.get("seconds") or s.get("seconds_earlier_run") or 0.0)
                                         for s in runner.steps), 1),
                  "waited_s": round(sum(b.get("waited_s", 0.0) for b in blocks.values()), 1),
                  "load_range": _load_range(runner.steps),
                  "steps": runner.steps, "blocks": blocks, "failed_blocks": failures}
        _write(json_path, json.dumps(result, indent=2) + "\n")
        _write(args.doc.resolve(), markdown(result))
        return result

    for name in args.blocks:
        try:
            if name == "fusion":
                blocks[name] = block_fusion(runner, args.data.resolve(), args.synth_scenes, args.synth_frames)
            elif name == "matcher":
                blocks[name] = block_matcher(runner, args.data.resolve(), args.kbcnet_epochs, args.kbcnet_timeout,
                                             args.kbcnet_weights and args.kbcnet_weights.resolve(),
                                             args.kbcnet_fallback.resolve())
            else:
                blocks[name] = block_synth(runner, args.synth_summary.resolve(), args.wait_synth_until)
        except StepFailed as exc:
            print(f"ablation: block {name}: {exc}", file=sys.stderr)
            failures.append(name)
        finish()  # the page is current after every block (block 3 may wait for the synthetic benchmark)
    result = finish()
    print(markdown(result))
    print(f"wrote {json_path} and {args.doc} in {result['wall_s']:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
