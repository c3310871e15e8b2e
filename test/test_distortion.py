"""Lens distortion for 3D lifting: the forward models (hand values), undistortion by Newton iteration (round trips
over whole images with real cameras' coefficients), lifting distorted pixels, CameraInfo -> camera model, and the
engine's ``distortion`` keyword."""

from __future__ import annotations

import numpy as np
import pytest
from sensor_msgs.msg import CameraInfo

from semcorr_ros.engine.geometry import Distortion, backproject, distort_points, lift, undistort_points, validate_depth
from semcorr_ros.errors import InputError
from semcorr_ros.ros.camera import camera_info_to_camera

# Coefficients of the order real calibrations give (CameraInfo.d order).
CAMERAS = {
    # RealSense D415 colour, Brown-Conrady as a raw calibration reports it
    "realsense_plumb_bob": (np.array([[615.0, 0.0, 320.5], [0.0, 614.0, 240.2], [0.0, 0.0, 1.0]]),
                            Distortion("plumb_bob", (0.12, -0.25, 0.0005, -0.0003, 0.1)), (640, 480)),
    # Azure Kinect colour camera (rational polynomial, 1280x720)
    "kinect_color": (np.array([[605.0, 0.0, 638.1], [0.0, 604.8, 367.0], [0.0, 0.0, 1.0]]),
                     Distortion("rational_polynomial", (0.53, -2.6, 0.0007, -0.0003, 1.5, 0.41, -2.43, 1.43)),
                     (1280, 720)),
    # Azure Kinect depth camera, wide field of view (120 degrees), strong distortion
    "kinect_depth_wfov": (np.array([[252.0, 0.0, 256.0], [0.0, 252.0, 256.0], [0.0, 0.0, 1.0]]),
                          Distortion("rational_polynomial", (2.6, 1.6, 0.0001, -0.0001, 0.08, 2.93, 2.52, 0.43)),
                          (512, 512)),
    # barrel distortion of a wide webcam, with skew in K
    "barrel_skew": (np.array([[500.0, 1.5, 320.0], [0.0, 505.0, 240.0], [0.0, 0.0, 1.0]]),
                    Distortion("plumb_bob", (-0.35, 0.15, 0.001, -0.002, -0.03)), (640, 480)),
}
# RealSense T265 fisheye (Kannala-Brandt): its corners lie outside the 90-degree image circle
FISHEYE = (np.array([[285.7, 0.0, 424.0], [0.0, 285.8, 400.2], [0.0, 0.0, 1.0]]),
           Distortion("equidistant", (-0.0069, 0.0437, -0.0412, 0.0077)), (848, 800))
K0 = np.array([[500.0, 0.0, 320.0], [0.0, 400.0, 240.0], [0.0, 0.0, 1.0]])


def pixel_grid(size: tuple[int, int], n: int = 61) -> np.ndarray:
    w, h = size
    gx, gy = np.meshgrid(np.linspace(-0.5, w - 0.5, n), np.linspace(-0.5, h - 0.5, n))
    return np.stack([gx.ravel(), gy.ravel()], axis=1)


# --- Distortion ---------------------------------------------------------------------------------------------

def test_distortion_validates_model_count_and_values():
    d = Distortion("plumb_bob", [0.1, 0, 0, 0, 0])
    assert d.coeffs == (0.1, 0.0, 0.0, 0.0, 0.0) and not d.is_zero
    assert Distortion("equidistant", (0, 0, 0, 0)).is_zero
    with pytest.raises(InputError, match="plumb_bob, rational_polynomial, equidistant"):
        Distortion("fov", (0.1,))
    with pytest.raises(InputError, match="needs 8"):
        Distortion("rational_polynomial", (0.1,) * 5)
    with pytest.raises(InputError, match="finite"):
        Distortion("plumb_bob", (np.nan, 0, 0, 0, 0))
    with pytest.raises(InputError):
        Distortion("plumb_bob", ("a", 0, 0, 0, 0))


# --- forward model: hand-computed values --------------------------------------------------------------------

