"""Scan-tag and operator-status PVs.

Scan tags are written by the plan before each trigger (like APS tomoscan's ``FrameType``); the
detector attaches them to every frame. ``FrameType`` enum indices equal the NXtomo ``image_key``
of ``contracts.frames.ImageKey`` (0 projection, 1 reference/flat, 2 dark), so a frame's
``image_key`` is the raw enum value. ``ScanPlan`` holds the JSON of the scan plan a CT plan runs
(``contracts.scanplan.ScanPlan``); the file writer records it, and clears it when its file is
closed, so that a later run which does not write one is recorded as no CT. Operator-status PVs
are written by the RunEngine session for people watching the scan.

At the beamline these two groups are served by Talbot's own small soft IOC (this same code).
"""

from __future__ import annotations

from typing import Any

from caproto import ChannelType
from caproto.server import PVGroup, pvproperty
from pydantic import ValidationError

from contracts.frames import CA_STRING_MAX, FRAME_TYPES, INT32_MAX
from contracts.scanplan import ScanPlan

#: OperatorStatus State enum strings.
SCAN_STATES = ("Idle", "Running", "Paused", "Suspended", "Done", "Failed", "Aborted")

#: Longest scan-plan JSON the ScanPlan PV holds [bytes].
MAX_SCAN_PLAN_BYTES = 4096


class ScanTagsGroup(PVGroup):
    """Tags of the next frame: type, angle/series/step index, attempt, scan uid."""

    frame_type = pvproperty(
        name="FrameType",
        value="projection",
        dtype=ChannelType.ENUM,
        enum_strings=FRAME_TYPES,
        record="mbbo",
        doc="frame type: projection / reference / dark (index = NXtomo image_key)",
    )
    angle_index = pvproperty(
        name="AngleIndex",
        value=-1,
        dtype=ChannelType.LONG,
        lower_ctrl_limit=-1,
        upper_ctrl_limit=INT32_MAX,
        doc="projection angle index; -1 for darks and references",
    )
    series_index = pvproperty(
        name="SeriesIndex",
        value=-1,
        dtype=ChannelType.LONG,
        lower_ctrl_limit=-1,
        upper_ctrl_limit=INT32_MAX,
        doc="reference series number; -1 for projections and darks",
    )
    step_index = pvproperty(
        name="StepIndex",
        value=-1,
        dtype=ChannelType.LONG,
        lower_ctrl_limit=-1,
        upper_ctrl_limit=INT32_MAX,
        doc="phase-step index within the series; -1 for darks",
    )
    attempt = pvproperty(
        name="Attempt",
        value=0,
        dtype=ChannelType.LONG,
        lower_ctrl_limit=0,
        upper_ctrl_limit=INT32_MAX,
        doc="0 for the first take of a series, +1 for each re-take",
    )
    scan_uid = pvproperty(
        name="ScanUid",
        value="",
        dtype=ChannelType.STRING,
        doc=f"scan uid (the bluesky run start uid, at most {CA_STRING_MAX} characters)",
    )
    scan_plan = pvproperty(
        name="ScanPlan",
        value="",
        dtype=ChannelType.CHAR,
        max_length=MAX_SCAN_PLAN_BYTES,
        doc="JSON of the scan plan being run (char waveform); empty: no CT scan",
    )

    @scan_plan.putter  # type: ignore[no-redef]
    async def scan_plan(self, instance: Any, value: Any) -> Any:
        text = value if isinstance(value, str) else bytes(value).decode("utf-8", "replace")
        text = text.rstrip("\x00")
        if text:
            try:
                ScanPlan.model_validate_json(text)
            except ValidationError as exc:
                first = exc.errors()[0]
                loc = ".".join(str(p) for p in first["loc"]) or "ScanPlan"
                raise ValueError(f"ScanPlan: {loc}: {first['msg']}") from None
        return text

    def plan(self) -> ScanPlan | None:
        """The scan plan now in ``ScanPlan`` (None when empty)."""
        text = str(self.scan_plan.value or "").rstrip("\x00")
        return ScanPlan.model_validate_json(text) if text else None


class OperatorStatusGroup(PVGroup):
    """What an operator needs to see of a running scan."""

    state = pvproperty(
        name="State",
        value="Idle",
        dtype=ChannelType.ENUM,
        enum_strings=SCAN_STATES,
        record="mbbo",
        doc="scan state",
    )
    progress = pvproperty(
        name="Progress",
        value=0.0,
        dtype=ChannelType.DOUBLE,
        lower_ctrl_limit=0.0,
        upper_ctrl_limit=100.0,
        precision=1,
        units="%",
        doc="scan progress [%]",
    )
    frames_done = pvproperty(
        name="FramesDone",
        value=0,
        dtype=ChannelType.LONG,
        lower_ctrl_limit=0,
        upper_ctrl_limit=INT32_MAX,
        doc="frames acquired so far",
    )
    frames_total = pvproperty(
        name="FramesTotal",
        value=0,
        dtype=ChannelType.LONG,
        lower_ctrl_limit=0,
        upper_ctrl_limit=INT32_MAX,
        doc="frames planned",
    )
    elapsed = pvproperty(
        name="Elapsed",
        value=0.0,
        dtype=ChannelType.DOUBLE,
        lower_ctrl_limit=0.0,
        upper_ctrl_limit=1.0e9,
        precision=1,
        units="s",
        doc="time since scan start [s]",
    )
    eta = pvproperty(
        name="ETA",
        value=0.0,
        dtype=ChannelType.DOUBLE,
        lower_ctrl_limit=0.0,
        upper_ctrl_limit=1.0e9,
        precision=1,
        units="s",
        doc="estimated time remaining [s]",
    )
    angle = pvproperty(
        name="Angle",
        value=0.0,
        dtype=ChannelType.DOUBLE,
        precision=3,
        units="deg",
        doc="current projection angle [deg]",
    )
    message = pvproperty(
        name="Message",
        value="",
        dtype=ChannelType.CHAR,
        max_length=256,
        report_as_string=True,
        doc="free-text status message (char waveform, 256)",
    )
