"""A single-view reference document being authored: it may have no keypoints yet (a fresh capture), which
:func:`semcorr_ros.reference.load_reference` refuses; here it is read and rewritten in place."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from semcorr_ros.errors import BadReferenceError
from semcorr_ros.reference import read_image

#: Top-level key where ``propose`` stores per-keypoint scores (ignored by the loader).
PROPOSAL_KEY = "proposal"


@dataclass
class Draft:
    """A reference YAML and its image. ``keypoints``: name -> ``[x, y]`` pixels (insertion order kept);
    ``scores``: name -> proposal score for keypoints proposed by the engine and not yet confirmed."""

    path: Path
    doc: dict
    image: np.ndarray
    keypoints: dict[str, list[float]] = field(default_factory=dict)
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.keypoints)

    def xy(self) -> np.ndarray:
        """``[K, 2]`` pixels in name order."""
        return np.asarray(list(self.keypoints.values()), dtype=np.float64).reshape(-1, 2)


def read_draft(path: str | Path) -> Draft:
    """Read a single-view reference YAML with or without keypoints.

    Raises:
        BadReferenceError: missing or unreadable file, not a single-view reference, a bad image, bad keypoints.
    """
    path = Path(path)
    if not path.is_file():
        raise BadReferenceError(f"reference file not found: {path}")
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BadReferenceError(f"{path} is not YAML: {exc}") from exc
    if not isinstance(doc, dict) or "image" not in doc:
        raise BadReferenceError(f"{path} is not a single-view reference (it needs an 'image' field)")
    image = read_image(path.parent / str(doc["image"]))
    kps_doc = doc.get("keypoints") or {}
    if not isinstance(kps_doc, dict):
        raise BadReferenceError(f"'keypoints' in {path} must be a mapping name: [x, y]")
    kps: dict[str, list[float]] = {}
    for name, xy in kps_doc.items():
        if not isinstance(xy, (list, tuple)) or len(xy) != 2:
            raise BadReferenceError(f"keypoint {name!r} in {path} must be [x, y], got {xy!r}")
        kps[str(name)] = [float(xy[0]), float(xy[1])]
    prop = doc.get(PROPOSAL_KEY) or {}
    scores = {str(k): float(v) for k, v in (prop.get("scores") or {}).items()} if isinstance(prop, dict) else {}
    return Draft(path, doc, image, kps, {k: v for k, v in scores.items() if k in kps})


def save_draft(draft: Draft, threshold: float | None = None) -> Path:
    """Rewrite the YAML with ``draft.keypoints`` (other keys kept). Keypoints still carrying a proposal score
    are kept in ``proposal.scores``; those below ``threshold`` are listed in ``proposal.uncertain``."""
    doc = dict(draft.doc)
    doc["keypoints"] = {n: [round(float(x), 2), round(float(y), 2)] for n, (x, y) in draft.keypoints.items()}
    scores = {n: round(float(s), 3) for n, s in draft.scores.items() if n in draft.keypoints}
    old = doc.get(PROPOSAL_KEY) if isinstance(doc.get(PROPOSAL_KEY), dict) else {}
    doc.pop(PROPOSAL_KEY, None)
    if scores:
        thr = float(old.get("threshold", 0.5)) if threshold is None else float(threshold)
        prop = {k: v for k, v in old.items() if k not in ("scores", "uncertain", "threshold")}
        prop.update(threshold=thr, scores=scores, uncertain=[n for n, s in scores.items() if s < thr])
        doc[PROPOSAL_KEY] = prop
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120)
    tmp = draft.path.with_name(draft.path.name + ".tmp")
    tmp.write_text("# semcorr_ros single-view reference (docs/references.md); pixels 0-based\n" + text)
    tmp.replace(draft.path)
    draft.doc = doc
    return draft.path


def read_keypoints_file(path: str | Path) -> dict[str, list[float]]:
    """A keypoints file (YAML or JSON): ``{name: [x, y]}``, or a document with a ``keypoints`` mapping."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())  # JSON is YAML
    except (OSError, yaml.YAMLError) as exc:
        raise BadReferenceError(f"cannot read keypoints file {path}: {exc}") from exc
    if isinstance(doc, dict) and isinstance(doc.get("keypoints"), dict):
        doc = doc["keypoints"]
    if not isinstance(doc, dict) or not doc:
        raise BadReferenceError(f"keypoints file {path} must map name: [x, y] (or have a 'keypoints' mapping)")
    out = {}
    for name, xy in doc.items():
        if not isinstance(xy, (list, tuple)) or len(xy) != 2:
            raise BadReferenceError(f"keypoint {name!r} in {path} must be [x, y], got {xy!r}")
        out[str(name)] = [float(xy[0]), float(xy[1])]
    return out
