"""``talbot reconstruct`` on files that are damaged, cut short or complete: one line on stderr
for every error, exit 2 for bad input, 3 for a partial scan (only with --partial does it
reconstruct one), 0 for a complete one; never a hang, never zeros for missing frames."""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest

from beamline.cli import main
from beamline.exitcodes import OK, PARTIAL, USAGE
from contracts.scanfile import DATA_PATH, END_GROUP, FRAMES_GROUP, ScanFileWriter, read_scan
from tests.recon.scanfiles import Recorded, shared_recorded, shared_scan_file

REPO = Path(__file__).resolve().parents[2]
#: Frames of the shared scan (188, a re-take of angle 5 included) in a file cut short: the
#: projections 0..7 whole, 8 with 2 of its 5 steps (95 latest-attempt frames of 183 planned).
CUT = 100
WHOLE_ANGLES = 8


def _raw_spans(path: Path) -> list[tuple[int, int]]:
    """(start, end) byte ranges of every dataset's data in an HDF5 file."""
    spans: list[tuple[int, int]] = []

    def visit(_: str, obj: object) -> None:
        if isinstance(obj, h5py.Dataset):
            if obj.chunks:
                obj.id.chunk_iter(lambda s: spans.append((s.byte_offset, s.byte_offset + s.size)))
            elif obj.id.get_offset() is not None:
                spans.append((obj.id.get_offset(), obj.id.get_offset() + obj.id.get_storage_size()))

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return sorted(spans)


