"""Reading and checking a rosbag2 for ``semcorr bag-eval`` (pure Python: ``rosbags``, no ROS install needed).

:func:`scan_bag` opens the bag, picks the colour / depth / camera-info topics (given, or detected by message type
and name), reads every message of those topics once -- so a truncated or garbled file fails here, before a node
is started or anything is written -- and returns a :class:`BagIndex`: the colour stamps, the parsed ground truth
(``semcorr-gt-v1`` records on :data:`~semcorr_ros.groundtruth.GT_TOPIC`, bad ones counted and skipped) and the
topic list. :func:`iter_raw` then streams the raw CDR messages (for the DDS replay) and :func:`iter_frames` the
decoded RGB-D frames (for offline mode, through the node's own conversion code).

Every problem raises :class:`BagError` naming what is missing or broken.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semcorr_ros.errors import SemcorrError
from semcorr_ros.groundtruth import GT_MSGTYPE, GT_TOPIC, BadGroundTruthError, FrameGroundTruth

__all__ = ["BagError", "BagIndex", "IMAGE_TYPE", "INFO_TYPE", "resolve_bag_path", "select_topics", "scan_bag",
           "iter_raw", "iter_frames", "read_color_images", "header_stamp_ns"]

log = logging.getLogger(__name__)

IMAGE_TYPE = "sensor_msgs/msg/Image"
INFO_TYPE = "sensor_msgs/msg/CameraInfo"
_MAX_BAD_EXAMPLES = 5


class BagError(SemcorrError, ValueError):
    """The bag is missing, not a rosbag2, unreadable, or lacks a topic bag-eval needs."""


@dataclass
class BagIndex:
    """What :func:`scan_bag` found.

    Attributes:
        path: the bag (folder with ``metadata.yaml``, or a single ``.mcap`` file).
        topics: every topic of the bag -> message type.
        counts: topic -> message count.
        color_topic, depth_topic, info_topic: the selected input topics.
        gt_topic: :data:`GT_TOPIC` when the bag has it, else None.
        color_stamps: ``header.stamp`` (ns) of every colour message, in bag order.
        color_log_times: the recording time (ns) of every colour message, in bag order.
        ground_truth: colour stamp (ns) -> parsed record (of the first object instance in the bag).
        ground_truth_by_instance: instance -> (colour stamp -> record), every object of a several-object bag
            (one record per object and frame on the ground-truth topic), in the order the instances first appear.
        gt_records: number of ground-truth messages read.
        gt_bad: records that did not parse (skipped); ``gt_bad_examples`` says why (first few).
        duration_s: time between the first and last message of the selected topics (recording clock).
        storage: ``mcap``, ``sqlite3`` or what the metadata says.
    """

    path: Path
    topics: dict[str, str]
    counts: dict[str, int]
    color_topic: str
    depth_topic: str
    info_topic: str
    gt_topic: str | None
    color_stamps: list[int] = field(default_factory=list)
    color_log_times: list[int] = field(default_factory=list)
    ground_truth: dict[int, FrameGroundTruth] = field(default_factory=dict)
    ground_truth_by_instance: dict[str, dict[int, FrameGroundTruth]] = field(default_factory=dict)
    gt_records: int = 0
    gt_bad: int = 0
    gt_bad_examples: list[str] = field(default_factory=list)
    duration_s: float = 0.0
    storage: str = ""

    @property
    def frames(self) -> int:
        return len(self.color_stamps)

    def summary(self) -> dict[str, Any]:
        return {"path": str(self.path), "storage": self.storage, "topics": dict(self.topics),
                "counts": dict(self.counts), "color_topic": self.color_topic, "depth_topic": self.depth_topic,
                "info_topic": self.info_topic, "gt_topic": self.gt_topic, "color_frames": self.frames,
                "gt_records": self.gt_records, "gt_frames": len(self.ground_truth), "gt_bad": self.gt_bad,
                "gt_bad_examples": list(self.gt_bad_examples), "duration_s": round(self.duration_s, 3),
                **({"gt_instances": {k: len(v) for k, v in self.ground_truth_by_instance.items()}}
                   if len(self.ground_truth_by_instance) > 1 else {})}


# ------------------------------------------------------------------------------------------------ opening

def resolve_bag_path(path: str | Path) -> Path:
    """The rosbag2 to open: a folder with ``metadata.yaml``, or a storage file (``.mcap``; a file inside a bag
    folder means that folder).

    Raises:
        BagError: the path does not exist or is not a rosbag2.
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise BagError(f"bag not found: {p}")
    if p.is_file():
        if (p.parent / "metadata.yaml").is_file() and p.suffix in (".mcap", ".db3", ".zstd"):
            return p.parent
        if p.suffix == ".mcap":
            return p  # a bare MCAP file: rosbags reads it without metadata
        raise BagError(f"not a rosbag2: {p} is a file; a rosbag2 is a folder holding metadata.yaml and its "
                       f".mcap/.db3 storage files")
    if not (p / "metadata.yaml").is_file():
        found = sorted(x.name for x in p.iterdir())[:10]
        raise BagError(f"not a rosbag2: {p} has no metadata.yaml (it holds: {', '.join(found) or 'nothing'})")
    return p


