"""Unit tests of semcorr_ros.ros.sync.LatestSetSync (pure Python, no ROS)."""

from __future__ import annotations

import math
import subprocess
import sys
import threading
import time

import pytest

from semcorr_ros.errors import ConfigError, InputError
from semcorr_ros.ros.sync import COLOR, DEPTH, INFO, STREAMS, LatestSetSync


def feed(sync: LatestSetSync, stream: str, *stamps: float) -> None:
    for t in stamps:
        sync.add(stream, t, f"{stream[0]}{t:g}")


def colour_accounted(sync: LatestSetSync) -> bool:
    s = sync.stats()
    return s["added_color"] == s["consumed"] + s["dropped"] + s["late"] + s["unpaired"] + s["buffered_color"]


def test_exact_pairing() -> None:
    sync = LatestSetSync(slop=0.01, buffer_size=5)
    assert sync.pop_latest() is None
    sync.add(COLOR, 1.0, "c")
    sync.add(DEPTH, 1.0, "d")
    assert sync.pop_latest() is None  # no camera info yet
    sync.add(INFO, 0.0, "i")
    assert sync.pop_latest() == (1.0, {COLOR: "c", DEPTH: "d", INFO: "i"})
    assert sync.pop_latest() is None
    assert (sync.consumed, sync.dropped, sync.unpaired) == (1, 0, 0)
    assert set(STREAMS) == {COLOR, DEPTH, INFO}


@pytest.mark.parametrize(
    ("depth_stamp", "paired"),
    [(1.004, True), (0.996, True), (1.005, True), (0.995, True), (1.0051, False), (0.9949, False)],
)
def test_slop_window(depth_stamp: float, paired: bool) -> None:
    sync = LatestSetSync(slop=0.005, buffer_size=5)
    feed(sync, INFO, 0.0)
    feed(sync, COLOR, 1.0)
    feed(sync, DEPTH, depth_stamp)
    result = sync.pop_latest()
    assert (result is not None) == paired
    if paired:
        assert result[0] == 1.0 and result[1][DEPTH] == f"d{depth_stamp:g}"


def test_nearest_depth_is_chosen() -> None:
    sync = LatestSetSync(slop=0.01, buffer_size=5)
    feed(sync, INFO, 0.0)
    feed(sync, DEPTH, 0.992, 1.003, 1.009)
    feed(sync, COLOR, 1.0)
    stamp, items = sync.pop_latest()
    assert items[DEPTH] == "d1.003"
    s = sync.stats()
    assert s["depth_discarded"] == 1 and s["buffered_depth"] == 1  # 0.992 discarded, 1.009 kept


def test_newest_set_wins_older_counted_dropped() -> None:
    sync = LatestSetSync(slop=0.005, buffer_size=10)
    feed(sync, INFO, 0.0)
    feed(sync, COLOR, 1.0, 2.0, 3.0)
    feed(sync, DEPTH, 1.0, 2.0, 3.0)
    stamp, items = sync.pop_latest()
    assert stamp == 3.0 and items == {COLOR: "c3", DEPTH: "d3", INFO: "i0"}
    assert (sync.dropped, sync.unpaired, sync.consumed) == (2, 0, 1)
    assert sync.pop_latest() is None
    s = sync.stats()
    assert s["buffered_color"] == 0 and s["buffered_depth"] == 0 and s["depth_discarded"] == 2
    assert colour_accounted(sync)


def test_incomplete_newest_frame_waits_for_its_depth() -> None:
    sync = LatestSetSync(slop=0.005, buffer_size=10)
    feed(sync, INFO, 0.0)
    feed(sync, COLOR, 1.0, 2.0, 3.0)
    feed(sync, DEPTH, 1.0, 2.0)
    assert sync.pop_latest()[0] == 2.0
    assert sync.dropped == 1 and sync.stats()["buffered_color"] == 1
    assert sync.pop_latest() is None
    feed(sync, DEPTH, 3.001)
    assert sync.pop_latest()[0] == 3.0
    assert colour_accounted(sync)


def test_unpaired_colour_frames() -> None:
    sync = LatestSetSync(slop=0.01, buffer_size=10)
    feed(sync, INFO, 0.0)
    feed(sync, COLOR, 1.0, 2.0, 3.0)
    feed(sync, DEPTH, 1.5, 3.0)
    assert sync.pop_latest()[0] == 3.0
    assert (sync.unpaired, sync.dropped) == (2, 0)
    assert colour_accounted(sync)


