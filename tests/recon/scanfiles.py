"""Test helper: small simulated scans recorded as raw scan files (with a re-taken series).

Not a test module. ``recorded_scan`` simulates the tiny profile with fewer angles and writes it
with ``ScanFileWriter`` the way the detector does, plus one re-take: angle ``RETAKE_ANGLE`` is
first taken with a tenth of the dose (a beam dump, attempt 0) and then again (attempt 1), so
only the latest attempt gives the right volume.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from contracts.frames import FRAME_DTYPE, ImageKey
from contracts.instrument import Instrument
from contracts.profile import Profile
from contracts.scanfile import ScanFileWriter, ScanHeader
from contracts.scanplan import ScanPlan
from sim.scan import SimulatedScan
from tests.profiles import simulate, tiny

RETAKE_ANGLE = 5


def small_profile(angles: int = 24, reference_every: int = 12) -> Profile:
    """The tiny profile (32 x 96 px) with fewer angles (fast tests)."""
    return tiny(angles=angles, reference_every=reference_every)


@dataclass(frozen=True)
class Recorded:
    """A simulated scan and the frames/tags in file order (re-take included)."""

    profile: Profile
    scan: SimulatedScan
    frames: NDArray[np.generic]
    rows: NDArray[np.void]
    scan_uid: str

    @property
    def plan(self) -> ScanPlan:
        return self.profile.scan_plan()

    @property
    def instrument(self) -> Instrument:
        return self.profile.instrument

    @property
    def frame_bytes(self) -> int:
        return int(self.frames[0].nbytes)

    def header(self) -> ScanHeader:
        p = self.profile
        return ScanHeader(self.scan_uid, p.instrument, p.scan_plan(), str(self.frames.dtype))


def recorded_scan(p: Profile | None = None, seed: int = 1, retake: bool = True) -> Recorded:
    """Simulate and lay the frames out in acquisition order, with the re-take."""
    p = p or small_profile()
    scan = simulate(p, seed=seed)
    frames = list(scan.frames)
    rows = list(scan.table.rows.copy())
    if retake:
        sel = [
            i
            for i, r in enumerate(rows)
            if r["image_key"] == ImageKey.PROJECTION and r["angle_index"] == RETAKE_ANGLE
        ]
        out_f: list[NDArray[np.generic]] = []
        out_r: list[np.void] = []
        for i, (f, r) in enumerate(zip(frames, rows, strict=True)):
            if i in sel:  # attempt 0: beam dump, a tenth of the counts
                out_f.append((f // 10).astype(f.dtype))
                out_r.append(r)
            else:
                out_f.append(f)
                out_r.append(r)
            if i == sel[-1]:  # the plan rewinds and re-takes the series
                for j in sel:
                    again = np.array(rows[j], dtype=FRAME_DTYPE)
                    again["attempt"] = 1
                    again["timestamp_s"] += 1.0
                    out_f.append(frames[j])
                    out_r.append(again[()])
        frames, rows = out_f, out_r
    return Recorded(p, scan, np.stack(frames), np.array(rows, dtype=FRAME_DTYPE), uuid.uuid4().hex)


def write_file(rec: Recorded, path: Path) -> Path:
    """Write the whole recorded scan to ``path``."""
    with ScanFileWriter(path, rec.header()) as w:
        for f, r in zip(rec.frames, rec.rows, strict=True):
            w.append(f, r)
    return path


def frames_in_order(rec: Recorded) -> Iterator[tuple[int, NDArray[np.generic], np.void]]:
    """(frame number, frame, tags) in file order."""
    for i, (f, r) in enumerate(zip(rec.frames, rec.rows, strict=True)):
        yield i, f, r


@functools.lru_cache(maxsize=1)
def shared_recorded() -> Recorded:
    """One recorded scan per test process (simulating takes seconds)."""
    return recorded_scan()


@functools.lru_cache(maxsize=1)
def shared_scan_file() -> Path:
    """``shared_recorded`` written once per test process (read-only for the tests)."""
    folder = Path(tempfile.mkdtemp(prefix="talbot-stream-"))
    atexit.register(shutil.rmtree, folder, True)
    return write_file(shared_recorded(), folder / "scan.h5")
