"""AP-10K (Yu et al., NeurIPS 2021 Datasets and Benchmarks) as a lazy pair dataset of animal instances.

Supported layout (the release, COCO-style keypoint annotations)::

    <root>/annotations/ap10k-{train,val,test}-split{1,2,3}.json
    <root>/data/<file_name>                        e.g. data/000000000001.jpg

``<root>`` may also be the folder that contains ``ap-10k``. Each JSON holds ``images`` (``id``, ``file_name``),
``annotations`` (``id``, ``image_id``, ``category_id``, ``keypoints``: 17 x ``[x, y, v]`` flattened, ``bbox``:
``[x, y, w, h]``) and ``categories`` (``id``, ``name`` = species, ``supercategory`` = family, ``keypoints`` =
the 17 part names).

AP-10K is a pose dataset, not a pair benchmark, so pairs are formed here, deterministically: within each species,
the instances (annotations, sorted by id) with at least ``min_keypoints`` labelled keypoints are paired at random
with a generator seeded by ``sha256("<seed>/<species>")``; every unordered pair of distinct instances on
distinct images is a candidate, candidates sharing fewer than ``min_common`` labelled keypoints are dropped, and
at most ``pairs_per_category`` of them are drawn without replacement (source/target order as drawn). The same
JSON, ``seed`` and options always give the same pairs. A pair keeps every keypoint row (``kp_ids`` = 0..16);
rows not labelled (``v == 0``) in *either* image are NaN and are not scored. Coordinates are COCO pixels, used as
0-based. The PCK box is the target instance's ``bbox``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np

from semcorr_ros.data.base import PairDataset, PairInfo, PairSample, load_rgb, select_categories, subsample_evenly
from semcorr_ros.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
SPLIT_ALIASES = {"trn": "train", "validation": "val"}
PARTITIONS = (1, 2, 3)
NUM_KEYPOINTS = 17
RELEASE_FOLDER = "ap-10k"
_EXPECTED = ("expected <root>/annotations/ap10k-{train,val,test}-split{1,2,3}.json (COCO keypoints) and "
             "<root>/data/<file_name>")


def _find_data_root(root: Path) -> Path:
    if not root.exists():
        raise DatasetError(f"AP-10K root {root} does not exist; {_EXPECTED}")
    if not root.is_dir():
        raise DatasetError(f"AP-10K root {root} is not a folder; {_EXPECTED}")
    for candidate in (root, root / RELEASE_FOLDER):
        if (candidate / "annotations").is_dir():
            return candidate
    raise DatasetError(f"AP-10K root {root} has no annotations/ folder; {_EXPECTED}")


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise DatasetError(f"AP-10K annotation file missing: {path}; {_EXPECTED}")
    try:
        with path.open("r", encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read AP-10K annotations {path}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list)
                                             for k in ("images", "annotations", "categories")):
        raise DatasetError(f"{path} is not a COCO keypoint file (needs lists 'images', 'annotations', "
                           "'categories')")
    return data


def _instance_keypoints(value: object, path: Path, ann_id: object) -> np.ndarray:
    """COCO ``[x1, y1, v1, ...]`` -> ``[17, 2]`` with NaN rows where ``v == 0``."""
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: annotation {ann_id}: 'keypoints' is not numeric: {exc}") from exc
    if arr.shape != (3 * NUM_KEYPOINTS,):
        raise DatasetError(f"{path}: annotation {ann_id}: 'keypoints' must have {3 * NUM_KEYPOINTS} numbers "
                           f"(17 x [x, y, v]), got {arr.size}")
    kv = arr.reshape(NUM_KEYPOINTS, 3)
    xy = kv[:, :2].copy()
    xy[~(kv[:, 2] > 0)] = np.nan
    return xy


def _rng(seed: int, species: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{species}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


class AP10KDataset(PairDataset):
    """Same-species instance pairs of one AP-10K annotation file, read lazily.

    Args:
        root: dataset folder (see the module docstring for the layout).
        split: ``train``, ``val`` or ``test`` (default; ``trn`` is an alias).
        partition: which of the release's three splits (``ap10k-<split>-split<partition>.json``), default 1.
        categories: keep only these species (e.g. ``["dog", "cat"]``); ``None`` keeps all.
        max_pairs: keep at most this many pairs overall, spread evenly over the list (deterministic).
        pairs_per_category: most pairs drawn per species (default 50).
        seed: pair sampling seed (default 0).
        min_keypoints: fewest labelled keypoints for an instance to be used (default 3).
        min_common: fewest keypoints labelled in both instances of a pair (default 3).

    ``pair_id`` is ``"<species>/<src ann id>-<tgt ann id>"``; ``src_name``/``tgt_name`` are the image file stems.

    Raises:
        DatasetError: ``root`` is missing, not in the layout, or the file gives no pairs.
        ConfigError: unknown split, partition or species; bad counts.
    """

    name = "ap10k"

    def __init__(self, root: str | Path, split: str = "test", partition: int = 1,
                 categories: str | list[str] | tuple[str, ...] | None = None, max_pairs: int | None = None,
                 pairs_per_category: int = 50, seed: int = 0, min_keypoints: int = 3, min_common: int = 3) -> None:
        super().__init__(root)
        split_key = SPLIT_ALIASES.get(split, split)
        if split_key not in SPLITS:
            raise ConfigError(f"ap10k has no split {split!r}; valid splits: {', '.join(SPLITS)} (alias trn=train)")
        if partition not in PARTITIONS:
            raise ConfigError(f"ap10k partition must be one of {PARTITIONS}, got {partition!r}")
        for name, v in (("pairs_per_category", pairs_per_category), ("min_keypoints", min_keypoints),
                        ("min_common", min_common)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"ap10k {name} must be a positive integer, got {v!r}")
        self.split, self.partition, self.seed = split_key, partition, int(seed)
        self.data_root = _find_data_root(self.root)
        self.json_path = self.data_root / "annotations" / f"ap10k-{split_key}-split{partition}.json"
        data = _read_json(self.json_path)
        path = self.json_path
        species = {}
        for c in data["categories"]:
            if not isinstance(c, dict) or "id" not in c or "name" not in c:
                raise DatasetError(f"{path}: category entries need 'id' and 'name', got {c!r}")
            species[c["id"]] = str(c["name"])
        self.kp_names: list[str] | None = None
        for c in data["categories"]:
            names = c.get("keypoints")
            if isinstance(names, list) and len(names) == NUM_KEYPOINTS:
                self.kp_names = [str(n) for n in names]
                break
        files = {}
        for im in data["images"]:
            if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
                raise DatasetError(f"{path}: image entries need 'id' and 'file_name', got {im!r}")
            files[im["id"]] = str(im["file_name"])
        self._inst: dict[int, tuple[str, str, np.ndarray, np.ndarray | None]] = {}
        by_species: dict[str, list[int]] = {}
        for ann in sorted(data["annotations"], key=lambda a: a.get("id", 0) if isinstance(a, dict) else 0):
            if not isinstance(ann, dict) or not all(k in ann for k in ("id", "image_id", "category_id",
                                                                       "keypoints")):
                raise DatasetError(f"{path}: annotations need 'id', 'image_id', 'category_id', 'keypoints'")
            if ann["category_id"] not in species:
                raise DatasetError(f"{path}: annotation {ann['id']} has unknown category_id {ann['category_id']}")
            if ann["image_id"] not in files:
                raise DatasetError(f"{path}: annotation {ann['id']} has unknown image_id {ann['image_id']}")
            kps = _instance_keypoints(ann["keypoints"], path, ann["id"])
            if np.isfinite(kps).all(1).sum() < min_keypoints:
                continue
            box = None
            if ann.get("bbox") is not None:
                b = np.asarray(ann["bbox"], dtype=np.float64).reshape(-1)
                if b.shape != (4,):
                    raise DatasetError(f"{path}: annotation {ann['id']}: 'bbox' must be [x, y, w, h]")
                box = np.array([b[0], b[1], b[0] + b[2], b[1] + b[3]])
            name = species[ann["category_id"]]
            self._inst[int(ann["id"])] = (name, files[ann["image_id"]], kps, box)
            by_species.setdefault(name, []).append(int(ann["id"]))
        chosen = select_categories(sorted(by_species), categories, self.name) if by_species else []
        infos: list[PairInfo] = []
        for sp in chosen:
            ids = by_species[sp]
            vis = np.stack([np.isfinite(self._inst[i][2]).all(1) for i in ids])
            cand = [(a, b) for a in range(len(ids)) for b in range(a + 1, len(ids))
                    if self._inst[ids[a]][1] != self._inst[ids[b]][1] and (vis[a] & vis[b]).sum() >= min_common]
            if not cand:
                continue
            rng = _rng(self.seed, sp)
            pick = rng.permutation(len(cand))[:pairs_per_category]
            flips = rng.random(len(pick)) < 0.5
            for p, flip in zip(pick, flips):
                a, b = cand[p]
                if flip:
                    a, b = b, a
                sa, sb = ids[a], ids[b]
                infos.append(PairInfo(f"{sp}/{sa}-{sb}", sp, Path(self._inst[sa][1]).stem,
                                      Path(self._inst[sb][1]).stem))
        if not infos:
            raise DatasetError(f"AP-10K {path} gives no pairs (no species with two instances on different images "
                               f"sharing >= {min_common} labelled keypoints)")
        keep = subsample_evenly(len(infos), max_pairs)
        self._infos = [infos[i] for i in keep]

    def _load(self, index: int) -> PairSample:
        info = self._infos[index]
        sa, sb = (int(x) for x in info.pair_id.rpartition("/")[2].split("-"))
        _, src_file, src_kps, src_box = self._inst[sa]
        _, tgt_file, tgt_kps, tgt_box = self._inst[sb]
        both = np.isfinite(src_kps).all(1) & np.isfinite(tgt_kps).all(1)
        src, tgt = src_kps.copy(), tgt_kps.copy()
        src[~both] = np.nan
        tgt[~both] = np.nan
        return PairSample(
            pair_id=info.pair_id, category=info.category, src_name=info.src_name, tgt_name=info.tgt_name,
            src_image=load_rgb(self.data_root / "data" / src_file),
            tgt_image=load_rgb(self.data_root / "data" / tgt_file),
            src_kps=src, tgt_kps=tgt, src_bbox=src_box, tgt_bbox=tgt_box, kp_ids=np.arange(NUM_KEYPOINTS),
            kp_names=list(self.kp_names) if self.kp_names else None, meta={"src_ann": sa, "tgt_ann": sb},
        )
