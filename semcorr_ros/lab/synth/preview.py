"""``preview.png``: a contact sheet of a few frames with their ground-truth keypoints, and the reference."""

from __future__ import annotations

import numpy as np

from semcorr_ros.groundtruth import FrameGroundTruth
from semcorr_ros.lab.synth.scene import SceneReference

TILE_W = 320
VISIBLE = (40, 230, 60)
OCCLUDED = (240, 40, 40)
REFERENCE = (255, 215, 0)


def _tile(rgb: np.ndarray, points: np.ndarray, visible: np.ndarray, title: str, colour_visible=VISIBLE):
    from PIL import Image, ImageDraw

    h, w = rgb.shape[:2]
    s = TILE_W / w
    th = int(round(h * s))
    im = Image.fromarray(rgb).resize((TILE_W, th), Image.BILINEAR)
    canvas = Image.new("RGB", (TILE_W, th + 16), (20, 20, 20))
    canvas.paste(im, (0, 16))
    dr = ImageDraw.Draw(canvas)
    dr.text((4, 2), title, fill=(235, 235, 235))
    for (x, y), v in zip(points, visible):
        if not (np.isfinite(x) and np.isfinite(y)):
            continue
        px, py = (x + 0.5) * s - 0.5, (y + 0.5) * s - 0.5 + 16
        if not (-8 < px < TILE_W + 8 and 8 < py < th + 24):
            continue
        if v:
            dr.ellipse([px - 3.5, py - 3.5, px + 3.5, py + 3.5], fill=colour_visible, outline=(0, 0, 0))
        else:
            dr.line([px - 3.5, py - 3.5, px + 3.5, py + 3.5], fill=OCCLUDED, width=2)
            dr.line([px - 3.5, py + 3.5, px + 3.5, py - 3.5], fill=OCCLUDED, width=2)
    return canvas


def contact_sheet(frames: dict[int, tuple[np.ndarray, FrameGroundTruth]], reference: SceneReference) -> np.ndarray:
    """Up to a few frames (``index -> (rgb, gt)``) plus the reference, 3 tiles a row; uint8 RGB.

    Frame keypoints: green dots = visible, red crosses = occluded or out of view; reference keypoints: yellow
    (only those visible in the reference are listed in its YAML)."""
    from PIL import Image, ImageDraw

    tiles = []
    for i, (rgb, gt) in sorted(frames.items()):
        tiles.append(_tile(rgb, gt.keypoints_2d, gt.visible,
                           f"frame {i}  visible {int(gt.visible.sum())}/{len(gt.names)}  "
                           f"object {100 * gt.object_fraction:.1f}%"))
    tiles.append(_tile(reference.image, reference.all_keypoints_2d, reference.visible,
                       f"reference {reference.instance}  {len(reference.names)} kps", REFERENCE))
    cols = 3
    rows = (len(tiles) + cols - 1) // cols
    tw, th = tiles[0].size
    sheet = Image.new("RGB", (cols * tw, rows * th), (20, 20, 20))
    for k, t in enumerate(tiles):
        sheet.paste(t, ((k % cols) * tw, (k // cols) * th))
    if len(tiles) < rows * cols:
        dr = ImageDraw.Draw(sheet)
        x0, y0 = (len(tiles) % cols) * tw + 10, (rows - 1) * th + 20
        dr.ellipse([x0, y0, x0 + 7, y0 + 7], fill=VISIBLE, outline=(0, 0, 0))
        dr.text((x0 + 14, y0 - 2), "visible keypoint", fill=(235, 235, 235))
        dr.line([x0, y0 + 20, x0 + 7, y0 + 27], fill=OCCLUDED, width=2)
        dr.line([x0, y0 + 27, x0 + 7, y0 + 20], fill=OCCLUDED, width=2)
        dr.text((x0 + 14, y0 + 18), "occluded / out of view", fill=(235, 235, 235))
        dr.ellipse([x0, y0 + 40, x0 + 7, y0 + 47], fill=REFERENCE, outline=(0, 0, 0))
        dr.text((x0 + 14, y0 + 38), "reference keypoint (visible)", fill=(235, 235, 235))
    return np.asarray(sheet)
