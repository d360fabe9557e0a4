"""The one source of truth for interferometer geometry, acquisition schedule and presets.

Everything here is a contract (DESIGN §2): it imports nothing from the other Talbot packages.
Lengths are in metres, energies in keV, angles in degrees unless a name says otherwise.

Geometry follows reference/physics.md §2.2-2.3: fractional Talbot distances
``D_n = n p1^2 / (nu^2 2 lambda)`` (n odd, nu = 1 for a pi/2 and 2 for a pi phase grating),
analyser pitch ``p2 = M_cone p1 / nu`` and shear ``xi = lambda d / p2`` (Weitkamp et al.,
Opt. Express 13, 6296 (2005)).
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

#: Planck constant times speed of light, in keV·m (CODATA 2018: 12.398419843320026 keV·Å).
HC_KEV_M = 12.398419843320026e-10

#: How far (relative) the G1-G2 distance may sit from the chosen fractional Talbot distance.
TALBOT_DISTANCE_TOLERANCE = 0.05

#: How far (relative) the G2 pitch may differ from the fringe period at G2.
PITCH_TOLERANCE = 0.01


class ConfigError(ValueError):
    """A configuration value is impossible; the message names the parameter."""


def wavelength_m(energy_kev: float) -> float:
    """Photon wavelength in metres for an energy in keV."""
    if not energy_kev > 0:
        raise ConfigError(f"energy_kev must be > 0, got {energy_kev!r}")
    return HC_KEV_M / energy_kev


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Geometry(_Frozen):
    """Interferometer geometry in physical units (object-space shear and pixel).

    Axis convention: the grating lines are vertical (along detector rows' direction, parallel to the
    rotation axis), so the shear and the stepping direction are horizontal (detector x).
    """

    energy_kev: float = Field(gt=0, description="photon energy [keV]")
    g1_pitch_m: float = Field(gt=0, description="G1 (phase grating) pitch p1 [m]")
    g1_phase: Literal["pi/2", "pi"] = Field(description="G1 phase shift")
    g2_pitch_m: float = Field(gt=0, description="G2 (analyser) pitch p2 [m]")
    distance_m: float = Field(gt=0, description="G1-G2 distance d [m]")
    talbot_order: int = Field(ge=1, description="odd fractional Talbot order n")
    pixel_size_m: float = Field(gt=0, description="effective (object-space) pixel size [m]")
    magnification: float = Field(
        default=1.0, gt=0, description="X-ray magnification of an objective before the gratings"
    )
    source_distance_m: float | None = Field(
        default=None, gt=0, description="source (or G0) to G1 distance l [m]; None = plane wave"
    )
    g0_pitch_m: float | None = Field(
        default=None, gt=0, description="source grating pitch p0 [m] (Talbot-Lau); None = no G0"
    )

    @model_validator(mode="after")
    def _check_physics(self) -> Geometry:
        if self.talbot_order % 2 != 1:
            raise ValueError(f"talbot_order must be odd (1, 3, 5, ...), got {self.talbot_order}")
        if self.source_distance_m is not None and self.source_distance_m <= self.design_distance_m:
            raise ValueError(
                f"source_distance_m={self.source_distance_m} must exceed the plane-wave fractional "
                f"Talbot distance {self.design_distance_m:.4g} m"
            )
        expected_p2 = self.cone_magnification * self.g1_pitch_m / self.nu
        if abs(self.g2_pitch_m - expected_p2) > PITCH_TOLERANCE * expected_p2:
            raise ValueError(
                f"g2_pitch_m={self.g2_pitch_m:.6g} does not match the fringe period "
                f"{expected_p2:.6g} m at G2 (p2 = M p1/nu for a {self.g1_phase} grating)"
            )
        target = self.talbot_distance_m
        if abs(self.distance_m - target) > TALBOT_DISTANCE_TOLERANCE * target:
            raise ValueError(
                f"distance_m={self.distance_m:.6g} is far from the fractional Talbot distance "
                f"{target:.6g} m of order {self.talbot_order} "
                f"(tolerance {TALBOT_DISTANCE_TOLERANCE:.0%})"
            )
        if self.g0_pitch_m is not None:
            if self.source_distance_m is None:
                raise ValueError("g0_pitch_m needs source_distance_m (the G0-G1 distance)")
            expected_p0 = self.g2_pitch_m * self.source_distance_m / self.distance_m
            if abs(self.g0_pitch_m - expected_p0) > PITCH_TOLERANCE * expected_p0:
                raise ValueError(
                    f"g0_pitch_m={self.g0_pitch_m:.6g} does not satisfy p0 = p2 l/d "
                    f"= {expected_p0:.6g} m"
                )
        return self

    @property
    def wavelength_m(self) -> float:
        """Wavelength lambda [m]."""
        return wavelength_m(self.energy_kev)

    @property
    def wavenumber_per_m(self) -> float:
        """Wavenumber k = 2 pi / lambda [rad/m]."""
        return 2.0 * math.pi / self.wavelength_m

    @property
    def nu(self) -> int:
        """1 for a pi/2 grating, 2 for a pi grating."""
        return 1 if self.g1_phase == "pi/2" else 2

    @property
    def design_distance_m(self) -> float:
        """Plane-wave fractional Talbot distance D_n = n p1^2 / (nu^2 2 lambda) [m]."""
        return self.talbot_order * self.g1_pitch_m**2 / (self.nu**2 * 2.0 * self.wavelength_m)

    @property
    def talbot_distance_m(self) -> float:
        """Fractional Talbot distance for this beam: l D_n / (l - D_n) in a cone beam [m]."""
        dn = self.design_distance_m
        if self.source_distance_m is None:
            return dn
        return self.source_distance_m * dn / (self.source_distance_m - dn)

    @property
    def cone_magnification(self) -> float:
        """Fringe magnification (l + d)/l at G2; 1 for a plane wave."""
        if self.source_distance_m is None:
            return 1.0
        return (self.source_distance_m + self.distance_m) / self.source_distance_m

    @property
    def shear_m(self) -> float:
        """Object-space shear xi = lambda d / (p2 M_obj) [m]."""
        return self.wavelength_m * self.distance_m / self.g2_pitch_m / self.magnification

    @property
    def shear_px(self) -> float:
        """Shear in detector pixels."""
        return self.shear_m / self.pixel_size_m


class Detector(_Frozen):
    """Detector format and noise model (counts are detected electrons, gain converts to ADU)."""

    shape: tuple[int, int] = Field(description="(rows, columns) in pixels")
    incident_counts: float = Field(gt=0, description="I0, detected e-/pixel/frame in open beam")
    psf_sigma_px: float = Field(ge=0, description="Gaussian PSF sigma [px]")
    read_noise_e: float = Field(ge=0, description="Gaussian read noise [e- rms]")
    gain_adu_per_e: float = Field(default=1.0, gt=0)
    dark_offset_adu: float = Field(default=100.0, ge=0, description="dark level [ADU]")
    exposure_s: float = Field(default=0.05, gt=0, description="exposure time [s]")

    @model_validator(mode="after")
    def _check_shape(self) -> Detector:
        rows, cols = self.shape
        if rows < 1 or cols < 8:
            raise ValueError(f"shape must be at least (1, 8) pixels, got {self.shape}")
        return self


class Interferometer(_Frozen):
    """Fringe pattern of the empty interferometer (reference)."""

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


#: One entry of the acquisition order: ("reference", series index) or ("projection", angle index).
SeriesKey = tuple[Literal["reference", "projection"], int]


def acquisition_order(angles: int, reference_every: int) -> list[SeriesKey]:
    """Series in acquisition order: a reference series at the start, after every
    ``reference_every`` angles and at the end (never two in a row). The plans acquire, the
    simulator renders and the reconstructor expects this order."""
    for name, value in (("angles", angles), ("reference_every", reference_every)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if reference_every > angles:
        raise ValueError(f"reference_every={reference_every} is larger than angles={angles}")
    order: list[SeriesKey] = [("reference", 0)]
    n_ref = 1
    for i in range(angles):
        order.append(("projection", i))
        if (i + 1) % reference_every == 0:
            order.append(("reference", n_ref))
            n_ref += 1
    if order[-1][0] != "reference":
        order.append(("reference", n_ref))
    return order


class Schedule(_Frozen):
    """Acquisition schedule of a phase-stepping CT scan."""

    steps: int = Field(ge=3, description="phase steps M per series")
    periods: int = Field(default=1, ge=1, description="grating periods covered by the M steps")
    angles: int = Field(ge=1, description="number of projection angles")
    angular_range_deg: float = Field(default=180.0, gt=0, le=360.0)
    reference_every: int = Field(ge=1, description="a reference series every N angles")
    darks: int = Field(default=5, ge=0, description="dark frames at the start")

    @model_validator(mode="after")
    def _check(self) -> Schedule:
        if self.reference_every > self.angles:
            raise ValueError(
                f"reference_every={self.reference_every} is larger than angles={self.angles}"
            )
        if self.steps % self.periods == 0 and self.periods > 1:
            raise ValueError(
                f"steps={self.steps} over periods={self.periods} repeats the same phases"
            )
        return self

    def angles_deg(self) -> list[float]:
        """Projection angles [deg], equally spaced over the range, end point excluded."""
        return [i * self.angular_range_deg / self.angles for i in range(self.angles)]


class Phantom(_Frozen):
    """Analytic bone phantom parameters (reference/physics.md §6.2)."""

    rod_diameter_m: float = Field(gt=0)
    lacunae: int = Field(default=1, ge=0)
    lacuna_semi_axes_m: tuple[float, float, float] = (10e-6, 4e-6, 2.5e-6)
    canaliculi_per_lacuna: tuple[int, int] = (8, 12)
    canaliculus_diameter_m: tuple[float, float] = (0.1e-6, 0.4e-6)
    canaliculus_length_m: tuple[float, float] = (5e-6, 30e-6)
    halo_factor: tuple[float, float] = (10.0, 30.0)
    halo_diameter_m: float | None = Field(
        default=None, description="fixed halo diameter; overrides halo_factor when set"
    )
    halo_mineral_loss: float = Field(default=0.25, ge=0, le=1)
    hydroxyapatite_fraction: float = Field(default=0.42, gt=0, lt=1)
    collagen_fraction: float = Field(default=0.36, gt=0, lt=1)
    vascular_canal_radius_m: float | None = None
    canaliculus_darkfield_per_m: float = Field(
        default=2.0e3, ge=0, description="linear diffusion coefficient of a canaliculus [1/m]"
    )
    supersample: int = Field(default=4, ge=1, le=16)


class Preset(_Frozen):
    """A complete simulated instrument and scan."""

    name: str
    geometry: Geometry
    detector: Detector
    interferometer: Interferometer
    schedule: Schedule
    phantom: Phantom
    rotation_center_offset_px: float = Field(
        default=0.0, description="rotation axis minus detector centre (cols-1)/2 [px]"
    )
    sample_out_mm: float | None = Field(
        default=None,
        gt=0,
        description="sample x travel out of the beam for reference series [mm]; "
        "default: field-of-view width + sample diameter",
    )

    def sample_out_offset_mm(self) -> float:
        """How far [mm] the sample stage moves (in x) to take the sample out of the beam.

        ``sample_out_mm`` when set; otherwise the field-of-view width (columns x object-space
        pixel) plus the sample (rod) diameter: twice the distance at which the rod just clears
        the field, so a centred sample is out with a margin and the stage travels no further
        than needed (tiny: 0.088 mm instead of a fixed 10 mm, 5 ms instead of 0.5 s each way).
        """
        if self.sample_out_mm is not None:
            return self.sample_out_mm
        fov_m = self.detector.shape[1] * self.geometry.pixel_size_m
        return (fov_m + self.phantom.rod_diameter_m) * 1e3


def _tiny() -> Preset:
    energy = 12.4
    lam = wavelength_m(energy)
    p1 = 2.0e-6  # pi grating: p2 = p1/2 = 1 um, D1 = p1^2/(8 lambda) = 5.0 mm, xi = 0.5 um
    return Preset(
        name="tiny",
        geometry=Geometry(
            energy_kev=energy,
            g1_pitch_m=p1,
            g1_phase="pi",
            g2_pitch_m=p1 / 2,
            distance_m=p1**2 / (8 * lam),
            talbot_order=1,
            pixel_size_m=0.5e-6,
        ),
        detector=Detector(
            shape=(32, 96),
            incident_counts=2.0e4,
            psf_sigma_px=0.7,
            read_noise_e=2.0,
        ),
        interferometer=Interferometer(
            visibility=0.35,
            visibility_spread=0.03,
            moire_fringes=2.0,
            step_error_m=0.02 / (2 * math.pi) * 1.0e-6,
            encoder_noise_m=2.0e-9,
        ),
        schedule=Schedule(steps=5, angles=90, reference_every=45, darks=5),
        phantom=Phantom(
            rod_diameter_m=40e-6,
            canaliculi_per_lacuna=(8, 12),
            canaliculus_diameter_m=(0.3e-6, 0.3e-6),
            canaliculus_length_m=(6e-6, 14e-6),
            halo_diameter_m=3.0e-6,
        ),
    )


def _full() -> Preset:
    energy = 12.4
    lam = wavelength_m(energy)
    p1 = 4.0e-6  # pi/2 grating in image space, X-ray microscope magnification 20: xi_obj = 0.1 um
    return Preset(
        name="full",
        geometry=Geometry(
            energy_kev=energy,
            g1_pitch_m=p1,
            g1_phase="pi/2",
            g2_pitch_m=p1,
            distance_m=p1**2 / (2 * lam),
            talbot_order=1,
            pixel_size_m=0.2e-6,
            magnification=20.0,
        ),
        detector=Detector(
            shape=(2048, 2048),
            incident_counts=1.0e4,
            psf_sigma_px=0.7,
            read_noise_e=1.6,
            exposure_s=0.5,
        ),
        interferometer=Interferometer(
            visibility=0.3,
            visibility_spread=0.03,
            moire_fringes=3.0,
            step_error_m=7.5e-9,
            encoder_noise_m=2.0e-9,
            dose_fluctuation=0.003,
            reference_drift_rad_per_s=0.05 / 3600.0,
        ),
        schedule=Schedule(steps=5, angles=1800, reference_every=100, darks=20),
        phantom=Phantom(
            rod_diameter_m=300e-6,
            lacunae=40,
            vascular_canal_radius_m=10e-6,
            supersample=2,
        ),
    )


PRESETS = {"tiny": _tiny, "full": _full}


def preset(name: str) -> Preset:
    """Return a built-in preset by name ('tiny' or 'full')."""
    try:
        factory = PRESETS[name]
    except KeyError:
        raise ConfigError(f"preset must be one of {sorted(PRESETS)}, got {name!r}") from None
    return factory()


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_profile(path: str | Path) -> Preset:
    """Load a TOML profile: ``base = "tiny"`` plus tables overriding any preset field.

    A ``[pvs]`` table (PV names, read by ``beamline.pvnames.load_pvnames``) is ignored here.
    """
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"profile {path}: {exc}") from exc
    base_name = data.pop("base", "tiny")
    data.pop("pvs", None)  # PV names: beamline.pvnames.load_pvnames reads the same file
    base = preset(base_name).model_dump()
    try:
        return Preset.model_validate(_merge(base, data))
    except ValidationError as exc:
        raise ConfigError(f"profile {path}: {exc}") from exc
