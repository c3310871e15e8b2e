"""The output folder of ``semcorr synth`` (layout in docs/synth.md), written atomically.

Everything is first written into a hidden sibling folder ``.<OUT name>.partial-<pid>`` (the bag itself into
``.bag.partial/bag``, moved to ``bag`` when closed) that is renamed to ``OUT`` only when complete; a failed or
interrupted run removes it, so ``OUT`` is never left half-written.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import yaml

from semcorr_ros.errors import ConfigError, SemcorrError
from semcorr_ros.groundtruth import GT_TOPIC
from semcorr_ros.lab.synth.bagio import COLOR_TOPIC, DEPTH_TOPIC, FRAME_ID, INFO_TOPIC, SceneBagWriter
from semcorr_ros.lab.synth.scene import Scene, SceneReference, SceneSpec, render_scene

log = logging.getLogger(__name__)

SCHEMA = "semcorr-synth-v1"


class OutputExistsError(SemcorrError, FileExistsError):
    """The output folder exists and is not empty (and ``--overwrite`` was not given)."""


def _write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _png_bytes(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def write_reference(ref: SceneReference, folder: Path, stem: str = "reference", extra: dict | None = None) -> Path:
    """``<stem>.yaml`` + ``<stem>.png`` + ``<stem>_depth.png`` (16-bit mm) in ``folder`` (default stem
    ``reference``); returns the YAML path (loadable by :func:`semcorr_ros.reference.load_reference`). ``extra``:
    further keys written last."""
    _write_bytes(folder / f"{stem}.png", _png_bytes(ref.image))
    _write_bytes(folder / f"{stem}_depth.png", _png_bytes(ref.depth.astype(np.uint16)))
    K = ref.K
    doc = {
        "reference_id": ref.reference_id,
        "image": f"{stem}.png",
        "depth": f"{stem}_depth.png",
        "depth_scale": 0.001,
        "intrinsics": [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])],
        "keypoints": {n: [round(float(x), 3), round(float(y), 3)] for n, (x, y) in zip(ref.names, ref.keypoints)},
        "category": ref.category,
        "instance": ref.instance,
        "object_pose": [[float(v) for v in row] for row in ref.object_pose],
        **(extra or {}),
    }
    path = folder / f"{stem}.yaml"
    _write_bytes(path, yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120).encode())
    return path


def write_reference_views(ref: SceneReference, folder: Path, ground_truth_instance: str,
                          object_id: str) -> Path:
    """The reference set of ``ref.views``: ``reference_set.yaml`` naming ``reference.yaml`` (view 0, written by
    :func:`write_reference`) and ``reference_view<i>.yaml`` (+ PNGs) for the other views. The set carries
    ``category`` and ``ground_truth_instance`` (the scene's instance it is the reference for; ``semcorr bag-eval``
    pairs objects with the bag's ground truth by it)."""
    from semcorr_ros.reference.writer import write_reference_set

    files = [folder / "reference.yaml"]
    for i, view in enumerate(ref.views[1:], 1):
        stem = f"reference_view{view.reference_id.rsplit('_view', 1)[-1]}" if "_view" in view.reference_id \
            else f"reference_view{i}"
        files.append(write_reference(view, folder, stem))
    path = write_reference_set(folder / "reference_set.yaml", object_id, files)
    doc = yaml.safe_load(path.read_text())
    doc.update({"category": ref.category, "ground_truth_instance": ground_truth_instance})
    header = path.read_text().splitlines()[0]
    _write_bytes(path, (header + "\n" + yaml.safe_dump(doc, sort_keys=False, default_flow_style=None,
                                                       width=120)).encode())
    return path


def _set_doc(ref: SceneReference) -> dict:
    return {"file": "reference_set.yaml",
            "views": [{"reference_id": v.reference_id, "view": v.view, "visible_keypoints": list(v.names)}
                      for v in ref.views]}


def _merged(gts: Sequence) -> object:
    """The ground truth of several objects as one record (for the preview's drawing only)."""
    from dataclasses import replace

    if len(gts) == 1:
        return gts[0]
    return replace(gts[0], names=[f"{g.instance}/{n}" for g in gts for n in g.names],
                   keypoints_2d=np.concatenate([g.keypoints_2d for g in gts]),
                   visible=np.concatenate([g.visible for g in gts]),
                   object_fraction=float(sum(g.object_fraction for g in gts)))


def _stats(values: Sequence[float], digits: int = 5) -> dict:
    a = np.asarray(values, float)
    return {"min": round(float(a.min()), digits), "mean": round(float(a.mean()), digits),
            "max": round(float(a.max()), digits)}


def write_scene(scene: Scene, folder: Path, storage: str = "mcap", command: Sequence[str] | None = None,
                progress: Callable[[int], None] | None = None) -> dict:
    """Render ``scene`` into ``folder`` (which must exist and be empty): bag, reference, scene.json, preview.

    Returns the ``scene.json`` document (plus a ``timing`` entry that is not written, so that the files are a
    function of the command alone)."""
    from semcorr_ros.lab.synth.preview import contact_sheet

    spec = scene.spec
    n = len(scene)
    n_obj = len(scene.models)
    keep = sorted({0, n // 3, (2 * n) // 3, n - 1})
    kept = {}
    fractions: list[list[float]] = [[] for _ in range(n_obj)]
    nvis: list[list[int]] = [[] for _ in range(n_obj)]
    t0 = time.perf_counter()
    render_s = 0.0
    tmp_parent = folder / ".bag.partial"
    tmp_parent.mkdir()
    tmp_bag = tmp_parent / "bag"  # rosbags names the storage file after the folder: bag/bag.mcap
    with SceneBagWriter(tmp_bag, storage) as bag:
        for i in range(n):
            t = time.perf_counter()
            (rgb, depth, K, gt), gts = scene.render_objects(i)
            render_s += time.perf_counter() - t
            bag.write_frame(rgb, depth, K, gt, gts[1:])
            for j, g in enumerate(gts):
                fractions[j].append(g.object_fraction)
                nvis[j].append(int(g.visible.sum()))
            if i in keep:
                kept[i] = (rgb, _merged(gts))
            if progress is not None:
                progress(1)
    os.rename(tmp_bag, folder / "bag")
    tmp_parent.rmdir()
    multi = bool(spec.objects)
    objects_doc = []
    if not multi:
        write_reference(scene.reference, folder)
        if spec.reference_views:
            write_reference_views(scene.reference, folder, scene.instance, spec.category)
    else:
        from semcorr_ros.reference.writer import write_objects

        files = []
        for ref, oid, inst in zip(scene.references, scene.object_ids, scene.instances):
            sub = folder / oid
            sub.mkdir()
            extra = {"ground_truth_instance": inst}
            files.append(write_reference(ref, sub, extra=extra))
            if spec.reference_views:
                files[-1] = write_reference_views(ref, sub, inst, oid)
        write_objects(folder / "objects.yaml", files)
        for j, (ref, oid, inst, model, T) in enumerate(zip(scene.references, scene.object_ids, scene.instances,
                                                           scene.models, scene.T_world_objects)):
            o = {"object_id": oid, "category": model.category, "instance": inst, "instance_params": model.params,
                 "folder": oid, "reference_file": Path(files[j]).relative_to(folder).as_posix(),
                 "position_m": [round(float(v), 4) for v in T[:3, 3]],
                 "reference": {"instance": ref.instance, "params": ref.params, "view": ref.view,
                               "visible_keypoints": list(ref.names)},
                 "keypoint_names": list(model.names),
                 "object_fraction": _stats(fractions[j]), "visible_keypoints": _stats(nvis[j], 3)}
            if spec.reference_views:
                o["reference_set"] = _set_doc(ref)
            objects_doc.append(o)
    _write_bytes(folder / "preview.png", _png_bytes(contact_sheet(kept, scene.reference)))
    ref = scene.reference
    K = scene.K
    doc = {
        "schema": SCHEMA,
        "command": list(command) if command is not None else None,
        "category": scene.category,
        "seed": int(spec.seed),
        "instance": scene.instance,
        "instance_params": scene.model.params,
        "reference": {"instance": ref.instance, "params": ref.params, "view": ref.view,
                      "visible_keypoints": list(ref.names)},
        "keypoint_names": list(scene.names),
        "frames": n,
        "rate_hz": float(spec.rate),
        "width": int(spec.width),
        "height": int(spec.height),
        "intrinsics": [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])],
        "small_object": bool(spec.small_object),
        "depth_noise": bool(spec.depth_noise),
        "clutter": bool(spec.clutter),
        "storage": storage,
        "start_stamp_ns": int(spec.stamp_ns(0)),
        "frame_id": FRAME_ID,
        "topics": {"color": COLOR_TOPIC, "depth": DEPTH_TOPIC, "camera_info": INFO_TOPIC,
                   "ground_truth": GT_TOPIC},
        "object_fraction": _stats(fractions[0]),
        "visible_keypoints": _stats(nvis[0], 3),
        "camera_distance_m": round(float(scene.orbit.dist), 4),
    }
    # keys only present with the options that add them (the default scene.json stays as it always was)
    if spec.orbit != "swing":
        doc["orbit"] = spec.orbit
    if spec.reference_views:
        doc["reference_views"] = int(spec.reference_views)
        if not multi:
            doc["reference_set"] = _set_doc(ref)
    if spec.occlusion:
        doc["occlusion_frames"] = [int(spec.occlusion[0]), int(spec.occlusion[1])]
    if multi:
        doc["objects"] = objects_doc
        doc["objects_file"] = "objects.yaml"
    _write_bytes(folder / "scene.json", (json.dumps(doc, indent=2) + "\n").encode())
    total = time.perf_counter() - t0
    return {**doc, "timing": {"render_s_per_frame": render_s / n, "write_s": total}}


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise OutputExistsError(f"output folder {out} exists and is not empty (use --overwrite to replace it)")


def write_output(out: str | Path, specs: Sequence[SceneSpec], storage: str = "mcap", overwrite: bool = False,
                 command: Sequence[str] | None = None, subfolders: bool | None = None,
                 progress: Callable[[int], None] | None = None) -> list[dict]:
    """Render ``specs`` into ``out`` atomically. One spec: the layout directly in ``out``; several (or
    ``subfolders``): one sub-folder per spec named after its category, plus an ``out/scene.json`` index.

    :class:`OutputExistsError` if ``out`` is a non-empty folder and not ``overwrite``.
    """
    out = Path(out).expanduser().absolute()
    if not specs:
        raise ConfigError("nothing to render")
    for s in specs:
        s.validate()
    if storage not in ("mcap", "sqlite3"):
        raise ConfigError(f"storage must be mcap or sqlite3, got {storage!r}")
    _check_out(out, overwrite)
    sub = len(specs) > 1 if subfolders is None else subfolders
    names = [s.category for s in specs]
    if sub and len(set(names)) != len(names):
        names = [f"{s.category}_{s.seed}" for s in specs]
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = out.parent / f".{out.name}.partial-{os.getpid()}"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir()
    docs = []
    try:
        for spec, name in zip(specs, names):
            folder = stage / name if sub else stage
            folder.mkdir(exist_ok=True)
            scene = render_scene(spec)
            docs.append(write_scene(scene, folder, storage, command, progress))
        if sub:
            index = {"schema": SCHEMA, "command": list(command) if command is not None else None,
                     "scenes": [{"folder": name, "category": d["category"], "seed": d["seed"], "frames": d["frames"],
                                 "object_fraction": d["object_fraction"]} for name, d in zip(names, docs)]}
            _write_bytes(stage / "scene.json", (json.dumps(index, indent=2) + "\n").encode())
        _check_out(out, overwrite)  # again: something may have appeared meanwhile
        old = None
        if out.exists():
            old = out.parent / f".{out.name}.old-{os.getpid()}"
            os.rename(out, old)
        os.rename(stage, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return docs
