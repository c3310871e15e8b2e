"""Node statistics (rate, latency percentiles, dropped and rejected frames) and the /diagnostics message.

:class:`FrameStats` is thread-safe: the inference thread records published and rejected frames, the executor
thread takes snapshots. Its memory is bounded (fixed-size windows).
"""

from __future__ import annotations

import bisect
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from std_msgs.msg import Header

__all__ = ["FrameStats", "KindThrottle", "StatsSnapshot", "SyncAccounting", "diagnostic_array", "loss_reasons",
           "status_level"]


@dataclass
class StatsSnapshot:
    """A consistent copy of the statistics.

    Latencies and processing times are seconds over the last ``window`` published frames (NaN when none);
    ``rate_hz`` is the publish rate over the last ``rate_window_s`` seconds.
    """

    published: int
    rejected: int
    rate_hz: float
    latency_p50: float
    latency_p95: float
    latency_max: float
    processing_p50: float
    last_rejection: str
    last_published_age: float  # seconds since the last publication (inf when none)
    #: per class of rejection (``color``, ``depth``, ``frame_id``, ``reference``, ``engine_error``...):
    #: (frames, the last message of that class)
    by_kind: dict[str, tuple[int, str]]


class FrameStats:
    """Counters and rolling windows of the node (thread-safe, bounded memory).

    Args:
        window: number of recent frames kept for the latency/processing percentiles.
        rate_window_s: the publish rate is measured over this many recent seconds.
    """

    def __init__(self, window: int = 300, rate_window_s: float = 5.0) -> None:
        self._lock = threading.Lock()
        self._latency: deque[float] = deque(maxlen=window)
        self._processing: deque[float] = deque(maxlen=window)
        self._published_at: deque[float] = deque(maxlen=max(window, 10))
        self._rate_window_s = float(rate_window_s)
        self.published = 0
        self.rejected = 0
        self.last_rejection = ""
        self._by_kind: dict[str, tuple[int, str]] = {}

    def record_published(self, latency: float, processing: float, now: float | None = None) -> None:
        """One frame published ``latency`` s after its stamp, after ``processing`` s in the engine."""
        with self._lock:
            self.published += 1
            self._latency.append(float(latency))
            self._processing.append(float(processing))
            self._published_at.append(time.monotonic() if now is None else float(now))

    def record_rejected(self, reason: str, count: int = 1, kind: str = "other") -> None:
        """``count`` frames rejected for ``reason`` (bad input, no reference, no camera info, unpaired...),
        counted under the class ``kind``."""
        with self._lock:
            self.rejected += int(count)
            self.last_rejection = str(reason)
            n, _ = self._by_kind.get(kind, (0, ""))
            if kind in self._by_kind or len(self._by_kind) < 64:  # bounded: kinds are a small fixed set
                self._by_kind[kind] = (n + int(count), str(reason))

    def snapshot(self, now: float | None = None) -> StatsSnapshot:
        now = time.monotonic() if now is None else float(now)
        with self._lock:
            lat = np.asarray(self._latency, dtype=np.float64)
            proc = np.asarray(self._processing, dtype=np.float64)
            times = [t for t in self._published_at if now - t <= self._rate_window_s]
            last = self._published_at[-1] if self._published_at else None
            published, rejected, reason = self.published, self.rejected, self.last_rejection
            by_kind = dict(self._by_kind)
        if len(times) >= 2 and times[-1] > times[0]:
            rate = (len(times) - 1) / (times[-1] - times[0])  # 0 once nothing was published for a window
        else:
            rate = 0.0
        p50, p95, pmax = (np.percentile(lat, [50, 95, 100]) if lat.size else (np.nan, np.nan, np.nan))
        return StatsSnapshot(published=published, rejected=rejected, rate_hz=float(rate), latency_p50=float(p50),
                             latency_p95=float(p95), latency_max=float(pmax),
                             processing_p50=float(np.median(proc)) if proc.size else float("nan"),
                             last_rejection=reason, last_published_age=(now - last) if last is not None else np.inf,
                             by_kind=by_kind)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if not np.isfinite(value) else f"{value:.4g}"
    return str(value)


def diagnostic_array(header: Header, name: str, hardware_id: str, level: bytes | int, message: str,
                     values: dict[str, Any]) -> DiagnosticArray:
    """One :class:`DiagnosticStatus` (``level``: ``DiagnosticStatus.OK/WARN/ERROR/STALE``) with ``values``
    as key/value strings (floats with 4 significant digits)."""
    if not isinstance(level, bytes):
        level = bytes([int(level)])
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=str(k), value=_fmt(v)) for k, v in values.items()])
    return DiagnosticArray(header=header, status=[status])


def status_level(state: str, snap: StatsSnapshot, period: float) -> tuple[bytes, str]:
    """Level and one-line message for the node's ``state`` (``loading``, ``ready``, ``paused``,
    ``no_reference``, ``error``) and statistics."""
    if state == "error":
        return DiagnosticStatus.ERROR, "inference stopped (fatal_error says why; the process exits with code 1)"
    if state == "loading":
        return DiagnosticStatus.WARN, "loading the model"
    if state == "no_reference":
        return DiagnosticStatus.ERROR, "no active reference"
    if state == "paused":
        return DiagnosticStatus.OK, "paused (parameter enabled is false): frames are dropped"
    if snap.published == 0 or snap.last_published_age > max(5.0, 3 * period):
        why = f"; last rejection: {snap.last_rejection}" if snap.last_rejection else ""
        return DiagnosticStatus.WARN, f"no frames published recently{why}"
    return (DiagnosticStatus.OK,
            f"{snap.rate_hz:.1f} Hz, latency p50 {snap.latency_p50 * 1e3:.0f} ms, p95 {snap.latency_p95 * 1e3:.0f} ms")


