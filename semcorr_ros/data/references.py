"""Annotated views of your own objects, in the node's reference-file format, as a pair dataset.

Layout::

    <root>/<category>/<view>.yaml      one reference file per view (semcorr_ros.reference), e.g. mug/front.yaml

Each file is what the node takes as its reference (``image``, named ``keypoints``, optional ``depth`` and
``intrinsics``), so annotating a few more views of an object with the same keypoint names gives a set to
train the fusion on (``semcorr train-fusion --dataset references --root DIR [--fusion-model projected]``) and to
score the engine on (``semcorr eval --dataset references --root DIR``).

Protocol: every ordered pair of distinct views inside one category (category = folder name). Keypoints are
aligned by name over the sorted union of the category's names; a name a view lacks is NaN there (neither scored
nor trained). Boxes are each view's keypoint box (the PCK threshold, as for PF-WILLOW). Views with a depth image give
RGB-D pairs (``src_depth`` / ``tgt_depth`` in metres), which ``train-fusion --learn-depth`` uses.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from semcorr_ros.data.base import PairDataset, PairInfo, PairSample, keypoint_bbox, select_categories, subsample_evenly
from semcorr_ros.errors import BadReferenceError, DatasetError

log = logging.getLogger(__name__)

_EXPECTED = "expected <root>/<category>/<view>.yaml reference files (image + named keypoints), e.g. mug/front.yaml"
_SUFFIXES = (".yaml", ".yml")


class ReferenceDataset(PairDataset):
    """Pairs of annotated views (reference files), read lazily.

    Args:
        root: folder with one sub-folder of reference files per category.
        categories: keep only these categories; ``None`` keeps all.
        max_pairs: keep at most this many pairs, spread evenly over the ordered list (deterministic).
        split: a single split; only ``None`` / ``"test"`` / ``"all"`` are accepted.

    Raises:
        DatasetError: ``root`` is missing or holds no category with two readable views; a file names no keypoints.
        ConfigError: unknown category, bad ``max_pairs`` or ``split``.
    """

    name = "references"
    SPLITS = ("test", "all")

    def __init__(self, root: str | Path, categories: str | list[str] | tuple[str, ...] | None = None,
                 max_pairs: int | None = None, split: str | None = None) -> None:
        from semcorr_ros.reference import load_keypoints

        super().__init__(root)
        self._check_single_split(split)
        if not self.root.is_dir():
            raise DatasetError(f"references root {self.root} is not a folder; {_EXPECTED}")
        views: dict[str, dict[str, Path]] = {}
        self._names: dict[str, list[str]] = {}
        for folder in sorted(d for d in self.root.iterdir() if d.is_dir()):
            files = {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in _SUFFIXES}
            if not files:
                continue
            names: set[str] = set()
            for path in files.values():
                try:
                    names.update(load_keypoints(path)[1])
                except BadReferenceError as exc:
                    raise DatasetError(str(exc)) from exc
            views[folder.name] = files
            self._names[folder.name] = sorted(names)
        chosen = select_categories(sorted(views), categories, self.name)
        infos: list[PairInfo] = []
        self._files: dict[tuple[str, str], Path] = {}
        for cat in chosen:
            stems = sorted(views[cat])
            if len(stems) < 2:
                log.warning("references: category %s has %d view(s); it gives no pairs", cat, len(stems))
            self._files.update({(cat, s): views[cat][s] for s in stems})
            infos.extend(PairInfo(f"{cat}/{s}-{t}", cat, s, t) for s in stems for t in stems if s != t)
        if not infos:
            raise DatasetError(f"references root {self.root} gives no pairs (no category has two views); {_EXPECTED}")
        self._infos = [infos[i] for i in subsample_evenly(len(infos), max_pairs)]

    def _view(self, cat: str, stem: str):
        """``(image, [K, 2] keypoints in the category's name order, depth or None)`` of one view."""
        from semcorr_ros.reference import load_reference

        path = self._files[(cat, stem)]
        try:
            ref = load_reference(path)
        except BadReferenceError as exc:
            raise DatasetError(str(exc)) from exc
        row = {n: i for i, n in enumerate(ref.names)}
        kps = np.full((len(self._names[cat]), 2), np.nan)
        for j, name in enumerate(self._names[cat]):
            if name in row:
                kps[j] = ref.keypoints[row[name]]
        return ref.image, kps, ref.depth

    def _load(self, index: int) -> PairSample:
        info = self._infos[index]
        src_img, src_kps, src_depth = self._view(info.category, info.src_name)
        tgt_img, tgt_kps, tgt_depth = self._view(info.category, info.tgt_name)
        return PairSample(
            pair_id=info.pair_id, category=info.category, src_name=info.src_name, tgt_name=info.tgt_name,
            src_image=src_img, tgt_image=tgt_img, src_kps=src_kps, tgt_kps=tgt_kps,
            src_bbox=keypoint_bbox(src_kps), tgt_bbox=keypoint_bbox(tgt_kps),
            kp_ids=np.arange(len(self._names[info.category])), kp_names=list(self._names[info.category]),
            src_depth=src_depth, tgt_depth=tgt_depth,
        )
