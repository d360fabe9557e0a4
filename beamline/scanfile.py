"""Per-frame bookkeeping shared by the simulator, the scan file and the reconstructor.

A contract module (DESIGN §2, §3.3-3.4): it imports nothing from the other Talbot packages.
``image_key`` follows NeXus NXtomo: 0 projection, 1 flat (reference), 2 dark.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from types import TracebackType
from typing import Any

import h5py
import numpy as np
from numpy.typing import NDArray


class ImageKey(IntEnum):
    """NXtomo image_key values."""

    PROJECTION = 0
    FLAT = 1
    DARK = 2


#: Field name -> dtype of one row of the frame table (one row per acquired frame, file order).
FRAME_FIELDS: dict[str, np.dtype] = {
    "image_key": np.dtype(np.int8),
    "angle_index": np.dtype(np.int32),  # projection angle index; -1 for darks and references
    "series_index": np.dtype(np.int32),  # reference series number; -1 for projections and darks
    "step_index": np.dtype(np.int32),  # phase-step index k within a series; -1 for darks
    "attempt": np.dtype(np.int32),  # 0 for the first take of a series, +1 for each re-take
    "g2_position_m": np.dtype(np.float64),  # measured (encoder) stepped-grating position [m]
    "rotation_deg": np.dtype(np.float64),  # measured rotation angle [deg]
    "timestamp_s": np.dtype(np.float64),  # acquisition time since scan start [s]
    "ring_current_ma": np.dtype(np.float64),  # beam monitor (dose normalisation) [mA]
}

FRAME_DTYPE = np.dtype(list(FRAME_FIELDS.items()))


@dataclass(frozen=True)
class FrameTable:
    """Per-frame tags and readbacks as a NumPy structured array of ``FRAME_DTYPE``."""

    rows: NDArray[np.void]

    def __post_init__(self) -> None:
        if self.rows.dtype != FRAME_DTYPE:
            raise ValueError(f"rows must have dtype FRAME_DTYPE, got {self.rows.dtype}")
        if self.rows.ndim != 1:
            raise ValueError(f"rows must be 1-D, got shape {self.rows.shape}")

    @classmethod
    def empty(cls, n: int) -> FrameTable:
        """A table of ``n`` zeroed rows."""
        return cls(np.zeros(n, dtype=FRAME_DTYPE))

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def column(self, name: str) -> NDArray[np.generic]:
        """One field as a 1-D array (a view)."""
        if name not in FRAME_FIELDS:
            raise KeyError(f"unknown frame field {name!r}; known: {sorted(FRAME_FIELDS)}")
        return self.rows[name]

    def latest_attempts(self) -> NDArray[np.bool_]:
        """Mask of frames that belong to the latest attempt of their series (DESIGN §3.4)."""
        key = self.rows["image_key"].astype(np.int64)
        series = np.where(
            key == ImageKey.PROJECTION, self.rows["angle_index"], self.rows["series_index"]
        ).astype(np.int64)
        attempt = self.rows["attempt"].astype(np.int64)
        best: dict[tuple[int, int], int] = {}
        for k, s, a in zip(key.tolist(), series.tolist(), attempt.tolist(), strict=True):
            best[(k, s)] = max(best.get((k, s), a), a)
        return np.array(
            [a == best[(k, s)] for k, s, a in zip(key, series, attempt, strict=True)],
            dtype=bool,
        )


# ------------------------------------------------------------------------------------------------
# The raw scan file (DESIGN §3.3): HDF5, NXtomo-style flat frame stack, SWMR while acquiring.

#: Layout identifier written to ``/entry@talbot_layout``; bump on incompatible changes.
LAYOUT_VERSION = "talbot-scan/1"

#: Path of the frame stack (areaDetector readers look here); NXtomo's detector/data links to it.
DATA_PATH = "/entry/data/data"
#: Group of the per-frame tag and readback datasets (one 1-D dataset per FRAME_FIELDS entry).
FRAMES_GROUP = "/entry/frames"
#: Per-frame flag set to 1 on frames of a series that a later attempt superseded.
SUPERSEDED = "superseded"
#: Group whose attributes hold the interferometer (Data Exchange style) and the preset JSON.
INTERFEROMETER_GROUP = "/entry/instrument/interferometer"


@dataclass(frozen=True)
class ScanHeader:
    """What a reader needs besides the frames: identity, the instrument and the plan."""

    scan_uid: str
    preset_json: str  # beamline.config.Preset as JSON (geometry, detector, schedule, ...)
    steps: int
    periods: int
    shape: tuple[int, int]  # (rows, columns)
    dtype: str = "uint16"

    def __post_init__(self) -> None:
        if not self.scan_uid:
            raise ValueError("scan_uid must not be empty")
        if self.steps < 3:
            raise ValueError(f"steps must be >= 3, got {self.steps}")
        if self.periods < 1:
            raise ValueError(f"periods must be >= 1, got {self.periods}")
        if len(self.shape) != 2 or min(self.shape) < 1:
            raise ValueError(f"shape must be (rows, columns) > 0, got {self.shape}")
        if np.dtype(self.dtype).kind not in "uif":
            raise ValueError(f"dtype must be a numeric dtype, got {self.dtype!r}")


def _series_key(row: np.void) -> tuple[int, int]:
    key = int(row["image_key"])
    if key == ImageKey.PROJECTION:
        return key, int(row["angle_index"])
    if key == ImageKey.FLAT:
        return key, int(row["series_index"])
    return key, -1  # darks: one series


class ScanFileWriter:
    """Append-only writer of the raw scan file, SWMR-readable while it writes.

    One frame per chunk; after every ``append`` the frame and its row of tags are flushed, so a
    reader following the file (``ScanFileReader.refresh``) sees whole frames only. Frames of a
    series that a later attempt re-takes stay in the file with ``superseded = 1`` (DESIGN §3.4).
    """

    def __init__(self, path: str | Path, header: ScanHeader) -> None:
        self.path = Path(path)
        self.header = header
        self._file: h5py.File | None = None
        self._count = 0
        self._latest: dict[tuple[int, int], int] = {}
        self._series_frames: dict[tuple[int, int, int], list[int]] = {}
        # Datasets looked up once: a group lookup costs ~0.1 ms, a frame's whole append ~0.7 ms.
        self._data: h5py.Dataset | None = None
        self._columns: list[tuple[str, h5py.Dataset, NDArray[np.generic]]] = []
        self._one = h5py.h5s.create_simple((1,))  # memory space of one tag value

    def __enter__(self) -> ScanFileWriter:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def frames_written(self) -> int:
        """Number of frames appended so far."""
        return self._count

    def open(self) -> None:
        """Create the file and its datasets, then switch to SWMR mode."""
        if self.path.exists():
            raise FileExistsError(f"scan file {self.path} exists; the writer never overwrites")
        h = self.header
        rows, cols = h.shape
        f = h5py.File(self.path, "w", libver="latest")
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry.attrs["definition"] = "NXtomo"
        entry.attrs["talbot_layout"] = LAYOUT_VERSION
        entry.attrs["scan_uid"] = h.scan_uid
        data = f.create_dataset(
            DATA_PATH,
            shape=(0, rows, cols),
            maxshape=(None, rows, cols),
            chunks=(1, rows, cols),
            dtype=np.dtype(h.dtype),
        )
        f["/entry/data"].attrs["NX_class"] = "NXdata"
        f["/entry/data"].attrs["signal"] = "data"
        det = f.create_group("/entry/instrument/detector")
        det.attrs["NX_class"] = "NXdetector"
        det["data"] = data  # hard link: NXtomo's place for the same frames
        frames = f.create_group(FRAMES_GROUP)
        chunk = (1024,)
        for name, dtype in FRAME_FIELDS.items():
            frames.create_dataset(name, shape=(0,), maxshape=(None,), chunks=chunk, dtype=dtype)
        frames.create_dataset(SUPERSEDED, shape=(0,), maxshape=(None,), chunks=chunk, dtype="u1")
        det["image_key"] = frames["image_key"]
        inter = f.create_group(INTERFEROMETER_GROUP)
        inter.attrs["grid_steps"] = h.steps
        inter.attrs["periods"] = h.periods
        inter.attrs["preset_json"] = h.preset_json
        f.swmr_mode = True
        self._file = f
        self._data = data
        self._columns = [
            (name, frames[name], np.zeros(1, dtype=dtype)) for name, dtype in FRAME_FIELDS.items()
        ]
        self._columns.append((SUPERSEDED, frames[SUPERSEDED], np.zeros(1, dtype="u1")))

    def append(self, frame: NDArray[np.generic], tags: Mapping[str, Any] | np.void) -> int:
        """Append one frame (rows, columns) and its tags (every FRAME_FIELDS name); returns its
        frame number. Raises ValueError, before writing anything, on a wrong shape or a missing
        or non-finite tag."""
        if self._file is None:
            raise RuntimeError("the scan file is not open")
        frame = np.asarray(frame)
        if frame.shape != self.header.shape:
            raise ValueError(
                f"frame shape {frame.shape} differs from the scan's {self.header.shape}"
            )
        row = np.zeros(1, dtype=FRAME_DTYPE)[0]
        for name in FRAME_FIELDS:
            try:
                value = tags[name]
            except (KeyError, ValueError, IndexError):
                raise ValueError(f"tags lack the field {name!r}") from None
            if not np.isfinite(value):
                raise ValueError(f"tag {name!r} is not finite: {value!r}")
            row[name] = value
        n = self._count
        data = self._data
        assert data is not None
        data.resize(n + 1, axis=0)
        if frame.dtype == data.dtype and frame.flags.c_contiguous:
            # One frame is one unfiltered chunk: write its bytes without a hyperslab selection.
            data.id.write_direct_chunk((n, 0, 0), frame.tobytes())
        else:
            data[n] = frame  # HDF5 converts the type
        for name, ds, value in self._columns:
            value[0] = 0 if name == SUPERSEDED else row[name]
            ds.resize((n + 1,))
            space = ds.id.get_space()
            space.select_hyperslab((n,), (1,))
            ds.id.write(self._one, space, value)
        self._mark_superseded(row, n)
        self._count = n + 1
        self._file.flush()
        return n

    def _mark_superseded(self, row: np.void, n: int) -> None:
        series = _series_key(row)
        attempt = int(row["attempt"])
        self._series_frames.setdefault((*series, attempt), []).append(n)
        latest = self._latest.get(series)
        if latest is None or attempt > latest:
            self._latest[series] = attempt
            if latest is not None and self._file is not None:
                sup = self._file[FRAMES_GROUP][SUPERSEDED]
                for old in range(latest + 1):
                    for i in self._series_frames.get((*series, old), []):
                        sup[i] = 1
        elif attempt < latest and self._file is not None:
            self._file[FRAMES_GROUP][SUPERSEDED][n] = 1

    def close(self) -> None:
        """Flush and close; safe to call twice."""
        if self._file is not None:
            self._file.flush()
            self._file.close()
            self._file = None
            self._data = None
            self._columns = []


@dataclass(frozen=True)
class ScanFileContents:
    """A scan file read into memory: header, frames (n, rows, columns), tags, superseded flags."""

    header: ScanHeader
    frames: NDArray[np.generic]
    table: FrameTable
    superseded: NDArray[np.bool_]


def read_header(f: h5py.File) -> ScanHeader:
    """The ScanHeader of an open scan file; ValueError if it is not a Talbot scan file."""
    try:
        entry = f["entry"]
        layout = entry.attrs["talbot_layout"]
        inter = f[INTERFEROMETER_GROUP].attrs
        data = f[DATA_PATH]
        header = ScanHeader(
            scan_uid=str(entry.attrs["scan_uid"]),
            preset_json=str(inter["preset_json"]),
            steps=int(inter["grid_steps"]),
            periods=int(inter["periods"]),
            shape=(int(data.shape[1]), int(data.shape[2])),
            dtype=str(data.dtype),
        )
    except KeyError as exc:
        raise ValueError(f"{f.filename} is not a Talbot scan file (missing {exc})") from None
    if layout != LAYOUT_VERSION:
        raise ValueError(f"{f.filename}: layout {layout!r}, this reader knows {LAYOUT_VERSION!r}")
    json.loads(header.preset_json)  # must be valid JSON
    return header


def read_frame_table(
    f: h5py.File, count: int | None = None
) -> tuple[FrameTable, NDArray[np.bool_]]:
    """The first ``count`` rows (all when None) of the frame tags and the superseded flags."""
    group = f[FRAMES_GROUP]
    n = min(int(group[name].shape[0]) for name in (*FRAME_FIELDS, SUPERSEDED))
    n = n if count is None else min(n, count)
    rows = np.zeros(n, dtype=FRAME_DTYPE)
    for name in FRAME_FIELDS:
        rows[name] = group[name][:n]
    return FrameTable(rows), group[SUPERSEDED][:n].astype(bool)


def read_scan(path: str | Path) -> ScanFileContents:
    """Read a whole scan file (also while it is being written: SWMR) into memory."""
    with h5py.File(path, "r", libver="latest", swmr=True) as f:
        header = read_header(f)
        data = f[DATA_PATH]
        table, superseded = read_frame_table(f)
        n = min(len(table), int(data.shape[0]))
        frames = data[:n]
    return ScanFileContents(
        header, frames, FrameTable(table.rows[:n].copy()), superseded[:n].copy()
    )