def test_out_of_order_and_late_frames() -> None:
    sync = LatestSetSync(slop=0.01, buffer_size=10)
    feed(sync, INFO, 0.0)
    feed(sync, COLOR, 2.0, 1.0)  # arrival order does not matter
    feed(sync, DEPTH, 1.0, 2.0)
    assert sync.pop_latest()[0] == 2.0 and sync.dropped == 1
    feed(sync, COLOR, 1.5)  # older than what was delivered: rejected and counted
    feed(sync, DEPTH, 1.5)
    assert sync.pop_latest() is None and sync.dropped == 1 and sync.late == 1
    assert sync.stats()["buffered_color"] == 0
    assert colour_accounted(sync)


def test_time_jump_back_resets() -> None:
    sync = LatestSetSync(slop=0.01, buffer_size=10, time_jump_reset=1.0)
    feed(sync, INFO, 0.0)
    feed(sync, COLOR, 100.0)
    feed(sync, DEPTH, 100.0)
    assert sync.pop_latest()[0] == 100.0
    feed(sync, COLOR, 100.5)  # buffered, then cleared by the jump
    feed(sync, COLOR, 1.0)  # bag looped
    feed(sync, DEPTH, 1.0)
    assert sync.pop_latest() == (1.0, {COLOR: "c1", DEPTH: "d1", INFO: "i0"})
    s = sync.stats()
    assert s["resets"] == 1 and s["unpaired"] == 1
    assert colour_accounted(sync)


def test_info_latched_uses_latest_regardless_of_stamp() -> None:
    sync = LatestSetSync(slop=0.01, buffer_size=5)
    assert sync.info_latched
    feed(sync, INFO, 0.0)
    feed(sync, INFO, 5.0)  # newest received wins, whatever the stamps
    feed(sync, COLOR, 1.0)
    feed(sync, DEPTH, 1.0)
    assert sync.pop_latest()[1][INFO] == "i5"
    feed(sync, COLOR, 2.0)
    feed(sync, DEPTH, 2.0)
    assert sync.pop_latest()[1][INFO] == "i5"  # latched info is reused, not consumed


def test_info_not_latched_needs_matching_stamp() -> None:
    sync = LatestSetSync(slop=0.01, buffer_size=5, info_latched=False)
    feed(sync, INFO, 0.0)
    feed(sync, COLOR, 1.0)
    feed(sync, DEPTH, 1.0)
    assert sync.pop_latest() is None
    feed(sync, INFO, 0.995)
    assert sync.pop_latest() == (1.0, {COLOR: "c1", DEPTH: "d1", INFO: "i0.995"})
    assert sync.stats()["info_discarded"] == 1 and sync.stats()["buffered_info"] == 0


def test_bounded_memory_under_10k_adds() -> None:
    sync = LatestSetSync(slop=0.005, buffer_size=8)
    for n in range(10_000):
        t = n * 0.033
        sync.add(COLOR, t, n)
        sync.add(DEPTH, t + 0.001, n)
        sync.add(INFO, t, n)
        s = sync.stats()
        assert s["buffered_color"] <= 8 and s["buffered_depth"] <= 8 and s["buffered_info"] <= 1
        if n % 1000 == 999:
            stamp, items = sync.pop_latest()
            assert items[COLOR] == n and items[DEPTH] == n
    s = sync.stats()
    assert s["added_color"] == 10_000 and s["consumed"] == 10
    assert s["unpaired"] == 0 and s["dropped"] == 10_000 - 10 - s["buffered_color"]
    assert colour_accounted(sync)


def test_overflow_counts_complete_and_unpaired_frames() -> None:
    sync = LatestSetSync(slop=0.005, buffer_size=2)
    feed(sync, DEPTH, 1.0)
    feed(sync, COLOR, 1.0, 2.0, 3.0)  # 1.0 (had depth) pushed out -> dropped
    feed(sync, COLOR, 4.0)  # 2.0 (no depth) pushed out -> unpaired
    assert (sync.dropped, sync.unpaired) == (1, 1)
    feed(sync, DEPTH, 2.0, 3.0)  # depth 1.0 pushed out of its buffer
    assert sync.stats()["depth_discarded"] == 1
    assert colour_accounted(sync)


def test_invalid_arguments() -> None:
    for kwargs in ({"slop": -0.1, "buffer_size": 3}, {"slop": math.nan, "buffer_size": 3},
                   {"slop": 0.01, "buffer_size": 0}, {"slop": 0.01, "buffer_size": 2.5},
                   {"slop": 0.01, "buffer_size": 3, "time_jump_reset": 0}):
        with pytest.raises(ConfigError):
            LatestSetSync(**kwargs)
    sync = LatestSetSync(slop=0.01, buffer_size=3)
    with pytest.raises(InputError, match="color, depth, info"):
        sync.add("colour", 1.0, None)
    with pytest.raises(InputError, match="finite"):
        sync.add(COLOR, math.inf, None)
    with pytest.raises(InputError, match="number"):
        sync.add(COLOR, "soon", None)


