#!/usr/bin/env python3
"""The picture of the keypoint editor in docs/references.md, from a real run of the authoring commands.

Renders a synthetic scene bag, captures two views of its mug, annotates the first from the bag's ground truth
(where a person would click), lets the engine propose the keypoints on the second (default model) and opens
the editor on the proposal with one keypoint selected, the way ``semcorr reference propose ... --edit`` shows
it; the figure is saved instead of shown.

Usage (after ``bash tools/setup.sh``)::

    .venv/bin/python lab/dev/editor_screenshot.py [--out docs/images/reference_editor.png] [--work out/editor_shot]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "reference_editor.png")
    parser.add_argument("--work", type=Path, default=REPO / "out" / "editor_shot")
    args = parser.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from semcorr_ros.authoring.document import read_draft
    from semcorr_ros.authoring.editor import KeypointEditor
    from semcorr_ros.cli import main as semcorr

    work = args.work
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    steps = [["synth", str(work / "scene"), "--frames", "12", "--seed", "0", "--no-progress"],
             ["reference", "capture", str(work / "front.yaml"), "--bag", str(work / "scene" / "bag"), "--frame", "0",
              "--ground-truth-out", str(work / "front_gt.json")],
             ["reference", "capture", str(work / "side.yaml"), "--bag", str(work / "scene" / "bag"), "--frame", "8"],
             ["reference", "annotate", str(work / "front.yaml"), "--keypoints", str(work / "front_gt.json")],
             ["reference", "propose", str(work / "side.yaml"), "--from", str(work / "front.yaml")]]
    for step in steps:
        print("semcorr " + " ".join(step), file=sys.stderr)
        if semcorr(step) != 0:
            return 1
    draft = read_draft(work / "side.yaml")
    h, w = draft.image.shape[:2]
    fig = plt.figure(figsize=(max(w / 100, 8.0), h / 100 + 0.5), dpi=100)  # wide enough for the help line
    editor = KeypointEditor(fig, draft)
    editor.selected = min(draft.scores, key=draft.scores.get) if draft.scores else None
    editor.redraw()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
