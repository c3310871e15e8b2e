"""Per-frame ground truth of an RGB-D sequence: the contract between ``semcorr synth`` and ``semcorr bag-eval``.

A scene bag carries, next to the camera topics, one ``std_msgs/msg/String`` per frame on :data:`GT_TOPIC` whose
``data`` is the JSON of a :class:`FrameGroundTruth`. Its ``stamp_ns`` equals the ``header.stamp`` of the colour
image (and of the aligned depth and camera info) of the same frame, so results on ``/semcorr/matches`` (which carry
the colour stamp) pair with it by stamp.

Frames and units follow :mod:`semcorr_ros.engine.types`: pixels ``(x, y)`` with pixel centres at integers, 3D in the
camera optical frame (x right, y down, z forward) in metres. ``object_pose`` is ``T_camera_object``: it maps points
of the object's canonical frame (shared by every instance of a category, so that the same semantic keypoint sits in
roughly the same place) into the camera optical frame.

A reference made by ``semcorr synth`` stores its own ``object_pose`` (and ``category``/``instance``) as extra keys of
the reference YAML, so the ground-truth reference-to-live transform of a frame is
``T_live = object_pose_frame @ inv(object_pose_reference)`` (the engine's pose maps reference-camera points to
live-camera points).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

from semcorr_ros.errors import SemcorrError

#: Topic of the per-frame ground truth in a scene bag.
GT_TOPIC = "/semcorr/ground_truth"
#: Message type of :data:`GT_TOPIC`.
GT_MSGTYPE = "std_msgs/msg/String"
#: Value of the ``schema`` field; readers refuse anything else.
SCHEMA = "semcorr-gt-v1"


class BadGroundTruthError(SemcorrError, ValueError):
    """A ground-truth record is not valid ``semcorr-gt-v1`` JSON."""


@dataclass
class FrameGroundTruth:
    """Ground truth of one frame.

    Attributes:
        stamp_ns: the colour image's ``header.stamp`` in nanoseconds.
        frame_index: 0-based index of the frame in the sequence.
        category: object category (e.g. ``mug``).
        instance: instance id within the category (e.g. ``mug_007``).
        names: ``K`` keypoint names, in the category's fixed order.
        keypoints_2d: ``[K, 2]`` projected pixels (may lie outside the image).
        visible: ``[K]`` bool: inside the image, in front of the camera and not occluded.
        keypoints_3d: ``[K, 3]`` camera optical frame, metres.
        object_pose: ``[4, 4]`` ``T_camera_object``.
        object_box: ``[4]`` ``x0, y0, x1, y1`` pixel box of the object's visible pixels (NaN when not in view).
        object_fraction: fraction of the image's pixels covered by the object.
    """

    stamp_ns: int
    frame_index: int
    category: str
    instance: str
    names: list[str]
    keypoints_2d: np.ndarray
    visible: np.ndarray
    keypoints_3d: np.ndarray
    object_pose: np.ndarray
    object_box: np.ndarray
    object_fraction: float

    def to_json(self) -> str:
        """Compact JSON (floats rounded to 0.01 px / 0.1 mm where that loses nothing that matters)."""
        return json.dumps({
            "schema": SCHEMA, "stamp_ns": int(self.stamp_ns), "frame_index": int(self.frame_index),
            "category": self.category, "instance": self.instance, "names": list(self.names),
            "keypoints_2d": np.round(np.asarray(self.keypoints_2d, float), 3).tolist(),
            "visible": [bool(v) for v in self.visible],
            "keypoints_3d": np.round(np.asarray(self.keypoints_3d, float), 6).tolist(),
            "object_pose": np.asarray(self.object_pose, float).tolist(),
            "object_box": [None if not np.isfinite(v) else round(float(v), 3) for v in self.object_box],
            "object_fraction": float(self.object_fraction),
        }, separators=(",", ":"))

    @staticmethod
    def from_json(text: str | bytes) -> "FrameGroundTruth":
        """Parse and check one record; :class:`BadGroundTruthError` names what is wrong."""
        try:
            doc = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise BadGroundTruthError(f"ground truth is not JSON: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            got = doc.get("schema") if isinstance(doc, dict) else type(doc).__name__
            raise BadGroundTruthError(f"ground truth schema must be {SCHEMA!r}, got {got!r}")
        try:
            names = [str(n) for n in doc["names"]]
            k = len(names)
            kp2 = np.asarray(doc["keypoints_2d"], dtype=np.float64).reshape(k, 2)
            vis = np.asarray(doc["visible"], dtype=bool).reshape(k)
            kp3 = np.asarray(doc["keypoints_3d"], dtype=np.float64).reshape(k, 3)
            pose = np.asarray(doc["object_pose"], dtype=np.float64).reshape(4, 4)
            box = np.asarray([np.nan if v is None else v for v in doc["object_box"]], dtype=np.float64).reshape(4)
            return FrameGroundTruth(stamp_ns=int(doc["stamp_ns"]), frame_index=int(doc["frame_index"]),
                                    category=str(doc["category"]), instance=str(doc["instance"]), names=names,
                                    keypoints_2d=kp2, visible=vis, keypoints_3d=kp3, object_pose=pose,
                                    object_box=box, object_fraction=float(doc["object_fraction"]))
        except KeyError as exc:
            raise BadGroundTruthError(f"ground truth record lacks the field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise BadGroundTruthError(f"ground truth record has a malformed field: {exc}") from exc


def relative_pose(frame_pose: np.ndarray, reference_pose: np.ndarray) -> np.ndarray:
    """Ground-truth reference-camera -> live-camera transform ``[4, 4]`` (see the module docstring)."""
    return np.asarray(frame_pose, float) @ np.linalg.inv(np.asarray(reference_pose, float))
