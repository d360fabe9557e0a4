"""Benchmark: the frame stream and the streaming reconstructor against a bare pyzmq baseline.

Usage::

    .venv/bin/python benchmarks/bench_stream.py [--quick] [--out benchmarks/results]

Measured (wall clock, ``time.perf_counter``):

1. **Throughput**, 1024x1024 and 2048x2048 uint16 frames over tcp://127.0.0.1, sender in another
   process (spawned), PUSH/PULL with the protocol's HWM sizing:
   - baseline: bare pyzmq, ``send_multipart([json, frame], copy=False)`` -> ``recv_multipart``;
   - Talbot: ``FramePublisher`` -> ``FrameReceiver`` -> ``StreamingReconstructor`` with retrieval
     ON (every 5-step series fitted on arrival, one live row backprojected per projection), the
     final volume off. Frames of synthetic stepping curves; reference series first.
   Reported: GB/s, frames/s, lost frames (must be 0). The largest size is also run with the
   sender paced at 100 frames/s, the target detector's rate; its scans are 905 frames (180
   angles + 1 reference, 5 steps: 9 s at 100 Hz). Each Talbot case streams two scans through one
   reconstructor, as the ``talbot recon`` service receives them: the second writes its fits into
   the first one's buffers (``recon/fitpool.py``); the first writes into memory the process has
   not touched before.
2. **Live slice latency** at 1024x1024: seconds from the arrival of a projection's last step to
   its live slices (one row, 3 channels) updated (``StreamingReconstructor.live_latency_s``).
3. **Last frame to final volume**: the tiny profile (90 angles, 32 x 96) replayed from a scan file;
   and 1024 columns x 180 angles x 5 steps, measured on a 64-row slab (memory) and extrapolated
   linearly to 1024 rows (retrieval and FBP are per row), or on all 1024 rows with
   ``--full-volume`` (the extrapolation is optimistic: the full run pays for 13 GB of volumes in
   memory the process has not touched; docs/benchmarks.md); two scans in one new reconstructor
   (this process has run the throughput part before, so its first scan is not that of a fresh
   process), the second as in a running ``talbot recon`` service.

The process keeps the memory it frees, as ``talbot recon`` does (``recon/allocator.py``); the
rates of fresh and reused memory are measured first, before that setting.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import bench_parser, format_table, print_header, write_json

from contracts.instrument import Detector
from contracts.profile import Profile, builtin_profile
from contracts.scanplan import ScanPlan
from recon.allocator import keep_freed_memory

STEPS = 5

#: The stepped grating's period [m]: the synthetic frames step one period in STEPS steps.
G2_PITCH_M = builtin_profile("tiny").instrument.geometry.g2_pitch_m


def bench_profile(size: int, angles: int, rows: int | None = None) -> Profile:
    """The tiny profile with a size x size (or rows x size) detector and a plan of ``angles``
    angles, STEPS steps, one reference series at each end (no calibration series: the synthetic
    frames are STEPS-step series), no darks. The geometry stays the
    tiny one (a pixel of 1.5 G2 periods in the G2 plane); only the detector format changes."""
    p = builtin_profile("tiny")
    inst = p.instrument
    det = Detector(shape=(rows or size, size))
    plan = ScanPlan.model_validate(
        {
            **p.scan_plan().model_dump(),
            "angles": angles,
            "reference_every": angles,
            "darks": 0,
            "steps": STEPS,
            "calibration_steps": 0,
        }
    )
    return p.model_copy(
        update={"instrument": inst.model_copy(update={"detector": det}), "plan": plan}
    )


def stepping_frames(rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """(2, STEPS, rows, cols) uint16: a reference series and a sample series."""
    rng = np.random.default_rng(seed)
    x = np.arange(cols)[None, :]
    y = np.arange(rows)[:, None]
    ref_phase = 2 * np.pi * (x / 37.0 + y / 211.0)
    obj_phase = 0.5 * np.sin(2 * np.pi * x / cols) * np.cos(2 * np.pi * y / rows)
    out = np.empty((2, STEPS, rows, cols), np.uint16)
    for k in range(STEPS):
        th = 2 * np.pi * k / STEPS
        ref = 4000 * (1 + 0.3 * np.cos(th + ref_phase))
        obj = 0.8 * 4000 * (1 + 0.25 * np.cos(th + ref_phase + obj_phase))
        out[0, k] = rng.poisson(ref).astype(np.uint16)
        out[1, k] = rng.poisson(obj).astype(np.uint16)
    return out


def _tags(n: int, angles: int) -> dict[str, float]:
    series, k = divmod(n, STEPS)
    is_ref = series == 0
    angle = series - 1
    return {
        "image_key": 1 if is_ref else 0,
        "angle_index": -1 if is_ref else angle,
        "series_index": 0 if is_ref else -1,
        "step_index": k,
        "attempt": 0,
        "g2_position_m": k * G2_PITCH_M / STEPS,
        "rotation_deg": 0.0 if is_ref else angle * 180.0 / angles,
        "timestamp_s": 0.01 * n,
        "ring_current_ma": 200.0,
    }


def sender(
    kind: str, endpoint_q: Any, size: int, n_frames: int, angles: int, rate_hz: float = 0.0
) -> None:
    """Child process: publish ``n_frames`` frames (kind 'bare' or 'talbot'), as fast as the
    socket takes them or paced at ``rate_hz`` frames/s (a detector's frame rate)."""
    import zmq

    from contracts.sockets import FramePublisher, hwm_for

    frames = stepping_frames(size, size)
    frame_bytes = size * size * 2
    if kind == "bare":
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUSH)
        sock.sndhwm = hwm_for(frame_bytes)
        sock.bind("tcp://127.0.0.1:*")
        endpoint_q.put(sock.getsockopt_string(zmq.LAST_ENDPOINT))
        for n in range(n_frames):
            head = json.dumps({"type": "frame", "frame_number": n, **_tags(n, angles)}).encode()
            sock.send_multipart([head, frames[min(n // STEPS, 1), n % STEPS]], copy=False)
        sock.send_multipart([b'{"type": "scan-end"}', b""])
        sock.close(linger=30_000)
        ctx.term()
        return
    pub = FramePublisher(frame_bytes=frame_bytes)
    endpoint_q.put(pub.endpoint)
    prof = bench_profile(size, angles)
    pub.start_scan(
        uuid.uuid4().hex, prof.instrument, prof.plan, dtype="uint16", frames_planned=n_frames
    )
    t0 = time.perf_counter()
    for n in range(n_frames):
        if rate_hz > 0:
            wait = t0 + n / rate_hz - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
        pub.publish(frames[min(n // STEPS, 1), n % STEPS], _tags(n, angles), frame_number=n)
    pub.end_scan()
    pub.close(linger_s=30)


def _spawn(
    kind: str, size: int, n_frames: int, angles: int, rate_hz: float = 0.0
) -> tuple[Any, str]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=sender, args=(kind, q, size, n_frames, angles, rate_hz))
    proc.start()
    return proc, q.get(timeout=60)


def bench_bare(size: int, n_frames: int) -> dict[str, Any]:
    """Bare pyzmq PUSH/PULL, zero-copy, nothing done with the frames."""
    import zmq

    from contracts.sockets import hwm_for

    proc, endpoint = _spawn("bare", size, n_frames, n_frames // STEPS)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PULL)
    sock.rcvhwm = hwm_for(size * size * 2)
    sock.connect(endpoint)
    got = 0
    t0 = None
    while True:
        parts = sock.recv_multipart(copy=False)
        if t0 is None:
            t0 = time.perf_counter()
        if len(parts[1]) == 0:
            break
        got += 1
    dt = time.perf_counter() - t0
    sock.close()
    ctx.term()
    proc.join()
    return _rate("bare pyzmq PUSH/PULL", size, got, n_frames, dt)


def _rate(name: str, size: int, got: int, n: int, dt: float) -> dict[str, Any]:
    nbytes = got * size * size * 2
    return {
        "path": name,
        "size": f"{size}x{size}",
        "frames": got,
        "lost": n - got,
        "seconds": dt,
        "gb_per_s": nbytes / dt / 1e9,
        "frames_per_s": got / dt,
    }


def bench_talbot(
    size: int, n_frames: int, rate_hz: float = 0.0, scans: int = 1, reserve: bool = False
) -> tuple[list[dict[str, Any]], list[float]]:
    """FramePublisher -> StreamingReconstructor with retrieval and one live row; no volume.

    ``rate_hz`` > 0 paces the sender like a detector; the rate is then measured from the first
    frame received to the last series processed (keeping up means it equals the offered rate).
    ``scans`` > 1 streams that many scans through the same reconstructor, one after the other,
    as the ``talbot recon`` service receives them (its later scans reuse the memory the earlier
    ones freed); one row per scan. ``reserve``: the reconstructor first reserves the fits of
    such a scan (``talbot recon --reserve``; no volumes here), as a service does at its start.
    """
    from contracts.messages import ScanEnd
    from contracts.sockets import FrameReceiver
    from recon.streaming import StreamingReconstructor, StreamResult

    first: list[float] = []

    class NoVolume(StreamingReconstructor):
        def add_frame(self, *args: Any, **kw: Any) -> None:
            if not first:
                first.append(time.perf_counter())
            super().add_frame(*args, **kw)

        def end(self, end: ScanEnd | None) -> StreamResult:
            self.t_end = time.perf_counter()
            if end is not None:
                self.stats.frames_sent = end.frames_sent
                self.stats.lost = [n for n in range(end.frames_sent) if n not in self._seen]
            result = StreamResult("", self.stats)
            # as the stock end(): the next scan-start begins afresh (its early result with it)
            self.scan = None
            return result

    angles = n_frames // STEPS - 1
    rec = NoVolume(live_rows=(size // 2,))
    if reserve:
        rec.reserve((size, size), n_frames // STEPS, volumes=False)
    rows: list[dict[str, Any]] = []
    for scan in range(scans):
        first.clear()
        proc, endpoint = _spawn("talbot", size, n_frames, angles, rate_hz)
        rx = FrameReceiver(endpoint, frame_bytes=size * size * 2)
        (result,) = rec.run(rx, idle_timeout_s=120)
        rx.close()
        proc.join()
        dt = rec.t_end - first[0]
        name = "Talbot stream + retrieval + live row"
        if rate_hz > 0:
            name += f", sender paced at {rate_hz:.0f} Hz"
        if scan > 0:
            name += f", scan {scan + 1} of the same reconstructor"
        elif reserve:
            name += ", first scan, memory reserved at start"
        row = _rate(name, size, result.stats.frames, n_frames, dt)
        row["lost"] = len(result.stats.lost)
        rows.append(row)
    return rows, rec.live_latency_s


def bench_final_tiny() -> dict[str, Any]:
    """Tiny profile replayed from a file: last frame to volume and files written (the
    reconstructor finishes when the last planned series is in, before ``scan-end``)."""
    from contracts.scanfile import ScanFileWriter, ScanHeader
    from contracts.sockets import FramePublisher, FrameReceiver
    from recon.streaming import StreamingReconstructor
    from sim.replay import replay
    from sim.scan import simulate_scan

    p = builtin_profile("tiny")
    scan = simulate_scan(p.instrument, p.scan_plan(), p.simulated(), seed=0)
    times: dict[str, float] = {}

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scan.h5"
        header = ScanHeader(uuid.uuid4().hex, p.instrument, p.scan_plan(), dtype="uint16")
        with ScanFileWriter(path, header) as w:
            for i in range(len(scan.table)):
                w.append(scan.frames[i], scan.table.rows[i])
        for run in range(2):  # the first run compiles
            pub = FramePublisher(frame_bytes=scan.frames[0].nbytes)
            rx = FrameReceiver(pub.endpoint, frame_bytes=scan.frames[0].nbytes)
            th = threading.Thread(target=replay, args=(path, pub))
            th.start()
            (result,) = StreamingReconstructor(out=Path(tmp) / f"out{run}").run(
                rx, idle_timeout_s=60
            )
            th.join()
            pub.close()
            rx.close()
            assert result.volumes is not None, result.error
            assert result.files, "no files written"
            # from the last frame's arrival to recon.h5 and the PNG written
            times["volume_and_files_s"] = result.timings_s["last_frame_to_volume_s"]
            times["scan_end_to_result_s"] = result.timings_s["finalize_s"]
    return {"case": "tiny 32x96, 90 angles x 5 steps", **times}


def first_touch_gb_per_s(total_mb: int = 1200, block_mb: int = 12) -> dict[str, float]:
    """Rate of writing memory the process has never touched (kept, as the reconstructor keeps
    one fit per projection) against memory freed and reused, in the same run. On virtual
    machines that return freed guest pages to the host, the first rate bounds how fast a
    consumer that keeps its results can go."""
    n = block_mb * 2**20 // 4

    def fill(count: int) -> float:
        kept = []
        t0 = time.perf_counter()
        for _ in range(count):
            block = np.empty(n, np.float32)
            block.fill(1.0)
            kept.append(block)
        return time.perf_counter() - t0

    count = total_mb // block_mb
    fresh = fill(count)
    reused = fill(count)  # the blocks of the first pass were freed and are taken again
    return {"fresh_gb_per_s": total_mb / 1024 / fresh, "reused_gb_per_s": total_mb / 1024 / reused}


def bench_final_scaled(
    rows: int, cols: int, angles: int, scans: int = 2, reserve: bool = False
) -> dict[str, Any]:
    """Frames fed directly (no socket): last frame -> final volume for a rows x cols slab, for
    ``scans`` scans in one new reconstructor (the later ones in a reconstructor that has run a
    scan before, as the ``talbot recon`` service does). ``reserve``: the reconstructor first
    reserves the scan's memory (``talbot recon --reserve``), timed apart."""
    from contracts.messages import ScanStart, frame_header
    from recon.streaming import StreamingReconstructor

    p = bench_profile(cols, angles, rows)
    frames = stepping_frames(rows, cols)
    rec = StreamingReconstructor(live_rows=(), center_offset_px=0.0)
    reserve_s = None
    if reserve:
        t0 = time.perf_counter()
        rec.reserve((rows, cols), angles)  # 180 projections and (up to 4) references
        reserve_s = time.perf_counter() - t0
    times: list[float] = []
    for _ in range(scans):
        uid = uuid.uuid4().hex
        n_frames = (angles + 1) * STEPS
        rec.start(
            ScanStart(
                scan_uid=uid,
                instrument=p.instrument,
                plan=p.plan,
                dtype="uint16",
                shape=(rows, cols),
                frames_planned=n_frames,
            )
        )
        for n in range(n_frames):
            h = frame_header(
                uid, _tags(n, angles), frame_number=n, dtype="uint16", shape=(rows, cols)
            )
            if n == n_frames - 1:
                # a scan of this size lasts >= 9 s (100 frames/s), longer than the FFT planning
                # that starts with it (~3 s, once per process); fed directly, the slab takes ~1.5
                rec.wait_prepared()
            rec.add_frame(h, frames[min(n // STEPS, 1), n % STEPS])
        t0 = time.perf_counter()
        result = rec.end(None)
        times.append(time.perf_counter() - t0)
        assert result.volumes is not None, result.error
        rec.recycle(result)  # as talbot recon does once the files are written
    return {
        "case": f"{rows} rows x {cols} cols, {angles} angles x {STEPS} steps",
        "reserve_s": reserve_s,
        "volume_s": times,
        "extrapolated_rows": cols,
        "extrapolated_volume_s": [t * cols / rows for t in times],
    }


def main(argv: list[str] | None = None) -> int:
    parser = bench_parser(__doc__, result="bench_stream")
    parser.add_argument(
        "--full-volume", action="store_true",
        help="measure the final volume on all 1024 rows instead of a 64-row slab (~20 GB of "
        "memory at its peak, ~4 min)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    print_header("frame stream: throughput, live latency, last frame to volume")
    touch = first_touch_gb_per_s()
    kept = keep_freed_memory()  # as the ``talbot recon`` service does (recon/allocator.py)
    print(
        f"writing fresh memory {touch['fresh_gb_per_s']:.2f} GB/s, reused memory "
        f"{touch['reused_gb_per_s']:.2f} GB/s (the reconstructor keeps 12 B per pixel per "
        f"projection: 1.2 B per streamed byte); freed memory kept for reuse: {kept}"
    )
    sizes = [(256, 400), (512, 200)] if args.quick else [(1024, 600), (2048, 905)]
    rows: list[dict[str, Any]] = []
    latency: dict[str, Any] = {}
    for size, n in sizes:
        n -= n % STEPS
        bare = bench_bare(size, n)
        rows.append(bare)
        talbot, lat = bench_talbot(size, n, scans=2)
        if size == sizes[-1][0]:  # the target: a detector at 100 frames/s (2048^2: 0.84 GB/s)
            paced, _ = bench_talbot(size, n, rate_hz=100.0, scans=2)
            reserved, _ = bench_talbot(size, n, rate_hz=100.0, reserve=True)
            talbot += paced + reserved
        for row in talbot:
            row["vs_bare"] = row["gb_per_s"] / bare["gb_per_s"]
        rows += talbot
        if size in (1024, 256):
            lat_s = np.asarray(lat[2:])  # the first ones include JIT compilation
            latency = {
                "size": f"{size}x{size}",
                "updates": int(lat_s.size),
                "median_ms": 1e3 * float(np.median(lat_s)),
                "p95_ms": 1e3 * float(np.percentile(lat_s, 95)),
                "max_ms": 1e3 * float(lat_s.max()),
            }
    print(
        format_table(
            rows,
            [
                ("path", "path", ""),
                ("size", "frame", ""),
                ("frames", "frames", ""),
                ("lost", "lost", ""),
                ("gb_per_s", "GB/s", ".2f"),
                ("frames_per_s", "frames/s", ".0f"),
                ("vs_bare", "vs bare", ".2f"),
            ],
        )
    )
    print(
        f"\nlive slice latency ({latency['size']}, 1 row x 3 channels): median "
        f"{latency['median_ms']:.1f} ms, p95 {latency['p95_ms']:.1f} ms, max "
        f"{latency['max_ms']:.1f} ms over {latency['updates']} projections"
    )
    tiny = bench_final_tiny()
    print(
        f"last frame -> volume + recon.h5 + PNG, {tiny['case']}: "
        f"{tiny['volume_and_files_s']:.2f} s "
        f"(scan-end -> result {tiny['scan_end_to_result_s']:.2f} s)"
    )
    slab = 1024 if args.full_volume else 64
    scaled = bench_final_scaled(*((16, 256, 45) if args.quick else (slab, 1024, 180)))
    rows_measured = int(scaled["case"].split()[0])
    pairs = zip(scaled["volume_s"], scaled["extrapolated_volume_s"], strict=True)
    for i, (dt, full) in enumerate(pairs):
        which = "first scan of a new reconstructor" if i == 0 else f"scan {i + 1}, same one"
        print(
            f"last frame -> final volume, {scaled['case']}, {which}: {dt:.2f} s; "
            f"x{scaled['extrapolated_rows'] // rows_measured} rows -> {full:.1f} s"
        )
    reserved = bench_final_scaled(
        *((16, 256, 45) if args.quick else (slab, 1024, 180)), scans=1, reserve=True
    )
    print(
        f"last frame -> final volume, {reserved['case']}, first scan of a new reconstructor "
        f"that reserved its memory at start ({reserved['reserve_s']:.1f} s): "
        f"{reserved['volume_s'][0]:.2f} s; x{scaled['extrapolated_rows'] // rows_measured} rows "
        f"-> {reserved['extrapolated_volume_s'][0]:.1f} s"
    )
    finals = [tiny, scaled, reserved]
    path = write_json(
        "bench_stream" + ("_quick" if args.quick else ""),
        {
            "throughput": rows,
            "live_latency": latency,
            "final_volume": finals,
            "memory": {**touch, "freed_memory_kept": kept},
        },
        args.out,
    )
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
