"""Scan-tag and operator-status devices (the plan writes them; people and the detector read)."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal

from contracts.frames import FRAME_TYPES
from devices.signals import SettingSignal

__all__ = ["FRAME_TYPES", "OperatorStatus", "ScanTags"]


class ScanTags(Device):
    """Tags of the next frame: frame type, angle / series / step index, attempt, scan uid; and
    the JSON of the scan plan being run (``ScanPlan``, written once per CT run).

    Every event reads the tags, so they are monitored (a network read costs ~3 ms through
    pyepics); a put completes after the server has sent the new value's monitor update, and
    pyepics applies updates and completions in the order they arrive, so a read right after a
    put sees the value put. A tag set to the value it holds is not put again
    (:class:`~devices.signals.SettingSignal`): most tags keep their value from one series to
    the next.
    """

    frame_type = Cpt(SettingSignal, "FrameType", string=True, kind="normal")
    angle_index = Cpt(SettingSignal, "AngleIndex", kind="normal")
    series_index = Cpt(SettingSignal, "SeriesIndex", kind="normal")
    step_index = Cpt(SettingSignal, "StepIndex", kind="normal")
    attempt = Cpt(SettingSignal, "Attempt", kind="normal")
    scan_uid = Cpt(SettingSignal, "ScanUid", string=True, kind="config")
    scan_plan = Cpt(EpicsSignal, "ScanPlan", string=True, put_complete=True, kind="omitted")


class OperatorStatus(Device):
    """Scan state, progress, frames, elapsed time, ETA, current angle and a message."""

    state = Cpt(EpicsSignal, "State", string=True, kind="omitted")
    progress = Cpt(EpicsSignal, "Progress", kind="omitted")
    frames_done = Cpt(EpicsSignal, "FramesDone", kind="omitted")
    frames_total = Cpt(EpicsSignal, "FramesTotal", kind="omitted")
    elapsed = Cpt(EpicsSignal, "Elapsed", kind="omitted")
    eta = Cpt(EpicsSignal, "ETA", kind="omitted")
    angle = Cpt(EpicsSignal, "Angle", kind="omitted")
    message = Cpt(EpicsSignal, "Message", string=True, kind="omitted")
