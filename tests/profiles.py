"""Test helper: the built-in profiles with changed plan, simulation or detector fields.

Not a test module.
"""

from __future__ import annotations

from typing import Any

from contracts.profile import Profile, builtin_profile
from sim.scan import SimulatedScan, simulate_scan


def tiny(**plan: Any) -> Profile:
    """The tiny profile with ``plan`` fields replaced."""
    return with_plan(builtin_profile("tiny"), **plan)


def with_plan(profile: Profile, **fields: Any) -> Profile:
    """``profile`` with these ScanPlan fields replaced (validated)."""
    if not fields:
        return profile
    plan = profile.scan_plan().model_validate({**profile.scan_plan().model_dump(), **fields})
    return profile.model_copy(update={"plan": plan})


def with_simulation(profile: Profile, **tables: dict[str, Any] | Any) -> Profile:
    """``profile`` with fields of the simulation's tables replaced: ``detector={...}``,
    ``fringes={...}``, ``phantom={...}``, or a top-level field (``rotation_axis_offset_px=3``)."""
    data = profile.simulated().model_dump()
    for name, value in tables.items():
        data[name] = {**data[name], **value} if isinstance(value, dict) else value
    sim = profile.simulated().model_validate(data)
    return profile.model_copy(update={"simulation": sim})


def with_detector_shape(profile: Profile, rows: int, cols: int) -> Profile:
    """``profile`` with another detector size."""
    inst = profile.instrument
    det = inst.detector.model_validate({"shape": (rows, cols)})
    return profile.model_copy(update={"instrument": inst.model_copy(update={"detector": det})})


def simulate(profile: Profile, seed: int = 0, noise: bool = True) -> SimulatedScan:
    """``sim.scan.simulate_scan`` of a profile."""
    return simulate_scan(
        profile.instrument, profile.scan_plan(), profile.simulated(), seed=seed, noise=noise
    )
