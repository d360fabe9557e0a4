"""``talbot recon`` as an operator runs it: a process that follows scan after scan, says where it
writes, refuses a second consumer on its endpoint, and tells by its exit status and its files
whether each scan was complete. Judged by exit codes, stderr and the files it writes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import pytest

from contracts.messages import LiveSlices
from contracts.sockets import FramePublisher, live_subscriber
from sim.ioc.launch import free_port
from tests.recon.scanfiles import Recorded, frames_in_order, shared_recorded

TIMEOUT_S = 180


def start_recon(endpoint: str, out: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "beamline.cli", "recon", "--connect", endpoint,
         "--out", str(out), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def publish(pub: FramePublisher, rec: Recorded, uid: str, frames: int | None = None) -> None:
    """The recorded scan under ``uid`` (its first ``frames`` frames only, no scan-end)."""
    pub.start_scan(uid, rec.instrument, rec.plan)
    for i, frame, tags in frames_in_order(rec):
        if frames is not None and i >= frames:
            return
        pub.publish(frame, tags, frame_number=i)
    pub.end_scan()


def test_it_follows_scans_until_told_and_keeps_each_in_its_own_directory(tmp_path: Path) -> None:
    """An alignment run is passed over; an aborted scan (its scan-end never came) is written
    as partial and makes the exit status 3; the good scan after it is complete."""
    rec = shared_recorded()
    out = tmp_path / "out"
    with FramePublisher(frame_bytes=rec.frame_bytes) as pub:
        recon = start_recon(pub.endpoint, out, "--scans", "2")
        try:
            pub.start_scan("alignment-1", rec.instrument, None)  # not a CT
            pub.end_scan()
            publish(pub, rec, "aborted-1", frames=len(rec.rows) // 2)
            publish(pub, rec, rec.scan_uid)
            stdout, stderr = recon.communicate(timeout=TIMEOUT_S)
        finally:
            recon.kill()
    assert recon.returncode == 3, stderr
    assert f"into {out.resolve()}/<scan uid>/" in stdout  # says where it writes
    assert "scan alignment-1 is not a phase-stepping CT; passed over" in stderr
    assert "Traceback" not in stderr
    aborted = json.loads((out / "aborted-1" / "stream.json").read_text())
    assert aborted["outcome"] == "partial"
    assert (
        f"interrupted by scan-start of {rec.scan_uid}" in aborted["provenance"]["incomplete_reason"]
    )
    assert "scan aborted-1: PARTIAL (" in stdout
    with h5py.File(out / "aborted-1" / "recon.h5") as f:
        assert not bool(f.attrs["complete"])
    with h5py.File(out / "latest" / "recon.h5") as f:
        assert f.attrs["scan_uid"] == rec.scan_uid
        assert bool(f.attrs["complete"])
    assert f"scan {rec.scan_uid}: complete in " in stdout
    assert "scans: complete 1, partial 1, failed 0; passed over 1" in stdout


def test_a_second_consumer_on_the_same_endpoint_is_refused(tmp_path: Path) -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    first = start_recon(endpoint, tmp_path / "a")
    try:
        assert first.stdout is not None
        assert "following" in first.stdout.readline()  # it holds the endpoint now
        second = subprocess.run(
            [sys.executable, "-m", "beamline.cli", "recon", "--connect", endpoint,
             "--out", str(tmp_path / "b")],
            capture_output=True, text=True, timeout=TIMEOUT_S,
        )  # fmt: skip
    finally:
        first.send_signal(signal.SIGINT)
        _, first_err = first.communicate(timeout=TIMEOUT_S)
    assert second.returncode == 2
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"talbot recon: --connect: another consumer (pid {first.pid})")
    assert not (tmp_path / "b").exists()
    # stopped between scans, nothing lost: a clean exit
    assert first.returncode == 0, first_err
    assert "SIGINT: stopping; no scan in progress" in first_err


def test_sigterm_mid_scan_writes_the_scan_as_partial_and_exits_130(tmp_path: Path) -> None:
    rec = shared_recorded()
    out = tmp_path / "out"
    live_endpoint = f"tcp://127.0.0.1:{free_port()}"
    with FramePublisher(frame_bytes=rec.frame_bytes) as pub:
        recon = start_recon(pub.endpoint, out, "--live-bind", live_endpoint, "--live-interval", "0")
        viewer = live_subscriber(live_endpoint)
        try:
            publish(pub, rec, rec.scan_uid, frames=len(rec.rows) // 2)
            deadline = time.monotonic() + 60
            seen = 0
            while seen < 3 and time.monotonic() < deadline:  # projections are in
                msg = viewer.recv(timeout_s=1.0)
                if isinstance(msg, LiveSlices):
                    seen = msg.projections
            assert seen >= 3
            recon.send_signal(signal.SIGTERM)
            stdout, stderr = recon.communicate(timeout=TIMEOUT_S)
        finally:
            viewer.close()
            recon.kill()
    assert recon.returncode == 130, stderr
    assert f"SIGTERM: stopping; finishing scan {rec.scan_uid} as cut short" in stderr
    assert "Traceback" not in stderr
    record = json.loads((out / rec.scan_uid / "stream.json").read_text())
    assert record["outcome"] == "partial"
    assert "stopped before its end" in record["provenance"]["incomplete_reason"]
    with h5py.File(out / rec.scan_uid / "recon.h5") as f:
        assert not bool(f.attrs["complete"])
        assert 3 <= f.attrs["projections_used"] < rec.plan.angles
    assert "PARTIAL (" in stdout


@pytest.mark.parametrize("scans", ["-1", "x"])
def test_a_bad_scan_count_is_refused(scans: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "beamline.cli", "recon", "--out", str(tmp_path), "--scans", scans],
        capture_output=True, text=True, timeout=TIMEOUT_S,
    )  # fmt: skip
    assert done.returncode == 2
    assert "--scans" in done.stderr
