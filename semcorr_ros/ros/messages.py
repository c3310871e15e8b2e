"""Output messages of the node built from an engine :class:`~semcorr_ros.engine.types.MatchResult`.

Pure conversion (no rclpy nodes, no algorithm): CorrespondenceArray, PointCloud2 of the valid 3D points,
PoseStamped and an RViz MarkerArray. Every message gets the live colour image's header (stamp and camera optical
frame), so the outputs line up with the input in time and space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from builtin_interfaces.msg import Duration
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from semcorr_ros.msg import Correspondence, CorrespondenceArray, ObjectsArray
from semcorr_ros.ros.clouds import points_to_cloud

if TYPE_CHECKING:  # the engine package imports torch: not needed to build messages
    from semcorr_ros.engine.objects import ObjectResult
    from semcorr_ros.engine.types import MatchResult, PoseResult

__all__ = ["correspondence_array", "objects_array", "cloud_of_valid_points", "pose_stamped", "markers",
           "rotation_to_quaternion", "MARKER_LIFETIME_S"]

#: Markers disappear in RViz this long after the last message (the node stopped or lost the object).
MARKER_LIFETIME_S = 2.0


def _copy_header(header: Header) -> Header:
    out = Header(frame_id=header.frame_id)
    out.stamp.sec, out.stamp.nanosec = int(header.stamp.sec), int(header.stamp.nanosec)
    return out


def rotation_to_quaternion(R: np.ndarray) -> tuple[float, float, float, float]:
    """``[3, 3]`` rotation matrix -> unit quaternion ``(x, y, z, w)`` with ``w >= 0`` (Shepperd's method)."""
    m = np.asarray(R, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * math.sqrt(tr + 1.0)
        q = (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s
    v = np.asarray(q)
    v /= np.linalg.norm(v)
    if v[3] < 0:
        v = -v
    return float(v[0]), float(v[1]), float(v[2]), float(v[3])


def _pose(p: PoseResult) -> Pose:
    x, y, z, w = rotation_to_quaternion(p.R)
    t = np.asarray(p.t, dtype=np.float64).reshape(3)
    return Pose(position=Point(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                orientation=Quaternion(x=x, y=y, z=z, w=w))


def correspondence_array(result: MatchResult, header: Header, reference_id: str,
                         processing_time: float = 0.0, latency: float = 0.0, object_id: str | None = None,
                         view_id: str | None = None, track: ObjectResult | None = None) -> CorrespondenceArray:
    """One :class:`Correspondence` per reference keypoint (invalid ones included), plus the pose when valid.

    ``x, y`` and ``point`` are written only where meaningful (``valid`` / ``has_point``); elsewhere they are 0
    (``ref_x, ref_y`` too for a keypoint no view of the object matched); ``raw_x, raw_y`` and ``raw_point`` the
    same way from the result's raw measurements (its ``raw_xy`` / ``raw_points3d`` in tracking mode, else equal
    to ``x, y`` and ``point``). ``object_id`` and ``view_id`` default to ``reference_id`` (a single view).
    ``track``: the object's result in tracking mode (its track status goes into the array).
    """
    out = CorrespondenceArray(header=_copy_header(header), reference_id=str(reference_id),
                              object_id=str(reference_id if object_id is None else object_id),
                              view_id=str(reference_id if view_id is None else view_id),
                              processing_time=float(processing_time), latency=float(latency))
    if track is not None:
        out.track_status, out.track_reason = str(track.track_status), str(track.track_reason)
        out.frames_since_detection = max(0, int(track.frames_since_detection))
    raw_xy = result.xy if result.raw_xy is None else result.raw_xy
    raw_pts = result.points3d if result.raw_points3d is None else result.raw_points3d
    items = []
    for i, name in enumerate(result.names):
        valid, has_point = bool(result.valid[i]), bool(result.has_3d[i])
        ref_x, ref_y = (float(v) if math.isfinite(v) else 0.0 for v in result.ref_xy[i])
        c = Correspondence(name=str(name), index=i, ref_x=ref_x, ref_y=ref_y, score=float(result.score[i]),
                           valid=valid, has_point=has_point)
        if valid:
            c.x, c.y = float(result.xy[i, 0]), float(result.xy[i, 1])
            if np.all(np.isfinite(raw_xy[i])):
                c.raw_x, c.raw_y = float(raw_xy[i, 0]), float(raw_xy[i, 1])
        if has_point:
            c.point = _point(result.points3d[i])
            if np.all(np.isfinite(raw_pts[i])):
                c.raw_point = _point(raw_pts[i])
        items.append(c)
    out.correspondences = items
    pose = result.pose
    if pose is not None and pose.valid:
        out.pose_valid = True
        out.pose = _pose(pose)
        out.pose_inliers = int(pose.n_inliers)
        out.pose_rmse = float(pose.rmse)
    else:
        out.pose.orientation.w = 1.0
    return out


def _point(p: np.ndarray) -> Point:
    x, y, z = (float(v) for v in p)
    return Point(x=x, y=y, z=z)


def objects_array(results: Sequence[ObjectResult], header: Header, processing_time: float = 0.0,
                  latency: float = 0.0, tracking: bool = False) -> tuple[ObjectsArray, list[CorrespondenceArray]]:
    """The frame's :class:`ObjectsArray` and, for ~/matches, its per-object :class:`CorrespondenceArray` s
    (with each object's track status when ``tracking``)."""
    arrays = [correspondence_array(r.result, header, r.object_id, processing_time, latency, r.object_id, r.view_id,
                                   track=r if tracking else None)
              for r in results]
    return ObjectsArray(header=_copy_header(header), objects=arrays, processing_time=float(processing_time),
                        latency=float(latency)), arrays


def cloud_of_valid_points(result: MatchResult, header: Header) -> PointCloud2:
    """PointCloud2 (fields x, y, z, score) of the keypoints with a valid 3D point (possibly none)."""
    keep = np.asarray(result.has_3d, dtype=bool)
    return points_to_cloud(np.asarray(result.points3d)[keep], np.asarray(result.score)[keep], _copy_header(header))


def pose_stamped(result: MatchResult, header: Header) -> PoseStamped | None:
    """The object pose (reference camera frame -> live camera frame) when the engine estimated a valid one."""
    if result.pose is None or not result.pose.valid:
        return None
    return PoseStamped(header=_copy_header(header), pose=_pose(result.pose))


def _score_colour(score: float) -> ColorRGBA:
    s = float(min(max(score, 0.0), 1.0))
    return ColorRGBA(r=1.0 - s, g=s, b=0.2, a=0.9)


def markers(result: MatchResult, header: Header, scale: float = 0.02, ns: str = "semcorr",
            clear: bool = True) -> MarkerArray:
    """RViz markers: a DELETEALL (with ``clear``), then per keypoint with a 3D point a sphere (red = low score,
    green = high) and a text label with its name, ``scale`` metres across, slightly above the sphere."""
    lifetime = Duration(sec=int(MARKER_LIFETIME_S), nanosec=int((MARKER_LIFETIME_S % 1) * 1e9))
    out = [Marker(header=_copy_header(header), ns=ns, action=Marker.DELETEALL)] if clear else []
    for i, name in enumerate(result.names):
        if not bool(result.has_3d[i]):
            continue
        x, y, z = (float(v) for v in result.points3d[i])
        sphere = Marker(header=_copy_header(header), ns=f"{ns}/points", id=i, type=Marker.SPHERE, action=Marker.ADD,
                        lifetime=lifetime, frame_locked=False)
        sphere.pose.position = Point(x=x, y=y, z=z)
        sphere.pose.orientation.w = 1.0
        sphere.scale.x = sphere.scale.y = sphere.scale.z = float(scale)
        sphere.color = _score_colour(float(result.score[i]))
        label = Marker(header=_copy_header(header), ns=f"{ns}/labels", id=i, type=Marker.TEXT_VIEW_FACING,
                       action=Marker.ADD, lifetime=lifetime, text=f"{name} {float(result.score[i]):.2f}")
        label.pose.position = Point(x=x, y=y - 1.5 * float(scale), z=z)  # optical frame: -y is up
        label.pose.orientation.w = 1.0
        label.scale.z = float(scale)
        label.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=0.9)
        out += [sphere, label]
    return MarkerArray(markers=out)
