"""The streaming reconstructor on real sockets: exact loss accounting, restart, slabs, live view."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from contracts.frames import FrameTable
from contracts.messages import (
    FrameHeader,
    LiveSlices,
    ScanEnd,
    ScanStart,
    encode_scan_end,
    frame_header,
)
from contracts.scanfile import ScanFileWriter
from contracts.sockets import FramePublisher, FrameReceiver, LivePublisher, live_subscriber
from recon.offline import reconstruct_file
from recon.pipeline import Volumes, reconstruct_volumes, retrieve_projections
from recon.slabs import run_slab_workers, slab_bounds
from recon.streaming import CLAIM_FACTOR, StreamingReconstructor, StreamResult
from sim.replay import replay
from tests.recon.scanfiles import Recorded, frames_in_order, shared_recorded, shared_scan_file

NAMES = ("delta", "mu", "darkfield")


def assert_same_volumes(got: Volumes | None, want: Volumes, rel: float = 1e-5) -> None:
    assert got is not None
    for name in NAMES:
        a, b = getattr(got, name), getattr(want, name)
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=0, atol=rel * float(np.abs(b).max()), err_msg=name)


def run_in_thread(target: object, *args: object) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
    thread.start()
    return thread


def header_of(rec: Recorded, n: int) -> FrameHeader:
    return frame_header(rec.scan_uid, rec.rows[n], frame_number=n, dtype="uint16", shape=(32, 96))


def scan_start(
    rec: Recorded, scan_uid: str | None = None, raw_file: Path | None = None
) -> ScanStart:
    return ScanStart(
        scan_uid=scan_uid or rec.scan_uid,
        instrument=rec.instrument,
        plan=rec.plan,
        dtype="uint16",
        shape=(32, 96),
        raw_file=None if raw_file is None else str(raw_file.resolve()),
    )


def stream_one_scan(rec: Recorded, send: Callable[[FramePublisher], None]) -> StreamResult:
    """A reconstructor's result for the one scan that ``send`` publishes (from a thread) on a
    fresh publisher."""
    pub = FramePublisher(frame_bytes=rec.frame_bytes)
    rx = FrameReceiver(pub.endpoint, frame_bytes=rec.frame_bytes)
    thread = run_in_thread(send, pub)
    try:
        (result,) = StreamingReconstructor().run(rx, idle_timeout_s=60)
    finally:
        thread.join()
        pub.close()
        rx.close()
    return result


def test_lost_duplicate_and_malformed_messages_are_counted_exactly() -> None:
    rec = shared_recorded()
    n = len(rec.rows)
    lost = {7, 83}  # a step of the calibration series and the re-take's first step

    def detector(pub: FramePublisher) -> None:
        pub.start_scan(rec.scan_uid, rec.instrument, rec.plan)
        for i, frame, tags in frames_in_order(rec):
            if i in lost:
                continue
            pub.publish(frame, tags, frame_number=i)
            if i in (10, 11):  # sent twice
                pub.publish(frame, tags, frame_number=i)
            if i in (20, 60, 90):  # garbage between valid frames
                pub.send_raw([b"{not json", b""])
        pub.end_scan()

    result = stream_one_scan(rec, detector)
    s = result.stats
    assert s.lost == sorted(lost)
    assert (s.frames_sent, s.frames, s.duplicates, s.malformed) == (n, n - 2, 2, 3)
    assert s.incomplete_series == 2  # both series with a lost step were fitted with 4 steps
    # the same frames offline give the same volume
    keep = np.array([i not in lost for i in range(n)])
    proj = retrieve_projections(
        rec.frames[keep], FrameTable(rec.rows[keep].copy()), rec.instrument.geometry
    )
    assert_same_volumes(result.volumes, reconstruct_volumes(proj, rec.instrument.geometry))


class KilledAfter(StreamingReconstructor):
    """A reconstructor that dies (abandons everything) after ``limit`` frames."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.killed = threading.Event()

    def add_frame(self, header: FrameHeader, data: np.ndarray, from_file: bool = False) -> None:
        super().add_frame(header, data, from_file)
        if self.stats.frames >= self.limit:
            self.killed.set()


