"""Thin ROS 2 adapters around the ROS-free engine.

Submodules (import them explicitly; this package imports nothing eagerly so that, e.g., the pure-Python
:mod:`semcorr_ros.ros.sync` can be used without the message packages):

- :mod:`semcorr_ros.ros.convert` -- ``sensor_msgs`` <-> numpy conversion (images, depth, camera info,
  point clouds, time stamps); needs the message packages, never ``rclpy`` nodes.
- :mod:`semcorr_ros.ros.sync` -- approximate-time "latest complete set" synchroniser for colour, depth and
  camera info; pure Python, thread-safe.
"""
