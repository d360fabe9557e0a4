"""The raw scan file: HDF5, NXtomo-style flat frame stack, append-only and SWMR-readable.

Layout (``talbot-scan/2``; ``docs/data-format.md`` is the full description)::

    /entry                          @NX_class=NXentry @definition=NXtomo
                                    @talbot_layout="talbot-scan/2" @scan_uid
      data/data                     (n, rows, columns) frames, one frame per chunk
      frames/<field>                (n,) one dataset per FrameTags field (contracts.frames)
      instrument/detector/data      hard link to data/data; image_key -> frames/image_key
      instrument/interferometer     @instrument_json @scan_plan_json ("null": not a CT scan)
                                    @grid_steps @periods (CT scans: Data Exchange names)
      end/frames_written            -1 while the writer has the file open, then n
      end/complete                  1 when the writer closed the file at the acquisition's end

Files of the first layout (``talbot-scan/1``: one ``preset_json`` attribute, no frame numbers,
no end record) stay readable: :func:`read_header` converts them.

Readers open a file with :func:`open_scan_file` (SWMR, in bounded time, refusing a truncated or
damaged file with a one-line :class:`ScanFileError`) and read whole frames only
(:func:`readable_frames`).
"""

from __future__ import annotations

import ctypes
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import h5py
import numpy as np
from numpy.typing import NDArray
from pydantic import TypeAdapter, ValidationError

from contracts.base import first_error
from contracts.frames import (
    FRAME_DTYPE,
    FRAME_FIELD_DTYPES,
    PIXEL_DTYPES,
    TAG_FIELDS,
    FrameTable,
    series_key,
)
from contracts.instrument import Instrument
from contracts.legacy import LEGACY_LAYOUT, from_preset_json
from contracts.scanplan import ScanPlan

#: Layout identifier written to ``/entry@talbot_layout``; bump on incompatible changes.
LAYOUT_VERSION: Final = "talbot-scan/2"

#: Path of the frame stack (areaDetector readers look here); NXtomo's detector/data links to it.
DATA_PATH: Final = "/entry/data/data"
#: Group of the per-frame datasets (one 1-D dataset per FrameTags field).
FRAMES_GROUP: Final = "/entry/frames"
#: Group whose attributes hold the interferometer (Data Exchange style), instrument and plan.
INTERFEROMETER_GROUP: Final = "/entry/instrument/interferometer"
#: Group of the end record (frames written, complete flag), written when the file is closed.
END_GROUP: Final = "/entry/end"


@dataclass(frozen=True)
class ScanHeader:
    """What a reader needs besides the frames: identity, the instrument and the plan (None for
    a run that is not a phase-stepping CT, such as an alignment scan)."""

    scan_uid: str
    instrument: Instrument
    plan: ScanPlan | None
    dtype: str = "uint16"

    def __post_init__(self) -> None:
        if not self.scan_uid:
            raise ValueError("scan_uid must not be empty")
        if self.dtype not in PIXEL_DTYPES:
            raise ValueError(f"dtype must be one of {list(PIXEL_DTYPES)}, got {self.dtype!r}")

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, columns) of a frame."""
        return self.instrument.detector.shape


@dataclass(frozen=True)
class FileEnd:
    """The end record: ``frames_written`` is None while the writer has the file open (or when
    it died with the file open); ``complete`` says the acquisition ended as planned;
    ``recorded`` is False for a file without one (the first layout)."""

    frames_written: int | None
    complete: bool
    recorded: bool = True


class ScanFileError(ValueError):
    """A scan file that cannot be read: missing, not HDF5, truncated or damaged. The message is
    one line that starts with the file's path and says what is wrong."""


