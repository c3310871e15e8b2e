"""Start correspond_node (semcorr_ros) on an RGB-D camera.

    ros2 launch semcorr_ros correspond.launch.py
    ros2 launch semcorr_ros correspond.launch.py camera_namespace:=/camera/camera device:=cuda debug_image:=false

The node's inputs are remapped to ``<camera_namespace>/color/image_raw``,
``<camera_namespace>/aligned_depth_to_color/image_raw`` and ``<camera_namespace>/color/camera_info``
(realsense2_camera's names; start the camera with ``align_depth.enable:=true``). Its outputs live under its
name: ``/<node_name>/matches``, ``/<node_name>/matches_3d``, ``/<node_name>/pose``, ``/<node_name>/markers``,
``/<node_name>/debug_image``; plus ``/diagnostics``. Launch again with another ``node_name`` for a second
instance. Without a ROS 2 installation (plain venv) run the same node with
``correspond_node --ros-args --params-file config/correspond.yaml`` (see docs/node.md).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    camera_namespace = LaunchConfiguration("camera_namespace")
    arguments = [
        DeclareLaunchArgument(
            "camera_namespace", default_value="/camera/camera",
            description="Namespace of the RGB-D camera's topics (realsense2_camera >= 4.54: /camera/camera; "
                        "older: /camera). The node subscribes to <camera_namespace>/color/image_raw, "
                        "<camera_namespace>/aligned_depth_to_color/image_raw and "
                        "<camera_namespace>/color/camera_info."),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([FindPackageShare("semcorr_ros"), "config", "correspond.yaml"]),
            description="ros__parameters YAML of the node (model, matching, synchronisation, reference)."),
        DeclareLaunchArgument(
            "device", default_value="auto",
            description="Inference device: auto (CUDA when available), cpu, cuda or cuda:N; overrides the "
                        "params file."),
        DeclareLaunchArgument(
            "debug_image", default_value="true",
            description="Publish /<node_name>/debug_image (true/false; drawn only while subscribed); overrides "
                        "the params file."),
        DeclareLaunchArgument(
            "reference_file", default_value="package://semcorr_ros/config/example_reference.yaml",
            description="Reference YAML (image + named keypoints [+ depth, intrinsics]); a path or "
                        "package://<pkg>/<path>; overrides the params file (e.g. a scene made by `semcorr synth`)."),
        DeclareLaunchArgument(
            "log_level", default_value="info",
            description="Log level of the node: debug, info, warn, error or fatal."),
        DeclareLaunchArgument(
            "node_name", default_value="semcorr",
            description="Node name; the outputs live under it (/<node_name>/matches...)."),
    ]
    node = Node(
        package="semcorr_ros",
        executable="correspond_node",
        name=LaunchConfiguration("node_name"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "device": ParameterValue(LaunchConfiguration("device"), value_type=str),
                "publish_debug_image": ParameterValue(LaunchConfiguration("debug_image"), value_type=bool),
                "reference_file": ParameterValue(LaunchConfiguration("reference_file"), value_type=str),
            },
        ],
        remappings=[
            ("color/image_raw", [camera_namespace, "/color/image_raw"]),
            ("aligned_depth_to_color/image_raw", [camera_namespace, "/aligned_depth_to_color/image_raw"]),
            ("color/camera_info", [camera_namespace, "/color/camera_info"]),
        ],
        arguments=["--ros-args", "--log-level", LaunchConfiguration("log_level")],
    )
    return LaunchDescription(arguments + [node])
