"""`talbot import`: a simulated scan exported to Data Exchange and NXtomo comes back whole.

Each test exports a small simulated scan with plain h5py the way another facility's software
would lay it out, imports it with the `talbot` command and reconstructs both the original raw
scan file and the imported one: the δ volumes must be the same.
"""

from __future__ import annotations

import functools
from pathlib import Path

import h5py
import numpy as np
import pytest
from numpy.typing import NDArray

from beamline.cli import main
from contracts.frames import ImageKey
from contracts.profile import Profile
from contracts.scanfile import ScanFileWriter, ScanHeader, read_scan
from recon.offline import reconstruct_file
from sim.scan import SimulatedScan
from tests.profiles import simulate, tiny, with_detector_shape, with_simulation

ANGLES = 24


def _profile(reference_every: int, calibration_steps: int) -> Profile:
    plan = tiny(angles=ANGLES, reference_every=reference_every, calibration_steps=calibration_steps)
    return with_detector_shape(plan, 16, 96)


@functools.lru_cache(maxsize=4)
def _scan(reference_every: int, calibration_steps: int = 0, dose: float = 0.0) -> SimulatedScan:
    p = _profile(reference_every, calibration_steps)
    if dose:
        p = with_simulation(p, fringes={"dose_fluctuation": dose})
    return simulate(p, seed=3)


def _original(scan: SimulatedScan, path: Path) -> Path:
    header = ScanHeader("original", scan.instrument, scan.plan, str(scan.frames.dtype))
    with ScanFileWriter(path, header) as writer:
        for frame, row in zip(scan.frames, scan.table.rows, strict=True):
            writer.append(frame, row)
    return path


def _series(scan: SimulatedScan, key: ImageKey, field: str) -> NDArray[np.intp]:
    """Frame indices (series, step) of every series of one key, steps in order."""
    rows = scan.table.rows
    n = int(rows[field].max()) + 1
    return np.stack(
        [np.flatnonzero((rows["image_key"] == key) & (rows[field] == i)) for i in range(n)]
    )


def export_data_exchange(scan: SimulatedScan, path: Path, *, interleaved: bool = False) -> Path:
    """The scan as Data Exchange: 4-D (angles, steps, rows, columns), or 3-D interleaved with
    the steps in an attribute and the angles and positions per frame."""
    rows, frames = scan.table.rows, scan.frames
    proj = _series(scan, ImageKey.PROJECTION, "angle_index")
    refs = _series(scan, ImageKey.FLAT, "series_index")
    darks = np.flatnonzero(rows["image_key"] == ImageKey.DARK)
    steps = proj.shape[1]
    with h5py.File(path, "w") as f:
        if interleaved:
            data = f.create_dataset("/exchange/data", data=frames[proj.ravel()], chunks=True)
            data.attrs["phase_steps"] = steps
            f["/exchange/data_white"] = frames[refs.ravel()]
            f["/exchange/theta"] = rows["rotation_deg"][proj.ravel()]
            f["/exchange/g2_position"] = rows["g2_position_m"][proj.ravel()]
        else:
            f.create_dataset("/exchange/data", data=frames[proj], chunks=(1, 1, 16, 96))
            f["/exchange/data_white"] = frames[refs]
            f["/exchange/theta"] = rows["rotation_deg"][proj[:, 0]]
            f["/exchange/g2_position"] = rows["g2_position_m"][proj]
        f["/exchange/theta"].attrs["units"] = "degrees"
        f["/exchange/data_dark"] = frames[darks]
        f["/exchange/g2_position_white"] = rows["g2_position_m"][refs]
        f["/measurement/instrument/monochromator/energy"] = scan.instrument.geometry.energy_kev
    return path


def export_nxtomo(scan: SimulatedScan, path: Path) -> Path:
    """The scan as NXtomo, frame for frame, with the G2 positions in µm and the beam monitor."""
    rows = scan.table.rows
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["NX_class"] = "NXentry"
        entry["definition"] = "NXtomo"
        det = entry.create_group("instrument/detector")
        det.create_dataset("data", data=scan.frames, chunks=(1, 16, 96))
        det["image_key"] = rows["image_key"].astype(np.uint8)
        entry["data/data"] = det["data"]
        entry["sample/rotation_angle"] = rows["rotation_deg"]
        entry["sample/rotation_angle"].attrs["units"] = "degree"
        entry["instrument/g2/x_translation"] = rows["g2_position_m"] * 1e6
        entry["instrument/g2/x_translation"].attrs["units"] = "um"
        entry["control/data"] = rows["ring_current_ma"]
    return path


