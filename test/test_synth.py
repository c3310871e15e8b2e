"""`semcorr_ros.lab.synth` Python API: shape families, rendering, ground truth, determinism, options."""

import numpy as np
import pytest

from semcorr_ros.errors import ConfigError
from semcorr_ros.groundtruth import FrameGroundTruth, relative_pose
from semcorr_ros.lab.synth import CATEGORIES, SceneSpec, get_category, render_scene
from semcorr_ros.lab.synth.scene import _build_world, view_pose

W, H = 160, 120


@pytest.fixture(scope="module")
def o3d():
    from semcorr_ros.lab.synth.o3d import open3d

    return open3d()


@pytest.fixture(scope="module")
def scenes():
    """One small scene per category (rate 3 Hz: 6 frames span 2 s of the orbit)."""
    return {c: render_scene(SceneSpec(c, seed=5, frames=6, width=W, height=H, rate=3.0)) for c in CATEGORIES}


@pytest.fixture(scope="module")
def rendered(scenes):
    return {c: list(s.frames) for c, s in scenes.items()}


def test_categories_are_families_with_keypoints_on_the_surface(o3d):
    assert {"mug", "bottle", "lamp"} <= set(CATEGORIES)
    for name, cat in CATEGORIES.items():
        models = [cat.instance(np.random.default_rng(s)) for s in range(4)]
        for m in models:
            assert len(m.names) >= 6 and len(set(m.names)) == len(m.names) and m.names == list(cat.names)
            scene = o3d.t.geometry.RaycastingScene()
            scene.add_triangles(o3d.core.Tensor(m.mesh.vertices.astype(np.float32)),
                                o3d.core.Tensor(m.mesh.triangles.astype(np.uint32)))
            dist = scene.compute_distance(o3d.core.Tensor(m.keypoints.astype(np.float32))).numpy()
            assert dist.max() < 1e-3, (name, dict(zip(m.names, dist)))
            # canonical frame: standing on z = 0, z up
            assert abs(m.mesh.vertices[:, 2].min()) < 1e-9 and m.mesh.vertices[:, 2].max() > 0.05
        # real intra-class variation: parameters, sizes and keypoint layouts differ between instances
        heights = [m.mesh.vertices[:, 2].max() for m in models]
        assert np.ptp(heights) > 0.005
        kp = np.stack([m.keypoints for m in models])
        assert np.abs(kp - kp[0]).max() > 0.005
        assert models[0].params != models[1].params


def test_mug_handle_occluded_from_the_opposite_side():
    mug = get_category("mug").instance(np.random.default_rng(1))
    rng = np.random.default_rng(0)
    world, T_wo = _build_world(mug, rng, rng, None, 0.0, 2.5, 2.6, (0.0, 0.0), shadows=False)
    c = mug.centre
    deg = np.pi / 180
    idx = {n: i for i, n in enumerate(mug.names)}
    from_handle = world.visibility(view_pose(c, 0.0, 0.0, 5 * deg, 0.5), mug.keypoints)
    opposite = world.visibility(view_pose(c, 0.0, 180 * deg, 5 * deg, 0.5), mug.keypoints)
    assert from_handle[idx["handle_outer"]] and not opposite[idx["handle_outer"]]
    assert from_handle[idx["base_front"]] and not opposite[idx["base_front"]]
    assert opposite[idx["base_back"]] and not from_handle[idx["base_back"]]
    # from above, the rim is visible all round but the underside of the handle is not
    above = world.visibility(view_pose(c, 0.0, 30 * deg, 60 * deg, 0.5), mug.keypoints)
    assert all(above[idx[f"rim_{s}"]] for s in ("front", "left", "back", "right"))
    assert not above[idx["handle_bottom"]]


