"""ophyd devices of the Talbot beamline (EPICS via pyepics); they never know they are simulated."""

from devices.beam import BeamMonitor, Shutter
from devices.detector import TalbotDetector, TalbotHDF5Plugin
from devices.interferometer import Interferometer
from devices.motors import (
    AnalyzerStage,
    GratingStage,
    PiezoStepper,
    RotationStage,
    SampleStage,
    step_positions,
)
from devices.sequencer import (
    SequencedAcquisition,
    SequencedFrames,
    SeriesArming,
    StepSequencer,
)
from devices.tags import FRAME_TYPES, OperatorStatus, ScanTags

__all__ = [
    "FRAME_TYPES",
    "AnalyzerStage",
    "BeamMonitor",
    "GratingStage",
    "Interferometer",
    "OperatorStatus",
    "PiezoStepper",
    "RotationStage",
    "SampleStage",
    "ScanTags",
    "SequencedAcquisition",
    "SequencedFrames",
    "SeriesArming",
    "Shutter",
    "StepSequencer",
    "TalbotDetector",
    "TalbotHDF5Plugin",
    "step_positions",
]
