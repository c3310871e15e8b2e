"""Process life cycle of a node executable: init, spin until SIGINT/SIGTERM, clean shutdown, exit code.

rclpy's own signal handlers are not installed: SIGINT and SIGTERM only set a flag, the spin loop (0.1 s
steps) sees it, then the node is destroyed *before* rclpy shuts down -- so a worker thread finishing a frame
never publishes into a dead context, and the process exits with 0 and no traceback. Shutdown is bounded: a
worker thread still busy after the node's own timeout (``worker_alive``) does not hold the process; it exits
at once with its code.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from typing import Any

from semcorr_ros.errors import ConfigError
from semcorr_ros.threads import configure_openmp

__all__ = ["run_node"]


def run_node(make_node: Callable[[], Any], args: list[str] | None = None, name: str = "node") -> int:
    """Build the node with ``make_node()`` and spin it until SIGINT/SIGTERM.

    Args:
        make_node: builds the node (after ``rclpy.init``); a ``fatal_error`` attribute that becomes non-None
            ends the loop with exit code 1.
        args: command line (``--ros-args ...``); None: ``sys.argv``.
        name: logger name for start-up errors.

    Returns:
        0 after a signal (or an external ``rclpy`` shutdown), 1 when the node could not start or failed.
    """
    import rclpy
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.logging import get_logger
    from rclpy.signals import SignalHandlerOptions

    configure_openmp()  # bounded OpenMP spin-waiting (see semcorr_ros.threads); before torch is imported
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    received: list[str] = []

    def _on_signal(signum: int, _frame: Any) -> None:
        received.append(signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, _on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    node: Any = None
    code = 0
    try:
        node = make_node()
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while not stop.is_set() and rclpy.ok():
            executor.spin_once(timeout_sec=0.1)
            if getattr(node, "fatal_error", None) is not None:
                code = 1
                break
        if received:
            node.get_logger().info(f"{received[0]}: shutting down")
        executor.shutdown(timeout_sec=1.0)
    except (ConfigError, InvalidParameterTypeException, InvalidParameterValueException) as exc:
        get_logger(name).fatal(f"bad parameters: {exc}")
        code = 1
    except Exception as exc:  # noqa: BLE001 -- any other start-up failure: a clear line and exit code 1
        get_logger(name).fatal(f"start-up failed: {type(exc).__name__}: {exc}")
        code = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
        for s, handler in previous.items():
            signal.signal(s, handler)
    if node is not None and getattr(node, "worker_alive", False):
        # A frame still in flight (a stalled device...) must not keep the process: leave without joining it.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
