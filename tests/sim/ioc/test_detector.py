"""The simulated area detector over Channel Access (pyepics): frames, physics, file, faults."""

from __future__ import annotations

import asyncio
import ctypes
import math
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import epics
import h5py
import numpy as np
import pytest

from contracts.frames import ImageKey
from contracts.profile import builtin_profile
from contracts.scanfile import DATA_PATH, FRAMES_GROUP, read_scan
from sim.ioc.detector import effective_g2_position_m
from sim.scan import FrameRenderer
from tests.conftest import IocHandle
from tests.sim.ioc.test_motor import get, wait_until

TINY = builtin_profile("tiny")
DARK_ADU = TINY.simulated().detector.dark_offset_adu
P2_UM = TINY.instrument.geometry.g2_pitch_m * 1e6


def put(name: str, value: object, timeout: float = 10.0) -> None:
    assert epics.caput(name, value, wait=True, timeout=timeout) == 1, name


def severity(name: str) -> int:
    data = epics.PV(name).get_with_metadata(form="ctrl", use_monitor=False, timeout=5.0)
    assert data is not None
    return int(data["severity"])


@dataclass
class Det:
    """PV helpers for the detector of the session IOC."""

    ioc: IocHandle
    folder: Path

    def cam(self, suffix: str) -> str:
        return self.ioc.pv("detector", "cam1:" + suffix)

    def hdf(self, suffix: str) -> str:
        return self.ioc.pv("detector", "HDF1:" + suffix)

    def motor(self, role: str) -> str:
        return self.ioc.pvs.motor_records()[role]

    def start_capture(self, *, blocking: bool = True, lazy: bool = True) -> Path:
        name = uuid.uuid4().hex[:12]
        put(self.hdf("FilePath"), str(self.folder))
        put(self.hdf("FileName"), name)
        put(self.hdf("FileTemplate"), "%s%s_%6.6d.h5")
        put(self.hdf("FileNumber"), 0)
        put(self.hdf("FileWriteMode"), "Stream")
        put(self.hdf("NumCapture"), 0)
        put(self.hdf("EnableCallbacks"), "Enable")
        put(self.hdf("BlockingCallbacks"), "Yes" if blocking else "No")
        put(self.hdf("LazyOpen"), "Yes" if lazy else "No")
        put(self.hdf("Capture"), 1)
        full = epics.caget(self.hdf("FullFileName_RBV"), as_string=True, use_monitor=False)
        assert full == f"{self.folder}/{name}_000000.h5"
        return Path(full)

    def stop_capture(self) -> None:
        put(self.hdf("Capture"), 0)

    def acquire(self, n: int = 1) -> float:
        """Acquire ``n`` frames (Multiple mode), put-callback; returns the elapsed time [s]."""
        put(self.cam("ImageMode"), "Multiple")
        put(self.cam("NumImages"), n)
        t0 = time.monotonic()
        put(self.cam("Acquire"), 1, timeout=30.0)
        return time.monotonic() - t0

    def state(
        self, *, shutter: str = "Open", sample_x_mm: float = 0.0, g2_um: float = 10.0,
        rotation_deg: float = 0.0, exposure_s: float = 0.05,
    ) -> None:  # fmt: skip
        put(self.ioc.pv("shutter", "Open"), shutter)
        put(self.motor("sample_x"), sample_x_mm, timeout=30)
        put(self.motor("g2_x"), g2_um)
        put(self.motor("rotation"), rotation_deg, timeout=30)
        put(self.cam("AcquireTime"), exposure_s)


@pytest.fixture
def det(sim_ioc: IocHandle, tmp_path: Path) -> Iterator[Det]:
    d = Det(sim_ioc, tmp_path)
    put(sim_ioc.pv("tags", "ScanUid"), "")
    yield d
    d.stop_capture()
    put(d.cam("AcquireTime"), TINY.scan_plan().exposure_s)
    put(d.cam("AcquirePeriod"), 0.0)
    for name, value in [("DropFrames", 0), ("LateFrames", 0), ("SlowWriter", 0.0)]:
        put(sim_ioc.pv("faults", name), value)


def frames_of(path: Path) -> np.ndarray:
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        return np.asarray(f[DATA_PATH][()], dtype=np.float64)


