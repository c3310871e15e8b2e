"""Tracking mode: the One-Euro filters, the loss rule, the tracker's states on a toy stream (one encode per tracked
frame, loss on an occlusion, re-acquisition, resets), and the temporal metrics (hand-computed answers)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semcorr_ros.bageval import temporal
from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import CorrespondenceEngine
from semcorr_ros.engine.filters import OneEuroFilter, RotationFilter, alpha, rotation_exp, rotation_log
from semcorr_ros.engine.tracking import (
    mean_score,
    object_size,
    predict_keypoints,
    reacquire_check,
    similarity_fill,
    track_check,
)
from semcorr_ros.engine.types import MatchResult, PoseResult
from semcorr_ros.errors import ConfigError

from _toy import ToySource, texture  # noqa: E402  (test helper next to this file)

HALF = 1.0 / (2.0 * math.pi)  # a cutoff (Hz) whose alpha at dt = 1 s is exactly 0.5


# ---------------------------------------------------------------------------------------------------- filters
def test_alpha_is_the_first_order_low_pass_factor():
    assert alpha(HALF, 1.0) == pytest.approx(0.5)
    assert alpha(3 * HALF, 1.0) == pytest.approx(0.75)  # tau = 1/3: 1 / (1 + 1/3)


def test_one_euro_hand_computed_steps():
    f = OneEuroFilter(min_cutoff=HALF, beta=0.0, d_cutoff=HALF, max_gap=10.0)
    np.testing.assert_allclose(f(np.array([[0.0, 0.0]]), 0.0), [[0.0, 0.0]])  # first sample passes through
    np.testing.assert_allclose(f(np.array([[2.0, 4.0]]), 1.0), [[1.0, 2.0]])  # alpha 0.5
    np.testing.assert_allclose(f(np.array([[2.0, 4.0]]), 2.0), [[1.5, 3.0]])


def test_one_euro_beta_raises_the_cutoff_with_speed():
    # speed estimate after the second sample: alpha_d * (2 - 0) / 1 = 1 (scale 1) -> cutoff = HALF + beta * 1
    f = OneEuroFilter(min_cutoff=HALF, beta=2 * HALF, d_cutoff=HALF, max_gap=10.0)
    f(np.array([[0.0]]), 0.0)
    out = f(np.array([[2.0]]), 1.0)
    np.testing.assert_allclose(out, [[2.0 * alpha(3 * HALF, 1.0)]])  # = 1.5
    g = OneEuroFilter(min_cutoff=HALF, beta=2 * HALF, d_cutoff=HALF, max_gap=10.0)
    g(np.array([[0.0]]), 0.0)
    np.testing.assert_allclose(g(np.array([[20.0]]), 1.0, scale=10.0), [[15.0]])  # scale: same in its units


def test_one_euro_smooths_noise_at_rest_and_follows_a_ramp():
    rng = np.random.default_rng(0)
    still = OneEuroFilter(min_cutoff=1.0, beta=1.0, max_gap=1.0)
    noisy = 100.0 + rng.normal(0.0, 1.0, (90, 1, 2))
    out = np.array([still(x, i / 30.0, scale=50.0) for i, x in enumerate(noisy)])
    assert out[30:].std() < 0.6 * noisy[30:].std()
    fast, slow = (OneEuroFilter(min_cutoff=1.0, beta=b, max_gap=1.0) for b in (20.0, 0.0))
    ramp = [np.array([[10.0 * i, 0.0]]) for i in range(30)]  # 300 px/s
    lag_fast = [ramp[i][0, 0] - fast(ramp[i], i / 30.0, scale=50.0)[0, 0] for i in range(30)][-1]
    lag_slow = [ramp[i][0, 0] - slow(ramp[i], i / 30.0, scale=50.0)[0, 0] for i in range(30)][-1]
    assert 0 <= lag_fast < 0.25 * lag_slow


def test_one_euro_missing_rows_gaps_and_time_going_backwards():
    f = OneEuroFilter(min_cutoff=HALF, beta=0.0, d_cutoff=HALF, max_gap=2.5, reset_jump=5.0)
    f(np.array([[0.0], [0.0]]), 0.0)
    out = f(np.array([[2.0], [np.nan]]), 1.0)  # row 1 missing: returned as given, state kept
    assert out[0, 0] == pytest.approx(1.0) and np.isnan(out[1, 0])
    assert f(np.array([[2.0], [2.0]]), 2.0)[1, 0] == pytest.approx(4.0 / 3.0)  # row 1: 2 s, alpha 2/3
    assert f(np.array([[3.0], [3.0]]), 1.0)[0, 0] == 3.0  # backwards: restarts from the measurement
    assert f(np.array([[3.0], [3.0]]), 10.0)[0, 0] == 3.0  # a gap > max_gap restarts too
    assert f(np.array([[30.0], [3.0]]), 11.0)[0, 0] == 30.0  # a jump > reset_jump restarts the row
    mask = f(np.array([[0.0], [0.0]]), 12.0, mask=np.array([False, True]))
    assert mask[0, 0] == 0.0 and mask[1, 0] == pytest.approx(1.5)


def test_rotation_log_exp_round_trip_and_filter_step():
    for w in ([0.0, 0.0, 0.0], [0.3, -0.2, 0.1], [0.0, 0.0, math.pi - 1e-3], [0.0, 0.0, math.pi], [1.0, 1.0, 0.0]):
        w = np.asarray(w, float)
        if np.linalg.norm(w) > 0:
            w = w / np.linalg.norm(w) * min(np.linalg.norm(w), math.pi)
        np.testing.assert_allclose(rotation_exp(rotation_log(rotation_exp(w))), rotation_exp(w), atol=1e-6)
    f = RotationFilter(min_cutoff=HALF, beta=0.0, d_cutoff=HALF, max_gap=10.0)
    np.testing.assert_allclose(f(np.eye(3), 0.0), np.eye(3))
    out = f(rotation_exp([0.0, 0.0, 0.4]), 1.0)  # half-way along the geodesic
    np.testing.assert_allclose(rotation_log(out), [0.0, 0.0, 0.2], atol=1e-9)
    np.testing.assert_allclose(out @ out.T, np.eye(3), atol=1e-9)
    bad = np.full((3, 3), np.nan)
    assert np.isnan(f(bad, 2.0)).all() and f.t == 1.0  # a bad input leaves the state alone


# ---------------------------------------------------------------------------------------------------- loss rule
def _result(xy, score, valid=None, has_3d=None, pose=None) -> MatchResult:
    xy = np.asarray(xy, float)
    k = len(xy)
    return MatchResult(names=[f"k{i}" for i in range(k)], ref_xy=xy.copy(), xy=xy, score=np.asarray(score, float),
                       valid=np.ones(k, bool) if valid is None else np.asarray(valid, bool),
                       points3d=np.zeros((k, 3)), has_3d=np.zeros(k, bool) if has_3d is None else has_3d, pose=pose)


def test_similarity_fill_and_prediction():
    src = np.array([[0, 0], [10, 0], [0, 10], [10, 10]], float)
    R = np.array([[0.0, -1.0], [1.0, 0.0]])
    dst = src @ R.T * 2.0 + [5.0, 7.0]
    partial = dst.copy()
    partial[3] = np.nan
    np.testing.assert_allclose(similarity_fill(src, partial, np.isfinite(partial).all(1)), dst, atol=1e-9)
    one = np.full_like(dst, np.nan)
    one[0] = [1.0, 1.0]
    np.testing.assert_allclose(similarity_fill(src, one, np.isfinite(one).all(1))[3], [11.0, 11.0])
    assert similarity_fill(src, np.full_like(dst, np.nan), np.zeros(4, bool)) is None
    p = predict_keypoints(src, np.array([True, True, False, True]), np.array([30.0, -15.0]), 0.1)
    np.testing.assert_allclose(p[0], [3.0, -1.5])
    assert np.isnan(p[2]).all()
    assert object_size(src) == 10.0 and np.isnan(object_size(src[:1]))


def test_track_check_rules():
    cfg = EngineConfig(device="cpu", tracking="on")
    xy = np.array([[0, 0], [40, 0], [0, 40], [40, 40]], float)
    assert track_check(_result(xy, [0.9] * 4), cfg, xy, 40.0) == ""
    assert "valid keypoints" in track_check(_result(xy, [0.9] * 4, valid=[1, 1, 0, 0]), cfg)
    assert "mean score" in track_check(_result(xy, [0.2] * 4), cfg)
    assert "prediction" in track_check(_result(xy + 30.0, [0.9] * 4), cfg, xy, 40.0)  # 1.06 sizes > 0.5
    assert track_check(_result(xy + 10.0, [0.9] * 4), cfg, xy, 40.0) == ""  # 0.35 sizes: fine
    assert "size changed" in track_check(_result(xy * 1.6 - 12.0, [0.9] * 4), cfg, xy, 40.0)  # 0.42 sizes, 1.6x
    assert track_check(_result(np.zeros((0, 2)), []), cfg) == "no keypoints"
    xy8 = np.arange(16, dtype=float).reshape(8, 2) * 5
    bad_pose = PoseResult(np.eye(3), np.zeros(3), False, np.zeros(8, bool), 2, float("nan"))
    res = _result(xy8, [0.9] * 8, has_3d=np.ones(8, bool), pose=bad_pose)
    assert "inconsistent" in track_check(res, cfg, pose_expected=True)
    assert track_check(res, cfg, pose_expected=False) == ""


def test_reacquire_check_needs_the_tracks_score_level():
    cfg = EngineConfig(device="cpu", tracking="on")  # ratio 0.8
    xy = np.array([[0, 0], [40, 0], [0, 40], [40, 40]], float)
    weak, strong = _result(xy, [0.6, 0.6, 0.6, float("nan")]), _result(xy, [0.8] * 4)
    assert mean_score(weak) == pytest.approx(0.45) and np.isnan(mean_score(_result(np.zeros((0, 2)), [])))
    assert "level 0.90" in reacquire_check(weak, 0.9, 3, cfg)
    assert reacquire_check(strong, 0.9, 3, cfg) == ""  # 0.80 >= 0.8 x 0.90
    assert reacquire_check(weak, float("nan"), 3, cfg) == ""  # no level yet
    assert reacquire_check(weak, 0.9, 30, cfg) == ""  # forgotten after 30 frames
    assert reacquire_check(weak, 0.9, 3, EngineConfig(device="cpu", tracking_reacquire_ratio=0)) == ""
    with pytest.raises(ConfigError, match="tracking_reacquire_ratio"):
        EngineConfig(tracking_reacquire_ratio=-1)


def test_tracking_options_are_validated():
    with pytest.raises(ConfigError, match="tracking"):
        EngineConfig(tracking="maybe")
    with pytest.raises(ConfigError, match="tracking_filter"):
        EngineConfig(tracking_filter="kalman")
    assert EngineConfig().tracking == "off"


# ---------------------------------------------------------------------------------------------------- engine
OBJ = texture(48, 48, seed=5)
BG = texture(192, 192, seed=9) // 3
KPS = np.array([[50, 50], [78, 52], [64, 75], [52, 80], [80, 78]], float)
K_CAM = np.array([[150.0, 0, 96], [0, 150.0, 96], [0, 0, 1]])


def _frame(x: int, y: int, occluded: bool = False) -> tuple[np.ndarray, np.ndarray]:
    img = BG.copy()
    depth = np.full((192, 192), 1.2, np.float32)
    img[y:y + 48, x:x + 48] = 0 if occluded else OBJ
    depth[y:y + 48, x:x + 48] = 0.8
    depth[:10] = np.nan  # invalid depth rows must not hurt
    return img, depth


def _engine(**cfg) -> CorrespondenceEngine:
    cfg.setdefault("tracking", "on")
    eng = CorrespondenceEngine(EngineConfig(device="cpu", fusion_weights="none", kbc="auto", grid=16, **cfg),
                               sources=[ToySource(), ToySource(seed=1, name="toy2")])
    img, depth = _frame(40, 40)
    eng.set_reference(img, KPS, depth=depth, intrinsics=K_CAM, reference_id="obj")
    return eng


def test_stream_one_encode_per_tracked_frame_loss_on_occlusion_and_reacquisition():
    # the toy features find the object on the full frame at shifts of about 12 px (their cell), track it anywhere
    eng = _engine(tracking_min_score=0.35)
    states, encodes, errors, reasons = [], [], [], []
    for i in range(12):
        d = round(12 * i / 7)
        img, depth = _frame(40 + d, 40 + d, occluded=i in (4, 5, 6))
        e0 = eng.encodes
        [obj] = eng.track(img, depth, K_CAM, stamp=100.0 + i / 15)
        states.append(obj.track_status)
        reasons.append(obj.track_reason)
        encodes.append(eng.encodes - e0)
        if obj.track_status == "tracked":
            errors.append(np.linalg.norm(obj.result.xy - (KPS + d), axis=1).mean())
            assert obj.result.raw_xy.shape == obj.result.xy.shape and obj.result.raw_points3d is not None
            assert obj.frames_since_detection >= 1
    assert states == ["detecting"] + ["tracked"] * 3 + ["lost"] * 3 + ["reacquired"] + ["tracked"] * 4, states
    assert reasons[4] and not reasons[3]
    assert all(n == 1 for n, s in zip(encodes, states) if s == "tracked"), encodes
    assert np.mean(errors) < 2.5


def test_a_detection_on_the_occluder_does_not_reacquire_the_track():
    # a textured panel hides the object in frames 4-6: the full-frame detection then matches the panel (mean
    # score ~0.6 against ~0.83 on the object), which passes the loss rule when tracking_min_score is low
    panel = texture(48, 48, seed=21)
    runs = {}
    for ratio in (0.0, 0.8):
        eng = _engine(tracking_min_score=0.0, tracking_reacquire_ratio=ratio, tracking_redetect_every=0)
        states, errors, reasons = [], [], []
        for i in range(10):
            d = round(12 * i / 7)
            img, depth = _frame(40 + d, 40 + d)
            if i in (4, 5, 6):
                img[40 + d:88 + d, 40 + d:88 + d] = panel
            [obj] = eng.track(img, depth, K_CAM, stamp=100.0 + i / 15)
            states.append(obj.track_status)
            reasons.append(obj.track_reason)
            errors.append(float(np.linalg.norm(obj.result.xy - (KPS + d), axis=1).mean()))
        runs[ratio] = states, errors, reasons
    states, errors, reasons = runs[0.0]
    assert "reacquired" in states[4:7] and max(errors[4:7]) > 10  # without the rule: the panel "re-acquires"
    states, errors, reasons = runs[0.8]
    assert states == ["detecting"] + ["tracked"] * 3 + ["lost"] * 3 + ["reacquired"] + ["tracked"] * 2, states
    assert all("level" in r for r in reasons[5:7]), reasons
    assert max(errors[7:]) < 2.5  # back on the object once it shows again


def test_resets_periodic_redetection_and_bad_inputs():
    eng = _engine(tracking_redetect_every=3)
    img, depth = _frame(40, 40)
    states = [eng.track(img, depth, K_CAM, stamp=1.0 + i / 15)[0].track_status for i in range(4)]
    assert states == ["detecting", "tracked", "tracked", "detecting"]  # the 3rd frame since detection re-detects
    assert eng.track(img, depth, K_CAM, stamp=0.5)[0].track_status == "detecting"  # backwards: reset
    assert "backwards" in eng.tracker.last_reset
    assert eng.track(img, depth, K_CAM, stamp=0.55)[0].track_status == "tracked"
    assert eng.track(img, depth, K_CAM, stamp=5.0)[0].track_status == "detecting"  # a gap: reset
    assert eng.track(img, depth, K_CAM, stamp=float("nan"))[0].track_status == "detecting"  # no crash
    nan_depth = np.full_like(depth, np.nan)
    eng.track(img, nan_depth, K_CAM, stamp=6.0)
    [obj] = eng.track(img, nan_depth, K_CAM, stamp=6.05)
    assert obj.track_status == "tracked" and not obj.result.has_3d.any()
    eng.set_reference(img, KPS, reference_id="other")  # a new reference restarts the track
    assert eng.track(img, depth, K_CAM, stamp=6.1)[0].track_status == "detecting"
    assert "changed" in eng.tracker.last_reset


def test_tracking_off_is_match_objects():
    eng = _engine(tracking="off")
    img, depth = _frame(46, 44)
    [a] = eng.track(img, depth, K_CAM, stamp=1.0)
    [b] = eng.match_objects(img, depth, K_CAM)
    np.testing.assert_array_equal(a.result.xy, b.result.xy)
    assert a.track_status == "detecting" and a.result.raw_xy is None


# ---------------------------------------------------------------------------------------------------- temporal
def test_jitter_hand_computed():
    t = np.arange(6, dtype=float)
    xy = np.stack([t ** 2, 3.0 * t], -1)[:, None, :]  # second difference (2, 0) everywhere
    ok = np.ones((6, 1), bool)
    j = temporal.jitter(xy, ok, np.full(6, 10.0))
    assert j["rms"] == pytest.approx(0.2) and j["samples"] == 4
    lin = temporal.jitter(np.stack([t, t], -1)[:, None, :], ok, np.full(6, 10.0))
    assert lin["rms"] == pytest.approx(0.0)
    gap = ok.copy()
    gap[2] = False  # frames 1, 2, 3 lose their second differences
    assert temporal.jitter(xy, gap, np.full(6, 10.0))["samples"] == 1
    assert temporal.jitter(xy[:2], ok[:2], np.full(2, 10.0))["rms"] is None


def test_losses_and_reacquisition():
    found = np.array([1, 1, 0, 0, 1, 0, 1, 1, 0], bool)
    visible = np.ones(9, bool)
    lo = temporal.track_losses(visible, found)
    # losses at frames 2, 5, 8; at risk: frames after a found one (1, 2, 5, 7, 8) -> 3 / 5
    assert lo["losses"] == 3 and lo["at_risk"] == 5 and lo["loss_rate"] == 0.6
    assert lo["frames_to_reacquire"] == [1, 0] and lo["not_reacquired"] == 1
    invisible = visible.copy()
    invisible[2] = False  # not visible: no loss there
    assert temporal.track_losses(invisible, found)["losses"] == 2


class _P:
    def __init__(self, names, xy, valid):
        self.names, self.xy, self.valid = names, np.asarray(xy, float), np.asarray(valid, bool)


class _G:
    def __init__(self, names, xy, visible, box):
        self.names, self.keypoints_2d = names, np.asarray(xy, float)
        self.visible, self.object_box = np.asarray(visible, bool), np.asarray(box, float)


def test_temporal_metrics_from_predictions_and_ground_truth():
    names = ["a", "b"]
    gts, preds = {}, {}
    for i in range(5):
        gts[i] = _G(names, [[10.0 * i, 0.0], [10.0 * i, 20.0]], [True, True], [0, 0, 100, 50])
        # b is noisy and missing in frame 3 (no output at all in frame 4)
        preds[i] = _P(["b", "a"], [[10.0 * i, 20.0 + (5.0 if i % 2 else 0.0)], [10.0 * i, 0.0]], [i != 3, True])
    del preds[4]
    arr = temporal.sequence_arrays(list(range(5)), preds, gts, names)
    assert arr["pred_ok"].tolist() == [[1, 1], [1, 1], [1, 1], [1, 0], [0, 0]]
    m = temporal.temporal_metrics(arr)
    # b's second differences at frame 1: (0, -10) / 100 -> 0.1; a's are 0 (frames 1, 2): pooled RMS sqrt(0.01 / 3)
    assert m["jitter"]["per_keypoint"][0] == 0.0 and m["jitter"]["per_keypoint"][1] == pytest.approx(0.1)
    assert m["jitter"]["rms"] == pytest.approx(math.sqrt(0.01 / 3), abs=1e-6)
    assert m["jitter_gt"]["rms"] == 0.0 and m["jitter_ratio"] is None
    assert m["found_rate"] == 0.8 and m["losses"]["losses"] == 1 and m["losses"]["not_reacquired"] == 1


# ---------------------------------------------------------------------------------------------------- re-detection
def _plane_scene(xy: np.ndarray):
    """A 64x64 frame whose depth is a tilted plane, its intrinsics, and the 3D points of pixels ``xy``."""
    from types import SimpleNamespace

    from semcorr_ros.engine import geometry

    K = np.array([[100.0, 0, 32], [0, 100.0, 32], [0, 0, 1]])
    depth = 1.0 + 0.004 * np.arange(64)[None, :] + np.zeros((64, 1))
    frame = SimpleNamespace(depth=depth, K=K, distortion=None)
    pts, ok = geometry.lift(depth, xy, K, 2)
    assert ok.all()
    return frame, pts


def _matches(xy: np.ndarray, pts: np.ndarray, score: float = 0.8) -> MatchResult:
    k = len(xy)
    return MatchResult(names=[f"k{i}" for i in range(k)], ref_xy=np.zeros((k, 2)), xy=xy.copy(),
                       score=np.full(k, score), valid=np.ones(k, bool), points3d=pts.copy(), has_3d=np.ones(k, bool))


def test_arbitrate_keeps_the_candidate_that_fits_the_joint_pose():
    from semcorr_ros.engine.tracking import arbitrate

    true_xy = np.array([[10.0, 12], [50, 10], [30, 30], [12, 50], [52, 48], [32, 54]])
    frame, true_pts = _plane_scene(true_xy)
    ref_points = true_pts - np.array([0.0, 0.0, 0.3])  # the reference: the same points, 0.3 m nearer
    det_xy = true_xy.copy()
    det_xy[[0, 1]] = det_xy[[1, 0]]  # the detection swapped two keypoints (a semantic error)
    _, det_pts = _plane_scene(det_xy)
    pred = true_xy + 0.5  # the track: right, half a pixel off
    pred[4] = [30.0, 5.0]  # ... except keypoint 4, which the detection has right
    cfg = EngineConfig()
    size = object_size(true_xy)
    out, taken = arbitrate(_matches(det_xy, det_pts), pred, np.full(6, 0.6), ref_points, frame, cfg, size)
    assert taken.tolist() == [True, True, False, False, False, False]  # 2, 3, 5 agree: the detection's
    np.testing.assert_allclose(out.xy[[0, 1]], pred[[0, 1]])
    np.testing.assert_allclose(out.xy[4], true_xy[4])
    np.testing.assert_allclose(out.score[[0, 1]], 0.6)
    assert out.pose.valid and out.pose.n_inliers == 6
    np.testing.assert_allclose(out.pose.t, [0.0, 0.0, 0.3], atol=0.01)
    # without depth (or reference 3D) the detection is kept as it is
    same, none = arbitrate(_matches(det_xy, det_pts), pred, np.full(6, 0.6), None, frame, cfg, size)
    assert not none.any() and np.array_equal(same.xy, det_xy)


def test_anchored_pose_moves_the_detection_pose_by_the_tracked_motion():
    from semcorr_ros.engine.tracking import Track
    from semcorr_ros.engine.tracking_output import anchored_pose

    rng = np.random.default_rng(3)
    pts0 = rng.uniform(-0.1, 0.1, (6, 3)) + [0, 0, 1.0]
    anchor = PoseResult(R=rotation_exp([0.0, 0.3, 0.0]), t=np.array([0.0, 0.0, 0.5]), valid=True,
                        inliers=np.ones(6, bool), n_inliers=4, rmse=0.01)
    det = replace_pose(_matches(np.zeros((6, 2)), pts0), anchor)
    tr = Track("o", 0, 0.0, np.zeros((6, 2)), np.ones(6, bool))
    cfg = EngineConfig(tracking_pose_window=1)  # the detection's pose alone, moved
    assert anchored_pose(tr, det, "detecting", cfg) is anchor and tr.anchor is not None
    M, d = rotation_exp([0.1, 0.0, 0.05]), np.array([0.02, -0.01, 0.03])  # the object's motion since then
    pts1 = pts0 @ M.T + d
    own = PoseResult(R=np.eye(3), t=np.zeros(3), valid=True, inliers=np.ones(6, bool), n_inliers=4, rmse=0.01)
    tracked = replace_pose(_matches(np.zeros((6, 2)), pts1), own)
    pose = anchored_pose(tr, tracked, "tracked", cfg)
    np.testing.assert_allclose(pose.R, M @ anchor.R, atol=1e-6)
    np.testing.assert_allclose(pose.t, M @ anchor.t + d, atol=1e-6)
    assert pose.valid and pose.n_inliers == 6
    # motion that cannot be fitted (the points scattered): the frame's own pose
    scattered = replace_pose(_matches(np.zeros((6, 2)), rng.uniform(-1, 1, (6, 3))), own)
    assert anchored_pose(tr, scattered, "tracked", cfg) is own


def test_anchored_pose_averages_the_frames_own_poses_and_leaves_outliers_out():
    from semcorr_ros.engine.filters import rotation_log
    from semcorr_ros.engine.tracking import Track
    from semcorr_ros.engine.tracking_output import anchored_pose

    rng = np.random.default_rng(5)
    obj = rng.uniform(-0.08, 0.08, (8, 3))                  # the object's points in its own frame
    R0, t0 = rotation_exp([0.2, -0.4, 0.1]), np.array([0.05, 0.0, 0.8])
    cfg = EngineConfig(tracking_pose_window=10)

    def frame(i: int, noise: np.ndarray | None = None, flip: bool = False) -> tuple[MatchResult, np.ndarray]:
        Ri = rotation_exp([0.0, 0.03 * i, 0.0]) @ R0           # the object turns 1.7 degrees a frame
        ti = t0 + [0.004 * i, 0.0, 0.0]
        pts = obj @ Ri.T + ti
        Rn = Ri @ rotation_exp(noise if noise is not None else rng.normal(0, 0.12, 3))  # ~12 degrees per axis
        if flip:
            Rn = Ri @ rotation_exp([0.0, 0.0, np.pi])
        own = PoseResult(R=Rn, t=ti + rng.normal(0, 0.01, 3), valid=True, inliers=np.ones(8, bool), n_inliers=8,
                         rmse=0.01)
        return replace_pose(_matches(np.zeros((8, 2)), pts), own), Ri

    def err(R: np.ndarray, truth: np.ndarray) -> float:
        return float(np.degrees(np.linalg.norm(rotation_log(R.T @ truth))))

    tr = Track("o", 0, 0.0, np.zeros((8, 2)), np.ones(8, bool))
    own_err, out_err = [], []
    for i in range(40):
        res, truth = frame(i)
        pose = anchored_pose(tr, res, "detecting" if i % 10 == 0 else "tracked", cfg)
        if i >= 10:  # once about a window of frames is averaged
            own_err.append(err(res.pose.R, truth))
            out_err.append(err(pose.R, truth))
    assert np.median(out_err) < 0.5 * np.median(own_err), (np.median(out_err), np.median(own_err))
    # one flipped frame is left out; the estimate holds
    res, truth = frame(40, flip=True)
    assert err(anchored_pose(tr, res, "tracked", cfg).R, truth) < 10.0
    # the flip persists: after a few frames in a row the estimate restarts from it
    for i in (41, 42):
        res, truth = frame(i, flip=True)
        pose = anchored_pose(tr, res, "tracked", cfg)
    assert err(pose.R, truth) > 170.0


def replace_pose(r: MatchResult, pose: PoseResult) -> MatchResult:
    from dataclasses import replace

    return replace(r, pose=pose)
