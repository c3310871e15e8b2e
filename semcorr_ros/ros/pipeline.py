"""The node's three-stage frame pipeline: convert -> infer -> publish, one thread each, linked by one-slot boxes.

Pure Python (no rclpy). A :class:`LatestBox` holds at most one item: putting a new one replaces (and returns) the
one not yet taken, so that no stage ever queues work behind a slower one -- what was replaced is counted by the
caller. :class:`Pacer` tells the converter when to convert the next frame: just before the engine is expected to
be free, so that the frame it hands over is the newest one and no conversion is spent on frames that would be
superseded anyway (decoding compressed images at 30 Hz would otherwise take CPU from the engine).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections import deque
from typing import Any

__all__ = ["LatestBox", "Pacer"]


class LatestBox:
    """A one-slot mailbox between two threads: :meth:`put` replaces, :meth:`take` waits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False

    def put(self, item: Any) -> Any:
        """Store ``item``; return the item it replaced (not taken yet), else None."""
        with self._cond:
            old = self._item if self._full else None
            self._item, self._full = item, True
            self._cond.notify_all()
            return old

    def take(self, timeout: float | None = None) -> Any:
        """The stored item (emptying the box), waiting at most ``timeout`` s; None on timeout or when closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._full or self._closed, timeout) or not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            self._cond.notify_all()
            return item

    def clear(self) -> Any:
        """Empty the box; return what it held (None when empty)."""
        with self._cond:
            item = self._item if self._full else None
            self._item, self._full = None, False
            return item

    def close(self) -> None:
        """Wake every waiter; :meth:`take` returns None from now on once the box is empty."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def full(self) -> bool:
        with self._cond:
            return self._full


class Pacer:
    """When the converter should convert the next frame, from the engine's and the converter's recent durations.

    The inference thread calls :meth:`started` / :meth:`finished` around each engine call, the converter
    :meth:`converted` with each conversion's duration. :meth:`due` is the monotonic time from which converting is
    useful: now when the engine is idle; otherwise the engine's expected end (start + median of the recent
    durations) less the median conversion time and ``margin`` s.
    """

    def __init__(self, window: int = 15, margin: float = 0.004) -> None:
        self._lock = threading.Condition()
        self._engine: deque[float] = deque(maxlen=window)
        self._convert: deque[float] = deque(maxlen=window)
        self._busy_since: float | None = None
        self.margin = margin

    def started(self, now: float | None = None) -> None:
        with self._lock:
            self._busy_since = time.monotonic() if now is None else now

    def finished(self, now: float | None = None) -> None:
        with self._lock:
            if self._busy_since is not None:
                self._engine.append((time.monotonic() if now is None else now) - self._busy_since)
            self._busy_since = None
            self._lock.notify_all()

    def converted(self, seconds: float) -> None:
        with self._lock:
            self._convert.append(seconds)

    def due(self, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        with self._lock:
            return self._due_locked(now)

    def _due_locked(self, now: float) -> float:
        if self._busy_since is None or not self._engine:
            return now
        convert = statistics.median(self._convert) if self._convert else 0.0
        return self._busy_since + statistics.median(self._engine) - convert - self.margin

    def wait_until_due(self, stop: threading.Event, poll: float = 0.1) -> None:
        """Sleep until :meth:`due` or ``stop`` is set; woken at once when the engine finishes early (``stop`` is
        re-checked every ``poll`` s)."""
        with self._lock:
            while not stop.is_set():
                now = time.monotonic()
                wait = self._due_locked(now) - now
                if wait <= 0:
                    return
                self._lock.wait(min(wait, poll))