def test_distort_points_hand_values():
    xn = np.array([[0.1, 0.2]])  # r^2 = 0.05
    radial = distort_points(xn, K0, Distortion("plumb_bob", (0.1, 0, 0, 0, 0)))  # g = 1.005
    np.testing.assert_allclose(radial, [[500 * 0.1005 + 320, 400 * 0.201 + 240]], rtol=0, atol=1e-12)
    tangential = distort_points(xn, K0, Distortion("plumb_bob", (0, 0, 0.01, 0, 0)))
    # x' = x + 2 p1 x y = 0.1004, y' = y + p1 (r^2 + 2 y^2) = 0.2013
    np.testing.assert_allclose(tangential, [[500 * 0.1004 + 320, 400 * 0.2013 + 240]], rtol=0, atol=1e-12)
    tangential2 = distort_points(xn, K0, Distortion("plumb_bob", (0, 0, 0, 0.01, 0)))
    # x' = x + p2 (r^2 + 2 x^2) = 0.1007, y' = y + 2 p2 x y = 0.2004
    np.testing.assert_allclose(tangential2, [[500 * 0.1007 + 320, 400 * 0.2004 + 240]], rtol=0, atol=1e-12)
    full = distort_points(xn, K0, Distortion("rational_polynomial", (0.1, 0.2, 0, 0, 0.3, 0.4, 0.5, 0.6)))
    g = (1 + 0.1 * 0.05 + 0.2 * 0.05 ** 2 + 0.3 * 0.05 ** 3) / (1 + 0.4 * 0.05 + 0.5 * 0.05 ** 2 + 0.6 * 0.05 ** 3)
    np.testing.assert_allclose(full, [[500 * 0.1 * g + 320, 400 * 0.2 * g + 240]], rtol=0, atol=1e-12)
    rational = distort_points(xn, K0, Distortion("rational_polynomial", (0.1, 0, 0, 0, 0, 0.2, 0, 0)))
    g = 1.005 / 1.01
    np.testing.assert_allclose(rational, [[500 * 0.1 * g + 320, 400 * 0.2 * g + 240]], rtol=0, atol=1e-12)
    fisheye = distort_points(np.array([[1.0, 0.0], [0.0, 0.0]]), K0, Distortion("equidistant", (0.1, 0, 0, 0)))
    theta_d = np.pi / 4 * (1 + 0.1 * np.pi ** 2 / 16)  # theta = atan(1); scale theta_d / r with r = 1
    np.testing.assert_allclose(fisheye, [[500 * theta_d + 320, 240], [320, 240]], rtol=0, atol=1e-12)
    t = np.pi / 4
    theta_d = t * (1 + 0.1 * t ** 2 + 0.2 * t ** 4 + 0.3 * t ** 6 + 0.4 * t ** 8)
    fisheye = distort_points(np.array([[0.6, 0.8]]), K0, Distortion("equidistant", (0.1, 0.2, 0.3, 0.4)))  # r = 1
    np.testing.assert_allclose(fisheye, [[500 * 0.6 * theta_d + 320, 400 * 0.8 * theta_d + 240]], rtol=0,
                               atol=1e-12)


def test_rational_with_unit_denominator_equals_plumb_bob():
    rng = np.random.default_rng(0)
    xn = rng.uniform(-0.6, 0.6, (200, 2))
    c = (0.1, -0.2, 0.001, 0.002, 0.05)
    np.testing.assert_array_equal(distort_points(xn, K0, Distortion("plumb_bob", c)),
                                  distort_points(xn, K0, Distortion("rational_polynomial", c + (0, 0, 0))))


# --- undistortion -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(CAMERAS))
def test_round_trip_over_the_whole_image_below_a_micro_pixel(name):
    K, d, size = CAMERAS[name]
    px = pixel_grid(size)
    xn = undistort_points(px, K, d)
    assert np.isfinite(xn).all(), "every pixel of a calibrated image must undistort"
    assert np.abs(distort_points(xn, K, d) - px).max() < 1e-6
    # and from the other side: undistorted rays of the field of view -> pixels -> rays
    np.testing.assert_allclose(undistort_points(distort_points(xn, K, d), K, d), xn, rtol=0, atol=1e-9)
    # distortion is not negligible here (the test would pass trivially otherwise)
    assert np.abs(undistort_points(px, K, None) - xn).max() * K[0, 0] > 2.0


