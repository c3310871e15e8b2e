"""Single-view reference files: one image of an object with named keypoints (and optional depth + intrinsics).

A single-view reference is a YAML file::

    reference_id: mug_01            # optional; default: the YAML file's stem
    image: mug_01.png               # path relative to this file (PNG/JPEG, RGB)
    depth: mug_01_depth.png         # optional: 16-bit PNG in millimetres (0 = invalid) or .npy in metres
    depth_scale: 0.001              # optional: metres per unit of an integer depth image
    intrinsics: [615.0, 615.0, 320.0, 240.0]   # optional: fx, fy, cx, cy (or a 3x3 matrix)
    keypoints:                      # name: [x, y] pixels, 0-based, pixel centres at integers
      handle_top: [412.0, 188.5]
      rim_front: [300, 220]

Loading checks everything and raises :class:`~semcorr_ros.errors.BadReferenceError` naming the field and the
problem -- never any other exception -- so a caller (the node) can keep its previous reference active.

The work a reference can cause is bounded: at most ``max_keypoints`` keypoints (default
:data:`MAX_KEYPOINTS`) and at most ``max_pixels`` image pixels (default :data:`MAX_PIXELS`, checked from the
file header before any pixel is decoded, so a decompression bomb costs nothing). Images are opened as PNG or
JPEG only, depth as 16-bit PNG or ``.npy`` only.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from semcorr_ros.errors import BadReferenceError, SemcorrError

__all__ = ["MAX_KEYPOINTS", "MAX_PIXELS", "ReferenceSpec", "keypoints_from_doc", "load_keypoints", "load_reference",
           "parse_intrinsics", "read_depth", "read_document", "read_image", "reference_from_doc"]

#: Default cap on the keypoints of one reference (matching cost grows linearly with it).
MAX_KEYPOINTS = 128
#: Default cap on the pixels of a reference image or depth map (4096 x 4096).
MAX_PIXELS = 4096 * 4096
#: Formats Pillow may open for reference images (and, PNG only, for depth).
IMAGE_FORMATS = ("PNG", "JPEG")
# A reference YAML is ~50 bytes per keypoint; its size is bounded (64 KB + 512 B per allowed keypoint) so that
# parsing a wrong file stays quick (a node parses references inside its parameter callback).
_YAML_BASE_BYTES, _YAML_BYTES_PER_KEYPOINT = 64 * 1024, 512
# libyaml's safe loader when PyYAML has it (~10x faster), else the pure-Python one; both refuse python tags.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


def _open_checked(path: Path, what: str, formats: tuple[str, ...], max_pixels: int) -> Any:
    """Open ``path`` with Pillow restricted to ``formats``; refuse more than ``max_pixels`` before decoding."""
    import warnings

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the limit below is ours
            im = Image.open(path, formats=list(formats))
    except Image.DecompressionBombError as exc:
        raise BadReferenceError(f"{what} {path} declares more pixels than the limit of {max_pixels} (parameter "
                                f"max_image_pixels): {exc}") from exc
    w, h = im.size
    if w * h > max_pixels:
        im.close()
        raise BadReferenceError(f"{what} {path} is {w}x{h} = {w * h} pixels, more than the limit of {max_pixels} "
                                f"(parameter max_image_pixels)")
    return im


def read_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a PNG or JPEG file as uint8 [H, W, 3] RGB.

    Raises:
        BadReferenceError: missing, unreadable, another format, or more than ``max_pixels`` pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise BadReferenceError(f"image file not found: {path}")
    try:
        with _open_checked(path, "image", IMAGE_FORMATS, max_pixels) as im:
            return np.asarray(im.convert("RGB"))
    except SemcorrError:
        raise
    except Exception as exc:  # noqa: BLE001 -- Pillow raises many kinds (OSError, SyntaxError, zlib, ...)
        raise BadReferenceError(f"cannot read image {path} (PNG or JPEG expected): "
                                f"{type(exc).__name__}: {exc}") from exc


def read_depth(path: str | Path, depth_scale: float = 0.001, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Read a depth file: 16-bit PNG (units * ``depth_scale``, 0 invalid) or ``.npy`` (metres).

    Returns float32 [H, W] metres with NaN where invalid.

    Raises:
        BadReferenceError: missing, unreadable, not [H, W], not numeric, or more than ``max_pixels`` pixels.
    """
    path = Path(path)
    if not path.is_file():
        raise BadReferenceError(f"depth file not found: {path}")
    try:
        if path.suffix == ".npy":
            header = np.load(path, mmap_mode="r", allow_pickle=False)  # reads the header only
            if header.ndim != 2:
                raise BadReferenceError(f"depth {path} must be a single-channel [H, W] array, got shape "
                                        f"{header.shape}")
            if header.size > max_pixels:
                raise BadReferenceError(f"depth {path} has {header.size} pixels, more than the limit of "
                                        f"{max_pixels} (parameter max_image_pixels)")
            if header.dtype.kind not in "uif":
                raise BadReferenceError(f"depth {path} must hold numbers (metres), got dtype {header.dtype}")
            d = np.array(header, dtype=np.float32)
            del header
        else:
            with _open_checked(path, "depth image", ("PNG",), max_pixels) as im:
                raw = np.asarray(im)
            if raw.dtype.kind not in "ui":
                raise BadReferenceError(f"depth image {path} must be an integer (16-bit) image, got {raw.dtype}")
            d = raw.astype(np.float32) * np.float32(depth_scale)
    except SemcorrError:
        raise
    except Exception as exc:  # noqa: BLE001 -- numpy and Pillow raise many kinds on corrupt files
        raise BadReferenceError(f"cannot read depth {path} (16-bit PNG or .npy expected): "
                                f"{type(exc).__name__}: {exc}") from exc
    if d.ndim != 2:
        raise BadReferenceError(f"depth {path} must be a single-channel [H, W] image, got shape {d.shape}")
    d[~np.isfinite(d) | (d <= 0)] = np.nan
    return d


