"""PF-PASCAL and AP-10K loaders on tiny fixtures in the original formats (written here), and `semcorr eval` on them."""

import json

import numpy as np
import pytest
import scipy.io
from PIL import Image

from semcorr_ros.cli import main
from semcorr_ros.data import AP10KDataset, PFPascalDataset, build_dataset
from semcorr_ros.errors import ConfigError, DatasetError


def _texture(h, w, seed):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((w, h), Image.BILINEAR))


# -- PF-PASCAL ---------------------------------------------------------------------------------------------------

#: 0-based keypoints of three car images (NaN = not annotated); written 1-based as in the release
CAR_KPS = {
    "2008_000001": np.array([[20, 30], [60, 40], [np.nan, np.nan], [100, 80]], float),
    "2008_000002": np.array([[25, 35], [np.nan, np.nan], [70, 90], [105, 85]], float),
    "2008_000003": np.array([[30, 30], [64, 44], [72, 88], [110, 90]], float),
}
CAR_BOX = {"2008_000001": [10, 20, 120, 100], "2008_000002": [12, 22, 125, 105], "2008_000003": [15, 18, 130, 110]}


@pytest.fixture(scope="module")
def pascal(tmp_path_factory):
    """``<tmp>/PF-dataset-PASCAL``: 3 car images and 1 dog image, a test and a trn pair list."""
    top = tmp_path_factory.mktemp("pascal")
    root = top / "PF-dataset-PASCAL"
    (root / "JPEGImages").mkdir(parents=True)
    for cls in ("car", "dog"):
        (root / "Annotations" / cls).mkdir(parents=True)
    for i, (name, kps) in enumerate(CAR_KPS.items()):
        Image.fromarray(_texture(120, 150, i)).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        scipy.io.savemat(root / "Annotations" / "car" / f"{name}.mat",
                         {"kps": kps + 1, "bbox": np.array([CAR_BOX[name]], float) + 1})
    dog_kps = np.array([[10, 10], [40, 50], [80, 60]], float)
    for name, shift in (("2009_000010", 0), ("2009_000011", 5)):
        Image.fromarray(_texture(100, 120, 7 + shift)).save(root / "JPEGImages" / f"{name}.jpg", quality=95)
        scipy.io.savemat(root / "Annotations" / "dog" / f"{name}.mat",
                         {"kps": dog_kps + shift + 1, "bbox": np.array([[5, 5, 90, 70]], float) + 1})
    (root / "test_pairs.csv").write_text(
        "source_image,target_image,class,XA,YA\n"
        "JPEGImages/2008_000001.jpg,JPEGImages/2008_000002.jpg,7,0,0\n"
        "JPEGImages/2008_000001.jpg,JPEGImages/2008_000003.jpg,7,0,0\n"
        "JPEGImages/2009_000010.jpg,JPEGImages/2009_000011.jpg,12,0,0\n")
    (root / "parsed").mkdir()
    (root / "parsed" / "trn_pairs.csv").write_text(
        "source_image,target_image,class,flip\n"
        "JPEGImages/2008_000003.jpg,JPEGImages/2008_000002.jpg,car,1\n")
    return top, root


def test_pascal_pairs_keypoints_nan_and_boxes(pascal):
    top, root = pascal
    ds = PFPascalDataset(top)  # the folder holding PF-dataset-PASCAL works too
    assert len(ds) == 3 and ds.categories == ["car", "dog"]
    s = ds[0]
    assert s.category == "car" and (s.src_name, s.tgt_name) == ("2008_000001", "2008_000002")
    # rows missing in either image are dropped; kp_ids are the rows kept; 1-based -> 0-based
    assert s.kp_ids.tolist() == [0, 3]
    np.testing.assert_allclose(s.src_kps, CAR_KPS["2008_000001"][[0, 3]])
    np.testing.assert_allclose(s.tgt_kps, CAR_KPS["2008_000002"][[0, 3]])
    np.testing.assert_allclose(s.tgt_bbox, CAR_BOX["2008_000002"])
    np.testing.assert_allclose(s.src_bbox, CAR_BOX["2008_000001"])
    assert s.src_image.shape == (120, 150, 3) and s.src_image.dtype == np.uint8
    assert ds[1].kp_ids.tolist() == [0, 1, 3]
    assert ds[2].category == "dog" and ds[2].num_keypoints == 3
    assert ds.pair_ids[0].startswith("test/00000:car/")
    assert len(PFPascalDataset(root, categories=["dog"])) == 1