def _import(src: Path, out: Path, *extra: str) -> int:
    return main(["import", str(src), "--out", str(out), "--profile", "tiny", *extra])


def _assert_same_delta(original: Path, imported: Path) -> None:
    want, _ = reconstruct_file(original)
    got, _ = reconstruct_file(imported)
    assert got.center_offset_px == pytest.approx(want.center_offset_px, abs=1e-9)
    scale = float(np.abs(want.delta).max())
    np.testing.assert_allclose(got.delta, want.delta, rtol=0, atol=1e-6 * scale)


def _assert_same_tags(
    original: Path, imported: Path, fields: tuple[str, ...], darks: bool = True
) -> None:
    """Frames and tags alike (``darks`` False: not the measured tags of the darks, which a
    Data Exchange file does not record)."""
    want, got = read_scan(original), read_scan(imported)
    np.testing.assert_array_equal(got.frames, want.frames)
    keep = np.ones(len(want.table), bool) if darks else want.table.column("image_key") != 2
    for name in fields:
        np.testing.assert_allclose(
            got.table.column(name)[keep], want.table.column(name)[keep], rtol=1e-12, err_msg=name
        )
    # the clock is the frame order: an affine map of the original's, so the references
    # interpolate with the same weights
    t0, t1 = want.table.column("timestamp_s"), got.table.column("timestamp_s")
    np.testing.assert_allclose(np.diff(t1) / np.diff(t0), np.diff(t1)[0] / np.diff(t0)[0])


IDENTITY = ("image_key", "angle_index", "series_index", "step_index", "attempt")
MEASURED = ("g2_position_m", "rotation_deg")


def test_data_exchange_4d_with_references_before_and_after_reconstructs_the_same_delta(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scan = _scan(reference_every=ANGLES)
    original = _original(scan, tmp_path / "original.h5")
    src = export_data_exchange(scan, tmp_path / "dx4.h5")
    assert _import(src, tmp_path / "raw.h5") == 0
    assert "Data Exchange 4-D: 24 angles x 5 steps, 2 reference series" in capsys.readouterr().out
    plan = read_scan(tmp_path / "raw.h5").header.plan
    assert plan is not None
    assert (plan.reference_every, plan.darks, plan.steps) == (ANGLES, 5, 5)
    _assert_same_tags(original, tmp_path / "raw.h5", IDENTITY + MEASURED, darks=False)
    _assert_same_delta(original, tmp_path / "raw.h5")


def test_data_exchange_3d_interleaved_spreads_three_reference_series_evenly(
    tmp_path: Path,
) -> None:
    scan = _scan(reference_every=12)
    original = _original(scan, tmp_path / "original.h5")
    src = export_data_exchange(scan, tmp_path / "dx3.h5", interleaved=True)
    assert _import(src, tmp_path / "raw.h5") == 0
    imported = read_scan(tmp_path / "raw.h5")
    assert imported.header.plan is not None
    assert imported.header.plan.reference_every == 12
    _assert_same_tags(original, tmp_path / "raw.h5", IDENTITY + MEASURED, darks=False)
    _assert_same_delta(original, tmp_path / "raw.h5")


def test_nxtomo_with_a_calibration_series_and_a_beam_monitor_comes_back_whole(
    tmp_path: Path,
) -> None:
    scan = _scan(reference_every=12, calibration_steps=48, dose=0.02)
    original = _original(scan, tmp_path / "original.h5")
    src = export_nxtomo(scan, tmp_path / "scan.nx")
    assert _import(src, tmp_path / "raw.h5") == 0
    imported = read_scan(tmp_path / "raw.h5")
    plan = imported.header.plan
    assert plan is not None
    want = scan.plan.model_dump(exclude={"angular_range_deg"})
    assert plan.model_dump(exclude={"angular_range_deg"}) == want
    assert plan.angular_range_deg == pytest.approx(scan.plan.angular_range_deg)
    assert imported.header.instrument.detector.shape == (16, 96)
    _assert_same_tags(original, tmp_path / "raw.h5", (*IDENTITY, *MEASURED, "ring_current_ma"))
    _assert_same_delta(original, tmp_path / "raw.h5")


# --- refused input: exit 2, one line naming the dataset -----------------------------------------


def _small_dx(path: Path, **replace: object) -> Path:
    """A 4-angle, 3-step Data Exchange file of noise; ``replace`` datasets (None: left out)."""
    rng = np.random.default_rng(0)
    datasets: dict[str, object] = {
        "/exchange/data": rng.integers(100, 200, (4, 3, 4, 8), dtype=np.uint16),
        "/exchange/data_white": rng.integers(100, 200, (2, 3, 4, 8), dtype=np.uint16),
        "/exchange/data_dark": np.zeros((2, 4, 8), np.uint16),
        "/exchange/theta": np.array([0.0, 45.0, 90.0, 135.0]),
    }
    datasets.update(replace)
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            if value is not None:
                f[name] = value
    return path


@pytest.mark.parametrize(
    ("replace", "needle"),
    [
        ({"/exchange/theta": None}, "/exchange/theta: missing"),
        ({"/exchange/data_white": None}, "/exchange/data_white: missing"),
        ({"/exchange/theta": np.array([0.0, 90.0, 45.0, 135.0])}, "/exchange/theta: "),
        ({"/exchange/theta": np.array([0.0, 45.0, 90.0])}, "/exchange/theta: shape (3,)"),
        (
            {"/exchange/data_white": np.ones((2, 4, 4, 8), np.uint16)},
            "/exchange/data_white: 4 phase steps along axis 1, /exchange/data has 3",
        ),
        ({"/exchange/data_dark": np.ones((2, 4, 9), np.uint16)}, "/exchange/data_dark: shape"),
        ({"/exchange/data": np.ones((12, 4, 8), np.uint16)}, "give --steps"),
    ],
)
def test_bad_data_exchange_input_exits_2_naming_the_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], replace: dict[str, object], needle: str
) -> None:
    src = _small_dx(tmp_path / "bad.h5", **replace)
    assert _import(src, tmp_path / "raw.h5") == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "raw.h5").exists()
    assert list(tmp_path.iterdir()) == [src]  # no partial file left behind


