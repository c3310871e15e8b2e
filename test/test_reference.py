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


@pytest.mark.parametrize("body, match", [
    ("image: obj.png\ndepth: obj_depth.png\ndepth_scale: abc\nkeypoints: {a: [1, 1]}\n", "'depth_scale'"),
    ("image: obj.png\ndepth: obj_depth.png\ndepth_scale: -1\nkeypoints: {a: [1, 1]}\n", "'depth_scale'"),
    ("image: obj.png\ndepth: obj_depth.png\ndepth_scale: true\nkeypoints: {a: [1, 1]}\n", "'depth_scale'"),
    ("image: 5\nkeypoints: {a: [1, 1]}\n", "'image'"),
    ("image: [a.png]\nkeypoints: {a: [1, 1]}\n", "'image'"),
    ("image: obj.png\ndepth: true\nkeypoints: {a: [1, 1]}\n", "'depth'"),
    ("image: obj.png\nreference_id: {x: 1}\nkeypoints: {a: [1, 1]}\n", "'reference_id'"),
    ("image: obj.png\nkeypoints: {a: [true, 1]}\n", r"\[x, y\]"),
    ("image: obj.png\nkeypoints: {null: [1, 1]}\n", "names"),
    ("image: !!python/object/apply:os.system ['true']\nkeypoints: {a: [1, 1]}\n", "not valid YAML"),
])
def test_every_field_is_type_checked(ref_dir, body, match):
    with pytest.raises(BadReferenceError, match=match):
        load_reference(write(ref_dir / "typed.yaml", body))


def test_keypoint_and_pixel_caps(ref_dir):
    many = "".join(f"  k{i}: [{i % 60}, {i % 40}]\n" for i in range(200))
    p = write(ref_dir / "many.yaml", "image: obj.png\nkeypoints:\n" + many)
    with pytest.raises(BadReferenceError, match="200 keypoints.*max_reference_keypoints"):
        load_reference(p)
    assert len(load_reference(p, max_keypoints=200).names) == 200
    small = write(ref_dir / "small.yaml", "image: obj.png\nkeypoints: {a: [1, 1]}\n")
    with pytest.raises(BadReferenceError, match="60x40 = 2400 pixels.*max_image_pixels"):
        load_reference(small, max_pixels=2000)


def test_decompression_bomb_and_other_formats_are_refused(ref_dir):
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    for side in (5000, 40_000):  # under and over Pillow's own limit: our limit decides, before decoding
        (ref_dir / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side,
                                                                                                8, 2, 0, 0, 0))
                                           + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
        with pytest.raises(BadReferenceError, match="max_image_pixels"):
            load_reference(write(ref_dir / "b.yaml", "image: bomb.png\nkeypoints: {a: [1, 1]}\n"))
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(ref_dir / "obj.bmp")
    with pytest.raises(BadReferenceError, match="PNG or JPEG"):
        load_reference(write(ref_dir / "bmp.yaml", "image: obj.bmp\nkeypoints: {a: [1, 1]}\n"))
    np.save(ref_dir / "d3.npy", np.ones((40, 60, 2), np.float32))
    with pytest.raises(BadReferenceError, match="single-channel"):
        load_reference(write(ref_dir / "d3.yaml", "image: obj.png\ndepth: d3.npy\nkeypoints: {a: [1, 1]}\n"))
    np.save(ref_dir / "dobj.npy", np.array([[object()]], dtype=object), allow_pickle=True)
    with pytest.raises(BadReferenceError, match="cannot read depth"):
        load_reference(write(ref_dir / "do.yaml", "image: obj.png\ndepth: dobj.npy\nkeypoints: {a: [1, 1]}\n"))
