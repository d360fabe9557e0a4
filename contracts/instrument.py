"""The instrument: what a beamline profile describes (geometry, detector, PV names).

Lengths are in metres, energies in keV, angles in degrees unless a name says otherwise.
Geometry follows the fractional Talbot distances ``D_n = n p1^2 / (nu^2 2 lambda)`` (n odd,
nu = 1 for a pi/2 and 2 for a pi phase grating), the analyser pitch ``p2 = M_cone p1 / nu`` and
the shear ``xi = lambda d / p2`` (Weitkamp et al., Opt. Express 13, 6296 (2005)).

Checks tell the impossible from the unusual: a value no interferometer can have raises a
``ValueError`` naming the field; a value that works but is far from the design (a G1-G2
distance away from the fractional Talbot distance) gives a :class:`GeometryWarning`. The
reconstruction needs only the shear ``lambda d / p2`` and the pixel.
"""

from __future__ import annotations

import math
import warnings
from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidationInfo, model_validator

from contracts.base import Frozen
from contracts.pvnames import PVNames
from contracts.units import wavelength_m

#: How far (relative) the G1-G2 distance may sit from the fractional Talbot distance before
#: the geometry warns (the visibility falls off; the retrieval still works).
TALBOT_DISTANCE_TOLERANCE = 0.05

#: How far (relative) the G2 pitch may differ from the fringe period at G2 (beyond it the moire
#: fringes are finer than a pixel: no phase stepping is possible).
PITCH_TOLERANCE = 0.01

#: G1 phase shifts the fringe model knows [deg]: pi/2 and pi gratings.
G1_PHASES_DEG = (90.0, 180.0)


class GeometryWarning(UserWarning):
    """A geometry that works but is far from the interferometer's design."""


def _distance_optional(schema: dict[str, Any]) -> None:
    """``distance_m`` may be left out (it is then the fractional Talbot distance)."""
    required = schema.get("required", [])
    if "distance_m" in required:
        required.remove("distance_m")


class Geometry(Frozen):
    """Interferometer geometry in physical units (object-space shear and pixel).

    Axis convention: the grating lines are vertical (parallel to the rotation axis and the
    detector columns), so the shear and the stepping direction are horizontal (detector x).
    ``distance_m`` may be left out: it is then the fractional Talbot distance of
    ``talbot_order``.
    """

    model_config = ConfigDict(json_schema_extra=_distance_optional)

    energy_kev: float = Field(gt=0, description="photon energy [keV]")
    g1_pitch_m: float = Field(gt=0, description="G1 (phase grating) pitch p1 [m]")
    g1_phase_deg: float = Field(
        description="G1 phase shift [deg]: 90 (pi/2) or 180 (pi)",
        json_schema_extra={"enum": [90, 180]},
    )
    g2_pitch_m: float = Field(gt=0, description="G2 (analyser) pitch p2 [m]")
    distance_m: float = Field(
        gt=0, description="G1-G2 distance d [m]; default: the fractional Talbot distance"
    )
    talbot_order: int = Field(
        ge=1,
        description="odd fractional Talbot order n",
        json_schema_extra={"not": {"multipleOf": 2}},
    )
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

    @model_validator(mode="before")
    @classmethod
    def _default_distance(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("distance_m") is None:
            try:
                lam = wavelength_m(float(data["energy_kev"]))
                nu = 2 if float(data["g1_phase_deg"]) == 180.0 else 1
                dn = int(data["talbot_order"]) * float(data["g1_pitch_m"]) ** 2 / (nu**2 * 2 * lam)
                src = data.get("source_distance_m")
                d = dn if src is None else float(src) * dn / (float(src) - dn)
            except (KeyError, TypeError, ValueError, ZeroDivisionError):
                return data  # the field validators name what is wrong
            return {**data, "distance_m": d}
        return data

    @model_validator(mode="after")
    def _check_physics(self, info: ValidationInfo) -> Geometry:
        if self.g1_phase_deg not in G1_PHASES_DEG:
            raise ValueError(f"g1_phase_deg must be 90 or 180, got {self.g1_phase_deg!r}")
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
                f"{expected_p2:.6g} m at G2 (p2 = M p1/nu for a {self.g1_phase_deg:g} deg grating)"
            )
        # A first-layout scan file recorded presets whose pixel was finer than a G2 period
        # (contracts.legacy); it is read as recorded.
        legacy = bool(info.context and info.context.get("legacy"))
        if not legacy and self.pixel_at_g2_m < self.g2_pitch_m * (1 - 1e-9):
            raise ValueError(
                f"pixel_size_m={self.pixel_size_m:.6g} is {self.pixel_at_g2_m:.6g} m in the G2 "
                "plane "
                f"(x magnification {self.magnification:g}), smaller than one G2 period "
                f"{self.g2_pitch_m:.6g} m: an absorption G2 cannot analyse the fringes"
            )
        target = self.talbot_distance_m
        if abs(self.distance_m - target) > TALBOT_DISTANCE_TOLERANCE * target:
            warnings.warn(
                f"distance_m={self.distance_m:.6g} is {self.distance_m / target - 1:+.0%} from the "
                f"fractional Talbot distance {target:.6g} m of order {self.talbot_order}: "
                "the visibility will be low",
                GeometryWarning,
                stacklevel=2,
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
        return 2 if self.g1_phase_deg == 180.0 else 1

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
    def pixel_at_g2_m(self) -> float:
        """A detector pixel projected into the G2 plane [m] (object-space pixel times the
        objective's and the cone's magnification, the sample taken at G1)."""
        return self.pixel_size_m * self.magnification * self.cone_magnification

    @property
    def shear_m(self) -> float:
        """Object-space shear xi = lambda d / (p2 M_obj) [m]."""
        return self.wavelength_m * self.distance_m / self.g2_pitch_m / self.magnification

    @property
    def shear_px(self) -> float:
        """Shear in detector pixels."""
        return self.shear_m / self.pixel_size_m


class Detector(Frozen):
    """Detector format: the frame size the camera delivers."""

    shape: tuple[Annotated[int, Field(ge=1, le=65536)], Annotated[int, Field(ge=8, le=65536)]] = (
        Field(description="(rows, columns) of a full frame [px]")
    )

    @model_validator(mode="after")
    def _check_shape(self) -> Detector:
        rows, cols = self.shape
        if rows < 1 or cols < 8:
            raise ValueError(f"shape must be at least (1, 8) pixels, got {self.shape}")
        return self


class Instrument(Frozen):
    """The beamline's instrument: interferometer geometry, detector and PV names."""

    name: str = Field(min_length=1, max_length=64, description="profile name")
    geometry: Geometry
    detector: Detector
    rotation_axis_offset_px: float = Field(
        default=0.0,
        ge=-1e6,
        le=1e6,
        description="calibrated rotation axis minus the detector centre (cols-1)/2 [px]; the "
        "live view uses it, the final volume finds its own",
    )
    pvs: PVNames = Field(default_factory=PVNames, description="Channel Access names")

    @property
    def field_of_view_m(self) -> tuple[float, float]:
        """(height, width) of the field of view in object space [m]."""
        rows, cols = self.detector.shape
        return rows * self.geometry.pixel_size_m, cols * self.geometry.pixel_size_m
