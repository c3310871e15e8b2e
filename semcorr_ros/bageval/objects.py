"""Reference sets and objects files in ``semcorr bag-eval``: what is scored against which ground truth.

:func:`load_eval_objects` reads any reference file (:func:`semcorr_ros.reference.sets.load_objects`) and, next to
the engine's :class:`~semcorr_ros.reference.sets.ObjectSpec` objects, the extra keys the scoring needs: each
view's ``object_pose`` (``T_camera_object`` of that view, for the pose error of the frames where it was chosen)
and each object's hints for finding its ground truth in the bag. :func:`pair_ground_truth` then gives every
object the bag's ground-truth instance it is scored against:

1. the object's file (the set, or its single view) names it: ``ground_truth_instance: mug_0003``
   (``semcorr synth`` writes this);
2. else the one instance in the bag whose ``category`` equals the object's ``category`` key;
3. else an instance equal to the object id;
4. else, with one object and one instance in the bag, that one.

An object left without ground truth is reported (a warning) and not scored.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from semcorr_ros.errors import BadReferenceError, SemcorrError

__all__ = ["EvalObject", "EvalObjects", "load_eval_objects", "pair_ground_truth", "parse_object_pose"]


@dataclass
class EvalObject:
    """One object of the reference file: its spec, each view's ``object_pose`` (None when absent) and the hints
    for its ground truth."""

    spec: Any  # semcorr_ros.reference.sets.ObjectSpec
    view_poses: dict[str, np.ndarray | None]
    ground_truth_instance: str | None = None
    category: str | None = None
    file: str = ""


@dataclass
class EvalObjects:
    """What :func:`load_eval_objects` read: the file's kind (``view``, ``set``, ``objects``) and its objects."""

    kind: str
    objects: list[EvalObject] = field(default_factory=list)

    @property
    def specs(self) -> list[Any]:
        return [o.spec for o in self.objects]


def parse_object_pose(value: Any, path: Path) -> np.ndarray | None:
    """``object_pose`` of a reference document as ``[4, 4]`` (None when absent).

    Raises:
        BadReferenceError: not a finite 4x4 rigid transform.
    """
    if value is None:
        return None
    try:
        arr = np.asarray(value, dtype=np.float64).reshape(4, 4)
    except (TypeError, ValueError) as exc:
        raise BadReferenceError(f"object_pose in {path} must be a 4x4 matrix: {exc}") from exc
    if not np.isfinite(arr).all() or not np.allclose(arr[3], [0, 0, 0, 1], atol=1e-6):
        raise BadReferenceError(f"object_pose in {path} must be a finite 4x4 rigid transform (last row 0 0 0 1)")
    return arr


def _doc(path: Path) -> dict:
    from semcorr_ros.reference.single import read_document

    return read_document(path)


def _text(doc: dict, key: str) -> str | None:
    v = doc.get(key)
    return None if v is None or v == "" else str(v)


def load_eval_objects(path: str | Path) -> EvalObjects:
    """Load ``path`` (a single view, a reference set or an objects file) for scoring.

    Raises:
        BadReferenceError: anything :func:`load_objects` refuses, or a malformed ``object_pose``.
    """
    from semcorr_ros.reference.sets import file_kind, load_objects
    from semcorr_ros.reference.single import resolve

    path = Path(path)
    specs = load_objects(path)  # every check of the node (files, images, keypoints, limits)
    try:
        doc = _doc(path)
        kind = file_kind(doc, path)
        if kind == "objects":
            entries = [(resolve(path, e), None) for e in doc["objects"]]
        else:
            entries = [(path, doc)]
        out = EvalObjects(kind)
        for spec, (obj_path, obj_doc) in zip(specs, entries):
            obj_doc = obj_doc if obj_doc is not None else _doc(obj_path)
            out.objects.append(_eval_object(spec, obj_path, obj_doc))
        return out
    except SemcorrError:
        raise
    except Exception as exc:  # noqa: BLE001 -- the files loaded above; anything else is a bad file too
        raise BadReferenceError(f"reference file {path} cannot be read for scoring: {type(exc).__name__}: "
                                f"{exc}") from exc


def _eval_object(spec: Any, path: Path, doc: dict) -> EvalObject:
    from semcorr_ros.reference.sets import file_kind
    from semcorr_ros.reference.single import resolve

    kind = file_kind(doc, path)
    view_docs: list[tuple[Path, dict]] = []
    if kind == "view":
        view_docs = [(path, doc)]
    else:
        for entry in doc["views"]:
            if isinstance(entry, str):
                p = resolve(path, entry)
                view_docs.append((p, _doc(p)))
            else:
                view_docs.append((path, entry))
    poses = {v.reference_id: parse_object_pose(d.get("object_pose"), p)
             for v, (p, d) in zip(spec.views, view_docs)}
    gt_instance = _text(doc, "ground_truth_instance")
    category = _text(doc, "category")
    if category is None and view_docs:
        category = _text(view_docs[0][1], "category")
    if gt_instance is None and kind != "view" and view_docs:
        gt_instance = _text(view_docs[0][1], "ground_truth_instance")
    return EvalObject(spec, poses, gt_instance, category, str(path))


def pair_ground_truth(objects: EvalObjects, instances: dict[str, str]) -> tuple[dict[str, str | None], list[str]]:
    """Object id -> the bag's ground-truth instance it is scored against (None: none found), and warnings.

    Args:
        objects: from :func:`load_eval_objects`.
        instances: the bag's ground-truth instances -> their category, in the order first seen.
    """
    out: dict[str, str | None] = {}
    warnings: list[str] = []
    taken: set[str] = set()
    for o in objects.objects:
        oid = o.spec.object_id
        chosen = None
        if o.ground_truth_instance is not None:
            if o.ground_truth_instance in instances:
                chosen = o.ground_truth_instance
            else:
                warnings.append(f"object {oid!r}: its ground_truth_instance {o.ground_truth_instance!r} is not in the "
                                f"bag's ground truth ({', '.join(instances) or 'none'})")
        if chosen is None and o.category is not None:
            same = [i for i, c in instances.items() if c == o.category and i not in taken]
            if len(same) == 1:
                chosen = same[0]
        if chosen is None and oid in instances:
            chosen = oid
        if chosen is None and len(objects.objects) == 1 and len(instances) == 1:
            chosen = next(iter(instances))
        if chosen is None:
            if instances:
                warnings.append(f"object {oid!r} has no ground truth in the bag (instances: {', '.join(instances)}; "
                                f"give its reference file 'ground_truth_instance: <instance>'): not scored")
        else:
            taken.add(chosen)
        out[oid] = chosen
    return out, warnings
