"""Common types of the correspondence benchmarks: one annotated image pair, a lazy pair dataset, a registry.

Conventions (shared by every loader in :mod:`semcorr_ros.data`):
- images are ``uint8 [H, W, 3]`` RGB numpy arrays, decoded only when a sample is requested;
- keypoints are ``float64 [K, 2]`` ``(x, y)`` pixel coordinates, 0-based (pixel centres at integers);
  loaders convert 1-based MATLAB annotations;
- bounding boxes are ``float64 [4]`` ``(x0, y0, x1, y1)`` in pixels.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from semcorr_ros.errors import ConfigError, DatasetError, InputError


@dataclass
class PairSample:
    """One annotated (source, target) image pair.

    Attributes:
        pair_id: unique id of the pair inside its dataset (stable across runs).
        category: object category (PF-WILLOW: the sub-class folder, e.g. ``car(G)``).
        src_name, tgt_name: image names (file stems), for logs and pictures.
        src_image, tgt_image: ``uint8 [H, W, 3]`` RGB.
        src_kps, tgt_kps: ``float64 [K, 2]`` 0-based ``(x, y)`` pixels; row ``k`` of both is the same semantic
            keypoint. A non-finite ground-truth row is not scored.
        src_bbox, tgt_bbox: ``float64 [4]`` ``(x0, y0, x1, y1)`` pixels, or ``None`` when the dataset has none.
            ``tgt_bbox`` sets the PCK threshold in ``bbox`` mode.
        kp_ids: ``int [K]`` keypoint ids in the category's keypoint list, when known.
        kp_names: ``K`` keypoint names, when known.
        meta: extra per-pair annotation (e.g. SPair's ``viewpoint_variation``), JSON-serialisable.
        src_depth, tgt_depth: ``float32 [H, W]`` depth in metres (NaN invalid) aligned to the images, for RGB-D
            datasets (the synthetic scenes); ``None`` otherwise.
    """

    pair_id: str
    category: str
    src_name: str
    tgt_name: str
    src_image: np.ndarray
    tgt_image: np.ndarray
    src_kps: np.ndarray
    tgt_kps: np.ndarray
    src_bbox: np.ndarray | None = None
    tgt_bbox: np.ndarray | None = None
    kp_ids: np.ndarray | None = None
    kp_names: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    src_depth: np.ndarray | None = None
    tgt_depth: np.ndarray | None = None

    def __post_init__(self) -> None:
        for name in ("src_image", "tgt_image"):
            img = getattr(self, name)
            if not isinstance(img, np.ndarray) or img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
                raise InputError(f"PairSample {self.pair_id!r}: {name} must be uint8 [H, W, 3], got "
                                 f"{getattr(img, 'dtype', type(img).__name__)} {getattr(img, 'shape', '')}")
        self.src_kps = np.asarray(self.src_kps, dtype=np.float64).reshape(-1, 2)
        self.tgt_kps = np.asarray(self.tgt_kps, dtype=np.float64).reshape(-1, 2)
        if self.src_kps.shape != self.tgt_kps.shape:
            raise InputError(f"PairSample {self.pair_id!r}: src_kps {self.src_kps.shape} and tgt_kps "
                             f"{self.tgt_kps.shape} differ")
        for name in ("src_bbox", "tgt_bbox"):
            box = getattr(self, name)
            if box is not None:
                box = np.asarray(box, dtype=np.float64).reshape(-1)
                if box.shape != (4,):
                    raise InputError(f"PairSample {self.pair_id!r}: {name} must have 4 values (x0, y0, x1, y1), "
                                     f"got {box.shape[0]}")
                setattr(self, name, box)
        if self.kp_ids is not None:
            self.kp_ids = np.asarray(self.kp_ids, dtype=np.int64).reshape(-1)
            if self.kp_ids.shape[0] != self.num_keypoints:
                raise InputError(f"PairSample {self.pair_id!r}: {self.kp_ids.shape[0]} kp_ids for "
                                 f"{self.num_keypoints} keypoints")
        if self.kp_names is not None and len(self.kp_names) != self.num_keypoints:
            raise InputError(f"PairSample {self.pair_id!r}: {len(self.kp_names)} kp_names for "
                             f"{self.num_keypoints} keypoints")

    @property
    def num_keypoints(self) -> int:
        """``K``."""
        return int(self.src_kps.shape[0])

    @property
    def src_hw(self) -> tuple[int, int]:
        """Source image ``(height, width)`` in pixels."""
        return int(self.src_image.shape[0]), int(self.src_image.shape[1])

    @property
    def tgt_hw(self) -> tuple[int, int]:
        """Target image ``(height, width)`` in pixels."""
        return int(self.tgt_image.shape[0]), int(self.tgt_image.shape[1])


@dataclass(frozen=True)
class PairInfo:
    """What a dataset knows about a pair without reading any file (for logs and skip reports)."""

    pair_id: str
    category: str
    src_name: str
    tgt_name: str


class PairDataset:
    """Lazy, indexable list of :class:`PairSample` (``len``, ``[i]``, iteration).

    Subclasses fill ``self._infos`` (one :class:`PairInfo` per pair, in a deterministic order) at construction,
    raising :class:`DatasetError` for a wrong root, and implement :meth:`_load`, which reads the files of one
    pair and raises :class:`DatasetError` naming the file it could not read.
    """

    name: str = "pairs"

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self._infos: list[PairInfo] = []

    # -- Sequence protocol -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._infos)

    def __getitem__(self, index: int) -> PairSample:
        """Read pair ``index`` (negative indices count from the end).

        Raises:
            IndexError: index out of range.
            DatasetError: a file of this pair is missing or cannot be decoded (the message names it).
        """
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise TypeError(f"{type(self).__name__} indices must be integers, got {type(index).__name__}")
        n = len(self._infos)
        i = int(index) + n if index < 0 else int(index)
        if not 0 <= i < n:
            raise IndexError(f"pair index {index} out of range for {n} pairs")
        return self._load(i)

    def __iter__(self) -> Iterator[PairSample]:
        for i in range(len(self)):
            yield self[i]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(root={str(self.root)!r}, pairs={len(self)}, categories={len(self.categories)})"

    # -- metadata ----------------------------------------------------------------------------------------------
    @property
    def categories(self) -> list[str]:
        """Categories that have at least one pair, sorted."""
        return sorted({info.category for info in self._infos})

    def pair_info(self, index: int) -> PairInfo:
        """Id, category and image names of pair ``index`` without reading any file."""
        return self._infos[index]

    @property
    def pair_ids(self) -> list[str]:
        """Ids of all pairs, in dataset order."""
        return [info.pair_id for info in self._infos]

    def _load(self, index: int) -> PairSample:  # pragma: no cover - abstract
        raise NotImplementedError

    def _check_single_split(self, split: str | None) -> None:
        """For datasets with one split: accept ``None`` or a name in ``SPLITS`` (all meaning every pair).

        Raises:
            ConfigError: any other split name (lists the valid ones).
        """
        splits = getattr(self, "SPLITS", ())
        if split is not None and split not in splits:
            raise ConfigError(f"{self.name} has no split {split!r}; valid splits: {', '.join(splits)} "
                              "(all mean every pair)")


# -- helpers shared by the loaders -----------------------------------------------------------------------------

def load_rgb(path: Path) -> np.ndarray:
    """Decode an image file to ``uint8 [H, W, 3]`` RGB.

    Raises:
        DatasetError: the file is missing or is not a decodable image (names the file).
    """
    from PIL import Image

    if not path.is_file():
        raise DatasetError(f"image file missing: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except Exception as exc:  # PIL raises several unrelated types for corrupt files
        raise DatasetError(f"cannot decode image {path}: {type(exc).__name__}: {exc}") from exc
    return np.ascontiguousarray(arr)


def keypoint_bbox(kps: np.ndarray) -> np.ndarray:
    """Tight ``(x0, y0, x1, y1)`` box of the finite rows of ``kps [K, 2]``; all ``nan`` when none is finite."""
    kps = np.asarray(kps, dtype=np.float64).reshape(-1, 2)
    ok = np.isfinite(kps).all(axis=1)
    if not ok.any():
        return np.full(4, np.nan)
    pts = kps[ok]
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


def subsample_evenly(n: int, max_items: int | None) -> np.ndarray:
    """Indices of ``min(n, max_items)`` items spread evenly over ``range(n)`` (deterministic, increasing).

    Raises:
        ConfigError: ``max_items`` is not a positive integer (``None`` keeps all).
    """
    if max_items is None or max_items >= n:
        return np.arange(n)
    if isinstance(max_items, bool) or not isinstance(max_items, (int, np.integer)) or max_items < 1:
        raise ConfigError(f"max_pairs must be a positive integer or None, got {max_items!r}")
    return (np.arange(max_items, dtype=np.int64) * n) // int(max_items)


def select_categories(available: list[str], wanted: str | list[str] | tuple[str, ...] | None,
                      dataset: str) -> list[str]:
    """Check a category filter against the available categories; ``None`` means all.

    Raises:
        ConfigError: an unknown category (the message lists the valid ones) or an empty filter.
    """
    if wanted is None:
        return list(available)
    wanted_list = [wanted] if isinstance(wanted, str) else list(wanted)
    if not wanted_list:
        raise ConfigError(f"{dataset}: empty category filter; valid categories: {', '.join(available)}")
    unknown = [c for c in wanted_list if c not in available]
    if unknown:
        raise ConfigError(f"{dataset}: unknown categor{'y' if len(unknown) == 1 else 'ies'} "
                          f"{', '.join(map(repr, unknown))}; valid categories: {', '.join(available)}")
    return [c for c in available if c in wanted_list]


# -- registry --------------------------------------------------------------------------------------------------

#: dataset name -> (module, class) — imported on use so that importing one loader never imports the others.
def load_mat_arrays(path: Path, required: str, optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """Numeric float64 arrays of a MATLAB annotation file: ``required`` (must be there) and the ``optional``
    variables that are present.

    Raises:
        DatasetError: missing or corrupt file, no ``required`` variable (lists the ones there), a non-numeric one.
    """
    import scipy.io

    if not path.is_file():
        raise DatasetError(f"annotation file missing: {path}")
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError/TypeError/MatReadError/OSError for corrupt files
        raise DatasetError(f"cannot read MATLAB file {path}: {type(exc).__name__}: {exc}") from exc
    if required not in mat:
        keys = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetError(f"{path} has no '{required}' (variables: {', '.join(keys) or 'none'})")
    out = {}
    for name in (required, *optional):
        if name in mat:
            try:
                out[name] = np.asarray(mat[name], dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise DatasetError(f"{path}: '{name}' is not numeric: {exc}") from exc
    return out


DATASETS: dict[str, tuple[str, str]] = {
    "pf-willow": ("semcorr_ros.data.pfwillow", "PFWillowDataset"),
    "spair": ("semcorr_ros.data.spair", "SPairDataset"),
    "pf-pascal": ("semcorr_ros.data.pfpascal", "PFPascalDataset"),
    "ap10k": ("semcorr_ros.data.ap10k", "AP10KDataset"),
    "references": ("semcorr_ros.data.references", "ReferenceDataset"),
}


def build_dataset(name: str, root: str | Path, split: str | None = None, **kwargs: Any) -> PairDataset:
    """Construct the dataset called ``name`` (one of :data:`DATASETS`) from ``root``.

    Args:
        name: ``pf-willow``, ``spair``, ``pf-pascal``, ``ap10k`` or ``references`` (your own annotated views).
        root: dataset folder (the layout each loader expects is in its docstring).
        split: ``None`` for the dataset's default split (PF-WILLOW: its only split, ``test``; SPair, PF-PASCAL,
            AP-10K: ``test``).
        **kwargs: loader options, e.g. ``categories=[...]``, ``max_pairs=N``.

    Raises:
        ConfigError: unknown name or split (lists the valid ones).
        DatasetError: ``root`` does not hold the expected layout.
    """
    key = str(name).strip().lower().replace("_", "-")
    if key not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid names: {', '.join(sorted(DATASETS))}")
    module_name, class_name = DATASETS[key]
    cls = getattr(importlib.import_module(module_name), class_name)
    if split is not None:
        kwargs["split"] = split
    return cls(root, **kwargs)
