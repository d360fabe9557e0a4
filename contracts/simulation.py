"""The simulation: the simulator's own knobs (phantom, detector response, fringe imperfections).

These never cross a process boundary: the scan file and the frame stream carry the instrument
and the scan plan only. Lengths in metres, counts in detected electrons.
"""

from __future__ import annotations

from pydantic import Field

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


class Fringes(Frozen):
    """The empty interferometer's fringe pattern and the stepping imperfections."""

    visibility: float = Field(gt=0, lt=1, description="mean first-harmonic visibility V0")
    visibility_spread: float = Field(default=0.0, ge=0, description="rms spread of the V0 map")
    moire_fringes: float = Field(default=0.0, description="moire fringes across the field (x)")
    harmonics: dict[int, float] = Field(
        default_factory=dict, description="extra stepping-curve harmonics {n: amplitude / V0}"
    )
    step_error_m: float = Field(default=0.0, ge=0, description="rms actual-vs-encoder error [m]")
    encoder_noise_m: float = Field(default=0.0, ge=0, description="rms encoder read noise [m]")
    dose_fluctuation: float = Field(default=0.0, ge=0, description="relative rms dose per frame")
    reference_drift_rad_per_s: float = Field(default=0.0, description="reference phase drift")


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