class ScanFileWriter:
    """Append-only writer of the raw scan file, SWMR-readable while it writes.

    One frame per chunk; after every ``append`` the frame and its row of tags are flushed, so a
    reader following the file sees whole frames only. Frames of a series that a later attempt
    re-takes stay in the file with ``superseded = 1``.
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
        self._superseded: h5py.Dataset | None = None
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
        self.close(complete=exc_type is None)

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
        for name, dtype in FRAME_FIELD_DTYPES.items():
            frames.create_dataset(name, shape=(0,), maxshape=(None,), chunks=chunk, dtype=dtype)
        det["image_key"] = frames["image_key"]
        inter = f.create_group(INTERFEROMETER_GROUP)
        inter.attrs["instrument_json"] = h.instrument.model_dump_json()
        inter.attrs["scan_plan_json"] = "null" if h.plan is None else h.plan.model_dump_json()
        if h.plan is not None:
            inter.attrs["grid_steps"] = h.plan.steps
            inter.attrs["periods"] = h.plan.periods
        end = f.create_group(END_GROUP)
        end.create_dataset("frames_written", data=np.int64(-1))
        end.create_dataset("complete", data=np.uint8(0))
        f.swmr_mode = True
        self._file = f
        self._data = data
        self._columns = [
            (name, frames[name], np.zeros(1, dtype=dtype))
            for name, dtype in FRAME_FIELD_DTYPES.items()
        ]
        self._superseded = frames["superseded"]

    def append(self, frame: NDArray[np.generic], tags: Mapping[str, Any] | np.void) -> int:
        """Append one frame (rows, columns) and its tags (every ``TAG_FIELDS`` name); returns its
        frame number. Raises ValueError, before writing anything, on a wrong shape or a missing
        or non-finite tag."""
        if self._file is None:
            raise RuntimeError("the scan file is not open")
        frame = np.asarray(frame)
        if frame.shape != self.header.shape:
            raise ValueError(
                f"frame shape {frame.shape} differs from the scan's {self.header.shape}"
            )
        n = self._count
        row = np.zeros(1, dtype=FRAME_DTYPE)[0]
        for name in TAG_FIELDS:
            try:
                value = tags[name]
            except (KeyError, ValueError, IndexError):
                raise ValueError(f"tags lack the field {name!r}") from None
            if not np.isfinite(value):
                raise ValueError(f"tag {name!r} is not finite: {value!r}")
            row[name] = value
        row["frame_number"] = n
        data = self._data
        assert data is not None
        data.resize(n + 1, axis=0)
        if frame.dtype == data.dtype and frame.flags.c_contiguous:
            # One frame is one unfiltered chunk: write its bytes without a hyperslab selection.
            data.id.write_direct_chunk((n, 0, 0), frame.tobytes())
        else:
            data[n] = frame  # HDF5 converts the type
        for name, ds, value in self._columns:
            value[0] = row[name]
            ds.resize((n + 1,))
            space = ds.id.get_space()
            space.select_hyperslab((n,), (1,))
            ds.id.write(self._one, space, value)
        self._mark_superseded(row, n)
        self._count = n + 1
        self._file.flush()
        return n

    def _mark_superseded(self, row: np.void, n: int) -> None:
        series = series_key(
            int(row["image_key"]), int(row["angle_index"]), int(row["series_index"])
        )
        attempt = int(row["attempt"])
        self._series_frames.setdefault((*series, attempt), []).append(n)
        latest = self._latest.get(series)
        sup = self._superseded
        assert sup is not None
        if latest is None or attempt > latest:
            self._latest[series] = attempt
            if latest is not None:
                for old in range(latest + 1):
                    for i in self._series_frames.get((*series, old), []):
                        sup[i] = 1
        elif attempt < latest:
            sup[n] = 1

    def close(self, *, complete: bool = True) -> None:
        """Write the end record (``complete``: the acquisition ended as planned), flush and
        close; safe to call twice."""
        if self._file is not None:
            end = self._file[END_GROUP]
            end["frames_written"][()] = self._count
            end["complete"][()] = 1 if complete else 0
            self._file.flush()
            self._file.close()
            self._file = None
            self._data = None
            self._columns = []
            self._superseded = None


@dataclass(frozen=True)
class ScanFileContents:
    """A scan file read into memory: header, frames (n, rows, columns), tags, end record."""

    header: ScanHeader
    frames: NDArray[np.generic]
    table: FrameTable
    end: FileEnd

    @property
    def superseded(self) -> NDArray[np.bool_]:
        """Mask of the frames a later attempt replaced."""
        return self.table.superseded


_PLAN_OR_NONE: Final = TypeAdapter(ScanPlan | None)


def _recorded(f: h5py.File) -> tuple[Instrument, ScanPlan | None]:
    inter = f[INTERFEROMETER_GROUP].attrs
    try:
        instrument = Instrument.model_validate_json(str(inter["instrument_json"]))
    except ValidationError as exc:
        field, reason = first_error(exc)
        raise ValueError(f"{f.filename}: instrument_json: {field}: {reason}") from None
    try:
        plan = _PLAN_OR_NONE.validate_json(str(inter["scan_plan_json"]))
    except ValidationError as exc:
        field, reason = first_error(exc)
        raise ValueError(f"{f.filename}: scan_plan_json: {field}: {reason}") from None
    return instrument, plan


def read_header(f: h5py.File) -> ScanHeader:
    """The ScanHeader of an open scan file; ValueError if it is not a Talbot scan file."""
    try:
        entry = f["entry"]
        layout = str(entry.attrs["talbot_layout"])
        data = f[DATA_PATH]
        if layout == LAYOUT_VERSION:
            instrument, plan = _recorded(f)
        elif layout == LEGACY_LAYOUT:
            instrument, plan = from_preset_json(str(f[INTERFEROMETER_GROUP].attrs["preset_json"]))
        else:
            raise ValueError(
                f"{f.filename}: layout {layout!r}; this reader knows {LAYOUT_VERSION!r} and "
                f"{LEGACY_LAYOUT!r}"
            )
        header = ScanHeader(str(entry.attrs["scan_uid"]), instrument, plan, str(data.dtype))
    except KeyError as exc:
        if _absent(exc):
            raise ValueError(f"{f.filename} is not a Talbot scan file (missing {exc})") from None
        raise ScanFileError(_problem(Path(f.filename), exc)) from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{f.filename}: recorded preset is not JSON ({exc})") from None
    if tuple(data.shape[1:]) != header.shape:
        raise ValueError(
            f"{f.filename}: frames {tuple(data.shape[1:])} differ from the recorded detector "
            f"shape {header.shape}"
        )
    return header


def read_end(f: h5py.File) -> FileEnd:
    """The end record of an open scan file (a first-layout file has none: ``complete`` False,
    ``recorded`` False)."""
    if END_GROUP not in f:
        return FileEnd(None, False, recorded=False)
    end = f[END_GROUP]
    if f.swmr_mode:
        end["frames_written"].refresh()
        end["complete"].refresh()
    written = int(end["frames_written"][()])
    return FileEnd(None if written < 0 else written, bool(end["complete"][()]))


def read_frame_table(f: h5py.File, count: int | None = None) -> FrameTable:
    """The first ``count`` rows (all when None) of the per-frame datasets."""
    group = f[FRAMES_GROUP]
    missing = [name for name in FRAME_FIELD_DTYPES if name not in group and name != "frame_number"]
    if missing:
        raise ValueError(f"{f.filename}: {FRAMES_GROUP} lacks the datasets {missing}")
    names = [name for name in FRAME_FIELD_DTYPES if name in group]
    n = min(int(group[name].shape[0]) for name in names)
    n = n if count is None else min(n, count)
    rows = np.zeros(n, dtype=FRAME_DTYPE)
    for name in names:
        rows[name] = group[name][:n]
    if "frame_number" not in group:  # the first layout: frame n is row n
        rows["frame_number"] = np.arange(n)
    return FrameTable(rows)


def readable_frames(f: h5py.File, table: FrameTable | None = None) -> int:
    """How many rows of an open scan file hold a whole frame: the leading rows that have both a
    frame on disk and their tags (``table``, read when None). A writer that dies inside an
    ``append`` can leave the frame stack or the tags one row longer than what it wrote, and such
    a row reads as zeros (HDF5's fill value), never as an error; the rows of a first-layout file
    have no frame numbers, so there only the frames are checked."""
    table = read_frame_table(f) if table is None else table
    data = f[DATA_PATH]
    n = min(len(table), int(data.shape[0]))
    if not data.chunks:  # contiguous (not this writer's): all of it is allocated
        return n
    present = np.zeros(n, bool)
    step = int(data.chunks[0])

    def mark(info: Any) -> None:
        first = int(info.chunk_offset[0])
        present[first : first + step] = True

    data.id.chunk_iter(mark)
    numbered = table.rows["frame_number"][:n] == np.arange(n)
    whole = present & numbered
    return n if whole.all() else int(np.argmin(whole))


def read_scan(path: str | Path) -> ScanFileContents:
    """Read a whole scan file (also while it is being written: SWMR) into memory: the rows that
    hold whole frames (:func:`readable_frames`). ScanFileError (one line, naming the file) when
    it is missing, not HDF5, truncated or damaged; ValueError when it is not a scan file."""
    with open_scan_file(path) as f, _named(Path(path)):
        header = read_header(f)
        table = read_frame_table(f)
        end = read_end(f)
        n = readable_frames(f, table)
        frames = f[DATA_PATH][:n]
    return ScanFileContents(header, frames, FrameTable(table.rows[:n].copy()), end)


# --------------------------------------------------------------------------------------------
# opening a file that may be truncated or damaged, in bounded time

#: Read attempts per metadata block of a file opened SWMR (HDF5's default there is 100). A
#: SWMR reader re-reads a block whose checksum fails, in case the writer was writing it, and
#: sleeps 1, 2, 4 ... ns between the attempts: 100 attempts sleep for ever (2^100 ns), which is
#: how a truncated or overwritten file hung ``talbot reconstruct``. 27 attempts sleep 0.13 s in
#: all, which a writer's flush of a block (microseconds, milliseconds on a network file system)
#: fits in many times; a damaged block then fails in 0.13 s.
SWMR_READ_ATTEMPTS: Final = 27


def open_scan_file(path: str | Path) -> h5py.File:
    """Open a scan file for reading, SWMR (so also while its writer appends), in bounded time.

    Use it as ``h5py.File``: ``with open_scan_file(path) as f: header = read_header(f)``. It
    gives up on a damaged metadata block after :data:`SWMR_READ_ATTEMPTS` reads (a fraction of a
    second) instead of retrying for ever, and checks that every dataset's data lies inside the
    file: HDF5 reads the missing end of a truncated file as zeros. Raises ScanFileError, one
    line naming the file, for a missing, empty, unreadable, non-HDF5, truncated or damaged file.
    The check reads the frame stack's chunk index once (~2 µs a frame).
    """
    p = Path(path)
    try:
        size = p.stat().st_size
    except FileNotFoundError:
        raise ScanFileError(f"{p}: no such file") from None
    except OSError as exc:
        raise ScanFileError(f"{p}: {exc.strerror or exc}") from None
    if p.is_dir():
        raise ScanFileError(f"{p}: a directory, not a scan file")
    if size == 0:
        raise ScanFileError(f"{p}: empty (0 bytes), not an HDF5 file")
    if not os.access(p, os.R_OK):
        raise ScanFileError(f"{p}: permission denied")
    flags = h5py.h5f.ACC_RDONLY | h5py.h5f.ACC_SWMR_READ
    try:
        f = h5py.File(h5py.h5f.open(os.fsencode(p), flags, fapl=_swmr_fapl()))
    except OSError as exc:
        raise ScanFileError(_problem(p, exc)) from None
    try:
        # Measured after the walk: a writer that appends meanwhile only makes the file longer,
        # so data found beyond the size measured afterwards is beyond the file's end for good.
        beyond = _data_beyond(f, lambda: p.stat().st_size)
    except (OSError, RuntimeError) as exc:  # a damaged block on the way (RuntimeError: chunks)
        f.close()  # first: HDF5 would hand the diagnosis below this open file again
        raise ScanFileError(_problem(p, exc)) from None
    except BaseException:
        f.close()
        raise
    if beyond is not None:
        f.close()
        why = (
            _truncation(p)
            or f"truncated: {beyond[2]} bytes, but its {beyond[0]} reaches byte {beyond[1]}"
        )
        raise ScanFileError(f"{p}: {why}")
    return f


def _swmr_fapl() -> Any:
    """A file-access property list: the latest format, bounded metadata read attempts."""
    fapl = h5py.h5p.create(h5py.h5p.FILE_ACCESS)
    fapl.set_libver_bounds(h5py.h5f.LIBVER_LATEST, h5py.h5f.LIBVER_LATEST)
    setter = _read_attempts_setter()
    if setter is not None:
        setter(fapl.id, SWMR_READ_ATTEMPTS)
    return fapl


def _read_attempts_setter() -> Any:
    """HDF5's ``H5Pset_metadata_read_attempts`` (h5py does not wrap it), from the HDF5 library
    h5py itself loaded (found through h5py's extension module); None where it cannot be found
    (then a damaged block can still make a read retry for long: the extent check still catches
    a truncated file)."""
    try:
        lib = ctypes.CDLL(h5py.h5p.__file__)
        fn = lib.H5Pset_metadata_read_attempts
    except (OSError, AttributeError):  # pragma: no cover - not on Linux/macOS builds of h5py
        return None
    fn.argtypes = [ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


def _data_beyond(f: h5py.File, size: Callable[[], int]) -> tuple[str, int, int] | None:
    """The dataset whose data reaches furthest beyond the file's end, the byte it reaches and
    the file's size in bytes (``size()``, asked once every dataset's extent is known); None when
    every dataset lies inside the file."""
    furthest: dict[str, int] = {}

    def extent(name: str, obj: Any) -> None:
        if not isinstance(obj, h5py.Dataset):
            return
        layout = obj.id.get_create_plist().get_layout()
        if layout == h5py.h5d.CHUNKED:
            last = [0]

            def chunk(info: Any) -> None:
                last[0] = max(last[0], int(info.byte_offset) + int(info.size))

            obj.id.chunk_iter(chunk)
            furthest[name] = last[0]
        elif layout == h5py.h5d.CONTIGUOUS and obj.id.get_offset() is not None:
            furthest[name] = int(obj.id.get_offset()) + int(obj.id.get_storage_size())

    f.visititems(extent)
    name, last = max(furthest.items(), key=lambda item: item[1], default=("", 0))
    end = size()
    return (name, last, end) if last > end else None


@contextmanager
def _named(path: Path) -> Iterator[None]:
    """HDF5 errors of a read (OSError; RuntimeError from a chunk walk) as one-line
    ScanFileErrors naming the file (used inside the ``with open_scan_file``: the diagnosis
    cannot tell a truncated file while it is open)."""
    try:
        yield
    except (OSError, RuntimeError) as exc:
        text = " ".join(str(exc).split())
        raise ScanFileError(f"{path}: unreadable frames or tags (damaged): {text}") from None


def _absent(exc: KeyError) -> bool:
    """Whether h5py's KeyError says that an object or attribute is not there (not that the
    block holding it is damaged)."""
    text = str(exc)
    return "doesn't exist" in text or "can't locate" in text or "Unable to" not in text


def _problem(path: Path, exc: BaseException) -> str:
    """One line: the file and what HDF5's error means."""
    text = " ".join(str(exc.args[0] if exc.args else exc).split())
    if "file signature not found" in text:
        return f"{path}: not an HDF5 file (no HDF5 signature)"
    truncated = _truncation(path)
    if truncated is not None:
        return f"{path}: {truncated}"
    if "checksum" in text or "signature" in text:
        return (
            f"{path}: damaged: an HDF5 metadata block fails its checksum (overwritten or "
            f"corrupted); HDF5 says: {text}"
        )
    return f"{path}: unreadable: {text}"


_TRUNCATED: Final = re.compile(r"truncated file: eof = (\d+).*stored_eof = (\d+)")


def _truncation(path: Path) -> str | None:
    """What to say of a file shorter than its (checksummed) superblock records ("truncated: N
    of the M bytes ..."), else None. HDF5 checks that only when a file is opened without SWMR
    (a SWMR writer may still be extending it), so this opens it so, once: one read attempt per
    block, no retries. Call it with the file closed (an open one would be handed back)."""
    try:
        h5py.File(path, "r").close()
    except OSError as exc:
        match = _TRUNCATED.search(str(exc))
        if match:
            size, recorded = match.groups()
            return f"truncated: {size} of the {recorded} bytes its HDF5 superblock records"
    return None
