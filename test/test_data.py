"""Dataset loaders: tiny fixtures written in the original PF-WILLOW / SPair-71k formats, plus the real dev data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from semcorr_ros.data import PairSample, PFWillowDataset, SPairDataset, build_dataset
from semcorr_ros.errors import ConfigError, DatasetError, InputError

REAL_PFWILLOW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pf-willow-dev"


# -- fixture writers ---------------------------------------------------------------------------------------------

def write_png(path: Path, w: int, h: int, seed: int = 0, mode: str = "RGB") -> None:
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    (img.convert(mode) if mode != "RGB" else img).save(path)


def write_mat(path: Path, kps_1based: np.ndarray) -> None:
    """``kps_1based [K, 2]`` (x, y) -> ``pts_coord`` 2 x K like the release."""
    scipy.io.savemat(str(path), {"pts_coord": np.asarray(kps_1based, dtype=np.float64).T})


def make_pfwillow(root: Path, classes: dict[str, int], k: int = 4) -> dict[tuple[str, str], np.ndarray]:
    """Write ``classes[name]`` images per sub-class; returns the 1-based keypoints written, by (class, stem)."""
    written = {}
    for ci, (cls, n) in enumerate(sorted(classes.items())):
        folder = root / cls
        folder.mkdir(parents=True)
        for i in range(n):
            stem = f"img_{i:03d}"
            w, h = 40 + 10 * i, 30 + 5 * i
            write_png(folder / f"{stem}.png", w, h, seed=100 * ci + i)
            kps = np.stack([np.linspace(1, w, k), np.linspace(h, 1, k)], axis=1) + np.array([i, 0.5])
            kps = np.minimum(kps, [w, h])
            write_mat(folder / f"{stem}.mat", kps)
            written[(cls, stem)] = kps
    return written


def write_jpg(path: Path, w: int, h: int, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, "JPEG")


def make_spair(root: Path, with_layout: bool = True) -> dict[str, dict]:
    """Two categories, pairs in trn and test; returns the pair annotations by pair name."""
    images = {"cat": ["2008_000001", "2008_000002", "2008_000003"], "dog": ["2009_000010", "2009_000011"]}
    for cat, names in images.items():
        for j, name in enumerate(names):
            write_jpg(root / "JPEGImages" / cat / f"{name}.jpg", 50 + 10 * j, 40, seed=j)
            (root / "ImageAnnotation" / cat).mkdir(parents=True, exist_ok=True)
            (root / "ImageAnnotation" / cat / f"{name}.json").write_text(json.dumps({"filename": f"{name}.jpg"}))
    splits = {
        "test": [("cat", 0, 1), ("cat", 1, 2), ("dog", 0, 1), ("cat", 2, 0)],
        "trn": [("cat", 0, 2), ("dog", 1, 0)],
    }
    anns: dict[str, dict] = {}
    for split, pairs in splits.items():
        (root / "PairAnnotation" / split).mkdir(parents=True)
        names = []
        for n, (cat, a, b) in enumerate(pairs):
            src, trg = images[cat][a], images[cat][b]
            name = f"{n + 1:06d}-{src}-{trg}:{cat}"
            ann = {"filename": name, "src_imname": f"{src}.jpg", "trg_imname": f"{trg}.jpg", "category": cat,
                   "src_kps": [[1, 2], [10, 20], [30, 5 + n]], "trg_kps": [[3, 4], [12, 25], [40, 8]],
                   "src_bndbox": [0, 1, 35, 30], "trg_bndbox": [2, 3, 45, 33], "kps_ids": [0, 4, 7],
                   "viewpoint_variation": n % 3, "scale_variation": 0, "truncation": 0, "occlusion": 1,
                   "mirror": 0, "src_imsize": [50, 40, 3]}
            (root / "PairAnnotation" / split / f"{name}.json").write_text(json.dumps(ann))
            anns[name] = ann
            names.append(name)
        if with_layout:
            (root / "Layout" / "large").mkdir(parents=True, exist_ok=True)
            (root / "Layout" / "large" / f"{split}.txt").write_text("\n".join(names) + "\n")
    return anns


# -- PF-WILLOW ---------------------------------------------------------------------------------------------------

def test_pfwillow_pairs_are_every_ordered_pair_within_a_subclass(tmp_path: Path) -> None:
    make_pfwillow(tmp_path, {"car(G)": 3, "duck(S)": 4})
    ds = PFWillowDataset(tmp_path)
    assert len(ds) == 3 * 2 + 4 * 3
    assert ds.categories == ["car(G)", "duck(S)"]
    ids = ds.pair_ids
    assert len(set(ids)) == len(ids)
    assert ids[:3] == ["car(G)/img_000-img_001", "car(G)/img_000-img_002", "car(G)/img_001-img_000"]
    assert all(ds.pair_info(i).src_name != ds.pair_info(i).tgt_name for i in range(len(ds)))
    assert PFWillowDataset(tmp_path).pair_ids == ids  # deterministic
    assert sum(1 for _ in ds) == len(ds)


def test_pfwillow_sample_converts_one_based_keypoints_and_uses_keypoint_boxes(tmp_path: Path) -> None:
    written = make_pfwillow(tmp_path, {"car(G)": 2}, k=5)
    s = PFWillowDataset(tmp_path)[0]
    assert isinstance(s, PairSample)
    assert (s.category, s.src_name, s.tgt_name) == ("car(G)", "img_000", "img_001")
    np.testing.assert_allclose(s.src_kps, written[("car(G)", "img_000")] - 1.0)
    np.testing.assert_allclose(s.tgt_kps, written[("car(G)", "img_001")] - 1.0)
    tk = s.tgt_kps
    np.testing.assert_allclose(s.tgt_bbox, [tk[:, 0].min(), tk[:, 1].min(), tk[:, 0].max(), tk[:, 1].max()])
    np.testing.assert_allclose(s.src_bbox[:2], s.src_kps.min(axis=0))
    assert s.src_image.dtype == np.uint8 and s.src_image.shape == (30, 40, 3)
    assert s.tgt_image.shape == (35, 50, 3)
    np.testing.assert_array_equal(s.kp_ids, np.arange(5))


def test_pfwillow_exact_one_based_values(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    for stem in ("x", "y"):
        write_png(tmp_path / "a" / f"{stem}.png", 20, 10, mode="L")  # grey PNG is returned as RGB
        write_mat(tmp_path / "a" / f"{stem}.mat", np.array([[1.0, 1.0], [20.0, 10.0], [5.5, 3.0]]))
    s = PFWillowDataset(tmp_path)[1]
    np.testing.assert_allclose(s.tgt_kps, [[0, 0], [19, 9], [4.5, 2]])
    np.testing.assert_allclose(s.tgt_bbox, [0, 0, 19, 9])
    assert s.tgt_image.shape == (10, 20, 3)


def test_pfwillow_accepts_the_release_folder(tmp_path: Path) -> None:
    make_pfwillow(tmp_path / "PF-dataset-WILLOW", {"car(G)": 2, "car(M)": 2})
    ds = build_dataset("pf-willow", tmp_path)
    assert len(ds) == 4 and ds.categories == ["car(G)", "car(M)"]


@pytest.mark.parametrize("kind", ["missing", "file", "empty", "pngs_only", "flat"])
def test_pfwillow_wrong_root_raises_at_construction(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "root"
    if kind == "file":
        root.write_text("x")
    elif kind == "empty":
        root.mkdir()
    elif kind == "pngs_only":
        (root / "car(G)").mkdir(parents=True)
        write_png(root / "car(G)" / "a.png", 10, 10)
    elif kind == "flat":  # files directly in root instead of sub-class folders
        root.mkdir()
        write_png(root / "a.png", 10, 10)
        write_mat(root / "a.mat", np.ones((3, 2)))
    with pytest.raises(DatasetError, match="expected"):
        PFWillowDataset(root)


def test_pfwillow_wrong_root_hints_at_the_data_folder(tmp_path: Path) -> None:
    make_pfwillow(tmp_path / "pf-willow-dev", {"car(G)": 2})
    with pytest.raises(DatasetError, match="did you mean .*pf-willow-dev"):
        PFWillowDataset(tmp_path)


def test_pfwillow_corrupt_files_raise_on_getitem_naming_the_file(tmp_path: Path) -> None:
    make_pfwillow(tmp_path, {"c": 3})
    (tmp_path / "c" / "img_001.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (tmp_path / "c" / "img_002.mat").write_bytes(b"garbage")
    ds = PFWillowDataset(tmp_path)  # construction does not read the files
    assert len(ds) == 6
    with pytest.raises(DatasetError, match="img_001.png"):
        ds[ds.pair_ids.index("c/img_000-img_001")]
    with pytest.raises(DatasetError, match="img_002.mat"):
        ds[ds.pair_ids.index("c/img_000-img_002")]


def test_pfwillow_bad_annotations(tmp_path: Path) -> None:
    make_pfwillow(tmp_path, {"c": 2})
    scipy.io.savemat(str(tmp_path / "c" / "img_001.mat"), {"other": np.zeros((2, 3))})
    with pytest.raises(DatasetError, match="pts_coord"):
        PFWillowDataset(tmp_path)[0]
    scipy.io.savemat(str(tmp_path / "c" / "img_001.mat"), {"pts_coord": np.zeros((3, 4))})
    with pytest.raises(DatasetError, match="2 x K"):
        PFWillowDataset(tmp_path)[0]
    write_mat(tmp_path / "c" / "img_001.mat", np.ones((7, 2)))  # 7 keypoints vs 4
    with pytest.raises(DatasetError, match="keypoints"):
        PFWillowDataset(tmp_path)[0]
    write_mat(tmp_path / "c" / "img_001.mat", np.ones((4, 2)))
    (tmp_path / "c" / "img_001.png").unlink()
    with pytest.raises(DatasetError, match="image missing"):
        PFWillowDataset(tmp_path)[0]


def test_pfwillow_category_filter_and_max_pairs(tmp_path: Path) -> None:
    make_pfwillow(tmp_path, {"a": 3, "b": 3, "c": 2})
    ds = PFWillowDataset(tmp_path, categories=["b"])
    assert ds.categories == ["b"] and len(ds) == 6
    assert len(PFWillowDataset(tmp_path, categories="c")) == 2
    with pytest.raises(ConfigError, match="valid categories: a, b, c"):
        PFWillowDataset(tmp_path, categories=["zebra"])
    full = PFWillowDataset(tmp_path).pair_ids  # 6 + 6 + 2 = 14
    sub = PFWillowDataset(tmp_path, max_pairs=7)
    assert sub.pair_ids == [full[i] for i in (0, 2, 4, 6, 8, 10, 12)]
    assert PFWillowDataset(tmp_path, max_pairs=7).pair_ids == sub.pair_ids
    assert len(PFWillowDataset(tmp_path, max_pairs=100)) == 14
    with pytest.raises(ConfigError, match="max_pairs"):
        PFWillowDataset(tmp_path, max_pairs=0)


def test_indexing(tmp_path: Path) -> None:
    make_pfwillow(tmp_path, {"a": 2})
    ds = PFWillowDataset(tmp_path)
    assert ds[-1].pair_id == ds.pair_ids[-1]
    with pytest.raises(IndexError):
        ds[2]
    with pytest.raises(TypeError):
        ds["a"]  # type: ignore[index]


def test_build_dataset_registry(tmp_path: Path) -> None:
    make_pfwillow(tmp_path, {"a": 2})
    assert isinstance(build_dataset("pf-willow", tmp_path, split="test"), PFWillowDataset)
    with pytest.raises(ConfigError, match="valid names: ap10k, pf-pascal, pf-willow, references, spair"):
        build_dataset("pf-pascal-2", tmp_path)
    with pytest.raises(ConfigError, match="valid splits"):
        build_dataset("pf-willow", tmp_path, split="trn")


def test_pair_sample_validates_shapes() -> None:
    img = np.zeros((4, 5, 3), np.uint8)
    with pytest.raises(InputError, match="differ"):
        PairSample("p", "c", "a", "b", img, img, np.zeros((3, 2)), np.zeros((2, 2)), None, None)
    with pytest.raises(InputError, match="uint8"):
        PairSample("p", "c", "a", "b", img.astype(float), img, np.zeros((1, 2)), np.zeros((1, 2)))
    s = PairSample("p", "c", "a", "b", img, img, [[1, 2]], [[3, 4]], None, [0, 0, 4, 3])
    assert s.tgt_kps.dtype == np.float64 and s.tgt_hw == (4, 5) and s.num_keypoints == 1


# -- SPair-71k ---------------------------------------------------------------------------------------------------

def test_spair_default_split_is_test(tmp_path: Path) -> None:
    anns = make_spair(tmp_path)
    ds = SPairDataset(tmp_path)
    assert ds.split == "test" and len(ds) == 4
    assert ds.categories == ["cat", "dog"]
    assert ds.pair_ids[0] == "000001-2008_000001-2008_000002:cat"
    s = ds[0]
    ann = anns[s.pair_id]
    assert (s.category, s.src_name, s.tgt_name) == ("cat", "2008_000001", "2008_000002")
    np.testing.assert_allclose(s.src_kps, ann["src_kps"])  # SPair is 0-based already: unchanged
    np.testing.assert_allclose(s.tgt_kps, ann["trg_kps"])
    np.testing.assert_allclose(s.src_bbox, ann["src_bndbox"])
    np.testing.assert_allclose(s.tgt_bbox, ann["trg_bndbox"])  # the pair's own box, not the keypoint box
    np.testing.assert_array_equal(s.kp_ids, [0, 4, 7])
    assert s.meta["viewpoint_variation"] == 0 and s.meta["occlusion"] == 1
    assert s.src_image.shape == (40, 50, 3) and s.tgt_image.shape == (40, 60, 3)


def test_spair_splits_filters_and_fallback(tmp_path: Path) -> None:
    make_spair(tmp_path)
    assert len(build_dataset("spair", tmp_path, split="trn")) == 2
    assert len(SPairDataset(tmp_path, split="train")) == 2
    assert len(SPairDataset(tmp_path, categories=["dog"])) == 1
    assert SPairDataset(tmp_path, max_pairs=2).pair_ids == [SPairDataset(tmp_path).pair_ids[i] for i in (0, 2)]
    with pytest.raises(ConfigError, match="valid splits: trn, val, test"):
        SPairDataset(tmp_path, split="dev")
    with pytest.raises(ConfigError, match="valid categories: cat, dog"):
        SPairDataset(tmp_path, categories="horse")
    with pytest.raises(DatasetError, match="val"):  # no val pairs at all
        SPairDataset(tmp_path, split="val")


def test_spair_without_layout_lists_the_annotations(tmp_path: Path) -> None:
    make_spair(tmp_path, with_layout=False)
    ds = SPairDataset(tmp_path)
    assert len(ds) == 4 and ds.pair_ids == sorted(ds.pair_ids)


def test_spair_wrong_root(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="expected the SPair-71k release layout"):
        SPairDataset(tmp_path / "nope")
    (tmp_path / "JPEGImages").mkdir()
    with pytest.raises(DatasetError, match="lacks PairAnnotation"):
        SPairDataset(tmp_path)


def test_spair_unreadable_samples(tmp_path: Path) -> None:
    make_spair(tmp_path)
    ds = SPairDataset(tmp_path)
    (tmp_path / "PairAnnotation" / "test" / f"{ds.pair_ids[0]}.json").write_text("{not json")
    with pytest.raises(DatasetError, match=r"000001-2008_000001-2008_000002:cat\.json"):
        ds[0]
    (tmp_path / "JPEGImages" / "cat" / "2008_000003.jpg").write_bytes(b"\xff\xd8 broken")
    with pytest.raises(DatasetError, match="2008_000003.jpg"):
        ds[1]
    (tmp_path / "PairAnnotation" / "test" / f"{ds.pair_ids[2]}.json").unlink()
    with pytest.raises(DatasetError, match="missing"):
        ds[2]


# -- the real dev data -------------------------------------------------------------------------------------------

@pytest.mark.skipif(not REAL_PFWILLOW.is_dir(), reason=f"PF-WILLOW dev data not found at {REAL_PFWILLOW}")
def test_real_pfwillow_dev() -> None:
    ds = build_dataset("pf-willow", REAL_PFWILLOW)
    assert ds.categories == ["car(G)", "car(M)", "motorbike(G)", "motorbike(S)", "winebottle(M)"]
    assert len(ds) == 450
    for i in (0, 449):
        s = ds[i]
        assert s.src_kps.shape == (10, 2) and np.isfinite(s.src_kps).all()
        assert s.src_image.dtype == np.uint8 and max(s.src_image.shape[:2]) == 300
        h, w = s.tgt_hw
        assert (s.tgt_kps >= 0).all() and (s.tgt_kps[:, 0] < w).all() and (s.tgt_kps[:, 1] < h).all()


def test_small_object_variant_transforms_target(tmp_path):
    from semcorr_ros.data.small import SmallObjectPairs

    root = tmp_path / "w"
    cat = root / "obj(G)"
    cat.mkdir(parents=True)
    kps = np.array([[20.0, 30.0], [180.0, 30.0], [100.0, 130.0]])
    for i in range(3):
        img = np.zeros((150, 200, 3), np.uint8)
        img[..., i] = 200
        Image.fromarray(img).save(cat / f"im{i}.png")
        scipy.io.savemat(cat / f"im{i}.mat", {"pts_coord": (kps + 1).T})
    from semcorr_ros.data import build_dataset

    base = build_dataset("pf-willow", root)
    small = SmallObjectPairs(base, fraction=0.02, size=(640, 480), seed=1)
    assert len(small) == len(base) == 6
    s, b = small[0], base[0]
    assert s.tgt_image.shape == (480, 640, 3) and np.array_equal(s.src_kps, b.src_kps)
    box = s.tgt_bbox
    frac = (box[2] - box[0]) * (box[3] - box[1]) / (640 * 480)
    assert abs(frac - 0.02) < 0.002
    # keypoints keep their relative layout (a pure scale + shift) and stay inside the canvas
    scale = (s.tgt_kps[1, 0] - s.tgt_kps[0, 0]) / 160.0
    assert np.allclose(s.tgt_kps - s.tgt_kps[0], (kps - kps[0]) * scale, atol=1e-6)
    assert (s.tgt_kps >= 0).all() and (s.tgt_kps[:, 0] < 640).all() and (s.tgt_kps[:, 1] < 480).all()
    # the pasted object is there: its colour (channel of the target image) at a keypoint
    x, y = np.round(s.tgt_kps[2]).astype(int)
    assert s.tgt_image[y, x].argmax() == int(b.tgt_name[-1]) and s.tgt_image[y, x].max() > 150
    assert small[0].tgt_name == s.tgt_name and small[0].tgt_name != small[1].tgt_name  # deterministic, unique
