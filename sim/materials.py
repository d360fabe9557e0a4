"""Refractive-index decrement delta and absorption index beta of the phantom's materials.

Values come from the Chantler tables through ``xraydb.xray_delta_beta`` (n = 1 - delta + i beta in
this project's sign convention; xraydb writes ``1 - delta - i beta`` for the same magnitudes).
Mixtures are by volume fraction, which is exact for delta and beta because both are linear in the
atomic number density (docs/physics.md). The bone model (42 % hydroxyapatite, 36 %
collagen, 22 % water by volume) and the mineral-depleted halo (part of the hydroxyapatite replaced
by water) follow Nango et al., Bone 84, 279 (2016) as modelled in docs/physics.md.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import xraydb

from contracts.simulation import Phantom

#: (chemical formula, density g/cm^3) of the named materials.
HYDROXYAPATITE = ("Ca5(PO4)3OH", 3.16)
#: Collagen-like organic matrix (type I collagen repeat, approximate stoichiometry).
COLLAGEN = ("C57H91N19O22", 1.35)
WATER = ("H2O", 1.0)
#: Dry air at sea level (atom fractions of N2, O2, Ar).
AIR = ("N1.562O0.42Ar0.0093", 0.001205)
#: ICRU-44 soft tissue (mass fractions H 10.2, C 14.3, N 3.4, O 70.8, minor Na P S Cl K).
SOFT_TISSUE = ("H10.12C1.19N0.243O4.425Na0.0087P0.0065S0.0094Cl0.0056K0.0077", 1.06)


@dataclass(frozen=True)
class Material:
    """Complex refractive index n = 1 - delta + i beta at one energy (both dimensionless)."""

    delta: float
    beta: float

    def mu_per_m(self, wavelength_m: float) -> float:
        """Linear attenuation coefficient mu = 4 pi beta / lambda [1/m] for lambda in metres."""
        if not wavelength_m > 0:
            raise ValueError(f"wavelength_m must be > 0, got {wavelength_m!r}")
        return 4.0 * math.pi * self.beta / wavelength_m

    def __sub__(self, other: Material) -> Material:
        return Material(self.delta - other.delta, self.beta - other.beta)


def from_formula(formula: str, density_g_cc: float, energy_kev: float) -> Material:
    """delta and beta of a compound from its formula and density [g/cm^3] at ``energy_kev``."""
    if not density_g_cc > 0:
        raise ValueError(f"density_g_cc must be > 0, got {density_g_cc!r}")
    if not energy_kev > 0:
        raise ValueError(f"energy_kev must be > 0, got {energy_kev!r}")
    delta, beta, _ = xraydb.xray_delta_beta(formula, density_g_cc, energy_kev * 1.0e3)
    return Material(float(delta), float(beta))


def mix(parts: Sequence[tuple[Material, float]]) -> Material:
    """Volume-fraction mixture sum_i f_i n_i; the fractions must be >= 0 and sum to 1."""
    if not parts:
        raise ValueError("parts must not be empty")
    fractions = [f for _, f in parts]
    if any(f < 0 for f in fractions):
        raise ValueError(f"parts fractions must be >= 0, got {fractions}")
    if abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"parts fractions must sum to 1, got {sum(fractions)!r}")
    return Material(
        delta=sum(m.delta * f for m, f in parts), beta=sum(m.beta * f for m, f in parts)
    )


@dataclass(frozen=True)
class BoneMaterials:
    """The materials of the bone phantom at one energy."""

    matrix: Material
    halo: Material
    water: Material
    air: Material
    soft_tissue: Material
    hydroxyapatite: Material
    collagen: Material


def bone_materials(phantom: Phantom, energy_kev: float) -> BoneMaterials:
    """Bone matrix, halo and fill materials for ``phantom`` fractions at ``energy_kev``.

    Matrix = f_HA HA + f_col collagen + (1 - f_HA - f_col) water by volume; the halo loses the
    fraction ``halo_mineral_loss`` of its hydroxyapatite, replaced by water.
    """
    f_ha = phantom.hydroxyapatite_fraction
    f_col = phantom.collagen_fraction
    f_water = 1.0 - f_ha - f_col
    if f_water < 0:
        raise ValueError(
            f"hydroxyapatite_fraction + collagen_fraction must be <= 1, got {f_ha + f_col!r}"
        )
    ha = from_formula(*HYDROXYAPATITE, energy_kev)
    col = from_formula(*COLLAGEN, energy_kev)
    water = from_formula(*WATER, energy_kev)
    matrix = mix([(ha, f_ha), (col, f_col), (water, f_water)])
    lost = f_ha * phantom.halo_mineral_loss
    halo = mix([(ha, f_ha - lost), (col, f_col), (water, f_water + lost)])
    return BoneMaterials(
        matrix=matrix,
        halo=halo,
        water=water,
        air=from_formula(*AIR, energy_kev),
        soft_tissue=from_formula(*SOFT_TISSUE, energy_kev),
        hydroxyapatite=ha,
        collagen=col,
    )
