"""PF-PASCAL (Ham et al., "Proposal Flow", TPAMI 2018) as a lazy pair dataset.

Supported layout (the ProposalFlow ``PF-dataset-PASCAL`` release plus the usual pair lists)::

    <root>/JPEGImages/<image>.jpg
    <root>/Annotations/<class>/<image>.mat        ``kps``: K x 2 (x, y), NaN rows = keypoint not visible;
                                                  ``bbox``: 1 x 4 (x0, y0, x1, y1)
    <root>/<split>_pairs.csv                      the pair list of a split (``trn``, ``val``, ``test``); looked
                                                  for as ``<split>_pairs.csv``, ``parsed/<split>_pairs.csv`` and
                                                  ``<split>_pairs_pf_pascal.csv`` (first found wins)

``<root>`` may also be the folder that contains ``PF-dataset-PASCAL`` or ``PF-PASCAL``.

Pair list: a CSV with a header row whose first three columns are ``source_image, target_image, class``
(image paths relative to ``<root>`` such as ``JPEGImages/2007_000123.jpg``, and the class as its 1-based index
into :data:`CLASSES`, or its name); further columns are ignored except ``flip`` (the training list's augmentation
flag), which is copied into :attr:`PairSample.meta` and **not** applied. The class names the annotation folder.

Keypoints: row ``k`` of both images' ``kps`` is the same semantic part; a pair keeps the rows that are finite in
*both* images (``kp_ids`` are their row indices), as the benchmark does. Coordinates are treated like PF-WILLOW's
(same annotation tool): MATLAB 1-based pixels, converted to 0-based. Boxes get the same shift. The PCK box is the
annotated ``bbox`` of the target (``--threshold img`` is the other common PF-PASCAL protocol).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from semcorr_ros.data.base import (
    PairDataset,
    PairInfo,
    PairSample,
    load_mat_arrays,
    load_rgb,
    select_categories,
    subsample_evenly,
)
from semcorr_ros.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

#: the 20 PASCAL VOC classes; the CSV's ``class`` column is a 1-based index into this list
CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
           "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
SPLITS = ("trn", "val", "test")
SPLIT_ALIASES = {"train": "trn", "validation": "val"}
RELEASE_FOLDERS = ("PF-dataset-PASCAL", "PF-PASCAL")
_CSV_NAMES = ("{split}_pairs.csv", "parsed/{split}_pairs.csv", "{split}_pairs_pf_pascal.csv")
_EXPECTED = ("expected <root>/JPEGImages/<image>.jpg, <root>/Annotations/<class>/<image>.mat (kps, bbox) and a "
             "pair list <root>/{trn,val,test}_pairs.csv (or parsed/<split>_pairs.csv) with columns "
             "source_image,target_image,class[,flip]")


def _find_data_root(root: Path) -> Path:
    if not root.exists():
        raise DatasetError(f"PF-PASCAL root {root} does not exist; {_EXPECTED}")
    if not root.is_dir():
        raise DatasetError(f"PF-PASCAL root {root} is not a folder; {_EXPECTED}")
    for candidate in (root, *(root / f for f in RELEASE_FOLDERS)):
        if (candidate / "Annotations").is_dir():
            return candidate
    raise DatasetError(f"PF-PASCAL root {root} has no Annotations/ folder; {_EXPECTED}")


def _class_name(value: str, path: Path, line: int) -> str:
    value = value.strip()
    if value in CLASSES:
        return value
    try:
        idx = int(float(value))
    except ValueError:
        raise DatasetError(f"{path}:{line}: class {value!r} is neither a PASCAL class name nor an index 1..20") \
            from None
    if not 1 <= idx <= len(CLASSES):
        raise DatasetError(f"{path}:{line}: class index {idx} is outside 1..{len(CLASSES)}")
    return CLASSES[idx - 1]


def read_pair_csv(path: Path) -> list[tuple[str, str, str, int | None]]:
    """``(source path, target path, class name, flip or None)`` rows of a PF-PASCAL pair list.

    Raises:
        DatasetError: unreadable file, missing columns or a bad class (names the file and line).
    """
    try:
        with path.open("r", encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read PF-PASCAL pair list {path}: {exc}") from exc
    if not rows:
        raise DatasetError(f"PF-PASCAL pair list {path} is empty; {_EXPECTED}")
    header = [h.strip().lower() for h in rows[0]]
    if len(header) < 3 or header[0] != "source_image" or header[1] != "target_image" or header[2] != "class":
        raise DatasetError(f"PF-PASCAL pair list {path}: header {rows[0]} does not start with "
                           "source_image,target_image,class")
    flip_col = header.index("flip") if "flip" in header else None
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) < 3:
            raise DatasetError(f"{path}:{line}: expected at least 3 columns, got {row}")
        flip = None
        if flip_col is not None and flip_col < len(row) and row[flip_col].strip():
            try:
                flip = int(float(row[flip_col]))
            except ValueError:
                raise DatasetError(f"{path}:{line}: flip {row[flip_col]!r} is not 0/1") from None
        out.append((row[0].strip(), row[1].strip(), _class_name(row[2], path, line), flip))
    return out


def read_annotation(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(kps [K, 2] 0-based with NaN rows, bbox [4] 0-based or None)`` of one PF-PASCAL ``.mat``.

    Raises:
        DatasetError: missing/corrupt file, no ``kps`` or a malformed array (names the file).
    """
    arrays = load_mat_arrays(path, "kps", ("bbox",))
    kps = arrays["kps"]
    if kps.size == 0:
        kps = np.zeros((0, 2))
    if kps.ndim != 2 or kps.shape[1] != 2:
        raise DatasetError(f"{path}: 'kps' must be K x 2 (x, y), got shape {kps.shape}")
    bbox = None
    if "bbox" in arrays:
        bbox = arrays["bbox"].reshape(-1)
        if bbox.shape != (4,):
            raise DatasetError(f"{path}: 'bbox' must have 4 values (x0, y0, x1, y1), got {bbox.shape[0]}")
        bbox = bbox - 1.0
    return kps - 1.0, bbox


