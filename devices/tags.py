"""Scan-tag and operator-status devices (the plan writes them; people and the detector read)."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, EpicsSignal

#: FrameType strings; the enum index is the NXtomo image_key (beamline.scanfile.ImageKey).
FRAME_TYPES = ("projection", "reference", "dark")


class ScanTags(Device):
    """Tags of the next frame: frame type, angle / series / step index, attempt, scan uid.

    Every event reads the tags, so they are monitored (a network read costs ~3 ms through
    pyepics); a put completes after the server has sent the new value's monitor update, and
    pyepics applies updates and completions in the order they arrive, so a read right after a
    put sees the value put.
    """

    frame_type = Cpt(
        EpicsSignal, "FrameType", string=True, put_complete=True, kind="normal", auto_monitor=True
    )
    angle_index = Cpt(
        EpicsSignal, "AngleIndex", put_complete=True, kind="normal", auto_monitor=True
    )
    series_index = Cpt(
        EpicsSignal, "SeriesIndex", put_complete=True, kind="normal", auto_monitor=True
    )
    step_index = Cpt(EpicsSignal, "StepIndex", put_complete=True, kind="normal", auto_monitor=True)
    attempt = Cpt(EpicsSignal, "Attempt", put_complete=True, kind="normal", auto_monitor=True)
    scan_uid = Cpt(EpicsSignal, "ScanUid", string=True, put_complete=True, kind="config")


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
