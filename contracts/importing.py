"""Scans from elsewhere: a Data Exchange or an NXtomo phase-stepping scan as a raw scan file.

``talbot import`` (``beamline/import_cli.py``) maps the file's frames onto Talbot's acquisition
order (darks, reference series 0, the projection series with a reference series after every
``reference_every`` angles, one at the end; ``contracts.scanplan``), tags each frame
(``contracts.frames.TAG_FIELDS``) and writes them one by one, read frame by frame with h5py
slicing, through ``ScanFileWriter``. The datasets read, the optional ones and the rules are in
``docs/data-format.md``, "Importing Data Exchange and NXtomo files".

Bad input raises :class:`SourceError` naming the dataset at fault, before anything is written.
"""

from __future__ import annotations

import itertools
import math
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import h5py
import numpy as np
from numpy.typing import NDArray
from pydantic import ValidationError

from contracts.base import first_error
from contracts.frames import FRAME_DTYPE, PIXEL_DTYPES, ImageKey
from contracts.instrument import Instrument
from contracts.scanfile import ScanFileWriter, ScanHeader
from contracts.scanplan import ScanPlan, Stepping, acquisition_order

F64 = NDArray[np.float64]

# --- Data Exchange (APS DXfile) paths ---------------------------------------------------------
DX_DATA: Final = "/exchange/data"
DX_WHITE: Final = "/exchange/data_white"
DX_DARK: Final = "/exchange/data_dark"
DX_THETA: Final = "/exchange/theta"
#: G2 positions of the frames of ``data`` and of ``data_white`` (Talbot's names; [m] unless a
#: ``units`` attribute says otherwise).
DX_G2: Final = "/exchange/g2_position"
DX_G2_WHITE: Final = "/exchange/g2_position_white"
#: Phase steps of a 3-D (interleaved) ``data``: this attribute of ``data``, or this dataset.
DX_STEPS_ATTR: Final = "phase_steps"
DX_STEPS: Final = "/process/acquisition/phase_stepping/num_steps"
DX_PERIODS: Final = "/process/acquisition/phase_stepping/num_periods"
DX_EXPOSURE: Final = "/measurement/instrument/detector/exposure_time"
DX_ENERGY: Final = "/measurement/instrument/monochromator/energy"
DX_PIXEL: Final = "/measurement/instrument/detection_system/objective/resolution"

# --- NXtomo paths, under the entry (``/entry`` or the one top-level NXtomo entry) -------------
NX_DATA: Final = "instrument/detector/data"
NX_DATA_LINK: Final = "data/data"
NX_KEY: Final = "instrument/detector/image_key"
NX_ANGLE: Final = "sample/rotation_angle"
#: Per-frame position of the stepped grating (Talbot's name; [m] unless ``units`` says otherwise).
NX_G2: Final = "instrument/g2/x_translation"
NX_CURRENT: Final = "control/data"
NX_EXPOSURE: Final = "instrument/detector/count_time"
NX_ENERGY: Final = ("instrument/beam/incident_energy", "beam/incident_energy")
NX_PIXEL: Final = "sample/x_pixel_size"

#: NXtomo image_key of a frame to leave out.
NX_INVALID: Final = 3

#: Consecutive frames of one image key whose rotation angles differ by no more than this [deg]
#: are one series (NXtomo): far below any CT angular step, far above encoder jitter.
ANGLE_TOLERANCE_DEG: Final = 1e-3

_LENGTH_M = {"m": 1.0, "mm": 1e-3, "um": 1e-6, "µm": 1e-6, "micron": 1e-6, "nm": 1e-9}
_ANGLE_DEG = {"deg": 1.0, "degree": 1.0, "degrees": 1.0}
_ANGLE_DEG |= dict.fromkeys(("rad", "radian", "radians"), 180.0 / math.pi)
_ENERGY_KEV = {"kev": 1.0, "ev": 1e-3}
_TIME_S = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


