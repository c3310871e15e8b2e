"""Reference sets and objects files: loading, writing, and every kind of bad file refused with a clear error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from semcorr_ros.errors import BadReferenceError
from semcorr_ros.reference import (
    ObjectSpec,
    load_objects,
    load_reference,
    write_objects,
    write_reference,
    write_reference_set,
)


def _view(folder: Path, name: str, kps: dict[str, tuple[float, float]], depth: bool = False, **kw) -> Path:
    rng = np.random.default_rng(len(name))
    image = rng.integers(0, 255, (48, 64, 3), dtype=np.uint8)
    d = np.full((48, 64), 0.75) if depth else None
    if d is not None:
        d[0, 0] = np.nan
    return write_reference(folder / f"{name}.yaml", image, np.array(list(kps.values())) if kps else None,
                           list(kps), depth=d, intrinsics=[100.0, 101.0, 32.0, 24.0] if depth else None, **kw)


def test_write_reference_round_trips(tmp_path):
    path = _view(tmp_path, "front", {"a": (1.0, 2.5), "b": (60.25, 40.0)}, depth=True, reference_id="mug_front")
    spec = load_reference(path)
    assert spec.reference_id == "mug_front" and spec.names == ["a", "b"]
    np.testing.assert_allclose(spec.keypoints, [[1.0, 2.5], [60.25, 40.0]])
    assert spec.image.shape == (48, 64, 3)
    assert np.isnan(spec.depth[0, 0]) and spec.depth[1, 1] == pytest.approx(0.75, abs=1e-6)
    np.testing.assert_allclose(spec.intrinsics, [[100, 0, 32], [0, 101, 24], [0, 0, 1]])
    [obj] = load_objects(path)
    assert obj.object_id == "mug_front" and [v.reference_id for v in obj.views] == ["mug_front"]


def test_set_of_file_and_inline_views_shares_names(tmp_path):
    _view(tmp_path, "front", {"rim": (10, 10), "handle": (50, 20)})
    _view(tmp_path / "more", "back", {"rim": (12, 11), "base": (30, 40)})
    set_file = write_reference_set(tmp_path / "sets" / "mug.yaml", "mug",
                                   [tmp_path / "front.yaml", tmp_path / "more" / "back.yaml"])
    [obj] = load_objects(set_file)
    assert obj.object_id == "mug"
    assert [v.reference_id for v in obj.views] == ["front", "back"]
    assert obj.names == ["rim", "handle", "base"]
    text = set_file.read_text()
    assert "../front.yaml" in text and "../more/back.yaml" in text  # relative paths: the folder can move
    (tmp_path / "inline.yaml").write_text("views:\n  - front.yaml\n  - image: front.png\n"
                                          "    keypoints: {side: [3, 4]}\n")
    [obj] = load_objects(tmp_path / "inline.yaml")
    assert obj.object_id == "inline" and [v.reference_id for v in obj.views] == ["front", "inline_view1"]
    assert obj.names == ["rim", "handle", "side"]


def test_objects_file_lists_sets_and_single_views(tmp_path):
    _view(tmp_path, "front", {"rim": (10, 10)})
    _view(tmp_path, "bottle", {"cap": (20, 5)})
    mug = write_reference_set(tmp_path / "mug_set.yaml", "mug", [tmp_path / "front.yaml"])
    objects = write_objects(tmp_path / "scene" / "objects.yaml", [mug, tmp_path / "bottle.yaml"])
    objs = load_objects(objects)
    assert [o.object_id for o in objs] == ["mug", "bottle"]
    assert all(isinstance(o, ObjectSpec) for o in objs) and objs[1].names == ["cap"]


@pytest.mark.parametrize("text, message", [
    ("keypoints: {a: [1, 1]}\nviews: [x.yaml]\n", "exactly one of"),
    ("image: front.png\n", "exactly one of"),
    ("views: []\n", "non-empty list"),
    ("views: front.yaml\n", "non-empty list"),
    ("views: [5]\n", "view 0 of reference set"),
    ("views: [front.yaml, front.yaml]\n", "same reference_id 'front'"),
    ("views: [missing.yaml]\n", "not found"),
    ("views: [objects_ok.yaml]\n", "must be a single-view reference"),
    ("objects: [front.yaml, front.yaml]\n", "same object_id 'front'"),
    ("objects: [{image: a.png}]\n", "object 0 of"),
    ("objects: [objects_ok.yaml]\n", "is itself an objects file"),
    ("object_id: [1, 2]\nviews: [front.yaml]\n", "field 'object_id'"),
    ("- front.yaml\n", "must be a YAML mapping"),
])
def test_bad_sets_and_objects_files_name_the_problem(tmp_path, text, message):
    _view(tmp_path, "front", {"rim": (10, 10)})
    (tmp_path / "objects_ok.yaml").write_text("objects: [front.yaml]\n")
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(BadReferenceError, match=message):
        load_objects(tmp_path / "bad.yaml")


def test_limits_on_views_objects_and_keypoints(tmp_path):
    for i in range(3):
        _view(tmp_path, f"v{i}", {f"k{i}a": (1, 1), f"k{i}b": (2, 2)})
    views = [tmp_path / f"v{i}.yaml" for i in range(3)]
    s = write_reference_set(tmp_path / "s.yaml", "obj", views)
    with pytest.raises(BadReferenceError, match="3 views, more than the limit of 2"):
        load_objects(s, max_views=2)
    with pytest.raises(BadReferenceError, match="6 keypoints over its views, more than the limit of 5"):
        load_objects(s, max_keypoints=5)
    o = write_objects(tmp_path / "o.yaml", views)
    with pytest.raises(BadReferenceError, match="3 objects, more than the limit of 2"):
        load_objects(o, max_objects=2)


def test_captured_reference_without_keypoints_says_what_to_do(tmp_path):
    path = _view(tmp_path, "captured", {})
    for load in (load_reference, load_objects):
        with pytest.raises(BadReferenceError, match="no keypoints yet: place them with `semcorr reference annotate"):
            load(path)
