"""Test helper: a phase-stepping CT scan file computed with wave optics, and its ground truth.

Not a test module. Independent of the fast fringe model (``sim.forward``): every frame comes from
the 1-D Fresnel oracle ``sim.fresnel.fresnel_stepping`` (plane wave, binary pi phase grating G1,
paraxial propagation, source blur, binary absorbing analyser G2 stepped along +x, pixel
integration), so the stepping curve has the shape a real binary G2 gives (nearly a triangle wave,
with all its harmonics) and the sample's refraction, absorption and edge diffraction are whatever
the exit wave makes of them.

Sample: a 2-D object, constant along the rotation axis (the detector rows), in vacuum: a PMMA
cylinder of radius ``PMMA_RADIUS_M`` = 100 um on the rotation axis, with a cylindrical aluminium
insert of radius ``AL_RADIUS_M`` = 28 um centred off the axis at (x, y) = ``AL_CENTRE_M`` =
(+40, -24) um. Projection at angle theta (docs/physics.md §1): ``s = x cos theta + y sin theta``,
exact chord lengths of the two circles (analytic line integrals), the insert replacing PMMA::

    int delta dt = delta_PMMA c_PMMA(s) + (delta_Al - delta_PMMA) c_Al(s)    (likewise beta)
    exit wave   = exp(-i k int (delta - i beta) dt) = exp(-i k int delta) exp(-k int beta)

Materials at 15 keV (lambda = 0.82656 A), from ``sim.materials.from_formula`` (xraydb
``xray_delta_beta``, Chantler tables, J. Phys. Chem. Ref. Data 29, 597 (2000))::

    material       rho [g/cm3]   delta        beta         mu = 4 pi beta / lambda
    PMMA C5H8O2    1.19          1.1852e-6    6.1331e-10     93.24 1/m
    Al             2.699         2.4143e-6    1.2741e-8    1937.1  1/m

The surrounding medium is vacuum, so these are also the values the reconstruction, relative to
the "air" around the object, must give.

Instrument (``instrument()``): no objective (magnification 1), plane wave; G1 a pi phase
grating of pitch p1 = 2 um, G2 of pitch p2 = p1/2 = 1 um with 50 % open duty and opaque lines
(40 um of Au transmit 4e-6 at 15 keV, xraydb), at the first fractional Talbot
distance d = p1^2 / (8 lambda) = 6.05 mm; shear xi = lambda d / p2 = 0.5 um. Pixel 2 um = 2 p2
(two G2 periods in the G2 plane), so the shear is 0.25 px. Source: 20 um rms, 36 m upstream of
G1; its image blurs the fringe in the G2 plane by sigma = 20 um * d / 36 m = 3.4 nm rms
(``source_sigma_m``, ``sim.gratings.projected_source_sigma_m``'s formula; against the 1 um
period it rounds only the curve's corners). Illumination: optionally a smooth wavefront error of
the beamline optics, one cosine across the field (``wavefront_periods``: the fringe displacement
it causes, in G2 periods), so that the reference phase varies over the field as moire fringes
make it do in a real instrument; the same for reference and sample series. Detector:
``ROWS`` x ``COLUMNS`` = 4 x 160 px; the oracle computes one row (the object is constant along
the rows), replicated on every row. The rotation axis sits at column (COLUMNS - 1)/2 +
``AXIS_OFFSET_PX`` with ``AXIS_OFFSET_PX`` = +1.3 px (the object is shifted in the oracle's
window accordingly; the instrument records no calibrated axis, 0, so the reconstructor must find
it).

Why 15 keV and a 2-p2 pixel: the object's sharp edges carry physics that no retrieval undoes,
and this geometry keeps it below the tests' bounds (measured with 32 steps in every series and
with a sinusoidal G2, where no harmonic folds): (1) a pixel straddling an edge sees the
differential phase vary by ~1 rad inside it, and arg(mean e^{i phi}) < mean phi there lowers the
integrated phase, so delta of PMMA reads 0.6 % low (0.9 % at 12.4 keV, where delta is larger);
(2) propagation-based phase contrast puts a double layer of strength d delta at every edge into
-ln T: d delta / (mu p^2) = delta / (8 pi m^2 beta) = 19 for PMMA with m = 2 G2 periods per
pixel, and 77 with one period per pixel, where mu of PMMA then rings by 5-10 % over the
interior (here: +0.4 to +1 %, depending on the erosion).

Oracle window: the detector row, ``COLUMNS`` pixels = 320 um = 160 G1 periods (periodic), with
``SAMPLES_PER_PERIOD`` = 160 samples per p2 (6.25 nm), divisible by 5, 8, 32, 80 and 160 steps, so
every series' step positions fall exactly on samples (``samples_per_step = 160 / steps``). The
object (radius 50 px about an axis 1.3 px right of the centre) leaves about 29 px of vacuum at
each side: the exit wave is 1 at the window's edges and periodic.

Frames (``simulate``, then ``WaveOpticsScan.write`` with the project's ``ScanFileWriter``):
``darks`` dark frames (a constant offset ``DARK_COUNTS``), then the plan's order
(``ScanPlan.order``): reference series 0 with ``calibration_steps`` steps (when > 0; else
``steps``), the projections with ``steps`` steps over 180 deg (end point excluded), a reference
series after every ``reference_every`` angles and at the end. G2
positions recorded as the measured (encoder) ones: the oracle's exact positions plus an encoder
zero ``ENCODER_ZERO_M``. Counts: ``OPEN_COUNTS`` = 2e4 detected per pixel and frame in the open
beam (the curve's mean), float32 frames noise-free, or Poisson counts (uint16) with a seed. Ring
current constant 200 mA, 0.1 s exposures, 10 ms between frames.
"""