class SourceError(ValueError):
    """The source file cannot be imported; ``path`` names the dataset (or option) at fault."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(frozen=True)
class ImportOptions:
    """What the command line adds to the file: ``steps`` (3-D Data Exchange; a check
    elsewhere), ``periods`` of the phase steps, ``reference_every`` (Data Exchange, whose file
    does not say where the references were taken; a check for NXtomo), and the profile's plan
    defaults used where the file records nothing (``exposure_s``, ``stepping``)."""

    steps: int | None = None
    periods: int | None = None
    reference_every: int | None = None
    exposure_s: float = 1.0
    stepping: Stepping = "software"


@dataclass(frozen=True)
class SourceFrame:
    """Where one frame is in the source file: a dataset and the index of the frame in it."""

    dataset: str
    index: tuple[int, ...]


@dataclass(frozen=True)
class _Series:
    """One phase-stepping series of the source, its frames in step order."""

    frames: list[SourceFrame]
    g2_m: F64
    rotation_deg: F64
    current_ma: F64
    clock: F64 | None = None  # source frame numbers (acquisition order); None: the output order


@dataclass(frozen=True)
class ScanMapping:
    """What an import writes: each frame's source and tags (``FRAME_DTYPE`` rows, output
    order), the plan, and the geometry the file records (field -> (value, dataset path))."""

    kind: str
    data_path: str
    shape: tuple[int, int]
    dtype: str
    sources: list[SourceFrame]
    rows: NDArray[np.void]
    plan: ScanPlan
    geometry: dict[str, tuple[float, str]] = field(default_factory=dict)
    notes: tuple[str, ...] = ()


# --- reading small datasets ---------------------------------------------------------------------


def _dataset(f: h5py.File, path: str) -> h5py.Dataset:
    item = f.get(path)
    if item is None:
        raise SourceError(path, "missing")
    if not isinstance(item, h5py.Dataset):
        raise SourceError(path, "is a group, not a dataset")
    return item


def _scale(ds: h5py.Dataset, table: dict[str, float], default: str) -> float:
    """The factor that takes values in the dataset's ``units`` (default ``default``) to the
    unit of ``table``."""
    units = ds.attrs.get("units", default)
    text = (units.decode() if isinstance(units, bytes) else str(units)).strip()
    try:
        return table[text.lower()]
    except KeyError:
        raise SourceError(ds.name, f"units {text!r}: expected one of {sorted(table)}") from None


def _values(
    f: h5py.File, path: str, table: dict[str, float] | None, default: str, required: bool = False
) -> F64 | None:
    """A small dataset as float64 in the unit of ``table`` (None: as recorded, whatever its
    units); None when absent and optional."""
    if path not in f and not required:
        return None
    ds = _dataset(f, path)
    scale = 1.0 if table is None else _scale(ds, table, default)
    values = np.asarray(ds[()], dtype=np.float64) * scale
    if not np.all(np.isfinite(values)):
        raise SourceError(path, "holds values that are not finite")
    return values


def _scalar(f: h5py.File, path: str, table: dict[str, float], default: str) -> float | None:
    """A recorded positive scalar (a 1-element or constant array counts), else None."""
    values = _values(f, path, table, default)
    if values is None:
        return None
    value = float(np.median(values)) if values.size else math.nan
    if values.size == 0 or not value > 0:
        raise SourceError(path, f"must be a positive number, got {values.ravel()[:3].tolist()}")
    return value


def _count(f: h5py.File, path: str, attr: str | None = None) -> int | None:
    """A positive integer recorded as a dataset (or as attribute ``attr`` of it)."""
    if path not in f:
        return None
    raw = _dataset(f, path).attrs.get(attr) if attr else _dataset(f, path)[()]
    if raw is None:
        return None
    value = np.asarray(raw).ravel()
    if value.size != 1 or not float(value[0]).is_integer() or value[0] < 1:
        where = f"{path}@{attr}" if attr else path
        raise SourceError(where, f"must be an integer >= 1, got {value.tolist()}")
    return int(value[0])


def _frame_dtype(ds: h5py.Dataset) -> str:
    """The scan file's pixel type: the source's, else float32 (up to 2-byte types) or float64."""
    name = ds.dtype.name
    if name in PIXEL_DTYPES:
        return str(name)
    if ds.dtype.kind not in "iuf":
        raise SourceError(ds.name, f"pixel type {ds.dtype} is not a number")
    return "float32" if ds.dtype.itemsize <= 2 else "float64"


# --- the phase steps ----------------------------------------------------------------------------


def _equidistant(steps: int, periods: int, p2_m: float) -> F64:
    """Commanded positions k periods p2 / steps [m], k = 0 .. steps-1."""
    return np.arange(steps) * periods * p2_m / steps


def _infer_periods(positions: F64 | None, steps: int, p2_m: float) -> int | None:
    """The periods the recorded positions (..., steps) cover, when they look equidistant."""
    if positions is None or positions.ndim == 0 or positions.shape[-1] != steps or steps < 2:
        return None
    span = float(np.median(np.ptp(positions.reshape(-1, steps), axis=1)))
    periods = span * steps / ((steps - 1) * p2_m)
    best = round(periods)
    return best if best >= 1 and abs(periods - best) < 0.1 else None


def _positions(values: F64 | None, path: str, series: int, steps: int) -> F64 | None:
    """Recorded positions as (series, steps): given per frame, per series or once (steps,)."""
    if values is None:
        return None
    if values.shape in ((series, steps), (series * steps,)):
        return values.reshape(series, steps)
    if values.shape == (steps,):
        return np.broadcast_to(values, (series, steps)).copy()
    raise SourceError(
        path, f"shape {values.shape}: expected ({series}, {steps}), ({series * steps},) or "
        f"({steps},) positions"
    )  # fmt: skip


def _check_monotonic(angles: F64, path: str) -> None:
    if angles.size > 1:
        step = np.diff(angles)
        if not (np.all(step > 0) or np.all(step < 0)):
            i = int(np.flatnonzero(step * np.sign(step[0]) <= 0)[0]) if step[0] else 0
            raise SourceError(
                path, f"projection angles are not strictly monotonic (at angle index {i + 1}: "
                f"{angles[i]:.6g} -> {angles[i + 1]:.6g} deg)"
            )  # fmt: skip


# --- the acquisition order ----------------------------------------------------------------------


def _reference_positions(angles: int, reference_every: int) -> list[int]:
    """How many projection series come before each reference series in Talbot's order."""
    out, done = [], 0
    for kind, _ in acquisition_order(angles, reference_every):
        if kind == "reference":
            out.append(done)
        else:
            done += 1
    return out


