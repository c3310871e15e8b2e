"""StampSource: header stamps until they are unusable (zero / constant), then arrival times (auto mode)."""

import pytest

from semcorr_ros.errors import ConfigError
from semcorr_ros.ros.stamps import StampSource


def test_good_stamps_stay_header() -> None:
    s = StampSource("auto")
    for i in range(1, 50):
        t, switched = s.stamp("color", float(i), 1000.0 + i)
        assert t == float(i) and not switched
    # out-of-order frames are not a reason to switch (the synchroniser drops them as late)
    assert s.stamp("color", 10.0, 2000.0) == (10.0, False)
    assert s.active == "header" and s.reason == ""


def test_zero_stamp_switches_at_once() -> None:
    s = StampSource("auto")
    assert s.stamp("depth", 0.0, 5.0) == (5.0, True)
    assert s.active == "arrival" and "depth frames carry zero stamps" in s.reason
    assert s.stamp("color", 7.0, 6.0) == (6.0, False)  # every stream follows


def test_constant_stamps_switch_after_the_repeat_limit() -> None:
    s = StampSource("auto", repeat_limit=3)
    assert s.stamp("color", 4.0, 1.0) == (4.0, False)
    assert s.stamp("color", 4.0, 2.0) == (4.0, False)
    assert s.stamp("depth", 4.0, 2.1) == (4.0, False)  # per stream
    assert s.stamp("color", 4.0, 3.0) == (3.0, True)
    assert "3 times in a row" in s.reason


def test_fixed_modes() -> None:
    h = StampSource("header")
    assert [h.stamp("color", 0.0, 9.0) for _ in range(5)] == [(0.0, False)] * 5
    a = StampSource("arrival")
    assert a.stamp("color", 3.0, 9.0) == (9.0, False) and a.active == "arrival"
    with pytest.raises(ConfigError, match="auto"):
        StampSource("sometimes")
