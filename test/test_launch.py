"""launch/correspond.launch.py and config/correspond.yaml, without running them.

The launch file is checked statically (it parses; it starts the installed ``correspond_node``; every launch
argument has a default and a description; its remappings and parameter overrides name the node's real inputs
and parameters). The params file is loaded the way ``--params-file`` does it and every key must be a declared
parameter. Where the real launch system is installed (``../shared/ros2-launch-kit``, see
test/test_launch_real.py, which runs the launch file), the launch description and the launch file's argument
handling are also checked for real.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from _launch_run import require_launch_kit

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch" / "correspond.launch.py"
PARAMS = REPO / "config" / "correspond.yaml"
REQUIRED_ARGUMENTS = {"camera_namespace", "params_file", "device", "debug_image", "reference_file", "log_level",
                      "node_name", "namespace", "use_sim_time", "respawn", "respawn_delay"}
#: Arguments that must default to "" (= the params file's value), so that leaving them out overrides nothing.
FROM_PARAMS_FILE = {"device", "debug_image", "reference_file", "use_sim_time"}
#: Topics of the compressed image transports, by the raw input they carry.
COMPRESSED_SUFFIXES = ("/compressed", "/compressedDepth")


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _const(node: ast.expr | None) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


def _module_constant(tree: ast.Module, name: str) -> Any:
    """The literal value of the top-level assignment ``name = ...`` in the launch file."""
    for n in tree.body:
        if isinstance(n, ast.Assign) and any(getattr(t, "id", None) == name for t in n.targets):
            return ast.literal_eval(n.value)
    raise AssertionError(f"{LAUNCH.name} has no top-level {name}")


@pytest.fixture(scope="module")
def tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def test_launch_file_structure(tree: ast.Module) -> None:
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in [f.name for f in funcs]
    imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"LaunchDescription", "DeclareLaunchArgument", "LaunchConfiguration", "OpaqueFunction", "Node"} <= imports
    nodes = _calls(tree, "Node")
    assert len(nodes) == 1
    node = nodes[0]
    assert _const(_kw(node, "package")) == "semcorr_ros"
    assert _const(_kw(node, "executable")) == "correspond_node"
    for keyword in ("name", "namespace", "parameters", "remappings", "ros_arguments", "respawn", "respawn_delay"):
        assert _kw(node, keyword) is not None, f"Node(...) does not set {keyword}"


def test_launch_arguments_have_defaults_and_descriptions(tree: ast.Module) -> None:
    declared: dict[str, tuple[str | None, str]] = _module_constant(tree, "LAUNCH_ARGUMENTS")
    assert set(declared) == REQUIRED_ARGUMENTS
    assert all(len(description) > 20 for _default, description in declared.values()), declared
    defaults = {name: default for name, (default, _description) in declared.items()}
    assert {name: defaults[name] for name in FROM_PARAMS_FILE} == dict.fromkeys(FROM_PARAMS_FILE, "")
    assert defaults["params_file"] is None  # the package's config/correspond.yaml, a substitution
    assert {k: defaults[k] for k in ("namespace", "respawn", "respawn_delay")} == {
        "namespace": "", "respawn": "false", "respawn_delay": "2.0"}
    used = {_const(c.args[0]) for c in _calls(tree, "LaunchConfiguration") if c.args} - {None}
    assert used <= set(declared), f"undeclared launch arguments: {used - set(declared)}"


def test_launch_remappings_and_overrides_name_the_node_interface(tree: ast.Module) -> None:
    from rcl_interfaces.msg import ParameterType

    from semcorr_ros.ros import node
    from semcorr_ros.ros.params import PARAMETERS_BY_NAME

    topics: tuple[str, ...] = _module_constant(tree, "CAMERA_TOPICS")
    inputs = set(node.INPUT_TOPICS.values())
    assert inputs <= set(topics), f"inputs not remapped: {inputs - set(topics)}"
    compressed = getattr(node, "COMPRESSED_INPUT_TOPICS", None)
    if compressed is not None:  # the node reads compressed transports: exactly those are remapped too
        assert set(topics) == inputs | set(compressed.values())
    for topic in set(topics) - inputs:  # image_transport's names for a raw input
        assert any(topic == raw + suffix for raw in inputs for suffix in COMPRESSED_SUFFIXES), topic
    arguments = _module_constant(tree, "PARAMETER_ARGUMENTS")
    assert set(arguments) == FROM_PARAMS_FILE
    kinds = {"str": ParameterType.PARAMETER_STRING, "bool": ParameterType.PARAMETER_BOOL}
    for argument, (parameter, kind) in arguments.items():
        if parameter == "use_sim_time":  # declared by rclpy itself on every node (a bool)
            assert kind == "bool"
            continue
        assert parameter in PARAMETERS_BY_NAME, f"{argument} overrides {parameter}, not a node parameter"
        assert PARAMETERS_BY_NAME[parameter].type == kinds[kind], (argument, parameter)


def test_installed_files() -> None:
    exe = Path(sys.prefix) / "lib" / "semcorr_ros" / "correspond_node"
    assert exe.is_file() and os.access(exe, os.X_OK), exe
    share = Path(sys.prefix) / "share" / "semcorr_ros"
    for rel in ("launch/correspond.launch.py", "config/correspond.yaml", "config/example_reference.yaml",
                "config/example_reference.png", "config/example_reference_depth.png"):
        assert (share / rel).is_file(), f"{rel} not installed into {share}"
    assert (REPO / "config" / "example_reference.png").stat().st_size < 200_000


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_params_file_keys_are_declared_parameters() -> None:
    """Load config/correspond.yaml exactly like --params-file; every key must be declared (and typed right)."""
    import rclpy
    from rclpy.context import Context

    from semcorr_ros.ros.node import CorrespondNode
    from semcorr_ros.ros.params import REFERENCE_PARAMETERS, load_reference_from_params

    doc = yaml.safe_load(PARAMS.read_text())
    assert list(doc) == ["/**"], "the params file should apply to any node name"
    values = _flatten(doc["/**"]["ros__parameters"])
    assert values
    context = Context()
    rclpy.init(context=context, args=["--ros-args", "--params-file", str(PARAMS)])
    try:
        node = CorrespondNode(context=context, start=False)
        try:
            for key, value in values.items():
                assert node.has_parameter(key), f"{key} in {PARAMS.name} is not a parameter of the node"
                assert node.get_parameter(key).value == value, key
            assert node.get_parameter("reference_file").value.startswith("package://semcorr_ros/")
            refs = {k: node.get_parameter_or(k, None).value for k in REFERENCE_PARAMETERS}
            assert load_reference_from_params(refs).reference_id == "example_robot"
        finally:
            node.destroy_node()
    finally:
        context.try_shutdown()


def _launch_module() -> ModuleType:
    """The launch file as a module (needs the launch system)."""
    spec = importlib.util.spec_from_file_location("correspond_launch", LAUNCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_launch_description_with_launch_ros() -> None:
    require_launch_kit()
    from launch import LaunchContext, LaunchDescription

    module = _launch_module()
    ld = module.generate_launch_description()
    assert isinstance(ld, LaunchDescription)
    arguments = {a.name: a for a in ld.get_launch_arguments()}
    assert set(arguments) == REQUIRED_ARGUMENTS
    assert all(len(a.description) > 20 for a in arguments.values())
    context = LaunchContext()
    defaults = {name: "".join(s.perform(context) for s in a.default_value) for name, a in arguments.items()}
    assert Path(defaults["params_file"]) == Path(sys.prefix) / "share" / "semcorr_ros" / "config" / "correspond.yaml"
    assert all(defaults[name] == "" for name in FROM_PARAMS_FILE)


def test_launch_parameter_overrides_only_from_given_arguments() -> None:
    require_launch_kit()
    from launch_ros.parameter_descriptions import ParameterValue

    module = _launch_module()
    unset = dict.fromkeys(FROM_PARAMS_FILE, "")
    assert module.parameter_overrides(unset) == {}
    given = module.parameter_overrides({"device": "cuda:1", "debug_image": "False", "reference_file": "123",
                                        "use_sim_time": "TRUE"})
    assert set(given) == {"device", "publish_debug_image", "reference_file", "use_sim_time"}
    assert given["publish_debug_image"] is False and given["use_sim_time"] is True
    for name, text in (("device", "cuda:1"), ("reference_file", "123")):  # strings stay strings
        value = given[name]
        assert isinstance(value, ParameterValue) and value.value_type is str and value.value == text
    with pytest.raises(ValueError, match="launch argument debug_image:='yes please' is not a boolean"):
        module.parameter_overrides(unset | {"debug_image": "yes please"})
    for bad in ("-0.5", "soon", "nan", "inf"):
        with pytest.raises(ValueError, match="respawn_delay"):
            module.parse_seconds("respawn_delay", bad)
    assert module.parse_seconds("respawn_delay", "0.5") == 0.5


def test_launch_camera_remappings() -> None:
    require_launch_kit()
    module = _launch_module()
    for namespace in ("/cam", "/cam/"):
        remaps = dict(module.camera_remappings(namespace))
        assert remaps["color/image_raw"] == "/cam/color/image_raw"
        assert remaps["aligned_depth_to_color/image_raw/compressedDepth"] == \
            "/cam/aligned_depth_to_color/image_raw/compressedDepth"
        assert set(remaps) == set(module.CAMERA_TOPICS)