def _spread(angles: int, references: int, path: str) -> int | None:
    """``reference_every`` that spreads ``references`` series evenly (first at the start, last
    at the end); None for a single series."""
    if references == 1:
        return None
    every = max(1, math.ceil(angles / (references - 1)))
    if every <= angles and len(_reference_positions(angles, every)) == references:
        return every
    raise SourceError(
        path, f"{references} reference series do not spread evenly over {angles} angles "
        "(a start, every N angles, an end): give --reference-every"
    )  # fmt: skip


def _talbot_every(positions: list[int], angles: int, path: str) -> int | None:
    """``reference_every`` of the reference series found after ``positions`` projections
    each; None for a single series; SourceError when no Talbot order has them there."""
    if len(positions) == 1:
        return None
    every = positions[1] - positions[0]
    if 1 <= every <= angles and _reference_positions(angles, every) == positions:
        return every
    raise SourceError(
        path, f"reference series after {positions} projection series: not Talbot's order "
        "(one at the start, one after every N angles, one at the end)"
    )  # fmt: skip


@dataclass(frozen=True)
class _Scan:
    """A source scan in pieces: darks, reference series (acquisition order), projection series
    (angle order)."""

    darks: _Series
    references: list[_Series]
    projections: list[_Series]
    reference_every: int | None  # None: a single reference series


def _ordered(scan: _Scan) -> tuple[list[tuple[ImageKey, int, _Series]], int, str | None]:
    """The series in Talbot's order (key, index, series), ``reference_every`` and a note. A
    single reference series stands for the references at the start and at the end: it is
    written twice (series 0 and 1)."""
    angles = len(scan.projections)
    refs, note = scan.references, None
    every = scan.reference_every
    if every is None:
        every = angles
        last = refs[0]
        end_clock: F64 | None = None
        if last.clock is not None:  # the copy is taken after everything the source holds
            top = max(
                float(np.max(s.clock)) for s in (*refs, *scan.projections) if s.clock is not None
            )
            end_clock = top + 1.0 + np.arange(len(last.frames), dtype=np.float64)
        refs = [
            refs[0],
            _Series(last.frames, last.g2_m, last.rotation_deg, last.current_ma, end_clock),
        ]
        note = "the one reference series is written at the start and again at the end"
    out: list[tuple[ImageKey, int, _Series]] = []
    for kind, index in acquisition_order(angles, every):
        if kind == "reference":
            out.append((ImageKey.FLAT, index, refs[index]))
        else:
            out.append((ImageKey.PROJECTION, index, scan.projections[index]))
    return out, every, note