def _storage_of(path: Path) -> str:
    if path.is_file():
        return path.suffix.lstrip(".")
    try:
        import yaml

        doc = yaml.safe_load((path / "metadata.yaml").read_text())
        return str(doc["rosbag2_bagfile_information"]["storage_identifier"])
    except Exception:  # noqa: BLE001 -- only for the report; the reader says what is wrong
        return "?"


class _Reader:
    """``AnyReader`` with every failure turned into :class:`BagError`."""

    def __init__(self, path: Path) -> None:
        from rosbags.highlevel import AnyReader

        self.path = path
        try:
            self.reader = AnyReader([path])
            self.reader.open()
        except Exception as exc:  # noqa: BLE001 -- rosbags raises several kinds; all mean "cannot open"
            raise BagError(f"cannot open the bag {path}: {_reason(exc)} (is it a rosbag2 with mcap or sqlite3 "
                           f"storage?)") from exc

    def __enter__(self) -> "_Reader":
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self.reader.close()
        except Exception:  # noqa: BLE001
            pass

    def connections(self, topics: Sequence[str]) -> list[Any]:
        return [c for c in self.reader.connections if c.topic in topics]

    def messages(self, topics: Sequence[str]) -> Iterator[tuple[str, int, bytes]]:
        conns = self.connections(topics)
        it = self.reader.messages(connections=conns)
        while True:
            try:
                conn, t, raw = next(it)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 -- a corrupt chunk surfaces as anything
                raise BagError(f"the bag {self.path} is corrupt or truncated: {_reason(exc)}") from exc
            yield conn.topic, int(t), bytes(raw)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# ------------------------------------------------------------------------------------------------ topics

def _listing(topics: dict[str, str], counts: dict[str, int]) -> str:
    return "; ".join(f"{t} [{ty}, {counts.get(t, 0)} msgs]" for t, ty in sorted(topics.items())) or "none"


def _pick(cands: list[str], preferred_suffixes: Sequence[str]) -> list[str]:
    for suffix in preferred_suffixes:
        hits = [c for c in cands if c.endswith(suffix)]
        if hits:
            return hits
    return cands