def test_pascal_trn_split_flip_and_aliases(pascal):
    _, root = pascal
    ds = build_dataset("pf-pascal", root, split="train")  # alias of trn; list found under parsed/
    assert ds.split == "trn" and len(ds) == 1
    assert ds[0].meta["flip"] == 1


def test_pascal_bad_roots(pascal, tmp_path):
    _, root = pascal
    with pytest.raises(DatasetError, match="does not exist"):
        PFPascalDataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no Annotations"):
        PFPascalDataset(tmp_path)
    with pytest.raises(DatasetError, match="no pair list for split 'val'"):
        PFPascalDataset(root, split="val")
    with pytest.raises(ConfigError, match="valid splits"):
        PFPascalDataset(root, split="nope")
    with pytest.raises(ConfigError, match="valid categories"):
        PFPascalDataset(root, categories=["horse"])


def test_pascal_bad_csv_and_missing_annotation(tmp_path):
    root = tmp_path / "p"
    (root / "Annotations" / "car").mkdir(parents=True)
    (root / "test_pairs.csv").write_text("a,b,c\nx.jpg,y.jpg,7\n")
    with pytest.raises(DatasetError, match="header"):
        PFPascalDataset(root)
    (root / "test_pairs.csv").write_text("source_image,target_image,class\nJPEGImages/x.jpg,JPEGImages/y.jpg,99\n")
    with pytest.raises(DatasetError, match="outside 1..20"):
        PFPascalDataset(root)
    (root / "test_pairs.csv").write_text("source_image,target_image,class\nJPEGImages/x.jpg,JPEGImages/y.jpg,7\n")
    ds = PFPascalDataset(root)
    with pytest.raises(DatasetError, match="annotation file missing"):
        ds[0]


# -- AP-10K ------------------------------------------------------------------------------------------------------

def _coco_kps(points, visible):
    out = []
    for (x, y), v in zip(points, visible):
        out += [float(x), float(y), 2] if v else [0.0, 0.0, 0]
    return out


@pytest.fixture(scope="module")
def ap10k(tmp_path_factory):
    """``<tmp>/ap-10k``: 4 dog instances on 3 images (two on one image) and 2 cat instances."""
    top = tmp_path_factory.mktemp("ap10k")
    root = top / "ap-10k"
    (root / "annotations").mkdir(parents=True)
    (root / "data").mkdir()
    rng = np.random.default_rng(0)
    images = []
    for i in range(1, 6):
        Image.fromarray(_texture(96, 128, i)).save(root / "data" / f"{i:012d}.jpg", quality=95)
        images.append({"id": i, "file_name": f"{i:012d}.jpg", "width": 128, "height": 96})
    base = rng.uniform(10, 80, (17, 2))
    anns = []
    spec = [(1, 1, 1, 17), (2, 2, 1, 17), (3, 2, 1, 10), (4, 3, 1, 17), (5, 4, 2, 12), (6, 5, 2, 12),
            (7, 3, 1, 2)]  # (ann id, image id, category id, labelled keypoints); id 7 has too few
    for ann_id, image_id, cat, n in spec:
        vis = np.arange(17) < n
        anns.append({"id": ann_id, "image_id": image_id, "category_id": cat, "num_keypoints": int(n),
                     "keypoints": _coco_kps(base + ann_id, vis), "bbox": [5.0, 6.0, 100.0, 80.0], "area": 8000.0,
                     "iscrowd": 0})
    names = ["left_eye", "right_eye", "nose", "neck", "root_of_tail", "left_shoulder", "left_elbow",
             "left_front_paw", "right_shoulder", "right_elbow", "right_front_paw", "left_hip", "left_knee",
             "left_back_paw", "right_hip", "right_knee", "right_back_paw"]
    cats = [{"id": 1, "name": "dog", "supercategory": "Canidae", "keypoints": names, "skeleton": []},
            {"id": 2, "name": "cat", "supercategory": "Felidae", "keypoints": names, "skeleton": []}]
    data = {"images": images, "annotations": anns, "categories": cats}
    (root / "annotations" / "ap10k-test-split1.json").write_text(json.dumps(data))
    (root / "annotations" / "ap10k-train-split1.json").write_text(json.dumps(data))
    return top, root, base


