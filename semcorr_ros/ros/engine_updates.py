"""Run-time changes of the engine (options, reference) handed from parameter callbacks to the inference thread.

Parameter callbacks run on the executor thread and must stay quick; encoding a reference takes a model pass.
So the callbacks only validate (the node rejects a bad value with its reason) and *request* a change here; the
inference thread applies the latest request between two frames. The engine is only ever touched by that thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from semcorr_ros.config import EngineConfig
from semcorr_ros.errors import SemcorrError
from semcorr_ros.reference import ObjectSpec, ReferenceSpec

__all__ = ["EngineUpdates", "REFERENCE_AFFECTING_FIELDS"]

#: EngineConfig fields used when the reference is encoded: changing one re-encodes the active reference.
REFERENCE_AFFECTING_FIELDS = frozenset({"kbc", "kbc_margin", "depth_aware", "depth_floor", "depth_sigma_min",
                                        "depth_spread", "depth_cells", "depth_radius"})
_NOTHING = object()


class EngineUpdates:
    """Pending engine options and reference (latest request wins), the active reference and why there is none.

    Args:
        logger: an rclpy logger (``info``/``warning``/``error``).
    """

    def __init__(self, logger: Any) -> None:
        self._logger = logger
        self._lock = threading.Lock()
        self._config: EngineConfig | None = None
        self._reference: Any = _NOTHING
        #: the active reference's first view (the only one of a single-view reference), None when none is active
        self.active: ReferenceSpec | None = None
        #: the active objects (one of one view for a single-view reference)
        self.objects: list[ObjectSpec] = []
        #: why no reference is active ("" when one is)
        self.error = "no reference requested yet"
        #: references the engine refused (bad content, or an error such as running out of memory)
        self.rejected = 0

    def request_config(self, config: EngineConfig) -> None:
        with self._lock:
            self._config = config

    def request_reference(self, spec: ReferenceSpec | Sequence[ObjectSpec] | None, error: str = "") -> None:
        """Ask for ``spec`` (a single view, or the objects of a reference set / objects file) to become the active
        reference; None clears it (``error`` says why)."""
        objects = None if spec is None else [ObjectSpec.single(spec)] if isinstance(spec, ReferenceSpec) \
            else list(spec)
        with self._lock:
            self._reference = objects
            if objects is None:
                self.error = error or "parameter reference_file is empty"
            elif self.active is None:
                self.error = f"reference {_describe(objects)!r} not encoded yet"

    def _restore(self, engine: Any) -> None:
        """Make sure the engine still holds the active reference after a failed ``set_reference``."""
        if self.active is None or _holds(engine, self.objects):
            return
        try:
            _set(engine, self.objects)
        except Exception as exc:  # noqa: BLE001 -- then no reference is active, and diagnostics say why
            engine.reference, self.active, self.objects = None, None, []
            self.error = f"the active reference could not be restored: {type(exc).__name__}: {exc}"

    def pending(self) -> bool:
        with self._lock:
            return self._config is not None or self._reference is not _NOTHING

    def apply(self, engine: Any) -> None:
        """Apply what was requested since the last call (inference thread only)."""
        with self._lock:
            cfg, self._config = self._config, None
            spec, self._reference = self._reference, _NOTHING
        if cfg is not None:
            old, engine.config = engine.config, cfg
            changed = [f for f in sorted(REFERENCE_AFFECTING_FIELDS) if getattr(old, f) != getattr(cfg, f)]
            if changed and spec is _NOTHING and self.active is not None:
                self._logger.info(f"{', '.join(changed)} changed: re-encoding the reference")
                spec = self.objects
        if spec is _NOTHING:
            return
        if spec is None:
            engine.reference, self.active, self.objects = None, None, []
            self._logger.warning(f"no active reference ({self.error}): frames are rejected until one is set")
            return
        t0 = time.monotonic()
        name = _describe(spec)
        try:
            _set(engine, spec)
        except Exception as exc:  # noqa: BLE001 -- e.g. CUDA out of memory: refuse this reference, keep the last
            why = str(exc) if isinstance(exc, SemcorrError) else f"{type(exc).__name__}: {exc}"
            kept = _describe(self.objects) if self.active is not None else "none"
            self.rejected += 1
            if self.active is None:
                self.error = f"reference {name!r} rejected by the engine: {why}"
            else:
                self._restore(engine)
            self._logger.error(f"reference {name!r} rejected by the engine ({why}); active reference: {kept}")
            return
        self.objects, self.active, self.error = spec, spec[0].views[0], ""
        for obj in spec:
            has_3d = all(v.depth is not None and v.intrinsics is not None for v in obj.views)
            self._logger.info(f"reference {obj.object_id!r} active: {len(obj.names)} keypoints, "
                              f"{len(obj.views)} view(s), 3D {'yes' if has_3d else 'no'} "
                              f"({time.monotonic() - t0:.1f} s)")


def _describe(objects: Sequence[ObjectSpec]) -> str:
    """The reference's name in messages: its object id, or the ids of its objects joined with '+'."""
    return "+".join(o.object_id for o in objects)


def _single(objects: Sequence[ObjectSpec]) -> bool:
    return len(objects) == 1 and len(objects[0].views) == 1


def _set(engine: Any, objects: Sequence[ObjectSpec]) -> None:
    """Make ``objects`` the engine's: ``set_reference`` for one view of one object (what every engine has),
    else ``set_objects``."""
    if _single(objects):
        v = objects[0].views[0]
        engine.set_reference(v.image, v.keypoints, v.names, v.depth, v.intrinsics, v.reference_id)
    else:
        engine.set_objects(objects)


def _holds(engine: Any, objects: Sequence[ObjectSpec]) -> bool:
    """Whether the engine still holds ``objects`` (after a refused change)."""
    if _single(objects):
        return getattr(engine.reference, "reference_id", None) == objects[0].views[0].reference_id
    return [o.object_id for o in getattr(engine, "objects", [])] == [o.object_id for o in objects]