def _rows(
    scan: _Scan, exposure_s: float
) -> tuple[list[SourceFrame], NDArray[np.void], int, str | None]:
    """Sources and tags of every frame in Talbot's order; ``reference_every``; a note."""
    order, every, note = _ordered(scan)
    everything = [(ImageKey.DARK, -1, scan.darks), *order]
    n = sum(len(s.frames) for _, _, s in everything)
    rows = np.zeros(n, dtype=FRAME_DTYPE)
    clock = np.arange(n, dtype=np.float64)
    sources: list[SourceFrame] = []
    for key, index, series in everything:
        i, k = len(sources), len(series.frames)
        sources.extend(series.frames)
        part = rows[i : i + k]
        part["image_key"] = key
        part["angle_index"] = index if key == ImageKey.PROJECTION else -1
        part["series_index"] = index if key == ImageKey.FLAT else -1
        part["step_index"] = -1 if key == ImageKey.DARK else np.arange(k)
        part["g2_position_m"] = series.g2_m
        part["rotation_deg"] = series.rotation_deg
        part["ring_current_ma"] = series.current_ma
        if series.clock is not None:
            clock[i : i + k] = series.clock
    rows["timestamp_s"] = clock * exposure_s
    rows["frame_number"] = np.arange(n)
    return sources, rows, every, note


def _plan(
    scan: _Scan, every: int, periods: int, exposure_s: float, options: ImportOptions, path: str
) -> ScanPlan:
    """The ScanPlan of what the file holds (angles from the first frame of each series:
    nominal; the reconstruction uses every frame's ``rotation_deg``)."""
    angles = np.array([s.rotation_deg[0] for s in scan.projections])
    n = angles.size
    span = abs(float(angles[-1] - angles[0])) * n / (n - 1) if n > 1 else 180.0
    steps = len(scan.projections[0].frames)
    first = len(scan.references[0].frames)
    try:
        return ScanPlan(
            steps=steps,
            periods=periods,
            calibration_steps=first if first != steps else 0,
            angles=n,
            angular_range_deg=min(span, 360.0),
            start_deg=float(angles[0]),
            reference_every=every,
            darks=len(scan.darks.frames),
            exposure_s=exposure_s,
            stepping=options.stepping,
        )
    except ValidationError as exc:
        name, reason = first_error(exc)
        raise SourceError(path, f"no Talbot scan plan fits it: {name}: {reason}") from None


def _mapping(
    scan: _Scan, kind: str, data: h5py.Dataset, periods: int, exposure_s: float,
    options: ImportOptions, geometry: dict[str, tuple[float, str]], notes: list[str],
) -> ScanMapping:  # fmt: skip
    sources, rows, every, note = _rows(scan, exposure_s)
    plan = _plan(scan, every, periods, exposure_s, options, data.name)
    shape = (int(data.shape[-2]), int(data.shape[-1]))
    notes = [*notes, note] if note else notes
    return ScanMapping(
        kind, data.name, shape, _frame_dtype(data), sources, rows, plan, geometry, tuple(notes)
    )


def _recorded_geometry(
    f: h5py.File, energy: tuple[str, ...], energy_default: str, pixel: str, pixel_default: str
) -> dict[str, tuple[float, str]]:
    """The geometry the file records: energy [keV] and effective pixel size [m]."""
    out: dict[str, tuple[float, str]] = {}
    for path in energy:
        value = _scalar(f, path, _ENERGY_KEV, energy_default)
        if value is not None:
            out["energy_kev"] = (value, path)
            break
    value = _scalar(f, pixel, _LENGTH_M, pixel_default)
    if value is not None:
        out["pixel_size_m"] = (value, pixel)
    return out


# --- Data Exchange ------------------------------------------------------------------------------