def test_frame_written_with_tags_and_readbacks(det: Det, sim_ioc: IocHandle) -> None:
    det.state(g2_um=12.5, rotation_deg=30.0)
    uid = "scan-" + uuid.uuid4().hex[:20]
    for suffix, value in [
        ("FrameType", "reference"), ("AngleIndex", -1), ("SeriesIndex", 3), ("StepIndex", 2),
        ("Attempt", 1), ("ScanUid", uid),
    ]:  # fmt: skip
        put(sim_ioc.pv("tags", suffix), value)
    path = det.start_capture()
    det.acquire(1)
    det.stop_capture()
    assert epics.caget(det.hdf("NumCaptured_RBV"), use_monitor=False) == 1
    with h5py.File(path, "r") as f:  # a plain h5py reader
        assert f[DATA_PATH].shape == (1, *TINY.instrument.detector.shape)
        assert f[DATA_PATH].dtype == np.uint16
        assert f[DATA_PATH].chunks == (1, *TINY.instrument.detector.shape)
        assert f["entry"].attrs["scan_uid"] == uid
        tags = {name: f[FRAMES_GROUP][name][0] for name in f[FRAMES_GROUP]}
    assert tags["image_key"] == ImageKey.FLAT
    assert (tags["angle_index"], tags["series_index"], tags["step_index"]) == (-1, 3, 2)
    assert tags["attempt"] == 1
    assert tags["g2_position_m"] == pytest.approx(12.5e-6, abs=0.02e-6)  # encoder, 2 nm rms
    assert tags["rotation_deg"] == pytest.approx(30.0, abs=1e-3)
    assert tags["ring_current_ma"] == pytest.approx(200.0, abs=0.2)
    assert 0.0 <= tags["timestamp_s"] < 5.0
    contents = read_scan(path)
    recorded = contents.header.instrument
    assert (recorded.geometry, recorded.detector) == (
        TINY.instrument.geometry,
        TINY.instrument.detector,
    )
    assert recorded.pvs.full("detector") + "cam1:" == det.cam("")  # the names it serves
    assert contents.header.plan is None  # no CT plan wrote TAG:ScanPlan


def test_acquire_rbv_and_counter_monitors_arrive_before_put_completion(det: Det) -> None:
    """A client completing a trigger on put-completion sees the frame's end in its monitors."""
    det.state(exposure_s=0.005)
    put(det.cam("ImageMode"), "Single")
    rbv = epics.PV(det.cam("Acquire_RBV"), auto_monitor=True)
    counter = epics.PV(det.cam("ArrayCounter_RBV"), auto_monitor=True)
    assert rbv.wait_for_connection(timeout=5.0)
    assert counter.wait_for_connection(timeout=5.0)
    rbv.get()
    before = int(counter.get())
    misses = []
    writer = epics.PV(det.cam("Acquire"))
    done = threading.Event()
    try:
        for k in range(1, 16):
            done.clear()
            writer.put(1, callback=lambda **kw: done.set())
            assert done.wait(10.0)
            seen = (rbv.get(use_monitor=True), counter.get(use_monitor=True))
            if seen != (0, before + k):
                misses.append((k, seen))
    finally:
        rbv.disconnect()
        counter.disconnect()
    assert misses == [], misses


def test_shutter_closed_gives_dark_level_only(det: Det) -> None:
    det.state(shutter="Close")
    path = det.start_capture()
    det.acquire(1)
    det.stop_capture()
    frame = frames_of(path)[0]
    assert frame.mean() == pytest.approx(DARK_ADU, abs=0.5)
    assert frame.std() == pytest.approx(
        TINY.simulated().detector.read_noise_e, rel=0.2
    )  # gain 1 ADU/e-


def _phase(frames: np.ndarray) -> np.ndarray:
    """Fringe phase of four frames stepped by p2/4: I_k = a + b cos(alpha + k pi/2)."""
    i0, i1, i2, i3 = frames
    return np.arctan2(i3 - i1, i0 - i2)


def test_g2_quarter_period_step_shifts_phase_by_half_pi(det: Det, sim_ioc: IocHandle) -> None:
    det.state(sample_x_mm=5.0)  # sample out: reference fringes
    path = det.start_capture()
    x0 = 10.0
    for k in range(5):
        put(det.motor("g2_x"), x0 + k * P2_UM / 4)
        det.acquire(1)
    det.stop_capture()
    frames = frames_of(path) - DARK_ADU
    shift = np.angle(np.exp(1j * (_phase(frames[1:5]) - _phase(frames[0:4]))))
    assert np.mean(shift) == pytest.approx(math.pi / 2, abs=0.03)
    encoder = read_scan(path).table.column("g2_position_m")
    expected = (x0 + np.arange(5) * P2_UM / 4) * 1e-6
    np.testing.assert_allclose(encoder, expected, atol=10e-9)


