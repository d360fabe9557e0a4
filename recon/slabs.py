"""Scale-out by detector-row slabs: one relay, several reconstructor workers.

The relay PULLs the frame stream and forwards, for every worker, the worker's rows of each frame
(a zero-copy slice of the received buffer, header ``row_offset`` = the slab's first row) on a PUSH
socket of its own, so every worker gets every frame's slab losslessly with back-pressure;
``scan-start`` and ``scan-end`` go to all. Retrieval is per pixel and parallel-beam FBP per row,
so the slabs' volumes stacked along z equal one worker's volume; the rotation centre must be
given (``center_offset_px``), since each worker sees only its own rows. The frames of the
calibration series (reference series 0 of a plan with ``calibration_steps``) go whole to every
worker: the stepping curve's shape is measured on the whole detector (``recon.curve``). The
slab messages are those of docs/stream-protocol.md §5.
"""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from contracts.frames import ImageKey
from contracts.messages import (
    Frame,
    ScanEnd,
    ScanStart,
    encode_header,
    encode_scan_end,
    encode_scan_start,
)
from contracts.sockets import FramePublisher, FrameReceiver
from recon.fitmode import FitMode
from recon.output import write_recon
from recon.pipeline import Projections, Volumes
from recon.provenance import Provenance, new_scan_dir, point_latest
from recon.scanresult import StreamResult, StreamStats
from recon.streaming import StreamingReconstructor


def slab_bounds(rows: int, workers: int) -> list[tuple[int, int]]:
    """Split ``rows`` detector rows into ``workers`` contiguous near-equal slabs (r0, r1).

    Inner boundaries fall on even rows: the gridding backprojector packs rows in pairs
    (2k, 2k + 1) into one complex transform, so every slab then packs exactly the pairs one
    worker would, and the slabs' volumes equal one worker's to the last bit.
    """
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers!r}")
    if rows < 2 * workers - 1:
        raise ValueError(f"rows ({rows}) must be >= 2 * workers - 1 ({2 * workers - 1})")
    edges = 2 * np.round(np.linspace(0, rows, workers + 1) / 2).astype(int)
    edges[-1] = rows
    return [(int(a), int(b)) for a, b in itertools.pairwise(edges)]


