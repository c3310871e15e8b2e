"""The ``semcorr`` command: one entry point, one module per subcommand."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from semcorr_ros.errors import SemcorrError
from semcorr_ros.threads import configure_openmp

#: subcommand name -> module under semcorr_ros.cli providing ``add_arguments(parser)`` and ``run(args)``.
COMMANDS = {
    "match": ("match_cmd", "match the keypoints of a reference image into another image and draw them"),
    "eval": ("eval_cmd", "PCK evaluation on a semantic-correspondence benchmark (PF-WILLOW, SPair-71k, PF-PASCAL, "
                         "AP-10K)"),
    "bench": ("bench_cmd", "per-frame latency and peak memory of the engine on a 640x480 RGB-D frame"),
    "synth": ("synth_cmd", "render a synthetic RGB-D scene bag with per-frame ground truth and a reference"),
    "bag-eval": ("bag_eval_cmd", "replay a rosbag2 through the correspondence node (or the engine offline) and "
                 "score it against the bag's ground truth"),
    "train-kbcnet": ("train_kbcnet_cmd", "train the KBCNet matching head (CSFA + centre-pivot 4D decoder) on "
                     "cached frozen features"),
    "train-fusion": ("train_fusion_cmd", "learn the fusion weights of the feature sources contrastively (InfoNCE)"),
    "reference": ("reference_cmd", "make references: capture from a bag, annotate, propose, check, set"),
}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every subcommand has ``--help``)."""
    import importlib

    parser = argparse.ArgumentParser(prog="semcorr", description="Semantic keypoint correspondence for RGB-D "
                                     "robots: evaluation, benchmarking and tools of semcorr_ros.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        mod = importlib.import_module(f"semcorr_ros.cli.{module}")
        p = sub.add_parser(name, help=help_text, description=help_text)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of ``semcorr``; returns the exit status (0 ok, 1 failure, 2 usage error)."""
    configure_openmp()  # before a subcommand first imports torch
    parser = build_parser()
    ns = parser.parse_args(args)
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(ns._run(ns) or 0)
    except SemcorrError as exc:
        print(f"semcorr {ns.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"semcorr {ns.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
