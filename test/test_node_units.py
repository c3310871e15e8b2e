"""The node's building blocks without DDS: parameter table, input checks, output messages, statistics, overlay."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np
import pytest

from semcorr_ros.config import EngineConfig
from semcorr_ros.engine.types import MatchResult, PoseResult
from semcorr_ros.errors import BadReferenceError, ConfigError, InputError
from semcorr_ros.ros import params

from _rgbd import EXAMPLE_YAML, KnownScene

# ---------------------------------------------------------------------------------------------- parameters


def test_every_engine_option_is_a_parameter_with_the_config_default() -> None:
    by_field = {p.field: p for p in params.PARAMETERS if p.field}
    assert len(by_field) == len([p for p in params.PARAMETERS if p.field]), "two parameters set one field"
    defaults = EngineConfig()
    for f in fields(EngineConfig):
        if f.name == "layers":  # per-source layer lists: Python API only
            continue
        assert f.name in by_field, f"EngineConfig.{f.name} has no ROS parameter"
        spec = by_field[f.name]
        value = getattr(defaults, f.name)
        if spec.default is None:  # declared by type only: not set = the EngineConfig default
            assert spec.read_only or not value
        elif f.name == "sources":
            assert spec.default == list(value)
        elif f.name in ("fusion_weights", "kbcnet_weights"):
            assert spec.default == "" and value is None
        elif f.name == "multiscale":
            assert spec.default == list(value)
        else:
            assert spec.default == value and type(spec.default) is type(value), f.name
    # unset parameters give the default engine, set-to-default ones too
    assert params.engine_config({}) == defaults
    assert params.engine_config({p.name: p.default for p in params.PARAMETERS}) == defaults
    assert params.engine_config(params.parameter_values(defaults)) == defaults


@pytest.mark.parametrize("spec", [p for p in params.PARAMETERS if p.field and p.range], ids=lambda p: p.name)
def test_descriptor_ranges_agree_with_the_config(spec: params.ParamSpec) -> None:
    lo, hi = spec.range
    for ok in (lo, hi):
        params.engine_config({spec.name: type(spec.default)(ok)})
    step = 1 if isinstance(spec.default, int) else max(abs(hi), 1.0) * 1e-3
    for bad in (lo - step, hi + step):
        with pytest.raises(ConfigError):
            params.engine_config({spec.name: type(spec.default)(bad)})


def test_descriptors() -> None:
    from rcl_interfaces.msg import ParameterType

    d = params.PARAMETERS_BY_NAME["score_threshold"].descriptor()
    assert d.type == ParameterType.PARAMETER_DOUBLE and d.floating_point_range[0].to_value == 1.0
    assert d.description and not d.read_only
    d = params.PARAMETERS_BY_NAME["depth_radius"].descriptor()
    assert d.integer_range[0].from_value == 0 and d.integer_range[0].to_value == 50
    d = params.PARAMETERS_BY_NAME["device"].descriptor()
    assert d.read_only and "Read-only" in d.description and "cuda" in d.additional_constraints
    assert "one of: off, on, auto" in params.PARAMETERS_BY_NAME["kbc"].descriptor().additional_constraints
    for name in ("backbone", "weights", "input_sizes", "source_weights", "device", "fp16", "fusion_weights",
                 "center_features", "torch_threads"):
        assert name in params.MODEL_PARAMETERS


def test_engine_config_from_parameter_values() -> None:
    cfg = params.engine_config({"backbone": ["effnet-lite2"], "weights": ["effnet-lite2=/w.pth"],
                                "input_sizes": [256], "fusion_weights": "", "kbc": "off", "depth_aware": False})
    assert cfg.sources == ("effnet-lite2",) and cfg.weights == {"effnet-lite2": "/w.pth"}
    assert cfg.input_sizes == {"effnet-lite2": 256} and cfg.fusion_weights is None and cfg.kbc == "off"
    assert params.engine_config({"input_sizes": [0, 224]}).input_sizes == {"dinov2-s-imgfocus": 224}
    assert params.engine_config({"weights": None, "input_sizes": None}).weights == {}
    assert params.engine_config({"source_weights": [0.5, 2.0]}).source_weights == {
        "effnet-lite2": 0.5, "dinov2-s-imgfocus": 2.0}
    assert params.engine_config({"source_weights": None}).source_weights == EngineConfig().source_weights
    with pytest.raises(ConfigError, match="source_weights"):
        params.engine_config({"source_weights": [1.0]})
    with pytest.raises(ConfigError, match="SOURCE=PATH"):
        params.engine_config({"weights": ["no-equals-sign"]})
    with pytest.raises(ConfigError, match="one entry per backbone"):
        params.engine_config({"input_sizes": [1, 2, 3]})
    with pytest.raises(ConfigError, match="off"):
        params.engine_config({"kbc": "sometimes"})
    with pytest.raises(ConfigError, match="device"):
        params.engine_config({"device": "tpu"})


def test_reference_from_parameters(tmp_path) -> None:
    assert params.load_reference_from_params({"reference_file": ""}) is None
    spec = params.load_reference_from_params({"reference_file": str(EXAMPLE_YAML)})
    assert spec.reference_id == "example_robot" and spec.depth is not None and spec.intrinsics[0, 0] == 600
    spec = params.load_reference_from_params({"reference_file": "package://semcorr_ros/config/example_reference.yaml",
                                              "reference_intrinsics": [500.0, 500.0, 320.0, 240.0]})
    assert spec.intrinsics[0, 0] == 500 and len(spec.names) == 10
    np.save(tmp_path / "d.npy", np.full((480, 640), 0.5, np.float32))
    spec = params.load_reference_from_params({"reference_file": str(EXAMPLE_YAML),
                                              "reference_depth": str(tmp_path / "d.npy")})
    assert np.nanmax(spec.depth) == pytest.approx(0.5)
    np.save(tmp_path / "small.npy", np.ones((10, 10), np.float32))
    with pytest.raises(BadReferenceError, match="10x10"):
        params.load_reference_from_params({"reference_file": str(EXAMPLE_YAML),
                                           "reference_depth": str(tmp_path / "small.npy")})
    with pytest.raises(BadReferenceError, match="not found"):
        params.load_reference_from_params({"reference_file": "package://no_such_package_xyz/ref.yaml"})


# ---------------------------------------------------------------------------------------------- inputs


def test_frame_from_messages() -> None:
    from semcorr_ros.ros.convert import depth_to_image
    from semcorr_ros.ros.frames import frame_from_messages

    scene = KnownScene(3, 1)
    c, d, i = scene.messages(12.5)
    frame = frame_from_messages(c, d, i, 0.001)
    assert frame.stamp == 12.5 and frame.rgb.shape == (480, 640, 3) and frame.depth.dtype == np.float32
    np.testing.assert_array_equal(frame.rgb, scene.rgb)
    np.testing.assert_allclose(frame.depth, scene.depth, atol=1e-6)
    with pytest.raises(InputError, match="no CameraInfo received on /cam/info"):
        frame_from_messages(c, d, None, 0.001, "/cam/info")
    with pytest.raises(InputError, match="depth image is 320x240"):
        frame_from_messages(c, depth_to_image(scene.depth[::2, ::2]), i, 0.001)
    i.width, i.height = 1280, 720
    with pytest.raises(InputError, match="1280x720"):
        frame_from_messages(c, d, i, 0.001)
    c.encoding = "8UC3"
    with pytest.raises(InputError, match="colour image: unsupported"):
        frame_from_messages(c, d, i, 0.001)


# ---------------------------------------------------------------------------------------------- outputs


def _result(with_pose: bool = True) -> MatchResult:
    R = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90 degrees about z
    pose = PoseResult(R=R, t=np.array([0.1, 0.2, 0.3]), valid=True, inliers=np.array([True, True, False]),
                      n_inliers=2, rmse=0.004) if with_pose else None
    return MatchResult(names=["a", "b", "c"], ref_xy=np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]]),
                       xy=np.array([[10.0, 20.0], [30.0, 40.0], [np.nan, np.nan]]),
                       score=np.array([0.9, 0.5, 0.1]), valid=np.array([True, True, False]),
                       points3d=np.array([[0.1, 0.2, 1.0], [np.nan] * 3, [np.nan] * 3]),
                       has_3d=np.array([True, False, False]), pose=pose)


def _header():
    from std_msgs.msg import Header

    from semcorr_ros.ros.convert import sec_to_stamp

    return Header(frame_id="cam", stamp=sec_to_stamp(5.25))


def test_rotation_to_quaternion_matches_scipy() -> None:
    from scipy.spatial.transform import Rotation

    from semcorr_ros.ros.messages import rotation_to_quaternion

    rng = np.random.default_rng(0)
    mats = [np.eye(3), np.diag([1.0, -1.0, -1.0]), np.diag([-1.0, 1.0, -1.0]), np.diag([-1.0, -1.0, 1.0])]
    mats += list(Rotation.random(50, random_state=rng).as_matrix())
    for R in mats:
        q = np.array(rotation_to_quaternion(R))
        ref = Rotation.from_matrix(R).as_quat()
        assert abs(abs(q @ ref) - 1.0) < 1e-9 and q[3] >= 0 and math.isclose(np.linalg.norm(q), 1.0)


def test_correspondence_array() -> None:
    from semcorr_ros.ros.messages import correspondence_array

    msg = correspondence_array(_result(), _header(), "ref", processing_time=0.1, latency=0.2)
    assert msg.header.frame_id == "cam" and msg.header.stamp.nanosec == 250_000_000
    assert [c.name for c in msg.correspondences] == ["a", "b", "c"]
    a, b, c = msg.correspondences
    assert (a.valid, a.has_point, b.valid, b.has_point, c.valid, c.has_point) == (True, True, True, False, False, False)
    assert (a.x, a.y, a.ref_x, a.ref_y, a.point.z) == (10.0, 20.0, 1.0, 2.0, 1.0)
    assert (c.x, c.y, c.index) == (0.0, 0.0, 2)  # invalid: no NaN on the wire
    assert msg.pose_valid and msg.pose_inliers == 2 and msg.pose_rmse == pytest.approx(0.004)
    assert msg.pose.orientation.z == pytest.approx(math.sqrt(0.5)) and msg.pose.position.y == pytest.approx(0.2)
    assert msg.latency == pytest.approx(0.2) and msg.processing_time == pytest.approx(0.1)
    empty = correspondence_array(MatchResult.empty(), _header(), "ref")
    assert empty.correspondences == [] and not empty.pose_valid and empty.pose.orientation.w == 1.0


def test_cloud_pose_markers() -> None:
    from visualization_msgs.msg import Marker

    from semcorr_ros.ros.clouds import cloud_to_points
    from semcorr_ros.ros.messages import cloud_of_valid_points, markers, pose_stamped

    pts, scores = cloud_to_points(cloud_of_valid_points(_result(), _header()))
    np.testing.assert_allclose(pts, [[0.1, 0.2, 1.0]], rtol=1e-6) and np.testing.assert_allclose(scores, [0.9])
    assert pose_stamped(_result(with_pose=False), _header()) is None
    assert pose_stamped(_result(), _header()).pose.position.z == pytest.approx(0.3)
    m = markers(_result(), _header(), scale=0.05).markers
    assert [x.type for x in m[1:]] == [Marker.SPHERE, Marker.TEXT_VIEW_FACING] and m[0].action == Marker.DELETEALL
    assert m[1].scale.x == pytest.approx(0.05) and m[1].color.g > m[1].color.r and m[2].text == "a 0.90"
    assert len(markers(MatchResult.empty(), _header()).markers) == 1


def test_debug_overlay() -> None:
    from semcorr_ros.ros.debug_image import draw_overlay

    rgb = np.zeros((60, 80, 3), np.uint8)
    rgb.flags.writeable = False
    out = draw_overlay(rgb, _result(), "title")
    assert out.shape == rgb.shape and out.dtype == np.uint8 and out.any() and not rgb.any()
    assert out[20, 10 + 5].any() or out[20 - 5, 10].any()  # circle around (10, 20)


# ---------------------------------------------------------------------------------------------- statistics


def test_frame_stats() -> None:
    from semcorr_ros.ros.diagnostics import FrameStats

    s = FrameStats(window=100, rate_window_s=5.0)
    snap = s.snapshot(now=0.0)
    assert snap.published == 0 and snap.rate_hz == 0 and math.isnan(snap.latency_p50)
    for k in range(200):
        s.record_published(latency=0.001 * (k % 100), processing=0.05, now=10.0 + 0.1 * k)
    s.record_rejected("bad", 3)
    snap = s.snapshot(now=30.0)
    assert snap.published == 200 and snap.rejected == 3 and snap.last_rejection == "bad"
    assert snap.latency_p50 == pytest.approx(0.0495) and snap.latency_p95 == pytest.approx(0.09405)
    assert snap.rate_hz == pytest.approx(10.0) and snap.processing_p50 == pytest.approx(0.05)
    assert s.snapshot(now=60.0).rate_hz == 0.0  # nothing in the last 5 s


def test_sync_accounting() -> None:
    from semcorr_ros.ros.diagnostics import SyncAccounting

    acc = SyncAccounting(window=4)
    assert acc.update({"unpaired": 0, "consumed": 0}, 0.01) == 0
    assert acc.update({"unpaired": 4, "consumed": 3}, 0.01) == 0 and acc.shed == 4  # sets formed: load shedding
    for t in (1.0, 1.1, 1.2):
        acc.note("depth", t)
        acc.note("color", t + 0.005)
    assert acc.pairs_recently(0.01) and not acc.pairs_recently(0.001)
    assert acc.update({"unpaired": 6, "consumed": 3}, 0.01) == 0 and acc.shed == 6  # stamps pair: shedding
    for t in (2.0, 2.1, 2.2, 2.3):
        acc.note("color", t)
        acc.note("depth", t - 0.5)
    assert not acc.pairs_recently(0.01)
    assert acc.update({"unpaired": 9, "consumed": 3}, 0.01) == 3 and acc.never_paired == 3  # never pair
    acc.retire({"unpaired": 9, "consumed": 3, "buffered_color": 2})
    totals = acc.totals({"unpaired": 1, "consumed": 0, "buffered_color": 1})
    assert totals == {"unpaired": 10, "consumed": 3, "buffered_color": 1}


def test_reencoding_options_say_so() -> None:
    from semcorr_ros.ros.engine_updates import REFERENCE_AFFECTING_FIELDS

    for p in params.PARAMETERS:
        if p.field and not p.read_only:
            assert (p.field in REFERENCE_AFFECTING_FIELDS) == ("Re-encodes the reference" in p.description), p.name


def test_parameter_set_is_unchanged() -> None:
    """The schema declares exactly the parameters the node had (launch files and YAML files name them)."""
    expected = {
        "backbone", "weights", "input_sizes", "source_weights", "score_calibration", "fusion_weights", "matcher",
        "kbcnet_weights", "center_features", "device", "runtime", "fp16", "cpu_bf16", "torch_threads",
        "score_threshold", "kbc", "kbc_margin", "kbc_max_fraction", "depth_aware", "depth_scale", "depth_floor",
        "depth_sigma_min",
        "depth_spread", "depth_cells", "depth_radius", "multiscale", "grid", "softargmax_radius",
        "softargmax_temperature", "cycle_sigma", "pose_threshold", "pose_iterations", "pose_min_inliers",
        "consensus_prior", "consensus_weight", "consensus_sigma", "consensus_threshold", "consensus_min_inliers",
        "consensus_mode", "consensus_in_crop", "pose_from_prior", "color_transport", "depth_transport",
        "rectified_input", "require_matching_frame_ids", "max_image_pixels", "sync_slop", "sync_buffer_size",
        "stamp_source", "sync_time_jump_reset", "reference_file", "reference_image", "reference_depth",
        "reference_intrinsics", "max_reference_keypoints", "enabled", "fatal_after_failures", "publish_debug_image",
        "marker_scale", "diagnostics_period",
        "tracking", "tracking_redetect_every", "tracking_max_gap", "tracking_min_keypoints", "tracking_min_score",
        "tracking_max_jump", "tracking_reacquire_ratio", "tracking_velocity", "tracking_arbitrate",
        "tracking_anchor_pose", "tracking_pose_window", "tracking_filter", "tracking_min_cutoff", "tracking_beta"}
    assert set(params.PARAMETERS_BY_NAME) == expected
    assert params.REFERENCE_PARAMETERS == {"reference_file", "reference_image", "reference_depth",
                                           "reference_intrinsics"}
    assert params.SYNC_PARAMETERS == {"sync_slop", "sync_buffer_size", "stamp_source", "sync_time_jump_reset"}
    assert {"multiscale", "grid", "score_calibration", "matcher", "max_image_pixels"} <= params.MODEL_PARAMETERS
    with pytest.raises(ConfigError, match="stamp_source must be one of"):
        params.check_node_choices({"stamp_source": "gps"})
    params.check_node_choices({"stamp_source": "arrival", "reference_intrinsics": None})


def test_docs_list_every_parameter_and_topic() -> None:
    from semcorr_ros.ros.node import INPUT_TOPICS
    from semcorr_ros.ros.outputs import OUTPUT_TOPICS

    text = (EXAMPLE_YAML.parent.parent / "docs" / "node.md").read_text()
    missing = [p.name for p in params.PARAMETERS if f"| `{p.name}` |" not in text]
    assert not missing, f"docs/node.md lacks parameters {missing}"
    for topic in [*INPUT_TOPICS.values(), *OUTPUT_TOPICS.values()]:
        assert f"`{topic}`" in text, topic


def test_kind_throttle() -> None:
    from semcorr_ros.ros.diagnostics import KindThrottle

    t = KindThrottle(period=5.0)
    assert t.allow("depth image: 12 bad", now=0.0) == 0
    assert t.allow("depth image: 13 bad", now=1.0) is None  # same kind (digits ignored)
    assert t.allow("colour image: bad", now=1.0) == 0  # another kind
    assert t.allow("depth image: 14 bad", count=3, now=2.0) is None
    assert t.allow("depth image: 15 bad", now=6.0) == 4
