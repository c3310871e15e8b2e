"""``semcorr reference SUBCOMMAND``: make references without typing YAML (docs/references.md).

    capture   a view (colour, aligned depth, intrinsics) from a bag frame, keypoints still to place
    annotate  place, move, name and delete keypoints in a matplotlib editor (or take them from a file)
    propose   the engine proposes a new view's keypoints from a view already annotated, with scores
    check     validate a reference, set or objects file and draw its contact sheet
    set       write a reference set from view files
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from semcorr_ros.cli.common import add_engine_arguments, add_json_argument, engine_config, write_json
from semcorr_ros.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="ref_command", metavar="SUBCOMMAND", required=True)

    p = sub.add_parser("capture", help="a reference view from one bag frame or live topics (keypoints still to place)",
                       description="Write OUT.yaml + OUT.png + OUT_depth.png (colour, aligned depth in mm, "
                       "intrinsics) from one colour frame of a rosbag2 (--bag) or the next complete set on live "
                       "camera topics (--live: raw colour, aligned depth, camera info; the node's default topics, "
                       "under --namespace). Its keypoints are empty: place them with "
                       "`semcorr reference annotate OUT.yaml` or `semcorr reference propose`.")
    p.add_argument("out", type=Path, metavar="OUT.yaml", help="reference YAML to write")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--bag", type=Path, help="rosbag2 folder (or .mcap file)")
    src.add_argument("--live", action="store_true", help="capture from live topics (a running camera driver)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--frame", type=int, help="--bag: 0-based colour frame index (default: 0)")
    g.add_argument("--time", type=float, metavar="T",
                   help="--bag: seconds after the first colour frame (nearest frame)")
    p.add_argument("--color-topic", help="colour topic (default: --bag auto-detected, realsense2_camera names first; "
                   "--live NAMESPACE/color/image_raw)")
    p.add_argument("--depth-topic", help="aligned depth topic (default: --bag auto-detected; --live "
                   "NAMESPACE/aligned_depth_to_color/image_raw)")
    p.add_argument("--info-topic", help="camera info topic (default: --bag auto-detected; --live "
                   "NAMESPACE/color/camera_info)")
    p.add_argument("--namespace", default="", help="--live: the camera's namespace (e.g. /camera/camera)")
    p.add_argument("--timeout", type=float, default=10.0,
                   help="--live: seconds to wait for a set (default: %(default)s)")
    p.add_argument("--sync-slop", type=float, default=0.02,
                   help="--live: largest colour-depth stamp difference, s (default: %(default)s)")
    p.add_argument("--depth-scale", type=float, default=0.001,
                   help="metres per unit of 16UC1 depth (default: %(default)s)")
    p.add_argument("--reference-id", help="reference_id written to the file (default on loading: its stem)")
    p.add_argument("--ground-truth-out", type=Path, metavar="KP.json",
                   help="also write the frame's visible ground-truth keypoints (bags of `semcorr synth`) as a "
                        "keypoints file for `annotate --keypoints`")
    add_json_argument(p)
    p.set_defaults(_ref_run=_capture)

    p = sub.add_parser("annotate", help="place, move, name and delete keypoints in an editor",
                       description="Open REF.yaml in the keypoint editor (" + _editor_help() + "), or, with "
                       "--keypoints, take them from a file without a window.")
    p.add_argument("ref", type=Path, metavar="REF.yaml", help="a reference YAML (from capture or propose)")
    p.add_argument("--keypoints", type=Path, metavar="FILE",
                   help="YAML/JSON {name: [x, y]} (or a file with a 'keypoints' mapping): set them, no window")
    p.add_argument("--names", help="comma-separated names given to the next clicked points, in order")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="proposal score under which a keypoint is uncertain (default: %(default)s)")
    p.set_defaults(_ref_run=_annotate)

    p = sub.add_parser("propose", help="the engine proposes a new view's keypoints from an annotated view",
                       description="Match every keypoint of ANNOTATED.yaml into the image of TARGET.yaml and write "
                       "them there with their scores (proposal.scores); those under --threshold are listed as "
                       "uncertain (proposal.uncertain). Correct them with `semcorr reference annotate` (--edit).")
    p.add_argument("target", type=Path, metavar="TARGET.yaml", help="the view to fill (from capture)")
    p.add_argument("--from", dest="source", type=Path, required=True, metavar="ANNOTATED.yaml",
                   help="a view of the same object with keypoints")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="score under which a proposal is uncertain (default: %(default)s)")
    p.add_argument("--keep-existing", action="store_true", help="leave keypoints already in TARGET as they are")
    p.add_argument("--edit", action="store_true", help="open the editor on the result (colours: score)")
    add_engine_arguments(p)
    add_json_argument(p)
    p.set_defaults(_ref_run=_propose)

    p = sub.add_parser("check", help="validate a reference, set or objects file; draw a contact sheet",
                       description="Load FILE as the node does (any of the three kinds) and list per object and "
                       "view its keypoints and the object's names it lacks; --sheet draws every view.")
    p.add_argument("file", type=Path, metavar="REF_OR_SET.yaml")
    p.add_argument("--sheet", type=Path, metavar="OUT.png", help="contact sheet of every view with its keypoints")
    add_json_argument(p)
    p.set_defaults(_ref_run=_check)

    p = sub.add_parser("set", help="write a reference set from view files",
                       description="Write OUT.yaml, a reference set of one object naming the VIEW files (paths "
                       "relative to OUT), and check that it loads.")
    p.add_argument("out", type=Path, metavar="OUT.yaml")
    p.add_argument("views", type=Path, nargs="+", metavar="VIEW.yaml")
    p.add_argument("--object-id", required=True, help="the object's id (e.g. mug)")
    p.set_defaults(_ref_run=_set)


def _editor_help() -> str:
    from semcorr_ros.authoring.editor import HELP

    return HELP.replace("%", "%%")


def run(args: argparse.Namespace) -> int:
    return int(args._ref_run(args) or 0)


def _capture(args: argparse.Namespace) -> int:
    from semcorr_ros.authoring.capture import capture_from_bag, capture_live, live_topics, write_keypoints_json

    if args.live:
        if args.frame is not None or args.time is not None or args.ground_truth_out:
            raise InputError("--frame, --time and --ground-truth-out go with --bag, not --live")
        topics = live_topics(args.namespace, args.color_topic, args.depth_topic, args.info_topic)
        print(f"waiting up to {args.timeout:g} s for {', '.join(topics)} ...", file=sys.stderr)
        cap = capture_live(args.out, topics=topics, timeout=args.timeout, depth_scale=args.depth_scale,
                           sync_slop=args.sync_slop, reference_id=args.reference_id)
        print(f"wrote {cap.path} (stamp {cap.stamp_ns}); no keypoints yet: semcorr reference annotate {cap.path}")
        write_json(args.json, {"path": str(cap.path), "stamp_ns": cap.stamp_ns, "topics": list(topics)})
        return 0
    print(f"reading {args.bag} ...", file=sys.stderr)
    cap = capture_from_bag(args.bag, args.out, frame=args.frame, time_s=args.time, color_topic=args.color_topic,
                           depth_topic=args.depth_topic, info_topic=args.info_topic, depth_scale=args.depth_scale,
                           reference_id=args.reference_id)
    print(f"wrote {cap.path} (frame {cap.frame}, stamp {cap.stamp_ns}); no keypoints yet: "
          f"semcorr reference annotate {cap.path}")
    if args.ground_truth_out:
        if not cap.ground_truth:
            print("the bag has no ground truth for this frame: no keypoints file written", file=sys.stderr)
        else:
            write_keypoints_json(args.ground_truth_out, cap.ground_truth)
            print(f"wrote {len(cap.ground_truth)} ground-truth keypoints to {args.ground_truth_out}")
    write_json(args.json, {"path": str(cap.path), "frame": cap.frame, "stamp_ns": cap.stamp_ns,
                           "ground_truth_keypoints": len(cap.ground_truth)})
    return 0


def _annotate(args: argparse.Namespace) -> int:
    from semcorr_ros.authoring.document import read_draft, read_keypoints_file, save_draft

    draft = read_draft(args.ref)
    if args.keypoints:
        kps = read_keypoints_file(args.keypoints)
        h, w = draft.image.shape[:2]
        outside = [n for n, (x, y) in kps.items() if not (0 <= x <= w - 1 and 0 <= y <= h - 1)]
        if outside:
            from semcorr_ros.errors import BadReferenceError

            raise BadReferenceError(f"keypoints outside the {w}x{h} image: {', '.join(outside)}")
        draft.keypoints, draft.scores = kps, {}
        save_draft(draft, args.threshold)
        print(f"wrote {len(kps)} keypoints to {args.ref}")
        return 0
    from semcorr_ros.authoring.editor import open_editor

    pending = [n.strip() for n in (args.names or "").split(",") if n.strip()]
    editor = open_editor(draft, pending=pending, threshold=args.threshold)
    print(f"{args.ref}: {len(draft.keypoints)} keypoints" + ("" if editor.saved else " (not saved)"))
    return 0


def _propose(args: argparse.Namespace) -> int:
    from semcorr_ros.authoring.propose import propose
    from semcorr_ros.engine import CorrespondenceEngine

    print("loading the model ...", file=sys.stderr)
    engine = CorrespondenceEngine(engine_config(args))
    print(f"matching {args.source} into {args.target} ...", file=sys.stderr)
    draft, prop = propose(args.source, args.target, engine, threshold=args.threshold,
                          keep_existing=args.keep_existing)
    for n, xy, s, w in zip(prop.names, prop.xy, prop.scores, prop.written):
        flag = "" if w else "  (outside the image: not written)"
        flag = flag or ("  uncertain" if n in prop.uncertain else "")
        print(f"  {n:20s} [{xy[0]:7.1f}, {xy[1]:7.1f}]  score {s:.2f}{flag}")
    print(f"wrote {sum(prop.written)} keypoints to {args.target}; uncertain (score < {args.threshold}): "
          f"{', '.join(prop.uncertain) or 'none'}")
    write_json(args.json, {"target": str(args.target), "keypoints": dict(zip(prop.names, prop.xy)),
                           "scores": dict(zip(prop.names, prop.scores)), "uncertain": prop.uncertain})
    if args.edit:
        from semcorr_ros.authoring.editor import open_editor

        open_editor(draft, threshold=args.threshold)
    return 0


def _check(args: argparse.Namespace) -> int:
    from semcorr_ros.authoring.sheet import contact_sheet, summarise
    from semcorr_ros.reference import load_objects

    objects = load_objects(args.file)
    summary = summarise(objects)
    for obj in summary:
        print(f"object {obj['object_id']}: {len(obj['views'])} view(s), {len(obj['names'])} keypoint names")
        for v in obj["views"]:
            extras = ", ".join(k for k in ("depth", "intrinsics") if v[k]) or "no depth/intrinsics"
            print(f"  {v['view_id']}: {v['size'][0]}x{v['size'][1]}, {v['keypoints']} keypoints, {extras}"
                  + (f"; missing: {', '.join(v['missing'])}" if v["missing"] else ""))
    if args.sheet:
        contact_sheet(objects, args.sheet)
        print(f"wrote {args.sheet}")
    print(f"{args.file}: ok")
    write_json(args.json, {"file": str(args.file), "ok": True, "objects": summary})
    return 0


def _set(args: argparse.Namespace) -> int:
    from semcorr_ros.reference import load_objects, write_reference_set

    path = write_reference_set(args.out, args.object_id, args.views)
    objs = load_objects(path)
    print(f"wrote {path}: object {objs[0].object_id}, {len(objs[0].views)} views, "
          f"{len(objs[0].names)} keypoint names")
    return 0
