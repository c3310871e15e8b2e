"""bag-eval's temporal figures: re-acquisition after the object was hidden, the report block, its picture."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from semcorr_ros.bageval import temporal
from semcorr_ros.bageval.plots import plot_temporal


def test_reappearance_counts_visible_frames_until_found_again() -> None:
    #              found, hidden x2, back: 2 misses then found, missed, hidden, back: never found
    found = np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0], bool)
    visible = np.array([1, 0, 0, 1, 1, 1, 1, 0, 1, 1], bool)
    lo = temporal.track_losses(visible, found)
    assert lo["reappearances"] == 1  # the second hide followed a miss, not a found frame
    assert lo["frames_to_reacquire_after_hidden"] == [2] and lo["not_reacquired_after_hidden"] == 0
    found2 = np.array([1, 0, 0, 0, 0], bool)
    visible2 = np.array([1, 0, 1, 1, 1], bool)
    lo2 = temporal.track_losses(visible2, found2)
    assert lo2["reappearances"] == 1 and lo2["frames_to_reacquire_after_hidden"] == []
    assert lo2["not_reacquired_after_hidden"] == 1
    # found at once when back; hidden again while waiting keeps the count of visible frames only
    found3 = np.array([1, 0, 0, 0, 0, 1], bool)
    visible3 = np.array([1, 0, 1, 0, 1, 1], bool)
    assert temporal.track_losses(visible3, found3)["frames_to_reacquire_after_hidden"] == [2]


def _gt(xy, visible, box):
    return SimpleNamespace(names=["a", "b"], keypoints_2d=np.asarray(xy, float), visible=np.asarray(visible, bool),
                           object_box=np.asarray(box, float))


def test_sequence_report_and_picture(tmp_path) -> None:
    stamps = list(range(8))
    box = [0, 0, 100, 100]
    gts, preds = {}, {}
    for s in stamps:
        hidden = s in (3, 4)
        gts[s] = _gt([[10 + s, 10], [50, 50 + s]], [not hidden, not hidden], [np.nan] * 4 if hidden else box)
        off = 30.0 if s == 5 else 0.0  # back in view at 5 but wrong there, right again at 6
        preds[s] = SimpleNamespace(names=["a", "b"], xy=np.array([[10 + s + off, 10], [50 + off, 50 + s]]),
                                   valid=np.array([True, True]), track_status="lost" if s == 5 else "tracked")
    figures, plot = temporal.sequence_report(stamps + [3], preds, gts, ["b", "a", "zz"])
    assert figures["frames"] == 8 and plot["names"] == ["b", "a"]  # a repeated stamp once; unknown names left out
    assert figures["found_rate"] == round(5 / 6, 4)
    assert figures["losses"]["reappearances"] == 1 and figures["losses"]["frames_to_reacquire_after_hidden"] == [1]
    assert figures["track_states"] == {"tracked": 7, "lost": 1}
    out = plot_temporal([("mug", plot), ("again", plot)], tmp_path / "t.png", title="x")
    assert out.is_file() and out.stat().st_size > 10_000


def test_bag_eval_offline_tracking_on_an_occluded_scene(tmp_path, monkeypatch, capsys) -> None:
    """`semcorr synth --occlusion` + `semcorr bag-eval --mode offline --tracking on|off` (toy engine): the report's
    temporal block and picture; with tracking the track states and one encode per tracked frame."""
    import json

    import semcorr_ros.engine as engine_mod
    from semcorr_ros.cli import main

    from _toy import ToySource

    real = engine_mod.CorrespondenceEngine
    monkeypatch.setattr(engine_mod, "CorrespondenceEngine",
                        lambda cfg: real(cfg.replace(device="cpu"), sources=[ToySource(128)]))
    scene = tmp_path / "scene"
    assert main(["synth", str(scene), "--frames", "10", "--width", "160", "--height", "120", "--occlusion", "4:6",
                 "--no-progress"]) == 0
    reports = {}
    for mode in ("off", "on"):
        out = tmp_path / f"eval_{mode}"
        assert main(["bag-eval", str(scene / "bag"), "--reference", str(scene / "reference.yaml"), "--mode",
                     "offline", "--tracking", mode, "--out", str(out), "--no-progress"]) == 0
        reports[mode] = json.loads((out / "bag_eval.json").read_text())
        assert (out / "temporal.png").is_file()
        assert "temporal:" in capsys.readouterr().out
    for mode, r in reports.items():
        t = r["metrics"]["temporal"]
        assert t["frames"] == 10 and t["jitter"]["rms"] is not None and t["jitter_gt"]["rms"] is not None
        assert r["run"]["tracking"] == (mode == "on")
    on, off = reports["on"], reports["off"]
    assert "track_states" not in off["metrics"]["temporal"]
    states = on["metrics"]["temporal"]["track_states"]
    assert sum(states.values()) == 10 and set(states) <= {"tracked", "detecting", "lost", "reacquired"}
    if states.get("tracked"):
        assert on["run"]["encodes_per_tracked_frame"] == 1.0
    assert off["run"]["encodes_per_frame"] >= 1.0 and "encodes_per_tracked_frame" not in off["run"]