def test_killed_and_restarted_mid_scan_gives_the_offline_volume(tmp_path: Path) -> None:
    rec = shared_recorded()
    n = len(rec.rows)
    path = tmp_path / "scan.h5"
    pub = FramePublisher(frame_bytes=rec.frame_bytes, hwm=4)

    def detector() -> None:  # writes every frame to the SWMR file, then publishes it
        with ScanFileWriter(path, rec.header()) as writer:
            pub.start_scan(rec.scan_uid, rec.instrument, rec.plan)
            for i, frame, tags in frames_in_order(rec):
                assert writer.append(frame, tags) == i
                pub.publish(frame, tags, frame_number=i)
            pub.end_scan()

    first = KilledAfter(limit=n // 3)
    rx = FrameReceiver(pub.endpoint, hwm=4)
    thread = run_in_thread(detector)
    assert first.run(rx, stop=first.killed, idle_timeout_s=60) == []
    rx.close(linger_s=0)  # whatever was queued for it is gone with it
    assert first.stats.frames == n // 3

    second = StreamingReconstructor()
    rx = FrameReceiver(pub.endpoint, hwm=4)  # connect first, then catch up from the file
    try:
        (result,) = second.run(rx, catch_up=path, idle_timeout_s=60)
    finally:
        thread.join()
        pub.close()
        rx.close()
    s = result.stats
    assert s.from_file >= n // 3
    assert (s.frames, s.frames_sent, s.lost, s.malformed) == (n, n, [], 0)
    # every frame came once from the file or the stream; stream copies of file frames dropped
    assert rx.stats.messages["Frame"] == (n - s.from_file) + s.duplicates
    offline, _ = reconstruct_file(path)
    assert_same_volumes(result.volumes, offline)


def test_a_scan_end_claiming_more_frames_than_the_plan_allows_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A scan-end that declares 3,000,000 frames sent for a scan of 183 planned frames is
    refused (counted and logged with the field), so nothing is counted or allocated in
    proportion to it; the real scan-end then ends the scan with nothing lost."""
    rec = shared_recorded()
    n = len(rec.rows)
    limit = CLAIM_FACTOR * rec.plan.frames_planned()

    def detector(pub: FramePublisher) -> None:
        pub.start_scan(rec.scan_uid, rec.instrument, rec.plan)
        for i, frame, tags in frames_in_order(rec):
            pub.publish(frame, tags, frame_number=i)
        pub.send_raw(encode_scan_end(ScanEnd(scan_uid=rec.scan_uid, frames_sent=3_000_000)))
        pub.send_raw(encode_scan_end(ScanEnd(scan_uid=rec.scan_uid, frames_sent=limit + 1)))
        pub.end_scan()

    with caplog.at_level(logging.WARNING, logger="recon"):
        result = stream_one_scan(rec, detector)
    s = result.stats
    assert (s.frames, s.frames_sent, s.lost_count, s.lost, s.refused_ends) == (n, n, 0, [], 2)
    refused = [r.getMessage() for r in caplog.records if "frames_sent" in r.getMessage()]
    assert len(refused) == 2
    assert "frames_sent 3000000" in refused[0]
    assert result.outcome == "complete"


def test_a_refused_frame_does_not_take_the_real_frames_number() -> None:
    """A frame refused for its step index (99 in a 5-step projection series), sent before the
    real frame of the same number: it is counted as bad and takes no number, so the real frame
    is applied (no duplicate, no series lost) and the volume is the offline one."""
    rec = shared_recorded()
    n = len(rec.rows)
    victim = int(np.flatnonzero(rec.rows["angle_index"] == 3)[0])  # a projection's first step

    def detector(pub: FramePublisher) -> None:
        pub.start_scan(rec.scan_uid, rec.instrument, rec.plan)
        for i, frame, tags in frames_in_order(rec):
            if i == victim:
                bad = tags.copy()
                bad["step_index"] = 99
                pub.publish(frame, bad, frame_number=i)
            pub.publish(frame, tags, frame_number=i)
        pub.end_scan()

    result = stream_one_scan(rec, detector)
    s = result.stats
    assert (s.frames, s.bad_frames, s.duplicates, s.lost) == (n, 1, 0, [])
    assert s.incomplete_series == 0
    offline, _ = reconstruct_file(shared_scan_file())
    assert_same_volumes(result.volumes, offline)


def test_slab_workers_equal_one_worker() -> None:
    rec, path = shared_recorded(), shared_scan_file()

    def one_pass(consume: object) -> object:
        pub = FramePublisher(frame_bytes=rec.frame_bytes)
        thread = run_in_thread(replay, path, pub)
        try:
            return consume(pub.endpoint)  # type: ignore[operator]
        finally:
            thread.join()
            pub.close()

    def single(endpoint: str) -> StreamResult:
        with FrameReceiver(endpoint, frame_bytes=rec.frame_bytes) as rx:
            (result,) = StreamingReconstructor(center_offset_px=0.0).run(rx, idle_timeout_s=60)
        return result

    one = one_pass(single)
    assert slab_bounds(32, 3) == [(0, 10), (10, 22), (22, 32)]  # even inner edges
    slabs = one_pass(
        lambda ep: run_slab_workers(ep, 32, 3, center_offset_px=0.0, frame_bytes=rec.frame_bytes)
    )
    for r in slabs.results:  # type: ignore[attr-defined]
        assert (r.stats.lost, r.stats.frames) == ([], len(rec.rows))
    assert_same_volumes(slabs.volumes, one.volumes)  # type: ignore[attr-defined]
    # every slab measured the curve on the whole calibration frames: one shape, one choice
    shapes = [r.volumes.fit.shape for r in slabs.results]  # type: ignore[attr-defined]
    assert all(np.array_equal(s.beta, one.volumes.fit.shape.beta) for s in shapes)  # type: ignore[attr-defined]
    assert slabs.volumes.fit.method == one.volumes.fit.method == "shape-aware"  # type: ignore[attr-defined]
    # the fit asked for reaches every worker
    plain = one_pass(
        lambda ep: run_slab_workers(
            ep, 32, 2, center_offset_px=0.0, frame_bytes=rec.frame_bytes, fit="first-harmonic"
        )
    )
    assert [r.volumes.fit.method for r in plain.results] == ["first-harmonic"] * 2  # type: ignore[attr-defined]


def _binned(image: np.ndarray, b: int) -> np.ndarray:
    n = image.shape[-1] // b
    return image[: n * b, : n * b].reshape(n, b, n, b).mean(axis=(1, 3))


@pytest.mark.parametrize("live_max_px", [1024, 48], ids=["full", "binned-2x2"])
def test_live_slices_are_published_and_match_the_ground_truth(live_max_px: int) -> None:
    rec, path = shared_recorded(), shared_scan_file()
    live = LivePublisher()
    sub = live_subscriber(live.endpoint)
    got: list[LiveSlices] = []
    done = threading.Event()

    def viewer() -> None:
        while not done.is_set():
            msg = sub.recv(timeout_s=0.05)
            if isinstance(msg, LiveSlices):
                got.append(msg)

    view = run_in_thread(viewer)
    pub = FramePublisher(frame_bytes=rec.frame_bytes)
    thread = run_in_thread(replay, path, pub)
    recon = StreamingReconstructor(live=live, live_rows=(16,), live_max_px=live_max_px)
    try:
        with FrameReceiver(pub.endpoint, frame_bytes=rec.frame_bytes) as rx:
            (result,) = recon.run(rx, idle_timeout_s=60)
    finally:
        thread.join()
        pub.close()
        done.set()
        view.join()
        sub.close()
        live.close()
    b = 96 // min(96, live_max_px)  # 96 detector columns
    angles = rec.plan.angles
    assert result.stats.live_updates == angles + 1  # every projection and the re-take
    assert len(recon.live_latency_s) == angles + 1
    assert got, "the viewer received no live update"
    assert got[-1].data.shape == (3, 1, 96 // b, 96 // b)
    assert got[-1].voxel_size_m == pytest.approx(0.5e-6 * b)
    assert got[-1].rows == (16,)
    assert got[-1].projections <= angles
    # the live slice (direct backprojection, references as they came) is quantitative, binned
    # or not: delta [1] and mu [1/m] in the rod as in the ground truth and the final volume
    assert result.volumes is not None
    truth = rec.scan.phantom.voxelize(result.volumes.delta.shape, 0.5e-6)["delta"][16]
    rod = _binned(truth, b) > 2e-6
    live_delta = recon.live_slices[0, 0]
    assert np.median(live_delta[rod]) == pytest.approx(np.median(truth[truth > 2e-6]), rel=0.05)
    corr = np.corrcoef(live_delta.ravel(), _binned(result.volumes.delta[16], b).ravel())[0, 1]
    assert corr > 0.98
    live_mu, volume_mu = recon.live_slices[1, 0], _binned(result.volumes.mu[16], b)
    assert np.median(live_mu[rod]) == pytest.approx(np.median(volume_mu[rod]), rel=0.05)


def test_darks_arriving_last_are_subtracted_from_earlier_fits() -> None:
    rec = shared_recorded()
    order = np.argsort(rec.rows["image_key"] == 2, kind="stable")  # darks moved to the end
    recon = StreamingReconstructor(live_rows=())
    recon.start(scan_start(rec))
    for i in order:
        recon.add_frame(header_of(rec, int(i)), rec.frames[i])
    result = recon.end(None)
    proj = retrieve_projections(rec.frames, FrameTable(rec.rows.copy()), rec.instrument.geometry)
    assert_same_volumes(result.volumes, reconstruct_volumes(proj, rec.instrument.geometry), 1e-4)


def test_open_series_are_bounded_and_bad_frames_never_kill_it() -> None:
    rec = shared_recorded()
    recon = StreamingReconstructor(live_rows=(), max_open_series=3)
    recon.start(scan_start(rec))
    r = rec.rows
    projections = np.flatnonzero(
        (r["image_key"] == 0) & (r["step_index"] == 0) & (r["attempt"] == 0)
    )
    for i in projections[:10]:  # the first step of 10 series: none completes
        recon.add_frame(header_of(rec, int(i)), rec.frames[i])
        assert len(recon._open) <= 3
    assert recon.stats.unusable_series == 7  # closed early with 1 step: cannot be fitted
    bad = header_of(rec, 0)
    recon.add_frame(bad, np.zeros((32, 95), np.uint16))  # wrong width
    recon.add_frame(
        bad.model_copy(update={"scan_uid": "other", "frame_number": 999}), rec.frames[0]
    )
    assert (recon.stats.bad_frames, recon.stats.foreign) == (1, 1)
    result = recon.end(None)
    assert result.volumes is None
    assert "reference" in result.error


def test_frames_the_stream_lost_are_recovered_from_the_scan_file() -> None:
    rec, path = shared_recorded(), shared_scan_file()
    n = len(rec.rows)
    recon = StreamingReconstructor(live_rows=())
    recon.start(scan_start(rec, raw_file=path))  # the scan-start names the raw file
    for i in range(n):
        if i not in (7, 40):  # dropped by a detector that cannot wait
            recon.add_frame(header_of(rec, i), rec.frames[i])
    result = recon.end(ScanEnd(scan_uid=rec.scan_uid, frames_sent=n))
    s = result.stats
    assert (s.lost, s.recovered, s.frames, s.incomplete_series) == ([], 2, n, 0)
    offline, _ = reconstruct_file(path)
    assert_same_volumes(result.volumes, offline)


def test_volume_is_written_when_the_last_series_arrives_and_redone_after_a_retake(
    tmp_path: Path,
) -> None:
    rec = shared_recorded()
    n = len(rec.rows)
    early = StreamingReconstructor(live_rows=(), out=tmp_path / "early")
    early.start(scan_start(rec))
    for i in range(n):
        early.add_frame(header_of(rec, i), rec.frames[i])
    # every planned series is in: the files exist before scan-end (the beamline is still
    # restoring the sample and closing the run)
    scan_dir = tmp_path / "early" / rec.scan_uid  # one directory per scan, and a latest link
    assert (scan_dir / "recon.h5").exists()
    assert (tmp_path / "early" / "latest").resolve() == scan_dir.resolve()
    kept = early.end(None)
    assert kept.volumes is not None
    assert kept.directory == scan_dir
    with h5py.File(scan_dir / "recon.h5", "r") as f:  # scan-end kept that result
        np.testing.assert_array_equal(f["mu"][()], kept.volumes.mu)
        assert f.attrs["scan_uid"] == rec.scan_uid
        assert bool(f.attrs["complete"])
        planned = rec.plan.angles
        assert (f.attrs["projections_used"], f.attrs["projections_planned"]) == (planned, planned)

    # a re-take of the last projection series arrives after that, with other data
    last = max(i for i in range(n) if rec.rows["image_key"][i] == 0)
    angle = int(rec.rows["angle_index"][last])
    series = [i for i in range(n) if rec.rows["angle_index"][i] == angle]
    series = [i for i in series if rec.rows["attempt"][i] == rec.rows["attempt"][last]]
    dimmer = {i: (rec.frames[i] * 0.8).astype(rec.frames.dtype) for i in series}
    redo = StreamingReconstructor(live_rows=(), out=tmp_path / "redo")
    redo.start(scan_start(rec))
    for i in range(n):
        redo.add_frame(header_of(rec, i), rec.frames[i])
    for k, i in enumerate(series):
        h = header_of(rec, i)
        retake = h.model_copy(update={"frame_number": n + k, "attempt": h.attempt + 1})
        redo.add_frame(retake, dimmer[i])
    result = redo.end(None)
    # the same as a scan that had the dimmer frames in the first place
    frames = rec.frames.copy()
    for i, f in dimmer.items():
        frames[i] = f
    proj = retrieve_projections(frames, FrameTable(rec.rows.copy()), rec.instrument.geometry)
    want = reconstruct_volumes(proj, rec.instrument.geometry)
    assert_same_volumes(result.volumes, want)
    assert not np.allclose(kept.volumes.mu, want.mu)
    with h5py.File(tmp_path / "redo" / rec.scan_uid / "recon.h5", "r") as f:  # rewritten
        np.testing.assert_array_equal(f["mu"][()], result.volumes.mu)


def test_a_second_scan_reuses_the_first_scans_buffers_and_is_not_affected_by_them() -> None:
    rec = shared_recorded()
    n = len(rec.rows)
    service = StreamingReconstructor(live_rows=())
    # scan 1: other data (half the counts) under another uid
    first = scan_start(rec, "0" * 32)
    service.start(first)
    for i in range(n):
        h = header_of(rec, i)
        service.add_frame(h.model_copy(update={"scan_uid": first.scan_uid}), rec.frames[i] // 2)
    done = service.end(None)
    assert done.volumes is not None
    assert done.projections is not None
    volumes, projections = done.volumes, done.projections
    service.recycle(done)  # the caller is done with them: the next scan writes into them
    assert (done.volumes, done.projections) == (None, None)
    # held here, so that no id below can be a recycled one
    buffers = [f.fit.a0 for f in [*service._refs.values(), *service._projs.values()]]
    # scan 2 through the same reconstructor, and through a new one
    results = []
    for recon in (service, StreamingReconstructor(live_rows=())):
        recon.start(scan_start(rec))
        for i in range(n):
            recon.add_frame(header_of(rec, i), rec.frames[i])
        assert recon.wait_prepared(timeout_s=60)
        results.append(recon.end(None))
    reused = {id(f.fit.a0) for f in [*service._refs.values(), *service._projs.values()]}
    assert reused == {id(a) for a in buffers}  # every fit of scan 2 is in a buffer of scan 1
    assert results[0].volumes is not None
    assert results[0].projections is not None
    assert results[0].volumes.mu is volumes.mu
    assert results[0].volumes.delta is volumes.delta
    assert results[0].projections.dphi is projections.dphi
    assert results[1].volumes is not None
    for name in NAMES:
        np.testing.assert_array_equal(
            getattr(results[0].volumes, name), getattr(results[1].volumes, name), err_msg=name
        )


def test_a_reserved_first_scan_writes_into_the_reserved_memory() -> None:
    rec = shared_recorded()
    n = len(rec.rows)
    service = StreamingReconstructor(live_rows=())
    angles = rec.plan.angles
    assert service.reserve((32, 96), angles) == 12 * 32 * 96 * (2 * angles + 4 + 96)
    spare_fits = service._pool.free
    spare_mu = service._spare_volumes.mu if service._spare_volumes is not None else None
    results = []
    for recon in (service, StreamingReconstructor(live_rows=())):
        recon.start(scan_start(rec))
        for i in range(n):
            recon.add_frame(header_of(rec, i), rec.frames[i])
        results.append(recon.end(None))
    assert spare_fits == angles + 4
    assert results[0].volumes is not None
    assert results[0].volumes.mu is spare_mu
    assert results[1].volumes is not None
    for name in NAMES:
        np.testing.assert_array_equal(
            getattr(results[0].volumes, name), getattr(results[1].volumes, name), err_msg=name
        )
    with pytest.raises(ValueError, match="reserve needs"):
        service.reserve((32, 96), 0)


def test_a_closed_scan_file_ends_the_scan_when_its_scan_end_never_comes(tmp_path: Path) -> None:
    rec = shared_recorded()
    n = len(rec.rows)
    path = tmp_path / "scan.h5"
    writer = ScanFileWriter(path, rec.header())
    writer.open()
    for _, frame, tags in frames_in_order(rec):
        writer.append(frame, tags)
    recon = StreamingReconstructor(live_rows=())
    recon.scan_file = path
    recon.catch_up(path)
    assert recon._end_from_file() is None  # the writer still has it open: more may come
    writer.close()
    result = recon._end_from_file()
    assert result is not None
    assert (result.stats.frames, result.stats.frames_sent, result.stats.lost) == (n, n, [])
    assert recon.scan is None
    offline, _ = reconstruct_file(path)
    assert_same_volumes(result.volumes, offline)


def test_a_run_that_is_not_a_ct_is_passed_over_with_one_log_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rec = shared_recorded()
    pub = FramePublisher(frame_bytes=rec.frame_bytes)

    def detector() -> None:  # an alignment-like run without a scan plan, then the CT
        pub.start_scan("count-run", rec.instrument, None)
        for i, frame, tags in list(frames_in_order(rec))[:3]:
            pub.publish(frame, tags, frame_number=i)
        pub.end_scan()
        pub.start_scan(rec.scan_uid, rec.instrument, rec.plan)
        for i, frame, tags in frames_in_order(rec):
            pub.publish(frame, tags, frame_number=i)
        pub.end_scan()

    rx = FrameReceiver(pub.endpoint, frame_bytes=rec.frame_bytes)
    thread = run_in_thread(detector)
    try:
        with caplog.at_level("INFO", logger="recon.streaming"):
            (result,) = StreamingReconstructor(live_rows=()).run(rx, idle_timeout_s=60)
    finally:
        thread.join()
        pub.close()
        rx.close()
    assert result.scan_uid == rec.scan_uid
    assert result.volumes is not None
    passed = [r.getMessage() for r in caplog.records if "passed over" in r.getMessage()]
    assert passed == ["scan count-run is not a phase-stepping CT; passed over"]
