"""``semcorr match SRC TGT --keypoints KP.yaml --out vis.png``: match a reference into one image and draw it."""

from __future__ import annotations

import argparse
from pathlib import Path

from semcorr_ros.cli.common import add_engine_arguments, add_json_argument, engine_config, write_json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("src", type=Path, help="reference image (PNG/JPEG)")
    parser.add_argument("tgt", type=Path, help="target image")
    parser.add_argument("--keypoints", type=Path, required=True,
                        help="reference YAML with 'keypoints: {name: [x, y]}' (see semcorr_ros.reference)")
    parser.add_argument("--out", type=Path, default=Path("matches.png"), help="picture (default: %(default)s)")
    add_engine_arguments(parser)
    add_json_argument(parser)


def run(args: argparse.Namespace) -> int:
    from semcorr_ros.engine import CorrespondenceEngine
    from semcorr_ros.eval.pck_plots import draw_matches
    from semcorr_ros.reference import load_reference, read_image

    spec = load_reference(args.keypoints, image_path=args.src.resolve())
    tgt = read_image(args.tgt)
    engine = CorrespondenceEngine(engine_config(args))
    engine.set_reference(spec.image, spec.keypoints, spec.names, reference_id=spec.reference_id)
    res = engine.match(tgt)
    draw_matches(spec.image, tgt, spec.keypoints, res.xy, valid=res.valid, names=res.names, path=args.out)
    for name, (x, y), s, v in zip(res.names, res.xy, res.score, res.valid):
        print(f"{name:>20s}  x {x:7.1f}  y {y:7.1f}  score {s:.2f}  {'valid' if v else 'invalid'}")
    print(f"wrote {args.out}")
    write_json(args.json, {"names": res.names, "xy": res.xy, "score": res.score, "valid": res.valid,
                           "ref_xy": res.ref_xy, "kbc_used": res.kbc_used, "timings": res.timings})
    return 0
