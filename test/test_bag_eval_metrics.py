"""bag-eval metrics on hand-made predictions: exact PCK, coverage, 3D error, pose error of a known rotation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semcorr_ros.bageval.metrics import FramePrediction, evaluate, pose_errors, rotation_error_deg
from semcorr_ros.groundtruth import FrameGroundTruth

NAMES = ["a", "b", "c", "d"]
GT_XY = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0], [40.0, 40.0]])
GT_3D = np.array([[0.0, 0.0, 1.0], [0.1, 0.0, 1.0], [0.0, 0.1, 1.0], [0.1, 0.1, 1.0]])


def _rz(deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])


def _T(R: np.ndarray, t: list[float]) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return T


def _gt(stamp: int, pose: np.ndarray | None = None) -> FrameGroundTruth:
    # object box 100 x 50 px: PCK thresholds are alpha * 100 px
    return FrameGroundTruth(stamp_ns=stamp, frame_index=stamp, category="toy", instance="toy_0", names=NAMES,
                            keypoints_2d=GT_XY.copy(), visible=np.array([True, True, True, False]),
                            keypoints_3d=GT_3D.copy(), object_pose=np.eye(4) if pose is None else pose,
                            object_box=np.array([0.0, 0.0, 100.0, 50.0]), object_fraction=0.1)


def _pred(stamp: int, pose: np.ndarray | None = None, latency: float = 0.1) -> FramePrediction:
    xy = GT_XY + np.array([[4.0, 0], [8.0, 0], [0, 0], [50.0, 50.0]])  # 0.04, 0.08 of the box size
    pts = GT_3D + np.array([[0.003, 0.004, 0], [0, 0, 0.010], [0, 0, 0], [0, 0, 0]])  # 5 mm, 10 mm
    return FramePrediction(stamp_ns=stamp, names=list(NAMES), xy=xy, valid=np.array([True, True, False, True]),
                           score=np.array([0.9, 0.8, 0.1, 0.9]), points3d=pts,
                           has_point=np.array([True, True, False, True]), pose=pose, latency_s=latency,
                           processing_s=0.05)


def test_pck_coverage_and_3d_error_exact() -> None:
    stamps = [1, 2]
    gt = {1: _gt(1), 2: _gt(2)}
    preds = {1: _pred(1)}  # frame 2 dropped
    m = evaluate(stamps, preds, gt, NAMES)
    assert m["frames"]["dropped"] == 1 and m["frames"]["dropped_rate"] == 0.5
    assert m["frames"]["with_output"] == 1 and m["frames"]["with_ground_truth"] == 2
    # visible: a, b, c; c invalid -> wrong; d not visible -> not scored
    assert m["pck"] == {"0.05": pytest.approx(1 / 3, abs=1e-4), "0.1": pytest.approx(2 / 3, abs=1e-4),
                        "0.15": pytest.approx(2 / 3, abs=1e-4)}
    assert m["pck_valid"] == {"0.05": 0.5, "0.1": 1.0, "0.15": 1.0}
    assert m["coverage"] == pytest.approx(2 / 3, abs=1e-4)
    # the dropped frame's 3 visible keypoints count as wrong
    assert m["pck_all_frames"]["0.1"] == pytest.approx(2 / 6, abs=1e-4)
    assert m["error_3d_mm"]["n"] == 2
    assert m["error_3d_mm"]["median"] == pytest.approx(7.5) and m["error_3d_mm"]["mean"] == pytest.approx(7.5)
    kp = m["per_keypoint"]
    assert kp["a"]["pck@0.05"] == 1.0 and kp["b"]["pck@0.05"] == 0.0 and kp["b"]["pck@0.1"] == 1.0
    assert kp["c"]["pck@0.1"] == 0.0 and kp["c"]["coverage"] == 0.0 and kp["d"]["scored"] == 0
    assert kp["a"]["error_3d_mm_median"] == pytest.approx(5.0)
    curve = m["pck_curve"]
    assert curve["alpha"][0] == 0.0 and curve["alpha"][-1] == pytest.approx(0.2)
    assert curve["pck"][0] == 0.0 and curve["pck"][-1] == pytest.approx(2 / 3, abs=1e-4)
    assert m["latency_ms"]["median"] == pytest.approx(100.0)
    assert m["pose_validity_rate"] == 0.0 and m["pose"]["rotation_error_deg"]["n"] == 0


def test_missing_keypoint_in_output_counts_as_wrong() -> None:
    p = _pred(1)
    p.names, p.xy, p.valid = p.names[:1], p.xy[:1], p.valid[:1]  # only 'a' answered
    p.points3d, p.has_point, p.score = p.points3d[:1], p.has_point[:1], p.score[:1]
    m = evaluate([1], {1: p}, {1: _gt(1)}, NAMES)
    assert m["pck"]["0.15"] == pytest.approx(1 / 3, abs=1e-4)


def test_reference_names_limit_the_scored_keypoints() -> None:
    m = evaluate([1], {1: _pred(1)}, {1: _gt(1)}, ["a", "b", "zz"])
    assert m["keypoints"]["scored"] == ["a", "b"] and m["keypoints"]["reference_only"] == ["zz"]
    assert m["pck"]["0.1"] == 1.0


def test_pose_error_of_a_known_rotation() -> None:
    ref_pose = _T(_rz(30.0), [0.1, 0.0, 0.5])
    frame_pose = _T(_rz(50.0), [0.0, 0.2, 0.8])
    truth = frame_pose @ np.linalg.inv(ref_pose)
    # prediction: 10 degrees more about x, translation 20 mm off along y
    c, s = math.cos(math.radians(10)), math.sin(math.radians(10))
    Rx = np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    pred = _T(Rx @ truth[:3, :3], list(truth[:3, 3] + [0, 0.02, 0]))
    assert rotation_error_deg(pred[:3, :3], truth[:3, :3]) == pytest.approx(10.0, abs=1e-6)
    re, te = pose_errors(pred, truth)
    assert re == pytest.approx(10.0, abs=1e-6) and te == pytest.approx(20.0, abs=1e-6)
    m = evaluate([1, 2], {1: _pred(1, pose=pred), 2: _pred(2)}, {1: _gt(1, frame_pose), 2: _gt(2, frame_pose)},
                 NAMES, reference_pose=ref_pose)
    assert m["pose"]["validity_rate"] == 0.5 and m["pose_validity_rate"] == 0.5
    assert m["pose"]["rotation_error_deg"]["median"] == pytest.approx(10.0, abs=0.01)
    assert m["pose"]["translation_error_mm"]["median"] == pytest.approx(20.0, abs=0.1)
    # without the reference's object_pose: validity only
    m = evaluate([1], {1: _pred(1, pose=pred)}, {1: _gt(1, frame_pose)}, NAMES, reference_pose=None)
    assert m["pose"]["validity_rate"] == 1.0 and m["pose"]["rotation_error_deg"]["n"] == 0


def test_without_ground_truth_latency_and_coverage_only() -> None:
    m = evaluate([1, 2, 3], {1: _pred(1, latency=0.1), 3: _pred(3, latency=0.3)}, {}, NAMES)
    assert m["has_ground_truth"] is False and "pck" not in m
    assert m["frames"]["dropped_rate"] == pytest.approx(1 / 3, abs=1e-4)
    assert m["latency_ms"]["median"] == pytest.approx(200.0) and m["latency_ms"]["max"] == pytest.approx(300.0)


def test_frame_without_object_box_is_not_scored() -> None:
    g = _gt(1)
    g.object_box = np.full(4, np.nan)
    m = evaluate([1], {1: _pred(1)}, {1: g}, NAMES)
    assert m["scored_keypoints"]["frames_without_object_box"] == 1 and m["pck"]["0.1"] is None


def test_prediction_from_message() -> None:
    from geometry_msgs.msg import Point

    from semcorr_ros.msg import Correspondence, CorrespondenceArray

    msg = CorrespondenceArray()
    msg.header.stamp.sec, msg.header.stamp.nanosec = 12, 345
    msg.correspondences = [Correspondence(name="a", index=0, x=1.5, y=2.5, score=0.9, valid=True,
                                          point=Point(x=0.1, y=0.2, z=0.3), has_point=True)]
    msg.pose_valid = True
    half = math.radians(90) / 2
    msg.pose.orientation.z, msg.pose.orientation.w = math.sin(half), math.cos(half)
    msg.pose.position.x = 0.5
    msg.processing_time = 0.07
    p = FramePrediction.from_message(msg, latency_s=0.2)
    assert p.stamp_ns == 12 * 10**9 + 345 and p.names == ["a"] and p.valid.tolist() == [True]
    assert np.allclose(p.xy, [[1.5, 2.5]]) and np.allclose(p.points3d, [[0.1, 0.2, 0.3]], atol=1e-6)
    assert np.allclose(p.pose[:3, :3], _rz(90.0), atol=1e-6) and p.pose[0, 3] == pytest.approx(0.5)
    assert p.processing_s == pytest.approx(0.07)