def test_wait_for_set_times_out() -> None:
    sync = LatestSetSync(slop=0.01, buffer_size=3)
    feed(sync, COLOR, 1.0)  # incomplete
    t0 = time.monotonic()
    assert sync.wait_for_set(timeout=0.1) is None
    assert 0.09 <= time.monotonic() - t0 < 2.0
    assert sync.wait_for_set(timeout=0) is None


def test_wait_for_set_wakes_on_complete_set_and_close() -> None:
    sync = LatestSetSync(slop=0.01, buffer_size=3)

    def producer() -> None:
        time.sleep(0.05)
        feed(sync, INFO, 0.0)
        feed(sync, COLOR, 1.0)
        feed(sync, DEPTH, 1.0)

    thread = threading.Thread(target=producer)
    t0 = time.monotonic()
    thread.start()
    result = sync.wait_for_set(timeout=10.0)
    thread.join()
    assert result is not None and result[0] == 1.0 and time.monotonic() - t0 < 5.0

    closer = threading.Timer(0.05, sync.close)
    closer.start()
    t0 = time.monotonic()
    assert sync.wait_for_set(timeout=None) is None  # close() wakes an unbounded wait
    assert time.monotonic() - t0 < 5.0 and sync.closed
    closer.join()


def test_thread_safety_producers_and_consumer() -> None:
    n_frames, slop = 3000, 0.004
    sync = LatestSetSync(slop=slop, buffer_size=6)
    received: list[tuple[float, dict]] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def produce(stream: str, offset: float) -> None:
        try:
            for n in range(n_frames):
                t = n * 0.01 + offset
                sync.add(stream, t, (stream, n, t))
                if n % 50 == 0:
                    time.sleep(0)  # let the other threads interleave
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def consume() -> None:
        try:
            while not done.is_set():
                result = sync.wait_for_set(timeout=0.05)
                if result is not None:
                    received.append(result)
            while (result := sync.pop_latest()) is not None:
                received.append(result)
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    consumer = threading.Thread(target=consume)
    producers = [threading.Thread(target=produce, args=args)
                 for args in ((INFO, 0.0), (COLOR, 0.0), (DEPTH, 0.002))]
    consumer.start()
    for p in producers:
        p.start()
    for p in producers:
        p.join()
    done.set()
    consumer.join(timeout=30)
    assert not consumer.is_alive() and not errors
    assert received, "the consumer got no set at all"
    stamps = [stamp for stamp, _ in received]
    assert stamps == sorted(stamps) and len(set(stamps)) == len(stamps)
    for stamp, items in received:
        assert items[COLOR][2] == stamp and abs(items[DEPTH][2] - stamp) <= slop + 1e-9
        assert items[INFO][0] == INFO
    s = sync.stats()
    assert s["consumed"] == len(received) and s["added_color"] == n_frames
    assert colour_accounted(sync)


def test_sync_module_needs_no_ros(tmp_path) -> None:
    code = ("import sys, semcorr_ros.ros.sync; "
            "bad = [m for m in ('rclpy', 'sensor_msgs', 'std_msgs') if m in sys.modules]; "
            "sys.exit(repr(bad) if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_slow_consumer_counts_shed_frames_as_dropped_not_unpaired():
    # Depth arrives just before its colour frame; nobody consumes: both buffers overflow. Every colour frame had
    # a partner, so the shed frames are "dropped", even when the partner depth frame left its buffer first.
    s = LatestSetSync(slop=0.005, buffer_size=3)
    s.add(INFO, 0.0, "info")
    for i in range(20):
        t = i / 30.0
        s.add(DEPTH, t - 0.001, f"d{i}")
        s.add(COLOR, t, f"c{i}")
    stamp, items = s.pop_latest()
    assert items[COLOR] == "c19"
    assert s.unpaired == 0 and s.dropped == 19 and s.consumed == 1


def test_colour_without_any_depth_is_still_unpaired():
    s = LatestSetSync(slop=0.005, buffer_size=3)
    s.add(INFO, 0.0, "info")
    for i in range(10):
        s.add(DEPTH, i / 30.0 + 0.015, f"d{i}")   # always 15 ms off: never within the slop
        s.add(COLOR, i / 30.0, f"c{i}")
    assert s.pop_latest() is None
    assert s.unpaired == 7 and s.dropped == 0
