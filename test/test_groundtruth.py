"""The semcorr-gt-v1 ground-truth record: round trip, validation, relative pose."""

import json

import numpy as np
import pytest

from semcorr_ros.groundtruth import SCHEMA, BadGroundTruthError, FrameGroundTruth, relative_pose


def _record(**over):
    rng = np.random.default_rng(0)
    pose = np.eye(4)
    pose[:3, 3] = [0.1, -0.05, 0.8]
    gt = dict(stamp_ns=1_700_000_000_123_456_789, frame_index=3, category="mug", instance="mug_001",
              names=["a", "b", "c"], keypoints_2d=rng.uniform(0, 640, (3, 2)), visible=np.array([True, False, True]),
              keypoints_3d=rng.uniform(-0.1, 0.9, (3, 3)), object_pose=pose,
              object_box=np.array([10.0, 20.0, 200.0, 220.5]), object_fraction=0.12)
    gt.update(over)
    return FrameGroundTruth(**gt)


def test_round_trip_keeps_every_field():
    gt = _record()
    back = FrameGroundTruth.from_json(gt.to_json())
    assert back.stamp_ns == gt.stamp_ns and back.frame_index == 3
    assert back.names == gt.names and back.category == "mug" and back.instance == "mug_001"
    np.testing.assert_allclose(back.keypoints_2d, gt.keypoints_2d, atol=1e-3)
    np.testing.assert_allclose(back.keypoints_3d, gt.keypoints_3d, atol=1e-6)
    np.testing.assert_array_equal(back.visible, gt.visible)
    np.testing.assert_allclose(back.object_pose, gt.object_pose)
    np.testing.assert_allclose(back.object_box, gt.object_box)
    assert back.object_fraction == pytest.approx(0.12)


def test_object_not_in_view_keeps_nan_box():
    gt = _record(object_box=np.full(4, np.nan), object_fraction=0.0)
    text = gt.to_json()
    assert "NaN" not in text  # strict JSON
    back = FrameGroundTruth.from_json(text)
    assert np.isnan(back.object_box).all()


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.update(schema="other"), "schema"),
    (lambda d: d.pop("keypoints_3d"), "keypoints_3d"),
    (lambda d: d.update(keypoints_2d=[[1, 2]]), "malformed"),
    (lambda d: d.update(object_pose=[[1, 0], [0, 1]]), "malformed"),
])
def test_bad_records_are_refused_with_a_reason(mutate, message):
    doc = json.loads(_record().to_json())
    mutate(doc)
    with pytest.raises(BadGroundTruthError, match=message):
        FrameGroundTruth.from_json(json.dumps(doc))


def test_not_json_is_refused():
    with pytest.raises(BadGroundTruthError, match="not JSON"):
        FrameGroundTruth.from_json("{oops")
    with pytest.raises(BadGroundTruthError, match=SCHEMA):
        FrameGroundTruth.from_json("[1, 2]")


def test_relative_pose_maps_reference_camera_points_to_live_camera_points():
    rng = np.random.default_rng(1)

    def random_pose():
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        q *= np.sign(np.linalg.det(q))
        t = np.eye(4)
        t[:3, :3], t[:3, 3] = q, rng.normal(size=3)
        return t

    t_ref, t_live = random_pose(), random_pose()
    p_obj = np.array([0.02, -0.03, 0.05, 1.0])
    p_ref_cam, p_live_cam = t_ref @ p_obj, t_live @ p_obj
    np.testing.assert_allclose(relative_pose(t_live, t_ref) @ p_ref_cam, p_live_cam, atol=1e-12)