def loss_reasons(sync: dict[str, int], snap: StatsSnapshot, shed: int, disabled: int,
                 time_jump_reset: float) -> dict[str, str]:
    """One ``"<count>: <reason>"`` diagnostics value per class of dropped or rejected frames.

    Args:
        sync: lifetime synchroniser counters (``dropped``, ``late``, ``resets``).
        snap: the node's statistics (rejections per class with their last message).
        shed: unpaired discards caused by load (counted as superseded).
        disabled: frames received while inference was paused.
        time_jump_reset: the node's ``sync_time_jump_reset``, seconds.
    """
    out = {
        "dropped.superseded": f"{sync.get('dropped', 0) + shed}: a newer set arrived while the engine was busy "
                              "(the node is slower than the camera)",
        "dropped.late": f"{sync.get('late', 0)}: stamp not newer than the last processed frame (out of order, or "
                        "zero/constant stamps)",
        "dropped.disabled": f"{disabled}: inference paused (enabled = false)",
        "dropped.time_jump": f"{sync.get('resets', 0)}: buffers cleared after a stamp jumped back by more than "
                             f"sync_time_jump_reset={time_jump_reset:g} s",
    }
    out.update({f"rejected.{kind}": f"{n}: {last}" for kind, (n, last) in sorted(snap.by_kind.items())})
    return out


class SyncAccounting:
    """Lifetime counters of the node's synchroniser(s) and the meaning of its "unpaired" colour frames.

    The synchroniser is rebuilt when its parameters change: :meth:`retire` keeps the counters of the old one.
    A colour frame discarded without a depth partner within the slop is "unpaired". That happens for two
    reasons, told apart here from the stamps seen recently (:meth:`note`, bounded windows):

    - load shedding: the node is slower than the camera and the partner depth frame, which arrived first, left
      its full buffer first. Recent colour stamps do have depth partners (or sets keep forming): the frames are
      counted as dropped (:attr:`shed`);
    - stamps that never pair (wrong slop, unsynchronised clocks, no depth at all): no recent colour stamp has a
      depth stamp within the slop and no set formed: :meth:`update` returns them so the node rejects them.
    """

    def __init__(self, window: int = 60) -> None:
        self._base: Counter[str] = Counter()
        self._color: deque[float] = deque(maxlen=window)
        self._depth: deque[float] = deque(maxlen=2 * window)
        self._unpaired_seen = 0
        self._consumed_seen = 0
        self.shed = 0
        self.never_paired = 0

    def note(self, stream: str, stamp: float) -> None:
        """Record the stamp of an arriving ``color`` or ``depth`` frame (other streams are ignored)."""
        if stream == "color":
            self._color.append(stamp)
        elif stream == "depth":
            self._depth.append(stamp)

    def pairs_recently(self, slop: float, horizon: float = 1.0) -> bool:
        """Whether a colour stamp of the last ``horizon`` seconds (of stamps) has a depth stamp within ``slop``."""
        depth, color = sorted(self._depth), list(self._color)
        newest = max(color, default=0.0)
        for t in color:
            if t < newest - horizon:
                continue
            i = bisect.bisect_left(depth, t)
            if any(0 <= j < len(depth) and abs(depth[j] - t) <= slop + 1e-9 for j in (i - 1, i)):
                return True
        return False

    def retire(self, stats: dict[str, int]) -> None:
        """Add the final counters of a synchroniser that is being replaced."""
        self._base.update({k: v for k, v in stats.items() if not k.startswith("buffered")})

    def totals(self, current: dict[str, int]) -> dict[str, int]:
        """Lifetime counters given the current synchroniser's :meth:`LatestSetSync.stats`."""
        total = Counter(self._base)
        total.update({k: v for k, v in current.items() if not k.startswith("buffered")})
        return {**dict(total), **{k: v for k, v in current.items() if k.startswith("buffered")}}

    def update(self, totals: dict[str, int], slop: float) -> int:
        """Classify the unpaired frames since the last call; return how many never paired."""
        unpaired, consumed = totals.get("unpaired", 0), totals.get("consumed", 0)
        new, formed = unpaired - self._unpaired_seen, consumed - self._consumed_seen
        self._unpaired_seen, self._consumed_seen = unpaired, consumed
        if new <= 0:
            return 0
        if formed > 0 or self.pairs_recently(slop):
            self.shed += new
            return 0
        self.never_paired += new
        return new


class KindThrottle:
    """Rate limit for log messages per *kind* (the first characters of a message, digits ignored).

    :meth:`allow` returns None when a message of that kind was let through less than ``period`` seconds ago
    (and counts it), else the number of messages of that kind suppressed since the last one let through.
    """

    def __init__(self, period: float = 5.0, key_length: int = 32) -> None:
        self.period = float(period)
        self._key_length = key_length
        self._lock = threading.Lock()
        self._last: dict[str, tuple[float, int]] = {}

    def allow(self, message: str, count: int = 1, now: float | None = None) -> int | None:
        kind = "".join(ch for ch in message[: self._key_length] if not ch.isdigit())
        now = time.monotonic() if now is None else float(now)
        with self._lock:
            last, suppressed = self._last.get(kind, (-float("inf"), 0))
            if now - last < self.period:
                self._last[kind] = (last, suppressed + count)
                return None
            if len(self._last) > 1000:  # bounded memory
                self._last.clear()
            self._last[kind] = (now, 0)
        return suppressed
