"""Test environment for semcorr_ros.

Runs at import time, before any test imports rclpy, and makes every test run hermetic:

* ``ROS_DOMAIN_ID``: random in [1, 100] for each run (kept if already set), so that parallel runs and
  other ROS 2 programs on the machine do not see each other;
* ``ROS_LOG_DIR``: ``build/test_ros_logs`` inside the work tree (not ``~/.ros``);
* ``FASTDDS_DEFAULT_PROFILES_FILE``: ``tools/fastdds_localhost.xml`` (shared memory with room for
  whole images + UDP on loopback only); ``RMW_IMPLEMENTATION`` is left as it is (unset: Fast DDS);
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


def _configure_ros_environment() -> None:
    if not os.environ.get("ROS_DOMAIN_ID"):
        os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(1, 100))
    ROS_LOG_DIR.mkdir(parents=True, exist_ok=True)
    os.environ["ROS_LOG_DIR"] = str(ROS_LOG_DIR)
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


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
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