from __future__ import annotations

import functools
import math
import uuid
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray

from contracts.frames import ImageKey
from contracts.instrument import Detector, Geometry, Instrument
from contracts.scanfile import ScanFileWriter, ScanHeader
from contracts.scanplan import ScanPlan
from sim.fresnel import fresnel_stepping
from sim.materials import Material, from_formula

F64 = NDArray[np.float64]

ENERGY_KEV = 15.0
G1_PITCH_M = 2.0e-6
G2_PITCH_M = 1.0e-6  # p1 / nu, nu = 2 for a pi grating
TALBOT_ORDER = 1
#: G2 periods per pixel (magnification 1: the pixel in the G2 plane is the object-space pixel).
PIXEL_PERIODS = 2
PIXEL_M = PIXEL_PERIODS * G2_PITCH_M
ROWS, COLUMNS = 4, 160
#: Oracle samples per G2 period (PIXEL_PERIODS periods per pixel): a multiple of every step
#: count a series may have (3 .. 160 dividing 160: 5, 8, 10, 16, 20, 32, 40, 80, 160).
SAMPLES_PER_PERIOD = 160
#: Rotation axis minus the detector centre (COLUMNS - 1)/2 [px].
AXIS_OFFSET_PX = 1.3

PMMA = ("C5H8O2", 1.19)
ALUMINIUM = ("Al", 2.699)
PMMA_RADIUS_M = 100e-6
AL_RADIUS_M = 28e-6
AL_CENTRE_M = (40e-6, -24e-6)  # (x, y) in the sample frame

SOURCE_RMS_M = 20e-6
SOURCE_DISTANCE_M = 36.0

OPEN_COUNTS = 2.0e4  # detected counts per pixel and frame in the open beam (curve mean)
DARK_COUNTS = 100.0
RING_CURRENT_MA = 200.0
EXPOSURE_S = 0.1
FRAME_GAP_S = 0.01
ENCODER_ZERO_M = 3.7e-6


def geometry() -> Geometry:
    """The interferometer: pi G1 at the first fractional Talbot distance (``distance_m`` left
    out: the instrument computes it), pixel ``PIXEL_PERIODS`` G2 periods, magnification 1."""
    return Geometry.model_validate(
        {
            "energy_kev": ENERGY_KEV,
            "g1_pitch_m": G1_PITCH_M,
            "g1_phase_deg": 180.0,
            "g2_pitch_m": G2_PITCH_M,
            "talbot_order": TALBOT_ORDER,
            "pixel_size_m": PIXEL_M,
        }
    )


def instrument() -> Instrument:
    """The instrument recorded in the file (no calibrated rotation axis)."""
    return Instrument(
        name="wave-optics", geometry=geometry(), detector=Detector(shape=(ROWS, COLUMNS))
    )


def source_sigma_m(g: Geometry | None = None) -> float:
    """rms blur of the fringe in the G2 plane from the source: sigma_source * d / L [m]."""
    g = g or geometry()
    return SOURCE_RMS_M * g.distance_m / SOURCE_DISTANCE_M


@functools.lru_cache(maxsize=8)
def _material(formula: str, density_g_cc: float, energy_kev: float) -> Material:
    return from_formula(formula, density_g_cc, energy_kev)


