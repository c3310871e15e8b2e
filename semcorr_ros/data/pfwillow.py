"""PF-WILLOW (Ham et al., "Proposal Flow", CVPR 2016) as a lazy pair dataset.

Layout (the ProposalFlow release, unchanged)::

    <root>/<sub-class>/<name>.png      e.g. car(G)/Cars_006a.png
    <root>/<sub-class>/<name>.mat      ``pts_coord``: 2 x K (row 0 = x, row 1 = y), MATLAB 1-based pixels

``<root>`` may also be the folder that contains the release's ``PF-dataset-WILLOW`` folder.
Protocol: every ordered pair of distinct images inside one sub-class (category = sub-class folder name); the
PCK threshold box is the target keypoints' bounding box, so ``src_bbox``/``tgt_bbox`` are keypoint boxes.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from semcorr_ros.data.base import (
    PairDataset,
    PairInfo,
    PairSample,
    keypoint_bbox,
    load_mat_arrays,
    load_rgb,
    select_categories,
    subsample_evenly,
)
from semcorr_ros.errors import DatasetError

log = logging.getLogger(__name__)

#: folder name of the dataset inside the ProposalFlow release archive
RELEASE_FOLDER = "PF-dataset-WILLOW"
#: image extensions looked for next to each ``.mat`` (the release uses ``.png``)
IMAGE_EXTS = (".png", ".jpg", ".jpeg")
_EXPECTED = ("expected <root>/<sub-class>/<name>.png with <name>.mat holding 'pts_coord' (e.g. "
             "car(G)/Cars_006a.png + Cars_006a.mat), or <root>/" + RELEASE_FOLDER + "/<sub-class>/...")


def _image_stems(folder: Path) -> dict[str, tuple[Path | None, Path]]:
    """``stem -> (image path, .mat path)`` of the annotated images (those with a ``.mat``) in ``folder``.

    The image path is ``None`` when the ``.mat`` has no image next to it (reported when the pair is read).
    """
    files = sorted(p for p in folder.iterdir() if p.is_file())
    mats = {p.stem: p for p in files if p.suffix.lower() == ".mat"}
    images: dict[str, Path] = {}
    for ext in reversed(IMAGE_EXTS):  # the first extension in IMAGE_EXTS wins
        images.update({p.stem: p for p in files if p.suffix.lower() == ext and p.stem in mats})
    return {stem: (images.get(stem), mat) for stem, mat in mats.items()}


def _has_mat_subfolder(folder: Path, limit: int = 200) -> bool:
    """Whether one of the first ``limit`` sub-folders of ``folder`` holds a ``.mat`` file (unreadable: no)."""
    try:
        subs = [d for d in folder.iterdir() if d.is_dir()][:limit]
        return any(any(f.suffix.lower() == ".mat" for f in d.iterdir()) for d in subs)
    except OSError:
        return False


def _find_data_root(root: Path) -> Path:
    if not root.exists():
        raise DatasetError(f"PF-WILLOW root {root} does not exist; {_EXPECTED}")
    if not root.is_dir():
        raise DatasetError(f"PF-WILLOW root {root} is not a folder; {_EXPECTED}")
    for candidate in (root, root / RELEASE_FOLDER):
        if candidate.is_dir() and _has_mat_subfolder(candidate):
            return candidate
    hint = ""
    try:
        subs = sorted(d for d in root.iterdir() if d.is_dir())[:50]
    except OSError:
        subs = []
    for sub in subs:
        if _has_mat_subfolder(sub, limit=50):
            hint = f" (did you mean {sub}?)"
            break
    raise DatasetError(f"PF-WILLOW root {root} holds no sub-class folder with .mat annotations{hint}; {_EXPECTED}")


def read_pts_coord(path: Path) -> np.ndarray:
    """Keypoints of one PF-WILLOW ``.mat`` as 0-based ``float64 [K, 2]`` ``(x, y)``.

    Raises:
        DatasetError: missing/corrupt file, no ``pts_coord`` or not ``2 x K`` (names the file).
    """
    pts = load_mat_arrays(path, "pts_coord")["pts_coord"]
    if pts.ndim != 2 or pts.shape[0] != 2 or pts.shape[1] < 1:
        raise DatasetError(f"{path}: 'pts_coord' must be 2 x K (row 0 = x, row 1 = y), got shape {pts.shape}")
    return pts.T - 1.0  # MATLAB 1-based -> 0-based


class PFWillowDataset(PairDataset):
    """PF-WILLOW pairs, read lazily.

    Args:
        root: dataset folder (see the module docstring for the layout).
        categories: keep only these sub-classes (e.g. ``["car(G)"]``); ``None`` keeps all.
        max_pairs: keep at most this many pairs, spread evenly over the full ordered list (deterministic).
        split: PF-WILLOW has a single split; only ``None``/``"test"``/``"all"`` are accepted.

    Pairs are ordered by sub-class name, then source name, then target name. ``pair_id`` is
    ``"<sub-class>/<src>-<tgt>"``; ``kp_ids`` are ``0..K-1`` (same semantic order in every image of a sub-class).

    Raises:
        DatasetError: ``root`` is missing, empty or not in the expected layout.
        ConfigError: unknown category, bad ``max_pairs`` or ``split``.
    """

    name = "pf-willow"
    SPLITS = ("test", "all")

    def __init__(self, root: str | Path, categories: str | list[str] | tuple[str, ...] | None = None,
                 max_pairs: int | None = None, split: str | None = None) -> None:
        super().__init__(root)
        self._check_single_split(split)
        self.data_root = _find_data_root(self.root)
        folders = {d.name: d for d in self.data_root.iterdir() if d.is_dir()}
        images: dict[str, dict[str, tuple[Path | None, Path]]] = {}
        for name in sorted(folders):
            stems = _image_stems(folders[name])
            if stems:
                images[name] = stems
        chosen = select_categories(sorted(images), categories, self.name)
        infos: list[PairInfo] = []
        self._files: dict[tuple[str, str], tuple[Path | None, Path]] = {}
        for cat in chosen:
            stems = sorted(images[cat])
            if len(stems) < 2:
                log.warning("pf-willow: sub-class %s has %d annotated image(s); it gives no pairs", cat, len(stems))
            for stem in stems:
                self._files[(cat, stem)] = images[cat][stem]
            infos.extend(PairInfo(f"{cat}/{s}-{t}", cat, s, t) for s in stems for t in stems if s != t)
        if not infos:
            raise DatasetError(f"PF-WILLOW root {self.root} gives no pairs (every sub-class has fewer than two "
                               f"annotated images); {_EXPECTED}")
        keep = subsample_evenly(len(infos), max_pairs)
        self._infos = [infos[i] for i in keep]
        self._kps_cache: dict[tuple[str, str], np.ndarray] = {}

    def _keypoints(self, cat: str, stem: str) -> np.ndarray:
        key = (cat, stem)
        if key not in self._kps_cache:
            self._kps_cache[key] = read_pts_coord(self._files[key][1])
        return self._kps_cache[key].copy()

    def _image(self, cat: str, stem: str) -> np.ndarray:
        path = self._files[(cat, stem)][0]
        if path is None:
            raise DatasetError(f"image missing for annotation {self._files[(cat, stem)][1]} "
                               f"(looked for {', '.join(stem + e for e in IMAGE_EXTS)})")
        return load_rgb(path)

    def _load(self, index: int) -> PairSample:
        info = self._infos[index]
        src_kps = self._keypoints(info.category, info.src_name)
        tgt_kps = self._keypoints(info.category, info.tgt_name)
        if src_kps.shape != tgt_kps.shape:
            raise DatasetError(f"pf-willow pair {info.pair_id}: {src_kps.shape[0]} source keypoints "
                               f"({self._files[(info.category, info.src_name)][1]}) but {tgt_kps.shape[0]} target "
                               f"keypoints ({self._files[(info.category, info.tgt_name)][1]})")
        return PairSample(
            pair_id=info.pair_id, category=info.category, src_name=info.src_name, tgt_name=info.tgt_name,
            src_image=self._image(info.category, info.src_name), tgt_image=self._image(info.category, info.tgt_name),
            src_kps=src_kps, tgt_kps=tgt_kps, src_bbox=keypoint_bbox(src_kps), tgt_bbox=keypoint_bbox(tgt_kps),
            kp_ids=np.arange(src_kps.shape[0]),
        )
