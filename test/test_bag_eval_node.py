"""semcorr bag-eval in node mode: a real correspond_node child process, the bag replayed over real DDS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from semcorr_ros.cli import main

from _bag_eval_data import write_bag, write_reference

pytestmark = [pytest.mark.ros, pytest.mark.slow]


def test_node_mode_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # camera info with the first frame only (latched-style): the replay re-sends it with every colour frame
    bag = write_bag(tmp_path / "bag", [(0, 0), (6, 4), (-8, 3), (4, -6)], rate_hz=4.0, info_frames=1)
    ref = write_reference(tmp_path / "ref")
    out = tmp_path / "out"
    code = main(["bag-eval", str(bag), "--reference", str(ref), "--out", str(out), "--no-progress",
                 "--device", "cpu", "--backbone", "effnet-lite2", "--rate", "1.0"])
    stdout, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    for name in ("bag_eval.json", "pck_curve.png", "latency_hist.png", "contact_sheet.png", "node.log"):
        assert (out / name).is_file(), name
    r = json.loads((out / "bag_eval.json").read_text())
    run, m = r["run"], r["metrics"]
    assert run["launched"] and run["exit_code"] == 0 and not run["killed"], (out / "node.log").read_text()[-2000:]
    assert "Traceback" not in (out / "node.log").read_text()
    assert run["node_reference_id"] == "example_robot" and run["node_counters"]["frames_received"] >= 3
    assert run["node_counters"]["frames_rejected"] == 0 and run["camera_info_resent"] is True
    # at 4 Hz the node keeps up with most frames; the last one is always answered (latest-set policy)
    assert m["frames"]["with_output"] >= 2 and m["frames"]["dropped_rate"] <= 0.5
    assert m["pck"]["0.1"] >= 0.8 and m["error_3d_mm"]["median"] < 20
    assert m["pose"]["validity_rate"] == 1.0 and m["pose"]["rotation_error_deg"]["median"] < 5
    assert 0 < m["latency_ms"]["median"] < 5000 and m["latency_p95_ms"] >= m["latency_ms"]["median"]
    assert "node mode" in stdout and "dropped" in stdout


def test_no_launch_uses_a_running_node(tmp_path: Path, ros_env: dict[str, str],
                                       capsys: pytest.CaptureFixture[str]) -> None:
    """--no-launch: a node the user started (here: like `ros2 launch` would, remapped to the camera topics)."""
    import signal
    import subprocess
    import sys

    from _bag_eval_data import COLOR, DEPTH, INFO

    bag = write_bag(tmp_path / "bag", [(0, 0), (6, 4), (-8, 3)], rate_hz=3.0)
    ref = write_reference(tmp_path / "ref")
    launcher = Path(sys.prefix) / "lib" / "semcorr_ros" / "correspond_node"
    log = open(tmp_path / "user_node.log", "w")
    proc = subprocess.Popen([str(launcher), "--ros-args", "-r", "__node:=semcorr_user", "-p",
                             f"reference_file:={ref}", "-p", "backbone:=[effnet-lite2]", "-p", "device:=cpu",
                             "-r", f"color/image_raw:={COLOR}", "-r", f"aligned_depth_to_color/image_raw:={DEPTH}",
                             "-r", f"color/camera_info:={INFO}"], stdout=log, stderr=subprocess.STDOUT,
                            env=ros_env, cwd=tmp_path)
    try:
        out = tmp_path / "out"
        code = main(["bag-eval", str(bag), "--reference", str(ref), "--out", str(out), "--no-progress",
                     "--no-launch", "--node-name", "semcorr_user", "--ready-timeout", "120"])
        stdout, err = capsys.readouterr()
        assert code == 0, err[-3000:] + (tmp_path / "user_node.log").read_text()[-2000:]
        assert proc.poll() is None, "bag-eval must leave a node it did not start running"
        r = json.loads((out / "bag_eval.json").read_text())
        assert r["run"]["launched"] is False and not (out / "node.log").exists()
        assert r["metrics"]["frames"]["with_output"] >= 2 and r["metrics"]["pck"]["0.1"] >= 0.8
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def test_node_mode_objects_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An objects file of two 2-view sets: the node publishes ~/matches once per object, recorded per object."""
    scene = tmp_path / "pair"
    assert main(["synth", str(scene), "--frames", "3", "--objects", "mug,bottle", "--reference-views", "2",
                 "--width", "160", "--height", "120", "--no-progress"]) == 0
    capsys.readouterr()
    out = tmp_path / "out"
    code = main(["bag-eval", str(scene / "bag"), "--reference", str(scene / "objects.yaml"), "--out", str(out),
                 "--no-progress", "--device", "cpu", "--backbone", "effnet-lite2", "--rate", "0.25"])
    stdout, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    r = json.loads((out / "bag_eval.json").read_text())
    m = r["metrics"]
    assert r["config"]["reference_kind"] == "objects" and m["objects"] == ["mug", "bottle"]
    assert r["run"]["exit_code"] == 0 and "Traceback" not in (out / "node.log").read_text()
    answered = m["frames"]["with_output"]
    assert answered >= 2
    for oid in ("mug", "bottle"):
        po = m["per_object"][oid]
        assert po["frames"]["with_output"] == answered and sum(po["views"].values()) == answered
        assert po["ground_truth_instance"] == f"{oid}_0000" and po["scored_keypoints"]["with_output"] > 0
    assert m["scored_keypoints"]["with_output"] == sum(m["per_object"][o]["scored_keypoints"]["with_output"]
                                                       for o in ("mug", "bottle"))
    assert "object mug" in stdout and "object bottle" in stdout