def pmma() -> Material:
    """PMMA at ``ENERGY_KEV`` (xraydb, Chantler)."""
    return _material(*PMMA, ENERGY_KEV)


def aluminium() -> Material:
    """Aluminium at ``ENERGY_KEV`` (xraydb, Chantler)."""
    return _material(*ALUMINIUM, ENERGY_KEV)


def chord_m(s_m: F64, centre_m: float, radius_m: float) -> F64:
    """Exact chord [m] of a circle of ``radius_m`` whose projection centre is ``centre_m``."""
    return 2.0 * np.sqrt(np.clip(radius_m**2 - (s_m - centre_m) ** 2, 0.0, None))


def line_integrals(theta_rad: float, s_m: F64) -> tuple[F64, F64]:
    """(int delta dt, int beta dt) [m] at detector coordinate s [m] (axis at s = 0)."""
    p, a = pmma(), aluminium()
    xa, ya = AL_CENTRE_M
    s_al = xa * math.cos(theta_rad) + ya * math.sin(theta_rad)
    c_p = chord_m(s_m, 0.0, PMMA_RADIUS_M)
    c_a = chord_m(s_m, s_al, AL_RADIUS_M)
    return p.delta * c_p + (a.delta - p.delta) * c_a, p.beta * c_p + (a.beta - p.beta) * c_a


@dataclass(frozen=True)
class Truth:
    """Ground truth on the reconstruction grid (y, x), voxel = pixel, centred on the axis.

    ``delta`` [1] and ``mu`` [1/m] maps (sub-voxel averaged, 4 x 4), ``center_offset_px`` the
    true rotation axis minus the detector centre [px]."""

    delta: F64
    mu: F64
    center_offset_px: float
    pmma: Material
    aluminium: Material
    wavelength_m: float

    @property
    def mu_pmma(self) -> float:
        return self.pmma.mu_per_m(self.wavelength_m)

    @property
    def mu_aluminium(self) -> float:
        return self.aluminium.mu_per_m(self.wavelength_m)

    def region(
        self, name: Literal["pmma", "aluminium"], erode_px: float = 3.0
    ) -> NDArray[np.bool_]:
        """Mask (y, x) of the material's interior, at least ``erode_px`` from each of its edges."""
        n = self.delta.shape[-1]
        y, x = (np.indices((n, n)) - (n - 1) / 2.0) * PIXEL_M
        r_p = np.hypot(x, y)
        r_a = np.hypot(x - AL_CENTRE_M[0], y - AL_CENTRE_M[1])
        e = erode_px * PIXEL_M
        if name == "pmma":
            return (r_p < PMMA_RADIUS_M - e) & (r_a > AL_RADIUS_M + e)
        if name == "aluminium":
            return r_a < AL_RADIUS_M - e
        raise ValueError(f"region must be 'pmma' or 'aluminium', got {name!r}")


def truth(size: int | None = None, supersample: int = 4) -> Truth:
    """The truth maps on the (size, size) reconstruction grid (volume axes y, x; size
    ``COLUMNS`` by default, the reconstructor's)."""
    size = COLUMNS if size is None else size
    p, a = pmma(), aluminium()
    sub = (np.arange(supersample) + 0.5) / supersample - 0.5
    coords = ((np.arange(size) - (size - 1) / 2.0)[:, None] + sub[None, :]).ravel() * PIXEL_M
    y, x = np.meshgrid(coords, coords, indexing="ij")
    in_p = np.hypot(x, y) < PMMA_RADIUS_M
    in_a = np.hypot(x - AL_CENTRE_M[0], y - AL_CENTRE_M[1]) < AL_RADIUS_M
    lam = geometry().wavelength_m

    def binned(values: F64) -> F64:
        return values.reshape(size, supersample, size, supersample).mean(axis=(1, 3))

    delta = binned(np.where(in_a, a.delta, np.where(in_p, p.delta, 0.0)))
    mu = binned(np.where(in_a, a.mu_per_m(lam), np.where(in_p, p.mu_per_m(lam), 0.0)))
    return Truth(delta, mu, AXIS_OFFSET_PX, p, a, lam)


@dataclass(frozen=True)
class Frame:
    """One frame's tags (``contracts.frames.TAG_FIELDS``) and its expected detector row
    (COLUMNS,) [counts, dark offset included]; None for a dark frame (the offset only)."""

    tags: dict[str, float | int]
    line: F64 | None


