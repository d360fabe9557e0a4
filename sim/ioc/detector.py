"""The simulated area detector (``DET:cam1:`` + ``DET:HDF1:``): frames from the physics model.

An areaDetector-compatible camera (PVs: :mod:`sim.ioc.adcatalog`) whose frames are rendered by
:class:`sim.scan.FrameRenderer` for the instrument state at the start of each exposure
(docs/physics.md):

- G2 at its ACTUAL position (the piezo's true position, not its noisy encoder), plus the G0
  shift: stepping G0 by p0/M moves the fringes like stepping G2 by p2/M, so the effective G2
  position is ``x_G2 + x_G0 p2/p0`` when the geometry has a G0 pitch (Pfeiffer et al., Nat. Phys.
  2, 258 (2006)). Without ``g0_pitch_m`` in the geometry, G0 has no effect on the frames.
- G2 roll [mrad] and G2 z [mm] (the G1-G2 distance) as ``sim.misalignment`` models them:
  a roll adds moire fringes along the rows, a distance away from the fractional Talbot distance
  lowers the visibility; the roll motor's 0 is parallel to the fringes, z starts at the design
  distance;
- rotation at the rotation stage's position; sample in the beam when the sample stage x is within
  (half field of view + rod radius) of ``sample_in_mm`` (default 0 mm), i.e. the rod is seen;
- shutter closed -> dark frame (offset + read noise only);
- counts scale with ``AcquireTime / reference_exposure_s`` (the simulation's) and ring current /
  200 mA.

Each frame carries its scan tags (``TAG:`` PVs read at the start of the exposure) and measured
readbacks (G2 encoder [m], rotation [deg], ring current [mA]) to the HDF5 file plugin.

Acquire (busy): a put of 1 starts ``ImageMode`` Single (1 frame), Multiple (``NumImages``) or
Continuous; ``Acquire_RBV`` goes 1 and falls to 0 after the last frame has been read out (and,
with ``BlockingCallbacks``, written); a put-callback completes then. A put of 0 aborts.
``DetectorState_RBV`` follows Acquire / Readout / Idle. Faults: ``FAULT:LateFrames`` delays the
end of a frame by ``LateFrameDelay``; ``FAULT:DropFrames`` loses frames after readout (camera
counters advance, the plugin's ``DroppedArrays_RBV`` counts them, nothing is written);
``FAULT:SlowWriter`` slows the file plugin. Bad puts (``AcquireTime`` <= 0, an unknown enum,
``NumImages`` < 1, a region or binning other than the full sensor) are refused with an alarm.
When an acquisition ends (not aborted), the step sequencer's queued series, if any, starts the
next one (``sim.ioc.sequencer``).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from contracts.frames import FRAME_TYPES
from contracts.instrument import Instrument
from contracts.scanfile import ScanHeader
from contracts.simulation import Simulation
from sim.ioc.adcatalog import CAM_TABLE, ADPVs, HookedPV
from sim.ioc.beam import BeamGroup, ShutterGroup
from sim.ioc.faults import FaultsGroup
from sim.ioc.filewriter import FrameEvent, FrameHook, HDF5FilePlugin, pvs_add
from sim.ioc.motor import MotorRecord
from sim.ioc.sequencer import StepSequencerGroup
from sim.ioc.tags import ScanTagsGroup
from sim.scan import FrameRenderer, FrameState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorSpec:
    """Simulated camera timing and the sample-in position (times in s, positions in mm)."""

    readout_s: float = 0.001
    sample_in_mm: float = 0.0
    seed: int | None = None

    def __post_init__(self) -> None:
        if not (math.isfinite(self.readout_s) and self.readout_s >= 0):
            raise ValueError(f"readout_s must be >= 0, got {self.readout_s!r}")
        if not math.isfinite(self.sample_in_mm):
            raise ValueError(f"sample_in_mm must be finite, got {self.sample_in_mm!r}")


def effective_g2_position_m(
    g2_m: float, g0_m: float, g2_pitch_m: float, g0_pitch_m: float | None
) -> float:
    """G2 position [m] that gives the same fringe phase as G2 at ``g2_m`` and G0 at ``g0_m``.

    A G0 shift by p0/M moves the fringe pattern by one M-th of a period, like a G2 step of
    p2/M (Pfeiffer et al., Nat. Phys. 2, 258 (2006)): x_eff = x_G2 + x_G0 p2/p0. With no G0
    (``g0_pitch_m`` None) G0 has no effect.
    """
    if not g2_pitch_m > 0:
        raise ValueError(f"g2_pitch_m must be > 0, got {g2_pitch_m!r}")
    if g0_pitch_m is None:
        return g2_m
    if not g0_pitch_m > 0:
        raise ValueError(f"g0_pitch_m must be > 0, got {g0_pitch_m!r}")
    return g2_m + g0_m * g2_pitch_m / g0_pitch_m


class _BusyCompletion:
    """Makes a put-callback on ``Acquire`` complete only when the acquisition has ended."""

    def __init__(self, idle: asyncio.Event) -> None:
        self.idle = idle

    async def __call__(self) -> None:
        await self.idle.wait()  # the reply follows Acquire_RBV 1 -> 0 (sim.ioc.context)


class SimDetector:
    """Camera ``cam1:`` and HDF5 plugin ``HDF1:`` under one detector prefix."""

    def __init__(
        self,
        prefix: str,
        *,
        instrument: Instrument,
        simulation: Simulation,
        motors: dict[str, MotorRecord],
        shutter: ShutterGroup,
        beam: BeamGroup,
        tags: ScanTagsGroup,
        faults: FaultsGroup,
        spec: DetectorSpec | None = None,
        sequencer: StepSequencerGroup | None = None,
    ) -> None:
        self.instrument = instrument
        self.simulation = simulation
        self.spec = DetectorSpec() if spec is None else spec
        self.motors = motors
        self.shutter = shutter
        self.beam = beam
        self.tags = tags
        self.faults = faults
        self.sequencer = sequencer
        rows, cols = instrument.detector.shape
        self.shape = (rows, cols)
        exposure_s = simulation.detector.reference_exposure_s
        overrides = {**_size_pvs(rows, cols), "AcquireTime": repr(exposure_s)}
        self.cam = ADPVs(prefix + "cam1:", CAM_TABLE, overrides=overrides)
        self.hdf = HDF5FilePlugin(
            prefix + "HDF1:",
            header_for=self.header_for,
            scan_uid=lambda: str(self.tags.scan_uid.value),
            writer_delay_s=lambda: self.faults.writer_delay_s,
        )
        self.hdf.capture_end_hooks.append(self._forget_plan)
        self._background: set[asyncio.Task[Any]] = set()
        self._renderer: FrameRenderer | None = None
        self._rng = np.random.default_rng(self.spec.seed)
        self._idle = asyncio.Event()
        self._idle.set()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._gating: asyncio.Future[None] | None = None  # the exposure gate being waited on
        self._t0 = time.monotonic()
        self._unique_id = 0
        self._wire_acquire()
        for suffix, check in _put_checks(rows, cols).items():
            self.cam.on_put(suffix, self._checked(suffix, check))

    # -- assembly --------------------------------------------------------------------------------
    @property
    def pvdb(self) -> dict[str, Any]:
        """Camera and plugin PVs."""
        return {**self.cam.pvdb, **self.hdf.pvdb}

    @property
    def frame_hooks(self) -> list[FrameHook]:
        """Callables run with every frame written to the file (``WrittenFrame``)."""
        return self.hdf.frame_hooks

    def header_for(self, scan_uid: str) -> ScanHeader:
        """Scan-file header: this beamline's instrument and the scan plan in ``TAG:ScanPlan``."""
        return ScanHeader(scan_uid, self.instrument, self.tags.plan(), "uint16")

    def _forget_plan(self) -> None:
        """A closed file ends its run's scan plan: a later run records its own, or none."""
        task = asyncio.get_running_loop().create_task(self.tags.scan_plan.write(""))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def renderer(self) -> FrameRenderer:
        """The frame renderer (built on first use: phantom and reference pattern)."""
        if self._renderer is None:
            self._renderer = FrameRenderer(
                self.instrument, self.simulation, 0 if self.spec.seed is None else self.spec.seed
            )
        return self._renderer

    async def prepare(self) -> None:
        """Build the renderer in a worker thread (server start-up), so the first frame is quick."""
        await asyncio.to_thread(self.renderer)

    def close_now(self) -> None:
        """Close any open file (server shutdown)."""
        self.hdf.close_now()

    # -- put hooks -------------------------------------------------------------------------------
    def _wire_acquire(self) -> None:
        """A put to ``Acquire`` starts or stops an acquisition and its put-callback completes when
        the acquisition has ended; the sequencer, if any, starts its queued series through this
        camera and sees whether it is idle."""
        acquire = self.cam["Acquire"]
        assert isinstance(acquire, HookedPV)
        acquire.completion = _BusyCompletion(self._idle)
        self.cam.on_put("Acquire", self._put_acquire)
        if self.sequencer is not None:
            self.sequencer.start_camera = self._start_queued
            self.sequencer.camera_idle = self._idle.is_set

    def _checked(
        self, suffix: str, check: Callable[[str, Any], None]
    ) -> Callable[[Any], Awaitable[None]]:
        async def hook(value: Any) -> None:
            check(suffix, value)
            await self.cam[suffix].rbv.write(value)

        return hook

    async def _put_acquire(self, value: Any) -> None:
        if value in (1, "Acquire"):
            if self._idle.is_set():
                await self._begin()
        else:
            self._stop.set()
            if self._gating is not None:  # a first exposure waiting for a motor that never comes
                self._gating.cancel()

    async def _begin(self) -> None:
        """Start an acquisition (the camera is idle)."""
        self._idle.clear()
        self._stop.clear()
        if self.sequencer is not None:
            self.sequencer.begin()  # before any later put (NumSteps) is processed
        await self.cam["Acquire_RBV"].write(1)
        self._task = asyncio.create_task(self._acquire())

    async def _start_queued(self, frames: int) -> None:
        """The sequencer starts its queued series: an acquisition of ``frames`` frames."""
        if not self._idle.is_set():
            raise RuntimeError("the camera is acquiring")
        await self.cam["ImageMode"].write("Multiple")
        await self.cam["NumImages"].write(frames)
        await self.cam["Acquire"].write(1, verify_value=False)
        await self._begin()

    # -- acquisition ------------------------------------------------------------------------------
    def _n_frames(self) -> float:
        mode = self.cam.value("ImageMode")
        if mode == "Single":
            return 1
        if mode == "Multiple":
            return int(self.cam.value("NumImages"))
        return math.inf

    def instrument_state(self) -> tuple[FrameState, dict[str, Any], str, str]:
        """Instrument state at the start of an exposure: (physics state, tags + readbacks, frame
        type, scan uid); latches the encoder reading for an armed sequencer."""
        geo = self.instrument.geometry
        motors = self.motors
        piezo = motors["g2_x"]
        g2_true_m = piezo.user_position * 1e-6  # um -> m
        g0_m = motors["g0_x"].user_position * 1e-6
        half_fov_m = 0.5 * self.instrument.field_of_view_m[1]
        reach_m = half_fov_m + 0.5 * self.simulation.phantom.rod_diameter_m
        sample_in = abs(motors["sample_x"].user_position - self.spec.sample_in_mm) * 1e-3 < reach_m
        current = float(self.beam.current.value)
        rotation = motors["rotation"]
        state = FrameState(
            rotation_deg=rotation.user_position,
            g2_position_m=effective_g2_position_m(g2_true_m, g0_m, geo.g2_pitch_m, geo.g0_pitch_m),
            sample_in=sample_in,
            shutter_open=self.shutter.is_open,
            exposure_s=float(self.cam.value("AcquireTime")),
            ring_current_ma=max(current, 0.0),
            time_s=time.monotonic() - self._t0,
            g2_roll_rad=motors["g2_roll"].user_position * 1e-3,  # mrad -> rad
            g2_distance_m=motors["g2_z"].user_position * 1e-3,  # mm -> m
        )
        tags = self.tags
        frame_type = str(tags.frame_type.value)
        g2_encoder_um = piezo.readback()
        step_offset = 0
        if self.sequencer is not None:  # the frame and the sequencer get the same reading
            self.sequencer.latch(g2_encoder_um)
            step_offset = self.sequencer.step_offset()
        row = {
            "image_key": FRAME_TYPES.index(frame_type),
            "angle_index": int(tags.angle_index.value),
            "series_index": int(tags.series_index.value),
            "step_index": int(tags.step_index.value) + step_offset,
            "attempt": int(tags.attempt.value),
            "g2_position_m": g2_encoder_um * 1e-6,
            "rotation_deg": rotation.readback(),
            "ring_current_ma": current,
        }
        return state, row, frame_type, str(tags.scan_uid.value)

    async def _gate(self, opened: Awaitable[None]) -> bool:
        """Wait until ``opened`` returns; False if Acquire = 0 stopped the acquisition first
        (the stop cancels the wait, see ``_put_acquire``)."""
        if self._stop.is_set():
            return False
        task = asyncio.ensure_future(opened)
        self._gating = task
        try:
            await task
        except asyncio.CancelledError:
            if self._stop.is_set() and task.cancelled():
                return False
            raise
        finally:
            self._gating = None
        return True

    async def _exposure(self, seconds: float) -> bool:
        """Wait ``seconds``; False if Acquire = 0 aborted it."""
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            return True
        return False

    async def _acquire(self) -> None:
        cam = self.cam
        seq = self.sequencer  # begun by the Acquire put
        n = self._n_frames()
        # Frame i is handed to the plugins while frame i + 1 exposes (a camera in Multiple mode
        # keeps exposing while the driver runs the plugin callbacks); the writes stay in order
        # and the acquisition ends only when the last one is done.
        writing: asyncio.Task[None] | None = None
        queued = None
        try:
            await cam["NumImagesCounter_RBV"].write(0)
            await cam["StatusMessage_RBV"].write("Acquiring")
            while True:
                writing = await self._take_frames(n, writing)
                if seq is None or self._stop.is_set():
                    break
                # Every frame is exposed: the camera goes on into the sequencer's queued
                # series, if any, without waiting for the last frame's write (the writes stay
                # in order), as a hardware-sequenced camera keeps acquiring.
                chained = await seq.chain(writing)
                if chained is None:
                    break
                await cam["ImageMode"].write("Multiple")
                await cam["NumImages"].write(chained.num_images)
                await cam["NumImagesCounter_RBV"].write(0)
                n = chained.num_images
        finally:
            try:
                if writing is not None:
                    await writing
            finally:
                if seq is not None:
                    try:
                        queued = await seq.end(aborted=self._stop.is_set())
                    except Exception:  # a queued series that cannot start leaves it idle
                        log.exception("the queued series did not start")
                await cam["DetectorState_RBV"].write("Idle")
                await cam["StatusMessage_RBV"].write("Idle")
                await cam["Acquire_RBV"].write(0)
                await cam["Acquire"].write(0, verify_value=False)
                self._idle.set()  # a put-callback of Acquire completes (before a queued start)
        if queued is not None:  # queued while the acquisition was ending
            await self._start_queued(queued.num_images)

    async def _take_frames(
        self, n: float, writing: asyncio.Task[None] | None
    ) -> asyncio.Task[None] | None:
        """Expose and read out ``n`` frames (fewer when Acquire = 0 stops it); each frame's
        delivery to the plugins is chained after ``writing``; the last delivery task."""
        cam = self.cam
        loop = asyncio.get_running_loop()
        seq = self.sequencer
        done = 0
        while done < n and not self._stop.is_set():
            if seq is not None:
                # the motors' in-position outputs gate the first exposure (GateMotion, a queued
                # series; Acquire = 0 ends a wait on a stalled motor), the piezo's on-target
                # output every exposure
                if done == 0 and not await self._gate(seq.in_position()):
                    break
                await seq.on_target()
            t_start = loop.time()
            time_unix = time.time()
            state, row, frame_type, scan_uid = self.instrument_state()
            if seq is not None:
                await seq.publish_latched()
            exposure = float(cam.value("AcquireTime"))
            # The frame integrates the state at the start of the exposure, so it is rendered
            # in a worker thread while the exposure runs (the loop stays free for CA).
            renderer = self._renderer
            if renderer is None:
                renderer = await asyncio.to_thread(self.renderer)
            rendering = asyncio.ensure_future(asyncio.to_thread(renderer.render, state, self._rng))
            await cam["DetectorState_RBV"].write("Acquire")
            if not await self._exposure(t_start + exposure - loop.time()):
                await asyncio.gather(rendering, return_exceptions=True)
                break
            if seq is not None:  # the exposure output triggers the step at once
                await seq.exposure_ended(more_frames=done + 1 < n)
            await cam["DetectorState_RBV"].write("Readout")
            frame = await rendering
            late = await self.faults.take_late()
            wait = exposure + self.spec.readout_s + late - (loop.time() - t_start)
            if wait > 0:
                await asyncio.sleep(wait)
            done += 1
            self._unique_id += 1
            await pvs_add(cam, "ArrayCounter")
            await cam["NumImagesCounter_RBV"].write(done)
            dropped = await self.faults.take_drop()
            if cam.value("ArrayCallbacks") == "Enable":
                event = FrameEvent(
                    frame=frame,
                    tags=row,
                    frame_type=frame_type,
                    scan_uid=scan_uid,
                    unique_id=self._unique_id,
                    time_unix=time_unix,
                )
                writing = asyncio.create_task(self._deliver(writing, event, dropped))
            period = float(cam.value("AcquirePeriod"))
            rest = period - (loop.time() - t_start)
            if done < n and rest > 0 and not await self._exposure(rest):
                break
        return writing

    async def _deliver(
        self, previous: asyncio.Task[None] | None, event: FrameEvent, dropped: bool
    ) -> None:
        """Give ``event`` to the file plugin after the frame before it."""
        if previous is not None:
            await previous
        await self.hdf.receive(event, dropped=dropped)