def test_fisheye_round_trip_inside_the_image_circle_and_nan_outside():
    K, d, size = FISHEYE
    px = pixel_grid(size)
    xn = undistort_points(px, K, d)
    ok = np.isfinite(xn).all(axis=1)
    assert np.abs(distort_points(xn[ok], K, d) - px[ok]).max() < 1e-6
    r_pix = np.hypot(*(px - K[:2, 2]).T)
    assert ok[r_pix < 350].all()        # theta < ~75 degrees: inside the circle
    assert not ok[r_pix > 450].any()    # beyond theta_d(90 degrees) ~ 1.44 rad * 285 px: no ray in front
    np.testing.assert_array_equal(ok, np.isfinite(xn).any(axis=1))  # whole rows NaN


def test_folded_region_and_bad_rows_are_nan():
    K = K0
    d = Distortion("plumb_bob", (-0.5, 0, 0, 0, 0))  # x' = x (1 - 0.5 r^2) folds at r^2 = 2/3, r' <= 0.544
    px = np.array([[320 + 500 * 0.5, 240.0], [320 + 500 * 0.6, 240.0], [np.nan, 3.0], [np.inf, 0.0]])
    xn = undistort_points(px, K, d)
    assert np.isfinite(xn[0]).all() and abs(xn[0, 0] * (1 - 0.5 * xn[0, 0] ** 2) - 0.5) < 1e-12
    assert np.isnan(xn[1:]).all()


def test_zero_distortion_is_plain_inverse_intrinsics():
    xy = pixel_grid((640, 480), 11)
    expect = np.linalg.solve(K0, np.c_[xy, np.ones(len(xy))].T).T[:, :2]
    for d in (None, Distortion("plumb_bob", (0.0,) * 5), Distortion("equidistant", (0.0,) * 4)):
        np.testing.assert_allclose(undistort_points(xy, K0, d), expect, rtol=0, atol=1e-15)
        np.testing.assert_allclose(distort_points(expect, K0, d), xy, rtol=0, atol=1e-12)


def test_bad_arguments_raise_input_errors():
    with pytest.raises(InputError, match="Distortion or None"):
        undistort_points(np.zeros((1, 2)), K0, (0.1, 0, 0, 0, 0))
    with pytest.raises(InputError):
        undistort_points(np.zeros((3,)), K0, None)
    with pytest.raises(InputError):
        distort_points(np.zeros((2, 2)), np.eye(2), None)
    assert undistort_points(np.zeros((0, 2)), K0, CAMERAS["kinect_color"][1]).shape == (0, 2)


# --- backproject / lift -------------------------------------------------------------------------------------

def _old_backproject(xy: np.ndarray, z: np.ndarray, k: np.ndarray) -> np.ndarray:
    """backproject as it was before distortion support (the reference for bit-identity)."""
    rays = np.linalg.solve(k, np.concatenate([xy, np.ones((xy.shape[0], 1))], axis=1).T).T
    with np.errstate(invalid="ignore"):
        bad = ~(np.isfinite(z) & (z > 0)) | ~np.all(np.isfinite(xy), axis=1)
    pts = rays * z[:, None]
    pts[bad] = np.nan
    return pts


def test_zero_distortion_backproject_and_lift_are_bit_identical():
    rng = np.random.default_rng(2)
    k = K0.copy()
    k[0, 1] = 2.0
    xy = np.r_[rng.uniform(0, 640, (40, 2)), [[np.nan, 1.0]]]
    z = np.r_[rng.uniform(0.2, 5.0, 38), [np.nan, -1.0, 2.0]]
    old = _old_backproject(xy, z, k)
    depth = validate_depth(rng.uniform(0.3, 4.0, (480, 640)).astype(np.float32))
    old_lift = lift(depth, xy, k)
    for d in (None, Distortion("plumb_bob", (0.0,) * 5), Distortion("rational_polynomial", (0.0,) * 8)):
        np.testing.assert_array_equal(backproject(xy, z, k, d), old)
        pts, ok = lift(depth, xy, k, distortion=d)
        np.testing.assert_array_equal(pts, old_lift[0])
        np.testing.assert_array_equal(ok, old_lift[1])


