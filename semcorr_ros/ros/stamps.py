"""Which time base pairs colour and depth: the messages' header stamps, or their arrival times.

Most drivers stamp colour and depth with the capture time, and header stamps pair them exactly. Some publish
zero stamps, or the same stamp on every frame; every set after the first then looks "not newer" and would be
dropped. :class:`StampSource` watches the stamps per stream and, in ``auto`` mode, switches the node to arrival
times (the middleware's source timestamp of each message: when the driver published it, on the system clock)
once a stream shows zero stamps or ``repeat_limit`` equal stamps in a row, saying why. Pure Python, no rclpy.

Modes:

- ``header``: always header stamps (frames with zero/constant stamps are then dropped as late, counted);
- ``arrival``: always arrival times (for drivers known to stamp badly; ``sync_slop`` then bounds the arrival
  gap between a colour and its depth frame);
- ``auto`` (default): header stamps until they are unusable, then arrival times until the synchroniser is
  rebuilt (a parameter change).
"""

from __future__ import annotations

from semcorr_ros.errors import ConfigError

__all__ = ["STAMP_SOURCES", "StampSource"]

STAMP_SOURCES = ("auto", "header", "arrival")


class StampSource:
    """Per-frame choice of the synchronisation stamp.

    Args:
        mode: one of :data:`STAMP_SOURCES`.
        repeat_limit: equal consecutive header stamps on one stream that make ``auto`` switch (>= 2).

    Raises:
        ConfigError: unknown mode or a repeat limit below 2.
    """

    def __init__(self, mode: str = "auto", repeat_limit: int = 3) -> None:
        if mode not in STAMP_SOURCES:
            raise ConfigError(f"stamp_source must be one of {list(STAMP_SOURCES)}, got {mode!r}")
        if repeat_limit < 2:
            raise ConfigError(f"repeat_limit must be >= 2, got {repeat_limit!r}")
        self.mode = mode
        self.repeat_limit = int(repeat_limit)
        self.use_arrival = mode == "arrival"
        #: why arrival times are used ('' while header stamps are)
        self.reason = "stamp_source is 'arrival'" if self.use_arrival else ""
        self._last: dict[str, float] = {}
        self._repeats: dict[str, int] = {}

    @property
    def active(self) -> str:
        """``header`` or ``arrival``: the time base in use now."""
        return "arrival" if self.use_arrival else "header"

    def stamp(self, stream: str, header_stamp: float, arrival: float) -> tuple[float, bool]:
        """The stamp to synchronise ``stream``'s frame with, and whether ``auto`` switched to arrival times now.

        Args:
            stream: stream name (``color``, ``depth``, ...).
            header_stamp: the message's header stamp, seconds.
            arrival: when it was sent or received, seconds (one clock for every stream).
        """
        if self.use_arrival:
            return arrival, False
        if self.mode == "auto":
            why = self._unusable(stream, header_stamp)
            if why:
                self.use_arrival, self.reason = True, why
                return arrival, True
        return header_stamp, False

    def _unusable(self, stream: str, t: float) -> str:
        if t == 0.0:
            return f"{stream} frames carry zero stamps"
        repeats = self._repeats.get(stream, 1) + 1 if self._last.get(stream) == t else 1
        self._last[stream], self._repeats[stream] = t, repeats
        if repeats >= self.repeat_limit:
            return f"{stream} frames carry the same stamp {t:.3f} {repeats} times in a row"
        return ""
