"""Reference files: one image of an object with named keypoints (and optional depth + intrinsics).

A reference is a YAML file::

    reference_id: mug_01            # optional; default: the YAML file's stem
    image: mug_01.png               # path relative to this file (PNG/JPEG, RGB)
    depth: mug_01_depth.png         # optional: 16-bit PNG in millimetres (0 = invalid) or .npy in metres
    depth_scale: 0.001              # optional: metres per unit of an integer depth image
    intrinsics: [615.0, 615.0, 320.0, 240.0]   # optional: fx, fy, cx, cy (or a 3x3 matrix)
    keypoints:                      # name: [x, y] pixels, 0-based, pixel centres at integers
      handle_top: [412.0, 188.5]
      rim_front: [300, 220]

Loading checks everything and raises :class:`~semcorr_ros.errors.BadReferenceError` naming the problem, so a
caller (the node) can keep its previous reference active.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from semcorr_ros.errors import BadReferenceError


@dataclass
class ReferenceSpec:
    """A loaded reference: ``image`` uint8 [H, W, 3] RGB, ``keypoints`` [K, 2] pixels, ``names`` K strings,
    ``depth`` [H, W] float32 metres (NaN invalid) or None, ``intrinsics`` [3, 3] or None."""

    reference_id: str
    image: np.ndarray
    names: list[str]
    keypoints: np.ndarray
    depth: np.ndarray | None = None
    intrinsics: np.ndarray | None = None


def read_image(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 [H, W, 3] RGB; :class:`BadReferenceError` if missing or unreadable."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise BadReferenceError(f"image file not found: {path}")
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadReferenceError(f"cannot read image {path}: {exc}") from exc


def read_depth(path: str | Path, depth_scale: float = 0.001) -> np.ndarray:
    """Read a depth file: 16-bit PNG (units * ``depth_scale``, 0 invalid) or ``.npy`` (metres).

    Returns float32 [H, W] metres with NaN where invalid.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise BadReferenceError(f"depth file not found: {path}")
    try:
        if path.suffix == ".npy":
            d = np.load(path, allow_pickle=False).astype(np.float32)
        else:
            with Image.open(path) as im:
                raw = np.asarray(im)
            if raw.dtype.kind not in "ui":
                raise BadReferenceError(f"depth image {path} must be an integer (16-bit) image, got {raw.dtype}")
            d = raw.astype(np.float32) * np.float32(depth_scale)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise BadReferenceError(f"cannot read depth {path}: {exc}") from exc
    if d.ndim != 2:
        raise BadReferenceError(f"depth {path} must be a single-channel [H, W] image, got shape {d.shape}")
    d[~np.isfinite(d) | (d <= 0)] = np.nan
    return d


def parse_intrinsics(value: object, where: str = "intrinsics") -> np.ndarray:
    """``[fx, fy, cx, cy]`` or a 3x3 nested list -> ``[3, 3]`` K."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise BadReferenceError(f"{where} must be [fx, fy, cx, cy] or a 3x3 matrix: {exc}") from exc
    if arr.shape == (4,):
        fx, fy, cx, cy = arr
        arr = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=np.float64)
    if arr.shape != (3, 3) or not np.isfinite(arr).all() or arr[0, 0] <= 0 or arr[1, 1] <= 0:
        raise BadReferenceError(f"{where} must be [fx, fy, cx, cy] (fx, fy > 0) or a 3x3 matrix, got {value!r}")
    return arr


def load_keypoints(path: str | Path) -> tuple[dict, list[str], np.ndarray]:
    """Parse the YAML and its ``keypoints`` mapping: ``(document, names, [K, 2] pixels)``."""
    path = Path(path)
    if not path.is_file():
        raise BadReferenceError(f"reference file not found: {path}")
    try:
        doc = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise BadReferenceError(f"reference file {path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("keypoints"), dict) or not doc["keypoints"]:
        raise BadReferenceError(f"reference file {path} needs a non-empty 'keypoints' mapping of name: [x, y]")
    names, pts = [], []
    for name, xy in doc["keypoints"].items():
        if (not isinstance(xy, (list, tuple)) or len(xy) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in xy)):
            raise BadReferenceError(f"keypoint {name!r} in {path} must be [x, y] numbers, got {xy!r}")
        names.append(str(name))
        pts.append([float(xy[0]), float(xy[1])])
    kps = np.asarray(pts, dtype=np.float64)
    if not np.isfinite(kps).all():
        raise BadReferenceError(f"keypoints in {path} must be finite")
    return doc, names, kps


def load_reference(path: str | Path, image_path: str | Path | None = None) -> ReferenceSpec:
    """Load a reference YAML (and the files it names, relative to it).

    Args:
        path: the YAML file.
        image_path: overrides the YAML's ``image`` entry.
    """
    path = Path(path)
    doc, names, kps = load_keypoints(path)
    img_entry = image_path if image_path is not None else doc.get("image")
    if img_entry is None:
        raise BadReferenceError(f"reference file {path} names no 'image' (and none was given)")
    image = read_image(_resolve(path, img_entry))
    h, w = image.shape[:2]
    outside = (kps[:, 0] < -0.5) | (kps[:, 0] > w - 0.5) | (kps[:, 1] < -0.5) | (kps[:, 1] > h - 0.5)
    if outside.any():
        bad = [names[i] for i in np.where(outside)[0]]
        raise BadReferenceError(f"keypoints {bad} in {path} lie outside the {w}x{h} reference image")
    depth = None
    if doc.get("depth"):
        depth = read_depth(_resolve(path, doc["depth"]), float(doc.get("depth_scale", 0.001)))
        if depth.shape != (h, w):
            raise BadReferenceError(f"reference depth is {depth.shape[1]}x{depth.shape[0]} but the image is {w}x{h}")
    K = parse_intrinsics(doc["intrinsics"], f"intrinsics in {path}") if doc.get("intrinsics") is not None else None
    return ReferenceSpec(reference_id=str(doc.get("reference_id") or path.stem), image=image, names=names,
                         keypoints=kps, depth=depth, intrinsics=K)


def _resolve(base: Path, entry: str | Path) -> Path:
    p = Path(entry).expanduser()
    return p if p.is_absolute() else base.parent / p
