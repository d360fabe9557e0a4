"""The operator status: a RunEngine callback keeping the status PVs and a progress bar current.

:class:`ScanStatusReporter` writes the ``OperatorStatus`` PVs (state, message, frames total and
done, progress, elapsed, ETA, current angle; see ``docs/pvs.md``) from the run's documents, and
mirrors the RunEngine's pause / resume in the State PV.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

from contracts.frames import CA_STRING_MAX


class ScanStatusReporter:
    """A bluesky callback that keeps the operator status PVs (and a progress bar) current.

    Progress counts *distinct* frames (frame type, angle, series, step from the tags in the
    event), so a re-taken series does not overshoot; the ETA is elapsed x remaining / done.
    ``status`` is the ``OperatorStatus`` device or None (progress bar only). The per-frame PVs
    (frames done, progress, elapsed, ETA, angle) are written at most every ``min_interval_s``
    and at the last frame: five puts per frame cost a 20 frames/s scan ~1 ms a frame, and
    nobody reads a status display faster.
    """

    def __init__(
        self,
        status: Any | None,
        *,
        rotation_key: str | None = None,
        tags_prefix: str | None = None,
        progress_bar: bool = False,
        clock: Callable[[], float] = time.monotonic,
        min_interval_s: float = 0.25,
    ) -> None:
        if not (math.isfinite(min_interval_s) and min_interval_s >= 0):
            raise ValueError(f"min_interval_s must be >= 0, got {min_interval_s!r}")
        self.status = status
        self.min_interval_s = min_interval_s
        self._last_put = -math.inf
        self.rotation_key = rotation_key
        self.tags_prefix = tags_prefix
        self.progress_bar = progress_bar
        self._clock = clock
        self._bar: Any = None
        self.total = 0
        self.events = 0
        self.done: set[tuple[Any, ...]] = set()
        self.t0 = 0.0
        self.eta_s = 0.0
        self.angle_deg: float | None = None

    def _put(self, attr: str, value: Any) -> None:
        if self.status is None:
            return
        with contextlib.suppress(Exception):  # a status PV must never stop a scan
            getattr(self.status, attr).put(value, wait=False)

    def set_state(self, state: str, message: str | None = None) -> None:
        """Write the State PV (Idle, Running, Paused, Suspended, Done, Failed, Aborted)."""
        self._put("state", state)
        if message is not None:
            self._put("message", message[:CA_STRING_MAX])

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        getattr(self, f"_{name}", lambda doc: None)(doc)

    def _start(self, doc: Mapping[str, Any]) -> None:
        self.total = int(doc.get("frames_total") or doc.get("num_points") or 0)
        self.events = 0
        self.done = set()
        self.t0 = self._clock()
        self._last_put = -math.inf
        self.eta_s = 0.0
        self._put("frames_total", self.total)
        self._put("frames_done", 0)
        self._put("progress", 0.0)
        self._put("elapsed", 0.0)
        self._put("eta", 0.0)
        self.set_state("Running", f"{doc.get('plan_name', 'scan')} {str(doc['uid'])[:8]}")
        if self.progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total or None, unit="frame", desc="scan")

    def _frame_key(self, data: Mapping[str, Any]) -> tuple[Any, ...] | None:
        if self.tags_prefix is None:
            return None
        fields = ("frame_type", "angle_index", "series_index", "step_index")
        try:
            return tuple(data[f"{self.tags_prefix}_{f}"] for f in fields)
        except KeyError:
            return None

    def _event(self, doc: Mapping[str, Any]) -> None:
        self.events += 1
        data = doc.get("data", {})
        key = self._frame_key(data)
        before = len(self.done)
        self.done.add(key if key is not None else ("event", self.events))
        # darks share one key per frame number: count them by event
        if key is not None and key[0] == "dark" and len(self.done) == before:
            self.done.add(("dark-event", self.events))
        n = len(self.done)
        if self.rotation_key and self.rotation_key in data:
            self.angle_deg = float(data[self.rotation_key])
        now = self._clock()
        elapsed = now - self.t0
        total = max(self.total, n)
        self.eta_s = elapsed * (total - n) / n if n else 0.0
        if self._bar is not None:
            self._bar.update(n - self._bar.n)
        if now - self._last_put < self.min_interval_s and n < total:
            return
        self._last_put = now
        if self.angle_deg is not None:
            self._put("angle", self.angle_deg)
        self._put("frames_done", n)
        self._put("progress", 100.0 * n / total if total else 0.0)
        self._put("elapsed", elapsed)
        self._put("eta", self.eta_s)

    def _stop(self, doc: Mapping[str, Any]) -> None:
        status = doc.get("exit_status", "success")
        state = {"success": "Done", "abort": "Aborted"}.get(status, "Failed")
        self._put("eta", 0.0)
        self.set_state(state, doc.get("reason") or f"run {status}")
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def state_hook(self, new: str, old: str) -> None:
        """RunEngine ``state_hook``: mirror paused / idle in the State PV."""
        if new == "paused":
            self.set_state("Paused", "paused: RE.resume() or RE.stop()")
        elif new == "running" and old == "paused":
            self.set_state("Running")
