"""The streaming reconstructor as a service, on real sockets: scans keyed by uid, catch-up from
the raw file the scan-start names, one directory per scan that says whether it is complete."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from contracts.messages import encode_header, frame_header
from contracts.scanfile import ScanFileWriter
from contracts.sockets import FramePublisher, FrameReceiver
from recon.offline import reconstruct_file
from recon.streaming import StreamingReconstructor, StreamResult
from tests.recon.scanfiles import frames_in_order, shared_recorded, shared_scan_file
from tests.recon.test_streaming import (
    KilledAfter,
    assert_same_volumes,
    run_in_thread,
    scan_start,
)

SHAPE = (32, 96)


def test_restarted_mid_scan_without_flags_catches_up_from_the_file_the_scan_start_names(
    tmp_path: Path,
) -> None:
    """The first reconstructor dies a third of the way in; the scan goes on. A new one, given
    nothing but the endpoint, is sent the scan-start again (it names the raw file), reads the
    frames it missed from the file and ends with the offline volume: complete, nothing lost."""
    rec = shared_recorded()
    n = len(rec.rows)
    path = tmp_path / "scan.h5"
    pub = FramePublisher(frame_bytes=rec.frame_bytes, hwm=4)
    first = KilledAfter(limit=n // 3)
    gone = threading.Event()  # the first consumer's socket is closed

    def detector() -> None:  # writes every frame to the SWMR file, then publishes it
        with ScanFileWriter(path, rec.header()) as writer:
            pub.start_scan(rec.scan_uid, rec.instrument, rec.plan, raw_file=str(path))
            for i, frame, tags in frames_in_order(rec):
                assert writer.append(frame, tags) == i
                if i == 2 * n // 5:  # the scan goes on once the first reconstructor is gone
                    gone.wait(30)
                pub.publish(frame, tags, frame_number=i)
            pub.end_scan()

    rx = FrameReceiver(pub.endpoint, hwm=4)
    thread = run_in_thread(detector)
    assert first.run(rx, stop=first.killed, idle_timeout_s=60) == []
    rx.close(linger_s=0)  # whatever was queued for it is gone with it
    second = StreamingReconstructor(out=tmp_path / "out")
    rx = FrameReceiver(pub.endpoint, hwm=4)
    gone.set()
    try:
        (result,) = second.run(rx, idle_timeout_s=60)
    finally:
        thread.join()
        pub.close()
        rx.close()
    s = result.stats
    assert pub.repeated_starts >= 1
    assert s.from_file >= n // 3
    assert (s.frames, s.frames_sent, s.lost_count, s.malformed) == (n, n, 0, 0)
    # every message accounted for once: applied from the stream, a duplicate of a frame read
    # from the file, or foreign (none: the publisher sends the scan-start before any frame)
    assert second.totals.foreign == 0
    assert rx.stats.messages["Frame"] == (n - s.from_file) + s.duplicates
    assert result.outcome == "complete"
    offline, _ = reconstruct_file(path)
    assert_same_volumes(result.volumes, offline)
    with h5py.File(tmp_path / "out" / rec.scan_uid / "recon.h5") as f:
        assert bool(f.attrs["complete"])
        assert f.attrs["source"] == f"stream and {path}"


def stream_scans(
    send: Callable[[FramePublisher], None], out: Path, scans: int
) -> list[StreamResult]:
    """The results of a reconstructor (writing into ``out``) for what ``send`` publishes."""
    with FramePublisher(frame_bytes=6144) as pub, FrameReceiver(pub.endpoint) as rx:
        thread = run_in_thread(send, pub)
        try:
            return StreamingReconstructor(out=out).run(rx, scans=scans, idle_timeout_s=60)
        finally:
            thread.join()


def test_a_scan_start_of_another_uid_ends_the_scan_in_progress_as_partial_and_follows_the_new(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = shared_recorded()
    n = len(rec.rows)

    def detector(pub: FramePublisher) -> None:
        pub.start_scan("aborted-scan", rec.instrument, rec.plan)
        for i, frame, tags in frames_in_order(rec):
            if i >= n // 2:
                break  # the run was aborted; its scan-end never came
            pub.publish(frame, tags, frame_number=i)
        pub.start_scan(rec.scan_uid, rec.instrument, rec.plan)
        for i, frame, tags in frames_in_order(rec):
            pub.publish(frame, tags, frame_number=i)
        pub.end_scan()

    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="recon"):
        aborted, good = stream_scans(detector, out, scans=2)
    assert aborted.scan_uid == "aborted-scan"
    assert aborted.outcome == "partial"
    assert aborted.provenance is not None
    reason = aborted.provenance.incomplete_reason
    assert f"interrupted by scan-start of {rec.scan_uid}" in reason
    assert aborted.provenance.projections_used < rec.plan.angles
    assert f"{rec.plan.angles - aborted.provenance.projections_used} of" in reason
    with h5py.File(out / "aborted-scan" / "recon.h5") as f:
        assert not bool(f.attrs["complete"])
        assert f.attrs["projections_used"] == aborted.provenance.projections_used
    # the good scan is untouched by the aborted one, and the latest link points at it
    assert good.outcome == "complete"
    assert (out / "latest").resolve() == (out / rec.scan_uid).resolve()
    offline, _ = reconstruct_file(shared_scan_file())
    assert_same_volumes(good.volumes, offline)
    assert any("scan-start of" in r.getMessage() for r in caplog.records)


def test_a_scan_reconstructed_again_gets_a_directory_of_its_own(tmp_path: Path) -> None:
    rec = shared_recorded()
    out = tmp_path / "out"
    dirs = []
    for _ in range(2):
        recon = StreamingReconstructor(out=out, live_rows=())
        recon.start(scan_start(rec))
        for i, frame, tags in frames_in_order(rec):
            h = frame_header(rec.scan_uid, tags, frame_number=i, dtype="uint16", shape=SHAPE)
            recon.add_frame(h, frame)
        dirs.append(recon.end(None).directory)
    assert dirs == [out / rec.scan_uid, out / f"{rec.scan_uid}.2"]
    assert all((d / "recon.h5").exists() for d in dirs if d is not None)
    assert (out / "latest").resolve() == dirs[1].resolve()  # type: ignore[union-attr]


def test_a_stopped_service_marks_the_scan_in_progress_partial(tmp_path: Path) -> None:
    rec = shared_recorded()
    n = len(rec.rows)
    stop = threading.Event()
    recon = StreamingReconstructor(out=tmp_path, live_rows=())

    def detector(pub: FramePublisher) -> None:
        pub.start_scan(rec.scan_uid, rec.instrument, rec.plan)
        for i, frame, tags in frames_in_order(rec):
            if i == 2 * n // 3:
                break
            pub.publish(frame, tags, frame_number=i)

    with FramePublisher(frame_bytes=rec.frame_bytes) as pub, FrameReceiver(pub.endpoint) as rx:
        thread = run_in_thread(detector, pub)
        thread.join()

        def stop_when_all_arrived() -> None:
            while recon.stats.frames < 2 * n // 3:
                threading.Event().wait(0.01)
            stop.set()

        run_in_thread(stop_when_all_arrived)
        (result,) = recon.run(rx, stop=stop, finish_on_stop=True, scans=None)
    assert recon.stopped_scan == rec.scan_uid
    assert result.outcome == "partial"
    assert result.provenance is not None
    assert "stopped before its end" in result.provenance.incomplete_reason
    with h5py.File(tmp_path / rec.scan_uid / "recon.h5") as f:
        assert not bool(f.attrs["complete"])
        assert "stopped before its end" in f.attrs["incomplete_reason"]


def test_stray_and_refused_messages_are_counted_in_every_state_and_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Frames before any scan-start and frames of an unknown scan are counted at once and
    logged once per scan uid; refused frames are logged with the field; nothing of it changes
    the scan's volume."""
    rec = shared_recorded()
    n = len(rec.rows)
    _, frame0, tags0 = next(frames_in_order(rec))
    victim = int(np.flatnonzero(rec.rows["image_key"] == 0)[0])  # a projection's frame

    def detector(pub: FramePublisher) -> None:
        for k in range(3):  # before any scan-start
            h = frame_header("early-bird", tags0, frame_number=k, dtype="uint16", shape=SHAPE)
            pub.send_raw([encode_header(h), frame0])
        pub.send_raw([b"{not json", b""])  # malformed, between scans
        pub.start_scan(rec.scan_uid, rec.instrument, rec.plan)
        for i, frame, tags in frames_in_order(rec):
            pub.publish(frame, tags, frame_number=i)
            if i == victim:
                bad = tags.copy()
                bad["angle_index"] = 10_000
                pub.publish(frame, bad, frame_number=n + 500)
        pub.end_scan()

    with (
        FramePublisher(frame_bytes=rec.frame_bytes) as pub,
        FrameReceiver(pub.endpoint) as rx,
        caplog.at_level(logging.WARNING),
    ):
        recon = StreamingReconstructor(live_rows=())
        thread = run_in_thread(detector, pub)
        try:
            (result,) = recon.run(rx, idle_timeout_s=60)
        finally:
            thread.join()
    assert (recon.totals.foreign, recon.totals.malformed, recon.totals.refused) == (3, 1, 1)
    assert (result.stats.foreign, result.stats.bad_frames, result.stats.frames) == (0, 1, n)
    messages = [r.getMessage() for r in caplog.records]
    assert sum("early-bird" in m for m in messages) == 1
    assert any("angle_index 10000 is beyond" in m for m in messages)
    offline, _ = reconstruct_file(shared_scan_file())
    assert_same_volumes(result.volumes, offline)
    assert result.outcome == "complete"


