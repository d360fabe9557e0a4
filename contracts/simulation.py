"""The simulation: the simulator's own knobs (phantom, detector response, fringe imperfections).

These never cross a process boundary: the scan file and the frame stream carry the instrument
and the scan plan only. Lengths in metres, counts in detected electrons.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from contracts.base import Frozen


class Phantom(Frozen):
    """Analytic bone phantom: a rod with osteocyte lacunae and canaliculi in mineral-depleted
    halos (docs/physics.md)."""

    rod_diameter_m: float = Field(gt=0)
    lacunae: int = Field(default=1, ge=0)
    lacuna_semi_axes_m: tuple[float, float, float] = (10e-6, 4e-6, 2.5e-6)
    canaliculi_per_lacuna: tuple[int, int] = (8, 12)
    canaliculus_diameter_m: tuple[float, float] = (0.1e-6, 0.4e-6)
    canaliculus_length_m: tuple[float, float] = (5e-6, 30e-6)
    halo_factor: tuple[float, float] = (10.0, 30.0)
    halo_diameter_m: float | None = Field(
        default=None, gt=0, description="fixed halo diameter; overrides halo_factor when set"
    )
    halo_mineral_loss: float = Field(default=0.25, ge=0, le=1)
    hydroxyapatite_fraction: float = Field(default=0.42, gt=0, lt=1)
    collagen_fraction: float = Field(default=0.36, gt=0, lt=1)
    vascular_canal_radius_m: float | None = Field(default=None, gt=0)
    canaliculus_darkfield_per_m: float = Field(
        default=2.0e3, ge=0, description="linear diffusion coefficient of a canaliculus [1/m]"
    )
    supersample: int = Field(default=4, ge=1, le=16)


class DetectorResponse(Frozen):
    """How the simulated camera turns X-rays into ADU (counts are detected electrons)."""

    incident_counts: float = Field(
        gt=0, description="I0: detected e-/pixel in open beam per reference exposure"
    )
    reference_exposure_s: float = Field(
        default=0.05, gt=0, description="exposure at which incident_counts are detected [s]"
    )
    psf_sigma_px: float = Field(ge=0, description="Gaussian PSF sigma [px]")
    read_noise_e: float = Field(ge=0, description="Gaussian read noise [e- rms]")
    gain_adu_per_e: float = Field(default=1.0, gt=0)
    dark_offset_adu: float = Field(default=100.0, ge=0, description="dark level [ADU]")


class Gratings(Frozen):
    """The real gratings behind the stepping curve's shape (``sim.gratings``, docs/physics.md).

    Only the ratios of the curve's higher harmonics to its first come from here; the first
    harmonic's visibility stays ``Fringes.visibility``. Fractions are of the grating's period.
    The defaults are a typical synchrotron interferometer: 50 % duty gratings; a gold analyser
    whose lines pass 4 % of the intensity (10 um of gold at 12.4 keV, attenuation length 3.1 um,
    an aspect ratio of 5-20 at a 4-1 um pitch, which LIGA reaches), with edges sloped over 4 % of
    a period (side walls off vertical, rounded tops); the horizontal source of a low-emittance
    storage ring (20 um rms) 36 m before G1.
    """

    g1_duty: float = Field(
        default=0.5, gt=0, lt=1, description="phase-shifting fraction of the G1 period [1]"
    )
    g2_duty: float = Field(
        default=0.5, gt=0, lt=1, description="open (transmitting) fraction of the G2 period [1]"
    )
    g2_transmission: float = Field(
        default=0.04, ge=0, le=1, description="intensity transmission of the G2 absorber lines [1]"
    )
    g2_edge: float = Field(
        default=0.04,
        ge=0,
        lt=0.5,
        description="width of each sloped G2 absorber edge (trapezoid) [fraction of the period]",
    )
    source_sigma_m: float = Field(
        default=20e-6, ge=0, description="rms source size along the stepping direction (x) [m]"
    )
    source_distance_m: float = Field(
        default=36.0,
        gt=0,
        description="source to G1 distance l for the source blur [m] (a cone-beam geometry's "
        "own source_distance_m takes its place)",
    )

    @model_validator(mode="after")
    def _check_edge(self) -> Gratings:
        if self.g2_edge > min(self.g2_duty, 1.0 - self.g2_duty):
            raise ValueError(
                f"g2_edge={self.g2_edge!r} must not exceed the open or the absorbing part of the "
                f"period, min(g2_duty, 1 - g2_duty) = {min(self.g2_duty, 1.0 - self.g2_duty):g}"
            )
        return self


class Fringes(Frozen):
    """The empty interferometer's fringe pattern and the stepping imperfections.

    ``curve`` is the stepping curve's shape: ``"gratings"`` (default) that of the real
    ``gratings`` (binary phase G1, trapezoidal partly transmitting G2, source blur); or
    ``"sinusoidal"``, a pure sinusoid plus the explicit ``harmonics``.
    """

    visibility: float = Field(gt=0, lt=1, description="mean first-harmonic visibility V0")
    visibility_spread: float = Field(default=0.0, ge=0, description="rms spread of the V0 map")
    moire_fringes: float = Field(default=0.0, description="moire fringes across the field (x)")
    curve: Literal["gratings", "sinusoidal"] = Field(
        default="gratings",
        description="stepping-curve shape: 'gratings' (from the gratings model) or 'sinusoidal' "
        "(a sinusoid plus the explicit harmonics)",
    )
    gratings: Gratings = Field(
        default_factory=Gratings, description="the gratings that shape the curve (curve='gratings')"
    )
    harmonics: dict[int, float] = Field(
        default_factory=dict,
        description="extra stepping-curve harmonics {n: amplitude / V0} (curve='sinusoidal' only)",
    )
    step_error_m: float = Field(default=0.0, ge=0, description="rms actual-vs-encoder error [m]")
    encoder_noise_m: float = Field(default=0.0, ge=0, description="rms encoder read noise [m]")
    dose_fluctuation: float = Field(default=0.0, ge=0, description="relative rms dose per frame")
    reference_drift_rad_per_s: float = Field(default=0.0, description="reference phase drift")

    @model_validator(mode="after")
    def _check_harmonics(self) -> Fringes:
        if self.harmonics and self.curve == "gratings":
            raise ValueError(
                "harmonics must be empty with curve='gratings' (the gratings model gives the "
                "curve's harmonics): set curve = 'sinusoidal' to give them explicitly"
            )
        return self


class Simulation(Frozen):
    """Everything the simulator needs beyond the instrument."""

    phantom: Phantom
    detector: DetectorResponse
    fringes: Fringes
    rotation_axis_offset_px: float | None = Field(
        default=None,
        description="where the simulated rotation axis really is, minus the detector centre "
        "[px]; None: where the instrument's calibration says",
    )

    def axis_offset_px(self, calibrated_px: float) -> float:
        """The simulated axis [px from the detector centre]: this override or the calibration."""
        return (
            calibrated_px if self.rotation_axis_offset_px is None else self.rotation_axis_offset_px
        )
