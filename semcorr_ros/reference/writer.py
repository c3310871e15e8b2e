"""Writing reference files: a single view (YAML + colour PNG + 16-bit depth PNG), a reference set, an objects
file. What is written loads back with :func:`semcorr_ros.reference.load_objects` unchanged (pixels, names,
intrinsics; depth to the millimetre)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import yaml

from semcorr_ros.errors import InputError

__all__ = ["write_reference", "write_reference_set", "write_objects"]


def _relative(target: Path, base_file: Path) -> str:
    """``target`` relative to the folder of ``base_file`` (absolute when on another drive)."""
    try:
        return Path(os.path.relpath(target.resolve(), base_file.resolve().parent)).as_posix()
    except ValueError:
        return str(target.resolve())


def _dump(path: Path, doc: dict, header: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(f"# {header}\n{text}")
    tmp.replace(path)  # a reader (a node reloading it) never sees half a file
    return path


def write_reference(path: str | Path, image: np.ndarray, keypoints: np.ndarray | None, names: Sequence[str] = (),
                    *, depth: np.ndarray | None = None, intrinsics: np.ndarray | None = None,
                    reference_id: str | None = None, depth_scale: float = 0.001,
                    extra: dict | None = None) -> Path:
    """Write a single-view reference: ``path`` (YAML), ``<stem>.png`` and, with ``depth``, ``<stem>_depth.png``.

    Args:
        path: the YAML file to write (its folder is created).
        image: ``uint8 [H, W, 3]`` RGB.
        keypoints: ``[K, 2]`` pixels, or None / empty for a reference still to be annotated (it loads only once
            it has keypoints: ``semcorr reference annotate``).
        names: ``K`` keypoint names.
        depth: ``[H, W]`` metres (NaN or <= 0 invalid), written as 16-bit PNG in units of ``depth_scale``.
        intrinsics: ``[3, 3]`` K (or ``[fx, fy, cx, cy]``) of the reference camera.
        reference_id: written when given (default on loading: the file's stem).
        extra: further top-level keys (e.g. a tool's metadata; ignored by the loader).
    """
    from PIL import Image

    path = Path(path)
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"reference image must be uint8 [H, W, 3] RGB, got {image.dtype} {image.shape}")
    kps = np.zeros((0, 2)) if keypoints is None else np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    names = list(names)
    if len(names) != len(kps):
        raise InputError(f"{len(names)} names given for {len(kps)} keypoints")
    if len(set(names)) != len(names):
        raise InputError(f"keypoint names must be unique, got {names}")
    path.parent.mkdir(parents=True, exist_ok=True)
    image_file = path.with_name(path.stem + ".png")
    Image.fromarray(image).save(image_file)
    doc: dict = {}
    if reference_id is not None:
        doc["reference_id"] = str(reference_id)
    doc["image"] = image_file.name
    if depth is not None:
        d = np.asarray(depth, dtype=np.float64)
        if d.shape != image.shape[:2]:
            raise InputError(f"reference depth is {d.shape[::-1]} but the image is {image.shape[1::-1]}")
        units = np.where(np.isfinite(d) & (d > 0), np.round(d / depth_scale), 0)
        depth_file = path.with_name(path.stem + "_depth.png")
        Image.fromarray(np.clip(units, 0, 65535).astype(np.uint16)).save(depth_file)
        doc["depth"] = depth_file.name
        doc["depth_scale"] = float(depth_scale)
    if intrinsics is not None:
        K = np.asarray(intrinsics, dtype=np.float64)
        K = K.reshape(3, 3) if K.size == 9 else np.array([[K[0], 0, K[2]], [0, K[1], K[3]], [0, 0, 1]])
        doc["intrinsics"] = [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])]
    doc["keypoints"] = {str(n): [round(float(x), 2), round(float(y), 2)] for n, (x, y) in zip(names, kps)}
    doc.update(extra or {})
    return _dump(path, doc, "semcorr_ros single-view reference (docs/references.md); pixels 0-based, "
                            "centres at integers")


def write_reference_set(path: str | Path, object_id: str, view_files: Sequence[str | Path]) -> Path:
    """Write a reference set naming ``view_files`` (single-view reference files; stored relative to ``path``)."""
    path = Path(path)
    if not view_files:
        raise InputError("a reference set needs at least one view")
    doc = {"object_id": str(object_id), "views": [_relative(Path(v), path) for v in view_files]}
    return _dump(path, doc, "semcorr_ros reference set: views of one object (docs/references.md)")


def write_objects(path: str | Path, object_files: Sequence[str | Path]) -> Path:
    """Write an objects file naming ``object_files`` (references or reference sets; relative to ``path``)."""
    path = Path(path)
    if not object_files:
        raise InputError("an objects file needs at least one object")
    doc = {"objects": [_relative(Path(o), path) for o in object_files]}
    return _dump(path, doc, "semcorr_ros objects: one reference (set) per object (docs/references.md)")
