"""Engine end to end on a toy feature source with known answers (shift, depth plane), plus bad input."""

import numpy as np
import pytest
import torch

from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import CorrespondenceEngine, depth_aware
from semcorr_ros.errors import ConfigError, InputError, NoReferenceError

from _toy import ToySource, texture  # noqa: E402  (test helper next to this file)

K = np.array([[200.0, 0, 63.5], [0, 200.0, 63.5], [0, 0, 1]])


def make_engine(**cfg):
    cfg.setdefault("kbc", "off")
    cfg.setdefault("grid", 16)  # the toy sources' native lattice
    return CorrespondenceEngine(EngineConfig(device="cpu", fusion_weights="none", **cfg),
                                sources=[ToySource(), ToySource(seed=1, name="toy2")])


def test_shifted_copy_matches_shift():
    img = texture(128, 128, seed=3)
    kps = np.array([[40.0, 40.0], [80.0, 48.0], [56.0, 88.0]])
    eng = make_engine()
    eng.set_reference(img, kps, names=["a", "b", "c"])
    live = np.roll(img, (8, 16), axis=(0, 1))               # content moves +16 px in x, +8 px in y
    res = eng.match(live)
    assert res.names == ["a", "b", "c"]
    assert np.abs(res.xy - (kps + [16, 8])).max() <= 4.0
    assert res.valid.all() and (res.score > 0.3).all()
    assert not res.has_3d.any() and res.pose is None


def test_depth_gives_3d_points_and_identity_pose():
    img = texture(128, 128, seed=4)
    depth = np.full((128, 128), 1500, np.uint16)             # plane at 1.5 m
    kps = np.array([[30.0, 30.0], [90.0, 30.0], [60.0, 90.0], [40.0, 70.0], [95.0, 95.0]])
    eng = make_engine(pose_threshold=0.05)  # half a feature cell (4 px) at 1.5 m, f = 200 px: 30 mm
    eng.set_reference(img, kps, depth=depth, intrinsics=K)
    res = eng.match(img, depth, K)
    assert res.depth_weighted
    assert res.has_3d.all()
    assert np.allclose(res.points3d[:, 2], 1.5)
    expect = np.c_[(res.xy - K[:2, 2]) / 200.0 * 1.5, np.full(5, 1.5)]
    assert np.allclose(res.points3d, expect, atol=1e-6)
    assert res.pose is not None and res.pose.valid
    # matches are quantised to feature cells (<= 4 px = 30 mm here): identity within that error
    assert np.allclose(res.pose.R, np.eye(3), atol=0.01) and np.abs(res.pose.t).max() < 0.03


@pytest.mark.parametrize("cells", ["mean", "max"])
def test_depth_aware_rejects_a_same_looking_distractor_at_the_wrong_depth(cells):
    obj = texture(32, 32, seed=5)
    ref = np.zeros((128, 128, 3), np.uint8)
    ref[48:80, 48:80] = obj
    live = np.zeros((128, 128, 3), np.uint8)
    live[8:40, 8:40] = obj                                   # distractor copy, far behind (3 m)
    live[80:112, 80:112] = obj                               # the object at 1 m
    depth = np.full((128, 128), 3.0, np.float32)
    depth[72:120, 72:120] = 1.0
    ref_depth = np.full((128, 128), 1.0, np.float32)
    kps = np.array([[56.0, 56.0], [70.0, 60.0], [60.0, 72.0]])
    eng = make_engine(depth_floor=0.0, depth_cells=cells)
    eng.set_reference(ref, kps, depth=ref_depth)
    # The first pass must pick something at the object's depth to seed the model: bias it by shading the copy.
    live_b = live.copy()
    live_b[8:40, 8:40] = (live[8:40, 8:40] * 0.9).astype(np.uint8)
    with_depth = eng.match(live_b, depth)
    assert with_depth.depth_weighted
    assert np.abs(with_depth.xy - (kps + 32)).max() <= 6.0


def _small_object_scene():
    """A 64 px textured object in a black 256 px frame, moved by whole 16 px cells between reference and live:
    ``(reference, live, reference keypoints, their true live positions)``."""
    obj = texture(64, 64, seed=6)
    ref = np.zeros((256, 256, 3), np.uint8)
    ref[96:160, 96:160] = obj
    live = np.zeros((256, 256, 3), np.uint8)
    live[144:208, 32:96] = obj
    kps = np.array([[103.5, 103.5], [135.5, 103.5], [119.5, 135.5], [103.5, 135.5]]) + 0.5  # integer boxes
    return ref, live, kps, kps + [-64, 48]


