"""The whole interferometer as one ophyd device, under the names of ``contracts.pvnames``."""

from __future__ import annotations

from typing import Any

from ophyd import Device
from ophyd import FormattedComponent as FCpt

from contracts.pvnames import SIM_PVNAMES, PVNames
from devices.beam import BeamMonitor, Shutter
from devices.motors import AnalyzerStage, GratingStage, RotationStage, SampleStage
from devices.sequencer import StepSequencer
from devices.tags import OperatorStatus, ScanTags


class Interferometer(Device):
    """G0 and G2 stages, rotation and sample stages, shutter, beam monitor, tags, status and the
    hardware step sequencer."""

    g0 = FCpt(GratingStage, "{_names[g0]}", kind="config")
    g2 = FCpt(AnalyzerStage, "{_names[g2]}", kind="normal")
    rotation = FCpt(RotationStage, "{_names[rotation]}", kind="normal")
    sample = FCpt(SampleStage, "{_names[sample]}", kind="normal")
    shutter = FCpt(Shutter, "{_names[shutter]}", kind="normal")
    beam = FCpt(BeamMonitor, "{_names[beam]}", kind="normal")
    tags = FCpt(ScanTags, "{_names[tags]}", kind="normal")
    status = FCpt(OperatorStatus, "{_names[status]}", kind="omitted")
    #: Connected on first use: a beamline without a hardware sequencer steps in software.
    sequencer = FCpt(StepSequencer, "{_names[sequencer]}", kind="omitted", lazy=True)

    def __init__(
        self, prefix: str = "", *, pvs: PVNames | None = None, name: str, **kwargs: Any
    ) -> None:
        names = SIM_PVNAMES if pvs is None else pvs
        if prefix:
            names = names.with_prefix(prefix)
        self._names = names.device_prefixes()
        super().__init__(prefix, name=name, **kwargs)
