"""Start correspond_node (semcorr_ros) on an RGB-D camera.

    ros2 launch semcorr_ros correspond.launch.py
    ros2 launch semcorr_ros correspond.launch.py camera_namespace:=/camera device:=cuda debug_image:=false
    ros2 launch semcorr_ros correspond.launch.py params_file:=$PWD/my.yaml namespace:=/robot1 respawn:=true

The node's inputs are remapped to ``<camera_namespace>/color/image_raw``,
``<camera_namespace>/aligned_depth_to_color/image_raw`` and ``<camera_namespace>/color/camera_info``
(realsense2_camera's names; start the camera with ``align_depth.enable:=true``), plus the compressed-transport
topics ``<camera_namespace>/color/image_raw/compressed`` and
``<camera_namespace>/aligned_depth_to_color/image_raw/compressedDepth`` for when the node reads those. Its
outputs live under its name: ``<namespace>/<node_name>/matches``, ``.../matches_3d``, ``.../pose``,
``.../markers``, ``.../debug_image``; plus ``/diagnostics``. Launch again with another ``node_name`` for a
second instance.

Parameters come from ``params_file`` (the package's config/correspond.yaml unless given). The launch arguments
``device``, ``debug_image``, ``reference_file`` and ``use_sim_time`` override it only when they are given:
left unset (empty), the params file's values stay. Without a ROS 2 installation (plain venv) run the same node with
``correspond_node --ros-args --params-file config/correspond.yaml`` (see docs/node.md).
"""

from __future__ import annotations

from typing import Any

from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from launch import LaunchContext, LaunchDescription

#: The node's input topics (relative names, see semcorr_ros.ros.node.INPUT_TOPICS) and the compressed-transport
#: topics it may read; each is remapped to ``<camera_namespace>/<name>``.
CAMERA_TOPICS = (
    "color/image_raw",
    "aligned_depth_to_color/image_raw",
    "color/camera_info",
    "color/image_raw/compressed",
    "aligned_depth_to_color/image_raw/compressedDepth",
)

#: Launch arguments that override a node parameter when given non-empty: argument -> (parameter, type).
PARAMETER_ARGUMENTS = {
    "device": ("device", "str"),
    "debug_image": ("publish_debug_image", "bool"),
    "reference_file": ("reference_file", "str"),
    "use_sim_time": ("use_sim_time", "bool"),
}

#: Launch arguments, name -> (default, description). A default of "" means "from the params file".
LAUNCH_ARGUMENTS = {
    "camera_namespace": (
        "/camera/camera",
        "Namespace of the RGB-D camera's topics (realsense2_camera >= 4.54: /camera/camera; older: /camera). "
        "The node subscribes to <camera_namespace>/color/image_raw, "
        "<camera_namespace>/aligned_depth_to_color/image_raw and <camera_namespace>/color/camera_info "
        "(and the compressed-transport topics under it when enabled)."),
    "params_file": (
        None,  # the package's config/correspond.yaml (a substitution, set in generate_launch_description)
        "ros__parameters YAML of the node (model, matching, synchronisation, reference); default: the "
        "package's config/correspond.yaml."),
    "device": (
        "",
        "Inference device: auto (CUDA when available), cpu, cuda or cuda:N. Empty: the params file's."),
    "debug_image": (
        "",
        "Publish /<node_name>/debug_image: true or false (drawn only while subscribed). Empty: the params "
        "file's publish_debug_image."),
    "reference_file": (
        "",
        "Reference YAML (image + named keypoints [+ depth, intrinsics]): a path or package://<pkg>/<path>, "
        "e.g. a scene made by `semcorr synth`. Empty: the params file's reference_file."),
    "log_level": (
        "info",
        "Log level of the node: debug, info, warn, error or fatal."),
    "node_name": (
        "semcorr",
        "Node name; the outputs live under it (<namespace>/<node_name>/matches ...)."),
    "namespace": (
        "",
        "Namespace of the node, e.g. /robot1 (the node is then /robot1/<node_name>). Empty: the root."),
    "use_sim_time": (
        "",
        "Use the /clock topic as the node's time source (true or false); sets the parameter use_sim_time. "
        "Empty: the params file's (false when it has none)."),
    "respawn": (
        "false",
        "Restart the node when its process exits (true or false); never while the launch is shutting down."),
    "respawn_delay": (
        "2.0",
        "Seconds to wait before a respawn (with respawn:=true)."),
}


def parse_bool(name: str, text: str) -> bool:
    """The value of the boolean launch argument ``name`` (``true``/``false``, any case).

    Raises:
        ValueError: ``text`` is neither; the message names the argument, so ``ros2 launch`` shows what to fix.
    """
    value = text.strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"launch argument {name}:={text!r} is not a boolean: use true or false")
    return value == "true"


def parse_seconds(name: str, text: str) -> float:
    """The value of the launch argument ``name``, a duration in seconds (a finite number >= 0).

    Raises:
        ValueError: ``text`` is not such a number.
    """
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value < float("inf"):
        raise ValueError(f"launch argument {name}:={text!r} is not a duration in seconds (a number >= 0)")
    return value


def parameter_overrides(values: dict[str, str]) -> dict[str, Any]:
    """Parameter overrides from the launch arguments' values: only the arguments given non-empty.

    Args:
        values: launch argument name -> value (the launch configurations).

    Raises:
        ValueError: a boolean argument is neither true nor false.
    """
    overrides: dict[str, Any] = {}
    for argument, (parameter, kind) in PARAMETER_ARGUMENTS.items():
        text = values.get(argument, "")
        if not text:
            continue
        if kind == "bool":
            overrides[parameter] = parse_bool(argument, text)
        else:  # a string parameter stays a string even if it reads as a number or boolean
            overrides[parameter] = ParameterValue(text, value_type=str)
    return overrides


def camera_remappings(camera_namespace: str) -> list[tuple[str, str]]:
    """The node's camera topics remapped under ``camera_namespace`` (a trailing ``/`` is ignored)."""
    prefix = camera_namespace.rstrip("/")
    return [(topic, f"{prefix}/{topic}") for topic in CAMERA_TOPICS]


def _node(context: LaunchContext) -> list[Node]:
    """The node, built from the launch arguments' values (evaluated at launch time)."""
    values = {name: LaunchConfiguration(name).perform(context) for name in LAUNCH_ARGUMENTS}
    namespace = values["namespace"].strip()
    return [Node(
        package="semcorr_ros",
        executable="correspond_node",
        name=values["node_name"],
        namespace=namespace or None,
        output="screen",
        emulate_tty=True,
        parameters=[values["params_file"], parameter_overrides(values)],
        remappings=camera_remappings(values["camera_namespace"]),
        ros_arguments=["--log-level", values["log_level"]],
        respawn=parse_bool("respawn", values["respawn"]),
        respawn_delay=parse_seconds("respawn_delay", values["respawn_delay"]),
    )]


def generate_launch_description() -> LaunchDescription:
    """The launch arguments and the node (see the module docstring)."""
    package_params = PathJoinSubstitution([FindPackageShare("semcorr_ros"), "config", "correspond.yaml"])
    arguments = [
        DeclareLaunchArgument(name, default_value=package_params if default is None else default,
                              description=description)
        for name, (default, description) in LAUNCH_ARGUMENTS.items()
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_node)])
