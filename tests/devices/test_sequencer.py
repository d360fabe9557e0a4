"""Hardware phase-step sequencer against the simulated IOC: the piezo steps after each exposure."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import epics
import h5py
import numpy as np
import pytest

from contracts.scanfile import DATA_PATH, FRAMES_GROUP
from devices import (
    PiezoStepper,
    ScanTags,
    SequencedAcquisition,
    SequencedFrames,
    Shutter,
    StepSequencer,
    TalbotDetector,
)
from devices.detector import FrameLost
from tests.conftest import IocHandle

EXPOSURE_S = 0.02


@pytest.fixture
def rig(
    sim_ioc: IocHandle, tmp_path: Path
) -> Iterator[tuple[TalbotDetector, StepSequencer, PiezoStepper, ScanTags]]:
    det = TalbotDetector(sim_ioc.pv("detector"), name="det")
    det.hdf5.write_path_template = str(tmp_path)
    det.hdf5.reg_root = str(tmp_path)
    seq = StepSequencer(sim_ioc.pv("sequencer"), name="seq")
    piezo = PiezoStepper(sim_ioc.pv("g2", "X"), name="piezo")
    tags = ScanTags(sim_ioc.pv("tags"), name="tags")
    for device in (det, seq, piezo, tags):
        device.wait_for_connection(timeout=10.0)
    det.cam.acquire_time.put(EXPOSURE_S, wait=True)
    det.stage()
    yield det, seq, piezo, tags
    det.unstage()
    det.cam.num_images.put(1, wait=True)
    seq.num_steps.put(0, wait=True)
    piezo.move(10.0, wait=True, timeout=10.0)


def _acquire(det: TalbotDetector, frames: int) -> str:
    """Take ``frames`` frames in one acquisition of the staged detector, unstage; the file's
    path. (Stage first: staging an unprimed detector takes a frame, which would use up an
    arming.)"""
    det.cam.num_images.put(frames, wait=True)
    det.acquire().wait(timeout=30.0)
    path = str(det.hdf5.full_file_name.get())
    det.unstage()
    return path


def _arm(
    rig: tuple[TalbotDetector, StepSequencer, PiezoStepper, ScanTags],
    start_um: float,
    step_um: float,
    steps: int,
) -> None:
    """Piezo at ``start_um``, step-index tag 0, sequencer armed for ``steps`` of ``step_um``."""
    _det, seq, piezo, tags = rig
    piezo.move(start_um, wait=True, timeout=10.0)
    tags.step_index.put(0, wait=True)
    seq.step_size.put(step_um, wait=True)
    seq.num_steps.put(steps, wait=True)


def test_armed_acquisition_steps_the_piezo_after_each_exposure(
    rig: tuple[TalbotDetector, StepSequencer, PiezoStepper, ScanTags], sim_ioc: IocHandle
) -> None:
    det, seq, piezo, tags = rig
    shutter = Shutter(sim_ioc.pv("shutter"), name="shutter")
    shutter.wait_for_connection(timeout=10.0)
    shutter.open().wait(timeout=10.0)
    tags.frame_type.put("reference", wait=True)
    _arm(rig, 20.0, 0.25, 3)
    assert seq.armed.get(use_monitor=False) == 1
    try:
        path = _acquire(det, 4)
    finally:
        shutter.close().wait(timeout=10.0)

    # the sequencer disarms at the end; it took 3 steps and latched 4 encoder readings
    assert seq.armed.get(use_monitor=False) == 0
    assert seq.step_counter.get(use_monitor=False) == 3
    assert seq.num_captured.get() == 4
    latched = np.asarray(seq.positions.get())[:4]
    deadband = piezo.retry_deadband.get()
    np.testing.assert_allclose(latched, [20.0, 20.25, 20.5, 20.75], atol=deadband)
    assert piezo.user_setpoint.get(use_monitor=False) == pytest.approx(20.75)
    with h5py.File(path, "r") as f:
        frames = f[DATA_PATH][()].astype(float)
        group = f[FRAMES_GROUP]
        # every frame carries its step index and the encoder reading latched for it [m]
        np.testing.assert_array_equal(group["step_index"][()], [0, 1, 2, 3])
        np.testing.assert_array_equal(group["g2_position_m"][()], latched * 1e-6)
        start_s = group["timestamp_s"][()]
    # the next exposure waits for the piezo's step and its 5 ms settling
    assert np.all(np.diff(start_s) >= EXPOSURE_S + 0.005)
    # the fringes moved a quarter of the 1 um period per frame: the 4-frame first harmonic
    # recovers the interferometer's visibility (0.35 in the tiny preset, lower behind the rod);
    # four frames of an unmoved grating would give only noise (~0.01)
    k = np.arange(4)[:, None, None]
    c1 = np.abs(np.sum(frames * np.exp(-2j * math.pi * k / 4), axis=0)) * 2 / 4
    visibility = np.median(c1 / frames.mean(axis=0))
    assert 0.2 < visibility < 0.45


def test_unarmed_acquisition_leaves_the_piezo_and_tags_alone(
    rig: tuple[TalbotDetector, StepSequencer, PiezoStepper, ScanTags],
) -> None:
    det, seq, piezo, tags = rig
    piezo.move(15.0, wait=True, timeout=10.0)
    tags.step_index.put(2, wait=True)
    seq.num_steps.put(0, wait=True)
    path = _acquire(det, 3)
    assert piezo.user_setpoint.get(use_monitor=False) == pytest.approx(15.0)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f[FRAMES_GROUP]["step_index"][()], [2, 2, 2])


def test_refused_puts_leave_the_sequencer_as_it_was(
    rig: tuple[TalbotDetector, StepSequencer, PiezoStepper, ScanTags],
) -> None:
    det, seq, _piezo, _tags = rig
    seq.step_size.put(0.2, wait=True)
    for bad in (math.nan, 500.0):
        epics.caput(seq.step_size.pvname, bad, wait=True, timeout=5.0)
        assert seq.step_size.get(use_monitor=False) == pytest.approx(0.2)
    # NumSteps cannot change while the camera acquires
    det.cam.num_images.put(3, wait=True)
    status = det.acquire()
    deadline = time.monotonic() + 10.0
    while det.cam.acquire.get(use_monitor=False) != 1:  # Acquire_RBV: the camera acquires
        assert time.monotonic() < deadline
        time.sleep(0.001)
    epics.caput(seq.num_steps.pvname, 2, wait=True, timeout=5.0)
    assert seq.armed.get(use_monitor=False) == 0
    status.wait(timeout=30.0)


def test_a_step_beyond_the_soft_limit_is_refused_and_the_frames_say_so(
    rig: tuple[TalbotDetector, StepSequencer, PiezoStepper, ScanTags],
) -> None:
    det, seq, piezo, tags = rig
    _arm(rig, 99.0, 0.4, 3)
    frames = SequencedFrames(det, seq, piezo, tags.step_index, [piezo, tags])
    frames.set([99.0, 99.4, 99.8, 100.2]).wait(timeout=1.0)
    det.cam.num_images.put(4, wait=True)
    acquisition = SequencedAcquisition(det, frames).trigger()
    # the frames taken after the refused step (the one after frame 1 would pass the 99.5 um
    # limit) have no reading: the error names the cause; the frames before it are good
    refused = None
    for i in range(4):
        frames.trigger().wait(timeout=10.0)
        try:
            reading = frames.read()
        except RuntimeError as exc:
            refused = (i, str(exc))
            break
        assert reading["piezo"]["value"] == pytest.approx([99.0, 99.4][i], abs=0.01)
    acquisition.wait(timeout=30.0)
    det.unstage()
    assert refused is not None
    assert refused[0] == 2, refused
    assert "refused" in refused[1]
    assert piezo.user_setpoint.get(use_monitor=False) == pytest.approx(99.4)
    assert "soft limits" in seq.message.get(use_monitor=False)


def test_frames_are_readable_while_the_acquisition_runs(
    rig: tuple[TalbotDetector, StepSequencer, PiezoStepper, ScanTags],
) -> None:
    det, seq, piezo, tags = rig
    n = 8
    _arm(rig, 30.0, 0.25, n - 1)
    frames = SequencedFrames(det, seq, piezo, tags.step_index, [tags])
    frames.set([30.0 + 0.25 * k for k in range(n)]).wait(timeout=1.0)
    det.cam.num_images.put(n, wait=True)
    watched = (det.hdf5.num_captured, seq.latched, seq.finished)
    callbacks_before = [len(s._callbacks[s.SUB_VALUE]) for s in watched]
    acquisition = SequencedAcquisition(det, frames).trigger()
    encoder = []
    for k in range(n):
        frames.trigger().wait(timeout=10.0)
        if k == 0:  # frame 0 is in the file ~25 ms in, the acquisition ends ~200 ms in
            assert not acquisition.done
        reading = frames.read()
        encoder.append(reading["piezo"]["value"])
        assert reading["piezo_user_setpoint"]["value"] == pytest.approx(30.0 + 0.25 * k)
        assert reading["tags_step_index"]["value"] == k
    acquisition.wait(timeout=30.0)
    det.unstage()
    # each reading carries the encoder value the sequencer latched for that frame
    latched = np.asarray(seq.positions.get())[:n]
    np.testing.assert_array_equal(encoder, latched)
    assert frames.lost() == 0
    # every frame's wait unsubscribed from the counts it watched
    assert [len(s._callbacks[s.SUB_VALUE]) for s in watched] == callbacks_before
    with pytest.raises(RuntimeError, match="already read"):
        frames.trigger().wait(timeout=1.0)


def test_frames_waited_for_after_the_acquisition_ended_are_read_or_named_lost(
    rig: tuple[TalbotDetector, StepSequencer, PiezoStepper, ScanTags],
) -> None:
    det, seq, piezo, tags = rig
    _arm(rig, 30.0, 0.25, 1)
    frames = SequencedFrames(det, seq, piezo, tags.step_index, [tags])
    frames.set([30.0, 30.25, 30.5]).wait(timeout=1.0)
    with pytest.raises(RuntimeError, match="no acquisition started"):
        frames.trigger().wait(timeout=1.0)
    det.cam.num_images.put(2, wait=True)  # one frame short of the three positions
    watched = (det.hdf5.num_captured, seq.latched, seq.finished)
    callbacks_before = [len(s._callbacks[s.SUB_VALUE]) for s in watched]
    SequencedAcquisition(det, frames).trigger().wait(timeout=30.0)
    det.unstage()
    # the two frames in the file are decided at once; the third when its wait finds the
    # acquisition over without it
    for k in range(2):
        frames.trigger().wait(timeout=1.0)
        assert frames.read()["piezo_user_setpoint"]["value"] == pytest.approx(30.0 + 0.25 * k)
    frames.trigger().wait(timeout=1.0)
    with pytest.raises(FrameLost, match=r"frame 2 of the acquisition did not reach the file"):
        frames.read()
    assert frames.lost() == 1
    assert [len(s._callbacks[s.SUB_VALUE]) for s in watched] == callbacks_before


@pytest.mark.parametrize("gate", [0, 1])
def test_the_motion_gate_holds_the_first_exposure_until_the_rotation_has_arrived(
    rig: tuple[TalbotDetector, StepSequencer, PiezoStepper, ScanTags],
    sim_ioc: IocHandle,
    gate: int,
) -> None:
    det, seq, _piezo, _tags = rig
    rotation = sim_ioc.pvs.motor_records()["rotation"]
    start = float(epics.caget(f"{rotation}.RBV", timeout=5.0))
    target = start + 90.0  # ~0.5 s at the stage's speed: many 20-ms exposures
    seq.gate_motion.set(gate).wait(timeout=10.0)
    _arm(rig, 20.0, 0.25, 1)
    try:
        assert epics.caput(rotation, target, wait=False) == 1
        path = _acquire(det, 2)
    finally:
        seq.gate_motion.set(0).wait(timeout=10.0)
        epics.caput(rotation, start, wait=True, timeout=30)
    with h5py.File(path, "r") as f:
        first = float(f[FRAMES_GROUP]["rotation_deg"][0])
    if gate:  # exposed once the rotation had arrived
        assert first == pytest.approx(target, abs=1e-3)
    else:  # exposed while it rotated
        assert start < first < target - 1.0


def _queue_refused(seq: StepSequencer, series_id: int) -> bool:
    """Whether the IOC refuses to queue ``series_id`` (a refused put completes all the same:
    the queue's readbacks tell)."""
    seq.queue.set(series_id).wait(timeout=10.0)
    ids = (seq.queued.get(use_monitor=False), seq.series.get(use_monitor=False))
    return series_id not in ids


def _wait_for(predicate: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def _queue_next(
    seq: StepSequencer, *, rotation: float, position: float, angle: int, frames: int, attempt: int
) -> None:
    """Put the ``Next:`` PVs of a projection series (the queue put is left to the caller)."""
    for signal, value in (
        (seq.next_rotation, rotation),
        (seq.next_position, position),
        (seq.next_frame_type, "projection"),
        (seq.next_angle_index, angle),
        (seq.next_series_index, -1),
        (seq.next_attempt, attempt),
        (seq.next_num_images, frames),
    ):
        signal.set(value).wait(timeout=10.0)


def test_a_queued_series_starts_when_the_acquisition_before_it_ends(
    rig: tuple[TalbotDetector, StepSequencer, PiezoStepper, ScanTags], sim_ioc: IocHandle
) -> None:
    det, seq, piezo, tags = rig
    rotation = sim_ioc.pvs.motor_records()["rotation"]
    start_deg = float(epics.caget(f"{rotation}.RBV", timeout=5.0))
    tags.frame_type.put("projection", wait=True)
    tags.angle_index.put(0, wait=True)
    tags.attempt.put(0, wait=True)
    _arm(rig, 20.0, 0.25, 2)
    det.cam.num_images.put(3, wait=True)
    det.cam.acquire_time.put(0.1, wait=True)  # the queue puts below land while it acquires
    series_id = 424242
    try:
        _queue_next(seq, rotation=start_deg + 5.0, position=30.0, angle=7, frames=4, attempt=2)
        first = det.acquire()
        seq.queue.set(series_id).wait(timeout=10.0)
        assert seq.queued.get(use_monitor=False) == series_id
        assert _queue_refused(seq, series_id + 1)  # one entry: already queued
        first.wait(timeout=30.0)
        # the IOC started the queued series itself, with no put from the client
        _wait_for(lambda: int(seq.finished.get(use_monitor=False)[0]) == series_id)
        finished = np.asarray(seq.finished.get(use_monitor=False))
        assert seq.queued.get(use_monitor=False) == 0
        assert seq.series.get(use_monitor=False) == series_id
        path = str(det.hdf5.full_file_name.get())
        det.unstage()
    finally:
        det.cam.acquire_time.put(EXPOSURE_S, wait=True)
        epics.caput(rotation, start_deg, wait=True, timeout=30)
    assert int(finished[1]) == 4
    deadband = piezo.retry_deadband.get()
    np.testing.assert_allclose(finished[2:6], [30.0, 30.25, 30.5, 30.75], atol=deadband)
    with h5py.File(path, "r") as f:
        group = f[FRAMES_GROUP]
        angle = group["angle_index"][()]
        step = group["step_index"][()]
        attempt = group["attempt"][()]
        rotation_deg = group["rotation_deg"][()]
        encoder_m = group["g2_position_m"][()]
    # both series in one file, each frame with its series' tags and readings
    np.testing.assert_array_equal(angle, [0, 0, 0, 7, 7, 7, 7])
    np.testing.assert_array_equal(step, [0, 1, 2, 0, 1, 2, 3])
    np.testing.assert_array_equal(attempt, [0, 0, 0, 2, 2, 2, 2])
    np.testing.assert_array_equal(encoder_m[3:], finished[2:6] * 1e-6)
    # the in-position gate held the queued series' first exposure until the rotation arrived
    np.testing.assert_allclose(rotation_deg[:3], start_deg, atol=1e-3)
    np.testing.assert_allclose(rotation_deg[3:], start_deg + 5.0, atol=1e-3)


def test_a_series_queued_while_the_camera_is_idle_starts_at_once(
    rig: tuple[TalbotDetector, StepSequencer, PiezoStepper, ScanTags], sim_ioc: IocHandle
) -> None:
    det, seq, _piezo, tags = rig
    rotation = sim_ioc.pvs.motor_records()["rotation"]
    start_deg = float(epics.caget(f"{rotation}.RBV", timeout=5.0))
    seq.step_size.set(0.25).wait(timeout=10.0)
    # NaN: the rotation stays where it is
    _queue_next(seq, rotation=math.nan, position=40.0, angle=3, frames=3, attempt=0)
    seq.queue.set(777).wait(timeout=10.0)
    _wait_for(lambda: int(seq.finished.get(use_monitor=False)[0]) == 777)
    _wait_for(lambda: det.cam.acquire.get(use_monitor=False) == 0)
    assert float(epics.caget(f"{rotation}.RBV", timeout=5.0)) == pytest.approx(start_deg)
    assert tags.angle_index.get(use_monitor=False) == 3
    assert det.hdf5.num_captured.get(use_monitor=False) == 3
    det.unstage()


def test_queue_refusals_and_an_abort_cancels_the_queued_series(
    rig: tuple[TalbotDetector, StepSequencer, PiezoStepper, ScanTags], sim_ioc: IocHandle
) -> None:
    det, seq, _piezo, _tags = rig
    seq.step_size.set(0.25).wait(timeout=10.0)
    # a target outside the soft limits (the piezo's first or last step, the rotation) or a
    # negative id is refused, and nothing is queued
    for position, rotation in ((150.0, 0.0), (99.6, 0.0), (50.0, 1e6)):
        _queue_next(seq, rotation=rotation, position=position, angle=0, frames=3, attempt=0)
        assert _queue_refused(seq, 5)
        assert seq.queued.get(use_monitor=False) == 0
    assert _queue_refused(seq, -1)
    # Acquire = 0 ends the running acquisition and cancels the queue: the series never starts
    _queue_next(seq, rotation=math.nan, position=50.0, angle=1, frames=3, attempt=0)
    det.cam.num_images.put(50, wait=True)
    running = det.acquire()
    _wait_for(lambda: det.cam.acquire.get(use_monitor=False) == 1)
    seq.queue.set(9).wait(timeout=10.0)
    det.cam.acquire.put(0, wait=True)
    running.wait(timeout=30.0)
    time.sleep(0.2)
    assert seq.queued.get(use_monitor=False) == 0
    assert seq.series.get(use_monitor=False) != 9
    assert det.cam.acquire.get(use_monitor=False) == 0
    det.unstage()


class _Attempts:
    """Counts takes like ``plans.attempts.SeriesAttempts`` (no tag written)."""

    def __init__(self) -> None:
        self.takes: dict[Any, int] = {}

    def start(self, key: Any) -> None:
        self.takes[key] = self.takes.get(key, 0) + 1

    def attempt(self, key: Any) -> int:
        return self.takes.get(key, 0) - 1

    def started_elsewhere(self, key: Any, attempt: int) -> None:
        self.takes[key] = max(self.takes.get(key, 0), attempt + 1)


def _read_all(frames: SequencedFrames, n: int) -> list[float]:
    encoder = []
    for _ in range(n):
        frames.trigger().wait(timeout=30.0)
        encoder.append(frames.read()["piezo"]["value"])
    return encoder


def test_sequenced_acquisition_adopts_the_series_it_queued_and_pause_cancels_the_queue(
    rig: tuple[TalbotDetector, StepSequencer, PiezoStepper, ScanTags], sim_ioc: IocHandle
) -> None:
    from devices import SeriesArming
    from devices.motors import RotationStage

    det, seq, piezo, tags = rig
    rotation = RotationStage(sim_ioc.pvs.motor_records()["rotation"], name="rotation")
    rotation.wait_for_connection(timeout=10.0)
    start_deg = float(rotation.position)
    frames = SequencedFrames(det, seq, piezo, tags.step_index, [tags, rotation])
    acquisition = SequencedAcquisition(det, frames)
    attempts = _Attempts()
    positions = (20.0, 20.25, 20.5)

    def arming(angle: int) -> SeriesArming:
        return SeriesArming(
            key=("projection", angle), frame_type="projection", angle_index=angle,
            series_index=-1, positions=positions, rotation_deg=start_deg + angle,
            attempts=attempts,
        )  # fmt: skip

    # long enough exposures that each check below happens while series 1 is acquired
    det.cam.acquire_time.put(0.2, wait=True)
    try:
        attempts.start(("projection", 0))
        acquisition.set(arming(0)).wait(timeout=10.0)
        first = acquisition.trigger()
        acquisition.next_series.set(arming(1)).wait(timeout=10.0)
        queued_id = int(seq.queued.get(use_monitor=False))
        assert queued_id > 0
        readings0 = _read_all(frames, 3)
        first.wait(timeout=30.0)
        assert frames.lost() == 0
        # the next series' set adopts what the IOC started: nothing is put
        attempts.start(("projection", 1))
        puts_before = seq.queue.get(use_monitor=False)
        acquisition.set(arming(1)).wait(timeout=10.0)
        assert seq.queue.get(use_monitor=False) == puts_before == queued_id
        second = acquisition.trigger()
        acquisition.next_series.set(arming(2)).wait(timeout=10.0)
        assert int(seq.queued.get(use_monitor=False)) not in (0, queued_id)
        frames.trigger().wait(timeout=30.0)
        reading = frames.read()
        assert reading["tags_angle_index"]["value"] == 1
        assert reading["rotation"]["value"] == pytest.approx(start_deg + 1.0, abs=1e-3)
        # a pause (a suspension) cancels the queued series and stops the running one
        acquisition.pause()
        assert second.done
        assert seq.queued.get(use_monitor=False) == 0
        assert det.cam.acquire.get(use_monitor=False) == 0
        time.sleep(0.2)
        assert int(seq.series.get(use_monitor=False)) == queued_id  # series 2 never started
        # the re-take of series 1 is handed over afresh, with its next attempt
        attempts.start(("projection", 1))
        acquisition.set(arming(1)).wait(timeout=10.0)
        retake = acquisition.trigger()
        readings1 = _read_all(frames, 3)
        retake.wait(timeout=30.0)
        assert tags.attempt.get(use_monitor=False) == 1
        path = str(det.hdf5.full_file_name.get())
        det.unstage()
    finally:
        det.cam.acquire_time.put(EXPOSURE_S, wait=True)
        rotation.move(start_deg, wait=True, timeout=30.0)
    deadband = piezo.retry_deadband.get()
    np.testing.assert_allclose(readings0, positions, atol=deadband)
    np.testing.assert_allclose(readings1, positions, atol=deadband)
    with h5py.File(path, "r") as f:
        group = f[FRAMES_GROUP]
        angle = list(group["angle_index"][()])
        attempt = list(group["attempt"][()])
        encoder_m = group["g2_position_m"][()]
    # series 0, the stopped first take of series 1 (attempt 0), its re-take (attempt 1)
    n_stopped = len(angle) - 6
    assert 1 <= n_stopped <= 3
    assert angle == [0] * 3 + [1] * (n_stopped + 3)
    assert attempt == [0] * (3 + n_stopped) + [1] * 3
    # every reading is the encoder value in the file for that frame
    np.testing.assert_array_equal(encoder_m[:3], np.asarray(readings0) * 1e-6)
    np.testing.assert_array_equal(encoder_m[-3:], np.asarray(readings1) * 1e-6)


def test_acquire_0_ends_a_queued_series_waiting_for_a_stalled_piezo(
    rig: tuple[TalbotDetector, StepSequencer, PiezoStepper, ScanTags], sim_ioc: IocHandle
) -> None:
    det, seq, piezo, _tags = rig
    stall = sim_ioc.pv("faults", "PiezoStall")
    seq.step_size.set(0.25).wait(timeout=10.0)
    written = int(det.hdf5.num_captured.get(use_monitor=False))
    assert epics.caput(stall, "Stall", wait=True) == 1
    try:
        _queue_next(seq, rotation=math.nan, position=35.0, angle=2, frames=3, attempt=0)
        seq.queue.set(31337).wait(timeout=10.0)
        # the camera acquires the queued series, but its first exposure waits for the piezo
        _wait_for(lambda: det.cam.acquire.get(use_monitor=False) == 1)
        time.sleep(0.3)
        assert int(det.hdf5.num_captured.get(use_monitor=False)) == written
        det.cam.acquire.put(0, wait=True, timeout=10.0)
        _wait_for(lambda: det.cam.acquire.get(use_monitor=False) == 0, timeout_s=5.0)
        finished = np.asarray(seq.finished.get(use_monitor=False))
        assert (int(finished[0]), int(finished[1])) == (31337, 0)  # ended with no frame
    finally:
        assert epics.caput(stall, "Off", wait=True) == 1
    assert int(det.hdf5.num_captured.get(use_monitor=False)) == written
    _wait_for(lambda: piezo.motor_done_move.get(use_monitor=False) == 1)
    det.unstage()
