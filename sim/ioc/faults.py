"""Fault-injection PVs of the simulated beamline.

- ``BeamDump`` (Off/Dump): put Dump -> the ring current drops to 0 mA for ``BeamDumpTime``
  seconds, then recovers; reads Dump while the beam is down and returns to Off by itself.
- ``PiezoStall`` (Off/Stall): the G2 piezo never reaches its in-position tolerance, so its
  ``DMOV`` stays 0 until this is put back to Off (or the move is stopped).
- ``DropFrames`` (count), ``LateFrames`` (count) with ``LateFrameDelay`` [s], ``SlowWriter`` [s per
  frame]: consumed by the simulated detector (:meth:`FaultsGroup.take_drop`,
  :meth:`FaultsGroup.take_late`, :attr:`FaultsGroup.writer_delay_s`).
"""

from __future__ import annotations

import asyncio
from typing import Any

from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

from sim.ioc.beam import BeamGroup
from sim.ioc.piezo import PiezoRecord

INT32_MAX = 2**31 - 1


class FaultsGroup(PVGroup):
    """Fault injection: beam dump, piezo stall, dropped / late frames, slow file writer."""

    beam_dump = pvproperty(
        name="BeamDump",
        value="Off",
        dtype=ChannelType.ENUM,
        enum_strings=("Off", "Dump"),
        record="bo",
        doc="put Dump: ring current 0 mA for BeamDumpTime, then recovery",
    )
    beam_dump_time = pvproperty(
        name="BeamDumpTime",
        value=2.0,
        dtype=ChannelType.DOUBLE,
        lower_ctrl_limit=0.01,
        upper_ctrl_limit=3600.0,
        precision=2,
        units="s",
        doc="duration of an injected beam dump [s]",
    )
    piezo_stall = pvproperty(
        name="PiezoStall",
        value="Off",
        dtype=ChannelType.ENUM,
        enum_strings=("Off", "Stall"),
        record="bo",
        doc="Stall: the G2 piezo never gets in position (DMOV stays 0) until Off",
    )
    drop_frames = pvproperty(
        name="DropFrames",
        value=0,
        dtype=ChannelType.LONG,
        lower_ctrl_limit=0,
        upper_ctrl_limit=INT32_MAX,
        doc="number of upcoming detector frames to drop (counts down)",
    )
    late_frames = pvproperty(
        name="LateFrames",
        value=0,
        dtype=ChannelType.LONG,
        lower_ctrl_limit=0,
        upper_ctrl_limit=INT32_MAX,
        doc="number of upcoming frames delivered LateFrameDelay late (counts down)",
    )
    late_frame_delay = pvproperty(
        name="LateFrameDelay",
        value=1.0,
        dtype=ChannelType.DOUBLE,
        lower_ctrl_limit=0.0,
        upper_ctrl_limit=3600.0,
        precision=3,
        units="s",
        doc="extra delay of a late frame [s]",
    )
    slow_writer = pvproperty(
        name="SlowWriter",
        value=0.0,
        dtype=ChannelType.DOUBLE,
        lower_ctrl_limit=0.0,
        upper_ctrl_limit=60.0,
        precision=3,
        units="s",
        doc="extra file-writer time per frame [s]; 0 = off",
    )

    def __init__(self, prefix: str, *, beam: BeamGroup, piezo: PiezoRecord, **kwargs: Any) -> None:
        self.beam = beam
        self.piezo = piezo
        self._dump_task: asyncio.Task[None] | None = None
        super().__init__(prefix, **kwargs)

    @beam_dump.putter  # type: ignore[no-redef]
    async def beam_dump(self, instance: Any, value: str) -> str:
        if value == "Dump" and (self._dump_task is None or self._dump_task.done()):
            self._dump_task = asyncio.create_task(self._run_dump(self.beam_dump_time.value))
        return "Dump" if self.beam.dumped or value == "Dump" else "Off"

    async def _run_dump(self, duration_s: float) -> None:
        try:
            await self.beam.dump(duration_s)
        finally:
            await self.beam_dump.write("Off", verify_value=False)

    @piezo_stall.putter  # type: ignore[no-redef]
    async def piezo_stall(self, instance: Any, value: str) -> str:
        await self.piezo.set_stalled(value == "Stall")
        return value

    async def take_drop(self) -> bool:
        """For the detector: True if the next frame is to be dropped (and count it down)."""
        n = int(self.drop_frames.value)
        if n > 0:
            await self.drop_frames.write(n - 1)
        return n > 0

    async def take_late(self) -> float:
        """For the detector: the extra delay [s] of the next frame (0 if it is on time)."""
        n = int(self.late_frames.value)
        if n <= 0:
            return 0.0
        await self.late_frames.write(n - 1)
        return float(self.late_frame_delay.value)

    @property
    def writer_delay_s(self) -> float:
        """For the file writer: extra time per frame [s]."""
        return float(self.slow_writer.value)
