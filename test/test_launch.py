"""launch/correspond.launch.py and config/correspond.yaml.

``launch``/``launch_ros`` are not installable in a plain venv, so the launch file is checked statically (it
parses; it starts the installed ``correspond_node`` with the package's params file; every launch argument is
declared with a description; its remappings and parameter overrides name the node's real inputs and parameters).
The params file is loaded the way ``--params-file`` does it and every key must be a declared parameter. Where
``launch_ros`` is importable (a ROS 2 installation), the launch description is also built for real.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
LAUNCH = REPO / "launch" / "correspond.launch.py"
PARAMS = REPO / "config" / "correspond.yaml"
REQUIRED_ARGUMENTS = {"camera_namespace", "params_file", "device", "debug_image", "log_level"}


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call)
            and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _const(node: ast.expr | None) -> Any:
    return node.value if isinstance(node, ast.Constant) else None


@pytest.fixture(scope="module")
def tree() -> ast.Module:
    return ast.parse(LAUNCH.read_text(), filename=str(LAUNCH))


def test_launch_file_structure(tree: ast.Module) -> None:
    funcs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert "generate_launch_description" in [f.name for f in funcs]
    imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
    assert {"LaunchDescription", "DeclareLaunchArgument", "LaunchConfiguration", "Node"} <= imports
    nodes = _calls(tree, "Node")
    assert len(nodes) == 1
    node = nodes[0]
    assert _const(_kw(node, "package")) == "semcorr_ros"
    assert _const(_kw(node, "executable")) == "correspond_node"


def test_launch_arguments_are_declared_and_described(tree: ast.Module) -> None:
    declared: dict[str, str] = {}
    for call in _calls(tree, "DeclareLaunchArgument"):
        name = _const(call.args[0])
        declared[name] = _const(_kw(call, "description")) or ""
        assert _kw(call, "default_value") is not None, f"launch argument {name} has no default"
    assert REQUIRED_ARGUMENTS <= set(declared)
    assert all(len(d) > 20 for d in declared.values()), declared
    used = {_const(c.args[0]) for c in _calls(tree, "LaunchConfiguration")}
    assert used <= set(declared), f"undeclared launch arguments: {used - set(declared)}"


def test_launch_remappings_and_overrides_name_the_node_interface(tree: ast.Module) -> None:
    from semcorr_ros.ros.node import INPUT_TOPICS
    from semcorr_ros.ros.params import PARAMETERS_BY_NAME

    node = _calls(tree, "Node")[0]
    remaps = _kw(node, "remappings")
    sources = {_const(t.elts[0]) for t in remaps.elts}
    assert sources == set(INPUT_TOPICS.values())
    for t in remaps.elts:  # <camera_namespace> + "/" + the same relative name
        target = t.elts[1]
        assert _const(target.elts[1]) == "/" + _const(t.elts[0])
    overrides = [d for d in _kw(node, "parameters").elts if isinstance(d, ast.Dict)]
    keys = {_const(k) for d in overrides for k in d.keys}
    assert keys and keys <= set(PARAMETERS_BY_NAME), keys
    log_args = [_const(a) for a in _kw(node, "arguments").elts]
    assert log_args[:2] == ["--ros-args", "--log-level"]


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


def test_launch_description_with_launch_ros() -> None:
    pytest.importorskip("launch_ros", reason="launch_ros is not installable in a plain venv")
    import importlib.util

    from launch import LaunchDescription

    spec = importlib.util.spec_from_file_location("correspond_launch", LAUNCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ld = module.generate_launch_description()
    assert isinstance(ld, LaunchDescription)
    assert REQUIRED_ARGUMENTS <= {a.name for a in ld.get_launch_arguments()}