def _positive(suffix: str, value: Any) -> None:
    if not (math.isfinite(float(value)) and float(value) > 0):
        raise ValueError(f"{suffix} must be > 0, got {value!r}")


def _nonnegative(suffix: str, value: Any) -> None:
    if not (math.isfinite(float(value)) and float(value) >= 0):
        raise ValueError(f"{suffix} must be >= 0, got {value!r}")


def _at_least_one(suffix: str, value: Any) -> None:
    if int(value) < 1:
        raise ValueError(f"{suffix} must be >= 1, got {value!r}")


def _exactly(allowed: Any) -> Callable[[str, Any], None]:
    def check(suffix: str, value: Any) -> None:
        if value != allowed:
            raise ValueError(f"{suffix}: only {allowed!r} is simulated, got {value!r}")

    return check


def _size_pvs(rows: int, cols: int) -> dict[str, str]:
    """Initial values of the sensor and frame size PVs: ``rows`` x ``cols`` [px], the frame
    size in bytes (uint16 pixels)."""
    return {
        "MaxSizeX_RBV": str(cols),
        "MaxSizeY_RBV": str(rows),
        "SizeX": str(cols),
        "SizeY": str(rows),
        "ArraySizeX_RBV": str(cols),
        "ArraySizeY_RBV": str(rows),
        "ArraySize_RBV": str(rows * cols * 2),
    }


def _put_checks(rows: int, cols: int) -> dict[str, Callable[[str, Any], None]]:
    """The check a client put to each camera setting must pass (``check(suffix, value)`` raises
    ValueError to refuse it): exposure and period [s], one exposure per image, 16-bit mono frames
    on internal triggers, the full ``rows`` x ``cols`` [px] sensor unbinned."""
    return {
        "AcquireTime": _positive,
        "AcquirePeriod": _nonnegative,
        "NumImages": _at_least_one,
        "NumExposures": _exactly(1),
        "DataType": _exactly("UInt16"),
        "ColorMode": _exactly("Mono"),
        "TriggerMode": _exactly("Internal"),
        "SizeX": _exactly(cols),
        "SizeY": _exactly(rows),
        "MinX": _exactly(0),
        "MinY": _exactly(0),
        "BinX": _exactly(1),
        "BinY": _exactly(1),
    }
