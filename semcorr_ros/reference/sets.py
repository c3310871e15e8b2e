"""Reference sets (several views of one object) and objects files (several objects), read into
:class:`ObjectSpec` objects by :func:`load_objects`.

A reference set::

    object_id: mug                  # optional; default: the file's stem
    views:                          # 1 .. MAX_VIEWS views of the same object, sharing keypoint names
      - mug_front.yaml              # a single-view reference file (relative to this file) ...
      - mug_back.yaml
      - image: mug_side.png         # ... or a single view written inline (paths relative to this file)
        keypoints: {rim_left: [210, 160], handle_top: [402, 150]}

Each view lists the keypoints visible in it; the object's keypoints are the union of the views' names, in the
order they are first seen. An objects file::

    objects:                        # 1 .. MAX_OBJECTS objects, each a single-view reference or a set
      - mug_set.yaml
      - bottle.yaml

Object ids must differ within an objects file, view ids (each view's ``reference_id``, default: its file's stem,
or ``<object_id>_view<i>`` inline) within a set. Keys that are not read are ignored (tools may add their own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from semcorr_ros.errors import BadReferenceError, SemcorrError
from semcorr_ros.reference.single import (
    MAX_KEYPOINTS,
    MAX_PIXELS,
    ReferenceSpec,
    read_document,
    reference_from_doc,
    resolve,
)

__all__ = ["MAX_OBJECTS", "MAX_VIEWS", "ObjectSpec", "load_objects", "file_kind"]

#: Default cap on the views of one reference set (each view costs one sparse match per frame).
MAX_VIEWS = 16
#: Default cap on the objects of one objects file (each object costs its views' matching per frame).
MAX_OBJECTS = 8


@dataclass
class ObjectSpec:
    """One object: its views (single-view references of the same object) and its keypoint names (the union of
    the views' names, first-seen order)."""

    object_id: str
    views: list[ReferenceSpec]
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.names:
            self.names = list(dict.fromkeys(n for v in self.views for n in v.names))

    @staticmethod
    def single(spec: ReferenceSpec) -> "ObjectSpec":
        """A one-view object from a single-view reference (its id is the reference's)."""
        return ObjectSpec(spec.reference_id, [spec])


def file_kind(doc: dict, path: Path) -> str:
    """``"view"``, ``"set"`` or ``"objects"`` for a parsed reference document."""
    kinds = [k for k, key in (("view", "keypoints"), ("set", "views"), ("objects", "objects")) if key in doc]
    if len(kinds) != 1:
        found = ", ".join(repr(k) for k in ("keypoints", "views", "objects") if k in doc) or "none of them"
        raise BadReferenceError(f"reference file {path} must have exactly one of 'keypoints' (a single view), "
                                f"'views' (a reference set) or 'objects' (an objects file); found {found}")
    return kinds[0]


def load_objects(path: str | Path, *, max_keypoints: int = MAX_KEYPOINTS, max_pixels: int = MAX_PIXELS,
                 max_views: int = MAX_VIEWS, max_objects: int = MAX_OBJECTS) -> list[ObjectSpec]:
    """Load a single-view reference, a reference set or an objects file into its objects.

    Args:
        path: the YAML file.
        max_keypoints: per view, and for the union of an object's views.
        max_pixels: per image and depth map.
        max_views: views per set.
        max_objects: objects per objects file.

    Raises:
        BadReferenceError: anything wrong with any of the files (the message names the file and the field).
    """
    path = Path(path)
    limits = dict(max_keypoints=max_keypoints, max_pixels=max_pixels)
    try:
        doc = read_document(path, max_keypoints)
        kind = file_kind(doc, path)
        if kind != "objects":
            return [_load_object(doc, kind, path, limits, max_views)]
        return _load_objects_file(doc, path, limits, max_views, max_objects)
    except SemcorrError:
        raise
    except Exception as exc:  # noqa: BLE001 -- a reference of any kind must never escape as another error
        raise BadReferenceError(f"reference file {path} cannot be loaded: {type(exc).__name__}: {exc}") from exc


def _load_object(doc: dict, kind: str, path: Path, limits: dict, max_views: int) -> ObjectSpec:
    if kind == "view":
        return ObjectSpec.single(reference_from_doc(doc, path, **limits))
    object_id = _identifier(doc, "object_id", path)
    entries = doc["views"]
    if not isinstance(entries, list) or not entries:
        raise BadReferenceError(f"field 'views' in {path} must be a non-empty list of reference files or inline "
                                f"views, got {entries!r}")
    if len(entries) > max_views:
        raise BadReferenceError(f"reference set {path} has {len(entries)} views, more than the limit of {max_views}")
    views: list[ReferenceSpec] = []
    for i, entry in enumerate(entries):
        if isinstance(entry, str) and entry:
            view_path = resolve(path, entry)
            view_doc = read_document(view_path, limits["max_keypoints"])
            if file_kind(view_doc, view_path) != "view":
                raise BadReferenceError(f"view {i} of reference set {path} ({view_path}) must be a single-view "
                                        f"reference (with 'keypoints'), not a set or an objects file")
            views.append(reference_from_doc(view_doc, view_path, **limits))
        elif isinstance(entry, dict):
            views.append(reference_from_doc(entry, path, default_id=f"{object_id}_view{i}", **limits))
        else:
            raise BadReferenceError(f"view {i} of reference set {path} must be a file path or an inline view "
                                    f"(a mapping with 'image' and 'keypoints'), got {entry!r}")
    _check_unique([v.reference_id for v in views], "views", "reference_id", path)
    obj = ObjectSpec(object_id, views)
    if len(obj.names) > limits["max_keypoints"]:
        raise BadReferenceError(f"reference set {path} names {len(obj.names)} keypoints over its views, more than "
                                f"the limit of {limits['max_keypoints']} (parameter max_reference_keypoints)")
    return obj


def _load_objects_file(doc: dict, path: Path, limits: dict, max_views: int, max_objects: int) -> list[ObjectSpec]:
    entries = doc["objects"]
    if not isinstance(entries, list) or not entries:
        raise BadReferenceError(f"field 'objects' in {path} must be a non-empty list of reference or reference set "
                                f"files, got {entries!r}")
    if len(entries) > max_objects:
        raise BadReferenceError(f"objects file {path} lists {len(entries)} objects, more than the limit of "
                                f"{max_objects}")
    objects = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, str) or not entry:
            raise BadReferenceError(f"object {i} of {path} must be the path of a reference or reference set file, "
                                    f"got {entry!r}")
        obj_path = resolve(path, entry)
        obj_doc = read_document(obj_path, limits["max_keypoints"])
        kind = file_kind(obj_doc, obj_path)
        if kind == "objects":
            raise BadReferenceError(f"object {i} of {path} ({obj_path}) is itself an objects file; list its objects "
                                    f"directly")
        objects.append(_load_object(obj_doc, kind, obj_path, limits, max_views))
    _check_unique([o.object_id for o in objects], "objects", "object_id", path)
    return objects


def _identifier(doc: dict, key: str, path: Path) -> str:
    value = doc.get(key)
    if value is None or value == "":
        return path.stem
    if not isinstance(value, (str, int)) or isinstance(value, bool):
        raise BadReferenceError(f"field {key!r} in {path} must be a string, got {value!r}")
    return str(value)


def _check_unique(ids: list[str], what: str, key: str, path: Path) -> None:
    seen: dict[str, int] = {}
    for i, ident in enumerate(ids):
        if ident in seen:
            raise BadReferenceError(f"{what} {seen[ident]} and {i} of {path} have the same {key} {ident!r}; give "
                                    f"each its own {key}")
        seen[ident] = i
