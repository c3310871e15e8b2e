"""Thin ROS 2 adapters around the ROS-free engine.

Submodules (import them explicitly; this package imports nothing eagerly so that, e.g., the pure-Python
:mod:`semcorr_ros.ros.sync` can be used without the message packages):

- :mod:`semcorr_ros.ros.convert` -- ``sensor_msgs`` <-> numpy conversion (images, depth, camera info,
  point clouds, time stamps); needs the message packages, never ``rclpy`` nodes.
- :mod:`semcorr_ros.ros.sync` -- approximate-time "latest complete set" synchroniser for colour, depth and
  camera info; pure Python, thread-safe.
- :mod:`semcorr_ros.ros.node` -- ``correspond_node`` (:class:`~semcorr_ros.ros.node.CorrespondNode`, ``main``),
  with its parts: :mod:`~semcorr_ros.ros.params` (parameter table and validation),
  :mod:`~semcorr_ros.ros.frames` (input set -> arrays), :mod:`~semcorr_ros.ros.outputs` and
  :mod:`~semcorr_ros.ros.messages` (output messages), :mod:`~semcorr_ros.ros.debug_image` (overlay),
  :mod:`~semcorr_ros.ros.diagnostics` (statistics, /diagnostics), :mod:`~semcorr_ros.ros.engine_updates`
  (run-time changes handed to the inference thread), :mod:`~semcorr_ros.ros.runner` (process life cycle,
  signals). See docs/node.md.
"""