def test_an_unreadable_raw_file_named_by_the_scan_start_is_said_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rec = shared_recorded()
    not_hdf5 = tmp_path / "scan.h5"
    not_hdf5.write_bytes(b"not an HDF5 file" * 10)
    recon = StreamingReconstructor(live_rows=())
    with caplog.at_level(logging.WARNING, logger="recon"):
        for raw in (not_hdf5, tmp_path / "missing.h5", Path("/dev/zero")):
            recon.start(scan_start(rec, raw_file=raw))
            assert recon._scan is not None
            assert recon._scan.raw_file is None
    texts = [r.getMessage() for r in caplog.records]
    assert len(texts) == 3
    assert all("no readable raw file" in t for t in texts)
    assert "missing.h5 is not a file here" in texts[1]
    assert "/dev/zero is not a file here" in texts[2]
    assert np.all([rec.scan_uid in t for t in texts])


def test_a_scan_already_reconstructed_complete_is_passed_over_and_a_partial_one_redone(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A restarted service is sent the scan it finished before its restart (the detector
    repeats the scan-start to every consumer that connects mid-scan): it is not done twice;
    a scan whose directory holds only a partial reconstruction is done again, beside it."""
    rec = shared_recorded()
    out = tmp_path / "out"

    def whole(pub: FramePublisher) -> None:
        publish_all(pub, rec.scan_uid)

    def publish_all(pub: FramePublisher, uid: str) -> None:
        pub.start_scan(uid, rec.instrument, rec.plan)
        for i, frame, tags in frames_in_order(rec):
            pub.publish(frame, tags, frame_number=i)
        pub.end_scan()

    (first,) = stream_scans(whole, out, scans=1)
    assert first.outcome == "complete"
    with caplog.at_level(logging.INFO, logger="recon"):
        again = StreamingReconstructor(out=out, live_rows=())
        again._on_scan_start(scan_start(rec), lambda result: True)
    assert again.scan is None  # not started
    assert again.totals.passed_over == 1
    assert [p.name for p in out.iterdir() if not p.is_symlink()] == [rec.scan_uid]
    assert any("complete in" in r.getMessage() and "passed over" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    # a partial one is reconstructed again into <uid>.2
    with h5py.File(out / rec.scan_uid / "recon.h5", "r+") as f:
        f.attrs["complete"] = False
    (redone,) = stream_scans(whole, out, scans=1)
    assert redone.directory == out / f"{rec.scan_uid}.2"
    assert redone.outcome == "complete"
