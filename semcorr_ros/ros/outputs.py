"""The node's output topics: publishers and the publication of one frame's result.

Topic names are private (``~/...``: under the node's fully qualified name, ``/semcorr/...`` by default) so that
several instances can run side by side and every output can be remapped; ``/diagnostics`` is the ROS-wide
aggregator topic. All outputs are reliable with a small queue, which RViz and rosbag accept as well as
best-effort subscribers; each publisher's history, depth, reliability and durability can be overridden at
start-up with ``qos_overrides.<topic>.publisher.<policy>`` parameters.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.qos import QoSProfile
from rclpy.qos_overriding_options import QoSOverridingOptions, QoSPolicyKind
from sensor_msgs.msg import Image, PointCloud2
from visualization_msgs.msg import Marker, MarkerArray

from semcorr_ros.msg import CorrespondenceArray, ObjectsArray
from semcorr_ros.ros import messages
from semcorr_ros.ros.convert import rgb_to_image
from semcorr_ros.ros.debug_image import draw_overlay

if TYPE_CHECKING:
    from semcorr_ros.engine.objects import ObjectResult
    from semcorr_ros.engine.types import MatchResult
    from semcorr_ros.ros.frames import RgbdFrame

__all__ = ["OUTPUT_TOPICS", "Outputs", "QOS_OVERRIDES"]

#: The QoS policies a user may override per topic (``qos_overrides.<topic>.<publisher|subscription>.<policy>``).
QOS_OVERRIDES = QoSOverridingOptions(policy_kinds=(QoSPolicyKind.HISTORY, QoSPolicyKind.DEPTH,
                                                   QoSPolicyKind.RELIABILITY, QoSPolicyKind.DURABILITY))

#: Output topic names: private, plus the absolute /diagnostics.
OUTPUT_TOPICS = {"matches": "~/matches", "objects": "~/objects", "matches_3d": "~/matches_3d", "pose": "~/pose",
                 "markers": "~/markers", "debug_image": "~/debug_image", "diagnostics": "/diagnostics"}


class Outputs:
    """Publishers of one node; :meth:`publish` sends one frame's result on every output topic.

    Thread-safe for one publishing thread (the inference thread) plus the executor thread publishing
    diagnostics.
    """

    def __init__(self, node: Any, depth: int = 5) -> None:
        qos = QoSProfile(depth=depth)
        self.node = node

        def publisher(msg_type: Any, key: str, profile: QoSProfile = qos) -> Any:
            # a copy each: rclpy writes the overrides into the profile it is given
            return node.create_publisher(msg_type, OUTPUT_TOPICS[key], copy.copy(profile),
                                         qos_overriding_options=QOS_OVERRIDES)

        self.matches = publisher(CorrespondenceArray, "matches")
        self.objects = publisher(ObjectsArray, "objects")
        self.cloud = publisher(PointCloud2, "matches_3d")
        self.pose = publisher(PoseStamped, "pose")
        self.markers = publisher(MarkerArray, "markers")
        self.debug = publisher(Image, "debug_image")
        self.diagnostics = publisher(DiagnosticArray, "diagnostics", QoSProfile(depth=10))

    def publish(self, frame: RgbdFrame, result: MatchResult, reference_id: str, processing: float,
                marker_scale: float, debug_image: bool, arrival: float | None = None) -> float:
        """Publish ``result`` for ``frame``; return the input-to-publish latency written into ~/matches, seconds.

        The latency is taken just before ~/matches goes out (node clock now - colour stamp; with ``arrival``, the
        system-clock time the colour frame was sent, system now - arrival: for cameras whose stamps are
        unusable); the other messages are built before it and sent after it. The debug overlay
        is drawn only when ``debug_image`` is true and ~/debug_image has a subscriber.
        """
        header = frame.header
        cloud = messages.cloud_of_valid_points(result, header)
        pose = messages.pose_stamped(result, header)
        marks = messages.markers(result, header, marker_scale, ns=self.node.get_name())
        latency = self._latency(frame, arrival)
        array = messages.correspondence_array(result, header, reference_id, processing, latency)
        self.matches.publish(array)
        if self.objects.get_subscription_count() > 0:
            self.objects.publish(ObjectsArray(header=array.header, objects=[array], processing_time=processing,
                                              latency=latency))
        self.cloud.publish(cloud)
        if pose is not None:
            self.pose.publish(pose)
        self.markers.publish(marks)
        if debug_image and self.debug.get_subscription_count() > 0:
            title = f"{reference_id}  latency {latency * 1e3:.0f} ms"
            self.debug.publish(rgb_to_image(draw_overlay(frame.rgb, result, title), "rgb8", header))
        return latency

    def publish_objects(self, frame: RgbdFrame, results: Sequence[ObjectResult], processing: float,
                        marker_scale: float, debug_image: bool, arrival: float | None = None,
                        tracking: bool = False) -> float:
        """Publish several objects' results for ``frame``: ~/objects once, ~/matches once per object (same
        header, ``object_id`` and ``view_id`` set; with ``tracking`` each object's track status), one cloud and
        one marker array of every object (markers in the namespace ``<node>/<object_id>``); ~/pose only when
        there is one object (with several, the poses are in the arrays). Returns the latency as
        :meth:`publish`."""
        header, node = frame.header, self.node.get_name()
        cloud = messages.cloud_of_valid_points(_merged([r.result for r in results]), header)
        marks = [Marker(header=header, ns=node, action=Marker.DELETEALL)]
        for r in results:
            marks += messages.markers(r.result, header, marker_scale, ns=f"{node}/{r.object_id}",
                                      clear=False).markers
        latency = self._latency(frame, arrival)
        scene, arrays = messages.objects_array(results, header, processing, latency, tracking)
        for array in arrays:
            self.matches.publish(array)
        self.objects.publish(scene)
        self.cloud.publish(cloud)
        if len(results) == 1 and (pose := messages.pose_stamped(results[0].result, header)) is not None:
            self.pose.publish(pose)
        self.markers.publish(MarkerArray(markers=marks))
        if debug_image and self.debug.get_subscription_count() > 0:
            title = "  ".join(f"{r.object_id}:{r.view_id}" + (f" {r.track_status}" if tracking else "")
                              for r in results) + f"  latency {latency * 1e3:.0f} ms"
            merged = _merged([r.result for r in results], [r.object_id for r in results])
            self.debug.publish(rgb_to_image(draw_overlay(frame.rgb, merged, title), "rgb8", header))
        return latency

    def _latency(self, frame: RgbdFrame, arrival: float | None) -> float:
        """Input-to-publish seconds: node clock now - colour stamp; with ``arrival`` system now - arrival."""
        if arrival is not None:
            return time.time() - arrival
        return self.node.get_clock().now().nanoseconds * 1e-9 - frame.stamp


def _merged(results: Sequence[MatchResult], prefixes: Sequence[str] | None = None) -> MatchResult:
    """The keypoints of several results as one (for the cloud and the overlay), names as ``<prefix>/<name>``."""
    from semcorr_ros.engine.types import MatchResult

    if not results:
        return MatchResult.empty()
    cat = np.concatenate
    prefixes = prefixes or [""] * len(results)
    return MatchResult(names=[f"{p}/{n}" if p else n for p, r in zip(prefixes, results) for n in r.names],
                       ref_xy=cat([r.ref_xy for r in results]),
                       xy=cat([r.xy for r in results]), score=cat([r.score for r in results]),
                       valid=cat([r.valid for r in results]), points3d=cat([r.points3d for r in results]),
                       has_3d=cat([r.has_3d for r in results]))
