"""The Channel Access names the beamline serves: the one source of truth.

The simulated IOC (``sim.ioc``) serves exactly these names and the ophyd devices
(``devices``) connect to exactly these names. Every entry is a *device prefix* (or, for single
motor records, the record name); the suffixes below it (``X``, ``Open_RBV``, ``Current`` ...)
are fixed by the device classes and listed in ``docs/pvs.md``. The full name of an entry is
``prefix + entry``; a real beamline profile may set ``prefix = ""`` and give absolute names.

A TOML profile carries the names in an ``[instrument.pvs]`` table, for example::

    [instrument.pvs]
    prefix = "BL20XU:TALBOT:"
    rotation = "SMP:ROT"
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

#: Characters allowed in a PV name (EPICS record names plus the ':' separators).
_PV_CHARS = re.compile(r"^[A-Za-z0-9_:\-\[\]<>;.{}$]*$")

#: Motor records under each stage prefix: (stage entry, record suffix, role).
MOTOR_RECORDS: tuple[tuple[str, str, str], ...] = (
    ("g0", "X", "g0_x"),
    ("g0", "Z", "g0_z"),
    ("g2", "X", "g2_x"),
    ("g2", "ROLL", "g2_roll"),
    ("g2", "Z", "g2_z"),
    ("rotation", "", "rotation"),
    ("sample", "X", "sample_x"),
)


class PVNameError(ValueError):
    """A PV-name profile is invalid; the message names the entry."""


def _pattern_on_every_name(schema: dict[str, Any]) -> None:
    """The JSON Schema states the character check of every entry."""
    for prop in schema.get("properties", {}).values():
        prop["pattern"] = _PV_CHARS.pattern


class PVNames(BaseModel):
    """Device prefixes of the Talbot beamline (full name = ``prefix`` + entry)."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_pattern_on_every_name)

    prefix: str = Field(default="TALBOT:", description="prepended to every entry below")
    g0: str = Field(default="G0:", description="G0 source-grating stage: motors X (um), Z (mm)")
    g2: str = Field(
        default="G2:", description="G2 analyser stage: piezo X (um), ROLL (mrad), Z (mm)"
    )
    rotation: str = Field(default="ROT", description="rotation stage motor record (deg)")
    sample: str = Field(default="SMP:", description="sample stage: motor X (mm, in/out)")
    shutter: str = Field(default="SHTR:", description="beam shutter: Open, Open_RBV")
    beam: str = Field(default="BEAM:", description="beam monitor: Current (mA)")
    tags: str = Field(default="TAG:", description="scan-tag PVs written before each trigger")
    status: str = Field(default="STATUS:", description="operator status PVs")
    sequencer: str = Field(
        default="SEQ:", description="hardware phase-step sequencer (G2 piezo steps per frame)"
    )
    faults: str = Field(default="FAULT:", description="fault-injection PVs (simulator only)")
    detector: str = Field(default="DET:", description="area detector (cam1:, HDF1:)")

    @field_validator("*")
    @classmethod
    def _check_chars(cls, value: str) -> str:
        if not _PV_CHARS.match(value):
            raise ValueError(f"PV name part {value!r} has characters not allowed in a PV name")
        return value

    def full(self, entry: str, suffix: str = "") -> str:
        """Full PV name of ``entry`` (a field name of this model) plus an optional suffix."""
        if entry == "prefix" or entry not in type(self).model_fields:
            raise PVNameError(f"entry must be one of {self.entries()}, got {entry!r}")
        return f"{self.prefix}{getattr(self, entry)}{suffix}"

    @classmethod
    def entries(cls) -> list[str]:
        """Names of the device entries (every field except ``prefix``)."""
        return [name for name in cls.model_fields if name != "prefix"]

    def with_prefix(self, prefix: str) -> PVNames:
        """A copy with another global prefix."""
        try:
            return PVNames.model_validate({**self.model_dump(), "prefix": prefix})
        except ValidationError as exc:
            raise PVNameError(f"prefix: {exc}") from exc

    def motor_records(self) -> dict[str, str]:
        """Role (``g0_x``, ``g2_x``, ``rotation`` ...) -> full motor record name."""
        return {role: self.full(entry, suffix) for entry, suffix, role in MOTOR_RECORDS}

    def device_prefixes(self) -> dict[str, str]:
        """Entry -> full device prefix (or record name)."""
        return {entry: self.full(entry) for entry in self.entries()}


#: The simulated beamline's names (what ``python -m sim.ioc`` serves by default).
SIM_PVNAMES = PVNames()