@pytest.mark.parametrize("name", ["realsense_plumb_bob", "kinect_color", "barrel_skew"])
def test_lifted_point_of_a_distorted_pixel_is_the_true_point(name):
    K, d, (w, h) = CAMERAS[name]
    rng = np.random.default_rng(3)
    # true points spread over the view, 0.5..3 m
    z = rng.uniform(0.5, 3.0, 12)
    px_true = rng.uniform([40, 40], [w - 40, h - 40], (12, 2))
    truth = np.c_[undistort_points(px_true, K, d) * z[:, None], z]
    px = distort_points(truth[:, :2] / truth[:, 2:], K, d)   # where the camera sees them
    depth = np.full((h, w), np.nan, np.float32)
    for (x, y), zz in zip(np.floor(px + 0.5).astype(int), z):
        depth[y - 2:y + 3, x - 2:x + 3] = zz                 # each point's own depth around its pixel
    pts, ok = lift(depth, px, K, radius=1, distortion=d)
    assert ok.all()
    np.testing.assert_allclose(pts, truth, rtol=0, atol=1e-6)  # float32 depth: ~1e-7 relative
    pinhole, _ = lift(depth, px, K, radius=1)
    assert np.abs(pinhole - truth).max() > 1e-3               # the pinhole lift is off by millimetres at least


def test_lift_marks_pixels_that_cannot_be_undistorted():
    K, d, (w, h) = FISHEYE
    depth = np.full((h, w), 1.0, np.float32)
    pts, ok = lift(depth, np.array([[424.0, 400.0], [1.0, 1.0]]), K, distortion=d)  # centre; a corner
    assert ok.tolist() == [True, False]
    # 0.2 px off the centre: tan(theta) / theta_d - 1 ~ theta^2 (1/3 - k1) ~ 2e-7 of the pinhole ray
    np.testing.assert_allclose(pts[0], [0.0, (400.0 - 400.2) / 285.8, 1.0], rtol=1e-6, atol=1e-12)
    assert np.isnan(pts[1]).all()


# --- CameraInfo -> (K, distortion) --------------------------------------------------------------------------

def camera_info(model: str = "plumb_bob", d=(0.0,) * 5, k=None, p=None) -> CameraInfo:
    msg = CameraInfo(width=640, height=480, distortion_model=model, d=[float(v) for v in d])
    msg.k = np.asarray(k if k is not None else K0, dtype=np.float64).reshape(9)
    msg.p = np.asarray(p if p is not None else np.c_[K0, np.zeros(3)], dtype=np.float64).reshape(12)
    return msg


@pytest.mark.parametrize("model,n", [("plumb_bob", 5), ("rational_polynomial", 8), ("equidistant", 4)])
def test_camera_info_models(model, n):
    coeffs = tuple(0.01 * (i + 1) for i in range(n))
    K, d = camera_info_to_camera(camera_info(model, coeffs))
    np.testing.assert_array_equal(K, K0)
    assert d == Distortion(model, coeffs)


def test_camera_info_without_distortion_gives_none():
    assert camera_info_to_camera(camera_info("plumb_bob", (0.0,) * 5))[1] is None
    assert camera_info_to_camera(camera_info("", ()))[1] is None
    assert camera_info_to_camera(camera_info("", (0.0,) * 5))[1] is None
    assert camera_info_to_camera(camera_info("some_future_model", (0.0,) * 3))[1] is None  # nothing to apply


def test_camera_info_accepts_zero_padding_only():
    K, d = camera_info_to_camera(camera_info("rational_polynomial", (0.1,) * 8 + (0.0,) * 6))  # OpenCV's 14
    assert d == Distortion("rational_polynomial", (0.1,) * 8)
    with pytest.raises(InputError, match="8 coefficients"):
        camera_info_to_camera(camera_info("rational_polynomial", (0.1,) * 8 + (0.0, 0.3)))  # thin prism s1
    with pytest.raises(InputError, match="5 coefficients"):
        camera_info_to_camera(camera_info("plumb_bob", (0.1, 0.0, 0.0, 0.0)))