def _is_number(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


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


def read_document(path: str | Path, max_keypoints: int = MAX_KEYPOINTS) -> dict:
    """Parse a reference YAML file (any kind) into its top-level mapping, its size bounded first.

    Raises:
        BadReferenceError: missing file, too large, not YAML, or not a mapping.
    """
    path = Path(path)
    if not path.is_file():
        raise BadReferenceError(f"reference file not found: {path}")
    try:
        limit = _YAML_BASE_BYTES + _YAML_BYTES_PER_KEYPOINT * max_keypoints
        if path.stat().st_size > limit:
            raise BadReferenceError(f"reference file {path} is {path.stat().st_size} bytes, more than the {limit} "
                                    f"a reference of at most {max_keypoints} keypoints needs (parameter "
                                    f"max_reference_keypoints): not a reference YAML, or too many keypoints")
        doc = yaml.load(path.read_text(), Loader=_SafeLoader)  # noqa: S506 -- a safe loader
    except SemcorrError:
        raise
    except (yaml.YAMLError, UnicodeDecodeError, OSError, RecursionError) as exc:
        raise BadReferenceError(f"reference file {path} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict):
        raise BadReferenceError(f"reference file {path} must be a YAML mapping (a reference with 'keypoints', a "
                                f"set with 'views' or an objects file with 'objects'), got {type(doc).__name__}")
    return doc


def keypoints_from_doc(doc: dict, where: object, max_keypoints: int = MAX_KEYPOINTS) -> tuple[list[str], np.ndarray]:
    """The ``keypoints`` mapping of a single-view document: ``(names, [K, 2] pixels)``; ``where`` names it in
    errors."""
    entry = doc.get("keypoints")
    if "keypoints" in doc and (entry is None or entry == {}):
        raise BadReferenceError(f"reference {where} has no keypoints yet: place them with "
                                f"`semcorr reference annotate {where}`")
    if not isinstance(entry, dict):
        raise BadReferenceError(f"reference file {where} needs a non-empty 'keypoints' mapping of name: [x, y]")
    if len(entry) > max_keypoints:
        raise BadReferenceError(f"reference file {where} has {len(entry)} keypoints, more than the limit "
                                f"of {max_keypoints} (parameter max_reference_keypoints)")
    names, pts = [], []
    for name, xy in entry.items():
        if not isinstance(name, (str, int)) or isinstance(name, bool) or not str(name).strip():
            raise BadReferenceError(f"keypoint names in {where} must be non-empty strings, got {name!r}")
        if (not isinstance(xy, (list, tuple)) or len(xy) != 2 or not all(_is_number(v) for v in xy)):
            raise BadReferenceError(f"keypoint {name!r} in {where} must be [x, y] numbers, got {xy!r}")
        names.append(str(name))
        pts.append([float(xy[0]), float(xy[1])])
    kps = np.asarray(pts, dtype=np.float64)
    if not np.isfinite(kps).all():
        raise BadReferenceError(f"keypoints in {where} must be finite")
    return names, kps


def load_keypoints(path: str | Path, max_keypoints: int = MAX_KEYPOINTS) -> tuple[dict, list[str], np.ndarray]:
    """Parse the YAML and its ``keypoints`` mapping: ``(document, names, [K, 2] pixels)``.

    Raises:
        BadReferenceError: missing file, not YAML, no keypoints, a keypoint that is not ``[x, y]`` numbers, a
            name that is not a string or number, or more than ``max_keypoints`` keypoints.
    """
    path = Path(path)
    doc = read_document(path, max_keypoints)
    names, kps = keypoints_from_doc(doc, path, max_keypoints)
    return doc, names, kps


def _path_field(doc: dict, key: str, path: Path) -> Path | None:
    """The file named by ``doc[key]`` (None when absent or empty), resolved relative to ``path``."""
    entry = doc.get(key)
    if entry is None or entry == "":
        return None
    if not isinstance(entry, str):
        raise BadReferenceError(f"field {key!r} in {path} must be a file path, got {type(entry).__name__} "
                                f"{entry!r}")
    return resolve(path, entry)


def _depth_scale(doc: dict, path: Path) -> float:
    value = doc.get("depth_scale", 0.001)
    if not _is_number(value) or not math.isfinite(float(value)) or float(value) <= 0:
        raise BadReferenceError(f"field 'depth_scale' in {path} must be a positive number (metres per depth unit), "
                                f"got {value!r}")
    return float(value)


def _reference_id(doc: dict, path: Path) -> str:
    value = doc.get("reference_id")
    if value is None or value == "":
        return path.stem
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise BadReferenceError(f"field 'reference_id' in {path} must be a string, got {value!r}")
    return str(value)


def load_reference(path: str | Path, image_path: str | Path | None = None, *, max_keypoints: int = MAX_KEYPOINTS,
                   max_pixels: int = MAX_PIXELS) -> ReferenceSpec:
    """Load a reference YAML (and the files it names, relative to it).

    Args:
        path: the YAML file.
        image_path: overrides the YAML's ``image`` entry.
        max_keypoints: refuse references with more keypoints.
        max_pixels: refuse images and depth maps with more pixels.

    Raises:
        BadReferenceError: anything wrong with the file or the files it names (the message names the field).
    """
    path = Path(path)
    try:
        return _load_reference(path, image_path, max_keypoints, max_pixels)
    except SemcorrError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a reference of any kind must never escape as another error
        raise BadReferenceError(f"reference file {path} cannot be loaded: {type(exc).__name__}: {exc}") from exc


def _load_reference(path: Path, image_path: str | Path | None, max_keypoints: int, max_pixels: int) -> ReferenceSpec:
    doc = read_document(path, max_keypoints)
    return reference_from_doc(doc, path, image_path=image_path, max_keypoints=max_keypoints, max_pixels=max_pixels)


def reference_from_doc(doc: dict, path: Path, *, image_path: str | Path | None = None,
                       max_keypoints: int = MAX_KEYPOINTS, max_pixels: int = MAX_PIXELS,
                       default_id: str | None = None) -> ReferenceSpec:
    """A single-view document (a file's, or a set's inline view) -> :class:`ReferenceSpec`; the files it names
    are relative to ``path``; ``default_id`` (default: ``path``'s stem) when it has no ``reference_id``."""
    names, kps = keypoints_from_doc(doc, path, max_keypoints)
    image_file = Path(image_path) if image_path is not None else _path_field(doc, "image", path)
    if image_file is None:
        raise BadReferenceError(f"reference file {path} names no 'image' (and none was given)")
    image = read_image(image_file, max_pixels)
    h, w = image.shape[:2]
    outside = (kps[:, 0] < -0.5) | (kps[:, 0] > w - 0.5) | (kps[:, 1] < -0.5) | (kps[:, 1] > h - 0.5)
    if outside.any():
        bad = [names[i] for i in np.where(outside)[0]]
        raise BadReferenceError(f"keypoints {bad} in {path} lie outside the {w}x{h} reference image")
    depth = None
    depth_file = _path_field(doc, "depth", path)
    scale = _depth_scale(doc, path)
    if depth_file is not None:
        depth = read_depth(depth_file, scale, max_pixels)
        if depth.shape != (h, w):
            raise BadReferenceError(f"reference depth is {depth.shape[1]}x{depth.shape[0]} but the image is {w}x{h}")
    K = parse_intrinsics(doc["intrinsics"], f"intrinsics in {path}") if doc.get("intrinsics") is not None else None
    ref_id = _reference_id(doc, path) if default_id is None or doc.get("reference_id") else default_id
    return ReferenceSpec(reference_id=ref_id, image=image, names=names, keypoints=kps, depth=depth, intrinsics=K)


def resolve(base: Path, entry: str | Path) -> Path:
    """``entry`` (``~`` expanded) relative to the folder of the file ``base``, unless absolute."""
    p = Path(entry).expanduser()
    return p if p.is_absolute() else base.parent / p
