"""semcorr reference: capture from a bag, the editor driven by events, propose (toy engine), check, set."""

from __future__ import annotations

import json
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import yaml  # noqa: E402
from matplotlib.backend_bases import KeyEvent, MouseEvent  # noqa: E402

from semcorr_ros.authoring.document import read_draft  # noqa: E402
from semcorr_ros.authoring.editor import KeypointEditor  # noqa: E402
from semcorr_ros.cli import main  # noqa: E402
from semcorr_ros.errors import BadReferenceError  # noqa: E402
from semcorr_ros.reference import load_objects, load_reference, write_reference  # noqa: E402

from _bag_eval_data import write_bag  # noqa: E402


def _view(tmp_path, name="v", kps=None):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)
    names = list(kps) if kps else []
    xy = np.asarray(list(kps.values()), float) if kps else None
    return write_reference(tmp_path / f"{name}.yaml", img, xy, names, intrinsics=[100, 100, 40, 30])


def test_capture_from_bag_writes_unannotated_view(tmp_path, capsys):
    bag = write_bag(tmp_path / "bag", [(0, 0), (6, 3), (12, 0)])
    out = tmp_path / "refs" / "front.yaml"
    gt = tmp_path / "gt.json"
    assert main(["reference", "capture", str(out), "--bag", str(bag), "--frame", "1",
                 "--ground-truth-out", str(gt)]) == 0
    doc = yaml.safe_load(out.read_text())
    assert doc["keypoints"] == {} and doc["captured_from"]["frame"] == 1
    assert (out.parent / "front_depth.png").is_file() and len(doc["intrinsics"]) == 4
    with pytest.raises(BadReferenceError, match="no keypoints yet.*semcorr reference annotate"):
        load_reference(out)
    truth = json.loads(gt.read_text())
    assert truth
    assert main(["reference", "annotate", str(out), "--keypoints", str(gt)]) == 0
    ref = load_reference(out)
    assert ref.names == list(truth) and ref.depth is not None and np.isfinite(ref.depth).any()
    assert main(["reference", "capture", str(tmp_path / "x.yaml"), "--bag", str(bag), "--frame", "9"]) == 1
    assert "frame 9 is not in the bag: it has 3" in capsys.readouterr().err


def _mouse(fig, ax, name, x, y, button=1):
    sx, sy = ax.transData.transform((x, y))
    fig.canvas.callbacks.process(name, MouseEvent(name, fig.canvas, sx, sy, button=button))


def _key(fig, key):
    fig.canvas.callbacks.process("key_press_event", KeyEvent("key_press_event", fig.canvas, key))


def test_editor_driven_by_events(tmp_path):
    path = _view(tmp_path)
    fig = plt.figure(figsize=(4, 3))
    ed = KeypointEditor(fig, read_draft(path), pending=["handle", "rim"])
    fig.canvas.draw()
    ax = ed.ax
    _mouse(fig, ax, "button_press_event", 10, 10)          # place "handle"
    _mouse(fig, ax, "button_release_event", 10, 10)
    _mouse(fig, ax, "button_press_event", 50, 40)          # place "rim"
    _mouse(fig, ax, "button_release_event", 50, 40)
    _mouse(fig, ax, "button_press_event", 70, 20)          # place kp_2
    _mouse(fig, ax, "button_release_event", 70, 20)
    assert ed.draft.names == ["handle", "rim", "kp_2"]
    _mouse(fig, ax, "button_press_event", 10.3, 10.2)      # grab "handle" and drag it
    _mouse(fig, ax, "motion_notify_event", 20, 15)
    _mouse(fig, ax, "button_release_event", 20, 15)
    assert ed.selected == "handle"
    _key(fig, "n")
    for ch in "top":
        _key(fig, ch)
    _key(fig, "enter")                                     # "handle" -> "top"
    _mouse(fig, ax, "button_press_event", 70, 20, button=3)  # right click deletes kp_2
    _mouse(fig, ax, "button_press_event", 30, 50)          # a stray point ...
    _key(fig, "u")                                         # ... undone
    _key(fig, "s")
    ref = load_reference(path)
    assert ref.names == ["top", "rim"]
    np.testing.assert_allclose(ref.keypoints, [[20, 15], [50, 40]], atol=0.05)
    plt.close(fig)


class _ToyEngine:
    """Moves every keypoint by (+5, +2); the last one lands outside the image; scores descend."""

    def match_pair(self, src, kps, tgt):
        kps = np.asarray(kps, float) + [5, 2]
        kps[-1] = [-50, 10]
        k = len(kps)
        return SimpleNamespace(xy=kps, score=np.linspace(0.9, 0.1, k), valid=np.ones(k, bool))


def test_propose_writes_scores_and_uncertain(tmp_path):
    from semcorr_ros.authoring.propose import propose

    src = _view(tmp_path, "a", {"p": [10, 10], "q": [20, 20], "r": [30, 30], "s": [40, 40]})
    tgt = _view(tmp_path, "b")
    _, prop = propose(src, tgt, _ToyEngine(), threshold=0.5)
    doc = yaml.safe_load(tgt.read_text())
    assert list(doc["keypoints"]) == ["p", "q", "r"] and doc["keypoints"]["p"] == [15.0, 12.0]
    assert doc["proposal"]["uncertain"] == ["r"] and prop.written == [True, True, True, False]
    assert load_reference(tgt).names == ["p", "q", "r"]
    # correcting "r" in the editor drops its score: no longer uncertain
    fig = plt.figure(figsize=(4, 3))
    ed = KeypointEditor(fig, read_draft(tgt))
    fig.canvas.draw()
    assert ed.draft.scores["r"] == pytest.approx(0.37, abs=0.01)
    _mouse(fig, ed.ax, "button_press_event", 35, 32)
    _mouse(fig, ed.ax, "motion_notify_event", 33, 33)
    _mouse(fig, ed.ax, "button_release_event", 33, 33)
    ed.save()
    plt.close(fig)
    doc = yaml.safe_load(tgt.read_text())
    assert doc["keypoints"]["r"] == [33.0, 33.0] and doc["proposal"]["uncertain"] == []


def test_set_and_check_round_trip(tmp_path, capsys):
    a = _view(tmp_path, "a", {"p": [10, 10], "q": [20, 20]})
    b = _view(tmp_path, "b", {"q": [25, 21], "r": [30, 30]})
    out = tmp_path / "sets" / "mug.yaml"
    assert main(["reference", "set", str(out), "--object-id", "mug", str(a), str(b)]) == 0
    (obj,) = load_objects(out)
    assert obj.object_id == "mug" and obj.names == ["p", "q", "r"]
    sheet, js = tmp_path / "sheet.png", tmp_path / "c.json"
    assert main(["reference", "check", str(out), "--sheet", str(sheet), "--json", str(js)]) == 0
    assert sheet.stat().st_size > 1000
    views = json.loads(js.read_text())["objects"][0]["views"]
    assert views[0]["missing"] == ["r"] and views[1]["missing"] == ["p"]
    empty = _view(tmp_path, "empty")
    assert main(["reference", "check", str(empty)]) == 1
    assert "no keypoints yet" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("views: [missing.yaml]\n")
    assert main(["reference", "check", str(bad)]) == 1
    assert "missing.yaml" in capsys.readouterr().err
