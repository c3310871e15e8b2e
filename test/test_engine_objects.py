"""Several objects, several views per object: one encode of the live frame, the best view chosen per object,
missing keypoints filled from another view (toy feature sources with known answers)."""

from __future__ import annotations

import numpy as np
import pytest

from semcorr_ros.config import EngineConfig
from semcorr_ros.engine import CorrespondenceEngine
from semcorr_ros.errors import InputError, NoReferenceError
from semcorr_ros.reference import ObjectSpec, ReferenceSpec

from _toy import ToySource, texture  # noqa: E402  (test helper next to this file)


class CountingSource(ToySource):
    """A toy source that counts its forward passes."""

    calls = 0

    def forward_features(self, images):
        CountingSource.calls += 1
        return super().forward_features(images)


def make_engine(**cfg):
    cfg.setdefault("kbc", "off")
    cfg.setdefault("grid", 16)
    return CorrespondenceEngine(EngineConfig(device="cpu", fusion_weights="none", **cfg),
                                sources=[CountingSource(), ToySource(seed=1, name="toy2")])


def _spec(rid: str, image: np.ndarray, kps: dict) -> ReferenceSpec:
    return ReferenceSpec(rid, image, list(kps), np.array(list(kps.values()), float))


def _scene(patches: list[tuple[np.ndarray, int, int]], size: int = 160) -> np.ndarray:
    out = np.zeros((size, size, 3), np.uint8)
    for img, y, x in patches:
        out[y:y + img.shape[0], x:x + img.shape[1]] = img
    return out


def test_one_object_one_view_equals_match():
    img = texture(128, 128, seed=3)
    kps = {"a": (40.0, 40.0), "b": (80.0, 48.0), "c": (56.0, 88.0)}
    eng = make_engine()
    eng.set_reference(img, np.array(list(kps.values())), names=list(kps), reference_id="mug")
    live = np.roll(img, (8, 16), axis=(0, 1))
    single = eng.match(live)
    [obj] = eng.match_objects(live)
    assert obj.object_id == "mug" and obj.view_id == "mug" and obj.view_index == 0
    np.testing.assert_array_equal(obj.result.xy, single.xy)
    np.testing.assert_array_equal(obj.result.score, single.score)
    np.testing.assert_array_equal(obj.source_view, [0, 0, 0])


def test_the_view_that_shows_the_frame_is_chosen_and_missing_keypoints_come_from_others():
    front, back = texture(64, 64, seed=10), texture(64, 64, seed=11)
    # the "front" view shows rim + handle, the "back" view rim + logo; the live frame shows the back at (40, 70)
    views = [_spec("front", _scene([(front, 48, 48)], 160), {"rim": (60, 60), "handle": (90, 80)}),
             _spec("back", _scene([(back, 48, 48)], 160), {"rim": (60, 62), "logo": (80, 90)})]
    eng = make_engine()
    eng.set_objects([ObjectSpec("mug", views)])
    live = _scene([(back, 40, 70)], 160)  # back texture moved by (+22, -8)
    [obj] = eng.match_objects(live)
    assert obj.view_id == "back" and obj.view_index == 1
    assert obj.view_scores[1] > obj.view_scores[0]
    r = obj.result
    assert r.names == ["rim", "handle", "logo"]
    np.testing.assert_allclose(r.xy[[0, 2]], np.array([[60, 62], [80, 90]]) + [22, -8], atol=4)
    assert list(obj.source_view[[0, 2]]) == [1, 1]
    np.testing.assert_allclose(r.ref_xy[[0, 2]], [[60, 62], [80, 90]])
    # the handle is only in the front view: filled from it when matched validly, else no view has it
    assert obj.source_view[1] in (-1, 0)
    assert (obj.source_view[1] == 0) == bool(r.valid[1])
    if obj.source_view[1] == -1:
        assert np.isnan(r.xy[1]).all() and r.score[1] == 0


def test_two_objects_share_one_encode_of_the_frame():
    mug, bottle = texture(48, 48, seed=20), texture(48, 48, seed=21)
    eng = make_engine()
    eng.set_objects([ObjectSpec("mug", [_spec("mug", _scene([(mug, 56, 56)], 256), {"m1": (70, 70),
                                                                                       "m2": (90, 85)})]),
                     ObjectSpec("bottle", [_spec("bottle", _scene([(bottle, 56, 56)], 256),
                                                 {"b1": (66, 75), "b2": (88, 64)})])])
    live = _scene([(mug, 8, 8), (bottle, 104, 104)], 256)
    CountingSource.calls = 0
    res = eng.match_objects(live)
    assert CountingSource.calls == 1  # the backbones ran once for both objects
    assert [o.object_id for o in res] == ["mug", "bottle"]
    np.testing.assert_allclose(res[0].result.xy, np.array([[70, 70], [90, 85]]) - 48, atol=8)  # half a cell
    np.testing.assert_allclose(res[1].result.xy, np.array([[66, 75], [88, 64]]) + 48, atol=8)
    assert res[0].result.timings["features_shared"] == res[1].result.timings["features_shared"] > 0


def test_bad_objects_keep_the_previous_ones():
    eng = make_engine()
    with pytest.raises(NoReferenceError):
        eng.match_objects(texture(64, 64))
    good = [ObjectSpec("a", [_spec("a", texture(64, 64, seed=1), {"k": (10, 10)})])]
    eng.set_objects(good)
    for bad in ([], [ObjectSpec("b", [_spec("b", texture(64, 64), {"k": (200, 10)})])],  # keypoint outside
                good + good):
        with pytest.raises(InputError):
            eng.set_objects(bad)
        assert [o.object_id for o in eng.objects] == ["a"] and eng.reference.reference_id == "a"


def test_match_pair_leaves_the_objects_active():
    eng = make_engine()
    views = [_spec("v0", texture(64, 64, seed=1), {"k": (10, 10)}), _spec("v1", texture(64, 64, seed=2),
                                                                          {"k": (20, 20)})]
    eng.set_objects([ObjectSpec("a", views)])
    eng.match_pair(texture(64, 64, seed=5), np.array([[5.0, 5.0]]), texture(64, 64, seed=6))
    assert [o.object_id for o in eng.objects] == ["a"] and len(eng.objects[0].views) == 2
