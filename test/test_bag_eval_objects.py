"""semcorr bag-eval on reference sets and objects files: pairing objects with the bag's ground truth, pooled and
per-object figures, per-view pose error, chosen-view counts, errors; offline with a toy engine on tiny synthetic
scenes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from semcorr_ros.bageval.metrics import FramePrediction, evaluate, evaluate_objects
from semcorr_ros.bageval.objects import EvalObject, EvalObjects, pair_ground_truth
from semcorr_ros.cli import main
from semcorr_ros.groundtruth import FrameGroundTruth

SMALL = ["--width", "160", "--height", "120", "--no-progress"]


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bag_eval_objects")
    out = {"set": root / "set", "pair": root / "pair"}
    assert main(["synth", str(out["set"]), "--frames", "3", "--seed", "1", "--orbit", "full",
                 "--reference-views", "2", *SMALL]) == 0
    assert main(["synth", str(out["pair"]), "--frames", "2", "--seed", "1", "--objects", "mug,bottle",
                 *SMALL]) == 0
    return out


@pytest.fixture
def toy_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """``CorrespondenceEngine(cfg)`` in the CLI builds a tiny deterministic engine (no pretrained weights)."""
    import semcorr_ros.engine as engine_mod

    from _toy import ToySource

    real = engine_mod.CorrespondenceEngine
    monkeypatch.setattr(engine_mod, "CorrespondenceEngine",
                        lambda cfg: real(cfg.replace(device="cpu", kbc="off"), sources=[ToySource(128)]))


def _eval(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(["bag-eval", *argv, "--mode", "offline", "--no-progress"])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow  # builds the module's two scenes (~3 s) and matches a 2-view set
def test_reference_set_offline(scenes: dict[str, Path], tmp_path: Path, toy_engine: None,
                               capsys: pytest.CaptureFixture[str]) -> None:
    scene = scenes["set"]
    code, stdout, err = _eval([str(scene / "bag"), "--reference", str(scene / "reference_set.yaml"),
                               "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "o" / "bag_eval.json").read_text())
    assert r["config"]["reference_kind"] == "set"
    [obj] = r["config"]["objects"]
    assert obj["object_id"] == "mug" and len(obj["views"]) == 2 and obj["ground_truth_instance"] == "mug_0001"
    assert obj["views_with_object_pose"] == obj["views"]
    m = r["metrics"]
    assert set(m["pck"]) == {"0.05", "0.1", "0.15"} and m["frames"]["with_output"] == 3
    po = m["per_object"]["mug"]
    assert sum(po["views"].values()) == 3 and set(po["views"]) <= set(obj["views"])
    # one object: the pooled figures are that object's
    assert m["pck"] == po["pck"] and m["scored_keypoints"]["with_output"] == po["scored_keypoints"]["with_output"]
    assert po["pose"]["reference_has_object_pose"] is True
    assert "object mug (ground truth mug_0001)" in stdout and "views chosen" in stdout
    for name in ("pck_curve.png", "latency_hist.png", "contact_sheet.png"):
        assert (tmp_path / "o" / name).stat().st_size > 0


def test_objects_file_offline_scores_each_object_and_pools(scenes: dict[str, Path], tmp_path: Path,
                                                           toy_engine: None,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    scene = scenes["pair"]
    code, _, err = _eval([str(scene / "bag"), "--reference", str(scene / "objects.yaml"), "--out", str(tmp_path / "o"),
                          "--json", str(tmp_path / "copy.json")], capsys)
    assert code == 0, err
    r = json.loads((tmp_path / "copy.json").read_text())
    assert r["config"]["reference_kind"] == "objects"
    m = r["metrics"]
    assert m["objects"] == ["mug_0001_ref", "bottle_0001_ref"]
    per = m["per_object"]
    assert [per[o]["ground_truth_instance"] for o in m["objects"]] == ["mug_0001", "bottle_0001"]
    n = [per[o]["scored_keypoints"]["with_output"] for o in m["objects"]]
    assert all(k > 0 for k in n) and m["scored_keypoints"]["with_output"] == sum(n)
    pooled = sum(per[o]["pck"]["0.1"] * k for o, k in zip(m["objects"], n)) / sum(n)
    assert m["pck"]["0.1"] == pytest.approx(pooled, abs=2e-4)
    assert m["frames"]["color"] == 2 and m["frames"]["with_ground_truth"] == 2
    assert all(k.split("/")[0] in m["objects"] for k in m["per_keypoint"])
    assert r["bag"]["gt_instances"] == {"mug_0001": 2, "bottle_0001": 2}
    assert not r["warnings"]


def test_single_view_of_a_several_object_bag_is_scored_against_the_first_object(
        scenes: dict[str, Path], tmp_path: Path, toy_engine: None, capsys: pytest.CaptureFixture[str]) -> None:
    scene = scenes["pair"]
    code, _, err = _eval([str(scene / "bag"), "--reference", str(scene / "mug" / "reference.yaml"),
                          "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    m = json.loads((tmp_path / "o" / "bag_eval.json").read_text())["metrics"]
    assert "per_object" not in m and m["keypoints"]["scored"]  # the single-view report, unchanged


def test_bad_sets_and_objects_files_exit_1(scenes: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    bag = str(scenes["set"] / "bag")
    missing_view = tmp_path / "missing_view.yaml"
    missing_view.write_text(yaml.safe_dump({"object_id": "m", "views": ["nowhere.yaml"]}))
    bad_pose = tmp_path / "bad_pose"
    bad_pose.mkdir()
    doc = yaml.safe_load((scenes["set"] / "reference.yaml").read_text())
    doc["image"] = str(scenes["set"] / "reference.png")
    doc["depth"] = str(scenes["set"] / "reference_depth.png")
    doc["object_pose"] = [[1, 0, 0], [0, 1, 0]]
    (bad_pose / "view.yaml").write_text(yaml.safe_dump(doc))
    (bad_pose / "set.yaml").write_text(yaml.safe_dump({"views": ["view.yaml"]}))
    both = tmp_path / "both.yaml"
    both.write_text(yaml.safe_dump({"views": ["a.yaml"], "objects": ["b.yaml"]}))
    for ref, msg in ((missing_view, "nowhere.yaml"), (bad_pose / "set.yaml", "object_pose"),
                     (both, "exactly one of"), (tmp_path / "absent.yaml", "absent.yaml")):
        out = tmp_path / f"out_{ref.stem}"
        code, _, err = _eval([bag, "--reference", str(ref), "--out", str(out)], capsys)
        assert code == 1 and "semcorr bag-eval: error:" in err and msg in err, err
        assert not (out / "bag_eval.json").exists()


# ------------------------------------------------------------------------------------------------ pure functions

def _gt(stamp: int, instance: str, xy: np.ndarray, pose: np.ndarray | None = None) -> FrameGroundTruth:
    k = len(xy)
    return FrameGroundTruth(stamp_ns=stamp, frame_index=stamp, category=instance.split("_")[0], instance=instance,
                            names=[f"k{i}" for i in range(k)], keypoints_2d=xy, visible=np.ones(k, bool),
                            keypoints_3d=np.ones((k, 3)), object_pose=np.eye(4) if pose is None else pose,
                            object_box=np.array([0.0, 0.0, 100.0, 100.0]), object_fraction=0.1)


def _pred(stamp: int, xy: np.ndarray, view: str | None = None, pose: np.ndarray | None = None) -> FramePrediction:
    k = len(xy)
    return FramePrediction(stamp_ns=stamp, names=[f"k{i}" for i in range(k)], xy=xy, valid=np.ones(k, bool),
                           score=np.ones(k), points3d=np.ones((k, 3)), has_point=np.ones(k, bool), pose=pose,
                           latency_s=0.01, processing_s=0.01, view_id=view)


def _rot_z(deg: float) -> np.ndarray:
    a = np.radians(deg)
    T = np.eye(4)
    T[:2, :2] = [[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]]
    return T


def test_evaluate_objects_pools_keypoints_and_uses_each_views_pose() -> None:
    stamps = [1, 2]
    xy = np.array([[10.0, 10.0], [50.0, 50.0], [80.0, 20.0], [30.0, 70.0]])
    off = xy + [[0, 0], [0, 0], [40, 0], [40, 0]]  # 2 of 4 right
    gt_pose = _rot_z(30)
    v1_pose = _rot_z(-60)  # the view's object_pose: the reference->live transform is rot_z(90)
    gts = {"a": {s: _gt(s, "a_0", xy, gt_pose) for s in stamps}, "b": {s: _gt(s, "b_0", xy[:2]) for s in stamps}}
    preds = {"a": {1: _pred(1, xy, "a_v1", _rot_z(90)), 2: _pred(2, off, "a_v0", _rot_z(90))},
             "b": {1: _pred(1, xy[:2]), 2: _pred(2, xy[:2])}}
    m = evaluate_objects(stamps, preds, gts, {"a": [f"k{i}" for i in range(4)], "b": ["k0", "k1"]},
                         {"a": {"a_v0": np.eye(4), "a_v1": v1_pose}, "b": {}})
    assert m["per_object"]["a"]["pck"]["0.1"] == 0.75 and m["per_object"]["b"]["pck"]["0.1"] == 1.0
    assert m["pck"]["0.1"] == round(10 / 12, 4) and m["scored_keypoints"]["with_output"] == 12
    assert m["per_object"]["a"]["views"] == {"a_v1": 1, "a_v0": 1}
    rot = [r.get("rot_err_deg") for r in m["per_object"]["a"]["per_frame"]]
    assert rot[0] == pytest.approx(0.0, abs=1e-6)  # against the chosen view v1's pose
    assert rot[1] == pytest.approx(60.0, abs=1e-6)  # frame 2 chose v0 (identity pose): 90 vs 30 degrees
    assert m["frames"]["with_output"] == 2 and m["frames"]["with_ground_truth"] == 2
    # an object without ground truth is listed, not scored, and leaves the pooled figures alone
    m2 = evaluate_objects(stamps, preds, {"a": gts["a"], "b": None}, {"a": [f"k{i}" for i in range(4)],
                                                                      "b": ["k0", "k1"]}, {})
    assert m2["pck"]["0.1"] == 0.75 and m2["per_object"]["b"]["has_ground_truth"] is False
    # evaluate without view poses is what it always was
    single = evaluate(stamps, preds["b"], gts["b"], ["k0", "k1"])
    assert single["pck"] == m["per_object"]["b"]["pck"]


def test_pair_ground_truth_rules() -> None:
    class Spec:
        def __init__(self, oid: str) -> None:
            self.object_id = oid

    def objs(*items: tuple[str, str | None, str | None]) -> EvalObjects:
        return EvalObjects("objects", [EvalObject(Spec(o), {}, inst, cat) for o, inst, cat in items])

    instances = {"mug_0001": "mug", "bottle_0001": "bottle", "mug_0001_2": "mug"}
    got, warn = pair_ground_truth(objs(("m", "mug_0001_2", None), ("b", None, "bottle"), ("x", None, "mug")),
                                  instances)
    assert got == {"m": "mug_0001_2", "b": "bottle_0001", "x": "mug_0001"} and not warn
    got, warn = pair_ground_truth(objs(("m", "mug_9", "lamp")), instances)
    assert got == {"m": None} and len(warn) == 2 and "mug_9" in warn[0] and "not scored" in warn[1]
    got, _ = pair_ground_truth(objs(("anything", None, None)), {"lamp_0002": "lamp"})
    assert got == {"anything": "lamp_0002"}  # one object, one instance