class PFPascalDataset(PairDataset):
    """PF-PASCAL pairs of one split, read lazily.

    Args:
        root: dataset folder (see the module docstring for the layout).
        split: ``trn``, ``val`` or ``test`` (default; ``train``/``validation`` are aliases).
        categories: keep only these classes (e.g. ``["car"]``); ``None`` keeps all.
        max_pairs: keep at most this many pairs, spread evenly over the split's list (deterministic).

    Pairs keep the CSV's order; ``pair_id`` is ``"<split>/<line index>:<class>/<src>-<tgt>"``.

    Raises:
        DatasetError: ``root`` is missing or not in the layout, or the split has no pair list / no pairs.
        ConfigError: unknown split or category; bad ``max_pairs``.
    """

    name = "pf-pascal"

    def __init__(self, root: str | Path, split: str = "test",
                 categories: str | list[str] | tuple[str, ...] | None = None, max_pairs: int | None = None) -> None:
        super().__init__(root)
        split_key = SPLIT_ALIASES.get(split, split)
        if split_key not in SPLITS:
            raise ConfigError(f"pf-pascal has no split {split!r}; valid splits: {', '.join(SPLITS)} "
                              f"(aliases: {', '.join(f'{k}={v}' for k, v in SPLIT_ALIASES.items())})")
        self.split = split_key
        self.data_root = _find_data_root(self.root)
        candidates = [self.data_root / n.format(split=split_key) for n in _CSV_NAMES]
        csv_path = next((p for p in candidates if p.is_file()), None)
        if csv_path is None:
            raise DatasetError(f"PF-PASCAL root {self.root} has no pair list for split {split_key!r} (looked for "
                               f"{', '.join(str(p) for p in candidates)}); {_EXPECTED}")
        self.csv_path = csv_path
        rows = read_pair_csv(csv_path)
        if not rows:
            raise DatasetError(f"PF-PASCAL pair list {csv_path} lists no pairs")
        present = sorted({cls for _, _, cls, _ in rows})
        chosen = set(select_categories(present, categories, self.name))
        infos: list[PairInfo] = []
        self._rows: dict[str, tuple[str, str, str, int | None]] = {}
        for i, (src, tgt, cls, flip) in enumerate(rows):
            if cls not in chosen:
                continue
            pid = f"{split_key}/{i:05d}:{cls}/{Path(src).stem}-{Path(tgt).stem}"
            infos.append(PairInfo(pid, cls, Path(src).stem, Path(tgt).stem))
            self._rows[pid] = (src, tgt, cls, flip)
        keep = subsample_evenly(len(infos), max_pairs)
        self._infos = [infos[i] for i in keep]
        self._ann_cache: dict[tuple[str, str], tuple[np.ndarray, np.ndarray | None]] = {}

    def _image_path(self, rel: str) -> Path:
        path = self.data_root / rel
        if not path.is_file():
            alt = self.data_root / "JPEGImages" / Path(rel).name
            if alt.is_file():
                return alt
        return path

    def _annotation(self, cls: str, rel: str) -> tuple[np.ndarray, np.ndarray | None]:
        key = (cls, Path(rel).stem)
        if key not in self._ann_cache:
            self._ann_cache[key] = read_annotation(self.data_root / "Annotations" / cls / f"{Path(rel).stem}.mat")
        kps, box = self._ann_cache[key]
        return kps.copy(), None if box is None else box.copy()

    def _load(self, index: int) -> PairSample:
        info = self._infos[index]
        src, tgt, cls, flip = self._rows[info.pair_id]
        src_kps, src_box = self._annotation(cls, src)
        tgt_kps, tgt_box = self._annotation(cls, tgt)
        if src_kps.shape != tgt_kps.shape:
            raise DatasetError(f"pf-pascal pair {info.pair_id}: {src_kps.shape[0]} source keypoints but "
                               f"{tgt_kps.shape[0]} target keypoints (class {cls})")
        both = np.isfinite(src_kps).all(1) & np.isfinite(tgt_kps).all(1)
        meta = {"split": self.split}
        if flip is not None:
            meta["flip"] = flip
        return PairSample(
            pair_id=info.pair_id, category=cls, src_name=info.src_name, tgt_name=info.tgt_name,
            src_image=load_rgb(self._image_path(src)), tgt_image=load_rgb(self._image_path(tgt)),
            src_kps=src_kps[both], tgt_kps=tgt_kps[both], src_bbox=src_box, tgt_bbox=tgt_box,
            kp_ids=np.flatnonzero(both), meta=meta,
        )