def _dx_layout(f: h5py.File, options: ImportOptions) -> tuple[h5py.Dataset, int, int, str]:
    """``data``, its angles, steps and kind (4-D, or 3-D interleaved: steps frames per angle)."""
    data = _dataset(f, DX_DATA)
    if data.ndim == 4:
        angles, steps = int(data.shape[0]), int(data.shape[1])
        if options.steps is not None and options.steps != steps:
            raise SourceError(
                DX_DATA, f"{steps} phase steps along axis 1, --steps says {options.steps}"
            )
        return data, angles, steps, "Data Exchange 4-D"
    if data.ndim != 3:
        raise SourceError(
            DX_DATA, f"shape {data.shape}: expected (angles, steps, rows, columns) or "
            "(angles*steps, rows, columns)"
        )  # fmt: skip
    given = options.steps or _count(f, DX_DATA, DX_STEPS_ATTR) or _count(f, DX_STEPS)
    if given is None:
        raise SourceError(
            DX_DATA, f"3-D (angles*steps, rows, columns): the phase steps are not recorded "
            f"(@{DX_STEPS_ATTR} or {DX_STEPS}); give --steps"
        )  # fmt: skip
    if int(data.shape[0]) % given:
        raise SourceError(DX_DATA, f"{data.shape[0]} frames are not a multiple of {given} steps")
    return data, int(data.shape[0]) // given, given, "Data Exchange 3-D (interleaved)"


def _dx_frames(ds: h5py.Dataset, series: int, steps: int) -> list[list[SourceFrame]]:
    """Frames of a 4-D (series, steps, ...) or 3-D (series*steps, ...) dataset, by series."""
    if ds.ndim == 4:
        return [[SourceFrame(ds.name, (s, k)) for k in range(steps)] for s in range(series)]
    return [[SourceFrame(ds.name, (s * steps + k,)) for k in range(steps)] for s in range(series)]


def _dx_whites(f: h5py.File, steps: int, shape: tuple[int, ...]) -> tuple[h5py.Dataset, int]:
    white = _dataset(f, DX_WHITE)
    if tuple(white.shape[-2:]) != shape or white.ndim not in (3, 4):
        raise SourceError(DX_WHITE, f"shape {white.shape}: frames of {shape} expected")
    if white.ndim == 4 and white.shape[1] != steps:
        raise SourceError(
            DX_WHITE, f"{white.shape[1]} phase steps along axis 1, {DX_DATA} has {steps}"
        )
    if white.ndim == 3 and white.shape[0] % steps:
        raise SourceError(DX_WHITE, f"{white.shape[0]} frames are not a multiple of {steps} steps")
    series = int(white.shape[0]) if white.ndim == 4 else int(white.shape[0]) // steps
    if series == 0:
        raise SourceError(DX_WHITE, "holds no reference frames")
    return white, series


def _dx_darks(f: h5py.File, shape: tuple[int, ...]) -> _Series:
    """The dark frames (none without ``data_dark``), tagged G2 0, rotation 0."""
    n = 0
    if DX_DARK in f:
        dark = _dataset(f, DX_DARK)
        if dark.ndim != 3 or tuple(dark.shape[1:]) != shape:
            raise SourceError(DX_DARK, f"shape {dark.shape}: expected (n, {shape[0]}, {shape[1]})")
        n = int(dark.shape[0])
    zero = np.zeros(n)
    return _Series([SourceFrame(DX_DARK, (i,)) for i in range(n)], zero, zero, zero)


def _dx_theta(f: h5py.File, angles: int, steps: int) -> F64:
    """Rotation [deg] of every projection frame, (angles, steps)."""
    theta = _values(f, DX_THETA, _ANGLE_DEG, "deg", required=True)
    assert theta is not None
    if theta.shape == (angles,):
        theta = np.repeat(theta[:, None], steps, axis=1)
    elif theta.shape in ((angles, steps), (angles * steps,)):
        theta = theta.reshape(angles, steps)
    else:
        raise SourceError(
            DX_THETA, f"shape {theta.shape}: expected ({angles},) or ({angles * steps},) angles"
        )
    _check_monotonic(theta[:, 0], DX_THETA)
    return theta


