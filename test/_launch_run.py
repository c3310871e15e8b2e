"""Helpers of the launch tests: the launch kit check and one launch run (test/_launch_driver.py) as a process.

``launch``/``launch_ros`` come from ``../shared/ros2-launch-kit`` (installed by tools/setup.sh when that folder
exists); without them the launch tests skip.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from _launch_driver import EXITED, STARTED

REPO = Path(__file__).resolve().parent.parent
DRIVER = Path(__file__).resolve().parent / "_launch_driver.py"
KIT = REPO.parent / "shared" / "ros2-launch-kit"
KIT_MISSING = "ros2-launch-kit not installed (../shared/ros2-launch-kit missing)"
KIT_NOT_INSTALLED = "ros2-launch-kit not installed in this venv (../shared/ros2-launch-kit exists: run tools/setup.sh)"


def launch_kit_problem() -> str | None:
    """Why the real launch system cannot be used here (None when ``launch`` and ``launch_ros`` import)."""
    try:
        import launch_ros  # noqa: F401

        import launch  # noqa: F401
    except ImportError:
        return KIT_NOT_INSTALLED if KIT.is_dir() else KIT_MISSING
    return None


def require_launch_kit() -> None:
    """Skip the calling test (or module, at import time) when the launch system is not installed."""
    problem = launch_kit_problem()
    if problem is not None:
        pytest.skip(problem, allow_module_level=True)


def installed_launch_file() -> Path:
    """``correspond.launch.py`` as ``ros2 launch semcorr_ros correspond.launch.py`` finds it (the ament index)."""
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("semcorr_ros")) / "launch" / "correspond.launch.py"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists and is not a zombie (an exited process not reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass(frozen=True)
class ProcessEvent:
    """A process start or exit reported by the driver (``returncode`` is None for a start)."""

    pid: int
    name: str
    time: float
    returncode: int | None = None


class LaunchRun:
    """``correspond.launch.py`` run by the driver in its own process (session), output in ``log``.

    Args:
        arguments: launch arguments (name -> value).
        log: file receiving the driver's stdout and stderr (the launched node's output included).
        env: environment of the driver (and so of the node).
    """

    def __init__(self, arguments: dict[str, str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        cmd = [sys.executable, str(DRIVER), str(installed_launch_file()),
               *(f"{k}:={v}" for k, v in arguments.items())]
        with open(log, "wb") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=log.parent,
                                         start_new_session=True)

    def output(self) -> str:
        """Everything the driver and the node printed so far."""
        return self.log.read_text(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        """The end of :meth:`output` (for assertion messages)."""
        return self.output()[-chars:]

    def events(self) -> tuple[list[ProcessEvent], list[ProcessEvent]]:
        """The process starts and exits reported so far, in order."""
        starts, exits = [], []
        for line in self.output().splitlines():
            if line.startswith(STARTED):
                t, pid, name = line[len(STARTED):].split()
                starts.append(ProcessEvent(int(pid), name, float(t)))
            elif line.startswith(EXITED):
                t, pid, code, name = line[len(EXITED):].split()
                exits.append(ProcessEvent(int(pid), name, float(t), int(code)))
        return starts, exits

    def wait_started(self, count: int, timeout: float) -> ProcessEvent:
        """The ``count``-th process start (1-based), waiting up to ``timeout`` seconds for it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            starts = self.events()[0]
            if len(starts) >= count:
                return starts[count - 1]
            time.sleep(0.05)
        starts = self.events()[0]
        assert len(starts) >= count, f"process start #{count} not reported:\n{self.tail()}"
        return starts[count - 1]

    def wait_exited(self, pid: int, timeout: float) -> ProcessEvent:
        """The exit of process ``pid``, waiting up to ``timeout`` seconds for its report."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.events()[1] if e.pid == pid]
            if found:
                return found[0]
            assert time.monotonic() < deadline, f"exit of pid {pid} not reported:\n{self.tail()}"
            time.sleep(0.05)

    def interrupt(self, group: bool, timeout: float) -> int:
        """SIGINT to end the launch; its exit code, waited up to ``timeout`` s.

        Args:
            group: send it to the whole process group, as Ctrl-C in a terminal does (``ros2 launch`` then
                leaves the SIGINT its processes got themselves to them); False: to the driver alone, as
                ``kill -INT`` does (the launch then waits 5 s for its processes before it sends them SIGTERM).
            timeout: seconds to wait for the driver's exit.
        """
        if group:
            os.killpg(self.proc.pid, signal.SIGINT)
        else:
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the launch did not end within {timeout} s of SIGINT:\n{self.tail()}") from None

    def close(self) -> None:
        """Kill whatever is left of this run (its process group: the driver and the processes it started)."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        for event in self.events()[0]:
            if pid_alive(event.pid):
                os.kill(event.pid, signal.SIGKILL)
