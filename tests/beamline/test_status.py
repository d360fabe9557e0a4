"""The operator status reporter: distinct frames, ETA, and how often it writes the frame PVs."""

from __future__ import annotations

from typing import Any

import pytest

from beamline.status import ScanStatusReporter


def test_status_reporter_counts_distinct_frames_and_eta() -> None:
    clock = iter([0.0, 10.0, 20.0, 30.0])
    rep = ScanStatusReporter(None, tags_prefix="t", clock=lambda: next(clock))
    rep("start", {"uid": "u", "frames_total": 4})

    def event(step: int) -> dict[str, Any]:
        keys = {"frame_type": "projection", "angle_index": 0, "series_index": -1}
        data = {f"t_{k}": v for k, v in keys.items()}
        return {"data": {**data, "t_step_index": step}}

    rep("event", event(0))
    assert rep.eta_s == pytest.approx(30.0)  # 10 s for 1 of 4 frames
    rep("event", event(0))  # a re-take of the same frame: still 1 distinct frame
    assert len(rep.done) == 1
    assert rep.eta_s == pytest.approx(60.0)
    rep("event", event(1))
    assert len(rep.done) == 2
    assert rep.eta_s == pytest.approx(30.0)


class _Recorder:
    """Stands in for the OperatorStatus device: records every put."""

    def __init__(self) -> None:
        self.puts: list[tuple[str, Any]] = []

    def __getattr__(self, attr: str) -> Any:
        outer = self

        class _Signal:
            def put(self, value: Any, wait: bool = False) -> None:
                outer.puts.append((attr, value))

        return _Signal()


def test_status_reporter_writes_frame_pvs_at_most_every_interval() -> None:
    times = iter([0.0] + [0.05 * k for k in range(1, 11)])
    status = _Recorder()
    rep = ScanStatusReporter(status, tags_prefix="t", clock=lambda: next(times), min_interval_s=0.2)
    rep("start", {"uid": "u", "frames_total": 10})
    status.puts.clear()
    for step in range(10):  # 20 frames/s for 0.5 s
        rep("event", {"data": {"t_frame_type": "dark", "t_step_index": step}})
    done = [v for name, v in status.puts if name == "frames_done"]
    assert done == [1, 5, 9, 10]  # first frame, then every 0.2 s, and the last frame
    with pytest.raises(ValueError, match="min_interval_s"):
        ScanStatusReporter(None, min_interval_s=-1.0)


def test_status_reporter_mirrors_the_run_and_the_run_engine_in_the_state_pv() -> None:
    status = _Recorder()
    rep = ScanStatusReporter(status, clock=lambda: 0.0)
    rep("start", {"uid": "0123456789", "plan_name": "ct", "num_points": 3})
    assert ("frames_total", 3) in status.puts
    assert ("message", "ct 01234567") in status.puts
    rep.state_hook("paused", "running")
    rep.state_hook("running", "paused")
    rep("stop", {"exit_status": "abort", "reason": ""})
    states = [v for name, v in status.puts if name == "state"]
    assert states == ["Running", "Paused", "Running", "Aborted"]
    assert status.puts[-1] == ("message", "run abort")
