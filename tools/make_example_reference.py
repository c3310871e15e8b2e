#!/usr/bin/env python3
"""Write the example reference of ``config/``: a synthetic toy robot drawn with PIL (our own work).

Outputs (next to each other in ``--out``, default ``config/``):

- ``example_reference.png``: 640x480 RGB picture of a toy robot in front of a plain wall;
- ``example_reference_depth.png``: 16-bit depth in millimetres, the robot a fronto-parallel plane at 0.8 m,
  the wall at 1.5 m (aligned with the picture);
- ``example_reference.yaml``: the reference file (``semcorr_ros.reference`` format) with 10 named keypoints
  and the pinhole intrinsics the depth was made for (fx = fy = 600, cx = 319.5, cy = 239.5).

The drawing is deterministic, so re-running the script reproduces the committed files byte for byte (given the
same Pillow version). Usage::

    .venv/bin/python tools/make_example_reference.py [--out config]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 640, 480
INTRINSICS = (600.0, 600.0, 319.5, 239.5)  # fx, fy, cx, cy
OBJECT_DEPTH_MM = 800
WALL_DEPTH_MM = 1500

# Named keypoints, pixels (x, y); each lies well inside a distinctive part of the robot.
KEYPOINTS: dict[str, tuple[float, float]] = {
    "antenna_tip": (320.0, 62.0),
    "left_eye": (290.0, 126.0),
    "right_eye": (352.0, 126.0),
    "mouth_centre": (321.0, 160.0),
    "chest_panel": (320.0, 250.0),
    "belly_button": (320.0, 316.0),
    "left_hand": (176.0, 306.0),
    "right_hand": (466.0, 306.0),
    "left_foot": (276.0, 414.0),
    "right_foot": (366.0, 414.0),
}


def draw_robot() -> tuple[Image.Image, Image.Image]:
    """The RGB picture and the robot's silhouette mask (mode ``L``, 255 on the robot)."""
    img = Image.new("RGB", (WIDTH, HEIGHT), (214, 206, 190))
    mask = Image.new("L", (WIDTH, HEIGHT), 0)
    d, m = ImageDraw.Draw(img), ImageDraw.Draw(mask)
    # the wall: soft horizontal bands and a skirting board (background, not part of the robot)
    for i, y in enumerate(range(0, 440, 40)):
        d.rectangle([0, y, WIDTH, y + 19], fill=(206 - i, 198 - i, 182 - i))
    d.rectangle([0, 440, WIDTH, HEIGHT], fill=(120, 96, 72))

    def shape(kind: str, box: list[float], fill: tuple[int, int, int], outline: tuple[int, int, int] | None = None,
              width: int = 0, robot: bool = True) -> None:
        getattr(d, kind)(box, fill=fill, outline=outline, width=width)
        if robot:
            getattr(m, kind)(box, fill=255)

    # antenna
    shape("rectangle", [316, 68, 324, 96], (60, 60, 70))
    shape("ellipse", [308, 50, 332, 74], (230, 40, 40), (120, 10, 10), 2)
    # head with eyes and a mouth grille
    shape("rounded_rectangle", [250, 94, 392, 186], (250, 170, 40), (130, 80, 10), 3)
    # ears: a red bolt on the left, a cyan one on the right
    shape("rectangle", [236, 124, 252, 152], (200, 40, 40), (90, 10, 10), 2)
    shape("rectangle", [390, 124, 406, 152], (40, 190, 200), (10, 80, 90), 2)
    # eyes: a round white one with a blue pupil, a square dark one with a green lens
    shape("ellipse", [274, 110, 306, 142], (255, 255, 255), (20, 20, 20), 2)
    shape("ellipse", [284, 120, 296, 132], (20, 60, 200))
    shape("rectangle", [336, 110, 368, 142], (30, 30, 30), (0, 0, 0), 2)
    shape("rectangle", [344, 118, 360, 134], (60, 220, 90))
    shape("rectangle", [288, 152, 354, 170], (40, 40, 40))
    for x in range(294, 354, 10):
        d.line([x, 152, x, 170], fill=(200, 200, 200), width=2)
    # neck and body
    shape("rectangle", [304, 186, 338, 204], (90, 90, 100))
    shape("rounded_rectangle", [232, 200, 410, 352], (60, 110, 190), (20, 40, 90), 3)
    for y in range(206, 350, 12):  # body stripes
        d.line([236, y, 406, y], fill=(70, 125, 205), width=4)
    # chest panel: a 6x4 checkerboard of distinct colours
    shape("rectangle", [280, 224, 362, 278], (30, 30, 30))
    palette = [(240, 220, 60), (220, 60, 150), (40, 200, 200), (250, 250, 250)]
    for r in range(4):
        for c in range(6):
            x0, y0 = 284 + 13 * c, 228 + 12.5 * r
            d.rectangle([x0, y0, x0 + 11, y0 + 10], fill=palette[(r + 2 * c) % 4])
    shape("ellipse", [308, 304, 332, 328], (250, 250, 250), (20, 20, 20), 2)  # belly button
    d.ellipse([315, 311, 325, 321], fill=(200, 30, 30))
    # arms: left red with a yellow hand, right green with a purple hand
    shape("rectangle", [186, 212, 232, 232], (200, 40, 40))
    shape("rectangle", [166, 212, 190, 290], (200, 40, 40))
    shape("ellipse", [154, 284, 198, 328], (250, 220, 40), (120, 100, 10), 2)
    shape("rectangle", [410, 212, 456, 232], (40, 170, 70))
    shape("rectangle", [452, 212, 476, 290], (40, 170, 70))
    shape("ellipse", [444, 284, 488, 328], (150, 60, 200), (70, 20, 100), 2)
    # legs and feet
    shape("rectangle", [262, 352, 290, 398], (90, 90, 100))
    shape("rectangle", [352, 352, 380, 398], (90, 90, 100))
    shape("rounded_rectangle", [240, 396, 304, 430], (30, 30, 30), (0, 0, 0), 2)
    shape("rounded_rectangle", [338, 396, 402, 430], (110, 70, 40), (50, 30, 10), 2)
    d.line([248, 418, 296, 418], fill=(240, 240, 240), width=3)  # a white sole stripe on the left foot
    return img, mask


