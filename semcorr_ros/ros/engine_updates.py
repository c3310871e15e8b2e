"""Run-time changes of the engine (options, reference) handed from parameter callbacks to the inference thread.

Parameter callbacks run on the executor thread and must stay quick; encoding a reference takes a model pass.
So the callbacks only validate (the node rejects a bad value with its reason) and *request* a change here; the
inference thread applies the latest request between two frames. The engine is only ever touched by that thread.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from semcorr_ros.config import EngineConfig
from semcorr_ros.errors import SemcorrError
from semcorr_ros.reference import ReferenceSpec

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
        self.active: ReferenceSpec | None = None
        #: why no reference is active ("" when one is)
        self.error = "no reference requested yet"
        #: references the engine refused (bad content, or an error such as running out of memory)
        self.rejected = 0

    def request_config(self, config: EngineConfig) -> None:
        with self._lock:
            self._config = config

    def request_reference(self, spec: ReferenceSpec | None, error: str = "") -> None:
        """Ask for ``spec`` to become the active reference; None clears it (``error`` says why)."""
        with self._lock:
            self._reference = spec
            if spec is None:
                self.error = error or "parameter reference_file is empty"
            elif self.active is None:
                self.error = f"reference {spec.reference_id!r} not encoded yet"

    def _restore(self, engine: Any) -> None:
        """Make sure the engine still holds the active reference after a failed ``set_reference``."""
        spec = self.active
        if spec is None or getattr(engine.reference, "reference_id", None) == spec.reference_id:
            return
        try:
            engine.set_reference(spec.image, spec.keypoints, spec.names, spec.depth, spec.intrinsics,
                                 spec.reference_id)
        except Exception as exc:  # noqa: BLE001 -- then no reference is active, and diagnostics say why
            engine.reference, self.active = None, None
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
                spec = self.active
        if spec is _NOTHING:
            return
        if spec is None:
            engine.reference, self.active = None, None
            self._logger.warning(f"no active reference ({self.error}): frames are rejected until one is set")
            return
        t0 = time.monotonic()
        try:
            engine.set_reference(spec.image, spec.keypoints, spec.names, spec.depth, spec.intrinsics,
                                 spec.reference_id)
        except Exception as exc:  # noqa: BLE001 -- e.g. CUDA out of memory: refuse this reference, keep the last
            why = str(exc) if isinstance(exc, SemcorrError) else f"{type(exc).__name__}: {exc}"
            kept = self.active.reference_id if self.active is not None else "none"
            self.rejected += 1
            if self.active is None:
                self.error = f"reference {spec.reference_id!r} rejected by the engine: {why}"
            else:
                self._restore(engine)
            self._logger.error(f"reference {spec.reference_id!r} rejected by the engine ({why}); "
                               f"active reference: {kept}")
            return
        self.active, self.error = spec, ""
        has_3d = spec.depth is not None and spec.intrinsics is not None
        self._logger.info(f"reference {spec.reference_id!r} active: {len(spec.names)} keypoints, "
                          f"3D {'yes' if has_3d else 'no'} ({time.monotonic() - t0:.1f} s)")
