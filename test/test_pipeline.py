"""The node's hand-over boxes and the converter's pacing (semcorr_ros.ros.pipeline), without ROS."""

from __future__ import annotations

import threading
import time

from semcorr_ros.ros.pipeline import LatestBox, Pacer


def test_box_replaces_and_returns_what_was_not_taken() -> None:
    box = LatestBox()
    assert box.put("a") is None
    assert box.put("b") == "a"  # "a" was never taken: the caller counts it as dropped
    assert box.full
    assert box.take(0) == "b"
    assert not box.full
    assert box.take(0.01) is None


def test_box_take_waits_for_a_put_from_another_thread() -> None:
    box = LatestBox()
    threading.Timer(0.05, box.put, args=("late",)).start()
    t0 = time.monotonic()
    assert box.take(2.0) == "late"
    assert time.monotonic() - t0 < 1.5


def test_closing_wakes_a_waiting_taker() -> None:
    box = LatestBox()
    got: list[object] = []
    taker = threading.Thread(target=lambda: got.append(box.take(10.0)))
    taker.start()
    time.sleep(0.05)
    box.close()
    taker.join(2.0)
    assert not taker.is_alive() and got == [None]


def test_clear_empties() -> None:
    box = LatestBox()
    box.put(1)
    assert box.clear() == 1 and box.clear() is None and box.take(0) is None


def test_pacer_is_due_at_once_while_the_engine_is_idle() -> None:
    p = Pacer(margin=0.0)
    assert p.due(now=10.0) == 10.0
    p.started(now=10.0)
    assert p.due(now=10.5) == 10.5  # no engine duration known yet: convert at once
    p.finished(now=10.1)
    assert p.due(now=11.0) == 11.0


def test_pacer_waits_for_the_expected_end_less_the_conversion() -> None:
    p = Pacer(margin=0.004)
    for start in (0.0, 1.0, 2.0):  # three engine calls of 100, 80, 90 ms: median 90 ms
        p.started(now=start)
        p.finished(now=start + {0.0: 0.1, 1.0: 0.08, 2.0: 0.09}[start])
    p.converted(0.006)
    p.started(now=5.0)
    assert abs(p.due(now=5.0) - (5.0 + 0.09 - 0.006 - 0.004)) < 1e-9


def test_pacer_wakes_the_converter_when_the_engine_finishes_early() -> None:
    p = Pacer(margin=0.0)
    p.started(now=0.0)
    p.finished(now=5.0)  # a slow first call: the next is expected to last 5 s
    p.started()
    stop = threading.Event()
    threading.Timer(0.1, p.finished).start()
    t0 = time.monotonic()
    p.wait_until_due(stop)
    assert time.monotonic() - t0 < 2.0


def test_pacer_wait_ends_on_stop() -> None:
    p = Pacer(margin=0.0)
    p.started(now=0.0)
    p.finished(now=60.0)
    p.started()
    stop = threading.Event()
    threading.Timer(0.1, stop.set).start()
    t0 = time.monotonic()
    p.wait_until_due(stop)
    assert time.monotonic() - t0 < 2.0
