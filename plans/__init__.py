"""bluesky plans of the Talbot beamline: phase-stepping series, CT and alignment scans."""

from plans.alignment import (
    center_check_scan,
    g2_roll_scan,
    talbot_distance_scan,
    visibility_scan,
)
from plans.attempts import SeriesAttempts
from plans.ct import acquisition_order, build_schedule, frames_planned, phase_stepping_ct
from plans.series import STREAMS, dark_series, phase_stepping_series, reference_series

__all__ = [
    "STREAMS",
    "SeriesAttempts",
    "acquisition_order",
    "build_schedule",
    "center_check_scan",
    "dark_series",
    "frames_planned",
    "g2_roll_scan",
    "phase_stepping_ct",
    "phase_stepping_series",
    "reference_series",
    "talbot_distance_scan",
    "visibility_scan",
]