def test_bad_nxtomo_input_exits_2_naming_the_dataset(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = np.array([2, 1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1], np.uint8)  # projection 1 has 2 steps
    angle = np.array([0, 0, 0, 0, 0, 0, 0, 30, 30, 30, 30, 30], float)
    with h5py.File(tmp_path / "bad.nx", "w") as f:
        f["/entry/instrument/detector/data"] = np.ones((12, 4, 8), np.uint16)
        f["/entry/instrument/detector/image_key"] = key
        f["/entry/sample/rotation_angle"] = angle
    assert _import(tmp_path / "bad.nx", tmp_path / "raw.h5") == 2
    err = capsys.readouterr().err
    assert "/entry/instrument/detector/image_key: projection series 1" in err
    assert len(err.strip().splitlines()) == 1
    with h5py.File(tmp_path / "bad.nx", "a") as f:
        del f["/entry/sample/rotation_angle"]
    assert _import(tmp_path / "bad.nx", tmp_path / "raw.h5") == 2
    assert "/entry/sample/rotation_angle: missing" in capsys.readouterr().err


def test_an_existing_out_file_is_kept_unless_force(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = _small_dx(tmp_path / "dx.h5")
    out = tmp_path / "raw.h5"
    out.write_bytes(b"keep me")
    assert _import(src, out) == 2
    assert "--out:" in capsys.readouterr().err
    assert out.read_bytes() == b"keep me"
    assert _import(src, out, "--force") == 0
    assert read_scan(out).header.plan is not None


def test_a_talbot_scan_file_or_a_non_hdf5_file_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _import(_small_dx(tmp_path / "dx.h5"), tmp_path / "raw.h5")
    capsys.readouterr()
    assert _import(tmp_path / "raw.h5", tmp_path / "again.h5") == 2
    assert "already a Talbot raw scan file" in capsys.readouterr().err
    (tmp_path / "notes.txt").write_text("not HDF5")
    assert _import(tmp_path / "notes.txt", tmp_path / "again.h5") == 2
    assert "cannot be read as HDF5" in capsys.readouterr().err