def test_frames_arrays_and_ground_truth_are_consistent(scenes, rendered):
    for cat, frames in rendered.items():
        scene = scenes[cat]
        assert len(frames) == 6
        for i, (rgb, depth, K, gt) in enumerate(frames):
            assert rgb.shape == (H, W, 3) and rgb.dtype == np.uint8
            assert depth.shape == (H, W) and depth.dtype == np.uint16
            assert K.shape == (3, 3) and abs(K[0, 0] - 615 * W / 640) < 1e-9
            assert isinstance(gt, FrameGroundTruth) and gt.category == cat and gt.frame_index == i
            assert gt.stamp_ns == scene.spec.start_ns + round(i * 1e9 / 3.0)
            # projection: K @ kp3d == kp2d
            p = gt.keypoints_3d @ K.T
            np.testing.assert_allclose(p[:, :2] / p[:, 2:], gt.keypoints_2d, atol=1e-6)
            # object pose maps the canonical keypoints to the camera frame
            kp_obj = np.c_[scene.model.keypoints, np.ones(len(scene.names))]
            np.testing.assert_allclose((gt.object_pose @ kp_obj.T).T[:, :3], gt.keypoints_3d, atol=1e-9)
            x, y = gt.keypoints_2d.T
            inside = (x >= -0.5) & (x <= W - 0.5) & (y >= -0.5) & (y <= H - 0.5) & (gt.keypoints_3d[:, 2] > 0)
            assert not (gt.visible & ~inside).any()
            assert gt.visible.sum() >= 2
            assert 0 < gt.object_fraction < 0.5
            x0, y0, x1, y1 = gt.object_box
            assert 0 <= x0 <= x1 < W and 0 <= y0 <= y1 < H
            # the JSON record round-trips
            back = FrameGroundTruth.from_json(gt.to_json())
            assert back.names == gt.names and (back.visible == gt.visible).all()
            np.testing.assert_allclose(back.keypoints_2d, gt.keypoints_2d, atol=1e-3)


def test_depth_at_visible_keypoints_matches_their_z(rendered):
    for cat, frames in rendered.items():
        errs = []
        for _, depth, _, gt in frames:
            for (x, y), z, v in zip(gt.keypoints_2d, gt.keypoints_3d[:, 2], gt.visible):
                if v:
                    xi, yi = int(round(x)), int(round(y))
                    patch = depth[max(yi - 1, 0):yi + 2, max(xi - 1, 0):xi + 2].astype(float) / 1000
                    errs.append(np.abs(patch - z).min())  # keypoints on silhouettes: nearest object pixel
        errs = np.asarray(errs)
        assert len(errs) >= 10, cat
        assert np.median(errs) < 0.003 and (errs < 0.01).mean() > 0.9, (cat, errs)


def test_camera_moves_smoothly(scenes):
    s = scenes["mug"]
    pos = np.stack([s.camera_pose(i)[:3, 3] for i in range(6)])
    steps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    assert steps.min() > 0.005  # it moves
    assert steps.max() < 3 * steps.min() + 0.01  # and smoothly


def test_deterministic_and_order_independent():
    spec = SceneSpec("bottle", seed=11, frames=4, width=W, height=H)
    a, b = render_scene(spec), render_scene(spec)
    fb = [b.render(i) for i in (3, 1)]
    for fa, f in zip((a.render(3), a.render(1)), fb):
        assert np.array_equal(fa.rgb, f.rgb) and np.array_equal(fa.depth, f.depth)
        assert fa.gt.to_json() == f.gt.to_json()
    assert np.array_equal(a.reference.image, b.reference.image)


def test_different_seeds_give_different_instances():
    a = render_scene(SceneSpec("mug", seed=1, frames=1, width=W, height=H))
    b = render_scene(SceneSpec("mug", seed=2, frames=1, width=W, height=H))
    assert a.model.params != b.model.params and a.instance != b.instance
    assert not np.array_equal(a.render(0).rgb, b.render(0).rgb)
    # the reference is another instance of the same category
    assert a.reference.instance != a.instance and a.reference.params != a.model.params
    assert a.reference.category == "mug"


