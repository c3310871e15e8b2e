"""The node's output topics: publishers and the publication of one frame's result.

Topic names are private (``~/...``: under the node's fully qualified name, ``/semcorr/...`` by default) so that
several instances can run side by side and every output can be remapped; ``/diagnostics`` is the ROS-wide
aggregator topic. All outputs are reliable with a small queue, which RViz and rosbag accept as well as
best-effort subscribers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped
from rclpy.qos import QoSProfile
from sensor_msgs.msg import Image, PointCloud2
from visualization_msgs.msg import MarkerArray

from semcorr_ros.msg import CorrespondenceArray
from semcorr_ros.ros import messages
from semcorr_ros.ros.convert import rgb_to_image
from semcorr_ros.ros.debug_image import draw_overlay

if TYPE_CHECKING:
    from semcorr_ros.engine.types import MatchResult
    from semcorr_ros.ros.inputs import RgbdFrame

__all__ = ["OUTPUT_TOPICS", "Outputs"]

#: Output topic names: private, plus the absolute /diagnostics.
OUTPUT_TOPICS = {"matches": "~/matches", "matches_3d": "~/matches_3d", "pose": "~/pose", "markers": "~/markers",
                 "debug_image": "~/debug_image", "diagnostics": "/diagnostics"}


class Outputs:
    """Publishers of one node; :meth:`publish` sends one frame's result on every output topic.

    Thread-safe for one publishing thread (the inference thread) plus the executor thread publishing
    diagnostics.
    """

    def __init__(self, node: Any, depth: int = 5) -> None:
        qos = QoSProfile(depth=depth)
        self.node = node
        self.matches = node.create_publisher(CorrespondenceArray, OUTPUT_TOPICS["matches"], qos)
        self.cloud = node.create_publisher(PointCloud2, OUTPUT_TOPICS["matches_3d"], qos)
        self.pose = node.create_publisher(PoseStamped, OUTPUT_TOPICS["pose"], qos)
        self.markers = node.create_publisher(MarkerArray, OUTPUT_TOPICS["markers"], qos)
        self.debug = node.create_publisher(Image, OUTPUT_TOPICS["debug_image"], qos)
        self.diagnostics = node.create_publisher(DiagnosticArray, OUTPUT_TOPICS["diagnostics"], QoSProfile(depth=10))

    def publish(self, frame: RgbdFrame, result: MatchResult, reference_id: str, processing: float,
                marker_scale: float, debug_image: bool) -> float:
        """Publish ``result`` for ``frame``; return the input-to-publish latency written into ~/matches, seconds.

        The latency is taken just before ~/matches goes out (node clock now - colour stamp); the other messages
        are built before it and sent after it. The debug overlay is drawn only when ``debug_image`` is true and
        ~/debug_image has a subscriber.
        """
        header = frame.header
        cloud = messages.cloud_of_valid_points(result, header)
        pose = messages.pose_stamped(result, header)
        marks = messages.markers(result, header, marker_scale, ns=self.node.get_name())
        latency = self.node.get_clock().now().nanoseconds * 1e-9 - frame.stamp
        self.matches.publish(messages.correspondence_array(result, header, reference_id, processing, latency))
        self.cloud.publish(cloud)
        if pose is not None:
            self.pose.publish(pose)
        self.markers.publish(marks)
        if debug_image and self.debug.get_subscription_count() > 0:
            title = f"{reference_id}  latency {latency * 1e3:.0f} ms"
            self.debug.publish(rgb_to_image(draw_overlay(frame.rgb, result, title), "rgb8", header))
        return latency
