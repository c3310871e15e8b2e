"""Run a launch file with ``launch.LaunchService`` the way ``ros2 launch`` does, for the launch tests.

    python test/_launch_driver.py LAUNCH_FILE [name:=value ...]

Includes ``LAUNCH_FILE`` with the given launch arguments and runs until SIGINT/SIGTERM (handled by the
LaunchService: it stops the processes it started, then returns). The exit code is the LaunchService's (0 after a
clean shutdown, non-zero when the launch failed). Every process start and exit is reported on stdout as one line
that the tests parse (see :data:`STARTED` and :data:`EXITED`); the launched processes' output is interleaved.

Runs as a separate process because LaunchService installs its signal handlers, which needs the main thread.
"""

from __future__ import annotations

import sys
import time
from typing import Any

#: Line printed when a process starts: ``STARTED <time> <pid> <process name>`` (time: CLOCK_MONOTONIC, s).
STARTED = "[launch-driver] started"
#: Line printed when a process exits: ``EXITED <time> <pid> <returncode> <process name>``.
EXITED = "[launch-driver] exited"


def _report(line: str) -> None:
    print(line, flush=True)


def _on_start(event: Any, _context: Any) -> None:
    _report(f"{STARTED} {time.monotonic():.3f} {event.pid} {event.process_name}")


def _on_exit(event: Any, _context: Any) -> None:
    _report(f"{EXITED} {time.monotonic():.3f} {event.pid} {event.returncode} {event.process_name}")


def main(argv: list[str]) -> int:
    """Run ``argv[0]`` (a launch file) with the launch arguments ``argv[1:]`` (``name:=value``)."""
    from launch.actions import IncludeLaunchDescription, RegisterEventHandler
    from launch.event_handlers import OnProcessExit, OnProcessStart
    from launch.launch_description_sources import PythonLaunchDescriptionSource

    from launch import LaunchDescription, LaunchService

    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    path, raw = argv[0], argv[1:]
    pairs = []
    for item in raw:
        name, sep, value = item.partition(":=")
        if not sep:
            print(f"launch arguments are name:=value, got {item!r}", file=sys.stderr)
            return 2
        pairs.append((name, value))
    service = LaunchService(argv=raw)
    service.include_launch_description(LaunchDescription([
        RegisterEventHandler(OnProcessStart(on_start=_on_start)),
        RegisterEventHandler(OnProcessExit(on_exit=_on_exit)),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(path), launch_arguments=pairs),
    ]))
    return service.run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