def select_topics(topics: dict[str, str], counts: dict[str, int], color: str | None = None,
                  depth: str | None = None, info: str | None = None) -> tuple[str, str, str]:
    """Choose the colour, depth and camera-info topics.

    Given names are checked (exist, right type). Otherwise: depth = the ``sensor_msgs/msg/Image`` topic whose name
    contains ``depth`` (preferring ``aligned_depth_to_color/image_raw``), colour = an Image topic without
    ``depth`` in its name (preferring ``color/image_raw``), camera info = the ``CameraInfo`` topic next to the
    colour topic (same parent namespace), else the only one.

    Raises:
        BagError: a topic is missing or ambiguous; the message lists the bag's topics and the flag to use.
    """
    listing = _listing(topics, counts)

    def check(name: str, want: str, flag: str) -> str:
        if name not in topics:
            raise BagError(f"{flag} {name}: no such topic in the bag; its topics: {listing}")
        if topics[name] != want:
            raise BagError(f"{flag} {name} has type {topics[name]}, expected {want}; the bag's topics: {listing}")
        return name

    images = [t for t, ty in topics.items() if ty == IMAGE_TYPE]
    if depth is not None:
        depth = check(depth, IMAGE_TYPE, "--depth-topic")
    else:
        cands = _pick(sorted(t for t in images if "depth" in t.lower() and t != color),
                      ("aligned_depth_to_color/image_raw", "image_raw", "image_rect_raw"))
        if not cands:
            raise BagError(f"no depth topic: the bag has no {IMAGE_TYPE} topic with 'depth' in its name (pick one "
                           f"with --depth-topic); its topics: {listing}")
        if len(cands) > 1:
            raise BagError(f"several depth topics {cands}: pick one with --depth-topic")
        depth = cands[0]
    if color is not None:
        color = check(color, IMAGE_TYPE, "--color-topic")
    else:
        cands = _pick(sorted(t for t in images if "depth" not in t.lower() and t != depth),
                      ("color/image_raw", "color/image_rect_raw", "image_raw", "image_color"))
        if not cands:
            other = [t for t, ty in topics.items() if "CompressedImage" in ty]
            hint = f" (compressed image topics {other} are not supported: replay raw images)" if other else ""
            raise BagError(f"no colour topic: the bag has no {IMAGE_TYPE} topic without 'depth' in its name{hint} "
                           f"(pick one with --color-topic); its topics: {listing}")
        if len(cands) > 1:
            raise BagError(f"several colour topics {cands}: pick one with --color-topic")
        color = cands[0]
    if color == depth:
        raise BagError(f"the colour and depth topics are the same ({color})")
    if info is not None:
        info = check(info, INFO_TYPE, "--info-topic")
    else:
        infos = sorted(t for t, ty in topics.items() if ty == INFO_TYPE)
        parent = color.rsplit("/", 2)[0] if color.count("/") >= 2 else ""
        near = [t for t in infos if parent and t.startswith(parent + "/") and "depth" not in t.lower()]
        cands = near or infos
        if not cands:
            raise BagError(f"no camera info: the bag has no {INFO_TYPE} topic (the node needs the colour camera's "
                           f"intrinsics; pick one with --info-topic); its topics: {listing}")
        if len(cands) > 1:
            cands = _pick(cands, ("color/camera_info",))
            if len(cands) > 1:
                raise BagError(f"several camera info topics {cands}: pick one with --info-topic")
        info = cands[0]
    return color, depth, info


def header_stamp_ns(raw: bytes) -> int:
    """``header.stamp`` (ns) of a CDR-serialised message whose first field is a ``std_msgs/Header``
    (Image, CameraInfo), read from the bytes without decoding the message."""
    if len(raw) < 12:
        raise BagError(f"message too short ({len(raw)} bytes) to hold a header")
    endian = "<" if raw[1] & 1 else ">"
    sec, nsec = struct.unpack_from(endian + "iI", raw, 4)
    return sec * 1_000_000_000 + nsec


def _gt_text(raw: bytes) -> str:
    """``data`` of a CDR ``std_msgs/String``."""
    endian = "<" if raw[1] & 1 else ">"
    (n,) = struct.unpack_from(endian + "I", raw, 4)
    if n == 0 or 8 + n > len(raw):
        raise BadGroundTruthError(f"not a std_msgs/String (length {n} of {len(raw) - 8} bytes)")
    return raw[8:8 + n - 1].decode("utf-8")


