"""Train / held-out splits of a pair dataset for honest fusion evaluation.

Two protocols, combinable:

- **by image** (``image_fraction``): inside every category, a seeded ``fraction`` of the images (sorted by name,
  permuted with a generator seeded by ``sha256("<seed>/<category>")``) is held out. Training pairs have *both*
  images in the training part, held-out pairs have both in the held-out part; pairs mixing the two are dropped,
  so no image is shared between training and held-out pairs.
- **by category** (``categories``): every pair of the named categories is held out (leave-category-out).

A split is written to / read from a JSON file (``{"format": "semcorr-split-v1", "train": [pair ids],
"holdout": [pair ids], ...}``) so that another command reproduces it exactly.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from semcorr_ros.errors import ConfigError, DatasetError

SPLIT_FORMAT = "semcorr-split-v1"


@dataclass
class PairSplit:
    """Indices of a dataset's pairs: ``train`` and ``holdout`` (disjoint); ``info`` describes the protocol."""

    train: list[int]
    holdout: list[int]
    info: dict = field(default_factory=dict)


def _rng(seed: int, category: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}/{category}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def make_split(dataset, image_fraction: float = 0.0, categories: Sequence[str] = (), seed: int = 0) -> PairSplit:
    """Split ``dataset`` (needs ``len``, ``pair_info(i)`` and ``categories``) into training and held-out pairs.

    Args:
        image_fraction: fraction of each category's images to hold out (0: none; at least 2 images are held out
            when it is > 0 and the category has 4 or more).
        categories: categories held out entirely.
        seed: image selection seed.

    Raises:
        ConfigError: fraction outside ``[0, 1)`` or an unknown category.
    """
    if not 0.0 <= image_fraction < 1.0:
        raise ConfigError(f"holdout image fraction must be in [0, 1), got {image_fraction}")
    unknown = [c for c in categories if c not in dataset.categories]
    if unknown:
        raise ConfigError(f"unknown holdout categor{'y' if len(unknown) == 1 else 'ies'} {unknown}; valid: "
                          f"{', '.join(dataset.categories)}")
    infos = [dataset.pair_info(i) for i in range(len(dataset))]
    held_images: dict[str, set[str]] = {}
    if image_fraction > 0:
        images: dict[str, set[str]] = {}
        for info in infos:
            images.setdefault(info.category, set()).update((info.src_name, info.tgt_name))
        for cat, names in sorted(images.items()):
            ordered = sorted(names)
            n = int(round(image_fraction * len(ordered)))
            if len(ordered) >= 4:
                n = min(max(n, 2), len(ordered) - 2)
            perm = _rng(seed, cat).permutation(len(ordered))
            held_images[cat] = {ordered[j] for j in perm[:n]}
    train, holdout = [], []
    for i, info in enumerate(infos):
        if info.category in categories:
            holdout.append(i)
            continue
        held = held_images.get(info.category, set())
        a, b = info.src_name in held, info.tgt_name in held
        if a and b:
            holdout.append(i)
        elif not a and not b:
            train.append(i)
    info = {"image_fraction": image_fraction, "categories": list(categories), "seed": seed,
            "holdout_images": {c: sorted(v) for c, v in sorted(held_images.items())}}
    return PairSplit(train, holdout, info)


def group_split(dataset, indices: Sequence[int], fraction: float, seed: int = 0) -> tuple[list[int], list[int]]:
    """Split the pairs ``indices`` into ``(fit, validation)`` by independent groups: the connected components of
    the graph whose nodes are images and whose edges are pairs (a synthetic scene: its reference and its frames;
    a PF-WILLOW sub-class: all its images), so that no image is shared. Whole groups, in a seeded random order,
    go to validation until it holds at least ``fraction`` of the pairs; at least one group stays for fitting.

    Raises:
        ConfigError: ``fraction`` outside ``(0, 1)`` or fewer than two groups.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"validation fraction must be in (0, 1), got {fraction}")
    parent: dict[tuple[str, str], tuple[str, str]] = {}

    def root(x):
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    infos = {i: dataset.pair_info(i) for i in indices}
    for info in infos.values():
        a, b = root((info.category, info.src_name)), root((info.category, info.tgt_name))
        parent[a] = b
    groups: dict[tuple[str, str], list[int]] = {}
    for i, info in infos.items():
        groups.setdefault(root((info.category, info.src_name)), []).append(i)
    ordered = sorted(groups.values(), key=lambda g: min(infos[i].pair_id for i in g))
    if len(ordered) < 2:
        raise ConfigError("a validation split needs at least two independent groups of training pairs (scenes, "
                          f"sub-classes); these {len(infos)} pairs form one")
    perm = _rng(seed, "validation").permutation(len(ordered))
    val: list[int] = []
    for j in perm[:-1]:
        if len(val) >= fraction * len(infos):
            break
        val += ordered[j]
    held = set(val)
    return [i for i in indices if i not in held], sorted(val)


def save_split(split: PairSplit, dataset, path: str | Path) -> None:
    """Write ``split`` as pair ids (``semcorr-split-v1`` JSON)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = dataset.pair_ids
    data = {"format": SPLIT_FORMAT, "dataset": getattr(dataset, "name", ""), "protocol": split.info,
            "train": [ids[i] for i in split.train], "holdout": [ids[i] for i in split.holdout]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    tmp.replace(path)


def load_split(dataset, path: str | Path) -> PairSplit:
    """Read a split file and map its pair ids onto ``dataset``'s indices.

    Raises:
        DatasetError: unreadable file, wrong format, or pair ids that the dataset does not have.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetError(f"cannot read split file {path}: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != SPLIT_FORMAT:
        raise DatasetError(f"{path} is not a {SPLIT_FORMAT} split file")
    index = {pid: i for i, pid in enumerate(dataset.pair_ids)}
    out = {}
    for part in ("train", "holdout"):
        ids = data.get(part, [])
        missing = [p for p in ids if p not in index]
        if missing:
            raise DatasetError(f"{path}: {len(missing)} {part} pair ids are not in the dataset (first: "
                               f"{missing[0]!r}); was the split made for another dataset/root?")
        out[part] = [index[p] for p in ids]
    if set(out["train"]) & set(out["holdout"]):
        raise DatasetError(f"{path}: train and holdout share pairs")
    return PairSplit(out["train"], out["holdout"], dict(data.get("protocol", {}), file=str(path)))


class PairSubset:
    """The pairs ``indices`` of a dataset, as a sequence of samples (for
    :func:`semcorr_ros.eval.benchmark.evaluate`)."""

    def __init__(self, base, indices: Sequence[int]) -> None:
        self.base, self.indices = base, list(indices)
        self.name = getattr(base, "name", "pairs")

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.base[self.indices[i]]

    def pair_info(self, i: int):
        return self.base.pair_info(self.indices[i])

    @property
    def categories(self) -> list[str]:
        return sorted({self.base.pair_info(i).category for i in self.indices})

    @property
    def pair_ids(self) -> list[str]:
        return [self.base.pair_info(i).pair_id for i in self.indices]
