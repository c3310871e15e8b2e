"""Reference YAML files: good file, every kind of malformed file -> BadReferenceError naming the problem."""

import numpy as np
import pytest
from PIL import Image

from semcorr_ros.errors import BadReferenceError
from semcorr_ros.reference import load_reference, parse_intrinsics


@pytest.fixture
def ref_dir(tmp_path):
    Image.fromarray(np.full((40, 60, 3), 128, np.uint8)).save(tmp_path / "obj.png")
    depth = np.full((40, 60), 1234, np.uint16)
    depth[0, 0] = 0
    Image.fromarray(depth).save(tmp_path / "obj_depth.png")
    return tmp_path


def write(path, text):
    path.write_text(text)
    return path


def test_full_reference(ref_dir):
    p = write(ref_dir / "ref.yaml", "image: obj.png\ndepth: obj_depth.png\nintrinsics: [500, 501, 30, 20]\n"
              "keypoints:\n  tip: [10, 5.5]\n  base: [59, 39]\n")
    spec = load_reference(p)
    assert spec.reference_id == "ref" and spec.names == ["tip", "base"]
    assert spec.image.shape == (40, 60, 3) and spec.image.dtype == np.uint8
    assert np.array_equal(spec.keypoints, [[10, 5.5], [59, 39]])
    assert np.isnan(spec.depth[0, 0]) and abs(spec.depth[1, 1] - 1.234) < 1e-6
    assert np.array_equal(spec.intrinsics, [[500, 0, 30], [0, 501, 20], [0, 0, 1]])


def test_image_override_and_id(ref_dir):
    p = write(ref_dir / "r.yaml", "reference_id: mug\nkeypoints: {a: [1, 1]}\n")
    spec = load_reference(p, image_path=ref_dir / "obj.png")
    assert spec.reference_id == "mug" and spec.depth is None and spec.intrinsics is None


@pytest.mark.parametrize("text, match", [
    ("image: obj.png\n", "keypoints"),
    ("image: obj.png\nkeypoints: []\n", "keypoints"),
    ("image: obj.png\nkeypoints: {a: [1]}\n", "'a'"),
    ("image: obj.png\nkeypoints: {a: [1, x]}\n", "'a'"),
    ("image: obj.png\nkeypoints: {a: [100, 1]}\n", "outside"),
    ("image: missing.png\nkeypoints: {a: [1, 1]}\n", "not found"),
    ("keypoints: {a: [1, 1]}\n", "no 'image'"),
    ("image: obj.png\nkeypoints: {a: [1, 1]}\nintrinsics: [1, 2]\n", "intrinsics"),
    ("image: obj.png\nkeypoints: {a: [1, 1]}\ndepth: nope.png\n", "depth file not found"),
    ("image: obj.png\nkeypoints: {a: [1, 1]\n", "not valid YAML"),
])
def test_malformed(ref_dir, text, match):
    with pytest.raises(BadReferenceError, match=match):
        load_reference(write(ref_dir / "bad.yaml", text))


def test_missing_file_and_corrupt_image(ref_dir):
    with pytest.raises(BadReferenceError, match="not found"):
        load_reference(ref_dir / "none.yaml")
    (ref_dir / "broken.png").write_bytes(b"not a png")
    with pytest.raises(BadReferenceError, match="cannot read image"):
        load_reference(write(ref_dir / "b.yaml", "image: broken.png\nkeypoints: {a: [1, 1]}\n"))


def test_depth_size_mismatch(ref_dir):
    Image.fromarray(np.ones((10, 10), np.uint16)).save(ref_dir / "small_depth.png")
    with pytest.raises(BadReferenceError, match="10x10"):
        load_reference(write(ref_dir / "d.yaml", "image: obj.png\ndepth: small_depth.png\nkeypoints: {a: [1, 1]}\n"))


def test_parse_intrinsics_matrix():
    K = parse_intrinsics([[2, 0, 1], [0, 3, 1], [0, 0, 1]])
    assert K[1, 1] == 3
    with pytest.raises(BadReferenceError):
        parse_intrinsics([0, 1, 2, 3])
