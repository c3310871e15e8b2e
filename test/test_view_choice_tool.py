"""lab/dev/view_choice.py: the pooling of choice rules, and the message for a folder without scenes."""

from __future__ import annotations

from pathlib import Path

import pytest

from _tools import load_script  # noqa: E402  (test helper next to this file)


@pytest.fixture(scope="module")
def tool():
    return load_script("lab/dev/view_choice.py", "semcorr_view_choice_tool")


def _row(scene: str, a: float, b: float, pck: list[tuple[int, int]]) -> dict:
    return {"scene": scene, "cands": [{"s": a}, {"s": b}], "pck": pck}


def test_table_pools_correct_over_scored_keypoints_per_rule_and_category(tool):
    rows = [_row("mug", 1.0, 2.0, [(1, 4), (3, 4)]),      # s picks view 1 (3 of 4), the oracle too
            _row("mug", 5.0, 0.0, [(0, 2), (2, 2)]),      # s picks view 0 (0 of 2); the oracle view 1
            _row("lamp", 0.0, 1.0, [(2, 5), (1, 5)])]     # s picks view 1 (1 of 5); the oracle view 0
    tab = tool.table(rows)
    assert tab["s"] == {"all": round(4 / 11, 3), "lamp": 0.2, "mug": 0.5}
    assert tab["view 0"]["all"] == round(3 / 11, 3) and tab["view 1"]["all"] == round(6 / 11, 3)
    assert tab["oracle"] == {"all": round(7 / 11, 3), "lamp": 0.4, "mug": round(5 / 6, 3)}


def test_a_folder_without_reference_sets_says_how_to_make_them(tool, tmp_path: Path):
    with pytest.raises(SystemExit, match="reference_set.yaml"):
        tool.study(tmp_path)