def test_ap10k_pairs_within_species_and_deterministic(ap10k):
    top, root, base = ap10k
    ds = AP10KDataset(top)
    # dog: instances 1, 2, 3, 4 (3 shares image 2 with 2) -> 5 candidate pairs; cat: 5-6 -> 1 pair
    assert ds.categories == ["cat", "dog"] and len(ds) == 6
    assert all(i.category in ("cat", "dog") for i in (ds.pair_info(j) for j in range(len(ds))))
    ids = ds.pair_ids
    assert "dog/2-3" not in ids and "dog/3-2" not in ids  # same image: never a pair
    assert AP10KDataset(root).pair_ids == ids  # same seed, same pairs
    assert len(AP10KDataset(root, pairs_per_category=2)) == 3
    assert AP10KDataset(root, pairs_per_category=2).pair_ids == AP10KDataset(root, pairs_per_category=2).pair_ids
    assert AP10KDataset(root, split="trn").split == "train"


def test_ap10k_keypoints_visibility_and_box(ap10k):
    _, root, base = ap10k
    ds = AP10KDataset(root, categories=["dog"])
    j = next(i for i, p in enumerate(ds.pair_ids) if set(p.split("/")[1].split("-")) == {"1", "3"})
    s = ds[j]
    a, b = (int(x) for x in s.pair_id.split("/")[1].split("-"))
    assert s.num_keypoints == 17 and s.kp_ids.tolist() == list(range(17)) and s.kp_names[2] == "nose"
    ok = np.isfinite(s.src_kps).all(1)
    assert ok.sum() == 10 and np.array_equal(ok, np.isfinite(s.tgt_kps).all(1))  # v == 0 in either -> NaN
    np.testing.assert_allclose(s.src_kps[ok], (base + a)[:10])
    np.testing.assert_allclose(s.tgt_kps[ok], (base + b)[:10])
    np.testing.assert_allclose(s.tgt_bbox, [5, 6, 105, 86])  # COCO [x, y, w, h] -> (x0, y0, x1, y1)
    assert s.src_image.shape == (96, 128, 3)


def test_ap10k_bad_roots(ap10k, tmp_path):
    _, root, _ = ap10k
    with pytest.raises(DatasetError, match="does not exist"):
        AP10KDataset(tmp_path / "missing")
    with pytest.raises(DatasetError, match="no annotations"):
        AP10KDataset(tmp_path)
    with pytest.raises(DatasetError, match="annotation file missing"):
        AP10KDataset(root, split="val")
    with pytest.raises(ConfigError, match="valid splits"):
        AP10KDataset(root, split="x")
    bad = tmp_path / "bad"
    (bad / "annotations").mkdir(parents=True)
    (bad / "annotations" / "ap10k-test-split1.json").write_text("{not json")
    with pytest.raises(DatasetError, match="cannot read"):
        AP10KDataset(bad)
    (bad / "annotations" / "ap10k-test-split1.json").write_text(json.dumps({"images": []}))
    with pytest.raises(DatasetError, match="not a COCO keypoint file"):
        AP10KDataset(bad)


# -- semcorr eval on the fixtures ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["pf-pascal", "ap10k"])
def test_eval_cli_on_fixtures(name, pascal, ap10k, tmp_path, capsys):
    root = pascal[1] if name == "pf-pascal" else ap10k[1]
    out = tmp_path / "r.json"
    rc = main(["eval", "--dataset", name, "--root", str(root), "--json", str(out), "--no-progress",
               "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    res = json.loads(out.read_text())
    assert res["pairs"] == (3 if name == "pf-pascal" else 6) and "0.1" in res["pck"]
    assert main(["eval", "--dataset", name, "--root", str(tmp_path / "nowhere"), "--no-progress"]) == 1
    assert "does not exist" in capsys.readouterr().err