def map_data_exchange(f: h5py.File, p2_m: float, options: ImportOptions) -> ScanMapping:
    """The mapping of a Data Exchange file; ``p2_m`` the stepped grating's pitch [m]."""
    data, angles, steps, kind = _dx_layout(f, options)
    shape = tuple(data.shape[-2:])
    theta = _dx_theta(f, angles, steps)
    white, n_ref = _dx_whites(f, steps, shape)
    recorded = _values(f, DX_G2, _LENGTH_M, "m")
    g2 = _positions(recorded, DX_G2, angles, steps)
    g2_white = _positions(_values(f, DX_G2_WHITE, _LENGTH_M, "m"), DX_G2_WHITE, n_ref, steps)
    if g2_white is None and recorded is not None and recorded.shape == (steps,):
        g2_white = _positions(recorded, DX_G2, n_ref, steps)  # one set of steps for all
    periods = (
        options.periods or _count(f, DX_PERIODS) or _infer_periods(g2, steps, p2_m)
        or _infer_periods(g2_white, steps, p2_m) or 1
    )  # fmt: skip
    commanded = _equidistant(steps, periods, p2_m)
    g2 = np.broadcast_to(commanded, (angles, steps)) if g2 is None else g2
    g2_white = np.broadcast_to(commanded, (n_ref, steps)) if g2_white is None else g2_white
    every = options.reference_every or _spread(angles, n_ref, DX_WHITE)
    if every is not None and (every > angles or len(_reference_positions(angles, every)) != n_ref):
        raise SourceError(
                DX_WHITE, f"{n_ref} reference series do not fit --reference-every {every} "
                f"over {angles} angles"
            )  # fmt: skip
    projections = [
        _Series(frames, g2[a], theta[a], np.zeros(steps))
        for a, frames in enumerate(_dx_frames(data, angles, steps))
    ]
    positions = _reference_positions(angles, every or angles)
    references = [  # a reference series at the angle of the projection before it
        _Series(
            frames,
            g2_white[s],
            np.full(steps, theta[max(positions[s] - 1, 0), -1]),
            np.zeros(steps),
        )
        for s, frames in enumerate(_dx_frames(white, n_ref, steps))
    ]
    scan = _Scan(_dx_darks(f, shape), references, projections, every)
    exposure = _scalar(f, DX_EXPOSURE, _TIME_S, "s") or options.exposure_s
    geometry = _recorded_geometry(f, (DX_ENERGY,), "keV", DX_PIXEL, "um")
    return _mapping(scan, kind, data, periods, exposure, options, geometry, [])


# --- NXtomo -------------------------------------------------------------------------------------


def _nx_entry(f: h5py.File) -> str:
    """``/entry``, else the one top-level group that holds an NXtomo image key."""
    if isinstance(f.get("entry"), h5py.Group):
        return "/entry"
    found = [name for name, item in f.items() if isinstance(item, h5py.Group) and NX_KEY in item]
    if len(found) == 1:
        return f"/{found[0]}"
    if found:
        raise SourceError("/", f"several NXtomo entries {found}: keep one")
    raise SourceError("/", f"neither Data Exchange ({DX_DATA}) nor NXtomo (/entry/{NX_KEY}) layout")


def _nx_per_frame(
    f: h5py.File, path: str, n: int, table: dict[str, float] | None, default: str, required: bool
) -> F64 | None:
    values = _values(f, path, table, default, required)
    if values is not None and values.shape != (n,):
        raise SourceError(path, f"shape {values.shape}: expected one value per frame ({n},)")
    return values


def _nx_runs(key: NDArray[np.int64], angle: F64) -> list[tuple[int, int, int]]:
    """(image key, first, stop) of every run of consecutive projection or flat frames of one
    key and one rotation angle (within ``ANGLE_TOLERANCE_DEG`` of the frame before)."""
    n = key.size
    new = np.ones(n, dtype=bool)
    new[1:] = (key[1:] != key[:-1]) | (np.abs(np.diff(angle)) > ANGLE_TOLERANCE_DEG)
    bounds = [*np.flatnonzero(new).tolist(), n]
    return [
        (int(key[a]), a, b)
        for a, b in itertools.pairwise(bounds)
        if key[a] in (ImageKey.PROJECTION, ImageKey.FLAT)
    ]


