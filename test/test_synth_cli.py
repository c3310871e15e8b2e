"""`semcorr synth`: output layout, the rosbag2 contents (read back with rosbags), determinism, atomicity, errors."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from semcorr_ros.cli import main
from semcorr_ros.groundtruth import GT_TOPIC, FrameGroundTruth
from semcorr_ros.lab.synth import START_NS
from semcorr_ros.lab.synth.bagio import COLOR_TOPIC, DEPTH_TOPIC, FRAME_ID, INFO_TOPIC

SMALL = ["--width", "160", "--height", "120", "--no-progress"]
TOPICS = {COLOR_TOPIC, DEPTH_TOPIC, INFO_TOPIC, GT_TOPIC}


def read_bag(path: Path) -> dict[str, list[tuple[int, bytes, object]]]:
    """topic -> [(log time, raw bytes, decoded message)] read with rosbags' AnyReader."""
    from rosbags.highlevel import AnyReader

    out: dict[str, list] = {}
    with AnyReader([path]) as reader:
        for conn, t, raw in reader.messages():
            out.setdefault(conn.topic, []).append((t, raw, reader.deserialize(raw, conn.msgtype)))
    return out


@pytest.fixture(scope="module")
def mcap_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "scene"
    assert main(["synth", str(out), "--frames", "4", "--seed", "3", "--rate", "10", *SMALL]) == 0
    return out


def test_layout_and_scene_json(mcap_out):
    names = {p.name for p in mcap_out.iterdir()}
    assert names == {"bag", "reference.yaml", "reference.png", "reference_depth.png", "scene.json", "preview.png"}
    assert (mcap_out / "bag" / "metadata.yaml").is_file() and (mcap_out / "bag" / "bag.mcap").is_file()
    doc = json.loads((mcap_out / "scene.json").read_text())
    assert doc["category"] == "mug" and doc["seed"] == 3 and doc["frames"] == 4 and doc["storage"] == "mcap"
    assert doc["instance"] == "mug_0003" and doc["reference"]["instance"] == "mug_0003_ref"
    assert set(doc["object_fraction"]) == {"min", "mean", "max"} and 0 < doc["object_fraction"]["mean"] < 0.5
    assert doc["command"][:3] == ["semcorr", "synth", str(mcap_out)]
    assert doc["topics"]["ground_truth"] == GT_TOPIC
    from PIL import Image

    with Image.open(mcap_out / "preview.png") as im:
        assert im.size[0] >= 640
    assert not list(mcap_out.parent.glob(".*partial*"))


def test_bag_reads_back_with_four_topics_and_equal_stamps(mcap_out):
    msgs = read_bag(mcap_out / "bag")
    assert set(msgs) == TOPICS
    assert all(len(v) == 4 for v in msgs.values())
    for i in range(4):
        stamp = START_NS + i * 100_000_000
        for topic in TOPICS:
            t, _, m = msgs[topic][i]
            assert t == stamp
            if topic != GT_TOPIC:
                assert m.header.stamp.sec * 1_000_000_000 + m.header.stamp.nanosec == stamp
                assert m.header.frame_id == FRAME_ID
        rgb, depth, info = msgs[COLOR_TOPIC][i][2], msgs[DEPTH_TOPIC][i][2], msgs[INFO_TOPIC][i][2]
        assert (rgb.encoding, rgb.width, rgb.height, rgb.step) == ("rgb8", 160, 120, 480)
        assert (depth.encoding, depth.step, depth.is_bigendian) == ("16UC1", 320, 0)
        d = np.frombuffer(depth.data.tobytes(), "<u2").reshape(120, 160)
        assert (d > 0).mean() > 0.9
        K = np.asarray(info.k).reshape(3, 3)
        assert abs(K[0, 0] - 615 * 160 / 640) < 1e-9 and info.distortion_model == "plumb_bob"
        gt = FrameGroundTruth.from_json(msgs[GT_TOPIC][i][2].data)
        assert gt.stamp_ns == stamp and gt.frame_index == i and gt.category == "mug"
        np.testing.assert_allclose(gt.keypoints_2d, (gt.keypoints_3d @ K.T)[:, :2] / gt.keypoints_3d[:, 2:],
                                   atol=0.01)
        vis = gt.visible
        xy = np.rint(gt.keypoints_2d[vis]).astype(int)
        assert (d[xy[:, 1], xy[:, 0]] > 0).mean() > 0.5


