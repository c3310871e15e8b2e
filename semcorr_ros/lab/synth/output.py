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


def write_reference(ref: SceneReference, folder: Path) -> Path:
    """``reference.yaml`` + ``reference.png`` + ``reference_depth.png`` (16-bit mm) in ``folder``; returns the
    YAML path (loadable by :func:`semcorr_ros.reference.load_reference`)."""
    _write_bytes(folder / "reference.png", _png_bytes(ref.image))
    _write_bytes(folder / "reference_depth.png", _png_bytes(ref.depth.astype(np.uint16)))
    K = ref.K
    doc = {
        "reference_id": ref.reference_id,
        "image": "reference.png",
        "depth": "reference_depth.png",
        "depth_scale": 0.001,
        "intrinsics": [float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2])],
        "keypoints": {n: [round(float(x), 3), round(float(y), 3)] for n, (x, y) in zip(ref.names, ref.keypoints)},
        "category": ref.category,
        "instance": ref.instance,
        "object_pose": [[float(v) for v in row] for row in ref.object_pose],
    }
    path = folder / "reference.yaml"
    _write_bytes(path, yaml.safe_dump(doc, sort_keys=False, default_flow_style=None, width=120).encode())
    return path


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
    keep = sorted({0, n // 3, (2 * n) // 3, n - 1})
    kept = {}
    fractions, nvis = [], []
    t0 = time.perf_counter()
    render_s = 0.0
    tmp_parent = folder / ".bag.partial"
    tmp_parent.mkdir()
    tmp_bag = tmp_parent / "bag"  # rosbags names the storage file after the folder: bag/bag.mcap
    with SceneBagWriter(tmp_bag, storage) as bag:
        for i in range(n):
            t = time.perf_counter()
            rgb, depth, K, gt = scene.render(i)
            render_s += time.perf_counter() - t
            bag.write_frame(rgb, depth, K, gt)
            fractions.append(gt.object_fraction)
            nvis.append(int(gt.visible.sum()))
            if i in keep:
                kept[i] = (rgb, gt)
            if progress is not None:
                progress(1)
    os.rename(tmp_bag, folder / "bag")
    tmp_parent.rmdir()
    write_reference(scene.reference, folder)
    _write_bytes(folder / "preview.png", _png_bytes(contact_sheet(kept, scene.reference)))
    ref = scene.reference
    K = scene.K
    doc = {
        "schema": SCHEMA,
        "command": list(command) if command is not None else None,
        "category": spec.category,
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
        "object_fraction": _stats(fractions),
        "visible_keypoints": _stats(nvis, 3),
        "camera_distance_m": round(float(scene.orbit.dist), 4),
    }
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
