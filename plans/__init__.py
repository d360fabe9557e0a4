"""bluesky plans of the Talbot beamline: phase-stepping series, CT and alignment scans."""

from plans.alignment import (
    center_check_scan,
    g2_roll_scan,
    talbot_distance_scan,
    visibility_scan,
)
from plans.attempts import SeriesAttempts
from plans.ct import phase_stepping_ct, resolve_scan_plan, run_with_uid
from plans.hardware import HardwareStepping
from plans.series import STREAMS, dark_series, phase_stepping_series, reference_series

__all__ = [
    "STREAMS",
    "HardwareStepping",
    "SeriesAttempts",
    "center_check_scan",
    "dark_series",
    "g2_roll_scan",
    "phase_stepping_ct",
    "phase_stepping_series",
    "reference_series",
    "resolve_scan_plan",
    "run_with_uid",
    "talbot_distance_scan",
    "visibility_scan",
]