@dataclass(frozen=True)
class WaveOpticsScan:
    """What ``simulate`` computed: the plan, the frames in acquisition order (expected counts)
    and the noise-free open beam per column: ``open_counts`` (COLUMNS,) the curve's mean
    [counts per frame] and ``visibility`` (COLUMNS,) its first-harmonic visibility 2|c1|/c0,
    both from a ``SAMPLES_PER_PERIOD``-step curve (no aliasing: the true first harmonic)."""

    plan: ScanPlan
    frames: list[Frame]
    open_counts: F64
    visibility: F64
    g2_profile: str
    wavefront_periods: float
    instrument: Instrument = field(default_factory=instrument)

    @cached_property
    def truth(self) -> Truth:
        return truth()

    def write(self, path: str | Path, *, noise_seed: int | None = None) -> Path:
        """Write the scan file (talbot-scan/2, ``ScanFileWriter``): float32 expected counts, or
        with ``noise_seed`` Poisson counts (uint16) of them, independent on every row."""
        path = Path(path)
        rng = None if noise_seed is None else np.random.default_rng(noise_seed)
        dtype = "float32" if rng is None else "uint16"
        uid = f"wave-optics-{uuid.uuid4().hex[:12]}"
        header = ScanHeader(uid, self.instrument, self.plan, dtype)
        dark = np.full((ROWS, COLUMNS), DARK_COUNTS, dtype)
        with ScanFileWriter(path, header) as writer:
            for frame in self.frames:
                if frame.line is None:
                    image = dark
                elif rng is None:
                    image = np.repeat(frame.line[None, :], ROWS, axis=0).astype(np.float32)
                else:
                    signal = np.repeat(frame.line[None, :] - DARK_COUNTS, ROWS, axis=0)
                    counts = rng.poisson(signal) + DARK_COUNTS
                    if counts.max() > np.iinfo(np.uint16).max:
                        raise ValueError("counts overflow uint16: lower OPEN_COUNTS")
                    image = counts.astype(np.uint16)
                writer.append(image, frame.tags)
        return path


def scan_plan(
    steps: int, calibration_steps: int, angles: int, reference_every: int, darks: int
) -> ScanPlan:
    """The plan recorded in the file (``calibration_steps`` 0: no calibration series)."""
    fields: dict[str, object] = {
        "steps": steps,
        "angles": angles,
        "reference_every": reference_every,
        "darks": darks,
        "exposure_s": EXPOSURE_S,
    }
    if calibration_steps:
        fields["calibration_steps"] = calibration_steps
    return ScanPlan.model_validate(fields)


def oracle_curves(
    steps: int,
    theta_rad: float | None,
    *,
    g2_profile: Literal["binary", "sinusoidal"] = "binary",
    source_blur: bool = True,
    wavefront_periods: float = 0.0,
) -> tuple[F64, F64]:
    """(intensity (steps, COLUMNS) relative to the incident beam, step positions [m]) of one
    series: sample out (``theta_rad`` None) or at rotation angle ``theta_rad`` [rad].

    ``wavefront_periods``: the illumination's phase error ``a cos(2 pi x / W)`` over the window
    W, with ``a`` such that the fringe it displaces (by d/k dPhi/dx) moves by at most this many
    G2 periods."""
    if SAMPLES_PER_PERIOD % steps:
        raise ValueError(f"steps={steps} must divide SAMPLES_PER_PERIOD={SAMPLES_PER_PERIOD}")
    g = geometry()
    if (COLUMNS * PIXEL_PERIODS) % g.nu:
        raise ValueError("the window must hold a whole number of G1 periods")
    k = g.wavenumber_per_m
    dx = G2_PITCH_M / SAMPLES_PER_PERIOD
    window = COLUMNS * PIXEL_M
    amplitude = wavefront_periods * G2_PITCH_M * k * window / (2.0 * math.pi * g.distance_m)

    def exit_wave(x: F64) -> NDArray[np.complex128]:
        wave = np.exp(1j * amplitude * np.cos(2.0 * math.pi * x / window))
        if theta_rad is None:
            return wave
        # sample j stands for [x_j - dx/2, x_j + dx/2]: pixel i's centre is then
        # (i - (COLUMNS - 1)/2) p - dx/2, and the object sits AXIS_OFFSET_PX to the right
        s = x + dx / 2.0 - AXIS_OFFSET_PX * PIXEL_M
        int_delta, int_beta = line_integrals(theta_rad, s)
        return wave * np.exp(-1j * k * int_delta - k * int_beta)

    result = fresnel_stepping(
        wavelength_m=g.wavelength_m,
        g1_pitch_m=G1_PITCH_M,
        g1_phase_deg=180.0,
        distance_m=g.distance_m,
        steps=steps,
        exit_wave=None if theta_rad is None and amplitude == 0 else exit_wave,
        periods=COLUMNS * PIXEL_PERIODS // g.nu,  # the window is the detector row
        samples_per_step=SAMPLES_PER_PERIOD // steps,
        g2_profile=g2_profile,
        pixel_samples=SAMPLES_PER_PERIOD * PIXEL_PERIODS,
        g2_duty=0.5,
        g2_transmission=0.0,
        source_sigma_m=source_sigma_m(g) if source_blur else 0.0,
    )
    return result.intensity, result.step_positions_m


