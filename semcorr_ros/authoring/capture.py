"""A reference from one frame of a rosbag2: colour, aligned depth and intrinsics, no keypoints yet.

The frame is read and converted with bag-eval's reader (:mod:`semcorr_ros.bageval.bag`, the node's own
message conversion); topics default to realsense2_camera's names and are auto-detected as there.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from semcorr_ros.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class Captured:
    """What :func:`capture_from_bag` wrote: the YAML, the frame's index and stamp, and the bag's ground truth of
    that frame as ``{name: [x, y]}`` (visible keypoints only; empty when the bag has none)."""

    path: Path
    frame: int
    stamp_ns: int
    ground_truth: dict[str, list[float]]


def capture_from_bag(bag: str | Path, out: str | Path, *, frame: int | None = None, time_s: float | None = None,
                     color_topic: str | None = None, depth_topic: str | None = None,
                     info_topic: str | None = None, depth_scale: float = 0.001,
                     reference_id: str | None = None) -> Captured:
    """Write ``out`` (YAML, empty keypoints) + ``<stem>.png`` + ``<stem>_depth.png`` from one bag frame.

    Args:
        frame: 0-based index among the colour frames; or ``time_s``: seconds after the first colour stamp
            (the nearest frame is taken). Neither: frame 0.

    Raises:
        BagError: the bag cannot be read or lacks a topic; InputError: no such frame, or it cannot be converted.
    """
    from semcorr_ros.bageval.bag import iter_frames, scan_bag
    from semcorr_ros.reference import write_reference

    if frame is not None and time_s is not None:
        raise InputError("give --frame or --time, not both")
    index = scan_bag(bag, color_topic, depth_topic, info_topic)
    stamps = index.color_stamps
    if time_s is not None:
        target = stamps[0] + int(round(time_s * 1e9))
        frame = int(np.argmin([abs(s - target) for s in stamps]))
    frame = 0 if frame is None else int(frame)
    if not 0 <= frame < len(stamps):
        raise InputError(f"frame {frame} is not in the bag: it has {len(stamps)} colour frames (0..{len(stamps) - 1})")
    stamp = stamps[frame]
    picked = None
    for f in iter_frames(index, depth_scale=depth_scale):
        if f.stamp_ns == stamp:
            picked = f
            break
    if picked is None or picked.error:
        raise InputError(f"frame {frame} (stamp {stamp} ns) cannot be used: "
                         f"{picked.error if picked else 'not decoded'}")
    gt = index.ground_truth.get(stamp)
    truth = {}
    if gt is not None:
        truth = {n: [round(float(x), 2), round(float(y), 2)]
                 for n, (x, y), v in zip(gt.names, gt.keypoints_2d, gt.visible) if v}
    out = Path(out)
    extra = {"captured_from": {"bag": str(Path(index.path).resolve()), "topic": index.color_topic,
                               "frame": frame, "stamp_ns": int(stamp)}}
    write_reference(out, picked.rgb, None, [], depth=picked.depth, intrinsics=picked.K,
                    reference_id=reference_id, depth_scale=depth_scale, extra=extra)
    log.info("captured frame %d of %s -> %s", frame, index.path, out)
    return Captured(out, frame, int(stamp), truth)


def write_keypoints_json(path: str | Path, keypoints: dict[str, list[float]]) -> Path:
    """``{name: [x, y]}`` as JSON (a keypoints file for ``semcorr reference annotate --keypoints``)."""
    path = Path(path)
    path.write_text(json.dumps(keypoints, indent=1))
    return path