# ------------------------------------------------------------------------------------------------ scanning

def scan_bag(path: str | Path, color_topic: str | None = None, depth_topic: str | None = None,
             info_topic: str | None = None) -> BagIndex:
    """Open, check and index a bag (reads every message of the selected topics once).

    Raises:
        BagError: see :func:`resolve_bag_path`, :func:`select_topics`; corrupt data; no colour frames; no camera
            info message; a depth topic without messages.
    """
    path = resolve_bag_path(path)
    with _Reader(path) as r:
        topics: dict[str, str] = {}
        counts: dict[str, int] = {}
        for c in r.reader.connections:
            topics[c.topic] = c.msgtype
            counts[c.topic] = counts.get(c.topic, 0) + int(getattr(c, "msgcount", 0) or 0)
        color, depth, info = select_topics(topics, counts, color_topic, depth_topic, info_topic)
        gt_topic = GT_TOPIC if topics.get(GT_TOPIC) == GT_MSGTYPE else None
        if GT_TOPIC in topics and gt_topic is None:
            log.warning("%s has type %s, expected %s: ignored (no ground truth)", GT_TOPIC, topics[GT_TOPIC],
                        GT_MSGTYPE)
        index = BagIndex(path=path, topics=topics, counts=counts, color_topic=color, depth_topic=depth,
                         info_topic=info, gt_topic=gt_topic, storage=_storage_of(path))
        seen = {color: 0, depth: 0, info: 0}
        t_first = t_last = None
        wanted = [color, depth, info] + ([gt_topic] if gt_topic else [])
        for topic, t, raw in r.messages(wanted):
            t_first = t if t_first is None else t_first
            t_last = t
            if topic == gt_topic:
                index.gt_records += 1
                try:
                    gt = FrameGroundTruth.from_json(_gt_text(raw))
                except (BadGroundTruthError, UnicodeDecodeError, struct.error) as exc:
                    index.gt_bad += 1
                    if len(index.gt_bad_examples) < _MAX_BAD_EXAMPLES:
                        index.gt_bad_examples.append(f"record {index.gt_records} (t={t} ns): {exc}")
                    continue
                index.ground_truth_by_instance.setdefault(gt.instance, {})[gt.stamp_ns] = gt
                continue
            seen[topic] += 1
            if topic == color:
                index.color_stamps.append(header_stamp_ns(raw))
                index.color_log_times.append(t)
            else:
                header_stamp_ns(raw)  # at least a header
    if seen[color] == 0:
        raise BagError(f"the colour topic {color} has no messages")
    if seen[depth] == 0:
        raise BagError(f"the depth topic {depth} has no messages")
    if seen[info] == 0:
        raise BagError(f"no camera info: the topic {info} has no messages")
    index.counts.update(seen)
    if index.ground_truth_by_instance:
        index.ground_truth = next(iter(index.ground_truth_by_instance.values()))
    index.duration_s = (t_last - t_first) * 1e-9 if t_first is not None else 0.0
    if index.gt_bad:
        log.warning("%d of %d ground-truth records did not parse and were skipped, e.g. %s", index.gt_bad,
                    index.gt_records, index.gt_bad_examples[0])
    return index


# ------------------------------------------------------------------------------------------------ streaming

_ORDER = {"info": 0, "depth": 1, "color": 2}


def iter_raw(index: BagIndex) -> Iterator[tuple[str, int, bytes]]:
    """The selected input topics' messages as ``(role, recording time ns, raw CDR)`` in recording order, with
    messages recorded at the same instant ordered camera info, depth, colour (so a frame is complete when its
    colour image arrives). Roles: ``color``, ``depth``, ``info``."""
    roles = {index.color_topic: "color", index.depth_topic: "depth", index.info_topic: "info"}
    pending: list[tuple[str, int, bytes]] = []
    with _Reader(index.path) as r:
        for topic, t, raw in r.messages(list(roles)):
            if pending and pending[0][1] != t:
                yield from sorted(pending, key=lambda m: _ORDER[m[0]])
                pending = []
            pending.append((roles[topic], t, raw))
    yield from sorted(pending, key=lambda m: _ORDER[m[0]])


