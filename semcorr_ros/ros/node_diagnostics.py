"""The node's ``/diagnostics`` status and its frame-loss warnings (executor thread; a mixin of
:class:`~semcorr_ros.ros.node.CorrespondNode`)."""

from __future__ import annotations

from std_msgs.msg import Header

from semcorr_ros.ros.diagnostics import diagnostic_array, loss_reasons, status_level
from semcorr_ros.ros.node_inputs import describe
from semcorr_ros.ros.sync import COLOR, DEPTH

__all__ = ["NodeDiagnostics"]


class NodeDiagnostics:
    """``state()``, the synchroniser's counters and the periodic diagnostics message."""

    def sync_stats(self) -> dict[str, int]:
        """Synchroniser counters summed over the node's lifetime (the synchroniser is rebuilt on changes)."""
        return self._inputs.stats()

    def state(self) -> str:
        """``error``, ``loading``, ``paused``, ``no_reference`` or ``ready``."""
        if self._fatal is not None:
            return "error"
        if self._engine is None or not self._ready.is_set():
            return "loading"
        if not self._enabled:
            return "paused"
        return "no_reference" if self._engine.reference is None else "ready"

    def _publish_diagnostics(self) -> None:
        try:
            self._publish_diagnostics_once()
        except Exception as exc:  # noqa: BLE001 -- a timer callback must not stop the executor
            self.get_logger().error(f"diagnostics failed: {type(exc).__name__}: {exc}", throttle_duration_sec=30.0)

    def _log_sync_losses(self, sync: dict[str, int]) -> None:
        """Turn the synchroniser's unpaired and late colour frames into rejections / warnings with a reason."""
        never, late = self._inputs.losses(sync)
        newest = self._inputs.newest_stamp
        if never:
            c, d = newest.get(COLOR), newest.get(DEPTH)
            seen = "no depth frame received" if d is None else f"newest colour stamp {c:.3f}, depth {d:.3f}"
            self._reject(f"{never} colour frame(s) found no depth frame within sync_slop="
                         f"{self._values['sync_slop']} s ({seen})", count=never, kind="unpaired")
        if late > 0 and self._reject_throttle.allow("late", late) is not None:
            self.get_logger().warning(
                f"{late} colour frame(s) dropped: stamp not newer than the last processed frame (newest colour "
                f"stamp {newest.get(COLOR, float('nan')):.3f}); frames out of order, or a camera "
                f"publishing zero/constant stamps with stamp_source={self._values['stamp_source']}")

    def _publish_diagnostics_once(self) -> None:
        sync = self.sync_stats()
        self._log_sync_losses(sync)
        snap = self._stats.snapshot()
        state = self.state()
        level, message = status_level(state, snap, float(self._values["diagnostics_period"]))
        device = str(getattr(self._engine, "device", self._config.device))
        spec, stamps = self._updates.active, self._inputs.stamps
        shed = self._inputs.accounting.shed + sum(self._superseded)
        values = {
            "node": self.get_fully_qualified_name(), "state": state, "enabled": self._enabled, "device": device,
            "model": "+".join(self._config.sources),
            "reference_id": spec.reference_id if spec else "", "keypoints": len(spec.names) if spec else 0,
            "reference_error": self._updates.error,
            "objects": ", ".join(f"{o.object_id} ({len(o.views)} view{'s' if len(o.views) > 1 else ''})"
                                 for o in self._updates.objects),
            "tracking": ", ".join(f"{o}: {status} ({n} frames since detection)" for o, status, n in self._tracks)
                        if getattr(getattr(self._engine, "config", None), "tracking", "off") == "on" else "off",
            "rate_hz": snap.rate_hz, "latency_p50_ms": snap.latency_p50 * 1e3,
            "latency_p95_ms": snap.latency_p95 * 1e3, "latency_max_ms": snap.latency_max * 1e3,
            "processing_p50_ms": snap.processing_p50 * 1e3,
            "stamp_source": stamps.active + (f" ({stamps.reason})" if stamps.reason else ""),
            "frames_received": sync.get("added_color", 0), "frames_processed": sync.get("consumed", 0),
            "frames_published": snap.published, "frames_dropped": sync.get("dropped", 0) + shed,
            "frames_late": sync.get("late", 0), "frames_disabled": self._disabled_frames,
            "frames_rejected": snap.rejected, "frames_unpaired": self._inputs.accounting.never_paired,
            "last_rejection": snap.last_rejection, "fatal_error": describe(self._fatal) if self._fatal else "",
            **loss_reasons(sync, snap, shed, self._disabled_frames,
                           float(self._values["sync_time_jump_reset"])),
        }
        header = Header(stamp=self.get_clock().now().to_msg())
        name = f"{self.get_name()}: semantic correspondence"
        self._outputs.diagnostics.publish(diagnostic_array(header, name, device, level, message, values))
