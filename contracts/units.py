"""Physical constants and conversions shared by every package (SI units)."""

from __future__ import annotations

#: Planck constant times speed of light, in keV·m (CODATA 2018: 12.398419843320026 keV·Å).
HC_KEV_M = 12.398419843320026e-10


def wavelength_m(energy_kev: float) -> float:
    """Photon wavelength [m] for an energy [keV]; ValueError unless the energy is > 0."""
    if not energy_kev > 0:
        raise ValueError(f"energy_kev must be > 0, got {energy_kev!r}")
    return HC_KEV_M / energy_kev