def test_sample_in_gives_rod_transmission(det: Det) -> None:
    truth = FrameRenderer(
        TINY.instrument, TINY.simulated(), seed=0
    )  # same phantom as the IOC (--seed 0)
    t_true = truth.step_curve(0.0).a0 / truth.step_curve(None).a0
    a0 = {}
    for where, x_mm in [("in", 0.0), ("out", 5.0)]:
        det.state(sample_x_mm=x_mm)
        path = det.start_capture()
        for k in range(4):
            put(det.motor("g2_x"), 10.0 + k * P2_UM / 4)
            det.acquire(1)
        det.stop_capture()
        a0[where] = frames_of(path).mean(axis=0) - DARK_ADU  # mean over a period = a0
    centre = slice(40, 56)
    measured = a0["in"][:, centre].mean() / a0["out"][:, centre].mean()
    expected = t_true[:, centre].mean()
    assert expected < 0.97  # the rod absorbs
    assert measured == pytest.approx(expected, abs=0.01)


def test_doubling_exposure_doubles_counts(det: Det) -> None:
    means = []
    for exposure in (0.05, 0.1):
        det.state(sample_x_mm=5.0, exposure_s=exposure)
        path = det.start_capture()
        det.acquire(1)
        det.stop_capture()
        means.append(frames_of(path).mean() - DARK_ADU)
    assert means[1] / means[0] == pytest.approx(2.0, rel=0.01)


def test_g0_without_pitch_has_no_effect() -> None:
    assert effective_g2_position_m(1e-6, 5e-6, 1e-6, None) == 1e-6
    assert effective_g2_position_m(1e-6, 2e-6, 1e-6, 4e-6) == pytest.approx(1.5e-6)
    with pytest.raises(ValueError, match="g0_pitch_m"):
        effective_g2_position_m(0.0, 0.0, 1e-6, -1.0)


def test_dropped_frame_is_counted_not_written(det: Det, sim_ioc: IocHandle) -> None:
    det.state()
    path = det.start_capture()
    counter = int(get(det.cam("ArrayCounter_RBV")))
    dropped = int(get(det.hdf("DroppedArrays_RBV")))
    put(sim_ioc.pv("faults", "DropFrames"), 1)
    det.acquire(2)
    det.stop_capture()
    assert int(get(det.cam("ArrayCounter_RBV"))) == counter + 2
    assert int(get(det.hdf("DroppedArrays_RBV"))) == dropped + 1
    assert int(get(det.hdf("NumCaptured_RBV"))) == 1
    assert get(sim_ioc.pv("faults", "DropFrames")) == 0
    assert frames_of(path).shape[0] == 1


def test_late_frame_and_slow_writer_delay_the_frame_end(det: Det, sim_ioc: IocHandle) -> None:
    det.state()
    det.start_capture()
    put(sim_ioc.pv("faults", "LateFrameDelay"), 0.3)
    put(sim_ioc.pv("faults", "LateFrames"), 1)
    assert det.acquire(1) >= 0.3 + 0.05
    assert get(sim_ioc.pv("faults", "LateFrames")) == 0
    put(sim_ioc.pv("faults", "SlowWriter"), 0.3)
    assert det.acquire(1) >= 0.3 + 0.05  # blocking callbacks: the write is inside the frame
    assert int(get(det.hdf("NumCaptured_RBV"))) == 2


def test_nonblocking_callbacks_write_after_the_frame_end(det: Det, sim_ioc: IocHandle) -> None:
    det.state()
    det.start_capture(blocking=False)
    put(sim_ioc.pv("faults", "SlowWriter"), 0.5)
    det.acquire(1)
    assert int(get(det.hdf("NumCaptured_RBV"))) == 0  # Acquire_RBV fell before the write
    assert wait_until(lambda: int(get(det.hdf("NumCaptured_RBV"))) == 1)


def test_acquire_rbv_falls_at_frame_end(det: Det) -> None:
    det.state()
    values: list[int] = []
    pv = epics.PV(det.cam("Acquire_RBV"), callback=lambda value, **_: values.append(int(value)))
    assert pv.wait_for_connection(timeout=5.0)
    assert wait_until(lambda: values == [0])
    det.acquire(1)
    assert wait_until(lambda: values == [0, 1, 0])
    assert get(det.cam("DetectorState_RBV")) == 0  # Idle
    pv.disconnect()


def _put_string_raw(name: str, text: bytes) -> None:
    chid = epics.ca.create_channel(name, connect=True)
    data = (ctypes.c_char * 40)()
    data.value = text
    assert epics.ca.libca.ca_array_put(epics.dbr.STRING, 1, chid, data) == epics.dbr.ECA_NORMAL
    epics.ca.flush_io()


