"""SPair-71k (Min et al., 2019) as a lazy pair dataset.

Layout (the original release)::

    <root>/JPEGImages/<category>/<image>.jpg
    <root>/PairAnnotation/{trn,val,test}/<pair>.json    src_imname, trg_imname, category, src_kps, trg_kps
                                                        ([[x, y], ...], 0-based pixels), src_bndbox, trg_bndbox
                                                        ([x0, y0, x1, y1]), kps_ids, viewpoint_variation, ...
    <root>/ImageAnnotation/<category>/<image>.json      (not needed for pairs)
    <root>/Layout/{large,small}/{trn,val,test}.txt      one pair name a line, e.g.
                                                        ``000001-2008_006481-2008_007698:aeroplane``

The pair list comes from ``Layout/<layout>/<split>.txt``; without it, from the ``.json`` files of
``PairAnnotation/<split>`` (sorted by name). The PCK box is the pair annotation's own ``trg_bndbox``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from semcorr_ros.data.base import PairDataset, PairInfo, PairSample, load_rgb, select_categories, subsample_evenly
from semcorr_ros.errors import ConfigError, DatasetError

log = logging.getLogger(__name__)

#: split names of the release; the keys of :data:`SPLIT_ALIASES` are accepted as well
SPLITS = ("trn", "val", "test")
SPLIT_ALIASES = {"train": "trn", "validation": "val"}
LAYOUTS = ("large", "small")
#: per-pair annotation copied into :attr:`PairSample.meta` when present
META_KEYS = ("viewpoint_variation", "scale_variation", "truncation", "occlusion", "mirror",
             "src_imsize", "trg_imsize", "src_pose", "trg_pose", "src_trunc", "trg_trunc", "src_occl", "trg_occl")
_EXPECTED = ("expected the SPair-71k release layout: <root>/JPEGImages/<category>/<image>.jpg, "
             "<root>/PairAnnotation/{trn,val,test}/<pair>.json and <root>/Layout/large/{trn,val,test}.txt")


def _split_pair_name(name: str) -> tuple[str, str, str]:
    """``'000001-2008_006481-2008_007698:aeroplane'`` -> ``('aeroplane', '2008_006481', '2008_007698')``.

    Image names are empty strings when the stem does not have the ``index-src-tgt`` form.
    """
    stem, _, category = name.rpartition(":")
    parts = stem.split("-")
    src, tgt = (parts[1], parts[2]) if len(parts) == 3 else ("", "")
    return category, src, tgt


def _as_points(value: object, field: str, path: Path) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: '{field}' is not a list of [x, y] numbers: {exc}") from exc
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise DatasetError(f"{path}: '{field}' must be a list of [x, y] pairs, got shape {arr.shape}")
    return arr


def _as_box(value: object, field: str, path: Path) -> np.ndarray:
    try:
        box = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"{path}: '{field}' is not [x0, y0, x1, y1]: {exc}") from exc
    if box.shape != (4,):
        raise DatasetError(f"{path}: '{field}' must be [x0, y0, x1, y1], got {box.shape[0]} values")
    return box


class SPairDataset(PairDataset):
    """SPair-71k pairs of one split, read lazily.

    Args:
        root: dataset folder (see the module docstring for the layout).
        split: ``trn``, ``val`` or ``test`` (default; ``train``/``validation`` are aliases).
        categories: keep only these categories (e.g. ``["cat", "dog"]``); ``None`` keeps all.
        max_pairs: keep at most this many pairs, spread evenly over the split's list (deterministic).
        layout: ``large`` (the benchmark's pair lists, default) or ``small``.

    ``pair_id`` is the release's pair name (``000001-2008_006481-2008_007698:aeroplane``). Keypoints are the ones
    visible in both images, as listed in the pair annotation; ``kp_ids`` are their ids in the category.

    Raises:
        DatasetError: ``root`` is missing or not in the release layout, or the split has no pairs.
        ConfigError: unknown split, layout or category; bad ``max_pairs``.
    """

    name = "spair"

    def __init__(self, root: str | Path, split: str = "test",
                 categories: str | list[str] | tuple[str, ...] | None = None, max_pairs: int | None = None,
                 layout: str = "large") -> None:
        super().__init__(root)
        split_key = SPLIT_ALIASES.get(split, split)
        if split_key not in SPLITS:
            raise ConfigError(f"spair has no split {split!r}; valid splits: {', '.join(SPLITS)} "
                              f"(aliases: {', '.join(f'{k}={v}' for k, v in SPLIT_ALIASES.items())})")
        if layout not in LAYOUTS:
            raise ConfigError(f"spair has no layout {layout!r}; valid layouts: {', '.join(LAYOUTS)}")
        self.split = split_key
        self.layout = layout
        if not self.root.is_dir():
            raise DatasetError(f"SPair root {self.root} is not an existing folder; {_EXPECTED}")
        missing = [d for d in ("JPEGImages", "PairAnnotation") if not (self.root / d).is_dir()]
        if missing:
            raise DatasetError(f"SPair root {self.root} lacks {' and '.join(missing)}; {_EXPECTED}")
        self.image_dir = self.root / "JPEGImages"
        self.annotation_dir = self.root / "PairAnnotation" / split_key

        names = self._pair_names()
        by_name = [(name, *_split_pair_name(name)) for name in names]
        chosen = set(select_categories(sorted({c for _, c, _, _ in by_name}), categories, self.name))
        infos = [PairInfo(name, cat, src, tgt) for name, cat, src, tgt in by_name if cat in chosen]
        keep = subsample_evenly(len(infos), max_pairs)
        self._infos = [infos[i] for i in keep]

    def _pair_names(self) -> list[str]:
        list_file = self.root / "Layout" / self.layout / f"{self.split}.txt"
        if list_file.is_file():
            try:
                lines = list_file.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise DatasetError(f"cannot read SPair pair list {list_file}: {exc}") from exc
            names = [ln.strip() for ln in lines if ln.strip()]
            source = str(list_file)
        elif self.annotation_dir.is_dir():
            log.info("spair: %s not found; listing %s instead", list_file, self.annotation_dir)
            names = sorted(p.stem for p in self.annotation_dir.glob("*.json"))
            source = str(self.annotation_dir)
        else:
            raise DatasetError(f"SPair root {self.root} has neither {list_file} nor {self.annotation_dir}; "
                               f"{_EXPECTED}")
        bad = [n for n in names if ":" not in n or not n.rpartition(":")[2]]
        if bad:
            raise DatasetError(f"{source}: pair name {bad[0]!r} is not '<index>-<src>-<tgt>:<category>' "
                               f"({len(bad)} such names)")
        if not names:
            raise DatasetError(f"{source} lists no pairs; {_EXPECTED}")
        return names

    def _read_annotation(self, name: str) -> tuple[Path, dict]:
        path = self.annotation_dir / f"{name}.json"
        if not path.is_file():
            raise DatasetError(f"pair annotation missing: {path}")
        try:
            with path.open("r", encoding="utf-8") as fh:
                ann = json.load(fh)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DatasetError(f"cannot read pair annotation {path}: {type(exc).__name__}: {exc}") from exc
        if not isinstance(ann, dict):
            raise DatasetError(f"pair annotation {path} is not a JSON object")
        missing = [k for k in ("src_imname", "trg_imname", "src_kps", "trg_kps") if k not in ann]
        if missing:
            raise DatasetError(f"pair annotation {path} lacks {', '.join(missing)}")
        return path, ann

    def _image_path(self, category: str, imname: str) -> Path:
        name = str(imname)
        if not Path(name).suffix:
            name += ".jpg"
        return self.image_dir / category / name

    def _load(self, index: int) -> PairSample:
        info = self._infos[index]
        path, ann = self._read_annotation(info.pair_id)
        category = str(ann.get("category", info.category))
        if category != info.category:
            raise DatasetError(f"{path} says category {category!r} but its pair name says {info.category!r}")
        src_kps = _as_points(ann["src_kps"], "src_kps", path)
        tgt_kps = _as_points(ann["trg_kps"], "trg_kps", path)
        if src_kps.shape != tgt_kps.shape:
            raise DatasetError(f"{path}: {src_kps.shape[0]} src_kps but {tgt_kps.shape[0]} trg_kps")
        kp_ids = None
        if "kps_ids" in ann:
            try:
                kp_ids = np.asarray([int(k) for k in ann["kps_ids"]], dtype=np.int64)
            except (TypeError, ValueError) as exc:
                raise DatasetError(f"{path}: 'kps_ids' are not integers: {exc}") from exc
            if kp_ids.shape[0] != src_kps.shape[0]:
                raise DatasetError(f"{path}: {kp_ids.shape[0]} kps_ids for {src_kps.shape[0]} keypoints")
        src_bbox = _as_box(ann["src_bndbox"], "src_bndbox", path) if "src_bndbox" in ann else None
        tgt_bbox = _as_box(ann["trg_bndbox"], "trg_bndbox", path) if "trg_bndbox" in ann else None
        src_name, tgt_name = Path(str(ann["src_imname"])).stem, Path(str(ann["trg_imname"])).stem
        return PairSample(
            pair_id=info.pair_id, category=category, src_name=src_name, tgt_name=tgt_name,
            src_image=load_rgb(self._image_path(category, ann["src_imname"])),
            tgt_image=load_rgb(self._image_path(category, ann["trg_imname"])),
            src_kps=src_kps, tgt_kps=tgt_kps, src_bbox=src_bbox, tgt_bbox=tgt_bbox, kp_ids=kp_ids,
            meta={k: ann[k] for k in META_KEYS if k in ann},
        )