def test_reference_view_has_six_keypoints_and_loads(tmp_path, scenes):
    from semcorr_ros.lab.synth.output import write_reference
    from semcorr_ros.reference import load_reference

    for cat, s in scenes.items():
        ref = s.reference
        assert len(ref.names) >= 6, (cat, ref.names, ref.view)
        assert ref.names == [n for n, v in zip(ref.all_names, ref.visible) if v]
        folder = tmp_path / cat
        folder.mkdir()
        spec = load_reference(write_reference(ref, folder))
        assert spec.names == ref.names and spec.reference_id == ref.instance
        np.testing.assert_allclose(spec.keypoints, ref.keypoints, atol=1e-3)
        np.testing.assert_allclose(spec.intrinsics, ref.K)
        assert np.array_equal(spec.image, ref.image)
        ok = ref.depth > 0
        np.testing.assert_allclose(spec.depth[ok], ref.depth[ok] / 1000.0, atol=1e-6)
        assert np.isnan(spec.depth[~ok]).all()
        import yaml

        doc = yaml.safe_load((folder / "reference.yaml").read_text())
        assert doc["category"] == cat and doc["instance"] == ref.instance
        np.testing.assert_allclose(doc["object_pose"], ref.object_pose)
        # the ground-truth reference -> live transform is rigid
        gt = s.render(0).gt
        T = relative_pose(gt.object_pose, np.asarray(doc["object_pose"]))
        np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)


def test_small_object_covers_under_five_percent():
    for cat in CATEGORIES:
        s = render_scene(SceneSpec(cat, seed=2, frames=5, width=W, height=H, rate=2.0, small_object=True))
        fr = [f.gt.object_fraction for f in s.frames]
        assert max(fr) < 0.05 and min(fr) > 0.005, (cat, fr)
        big = render_scene(SceneSpec(cat, seed=2, frames=1, width=W, height=H))
        assert big.render(0).gt.object_fraction > 1.3 * fr[0]


def test_depth_noise_makes_holes_and_perturbs_depth():
    clean = render_scene(SceneSpec("mug", seed=4, frames=2, width=320, height=240))
    noisy = render_scene(SceneSpec("mug", seed=4, frames=2, width=320, height=240, depth_noise=True))
    for i in range(2):
        c, n = clean.render(i), noisy.render(i)
        assert np.array_equal(c.rgb, n.rgb) and c.gt.to_json() == n.gt.to_json()
        cd, nd = c.depth.astype(float), n.depth.astype(float)
        both = (cd > 0) & (nd > 0) & (cd < 3000)
        holes = (nd == 0) & (cd > 0) & (cd < 3000)
        assert 0.01 < holes.sum() / max((cd > 0).sum(), 1) < 0.25  # holes, but most pixels kept
        diff = nd[both] - cd[both]
        assert (diff != 0).mean() > 0.5 and np.abs(diff).mean() < 15  # perturbed by a few mm
        far = c.depth > 4000
        assert (n.depth[far] == 0).all()  # nothing beyond the maximum range
    # object edges lose depth more often than the rest
    gid_edge = np.zeros_like(c.depth, bool)
    d = c.depth.astype(float)
    gid_edge[:, 1:] |= np.abs(np.diff(d, axis=1)) > 50
    assert (n.depth[gid_edge] == 0).mean() > 3 * (n.depth[~gid_edge] == 0).mean()


def test_spec_validation_names_the_problem():
    with pytest.raises(ConfigError, match="unknown category 'cup'.*mug"):
        render_scene(SceneSpec("cup"))
    with pytest.raises(ConfigError, match="frames"):
        SceneSpec(frames=0).validate()
    with pytest.raises(ConfigError, match="width"):
        SceneSpec(width=4).validate()
    with pytest.raises(ConfigError, match="rate"):
        SceneSpec(rate=0).validate()


def test_open3d_import_failure_is_a_clear_error(monkeypatch):
    import sys

    import semcorr_ros.lab.synth.o3d as o3d_mod
    from semcorr_ros.errors import SemcorrError

    monkeypatch.setattr(o3d_mod, "_O3D", None)
    monkeypatch.setitem(sys.modules, "open3d", None)  # makes `import open3d` raise ImportError
    with pytest.raises(SemcorrError, match="cannot import open3d.*open3d-cpu"):
        o3d_mod.open3d()