def test_kbc_on_small_object_crops_and_maps_back():
    # Toy features are neither scale invariant nor shift invariant below their stride (16 px here), so the
    # geometry is exact: keypoints at cell centres, the object moves by whole cells, plain argmax. The first
    # pass is then exact on the coarse grid, the live crop is framed exactly like the reference crop, and the
    # crop pass matches inside cells 4x finer and maps back. (Real features tolerate the framing error of a real
    # first pass; these do not, hence the exact set-up.)
    ref, live, kps, truth = _small_object_scene()
    full = make_engine(softargmax_radius=0)
    full.set_reference(ref, kps)
    err_full = np.abs(full.match(live).xy - truth).max()
    eng = make_engine(kbc="auto", kbc_margin=0.5, kbc_max_fraction=0.1, softargmax_radius=0)
    eng.set_reference(ref, kps)
    res = eng.match(live)
    assert res.kbc_used and "kbc" in res.timings
    err_kbc = np.abs(res.xy - truth).max()
    # Crop cells are 4 px (64 px crop, 16 cells) instead of 16 px: the result must be within one crop cell.
    # (Whether KBC *helps* depends on the features: measured with real ones by `semcorr eval --kbc on`.)
    assert err_full <= 1.0 and err_kbc <= 2.0, (err_kbc, err_full)
    # A large object does not trigger the crop in auto mode.
    big = make_engine(kbc="auto", kbc_max_fraction=0.01, softargmax_radius=0)
    big.set_reference(ref, kps)
    assert not big.match(live).kbc_used


def test_kbc_crop_refits_the_depth_model_at_the_crop_matches(monkeypatch):
    # A small object at 1 m in front of a wall at 3 m. The full-frame depth model is forced wrong (on the wall,
    # as when a small object's first-pass matches land on the background); the crop pass must not inherit it:
    # its model is fitted again at the crop's own matches, which sit on the object.
    ref, live, kps, truth = _small_object_scene()
    depth = np.full((256, 256), 3.0, np.float32)
    depth[144:208, 32:96] = 1.0                              # where the object is in `live`
    eng = make_engine(kbc="on", kbc_margin=0.5, softargmax_radius=0, depth_floor=0.0)
    eng.set_reference(ref, kps, depth=np.full((256, 256), 1.0, np.float32))
    fitted = []
    original = depth_aware.model_at

    def spy(depth_m, xy, score, extent, cfg):
        model = original(depth_m, xy, score, extent, cfg)
        if depth_m.shape == depth.shape:   # the full-frame fit: pretend it followed the wall
            model = type(model)(mean=3.0, sigma=0.05)
        fitted.append((depth_m.shape, model))
        return model

    monkeypatch.setattr(depth_aware, "model_at", spy)
    res = eng.match(live, depth)
    assert res.kbc_used and res.depth_weighted
    assert len(fitted) == 2 and fitted[0][0] == depth.shape and fitted[1][0] != depth.shape
    assert abs(fitted[1][1].mean - 1.0) < 1e-6
    assert np.abs(res.xy - truth).max() <= 2.0


def test_bad_inputs_raise_typed_errors():
    eng = make_engine()
    img = texture(64, 64)
    with pytest.raises(NoReferenceError):
        eng.match(img)
    with pytest.raises(InputError, match="outside"):
        eng.set_reference(img, np.array([[70.0, 10.0]]))
    with pytest.raises(InputError, match="no keypoints"):
        eng.set_reference(img, np.zeros((0, 2)))
    with pytest.raises(InputError, match=r"\[K, 2\]"):
        eng.set_reference(img, np.zeros((3, 3)))
    with pytest.raises(InputError, match="non-finite"):
        eng.set_reference(img, np.array([[np.nan, 1.0]]))
    with pytest.raises(InputError, match="uint8"):
        eng.set_reference(img.astype(np.int32), np.array([[10.0, 10.0]]))
    with pytest.raises(InputError, match="shape"):
        eng.set_reference(np.zeros((64, 64, 2), np.uint8), np.array([[10.0, 10.0]]))
    eng.set_reference(img, np.array([[10.0, 10.0]]))
    with pytest.raises(InputError, match="size"):
        eng.match(img, depth=np.ones((32, 64), np.float32))
    # All-invalid depth: no 3D, no depth weighting, still 2D matches, no NaN pixels.
    res = eng.match(img, depth=np.full((64, 64), np.nan, np.float32), intrinsics=K)
    assert not res.has_3d.any() and np.isfinite(res.xy).all()
    res = eng.match(img, depth=np.zeros((64, 64), np.uint16), intrinsics=K)
    assert not res.has_3d.any() and not res.depth_weighted
    with pytest.raises(ConfigError, match="kbc"):
        EngineConfig(kbc="sometimes")