def _nx_steps(
    runs: list[tuple[int, int, int]], angle: F64, options: ImportOptions, path: str
) -> int:
    """The phase steps M of every projection series (all equal); the flat series have M too,
    but for the first one, which may be a longer calibration series."""
    proj = [(a, b) for k, a, b in runs if k == ImageKey.PROJECTION]
    flats = [(a, b) for k, a, b in runs if k == ImageKey.FLAT]
    if not proj:
        raise SourceError(path, "holds no projection frames (image_key 0)")
    if not flats:
        raise SourceError(path, "holds no flat (reference) frames (image_key 1)")
    steps = proj[0][1] - proj[0][0]
    if options.steps is not None and options.steps != steps:
        raise SourceError(
            path, f"projection series 0 has {steps} frames, --steps says {options.steps}"
        )
    for j, (a, b) in enumerate(proj):
        if b - a != steps:
            raise SourceError(
                path, f"projection series {j} (frames {a}..{b - 1} at {angle[a]:.6g} deg) has "
                f"{b - a} frames, series 0 has {steps}: a series is the consecutive frames of "
                "one angle"
            )  # fmt: skip
    for j, (a, b) in enumerate(flats):
        if b - a != steps and not (j == 0 and b - a > steps):
            raise SourceError(
                path, f"flat series {j} (frames {a}..{b - 1}) has {b - a} frames, the "
                f"projection series {steps}"
            )  # fmt: skip
    return steps


def _nx_scan(
    f: h5py.File, entry: str, data: h5py.Dataset, p2_m: float, options: ImportOptions
) -> tuple[_Scan, int]:
    n = int(data.shape[0])
    key_path, angle_path = f"{entry}/{NX_KEY}", f"{entry}/{NX_ANGLE}"
    key = np.asarray(_dataset(f, key_path)[()]).astype(np.int64)
    if key.shape != (n,):
        raise SourceError(key_path, f"shape {key.shape}: expected one key per frame ({n},)")
    if not np.all((key >= 0) & (key <= NX_INVALID)):
        raise SourceError(key_path, f"values {sorted(set(key.tolist()))}: expected 0, 1, 2, 3")
    angle = _nx_per_frame(f, angle_path, n, _ANGLE_DEG, "deg", required=True)
    assert angle is not None
    g2_path = f"{entry}/{NX_G2}"
    g2 = _nx_per_frame(f, g2_path, n, _LENGTH_M, "m", required=False)
    current = _nx_per_frame(f, f"{entry}/{NX_CURRENT}", n, None, "", required=False)
    if current is not None and np.any(current < 0):
        raise SourceError(f"{entry}/{NX_CURRENT}", "beam monitor readings must be >= 0")
    runs = _nx_runs(key, angle)
    steps = _nx_steps(runs, angle, options, key_path)
    proj_runs = [(a, b) for k, a, b in runs if k == ImageKey.PROJECTION]
    _check_monotonic(np.array([angle[a] for a, _ in proj_runs]), angle_path)
    stacked = None if g2 is None else np.stack([g2[a:b] for a, b in proj_runs])
    periods = options.periods or _infer_periods(stacked, steps, p2_m) or 1

    def pick(at: NDArray[np.intp], stepped: bool = True) -> _Series:
        frames = [SourceFrame(data.name, (int(i),)) for i in at]
        if g2 is not None:
            pos = g2[at]
        else:  # commanded positions; a dark's does not matter
            pos = _equidistant(at.size, periods, p2_m) if stepped else np.zeros(at.size)
        amps = np.zeros(at.size) if current is None else current[at]
        return _Series(frames, pos, angle[at], amps, at.astype(np.float64))

    def series(a: int, b: int) -> _Series:
        return pick(np.arange(a, b))

    done, positions, references, projections = 0, [], [], []
    for k, a, b in runs:
        if k == ImageKey.PROJECTION:
            projections.append(series(a, b))
            done += 1
        else:
            references.append(series(a, b))
            positions.append(done)
    every = _talbot_every(positions, len(projections), key_path)
    if options.reference_every is not None and options.reference_every != (
        every or len(projections)
    ):
        raise SourceError(
            key_path, f"the file has a reference series every {every} angles, --reference-every "
            f"says {options.reference_every}"
        )  # fmt: skip
    darks = pick(np.flatnonzero(key == ImageKey.DARK), stepped=False)
    return _Scan(darks, references, projections, every), periods


def map_nxtomo(f: h5py.File, p2_m: float, options: ImportOptions) -> ScanMapping:
    """The mapping of an NXtomo file; ``p2_m`` the stepped grating's pitch [m]."""
    entry = _nx_entry(f)
    path = f"{entry}/{NX_DATA}" if f"{entry}/{NX_DATA}" in f else f"{entry}/{NX_DATA_LINK}"
    data = _dataset(f, path)
    if data.ndim != 3:
        raise SourceError(path, f"shape {data.shape}: expected (frames, rows, columns)")
    scan, periods = _nx_scan(f, entry, data, p2_m, options)
    exposure = _scalar(f, f"{entry}/{NX_EXPOSURE}", _TIME_S, "s") or options.exposure_s
    energies = tuple(f"{entry}/{p}" for p in NX_ENERGY)
    geometry = _recorded_geometry(f, energies, "keV", f"{entry}/{NX_PIXEL}", "m")
    skipped = int(np.count_nonzero(np.asarray(f[f"{entry}/{NX_KEY}"][()]) == NX_INVALID))
    notes = [f"{skipped} invalid frames (image_key 3) left out"] if skipped else []
    return _mapping(scan, "NXtomo", data, periods, exposure, options, geometry, notes)