def test_camera_info_bad_distortion_raises():
    with pytest.raises(InputError, match="plumb_bob, rational_polynomial, equidistant"):
        camera_info_to_camera(camera_info("fov", (0.9,)))
    with pytest.raises(InputError, match="plumb_bob"):
        camera_info_to_camera(camera_info("", (0.1, 0, 0, 0, 0)))  # coefficients without a model
    with pytest.raises(InputError, match="non-finite"):
        camera_info_to_camera(camera_info("plumb_bob", (np.nan, 0, 0, 0, 0)))
    with pytest.raises(InputError, match="all zero"):
        camera_info_to_camera(camera_info(k=np.zeros(9)))


def test_camera_info_rectified_uses_p_and_no_distortion():
    P = np.array([[480.0, 0.0, 330.0, -24.0], [0.0, 481.0, 250.0, 0.0], [0.0, 0.0, 1.0, 0.0]])  # right stereo
    K, d = camera_info_to_camera(camera_info("plumb_bob", (0.1, 0, 0, 0, 0), p=P), rectified=True)
    np.testing.assert_array_equal(K, P[:, :3])
    assert d is None
    with pytest.raises(InputError, match="all zero"):
        camera_info_to_camera(camera_info(p=np.zeros(12)), rectified=True)  # image_proc needs a calibration
    bad = P.copy()
    bad[2, 0] = 0.5
    with pytest.raises(InputError, match=r"\[0, 0, 1\]"):
        camera_info_to_camera(camera_info(p=bad), rectified=True)


def test_camera_info_end_to_end_lift():
    K, d, (w, h) = CAMERAS["realsense_plumb_bob"]
    Kc, dc = camera_info_to_camera(camera_info("plumb_bob", d.coeffs, k=K))
    truth = np.array([[0.3, -0.2, 1.2]])
    px = distort_points(truth[:, :2] / truth[:, 2:], K, d)
    pts, ok = lift(np.full((h, w), 1.2, np.float32), px, Kc, distortion=dc)
    assert ok.all()
    np.testing.assert_allclose(pts, truth, atol=1e-6)


# --- engine -------------------------------------------------------------------------------------------------

def test_engine_match_lifts_live_keypoints_with_the_distortion():
    from semcorr_ros.config import EngineConfig
    from semcorr_ros.engine import CorrespondenceEngine

    from _toy import ToySource, texture

    eng = CorrespondenceEngine(EngineConfig(device="cpu", fusion_weights="none", kbc="off", grid=16),
                               sources=[ToySource()])
    K = np.array([[200.0, 0, 63.5], [0, 200.0, 63.5], [0, 0, 1]])
    d = Distortion("plumb_bob", (-0.3, 0.1, 0.002, 0.001, 0.0))
    img = texture(128, 128, seed=4)
    depth = np.full((128, 128), 1500, np.uint16)
    kps = np.array([[20.0, 25.0], [100.0, 30.0], [60.0, 90.0], [30.0, 105.0]])
    eng.set_reference(img, kps, depth=depth, intrinsics=K)
    plain = eng.match(img, depth, K)
    res = eng.match(img, depth, K, distortion=d)
    np.testing.assert_array_equal(res.xy, plain.xy)  # matching does not see the distortion
    assert res.has_3d.all()
    expect, _ = lift(validate_depth(depth), res.xy, K, distortion=d)
    np.testing.assert_allclose(res.points3d, expect, rtol=0, atol=1e-12)
    assert np.abs(res.points3d - plain.points3d).max() > 1e-3
    zero = eng.match(img, depth, K, distortion=Distortion("plumb_bob", (0.0,) * 5))
    np.testing.assert_array_equal(zero.points3d, plain.points3d)
    with pytest.raises(InputError, match="Distortion"):
        eng.match(img, depth, K, distortion=(0.1, 0, 0, 0, 0))