def test_bad_puts_are_rejected_with_an_alarm(det: Det, sim_ioc: IocHandle) -> None:
    exposure = det.cam("AcquireTime")
    put(exposure, 0.05)
    for bad in (0.0, -1.0):
        epics.caput(exposure, bad, wait=True)
        assert get(exposure + "_RBV") == 0.05
        assert severity(exposure) == 2
    _put_string_raw(exposure, b"long")
    assert get(exposure + "_RBV") == 0.05
    mode = det.cam("ImageMode")
    put(mode, "Single")
    epics.caput(mode, 7, wait=True)  # no such enum index
    assert get(mode + "_RBV") == 0
    epics.caput(det.cam("DataType"), "Int8", wait=True)
    assert epics.caget(det.cam("DataType_RBV"), as_string=True, use_monitor=False) == "UInt16"
    epics.caput(det.cam("NumImages"), 0, wait=True)
    assert get(det.cam("NumImages_RBV")) >= 1
    epics.caput(det.hdf("FileWriteMode"), "Single", wait=True)
    epics.caput(det.hdf("Capture"), 1, wait=True)  # capture is not supported in Single mode
    assert get(det.hdf("Capture_RBV")) == 0
    assert get(det.hdf("WriteStatus")) == 1
    put(exposure, 0.05)
    assert severity(exposure) == 0
    assert sim_ioc.process.poll() is None


def test_existing_file_is_never_overwritten(det: Det) -> None:
    det.state()
    path = det.start_capture()
    det.acquire(1)
    det.stop_capture()
    put(det.hdf("FileNumber"), 0)
    epics.caput(det.hdf("Capture"), 1, wait=True)
    assert get(det.hdf("Capture_RBV")) == 0
    assert frames_of(path).shape[0] == 1


READER = """
import sys
from contracts.scanfile import read_scan
c = read_scan(sys.argv[1])
print(c.frames.shape[0], int(c.table.column("step_index")[-1]))
"""


def _read_in_other_process(path: Path) -> str:
    out = subprocess.run(
        [sys.executable, "-c", READER, str(path)],
        capture_output=True, text=True, timeout=60, check=True,
        cwd=Path(__file__).resolve().parents[3],
    )  # fmt: skip
    return out.stdout.strip()


def test_file_is_readable_while_acquiring(det: Det, sim_ioc: IocHandle) -> None:
    det.state()
    path = det.start_capture(lazy=False)
    assert path.exists()  # LazyOpen = No: the file exists at Capture = 1
    put(sim_ioc.pv("tags", "StepIndex"), 0)
    det.acquire(1)
    put(sim_ioc.pv("tags", "StepIndex"), 1)
    det.acquire(1)
    assert _read_in_other_process(path) == "2 1"  # SWMR: the writer still has it open
    put(sim_ioc.pv("tags", "StepIndex"), 2)
    det.acquire(1)
    assert _read_in_other_process(path) == "3 2"
    det.stop_capture()


def test_num_capture_closes_the_file(det: Det) -> None:
    det.state()
    path = det.start_capture()
    put(det.hdf("NumCapture"), 2)
    det.acquire(3)
    assert wait_until(lambda: get(det.hdf("Capture_RBV")) == 0)
    assert frames_of(path).shape[0] == 2


def test_server_shutdown_closes_the_file(tmp_path: Path) -> None:
    """In-process server: cancel it (what SIGTERM does) while a file is open."""
    from sim.ioc.launch import free_port
    from sim.ioc.server import build_beamline, serve

    beamline = build_beamline(seed=1)
    det = beamline.detector
    path = tmp_path / "shutdown_000000.h5"

    async def scenario() -> None:
        server = asyncio.create_task(serve(beamline, port=free_port()))
        hdf, cam = det.hdf.pvs, det.cam
        await hdf["FilePath"].write(str(tmp_path))
        await hdf["FileName"].write("shutdown")
        await hdf["EnableCallbacks"].write("Enable")
        await hdf["BlockingCallbacks"].write("Yes")
        await hdf["FileWriteMode"].write("Stream")
        await hdf["Capture"].write(1)
        await cam["AcquireTime"].write(0.01)
        for _ in range(2):
            await cam["Acquire"].write(1)
            await det._idle.wait()
        assert det.hdf._writer is not None
        server.cancel()
        await asyncio.gather(server, return_exceptions=True)

    keys = ("EPICS_CAS_BEACON_PORT", "EPICS_CA_SERVER_PORT", "EPICS_CAS_INTF_ADDR_LIST")
    before = {key: os.environ.get(key) for key in keys}
    asyncio.run(scenario())
    # the in-process server restored the environment that later servers of this process inherit
    assert {key: os.environ.get(key) for key in keys} == before
    assert det.hdf._writer is None
    with h5py.File(path, "r") as f:  # closed cleanly: opens without SWMR
        assert f[DATA_PATH].shape[0] == 2