def truncated_half(src: bytes, _: Path) -> bytes:
    return src[: len(src) // 2]


def truncated_tail(src: bytes, _: Path) -> bytes:
    """The last 1 % cut: the metadata are whole, the last frames' bytes are gone (HDF5 reads
    them as zeros when the file is opened SWMR)."""
    return src[: len(src) * 99 // 100]


def metadata_overwritten(src: bytes, path: Path) -> bytes:
    """64 random bytes over the HDF5 metadata block nearest the file's middle (random bytes in
    a frame's pixels are not detectable: frames have no checksum)."""
    gaps, pos = [], 0
    for start, end in _raw_spans(path):
        if start - pos >= 256:
            gaps.append((pos, start))
        pos = max(pos, end)
    middle = len(src) // 2
    start, end = min(gaps[1:], key=lambda g: abs((g[0] + g[1]) // 2 - middle))  # not the head
    at = (start + end) // 2
    rng = random.Random(14)
    return src[:at] + bytes(rng.randrange(256) for _ in range(64)) + src[at + 64 :]


def not_hdf5(src: bytes, _: Path) -> bytes:
    return b"frame 1 2 3\n" * 100


def empty(src: bytes, _: Path) -> bytes:
    return b""


def run_talbot(
    *args: str | Path, timeout: float = 20
) -> tuple[subprocess.CompletedProcess[str], float]:
    """``talbot ARGS`` in a fresh process (a hang is a timeout, not a stuck test); the result
    and its wall time [s]."""
    t0 = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "beamline.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    return done, time.monotonic() - t0


@pytest.mark.parametrize(
    ("damage", "needle"),
    [
        (truncated_half, "truncated:"),
        (truncated_tail, "truncated:"),
        (metadata_overwritten, "damaged: an HDF5 metadata block fails its checksum"),
        (not_hdf5, "not an HDF5 file"),
        (empty, "empty (0 bytes)"),
    ],
)
def test_a_damaged_file_fails_within_seconds_in_one_line_that_names_it(
    damage: Callable[[bytes, Path], bytes], needle: str, tmp_path: Path
) -> None:
    good = shared_scan_file()
    path = tmp_path / "scan_000000.h5"
    path.write_bytes(damage(good.read_bytes(), good))
    done, elapsed = run_talbot("reconstruct", path, "--out", tmp_path / "out")
    assert done.returncode == USAGE, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == [lines[0]]
    assert lines[0].startswith(f"talbot reconstruct: file: {path}: ")
    assert needle in lines[0]
    assert elapsed < 5.0  # it once retried a damaged block for ever
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", ["missing", "directory"])
def test_a_missing_file_or_a_directory_is_refused_in_one_line(kind: str, tmp_path: Path) -> None:
    path = tmp_path / "nope.h5" if kind == "missing" else tmp_path
    done, elapsed = run_talbot("reconstruct", path, "--out", tmp_path / "out")
    assert done.returncode == USAGE
    assert done.stderr.strip().splitlines() == [
        f"talbot reconstruct: file: {path}: "
        + ("no such file" if kind == "missing" else "a directory, not a scan file")
    ]
    assert elapsed < 5.0


def test_the_traceback_comes_only_with_the_global_verbose_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "half.h5"
    path.write_bytes(truncated_half(shared_scan_file().read_bytes(), path))
    out = tmp_path / "out"
    assert main(["reconstruct", str(path), "--out", str(out)]) == USAGE
    quiet = capsys.readouterr().err
    assert "Traceback" not in quiet
    assert len(quiet.strip().splitlines()) == 1
    assert main(["-v", "reconstruct", str(path), "--out", str(out)]) == USAGE
    loud = capsys.readouterr().err.strip().splitlines()
    assert loud[0] == "Traceback (most recent call last):"
    assert any("ScanFileError" in line for line in loud)
    assert loud[-1] == quiet.strip()


def test_out_that_is_not_a_directory_is_refused_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code = main(["reconstruct", str(shared_scan_file()), "--out", str(blocker / "out")])
    assert code == USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith(f"talbot reconstruct: --out: {blocker / 'out'}: ")


def write_cut(rec: Recorded, path: Path, frames: int) -> Path:
    """The first ``frames`` frames of ``rec``, the file closed as after an aborted capture."""
    writer = ScanFileWriter(path, rec.header())
    writer.open()
    for frame, tags in list(zip(rec.frames, rec.rows, strict=True))[:frames]:
        writer.append(frame, tags)
    writer.close(complete=False)
    return path


def test_a_file_cut_short_is_refused_without_partial_and_nothing_is_written(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = shared_recorded()
    path = write_cut(rec, tmp_path / "cut.h5", CUT)
    out = tmp_path / "out"
    assert main(["reconstruct", str(path), "--out", str(out)]) == PARTIAL
    planned = rec.plan.frames_planned()
    assert capsys.readouterr().err.strip().splitlines() == [
        f"talbot reconstruct: {path} holds {CUT - rec.plan.steps} of {planned} planned frames "
        "(cut short): pass --partial to reconstruct what it holds"
    ]
    assert not out.exists()


def test_with_partial_a_file_cut_short_is_reconstructed_from_its_whole_series(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = shared_recorded()
    path = write_cut(rec, tmp_path / "cut.h5", CUT)
    out = tmp_path / "out"
    assert main(["reconstruct", str(path), "--out", str(out), "--partial"]) == PARTIAL
    printed = capsys.readouterr().out
    assert f"PARTIAL ({WHOLE_ANGLES} of {rec.plan.angles} projections; cut short" in printed
    with h5py.File(out / "recon.h5", "r") as f:
        assert not f.attrs["complete"]
        assert f.attrs["projections_used"] == WHOLE_ANGLES < f.attrs["projections_planned"]
        assert f.attrs["projections_planned"] == rec.plan.angles
        assert "cut short" in f.attrs["incomplete_reason"]
        assert f.attrs["source"] == str(path)
        assert f.attrs["scan_uid"] == rec.scan_uid
        angles = f["projections/angles_rad"][()]
        dphi = f["projections/dphi"][()]
    # the angles present, in order; the cut series (angle 8, 2 of 5 steps) left out, not fitted
    want = np.deg2rad([rec.plan.angle_deg(i) for i in range(WHOLE_ANGLES)])
    np.testing.assert_allclose(angles, want, atol=1e-9)
    assert np.isfinite(dphi).all()


def test_rows_a_dying_writer_left_unwritten_are_not_read_as_zero_frames(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = shared_recorded()
    clean = write_cut(rec, tmp_path / "clean.h5", CUT)
    died = tmp_path / "died.h5"
    shutil.copy(clean, died)
    with h5py.File(died, "r+", libver="latest") as f:  # resized for 2 more, never written
        f[DATA_PATH].resize(CUT + 2, axis=0)
        for ds in f[FRAMES_GROUP].values():
            ds.resize((CUT + 2,))
        f[END_GROUP]["frames_written"][()] = -1
    contents = read_scan(died)
    assert contents.frames.shape[0] == CUT
    assert contents.end.frames_written is None
    assert main(["reconstruct", str(clean), "--out", str(tmp_path / "a"), "--partial"]) == PARTIAL
    assert main(["reconstruct", str(died), "--out", str(tmp_path / "b"), "--partial"]) == PARTIAL
    err = capsys.readouterr().err
    assert "zero" not in err
    with h5py.File(tmp_path / "a/recon.h5") as a, h5py.File(tmp_path / "b/recon.h5") as b:
        np.testing.assert_array_equal(a["projections/dphi"][()], b["projections/dphi"][()])
        assert "its writer never closed it" in b.attrs["incomplete_reason"]


def test_a_file_still_being_written_is_refused_without_partial(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec = shared_recorded()
    path = tmp_path / "live.h5"
    writer = ScanFileWriter(path, rec.header())
    writer.open()
    try:
        for frame, tags in zip(rec.frames, rec.rows, strict=True):
            writer.append(frame, tags)
        code = main(["reconstruct", str(path), "--out", str(tmp_path / "out")])
    finally:
        writer.close()
    planned = rec.plan.frames_planned()
    assert code == PARTIAL
    assert capsys.readouterr().err.strip().splitlines() == [
        f"talbot reconstruct: {path} holds {planned} of {planned} planned frames (its writer "
        "never closed it (still being written, or the writer died)): pass --partial to "
        "reconstruct what it holds"
    ]


def test_a_complete_file_is_reconstructed_complete_with_exit_0(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rec, path = shared_recorded(), shared_scan_file()
    out = tmp_path / "out"
    assert main(["reconstruct", str(path), "--out", str(out)]) == OK
    assert ", complete; wrote recon.h5, slices.png in" in capsys.readouterr().out
    with h5py.File(out / "recon.h5", "r") as f:
        assert f.attrs["complete"]
        assert f.attrs["projections_used"] == f.attrs["projections_planned"] == rec.plan.angles
        assert f.attrs["incomplete_reason"] == ""
        assert f.attrs["source"] == str(path)


def test_a_dead_pixel_is_masked_with_one_warning_instead_of_stopping_the_reconstruction(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "dead.h5"
    shutil.copy(shared_scan_file(), path)
    with h5py.File(path, "r+", libver="latest") as f:
        frames = f[DATA_PATH][()]
        frames[:, 10, 40] = 0  # it once failed: "transmission must be finite and > 0"
        f[DATA_PATH][...] = frames
    assert main(["reconstruct", str(path), "--out", str(tmp_path / "out")]) == OK
    err = capsys.readouterr().err.splitlines()
    assert "talbot reconstruct: warning: masked 1 bad pixel: 1 dead" in err