class SlabRelay:
    """PULL in from ``source``, one PUSH (bound on loopback) per slab out; runs in a thread."""

    def __init__(
        self,
        source: str,
        slabs: Sequence[tuple[int, int]],
        *,
        frame_bytes: int | None = None,
        out_template: str = "tcp://127.0.0.1:*",
    ) -> None:
        self.slabs = list(slabs)
        self.receiver = FrameReceiver(source, frame_bytes=frame_bytes)
        self.outputs = [FramePublisher(out_template, frame_bytes=frame_bytes) for _ in self.slabs]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._calibrated = False  # the scan in progress has a calibration series

    @property
    def endpoints(self) -> list[str]:
        """Where each slab's worker connects."""
        return [p.endpoint for p in self.outputs]

    def step(self, timeout_s: float) -> bool:
        """Forward one message (False if none arrived within ``timeout_s``)."""
        msg = self.receiver.recv(timeout_s)
        if msg is None:
            return False
        if isinstance(msg, ScanStart):
            self._calibrated = msg.plan is not None and msg.plan.calibration_steps > 0
            for pub in self.outputs:
                pub.send_raw(encode_scan_start(msg))
        elif isinstance(msg, ScanEnd):
            for pub in self.outputs:
                pub.send_raw(encode_scan_end(msg))
        elif isinstance(msg, Frame):
            h, data = msg.header, msg.data
            if self._calibrated and h.image_key == ImageKey.FLAT and h.series_index == 0:
                for pub in self.outputs:  # whole: every worker measures the curve on them
                    pub.send_raw([encode_header(h), data])
                return True
            for (r0, r1), pub in zip(self.slabs, self.outputs, strict=True):
                a, b = r0 - h.row_offset, r1 - h.row_offset
                if a < 0 or b > data.shape[0]:
                    continue
                part = h.model_copy(update={"shape": (r1 - r0, h.shape[1]), "row_offset": r0})
                pub.send_raw([encode_header(part), data[a:b]])
        return True

    def start(self) -> None:
        """Relay in a background thread until ``stop``."""

        def loop() -> None:
            while not self._stop.is_set():
                self.step(0.05)

        self._thread = threading.Thread(target=loop, name="slab-relay", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread and close the sockets (delivering what is queued)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.receiver.close()
        for pub in self.outputs:
            pub.close(linger_s=5.0)


@dataclass(frozen=True)
class SlabResult:
    """The stitched outcome of several slab workers."""

    results: list[StreamResult]
    volumes: Volumes | None
    projections: Projections | None
    files: list[str]
    provenance: Provenance | None = None
    #: the scan's directory under ``out`` (``recon.provenance.new_scan_dir``)
    directory: Path | None = None


def stitch(results: Sequence[StreamResult]) -> tuple[Volumes | None, Projections | None]:
    """Stack the slab workers' volumes along z and projections along rows (in slab order)."""
    if not results or any(r.volumes is None or r.projections is None for r in results):
        return None, None
    vols = [r.volumes for r in results if r.volumes is not None]
    projs = [r.projections for r in results if r.projections is not None]
    volumes = Volumes(
        np.concatenate([v.delta for v in vols]),
        np.concatenate([v.mu for v in vols]),
        np.concatenate([v.darkfield for v in vols]),
        vols[0].voxel_size_m,
        vols[0].center_offset_px,
        vols[0].fit,  # every slab chose from the same whole calibration frames
    )
    projections = Projections(
        np.concatenate([p.transmission for p in projs], axis=1),
        np.concatenate([p.dphi for p in projs], axis=1),
        np.concatenate([p.darkfield for p in projs], axis=1),
        projs[0].angles_rad,
        projs[0].fit,
    )
    return volumes, projections


def run_slab_workers(
    source: str,
    rows: int,
    workers: int,
    *,
    center_offset_px: float,
    out: Path | None = None,
    frame_bytes: int | None = None,
    idle_timeout_s: float | None = 60.0,
    ready: threading.Event | None = None,
    fit: FitMode = "auto",
) -> SlabResult:
    """Relay + ``workers`` slab reconstructors (threads) for one scan from ``source``; stitches
    and writes ``recon.h5`` into ``out/<scan uid>/`` (``out/latest`` links to it). ``ready`` is
    set once all sockets are connected; ``fit``: the stepping-curve fit of every worker
    (``recon.curve``)."""
    slabs = slab_bounds(rows, workers)
    relay = SlabRelay(source, slabs, frame_bytes=frame_bytes)
    receivers = [FrameReceiver(ep, frame_bytes=frame_bytes) for ep in relay.endpoints]
    results: list[list[StreamResult]] = [[] for _ in slabs]

    def work(i: int) -> None:
        rec = StreamingReconstructor(
            rows=slabs[i], center_offset_px=center_offset_px, live_rows=(), fit=fit
        )
        results[i] = rec.run(receivers[i], idle_timeout_s=idle_timeout_s)

    threads = [threading.Thread(target=work, args=(i,), daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    relay.start()
    if ready is not None:
        ready.set()
    try:
        for t in threads:
            t.join()
    finally:
        relay.stop()
        for r in receivers:
            r.close()
    flat = [r[0] if r else StreamResult("", StreamStats(), error="no scan") for r in results]
    volumes, projections = stitch(flat)
    files: list[str] = []
    provenance = stitched_provenance(flat) if volumes is not None else None
    directory = None
    if out is not None and volumes is not None and provenance is not None:
        directory = new_scan_dir(out, provenance.scan_uid)
        files = write_recon(directory, volumes, projections, provenance)
        point_latest(out, directory)
    return SlabResult(flat, volumes, projections, files, provenance, directory)


def stitched_provenance(results: Sequence[StreamResult]) -> Provenance | None:
    """The slabs' volume is complete when every slab's is; it has the projections every slab
    has. None when a slab has no volume."""
    records = [r.provenance for r in results]
    if not records or any(p is None for p in records):
        return None
    parts = [p for p in records if p is not None]
    reasons = list(dict.fromkeys(p.incomplete_reason for p in parts if not p.complete))
    return dataclasses.replace(
        parts[0],
        projections_used=min(p.projections_used for p in parts),
        complete=all(p.complete for p in parts),
        incomplete_reason="; ".join(reasons),
    )