def depth_from_mask(mask: Image.Image) -> np.ndarray:
    """uint16 millimetres: the robot at :data:`OBJECT_DEPTH_MM`, the wall at :data:`WALL_DEPTH_MM`."""
    on_robot = np.asarray(mask) > 0
    return np.where(on_robot, OBJECT_DEPTH_MM, WALL_DEPTH_MM).astype(np.uint16)


def reference_yaml() -> str:
    fx, fy, cx, cy = INTRINSICS
    lines = [
        "# Example reference for semcorr_ros (generated by tools/make_example_reference.py; synthetic, our own).",
        "# Format: semcorr_ros.reference (paths relative to this file; pixels 0-based, centres at integers).",
        "reference_id: example_robot",
        "image: example_reference.png",
        "depth: example_reference_depth.png  # 16-bit PNG, millimetres, 0 = invalid",
        "depth_scale: 0.001",
        f"intrinsics: [{fx}, {fy}, {cx}, {cy}]  # fx, fy, cx, cy of the (virtual) reference camera",
        "keypoints:",
    ]
    lines += [f"  {name}: [{x}, {y}]" for name, (x, y) in KEYPOINTS.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "config",
                        help="output folder (default: the repository's config/)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    img, mask = draw_robot()
    img.save(args.out / "example_reference.png", optimize=True)
    Image.fromarray(depth_from_mask(mask)).save(args.out / "example_reference_depth.png", optimize=True)
    (args.out / "example_reference.yaml").write_text(reference_yaml())
    for name in ("example_reference.png", "example_reference_depth.png", "example_reference.yaml"):
        print(f"wrote {args.out / name} ({(args.out / name).stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