@dataclass
class BagFrame:
    """One decoded RGB-D frame of a bag (offline mode)."""

    stamp_ns: int
    rgb: np.ndarray | None
    depth: np.ndarray | None
    K: np.ndarray | None
    error: str | None = None
    distortion: Any = None  # the camera's lens distortion (semcorr_ros.engine.geometry.Distortion) or None


def iter_frames(index: BagIndex, depth_scale: float = 0.001, slop_s: float = 0.02) -> Iterator[BagFrame]:
    """Every colour frame with the depth frame nearest in stamp (within ``slop_s``) and the latest camera info,
    converted by the node's own code (:func:`semcorr_ros.ros.frames.frame_from_messages`).

    A frame that cannot be converted (no depth partner, bad encoding...) is yielded with ``error`` set.
    Depth frames are looked up among the ones read so far and the next few (the bag is in recording order).
    """
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import CameraInfo, Image

    from semcorr_ros.errors import InputError
    from semcorr_ros.ros.frames import frame_from_messages

    slop_ns = int(slop_s * 1e9)
    depths: list[tuple[int, bytes]] = []
    colors: list[tuple[int, bytes, bytes | None]] = []  # stamp, colour raw, info raw at that time
    info_raw: bytes | None = None

    def emit(stamp: int, craw: bytes, iraw: bytes | None) -> BagFrame:
        best = min(depths, key=lambda d: abs(d[0] - stamp), default=None)
        if best is None or abs(best[0] - stamp) > slop_ns:
            return BagFrame(stamp, None, None, None, f"no depth frame within {slop_s} s of the colour frame")
        try:
            info = deserialize_message(iraw, CameraInfo) if iraw is not None else None
            frame = frame_from_messages(deserialize_message(craw, Image), deserialize_message(best[1], Image),
                                        info, depth_scale, index.info_topic)
        except InputError as exc:
            return BagFrame(stamp, None, None, None, str(exc))
        return BagFrame(stamp, np.asarray(frame.rgb), frame.depth, frame.K, distortion=frame.distortion)

    for role, _t, raw in iter_raw(index):
        if role == "info":
            info_raw = raw
        elif role == "depth":
            depths.append((header_stamp_ns(raw), raw))
            depths = depths[-8:]
        else:
            colors.append((header_stamp_ns(raw), raw, info_raw))
        # a colour frame is decided once a depth frame at least as new has arrived, or 4 colour frames later
        while colors and (any(d[0] >= colors[0][0] for d in depths) or len(colors) > 4):
            stamp, craw, iraw = colors.pop(0)
            yield emit(stamp, craw, iraw if iraw is not None else info_raw)
    for stamp, craw, iraw in colors:
        yield emit(stamp, craw, iraw if iraw is not None else info_raw)


def read_color_images(index: BagIndex, stamps: set[int]) -> dict[int, np.ndarray]:
    """Decoded RGB images of the colour frames with these stamps (for the contact sheet)."""
    from rclpy.serialization import deserialize_message
    from sensor_msgs.msg import Image

    from semcorr_ros.errors import InputError
    from semcorr_ros.ros.convert import image_to_rgb

    out: dict[int, np.ndarray] = {}
    if not stamps:
        return out
    with _Reader(index.path) as r:
        for _topic, _t, raw in r.messages([index.color_topic]):
            s = header_stamp_ns(raw)
            if s in stamps and s not in out:
                try:
                    out[s] = np.array(image_to_rgb(deserialize_message(raw, Image)))
                except InputError:
                    continue
                if len(out) == len(stamps):
                    break
    return out
