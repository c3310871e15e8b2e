"""semcorr bag-eval: bag validation errors, topic detection, offline mode (toy and real engine), outputs, no ground
truth, interruption, node-start failures (fake node executables), --help."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from semcorr_ros.bageval.bag import BagError, scan_bag
from semcorr_ros.cli import main

from _bag_eval_data import COLOR, DEPTH, INFO, write_bag, write_reference

OFFSETS = [(0, 0), (6, 4), (-8, 3)]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("bag_eval")
    return {"bag": write_bag(root / "bag", OFFSETS), "ref": write_reference(root / "ref"),
            "nogt": write_bag(root / "nogt", OFFSETS[:2], with_gt=False), "root": root}


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------------ bag checks

def test_scan_good_bag(data: dict[str, Path]) -> None:
    index = scan_bag(data["bag"])
    assert (index.color_topic, index.depth_topic, index.info_topic) == (COLOR, DEPTH, INFO)
    assert index.frames == 3 and len(index.ground_truth) == 3 and index.gt_bad == 0
    assert index.color_stamps == sorted(index.ground_truth)
    # the storage file inside the folder means the folder
    assert scan_bag(data["bag"] / "bag.mcap").path == data["bag"]


def test_sqlite3_bag(tmp_path: Path) -> None:
    index = scan_bag(write_bag(tmp_path / "b", OFFSETS[:2], storage="sqlite3"))
    assert index.frames == 2 and index.storage == "sqlite3"


@pytest.mark.parametrize("case", ["missing", "no_metadata", "plain_file", "unknown_plugin", "truncated", "garbled"])
def test_bad_bags_exit_1_and_write_nothing(case: str, data: dict[str, Path], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    if case == "missing":
        bag, expect = tmp_path / "nope", "bag not found"
    elif case == "no_metadata":
        bag = _copy(data["bag"], tmp_path / "b")
        (bag / "metadata.yaml").unlink()
        expect = "no metadata.yaml"
    elif case == "plain_file":
        bag = tmp_path / "notes.txt"
        bag.write_text("hello")
        expect = "not a rosbag2"
    elif case == "unknown_plugin":
        bag = _copy(data["bag"], tmp_path / "b")
        meta = bag / "metadata.yaml"
        meta.write_text(meta.read_text().replace("storage_identifier: mcap", "storage_identifier: foo"))
        expect = "foo"
    elif case == "truncated":
        bag = _copy(data["bag"], tmp_path / "b")
        f = bag / "bag.mcap"
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
        expect = "bag"
    else:
        bag = _copy(data["bag"], tmp_path / "b")
        f = bag / "bag.mcap"
        raw = f.read_bytes()
        f.write_bytes(raw[:1000] + bytes(200_000) + raw[201_000:])
        expect = "corrupt"
    out = tmp_path / "out"
    code, _, err = _run(["bag-eval", str(bag), "--reference", str(data["ref"]), "--out", str(out), "--mode",
                         "offline", "--no-progress"], capsys)
    assert code == 1, err
    assert "semcorr bag-eval: error:" in err and expect in err, err
    assert not out.exists()


def test_missing_colour_topic_lists_topics_and_flag_picks_it(tmp_path: Path) -> None:
    bag = write_bag(tmp_path / "b", OFFSETS[:1], color_topic="/cam/depth_like_colour")
    with pytest.raises(BagError) as exc:
        scan_bag(bag)
    msg = str(exc.value)
    assert "no colour topic" in msg and "--color-topic" in msg and DEPTH in msg and "/cam/depth_like_colour" in msg
    index = scan_bag(bag, color_topic="/cam/depth_like_colour", depth_topic=DEPTH)
    assert index.color_topic == "/cam/depth_like_colour" and index.frames == 1
    with pytest.raises(BagError, match="no such topic"):
        scan_bag(bag, color_topic="/nope", depth_topic=DEPTH)
    with pytest.raises(BagError, match="expected sensor_msgs/msg/CameraInfo"):
        scan_bag(bag, color_topic="/cam/depth_like_colour", depth_topic=DEPTH, info_topic=DEPTH)


def test_missing_depth_topic(tmp_path: Path) -> None:
    with pytest.raises(BagError) as exc:
        scan_bag(write_bag(tmp_path / "b", OFFSETS[:1], with_depth=False))
    assert "no depth topic" in str(exc.value) and "--depth-topic" in str(exc.value) and COLOR in str(exc.value)


def test_missing_camera_info(tmp_path: Path) -> None:
    with pytest.raises(BagError) as exc:
        scan_bag(write_bag(tmp_path / "b", OFFSETS[:1], with_info=False))
    assert "no camera info" in str(exc.value) and "--info-topic" in str(exc.value)


def test_bad_ground_truth_records_are_counted_and_skipped(tmp_path: Path) -> None:
    index = scan_bag(write_bag(tmp_path / "b", OFFSETS, bad_gt=1))
    assert index.gt_records == 3 and index.gt_bad == 1 and len(index.ground_truth) == 2
    assert "not JSON" in index.gt_bad_examples[0]


@pytest.mark.parametrize("case", ["missing", "bad_yaml", "bad_pose"])
def test_bad_reference_exit_1(case: str, data: dict[str, Path], tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    if case == "missing":
        ref, expect = tmp_path / "none.yaml", "reference file not found"
    else:
        ref = write_reference(tmp_path / "r")
        if case == "bad_yaml":
            ref.write_text("keypoints: [unclosed")
            expect = "not valid YAML"
        else:
            ref.write_text(ref.read_text().replace("object_pose:", "object_pose: [1, 2, 3]\nold_pose:"))
            expect = "object_pose"
    out = tmp_path / "out"
    code, _, err = _run(["bag-eval", str(data["bag"]), "--reference", str(ref), "--out", str(out), "--mode",
                         "offline", "--no-progress"], capsys)
    assert code == 1 and expect in err, err
    assert not out.exists()


def test_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bag-eval", "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--reference", "--mode", "--rate", "--color-topic", "--depth-topic", "--info-topic", "--no-launch",
                 "--out", "--no-progress", "--json", "--backbone"):
        assert flag in text
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "bag-eval" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------ offline, toy engine

@pytest.fixture
def toy_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    """``CorrespondenceEngine(cfg)`` in the CLI builds a tiny deterministic engine (no pretrained weights)."""
    import semcorr_ros.engine as engine_mod

    from _toy import ToySource

    real = engine_mod.CorrespondenceEngine
    monkeypatch.setattr(engine_mod, "CorrespondenceEngine",
                        lambda cfg: real(cfg.replace(device="cpu", kbc="off"), sources=[ToySource(128)]))


def _check_outputs(out: Path) -> dict:
    for name in ("bag_eval.json", "pck_curve.png", "latency_hist.png", "contact_sheet.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert not [p.name for p in out.iterdir() if p.name.startswith(".") or p.suffix == ".tmp"]
    with open(out / "contact_sheet.png", "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    return json.loads((out / "bag_eval.json").read_text())


def test_offline_toy_outputs_and_json_fields(data: dict[str, Path], tmp_path: Path, toy_engine: None,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    extra = tmp_path / "copy.json"
    code, stdout, err = _run(["bag-eval", str(data["bag"]), "--reference", str(data["ref"]), "--out", str(out),
                              "--mode", "offline", "--no-progress", "--json", str(extra)], capsys)
    assert code == 0, err
    r = _check_outputs(out)
    assert json.loads(extra.read_text())["metrics"] == r["metrics"]
    assert r["config"]["mode"] == "offline" and r["config"]["engine"]["sources"]
    assert r["command"].startswith("semcorr ") and r["bag"]["color_frames"] == 3
    m = r["metrics"]
    assert m["frames"]["with_output"] == 3 and m["frames"]["dropped_rate"] == 0.0
    for key in ("pck", "pck_valid", "pck_all_frames", "coverage", "pck_curve", "per_keypoint", "error_3d_mm",
                "pose", "latency_ms", "processing_ms"):
        assert key in m, key
    assert set(m["pck"]) == {"0.05", "0.1", "0.15"} and len(m["pck_curve"]["alpha"]) == 41
    assert m["latency_ms"]["median"] > 0 and m["latency_p95_ms"] > 0
    assert m["pose"]["reference_has_object_pose"] is True
    assert "PCK@0.05/0.1/0.15" in stdout and "contact_sheet.png" in stdout


def test_offline_toy_bag_without_ground_truth(data: dict[str, Path], tmp_path: Path, toy_engine: None,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, err = _run(["bag-eval", str(data["nogt"]), "--reference", str(data["ref"]), "--out", str(out),
                              "--mode", "offline", "--no-progress"], capsys)
    assert code == 0, err
    r = _check_outputs(out)
    assert r["metrics"]["has_ground_truth"] is False and "pck" not in r["metrics"]
    assert r["metrics"]["frames"]["with_output"] == 2 and r["metrics"]["latency_ms"]["n"] == 2
    assert "no ground truth in the bag" in stdout


def test_interrupted_while_writing_leaves_nothing(data: dict[str, Path], tmp_path: Path, toy_engine: None,
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import semcorr_ros.bageval.plots as plots

    out = tmp_path / "out"
    out.mkdir()
    (out / "bag_eval.json").write_text('{"old": true}\n')  # a previous run's results stay as they were

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(plots, "plot_latency_hist", interrupted)
    code, _, err = _run(["bag-eval", str(data["bag"]), "--reference", str(data["ref"]), "--out", str(out),
                         "--mode", "offline", "--no-progress"], capsys)
    assert code == 130 and "interrupted" in err
    assert sorted(p.name for p in out.iterdir()) == ["bag_eval.json"]
    assert json.loads((out / "bag_eval.json").read_text()) == {"old": True}


# ------------------------------------------------------------------------------------------------ offline, real engine

@pytest.mark.slow
def test_offline_real_engine_small(data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    code, stdout, err = _run(["bag-eval", str(data["bag"]), "--reference", str(data["ref"]), "--out", str(out),
                              "--mode", "offline", "--no-progress", "--device", "cpu", "--backbone", "effnet-lite2"],
                             capsys)
    assert code == 0, err
    m = _check_outputs(out)["metrics"]
    assert m["pck"]["0.1"] >= 0.8 and m["error_3d_mm"]["median"] < 20
    assert m["pose"]["validity_rate"] == 1.0 and m["pose"]["rotation_error_deg"]["median"] < 5
    assert m["pose"]["translation_error_mm"]["median"] < 20


# ------------------------------------------------------------------------------------------------ node start failures

def _fake_node(tmp_path: Path, body: str) -> Path:
    exe = tmp_path / "fake_node"
    exe.write_text(f"#!{sys.executable}\nimport os, sys, time\n{body}\n")
    exe.chmod(0o755)
    return exe


def test_node_that_exits_at_once(data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exe = _fake_node(tmp_path, "print('fake node: cannot start'); sys.exit(3)")
    out = tmp_path / "out"
    code, _, err = _run(["bag-eval", str(data["bag"]), "--reference", str(data["ref"]), "--out", str(out),
                         "--no-progress", "--node-executable", str(exe), "--ready-timeout", "30"], capsys)
    assert code == 1 and "exited with code 3" in err and "fake node: cannot start" in err, err
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_while_waiting_stops_the_child(sig: int, data: dict[str, Path], tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pid_file = tmp_path / "pid"
    exe = _fake_node(tmp_path, f"open({str(pid_file)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)")
    out = tmp_path / "out"
    stop = threading.Event()

    def interrupt_once_waiting() -> None:
        # the child exists (it wrote its pid) -> the command is starting DDS / waiting for readiness: interrupt then
        deadline = time.monotonic() + 60
        while not pid_file.exists() and not stop.is_set() and time.monotonic() < deadline:
            time.sleep(0.05)
        if not stop.wait(1.5):
            os.kill(os.getpid(), sig)

    # Ctrl-C as in an interactive shell: a job started in the background by a non-interactive shell (as CI runners
    # may do) inherits SIGINT ignored, and Python then keeps it ignored.
    previous_sigint = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Thread(target=interrupt_once_waiting, daemon=True)
    timer.start()
    try:
        code, _, err = _run(["bag-eval", str(data["bag"]), "--reference", str(data["ref"]), "--out", str(out),
                             "--no-progress", "--node-executable", str(exe), "--ready-timeout", "60"], capsys)
    finally:
        stop.set()
        signal.signal(signal.SIGINT, previous_sigint)
    assert code == 130, err
    pid = int(pid_file.read_text())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the fake node {pid} still runs")
    assert not out.exists() or not any(out.iterdir())


def test_node_not_ready_in_time(data: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    exe = _fake_node(tmp_path, "print('loading forever', flush=True); time.sleep(600)")
    code, _, err = _run(["bag-eval", str(data["bag"]), "--reference", str(data["ref"]), "--out",
                         str(tmp_path / "out"), "--no-progress", "--node-executable", str(exe), "--ready-timeout",
                         "2"], capsys)
    assert code == 1 and "not ready after 2 s" in err and "loading forever" in err, err


def test_node_parameters_follow_the_engine_flags(data: dict[str, Path]) -> None:
    import argparse

    from semcorr_ros.bageval.replay import node_parameters
    from semcorr_ros.cli.common import add_engine_arguments, engine_config
    from semcorr_ros.ros import params

    p = argparse.ArgumentParser()
    add_engine_arguments(p)
    cfg = engine_config(p.parse_args(["--kbc", "off", "--score-threshold", "0.3", "--no-depth-aware",
                                      "--backbone", "effnet-lite2", "--device", "cpu"]))
    values = node_parameters(cfg, data["ref"], torch_threads=2)
    assert values["kbc"] == "off" and values["score_threshold"] == 0.3 and values["depth_aware"] is False
    assert values["backbone"] == ["effnet-lite2"] and values["device"] == "cpu" and values["torch_threads"] == 2
    assert values["reference_file"] == str(data["ref"])
    assert set(values) <= set(params.PARAMETERS_BY_NAME)
    # the node builds the same engine configuration from them
    assert params.engine_config(values) == cfg
    assert np.isfinite(values["consensus_sigma"])


def test_installed_package_ships_the_fastdds_profile() -> None:
    import xml.etree.ElementTree as ET

    from semcorr_ros.bageval.replay import FASTDDS_PROFILE

    assert FASTDDS_PROFILE.is_file(), "install(DIRECTORY semcorr_ros/) must carry non-.py files"
    root = ET.parse(FASTDDS_PROFILE).getroot()
    assert "SHM" in ET.tostring(root, encoding="unicode")
