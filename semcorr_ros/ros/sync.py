"""Approximate-time "latest complete set" synchroniser for colour, depth and camera info.

Pure Python (no rclpy, no message packages) and thread-safe: ROS subscription callbacks call :meth:`add`, a worker
thread calls :meth:`LatestSetSync.wait_for_set` (or :meth:`LatestSetSync.pop_latest`) and always gets the
*newest* complete set; everything older is discarded and counted instead of being queued behind a slow model.

Pairing rule (colour is the pivot): a colour frame at ``tc`` forms a set with the depth frame whose stamp is
nearest to ``tc`` and within ``slop`` seconds (``|td - tc| <= slop``, inclusive to the nanosecond), and with
camera info:

- ``info_latched=True`` (default): the most recently *received* camera info, whatever its stamp. RealSense
  (and most drivers) publish constant intrinsics, sometimes with stamps that never match the images, so waiting
  for a stamp match would only lose frames. Info stamps are then ignored entirely.
- ``info_latched=False``: the info message nearest to ``tc`` within ``slop``, consumed like depth.

Accounting -- every colour frame added ends up in exactly one of these (or is still buffered):

- ``consumed``: returned in a set;
- ``dropped``: discarded unconsumed although a depth frame within ``slop`` was buffered for it (or had been, and
  was pushed out of the full depth buffer first: load shedding) -- superseded by
  a newer complete set, pushed out of the full colour buffer, or cleared by a reset;
- ``late``: colour frames whose stamp is no newer than the last returned set, rejected on arrival (frames
  arriving out of order, or a camera that publishes zero or constant stamps: see the node's ``stamp_source``);
- ``unpaired``: discarded unconsumed with no depth frame within ``slop`` (slop too small, depth not arriving...).

Depth / info frames that are discarded unused (older than the depth frame of a returned set, or pushed out of
their full buffer) are counted separately in ``depth_discarded`` / ``info_discarded`` so that one superseded set
is not counted twice. :meth:`LatestSetSync.stats` returns all counters.

Time jumps: a frame more than ``time_jump_reset`` seconds older than the newest stamp seen *on its own stream*
(a rosbag looping, simulated time restarting) clears the buffers (:meth:`LatestSetSync.reset`) instead of
rejecting every later frame as late. Streams lagging each other are not a jump.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections import deque
from typing import Any

from semcorr_ros.errors import ConfigError, InputError

__all__ = ["COLOR", "DEPTH", "INFO", "STREAMS", "LatestSetSync"]

COLOR = "color"
DEPTH = "depth"
INFO = "info"
#: Stream names accepted by :meth:`LatestSetSync.add`; the keys of the dict in a returned set.
STREAMS: tuple[str, str, str] = (COLOR, DEPTH, INFO)

# Slop comparisons are inclusive with one nanosecond of tolerance, so that float rounding of stamps converted
# from (sec, nanosec) does not decide a pair that is exactly ``slop`` apart.
_STAMP_TOLERANCE = 1e-9


class _Buffer:
    """Bounded list of ``(stamp, item)`` kept sorted by stamp (arrival order among equal stamps)."""

    __slots__ = ("stamps", "items")

    def __init__(self) -> None:
        self.stamps: list[float] = []
        self.items: list[Any] = []

    def __len__(self) -> int:
        return len(self.stamps)

    def insert(self, stamp: float, item: Any) -> None:
        i = bisect.bisect_right(self.stamps, stamp)
        self.stamps.insert(i, stamp)
        self.items.insert(i, item)

    def nearest(self, t: float, slop: float) -> int:
        """Index of the entry nearest to ``t`` with ``|stamp - t| <= slop`` (earlier one on ties), or -1."""
        i = bisect.bisect_left(self.stamps, t)
        best, best_d = -1, slop + _STAMP_TOLERANCE
        for j in (i - 1, i):
            if 0 <= j < len(self.stamps):
                d = abs(self.stamps[j] - t)
                if d <= best_d and (best < 0 or d < best_d):
                    best, best_d = j, d
        return best

    def drop_through(self, i: int) -> None:
        """Remove entries ``0..i`` inclusive."""
        del self.stamps[: i + 1]
        del self.items[: i + 1]

    def clear(self) -> None:
        self.stamps.clear()
        self.items.clear()


class LatestSetSync:
    """Keep the newest complete (colour, depth, info) set; drop and count everything older.

    Args:
        slop: maximum ``|t_depth - t_colour|`` (and ``|t_info - t_colour|`` when not latched), seconds, >= 0.
        buffer_size: frames kept per stream (>= 1); the oldest frame is discarded (and counted) beyond it.
        info_latched: use the latest received camera info regardless of its stamp (see the module docstring).
        time_jump_reset: a frame older than the newest stamp seen on the same stream by more than this many
            seconds resets the buffers (``math.inf`` disables).

    Raises:
        ConfigError: an argument outside its valid range.

    All methods are thread-safe. Stamps are float seconds (see ``convert.stamp_to_sec``); items are opaque.
    """

    def __init__(
        self,
        slop: float,
        buffer_size: int,
        *,
        info_latched: bool = True,
        time_jump_reset: float = 1.0,
    ) -> None:
        if not (isinstance(slop, (int, float)) and math.isfinite(slop) and slop >= 0):
            raise ConfigError(f"slop must be a finite number of seconds >= 0, got {slop!r}")
        if isinstance(buffer_size, bool) or not isinstance(buffer_size, int) or buffer_size < 1:
            raise ConfigError(f"buffer_size must be an integer >= 1, got {buffer_size!r}")
        if not (isinstance(time_jump_reset, (int, float)) and time_jump_reset > 0):
            raise ConfigError(f"time_jump_reset must be > 0 seconds (math.inf disables), got {time_jump_reset!r}")
        self.slop = float(slop)
        self.buffer_size = buffer_size
        self.info_latched = bool(info_latched)
        self.time_jump_reset = float(time_jump_reset)

        self._cond = threading.Condition(threading.Lock())
        self._color = _Buffer()
        self._depth = _Buffer()
        self._info = _Buffer()  # used only when not latched
        self._latched_info: tuple[float, Any] | None = None
        self._last_stamp: float | None = None  # colour stamp of the last returned set
        self._newest_seen: dict[str, float] = {}  # per stream, since the last reset
        # Stamps of depth frames pushed out of their full buffer: a colour frame whose partner left first (the
        # consumer is slower than the camera) was pairable, so it counts as dropped, not unpaired.
        self._evicted_depth: deque[float] = deque(maxlen=4 * buffer_size)
        self._waiters = 0
        self._closed = False
        self._counts = {
            "added_color": 0,
            "consumed": 0,
            "dropped": 0,
            "late": 0,
            "unpaired": 0,
            "depth_discarded": 0,
            "info_discarded": 0,
            "resets": 0,
        }

    # ------------------------------------------------------------------ public API

    def add(self, stream: str, stamp: float, item: Any) -> None:
        """Add a frame of ``stream`` (one of :data:`STREAMS`) with stamp ``stamp`` (seconds).

        Raises:
            InputError: unknown stream name or a non-finite stamp.
        """
        if stream not in STREAMS:
            raise InputError(f"unknown stream {stream!r}; valid: {', '.join(STREAMS)}")
        try:
            t = float(stamp)
        except (TypeError, ValueError):
            raise InputError(f"stamp must be a number of seconds, got {stamp!r}") from None
        if not math.isfinite(t):
            raise InputError(f"stamp must be finite, got {stamp!r}")
        with self._cond:
            if stream == INFO and self.info_latched:
                self._latched_info = (t, item)
            else:
                newest = self._newest_seen.get(stream)
                if newest is not None and t < newest - self.time_jump_reset:
                    self._reset_locked()
                    self._counts["resets"] += 1
                    newest = None
                if newest is None or t > newest:
                    self._newest_seen[stream] = t
                if stream == COLOR:
                    self._counts["added_color"] += 1
                    if self._last_stamp is not None and t <= self._last_stamp:
                        self._counts["late"] += 1  # no newer than what was already delivered
                        return
                buf = self._buffer(stream)
                buf.insert(t, item)
                if len(buf) > self.buffer_size:
                    self._discard_oldest_locked(stream)
            if self._waiters and self._find_locked() is not None:
                self._cond.notify_all()

    def pop_latest(self) -> tuple[float, dict[str, Any]] | None:
        """Remove and return the newest complete set, or None when there is none.

        Returns:
            ``(colour stamp in seconds, {"color": item, "depth": item, "info": item})``. Older colour frames
            are discarded (counted ``dropped`` or ``unpaired``), as are depth (and unlatched info) frames up to
            the ones used. Newer, still incomplete colour frames stay buffered.
        """
        with self._cond:
            return self._pop_locked()

    def wait_for_set(self, timeout: float | None = None) -> tuple[float, dict[str, Any]] | None:
        """Block until a complete set is available and pop it, like :meth:`pop_latest`.

        Args:
            timeout: seconds to wait at most; None waits until a set arrives or :meth:`close` is called.

        Returns:
            The set, or None on timeout or once the synchroniser is closed.
        """
        deadline = None if timeout is None else time.monotonic() + max(0.0, float(timeout))
        with self._cond:
            while True:
                if self._closed:
                    return None
                result = self._pop_locked()
                if result is not None:
                    return result
                if deadline is None:
                    remaining = None
                else:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        return None
                self._waiters += 1
                try:
                    self._cond.wait(remaining)
                finally:
                    self._waiters -= 1

    def close(self) -> None:
        """Wake every :meth:`wait_for_set` caller and make it return None from now on (for shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        with self._cond:
            return self._closed

    def reset(self) -> None:
        """Discard every buffered frame (colour frames are counted) and forget the last delivered stamp.

        The latched camera info and the counters are kept.
        """
        with self._cond:
            self._reset_locked()

    @property
    def dropped(self) -> int:
        """Colour frames discarded unconsumed although depth was available for them (see module docstring)."""
        with self._cond:
            return self._counts["dropped"]

    @property
    def late(self) -> int:
        """Colour frames rejected on arrival because their stamp was no newer than the last returned set."""
        with self._cond:
            return self._counts["late"]

    @property
    def unpaired(self) -> int:
        """Colour frames discarded without any depth frame within ``slop``."""
        with self._cond:
            return self._counts["unpaired"]

    @property
    def consumed(self) -> int:
        """Sets returned by :meth:`pop_latest` / :meth:`wait_for_set`."""
        with self._cond:
            return self._counts["consumed"]

    def stats(self) -> dict[str, int]:
        """All counters plus current buffer lengths (``buffered_color``, ``buffered_depth``, ``buffered_info``)."""
        with self._cond:
            out = dict(self._counts)
            out["buffered_color"] = len(self._color)
            out["buffered_depth"] = len(self._depth)
            out["buffered_info"] = (
                (1 if self._latched_info is not None else 0) if self.info_latched else len(self._info)
            )
            return out

    # ------------------------------------------------------------------ internals (lock held)

    def _buffer(self, stream: str) -> _Buffer:
        return {COLOR: self._color, DEPTH: self._depth, INFO: self._info}[stream]

    def _count_discarded_color(self, t: float) -> None:
        paired = self._depth.nearest(t, self.slop) >= 0 or any(
            abs(d - t) <= self.slop + 1e-9 for d in self._evicted_depth)
        self._counts["dropped" if paired else "unpaired"] += 1

    def _discard_oldest_locked(self, stream: str) -> None:
        buf = self._buffer(stream)
        if stream == COLOR:
            self._count_discarded_color(buf.stamps[0])
        else:
            self._counts[f"{stream}_discarded"] += 1
            if stream == DEPTH:
                self._evicted_depth.append(buf.stamps[0])
        buf.drop_through(0)

    def _find_locked(self) -> tuple[int, int, int] | None:
        """Indices (colour, depth, info or -1 when latched) of the newest complete set."""
        if self.info_latched and self._latched_info is None:
            return None
        color = self._color
        for i in range(len(color) - 1, -1, -1):
            tc = color.stamps[i]
            j = self._depth.nearest(tc, self.slop)
            if j < 0:
                continue
            k = -1
            if not self.info_latched:
                k = self._info.nearest(tc, self.slop)
                if k < 0:
                    continue
            return i, j, k
        return None

    def _pop_locked(self) -> tuple[float, dict[str, Any]] | None:
        found = self._find_locked()
        if found is None:
            return None
        i, j, k = found
        tc = self._color.stamps[i]
        items = {COLOR: self._color.items[i], DEPTH: self._depth.items[j]}
        if self.info_latched:
            latched = self._latched_info
            items[INFO] = latched[1] if latched is not None else None  # never None here: _find_locked checked
        else:
            items[INFO] = self._info.items[k]
            self._counts["info_discarded"] += k
            self._info.drop_through(k)
        for t in self._color.stamps[:i]:  # classify before the depth frames go
            self._count_discarded_color(t)
        self._color.drop_through(i)
        self._counts["depth_discarded"] += j
        self._depth.drop_through(j)
        self._counts["consumed"] += 1
        self._last_stamp = tc
        return tc, items

    def _reset_locked(self) -> None:
        for t in self._color.stamps:
            self._count_discarded_color(t)
        self._counts["depth_discarded"] += len(self._depth)
        self._counts["info_discarded"] += len(self._info)
        self._color.clear()
        self._depth.clear()
        self._info.clear()
        self._last_stamp = None
        self._newest_seen.clear()
        self._evicted_depth.clear()
