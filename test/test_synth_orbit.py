"""`semcorr synth --orbit full`, `--reference-views N` and `--objects a,b`: trajectory, reference sets, several
objects, their files, and that the default scene is untouched by the new options."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from semcorr_ros.cli import main
from semcorr_ros.groundtruth import relative_pose
from semcorr_ros.lab.synth import SceneSpec, render_scene

W, H = 160, 120
SMALL = ["--width", str(W), "--height", str(H), "--no-progress"]


def _object_azimuths(scene) -> np.ndarray:
    """Object-frame azimuth (degrees) of the camera centre in every frame."""
    out = []
    for i in range(len(scene)):
        T_oc = np.linalg.inv(scene.T_world_object) @ scene.camera_pose(i)
        c = T_oc[:3, 3] - scene.model.centre
        out.append(np.degrees(np.arctan2(c[1], c[0])))
    return np.asarray(out)


def test_full_orbit_goes_once_round_the_object_and_sees_every_side():
    scene = render_scene(SceneSpec("mug", seed=1, frames=12, width=W, height=H, orbit="full"))
    az = np.unwrap(np.radians(_object_azimuths(scene)))
    steps = np.degrees(np.diff(az))
    # one turn over the sequence: 360 / frames per frame (the look-at wobble moves the centre a little)
    assert np.all(np.abs(steps - 30.0) < 6.0), steps
    assert 300 < np.degrees(az[-1] - az[0]) < 360
    idx = {n: i for i, n in enumerate(scene.names)}
    vis = np.array([scene.render(i).gt.visible for i in range(len(scene))])
    # the handle is seen from its side and hidden from the other; the back of the base the other way round
    assert vis[:, idx["handle_outer"]].any() and not vis[:, idx["handle_outer"]].all()
    assert vis[:, idx["base_back"]].any() and vis[:, idx["base_front"]].any()
    # the swing orbit keeps to the reference's side: it never sees the base's back
    swing = render_scene(SceneSpec("mug", seed=1, frames=12, width=W, height=H))
    span = np.ptp(np.unwrap(np.radians(_object_azimuths(swing))))
    assert np.degrees(span) < 100


def test_new_options_leave_the_default_scene_alone():
    base = SceneSpec("bottle", seed=4, frames=3, width=W, height=H)
    assert SceneSpec("bottle", seed=4, frames=3, width=W, height=H, orbit="swing") == base
    a = render_scene(base)
    b = render_scene(SceneSpec("bottle", seed=4, frames=3, width=W, height=H, reference_views=3))
    c = render_scene(SceneSpec("bottle", seed=4, frames=3, width=W, height=H, orbit="full"))
    for i in range(3):
        fa, fb = a.render(i), b.render(i)
        assert np.array_equal(fa.rgb, fb.rgb) and np.array_equal(fa.depth, fb.depth)
    assert np.array_equal(a.reference.image, b.reference.image)
    assert not np.array_equal(a.render(2).rgb, c.render(2).rgb)
    assert c.orbit.azimuth(0.0) == c.orbit.az0 == a.orbit.az0  # the same draws; the full turn starts at az0
    assert a.reference.views == [] and len(b.reference.views) == 3


def test_reference_views_spread_round_the_reference_instance_with_consistent_poses():
    scene = render_scene(SceneSpec("mug", seed=2, frames=1, width=W, height=H, reference_views=3))
    ref = scene.reference
    views = ref.views
    assert views[0] is ref and len(views) == 3
    az = [v.view["azimuth_deg"] for v in views]
    for i, a in enumerate(az):
        assert abs(((a - az[0] - 120 * i) + 180) % 360 - 180) < 1e-6
    for v in views:
        assert len(v.names) >= 3 and v.instance == ref.instance
        assert len(set(v.reference_id for v in views)) == 3
        # the same 3D keypoints seen from each view: object_pose maps view 0's camera frame into view i's
        T = relative_pose(v.object_pose, ref.object_pose)
        moved = ref.keypoints_3d @ T[:3, :3].T + T[:3, 3]
        np.testing.assert_allclose(moved, v.keypoints_3d, atol=1e-9)
    # the views see different sides: their visible sets differ
    assert len({tuple(v.names) for v in views}) > 1


def test_spec_validation_of_the_new_options():
    from semcorr_ros.errors import ConfigError

    for bad, what in ((dict(orbit="round"), "orbit"), (dict(reference_views=17), "reference_views"),
                      (dict(reference_views=-1), "reference_views"), (dict(objects=("mug", "cup")), "cup")):
        with pytest.raises(ConfigError, match=what):
            SceneSpec(**bad).validate()


def test_two_objects_apart_with_ground_truth_each():
    both = render_scene(SceneSpec(objects=("mug", "bottle"), seed=3, frames=2, width=W, height=H))
    alone = render_scene(SceneSpec("mug", seed=3, frames=1, width=W, height=H))
    assert both.object_ids == ["mug", "bottle"] and both.instances == ["mug_0003", "bottle_0003"]
    assert both.models[0].params == alone.model.params  # the same instance and reference as the mug alone
    assert np.array_equal(both.references[0].image, alone.reference.image)
    frame, gts = both.render_objects(0)
    assert frame.gt is gts[0] or frame.gt == gts[0]
    assert [g.instance for g in gts] == both.instances and [g.category for g in gts] == ["mug", "bottle"]
    boxes = [g.object_box for g in gts]
    assert all(np.isfinite(b).all() for b in boxes)
    inter = max(0.0, min(boxes[0][2], boxes[1][2]) - max(boxes[0][0], boxes[1][0])) * \
        max(0.0, min(boxes[0][3], boxes[1][3]) - max(boxes[0][1], boxes[1][1]))
    smaller = min((b[2] - b[0]) * (b[3] - b[1]) for b in boxes)
    assert inter < 0.25 * smaller  # placed apart: they overlap little from the orbit's middle
    for g in gts:
        assert 0.02 < g.object_fraction < 0.3
        kp = g.keypoints_2d[g.visible]
        b = g.object_box
        assert len(kp) >= 3
        assert np.all((kp[:, 0] >= b[0] - 2) & (kp[:, 0] <= b[2] + 2) & (kp[:, 1] >= b[1] - 2) & (kp[:, 1] <= b[3] + 2))


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_cli_reference_set_next_to_the_reference(tmp_path):
    from semcorr_ros.reference.sets import load_objects

    plain, withset = tmp_path / "plain", tmp_path / "set"
    assert main(["synth", str(plain), "--frames", "2", "--seed", "5", *SMALL]) == 0
    assert main(["synth", str(withset), "--frames", "2", "--seed", "5", "--reference-views", "3", *SMALL]) == 0
    for name in ("bag/bag.mcap", "reference.yaml", "reference.png", "reference_depth.png"):
        assert _md5(plain / name) == _md5(withset / name), name  # the set adds files, changes none
    assert "orbit" not in json.loads((plain / "scene.json").read_text())
    doc = yaml.safe_load((withset / "reference_set.yaml").read_text())
    assert doc["views"][0] == "reference.yaml" and len(doc["views"]) == 3
    assert doc["ground_truth_instance"] == "mug_0005" and doc["category"] == "mug"
    [obj] = load_objects(withset / "reference_set.yaml")
    assert len(obj.views) == 3 and obj.object_id == "mug"
    assert set(obj.names) >= set(obj.views[0].names)
    for v in doc["views"][1:]:
        assert "object_pose" in yaml.safe_load((withset / v).read_text())
    scene = json.loads((withset / "scene.json").read_text())
    assert scene["reference_views"] == 3 and len(scene["reference_set"]["views"]) == 3
    assert "--reference-views" in scene["command"]


def test_cli_full_orbit_objects_file_and_bag(tmp_path):
    from rosbags.highlevel import AnyReader

    from semcorr_ros.bageval.bag import scan_bag
    from semcorr_ros.groundtruth import GT_TOPIC
    from semcorr_ros.reference.sets import load_objects

    out = tmp_path / "pair"
    assert main(["synth", str(out), "--frames", "2", "--objects", "mug,bottle", "--orbit", "full", *SMALL]) == 0
    objs = load_objects(out / "objects.yaml")
    assert [len(o.views) for o in objs] == [1, 1]
    assert yaml.safe_load((out / "bottle" / "reference.yaml").read_text())["ground_truth_instance"] == "bottle_0000"
    with AnyReader([out / "bag"]) as reader:
        gts = [json.loads(reader.deserialize(raw, c.msgtype).data)["instance"]
               for c, _, raw in reader.messages() if c.topic == GT_TOPIC]
    assert gts == ["mug_0000", "bottle_0000"] * 2
    index = scan_bag(out / "bag")
    assert list(index.ground_truth_by_instance) == ["mug_0000", "bottle_0000"]
    assert {g.instance for g in index.ground_truth.values()} == {"mug_0000"}  # the first object, as before
    scene = json.loads((out / "scene.json").read_text())
    assert scene["orbit"] == "full" and [o["object_id"] for o in scene["objects"]] == ["mug", "bottle"]
    out2 = tmp_path / "pair_set"
    assert main(["synth", str(out2), "--frames", "1", "--objects", "mug,mug", "--reference-views", "2", *SMALL]) == 0
    objs = load_objects(out2 / "objects.yaml")
    assert [o.object_id for o in objs] == ["mug", "mug_2"] and [len(o.views) for o in objs] == [2, 2]


def test_cli_errors_of_the_new_options(tmp_path, capsys):
    for argv, msg in ((["--objects", "mug,cup"], "--objects"), (["--objects", "mug", "--category", "bottle"],
                                                                 "either --objects or --category"),
                      (["--reference-views", "40"], "reference_views")):
        assert main(["synth", str(tmp_path / "x"), "--frames", "1", *SMALL, *argv]) == 1
        err = capsys.readouterr().err
        assert "semcorr synth: error:" in err and msg in err, err
        assert not (tmp_path / "x").exists()
    with pytest.raises(SystemExit) as exc:
        main(["synth", str(tmp_path / "x"), "--orbit", "round"])
    assert exc.value.code == 2


def test_occlusion_hides_the_object_in_its_frames_only():
    base = render_scene(SceneSpec("mug", seed=0, frames=6, width=W, height=H))
    occ = render_scene(SceneSpec("mug", seed=0, frames=6, width=W, height=H, occlusion=(2, 4)))
    for i in range(6):
        a, b = base.render(i), occ.render(i)
        if 2 <= i < 4:
            assert not b.gt.visible.any() and np.isnan(b.gt.object_box).all() and b.gt.object_fraction == 0.0
            assert a.gt.visible.any()
            grey = np.all(b.rgb == 128, axis=2)
            assert grey.mean() > a.gt.object_fraction  # the panel covers more than the object did
            assert np.all(b.depth[grey] <= 300)  # mm: the panel is in front of everything
        else:  # every other frame exactly as without the option
            assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.depth, b.depth)
            assert np.array_equal(a.gt.visible, b.gt.visible)


def test_occlusion_flag_is_checked_and_recorded(tmp_path, capsys):
    assert main(["synth", str(tmp_path / "bad"), "--frames", "4", "--occlusion", "3:1", *SMALL]) == 1
    assert "0 <= START < END" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "bad2"), "--frames", "4", "--occlusion", "x", *SMALL]) == 1
    assert "START:END" in capsys.readouterr().err
    assert main(["synth", str(tmp_path / "ok"), "--frames", "4", "--occlusion", "1:2", *SMALL]) == 0
    doc = json.loads((tmp_path / "ok" / "scene.json").read_text())
    assert doc["occlusion_frames"] == [1, 2] and "--occlusion" in doc["command"]