# --- the import ---------------------------------------------------------------------------------


def map_file(f: h5py.File, p2_m: float, options: ImportOptions) -> ScanMapping:
    """The mapping of an open Data Exchange (``/exchange``) or NXtomo file."""
    entry = f.get("entry")
    if isinstance(entry, h5py.Group) and "talbot_layout" in entry.attrs:
        layout = entry.attrs["talbot_layout"]
        raise SourceError("/entry", f"already a Talbot raw scan file ({layout}): nothing to import")
    if "exchange" in f:
        return map_data_exchange(f, p2_m, options)
    return map_nxtomo(f, p2_m, options)


def instrument_for(base: Instrument, mapping: ScanMapping) -> Instrument:
    """The profile's instrument with the file's frame shape and the geometry it records."""
    geometry = base.geometry.model_dump() | {k: v for k, (v, _) in mapping.geometry.items()}
    data = base.model_dump() | {"geometry": geometry, "detector": {"shape": mapping.shape}}
    try:
        return Instrument.model_validate(data)
    except ValidationError as exc:
        name, reason = first_error(exc)
        path = next(
            (p for k, (_, p) in mapping.geometry.items() if k in name or k in reason),
            mapping.data_path,
        )
        raise SourceError(path, f"with the profile's instrument: {name}: {reason}") from None


def write_scan(
    f: h5py.File, mapping: ScanMapping, instrument: Instrument, path: Path, scan_uid: str
) -> int:
    """Write the mapped frames, read one at a time, into a new raw scan file; the frames."""
    header = ScanHeader(scan_uid, instrument, mapping.plan, mapping.dtype)
    datasets: dict[str, h5py.Dataset] = {}
    with ScanFileWriter(path, header) as writer:
        for source, row in zip(mapping.sources, mapping.rows, strict=True):
            ds = datasets.get(source.dataset) or datasets.setdefault(
                source.dataset, f[source.dataset]
            )
            writer.append(ds[source.index], row)
        return writer.frames_written


@dataclass(frozen=True)
class ImportResult:
    """What ``import_scan`` wrote."""

    out: Path
    mapping: ScanMapping
    instrument: Instrument
    frames: int


def import_scan(
    src: Path, out: Path, base: Instrument, options: ImportOptions, *, force: bool = False
) -> ImportResult:
    """Convert ``src`` into the raw scan file ``out`` (never overwritten unless ``force``; the
    new file replaces it only once whole). SourceError on bad input (a file that is not HDF5
    included), FileExistsError for ``out``, OSError when writing fails."""
    if out.exists() and not force:
        raise FileExistsError(f"{out} exists (--force replaces it)")
    if out.exists() and out.resolve() == src.resolve():
        raise FileExistsError(f"{out} is the source file")
    if not src.is_file():
        raise SourceError("/", "not a file" if src.exists() else "no such file")
    try:
        f = h5py.File(src, "r")
    except OSError as exc:
        why = "no HDF5 signature" if "signature" in str(exc) else " ".join(str(exc).split())
        raise SourceError("/", f"cannot be read as HDF5 ({why})") from None
    with f:
        mapping = map_file(f, base.geometry.g2_pitch_m, options)
        instrument = instrument_for(base, mapping)
        partial = out.with_name(f".{out.name}.{uuid.uuid4().hex[:8]}.partial")
        try:
            frames = write_scan(f, mapping, instrument, partial, uuid.uuid4().hex)
            with h5py.File(partial, "r+") as g:
                g["/entry"].attrs["imported_from"] = str(src)
                g["/entry"].attrs["import_format"] = mapping.kind
            os.replace(partial, out)
        finally:
            partial.unlink(missing_ok=True)
    return ImportResult(out, mapping, instrument, frames)
