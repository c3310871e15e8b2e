"""``semcorr synth OUT``: a synthetic RGB-D scene bag with per-frame ground truth and a reference (docs/synth.md).

Renders on the CPU (open3d ray casting). Output layout::

    OUT/bag/                  rosbag2 (mcap or sqlite3): colour, aligned depth, camera info, ground truth
    OUT/reference.yaml        + reference.png, reference_depth.png (another instance, front three-quarter view)
    OUT/scene.json            command, seed, instances, frames, object fraction statistics
    OUT/preview.png           a few frames with their ground-truth keypoints, and the reference

``--category all`` writes one such folder per category (OUT/mug, OUT/bottle, OUT/lamp) and an index OUT/scene.json.
``--orbit full`` makes the camera go once round the object; ``--reference-views N`` adds OUT/reference_set.yaml (N
views of the reference instance around it); ``--objects mug,bottle`` puts several objects in one scene, with one
reference (set) per object in OUT/<object>/ and OUT/objects.yaml listing them.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

CATEGORY_CHOICES = ("mug", "bottle", "lamp", "all")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, metavar="OUT", help="output folder (must not exist or be empty)")
    parser.add_argument("--category", default=None, choices=CATEGORY_CHOICES,
                        help="object category; 'all' = one scene per category in sub-folders (default: mug)")
    parser.add_argument("--frames", type=int, default=30, help="number of frames (default: %(default)s)")
    parser.add_argument("--rate", type=float, default=15.0, help="frame rate in Hz (default: %(default)s)")
    parser.add_argument("--width", type=int, default=640, help="image width (default: %(default)s)")
    parser.add_argument("--height", type=int, default=480, help="image height (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed: same seed, same bytes (default: %(default)s)")
    parser.add_argument("--small-object", action="store_true",
                        help="pull the camera back so the object covers under 5%% of the image (~1.5-3.5%%)")
    parser.add_argument("--depth-noise", action="store_true",
                        help="RealSense-like depth: noise growing with z^2, mm quantisation, holes at edges, "
                             "dropouts, nothing beyond 4 m")
    parser.add_argument("--no-clutter", action="store_true", help="no background clutter objects")
    parser.add_argument("--orbit", default="swing", choices=("swing", "full"),
                        help="camera path: 'swing' = hand-held swing on the reference's side; 'full' = one "
                             "360-degree turn around the object over the frames (default: %(default)s)")
    parser.add_argument("--reference-views", type=int, default=0, metavar="N",
                        help="also write reference_set.yaml: N views of the reference instance spread around it "
                             "(azimuths a0 + 360 i / N; view 0 = reference.yaml); 0 = none (default: %(default)s)")
    parser.add_argument("--objects", default=None, metavar="A,B",
                        help="several objects in one scene, e.g. mug,bottle (categories, repeats allowed): ground "
                             "truth per object, one reference (set) per object in OUT/<object>/, and "
                             "OUT/objects.yaml; replaces --category")
    parser.add_argument("--occlusion", default=None, metavar="START:END",
                        help="frames START <= i < END: a grey panel just in front of the camera hides the object "
                             "entirely (ground truth: no keypoint visible), to test track loss and re-acquisition")
    parser.add_argument("--storage", default="mcap", choices=("mcap", "sqlite3"),
                        help="rosbag2 storage plugin (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true", help="replace a non-empty OUT")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from semcorr_ros.lab import require

    require(("open3d",), "semcorr synth")
    from semcorr_ros.errors import ConfigError
    from semcorr_ros.lab.synth.categories import CATEGORIES
    from semcorr_ros.lab.synth.output import write_output
    from semcorr_ros.lab.synth.scene import SceneSpec

    objects: tuple[str, ...] = ()
    if args.objects is not None:
        objects = tuple(o.strip() for o in args.objects.split(",") if o.strip())
        unknown = [o for o in objects if o not in CATEGORIES]
        if not objects or unknown:
            raise ConfigError(f"--objects must be a comma-separated list of categories ({', '.join(CATEGORIES)}), "
                              f"got {args.objects!r}")
        if args.category is not None:
            raise ConfigError("give either --objects or --category, not both")
    if args.category is None:
        args.category = "mug"
    if args.reference_views < 0:
        raise ConfigError(f"--reference-views must be 0 (none) or a number of views, got {args.reference_views}")
    cats = ["mug", "bottle", "lamp"] if args.category == "all" else [args.category]
    if objects:
        cats = [objects[0]]
    specs = [SceneSpec(category=c, seed=args.seed, frames=args.frames, small_object=args.small_object,
                       depth_noise=args.depth_noise, width=args.width, height=args.height, rate=args.rate,
                       clutter=not args.no_clutter, orbit=args.orbit, reference_views=args.reference_views,
                       objects=objects, occlusion=_occlusion(args.occlusion)) for c in cats]
    for s in specs:
        s.validate()  # ConfigError (exit 1 with the message) before anything is written
    command = _reconstruct(args)
    bar = None
    if not args.no_progress:
        from tqdm import tqdm

        bar = tqdm(total=len(specs) * args.frames, unit="frame", desc="synth")
    t0 = time.perf_counter()
    try:
        docs = write_output(args.out, specs, storage=args.storage, overwrite=args.overwrite, command=command,
                            subfolders=args.category == "all", progress=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t0
    for d in docs:
        for o in d.get("objects", []):
            f = o["object_fraction"]
            print(f"{o['object_id']:>7s} {o['instance']}: object fraction {100 * f['min']:.2f}/{100 * f['mean']:.2f}/"
                  f"{100 * f['max']:.2f}% (min/mean/max), visible keypoints {o['visible_keypoints']['mean']:.1f}/"
                  f"{len(o['keypoint_names'])} mean, reference {o['reference_file']}")
        if "reference_set" in d:
            print(f"{d['category']:>7s} reference set: {d['reference_set']['file']}, "
                  f"{len(d['reference_set']['views'])} views")
        f = d["object_fraction"]
        print(f"{d['category']:>7s} {d['instance']}: {d['frames']} frames, object fraction "
              f"{100 * f['min']:.2f}/{100 * f['mean']:.2f}/{100 * f['max']:.2f}% (min/mean/max), visible keypoints "
              f"{d['visible_keypoints']['mean']:.1f}/{len(d['keypoint_names'])} mean, reference "
              f"{len(d['reference']['visible_keypoints'])} keypoints; render "
              f"{1000 * d['timing']['render_s_per_frame']:.0f} ms/frame")
    print(f"wrote {args.out} in {wall:.1f} s")
    return 0


def _occlusion(text: str | None) -> tuple[int, ...]:
    """``--occlusion START:END`` as ``(start, end)``; None: ``()``."""
    from semcorr_ros.errors import ConfigError

    if text is None:
        return ()
    try:
        a, b = (int(v) for v in text.split(":"))
    except ValueError:
        raise ConfigError(f"--occlusion takes START:END frame numbers (e.g. 10:15), got {text!r}") from None
    if not 0 <= a < b:
        raise ConfigError(f"--occlusion START:END needs 0 <= START < END, got {text!r}")
    return a, b


def _reconstruct(args: argparse.Namespace) -> list[str]:
    """The command line equivalent to ``args`` (recorded in scene.json)."""
    cmd = ["semcorr", "synth", str(args.out), "--category", args.category, "--frames", str(args.frames),
           "--rate", str(args.rate), "--width", str(args.width), "--height", str(args.height), "--seed", str(args.seed),
           "--storage", args.storage]
    if args.orbit != "swing":
        cmd += ["--orbit", args.orbit]
    if args.reference_views:
        cmd += ["--reference-views", str(args.reference_views)]
    if args.objects is not None:
        cmd += ["--objects", args.objects]
    if args.occlusion is not None:
        cmd += ["--occlusion", args.occlusion]
    for flag in ("small_object", "depth_noise", "no_clutter", "overwrite"):
        if getattr(args, flag):
            cmd.append("--" + flag.replace("_", "-"))
    return cmd
