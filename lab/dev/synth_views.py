"""Export rendered views of synthetic objects as reference files: a `references` dataset to try the workflow
"annotate views of your own object, train a fusion on them" (docs/training.md, "Your own objects").

For every category and seed, the frames of one scene (``SceneSpec(category, seed, frames, depth_noise=True)``,
the same instance seen along the scene's camera path) become ``OUT/<category>_s<seed>/view_<i>.yaml`` with the
frame's PNG, its 16-bit depth (mm), the intrinsics and the keypoints visible in that frame (by name).

Usage (from the repository root, after `bash tools/setup.sh`)::

    .venv/bin/python lab/dev/synth_views.py OUT --seeds 7 --frames 20 [--categories mug,bottle,lamp]
    semcorr train-fusion --dataset references --root OUT --holdout-images 0.5 --evaluate ...
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def export(out: Path, category: str, seed: int, frames: int) -> Path:
    """Write one scene's frames as reference files; returns the category folder."""
    import yaml
    from PIL import Image

    from semcorr_ros.lab.synth import SceneSpec, render_scene

    scene = render_scene(SceneSpec(category=category, seed=seed, frames=frames, depth_noise=True))
    folder = out / f"{category}_s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(frames):
        rgb, depth, K, gt = scene.render(i)
        stem = f"view_{i:03d}"
        Image.fromarray(rgb).save(folder / f"{stem}.png")
        Image.fromarray(np.asarray(depth, np.uint16)).save(folder / f"{stem}_depth.png")
        kps = {n: [round(float(x), 3), round(float(y), 3)]
               for n, (x, y), v in zip(gt.names, gt.keypoints_2d, gt.visible) if v}
        doc = {"image": f"{stem}.png", "depth": f"{stem}_depth.png", "depth_scale": 0.001,
               "intrinsics": [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])], "keypoints": kps}
        (folder / f"{stem}.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return folder


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("out", type=Path)
    p.add_argument("--seeds", type=int, nargs="+", default=[7])
    p.add_argument("--frames", type=int, default=20)
    p.add_argument("--categories", default="mug,bottle,lamp")
    args = p.parse_args(argv)
    for seed in args.seeds:
        for cat in [c.strip() for c in args.categories.split(",") if c.strip()]:
            print("wrote", export(args.out, cat, seed, args.frames), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
