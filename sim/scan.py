"""Simulated phase-stepping CT scans and single frames for an arbitrary instrument state.

A scan is: ``plan.darks`` dark frames (shutter closed), a reference series (sample out) at
angle 0, then the projection series angle by angle with a reference series after every
``plan.reference_every`` angles and one at the end. A series is M = ``plan.steps`` frames
(reference series 0, the calibration series: M = ``plan.calibration_steps`` when set,
``ScanPlan.series_steps``) with the stepped grating G2 commanded to x_k = k periods p2 / M. Per
frame (docs/physics.md):

- encoder readback = commanded + N(0, encoder_noise_m); actual G2 position = encoder - step
  error, step error ~ N(0, step_error_m) (the encoder does not see it);
- dose = 1 + N(0, dose_fluctuation); the ring current reads NOMINAL_RING_CURRENT_MA x dose;
- reference phase drifts by reference_drift_rad_per_s x t with a small tilt (``drift_phase``);
- time advances by the exposure plus ``FRAME_OVERHEAD_S``.

Frames are (n_frames, rows, columns): uint16 ADU with noise, else float64 noise-free ADU
(gain x PSF(expected) + dark offset).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from contracts.frames import FrameTable, ImageKey
from contracts.instrument import Instrument
from contracts.scanplan import ScanPlan
from contracts.simulation import Simulation
from sim.forward import (
    FloatArray,
    ReferencePattern,
    StepCurve,
    apply_psf,
    dark_frame,
    detect,
    drift_phase,
    make_reference,
    noiseless,
    projection_fields,
    step_curve,
)
from sim.misalignment import roll_moire_phase, talbot_visibility_factor
from sim.phantom import BonePhantom, make_bone_phantom

#: Ring current at nominal dose [mA].
NOMINAL_RING_CURRENT_MA = 200.0
#: Dead time between frames (readout, grating settle) [s].
FRAME_OVERHEAD_S = 0.01


@dataclass(frozen=True)
class FrameState:
    """Instrument state for one frame.

    ``g2_position_m`` is the ACTUAL stepped-grating position [m]; ``exposure_s`` None means the
    simulation's reference exposure (``DetectorResponse.reference_exposure_s``); ``time_s`` [s]
    since scan start drives the reference drift. ``g2_roll_rad`` [rad] turns G2 against the fringes
    (moire along the rows) and ``g2_distance_m`` [m] is the G1-G2 distance (None: the design
    distance); see ``sim.misalignment``.
    """

    rotation_deg: float
    g2_position_m: float
    sample_in: bool = True
    shutter_open: bool = True
    exposure_s: float | None = None
    ring_current_ma: float = NOMINAL_RING_CURRENT_MA
    time_s: float = 0.0
    g2_roll_rad: float = 0.0
    g2_distance_m: float | None = None


class FrameRenderer:
    """Renders frames of the simulated instrument; per-angle stepping curves are cached."""

    def __init__(
        self,
        instrument: Instrument,
        simulation: Simulation,
        seed: int = 0,
        *,
        phantom: BonePhantom | None = None,
        cache_size: int = 4,
    ) -> None:
        self.instrument = instrument
        self.simulation = simulation
        self.shape = instrument.detector.shape
        self.axis_offset_px = simulation.axis_offset_px(instrument.rotation_axis_offset_px)
        seeds = np.random.SeedSequence(seed).generate_state(2)
        ss = simulation.phantom.supersample
        self.phantom = phantom or make_bone_phantom(
            simulation.phantom,
            instrument.geometry,
            int(seeds[0]),
            fov_height_m=instrument.field_of_view_m[0],
        )
        self.reference: ReferencePattern = make_reference(
            simulation.fringes, self.shape, ss, int(seeds[1])
        )
        self._cache: OrderedDict[float | None, StepCurve] = OrderedDict()
        self._cache_size = max(1, cache_size)

    def step_curve(self, rotation_deg: float | None) -> StepCurve:
        """Binned stepping curve at ``rotation_deg`` (None: sample out), cached."""
        key = None if rotation_deg is None else round(float(rotation_deg), 9)
        curve = self._cache.get(key)
        if curve is not None:
            self._cache.move_to_end(key)
            return curve
        sim = self.simulation
        fields = None
        if key is not None:
            fields = projection_fields(
                self.phantom,
                self.instrument.geometry,
                self.shape,
                math.radians(key),
                sim.phantom.supersample,
                self.axis_offset_px,
            )
        curve = step_curve(  # the curve's shape: sim.gratings.curve_harmonics, cached
            fields,
            self.reference,
            sim.detector.incident_counts,
            fringes=sim.fringes,
            geometry=self.instrument.geometry,
        )
        self._cache[key] = curve
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return curve

    def expected(self, state: FrameState) -> FloatArray:
        """Expected detected counts (rows, columns) [e-] for ``state`` (zeros, shutter closed)."""
        det = self.simulation.detector
        if not state.shutter_open:
            return np.zeros(self.shape)
        exposure = det.reference_exposure_s if state.exposure_s is None else state.exposure_s
        if not exposure > 0:
            raise ValueError(f"exposure_s must be > 0, got {exposure!r}")
        if not state.ring_current_ma >= 0:
            raise ValueError(f"ring_current_ma must be >= 0, got {state.ring_current_ma!r}")
        ring = state.ring_current_ma / NOMINAL_RING_CURRENT_MA
        dose = (exposure / det.reference_exposure_s) * ring
        curve = self.step_curve(state.rotation_deg if state.sample_in else None)
        geometry = self.instrument.geometry
        theta = 2.0 * math.pi * state.g2_position_m / geometry.g2_pitch_m
        offset = drift_phase(
            self.simulation.fringes.reference_drift_rad_per_s, state.time_s, self.shape
        )
        factor = 1.0
        if state.g2_distance_m is not None:
            factor = talbot_visibility_factor(geometry, state.g2_distance_m)
        if state.g2_roll_rad != 0.0:
            moire, loss = roll_moire_phase(geometry, state.g2_roll_rad, self.shape)
            offset = offset + moire
            factor *= loss
        return np.maximum(curve.counts(theta, dose, offset, factor), 0.0)

    def render(
        self, state: FrameState, rng: np.random.Generator | None = None
    ) -> NDArray[np.uint16] | FloatArray:
        """One frame: uint16 ADU with detector noise from ``rng``, else float64 noise-free ADU."""
        det = self.simulation.detector
        if rng is None:
            return noiseless(self.expected(state), det)
        if not state.shutter_open:
            return dark_frame(rng, det, self.shape)
        return detect(self.expected(state), rng, det)


@dataclass(frozen=True)
class TruthProjections:
    """Noise-free per-angle truth as a retrieval would see it, each (n_angles, rows, columns).

    transmission = a0_obj / a0_ref, dphase = arg(c1_obj conj c1_ref) [rad], darkfield =
    (|c1_obj| / a0_obj) / (|c1_ref| / a0_ref), from the binned first harmonic with the detector PSF
    applied, no drift, step or dose errors.
    """

    transmission: FloatArray
    dphase: FloatArray
    darkfield: FloatArray


@dataclass(frozen=True)
class SimulatedScan:
    """A simulated scan: frames, their table, what it simulated and the truth."""

    instrument: Instrument
    plan: ScanPlan
    simulation: Simulation
    frames: NDArray[np.uint16] | FloatArray
    table: FrameTable
    angles_deg: FloatArray
    true_g2_position_m: FloatArray
    dose: FloatArray
    truth_projections: TruthProjections
    phantom: BonePhantom
    reference: ReferencePattern


def _series_plan(plan: ScanPlan) -> list[int]:
    """Acquisition order (``ScanPlan.order``): -1 for a reference series, else the angle index."""
    return [-1 if kind == "reference" else i for kind, i in plan.order()]


def compute_truth(renderer: FrameRenderer, angles_deg: FloatArray) -> TruthProjections:
    """Retrieval-model truth (see ``TruthProjections``) for the given angles [deg]."""
    sigma = renderer.simulation.detector.psf_sigma_px
    ref = renderer.step_curve(None)
    a0_r = apply_psf(ref.a0, sigma)
    c1_r = apply_psf(ref.c1, sigma)
    vis_r = np.abs(c1_r) / a0_r
    shape = (len(angles_deg), *a0_r.shape)
    t_out, p_out, d_out = np.empty(shape), np.empty(shape), np.empty(shape)
    for i, angle in enumerate(angles_deg):
        curve = renderer.step_curve(float(angle))
        a0 = apply_psf(curve.a0, sigma)
        c1 = apply_psf(curve.c1, sigma)
        t_out[i] = a0 / a0_r
        p_out[i] = np.angle(c1 * np.conj(c1_r))
        d_out[i] = (np.abs(c1) / a0) / vis_r
    return TruthProjections(transmission=t_out, dphase=p_out, darkfield=d_out)


def simulate_scan(
    instrument: Instrument,
    plan: ScanPlan,
    simulation: Simulation,
    seed: int = 0,
    noise: bool = True,
) -> SimulatedScan:
    """Simulate a full phase-stepping CT scan of the bone phantom, deterministic in ``seed``."""
    renderer = FrameRenderer(instrument, simulation, seed)
    # Independent streams of one seed: the renderer's (phantom, reference pattern), the
    # instrument's (encoder, step error, dose) and the detector noise.
    rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(3)[2])
    det_rng = np.random.default_rng(np.random.SeedSequence(seed).spawn(4)[3]) if noise else None
    angles = np.asarray(plan.angles_deg(), dtype=np.float64)
    order = _series_plan(plan)
    n_frames = plan.frames_planned()
    scan = _ScanBuffers.empty(n_frames, instrument.detector.shape, plan.exposure_s, noise)
    _take_darks(scan, renderer, plan, rng, det_rng)
    truth_parts: dict[int, TruthProjections] = {}
    rotation_deg = 0.0  # a reference series is recorded at the last projection's angle
    series = 0
    for item in order:
        if item < 0:
            steps = plan.series_steps(("reference", series))
            _take_series(scan, renderer, plan, rng, det_rng, rotation_deg, -1, series, steps)
            series += 1
            continue
        rotation_deg = float(angles[item])
        truth_parts[item] = compute_truth(renderer, angles[item : item + 1])
        steps = plan.series_steps(("projection", item))
        _take_series(scan, renderer, plan, rng, det_rng, rotation_deg, item, -1, steps)
    return SimulatedScan(
        instrument=instrument,
        plan=plan,
        simulation=simulation,
        frames=scan.frames,
        table=scan.table,
        angles_deg=angles,
        true_g2_position_m=scan.true_x,
        dose=scan.doses,
        truth_projections=_stack_truth([truth_parts[i] for i in range(plan.angles)]),
        phantom=renderer.phantom,
        reference=renderer.reference,
    )


@dataclass(frozen=True)
class _FrameTags:
    """What the frame table records of one frame: its kind, indices (-1: none), rotation [deg]
    and G2 encoder reading [m]."""

    key: ImageKey
    angle_index: int
    series_index: int
    step_index: int
    rotation_deg: float
    g2_encoder_m: float


@dataclass
class _ScanBuffers:
    """Frames, frame table and per-frame truth of a scan, filled in acquisition order.

    ``time_s`` [s] is the scan clock: each frame advances it by ``exposure_s`` plus
    ``FRAME_OVERHEAD_S``.
    """

    frames: NDArray[np.uint16] | FloatArray
    table: FrameTable
    true_x: FloatArray
    doses: FloatArray
    exposure_s: float
    time_s: float = 0.0
    frame: int = 0

    @classmethod
    def empty(
        cls, n_frames: int, shape: tuple[int, int], exposure_s: float, noise: bool
    ) -> _ScanBuffers:
        """Room for ``n_frames`` frames of ``shape``: uint16 with ``noise``, else float64."""
        frames: NDArray[np.uint16] | FloatArray = (
            np.empty((n_frames, *shape), dtype=np.uint16)
            if noise
            else np.empty((n_frames, *shape), dtype=np.float64)
        )
        return cls(
            frames=frames,
            table=FrameTable.empty(n_frames),
            true_x=np.zeros(n_frames),
            doses=np.zeros(n_frames),
            exposure_s=exposure_s,
        )

    def add(
        self, image: NDArray[np.uint16] | FloatArray, tags: _FrameTags, x_true_m: float, dose: float
    ) -> None:
        """Store the next frame, its actual G2 position [m] and relative dose, and its row."""
        frame = self.frame
        self.frames[frame] = image
        self.true_x[frame] = x_true_m
        self.doses[frame] = dose
        row = self.table.rows[frame]
        row["image_key"] = int(tags.key)
        row["angle_index"] = tags.angle_index
        row["series_index"] = tags.series_index
        row["step_index"] = tags.step_index
        row["attempt"] = 0
        row["g2_position_m"] = tags.g2_encoder_m
        row["rotation_deg"] = tags.rotation_deg
        row["timestamp_s"] = self.time_s
        row["ring_current_ma"] = NOMINAL_RING_CURRENT_MA * dose
        self.time_s += self.exposure_s + FRAME_OVERHEAD_S
        self.frame += 1


def _take_darks(
    scan: _ScanBuffers,
    renderer: FrameRenderer,
    plan: ScanPlan,
    rng: np.random.Generator,
    det_rng: np.random.Generator | None,
) -> None:
    """``plan.darks`` shutter-closed frames at rotation 0, G2 at 0; per frame ``rng`` draws the
    dose, then the encoder noise [m]."""
    itf = renderer.simulation.fringes
    for _ in range(plan.darks):
        dose = 1.0 + itf.dose_fluctuation * rng.normal()
        state = FrameState(0.0, 0.0, shutter_open=False, exposure_s=plan.exposure_s)
        image = renderer.render(state, det_rng)
        tags = _FrameTags(ImageKey.DARK, -1, -1, -1, 0.0, itf.encoder_noise_m * rng.normal())
        scan.add(image, tags, 0.0, dose)


def _take_series(
    scan: _ScanBuffers,
    renderer: FrameRenderer,
    plan: ScanPlan,
    rng: np.random.Generator,
    det_rng: np.random.Generator | None,
    rotation_deg: float,
    angle_index: int,
    series_index: int,
    steps: int,
) -> None:
    """One series of ``steps`` frames (``plan.series_steps``) at ``rotation_deg`` [deg], G2
    commanded to k ``plan.periods`` p2 / ``steps`` [m]: a projection when ``angle_index`` >= 0,
    else a reference (sample out) numbered ``series_index``.

    Per frame ``rng`` draws the encoder noise, the step error (both [m]) and the dose, in order.
    """
    itf = renderer.simulation.fringes
    p2 = renderer.instrument.geometry.g2_pitch_m
    commanded = np.arange(steps) * plan.periods * p2 / steps
    sample_in = angle_index >= 0
    key = ImageKey.PROJECTION if sample_in else ImageKey.FLAT
    for k in range(steps):
        x_enc = commanded[k] + itf.encoder_noise_m * rng.normal()
        x_true = x_enc - itf.step_error_m * rng.normal()
        dose = max(1.0 + itf.dose_fluctuation * rng.normal(), 0.0)
        state = FrameState(
            rotation_deg,
            x_true,
            sample_in=sample_in,
            exposure_s=plan.exposure_s,
            ring_current_ma=NOMINAL_RING_CURRENT_MA * dose,
            time_s=scan.time_s,
        )
        tags = _FrameTags(key, angle_index, series_index, k, rotation_deg, x_enc)
        scan.add(renderer.render(state, det_rng), tags, x_true, dose)


def _stack_truth(parts: list[TruthProjections]) -> TruthProjections:
    """The per-angle truths (each with one angle) as one, angle by angle."""
    return TruthProjections(
        transmission=np.concatenate([p.transmission for p in parts]),
        dphase=np.concatenate([p.dphase for p in parts]),
        darkfield=np.concatenate([p.darkfield for p in parts]),
    )
