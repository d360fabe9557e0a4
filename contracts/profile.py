"""TOML profiles: an instrument, optional plan defaults and, for the simulator, a simulation.

A profile file has up to three tables, and ``base`` to start from a built-in profile::

    base = "tiny"                 # optional: start from a built-in profile
    [instrument]                  # contracts.instrument.Instrument
    name = "bl20xu"
    [instrument.geometry]
    energy_kev = 20.0
    [instrument.pvs]              # Channel Access names (contracts.pvnames.PVNames)
    prefix = "BL20XU:TALBOT:"
    [plan]                        # default contracts.scanplan.ScanPlan (steps, angles, ...)
    steps = 8
    [simulation.phantom]          # the simulator's knobs (contracts.simulation.Simulation)
    rod_diameter_m = 300e-6

Tables override the base field by field. The built-in profiles are ``tiny`` (CI-sized) and
``full`` (a beamline-sized scan): ``contracts/profiles/*.toml``.
"""

from __future__ import annotations

import json
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from contracts.base import ConfigError, Frozen, first_error
from contracts.instrument import Instrument
from contracts.scanplan import ScanPlan
from contracts.simulation import Simulation

#: The built-in profiles, by name.
BUILTIN = ("tiny", "full")

#: Top-level tables of the profile layout before the instrument / plan / simulation split.
_OLD_TABLES = {
    "geometry": "[instrument.geometry]",
    "detector": "[instrument.detector] (shape) and [simulation.detector] (noise)",
    "interferometer": "[simulation.fringes]",
    "schedule": "[plan]",
    "phantom": "[simulation.phantom]",
    "pvs": "[instrument.pvs]",
}


class Profile(Frozen):
    """What a TOML profile holds."""

    instrument: Instrument
    plan: ScanPlan | None = Field(default=None, description="plan defaults")
    simulation: Simulation | None = Field(default=None, description="the simulator's knobs")

    @property
    def name(self) -> str:
        """The instrument's name."""
        return self.instrument.name

    def scan_plan(self) -> ScanPlan:
        """The plan defaults; ConfigError when the profile has none."""
        if self.plan is None:
            raise ConfigError(f"profile {self.name!r} has no [plan] table: give the scan plan")
        return self.plan

    def simulated(self) -> Simulation:
        """The simulation table; ConfigError when the profile has none."""
        if self.simulation is None:
            raise ConfigError(
                f"profile {self.name!r} has no [simulation] table: the simulator needs one"
            )
        return self.simulation


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` applied table by table (nested dicts merge, values replace)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _read(text: str, where: str) -> dict[str, Any]:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"profile {where}: {exc}") from exc
    for table, new in _OLD_TABLES.items():
        if table in data:
            raise ConfigError(
                f"profile {where}: the top-level table [{table}] is from the old profile layout; "
                f"it is now {new} (docs/operating.md, 'Profiles')"
            )
    return data


def _builtin_data(name: str) -> dict[str, Any]:
    if name not in BUILTIN:
        raise ConfigError(f"profile must be one of {list(BUILTIN)} or a .toml file, got {name!r}")
    text = resources.files("contracts").joinpath(f"profiles/{name}.toml").read_text()
    return _read(text, name)


def _validate(data: dict[str, Any], where: str) -> Profile:
    try:  # strict, as TOML has types: "8" is not 8 (JSON, so that arrays may become tuples)
        return Profile.model_validate_json(json.dumps(data), strict=True)
    except TypeError as exc:  # a TOML date or time
        raise ConfigError(f"profile {where}: {exc}") from None
    except ValidationError as exc:
        field, reason = first_error(exc)
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"profile {where}: {field}: {reason}{more}") from None


def builtin_profile(name: str) -> Profile:
    """A built-in profile by name (``tiny`` or ``full``)."""
    return _validate(_builtin_data(name), name)


def load_profile(path: str | Path) -> Profile:
    """Read a TOML profile file (``base`` = a built-in profile it overrides, default none)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"profile {path}: {exc.strerror or exc}") from None
    data = _read(text, str(path))
    base = data.pop("base", None)
    if base is not None:
        if not isinstance(base, str) or base not in BUILTIN:
            raise ConfigError(f"profile {path}: base must be one of {list(BUILTIN)}, got {base!r}")
        data = merge(_builtin_data(base), data)
    return _validate(data, str(path))


def resolve_profile(profile: str | Path | None) -> Profile:
    """A built-in profile name, a TOML profile path, or None (``tiny``)."""
    if profile is None:
        return builtin_profile("tiny")
    text = str(profile)
    if text in BUILTIN:
        return builtin_profile(text)
    if text.endswith(".toml") or Path(text).exists():
        return load_profile(text)
    raise ConfigError(f"profile must be one of {list(BUILTIN)} or a .toml file, got {text!r}")