def test_failed_set_reference_keeps_previous_reference():
    eng = make_engine()
    img = texture(64, 64)
    eng.set_reference(img, np.array([[10.0, 10.0]]), names=["x"])
    with pytest.raises(InputError):
        eng.set_reference(img, np.array([[100.0, 10.0]]), names=["y"])
    assert eng.reference.names == ["x"]


def test_match_pair_empty_and_restores_reference():
    eng = make_engine()
    img = texture(64, 64)
    assert len(eng.match_pair(img, np.zeros((0, 2)), img).xy) == 0
    eng.set_reference(img, np.array([[10.0, 10.0]]), names=["keep"])
    res = eng.match_pair(img, np.array([[20.0, 20.0], [40.0, 30.0]]), img, src_key="a", tgt_key="a")
    assert np.abs(res.xy - [[20, 20], [40, 30]]).max() <= 4.0
    assert eng.reference.names == ["keep"]


def test_object_box_frames_the_kbc_crop():
    obj = texture(64, 64, seed=6)
    ref = np.zeros((256, 256, 3), np.uint8)
    ref[96:160, 96:160] = obj
    live = np.zeros((256, 256, 3), np.uint8)
    live[144:208, 32:96] = obj
    kps = np.array([[103.5, 103.5], [135.5, 103.5], [119.5, 135.5], [103.5, 135.5]]) + 0.5
    truth = kps + [-64, 48]
    eng = make_engine(kbc="auto", kbc_margin=0.5, kbc_max_fraction=0.1, softargmax_radius=0)
    eng.set_reference(ref, kps)
    # The box of the live keypoints (as a detector would give it): the crop is framed exactly like the reference's.
    lo, hi = truth.min(0), truth.max(0)
    res = eng.match(live, object_box=(*lo, *hi))
    assert res.kbc_used and np.abs(res.xy - truth).max() <= 2.0
    # A box covering most of the frame is not small: no crop.
    assert not eng.match(live, object_box=(0, 0, 250, 250)).kbc_used


def test_batched_encoding_equals_single_and_fills_the_cache():
    eng = make_engine()
    imgs = [texture(64, 80, seed=1), texture(100, 70, seed=2), texture(64, 64, seed=3)]
    batched = eng.encode_maps_batch(imgs, cache_keys=["a", "b", "c"])
    for img, maps in zip(imgs, batched):
        single = eng.encode_maps(img)
        assert len(maps) == len(single) == 2
        for m, s in zip(maps, single):
            assert m.shape == s.shape and torch.allclose(m, s, atol=1e-5)
    assert eng.cached("b") and not eng.cached("d")
    assert eng.encode_maps_batch([]) == []


def test_options_changed_at_run_time_take_effect():
    # The node swaps engine.config when parameters change: the next frame must use the new options.
    img = texture(128, 128, seed=3)
    kps = np.array([[40.0, 40.0], [80.0, 48.0], [56.0, 88.0]])
    live = np.roll(img, (8, 16), axis=(0, 1))
    eng = make_engine()
    eng.set_reference(img, kps)
    eng.config = EngineConfig(device="cpu", fusion_weights="none", kbc="off", grid=16, score_calibration=None,
                              consensus_prior=False)
    fresh = make_engine(score_calibration=None, consensus_prior=False)
    fresh.set_reference(img, kps)
    a, b = eng.match(live), fresh.match(live)
    assert not a.prior_used and np.array_equal(a.score, b.score) and np.array_equal(a.xy, b.xy)
