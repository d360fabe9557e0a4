"""The per-run objects of hardware-stepped series (``stepping="hardware"``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ophyd import EpicsMotor

from devices.interferometer import Interferometer
from devices.sequencer import SequencedAcquisition, SequencedFrames


@dataclass(frozen=True, eq=False)  # one object per run: compared by identity
class HardwareStepping:
    """What every hardware-stepped series of one run reads and acquires through.

    An event stream's descriptor names the objects read, so the series of a run must read their
    frames through one :class:`~devices.sequencer.SequencedFrames`; and one
    :class:`~devices.sequencer.SequencedAcquisition` holds the series queued in the IOC. The
    owner of the run makes one with :meth:`create`, hands it to each series and calls
    :meth:`release` when the run's series are done (``phase_stepping_ct`` does, once per run);
    a series given none makes its own for itself.
    """

    frames: SequencedFrames
    acquisition: SequencedAcquisition

    @classmethod
    def create(cls, ifm: Interferometer, detector: Any, axis: EpicsMotor) -> HardwareStepping:
        """The objects for series of ``detector`` stepping ``axis`` with ``ifm``'s sequencer."""
        frames = SequencedFrames(
            detector,
            ifm.sequencer,
            axis,
            ifm.tags.step_index,
            [axis, ifm.rotation, ifm.sample, ifm.beam, ifm.tags],
        )
        return cls(frames, SequencedAcquisition(detector, frames))

    def serves(self, ifm: Interferometer, detector: Any, axis: EpicsMotor) -> bool:
        """Whether these objects were made for this detector, stepped axis and sequencer."""
        frames = self.frames
        return (
            frames.detector is detector
            and frames.axis is axis
            and frames.sequencer is ifm.sequencer
        )

    def release(self) -> None:
        """Stop following the sequencer's latched readings (the frames subscribed to them when
        they were made; a session runs many scans)."""
        self.frames.close()