def simulate(
    *,
    steps: int = 5,
    calibration_steps: int = 32,
    angles: int = 120,
    reference_every: int = 40,
    darks: int = 4,
    g2_profile: Literal["binary", "sinusoidal"] = "binary",
    source_blur: bool = True,
    wavefront_periods: float = 0.0,
) -> WaveOpticsScan:
    """Every frame of the scan in acquisition order (expected counts, noise-free).

    ``calibration_steps`` > 0 needs ``ScanPlan.calibration_steps`` (else pass 0: every series
    then has ``steps`` steps)."""
    plan = scan_plan(steps, calibration_steps, angles, reference_every, darks)
    curves: dict[tuple[int, float | None], tuple[F64, F64]] = {}

    def series(n_steps: int, theta: float | None) -> tuple[F64, F64]:
        key = (n_steps, theta)
        if key not in curves:
            curves[key] = oracle_curves(
                n_steps,
                theta,
                g2_profile=g2_profile,
                source_blur=source_blur,
                wavefront_periods=wavefront_periods,
            )
        return curves[key]

    exact, _ = series(SAMPLES_PER_PERIOD, None)  # every harmonic below 80: the true curve
    scale = OPEN_COUNTS / float(exact.mean())
    phases = np.exp(-2j * np.pi * np.arange(SAMPLES_PER_PERIOD) / SAMPLES_PER_PERIOD)
    c0 = exact.mean(axis=0)
    c1 = np.tensordot(phases, exact, axes=(0, 0)) / SAMPLES_PER_PERIOD

    frames: list[Frame] = []
    t = 0.0
    rotation_deg = 0.0  # a reference series is taken at the last projection's angle

    def add(tags: dict[str, float | int], line: F64 | None) -> None:
        nonlocal t
        frames.append(
            Frame(
                {**tags, "attempt": 0, "rotation_deg": rotation_deg, "timestamp_s": t,
                 "ring_current_ma": RING_CURRENT_MA},
                line,
            )
        )  # fmt: skip
        t += EXPOSURE_S + FRAME_GAP_S

    for _ in range(darks):
        ident = {"image_key": int(ImageKey.DARK), "angle_index": -1, "series_index": -1}
        add({**ident, "step_index": -1, "g2_position_m": ENCODER_ZERO_M}, None)
    for kind, index in plan.order():
        if kind == "projection":
            rotation_deg = plan.angle_deg(index)
            n_steps = steps
            intensity, positions = series(n_steps, math.radians(rotation_deg))
            ident = {"image_key": int(ImageKey.PROJECTION), "angle_index": index,
                     "series_index": -1}  # fmt: skip
        else:
            n_steps = plan.series_steps(("reference", index))
            intensity, positions = series(n_steps, None)
            ident = {"image_key": int(ImageKey.FLAT), "angle_index": -1, "series_index": index}
        for k in range(n_steps):
            x = ENCODER_ZERO_M + float(positions[k])
            add({**ident, "step_index": k, "g2_position_m": x}, scale * intensity[k] + DARK_COUNTS)
    return WaveOpticsScan(
        plan, frames, scale * c0, 2.0 * np.abs(c1) / c0, g2_profile, wavefront_periods
    )


def air_columns(margin_px: float = 8.0) -> NDArray[np.bool_]:
    """Detector columns (COLUMNS,) farther than ``margin_px`` from the object at every angle."""
    s = (np.arange(COLUMNS) - (COLUMNS - 1) / 2.0 - AXIS_OFFSET_PX) * PIXEL_M
    return np.abs(s) > PMMA_RADIUS_M + margin_px * PIXEL_M
