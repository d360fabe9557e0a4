"""Argument checks of the plans: each raises ValueError naming the argument, before any message."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from contracts.frames import CA_STRING_MAX  # the ScanUid tag PV is a CA string


def check_positive(name: str, value: float) -> float:
    """``value`` as float; ValueError naming ``name`` unless it is finite and > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number > 0, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return v


def check_count(name: str, value: int, minimum: int) -> int:
    """``value`` as int; ValueError naming ``name`` unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


def check_finite(name: str, value: float | None) -> None:
    """ValueError naming ``name`` unless ``value`` is None or finite."""
    if value is not None and not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}")


def check_backlash(backlash_um: float | None) -> float | None:
    """``backlash_um`` as float (None stays None); ValueError unless it is finite and >= 0."""
    if backlash_um is None:
        return None
    try:
        v = float(backlash_um)
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and v >= 0):
        raise ValueError(f"backlash_um must be >= 0, got {backlash_um!r}")
    return v


def check_scan_uid(scan_uid: str | None) -> None:
    """ValueError unless ``scan_uid`` is None or fits the ScanUid tag PV."""
    if scan_uid is not None and len(scan_uid) > CA_STRING_MAX:
        raise ValueError(f"scan_uid must have at most {CA_STRING_MAX} characters, got {scan_uid!r}")


def check_detectors(detectors: Sequence[Any], *, required: bool = False) -> list[Any]:
    """The detectors as a list; ValueError unless each can be triggered and read (and, when
    ``required``, unless there is at least one)."""
    dets = list(detectors)
    for det in dets:
        if not (hasattr(det, "trigger") and hasattr(det, "read")):
            raise ValueError(f"detectors must be triggerable readables, got {det!r}")
    if required and not dets:
        raise ValueError("detectors must name at least one detector")
    return dets


def check_stepping(stepping: str, grating: str, detectors: Sequence[Any]) -> None:
    """ValueError naming ``stepping`` unless it is possible with this grating and detectors."""
    if stepping == "software":
        return
    if stepping != "hardware":
        raise ValueError(f"stepping must be 'software' or 'hardware', got {stepping!r}")
    if grating != "g2":
        raise ValueError("stepping='hardware' steps the G2 piezo; use stepping='software' for G0")
    if len(detectors) != 1 or not all(
        hasattr(d, name) for d in detectors for name in ("acquire", "reference_frame", "cam")
    ):
        raise ValueError(
            "stepping='hardware' needs exactly one area detector whose exposures drive the "
            f"sequencer (got {[getattr(d, 'name', d) for d in detectors]}); "
            "use stepping='software'"
        )
