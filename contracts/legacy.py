"""Reading what the first layout recorded: a whole simulator preset in one JSON attribute.

Scan files of layout ``talbot-scan/1`` carry ``preset_json``: the instrument, the schedule and the
simulator's phantom and noise in one object, with ``g1_phase`` as the string ``"pi"`` or
``"pi/2"``. :func:`from_preset_json` takes the instrument and the scan plan out of it and leaves
the rest. Its tiny preset had a pixel finer than a G2 period; such a recorded geometry is read as
it was recorded (the pixel check applies to new instruments only).
"""

from __future__ import annotations

import json
from typing import Any, Final

from pydantic import ValidationError

from contracts.instrument import Instrument
from contracts.scanplan import ScanPlan

#: The first scan-file layout.
LEGACY_LAYOUT: Final = "talbot-scan/1"

_PHASES = {"pi": 180.0, "pi/2": 90.0}
_SCHEDULE = ("steps", "periods", "angles", "angular_range_deg", "reference_every", "darks")


def from_preset_json(text: str) -> tuple[Instrument, ScanPlan]:
    """(instrument, scan plan) of a first-layout ``preset_json``; ValueError naming the field."""
    preset = json.loads(text)
    if not isinstance(preset, dict):
        raise ValueError("preset_json: must be a JSON object")
    try:
        geometry: dict[str, Any] = dict(preset["geometry"])
        phase = geometry.pop("g1_phase")
        if phase not in _PHASES:
            raise ValueError(
                f"preset_json: geometry.g1_phase must be 'pi' or 'pi/2', got {phase!r}"
            )
        geometry["g1_phase_deg"] = _PHASES[phase]
        detector = preset["detector"]
        schedule = preset["schedule"]
        instrument = Instrument.model_validate(
            {
                "name": str(preset.get("name") or "recorded"),
                "geometry": geometry,
                "detector": {"shape": detector["shape"]},
                "rotation_axis_offset_px": preset.get("rotation_center_offset_px", 0.0),
            },
            context={"legacy": True},
        )
        plan = ScanPlan.model_validate(
            {
                **{name: schedule[name] for name in _SCHEDULE if name in schedule},
                "exposure_s": detector.get("exposure_s", 0.05),
                "sample_out_mm": preset.get("sample_out_mm"),
            }
        )
    except KeyError as exc:
        raise ValueError(f"preset_json: missing {exc}") from None
    except (TypeError, ValidationError) as exc:
        raise ValueError(f"preset_json: {exc}") from None
    return instrument, plan
