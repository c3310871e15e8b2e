"""semcorr_ros: semantic keypoint correspondences on live RGB-D streams for ROS 2.

The algorithm lives in :mod:`semcorr_ros.engine` (ROS-free, torch + numpy); the ROS 2 adapters live in
:mod:`semcorr_ros.ros`; datasets, metrics and the ``semcorr`` command in :mod:`semcorr_ros.data`,
:mod:`semcorr_ros.eval` and :mod:`semcorr_ros.cli`.
"""

__version__ = "0.1.0"