def test_reference_files_load(mcap_out):
    from semcorr_ros.reference import load_reference

    ref = load_reference(mcap_out / "reference.yaml")
    assert len(ref.names) >= 6 and ref.depth is not None and ref.intrinsics is not None
    doc = yaml.safe_load((mcap_out / "reference.yaml").read_text())
    assert np.asarray(doc["object_pose"]).shape == (4, 4) and doc["category"] == "mug"


def test_same_command_same_message_bytes_and_seed_changes_them(mcap_out, tmp_path):
    again = tmp_path / "again"
    assert main(["synth", str(again), "--frames", "4", "--seed", "3", "--rate", "10", *SMALL]) == 0
    a, b = read_bag(mcap_out / "bag"), read_bag(again / "bag")
    for topic in TOPICS:
        assert [raw for _, raw, _ in a[topic]] == [raw for _, raw, _ in b[topic]], topic
    for name in ("bag/bag.mcap", "bag/metadata.yaml", "reference.png", "reference_depth.png", "reference.yaml",
                 "preview.png"):
        assert (mcap_out / name).read_bytes() == (again / name).read_bytes(), name
    other = tmp_path / "other"
    assert main(["synth", str(other), "--frames", "4", "--seed", "4", "--rate", "10", *SMALL]) == 0
    c = read_bag(other / "bag")
    assert a[COLOR_TOPIC][0][1] != c[COLOR_TOPIC][0][1]


def test_sqlite3_storage_and_options(tmp_path):
    out = tmp_path / "sq"
    assert main(["synth", str(out), "--frames", "2", "--storage", "sqlite3", "--category", "lamp",
                 "--small-object", "--depth-noise", "--no-clutter", *SMALL]) == 0
    assert (out / "bag" / "bag.db3").is_file()
    msgs = read_bag(out / "bag")
    assert set(msgs) == TOPICS and all(len(v) == 2 for v in msgs.values())
    gts = [FrameGroundTruth.from_json(m.data) for _, _, m in msgs[GT_TOPIC]]
    assert all(g.category == "lamp" and g.object_fraction < 0.05 for g in gts)
    doc = json.loads((out / "scene.json").read_text())
    assert doc["small_object"] and doc["depth_noise"] and not doc["clutter"] and doc["storage"] == "sqlite3"


def test_category_all_writes_one_folder_per_category(tmp_path):
    out = tmp_path / "all"
    assert main(["synth", str(out), "--frames", "1", "--category", "all", *SMALL]) == 0
    index = json.loads((out / "scene.json").read_text())
    assert [s["folder"] for s in index["scenes"]] == ["mug", "bottle", "lamp"]
    for cat in ("mug", "bottle", "lamp"):
        assert (out / cat / "bag" / "metadata.yaml").is_file() and (out / cat / "reference.yaml").is_file()
        assert json.loads((out / cat / "scene.json").read_text())["category"] == cat


def test_bad_arguments_give_clear_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["synth", str(tmp_path / "x"), "--category", "cup"])
    assert e.value.code == 2 and "invalid choice: 'cup'" in capsys.readouterr().err
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["synth", str(out), "--frames", "1", *SMALL]) == 1
    err = capsys.readouterr().err
    assert "exists and is not empty" in err and "--overwrite" in err
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    assert main(["synth", str(tmp_path / "y"), "--frames", "0", *SMALL]) == 1
    assert "frames must be" in capsys.readouterr().err and not (tmp_path / "y").exists()
    # --overwrite replaces it; an existing empty folder is fine without it
    assert main(["synth", str(out), "--frames", "1", "--overwrite", *SMALL]) == 0
    assert not (out / "keep.txt").exists() and (out / "bag").is_dir()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["synth", str(empty), "--frames", "1", *SMALL]) == 0
    assert not list(tmp_path.glob(".*partial*")) and not list(tmp_path.glob(".*old*"))


def test_interrupted_run_leaves_nothing(tmp_path, monkeypatch):
    import semcorr_ros.lab.synth.output as output

    real = output.write_scene

    def interrupted(scene, folder, *a, **k):
        real(scene, folder, *a, **k)
        raise KeyboardInterrupt

    monkeypatch.setattr(output, "write_scene", interrupted)
    out = tmp_path / "never"
    assert main(["synth", str(out), "--frames", "1", *SMALL]) == 130
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["synth", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--small-object", "--depth-noise", "--frames", "--rate", "--seed", "--category", "--storage",
                 "--overwrite"):
        assert flag in text
