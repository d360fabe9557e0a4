"""The raw scan file: layout, SWMR reading while writing, re-takes marked, the end record, bad
input refused, the first layout still read."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest

from contracts.frames import FRAME_DTYPE, TAG_FIELDS, FrameTable, ImageKey
from contracts.profile import builtin_profile
from contracts.scanfile import (
    DATA_PATH,
    FRAMES_GROUP,
    ScanFileWriter,
    ScanHeader,
    read_header,
    read_scan,
)
from recon.pipeline import retrieve_projections
from tests.profiles import simulate, tiny, with_detector_shape

TINY = builtin_profile("tiny")


def _header(shape: tuple[int, int] = (8, 8)) -> ScanHeader:
    profile = with_detector_shape(TINY, *shape)
    return ScanHeader(str(uuid.uuid4()), profile.instrument, profile.scan_plan())


def _tags(**values: float) -> dict[str, float]:
    row = dict.fromkeys(TAG_FIELDS, 0.0)
    row.update(values)
    return row


def test_simulated_scan_round_trips_and_reconstructs_the_same(tmp_path: Path) -> None:
    p = tiny(angles=6, reference_every=6)
    scan = simulate(p, seed=0, noise=True)
    path = tmp_path / "scan.h5"
    header = ScanHeader("abc", p.instrument, p.scan_plan())
    with ScanFileWriter(path, header) as w:
        for frame, row in zip(scan.frames, scan.table.rows, strict=True):
            w.append(frame, row)
    back = read_scan(path)
    assert back.header == header
    np.testing.assert_array_equal(back.frames, scan.frames)
    np.testing.assert_array_equal(back.table.rows, scan.table.rows)
    assert not back.superseded.any()
    assert (back.end.frames_written, back.end.complete) == (len(scan.frames), True)
    a = retrieve_projections(scan.frames, scan.table, p.instrument.geometry)
    b = retrieve_projections(back.frames, back.table, p.instrument.geometry)
    np.testing.assert_array_equal(a.dphi, b.dphi)
    with h5py.File(path) as f:  # plain h5py, NXtomo places
        assert f[DATA_PATH].chunks == (1, *p.instrument.detector.shape)
        assert f["/entry/instrument/detector/data"].shape == scan.frames.shape
        keys = f["/entry/instrument/detector/image_key"][...]
        np.testing.assert_array_equal(keys, scan.table.rows["image_key"])


def test_a_retaken_series_marks_the_old_attempt_superseded(tmp_path: Path) -> None:
    path = tmp_path / "scan.h5"
    with ScanFileWriter(path, _header()) as w:
        frame = np.ones((8, 8), np.uint16)
        for step in range(3):  # attempt 0 of angle 7, interrupted
            w.append(frame, _tags(image_key=0, angle_index=7, step_index=step))
        for step in range(5):  # attempt 1
            w.append(frame * 2, _tags(image_key=0, angle_index=7, step_index=step, attempt=1))
        w.append(frame, _tags(image_key=0, angle_index=8, step_index=0))
    back = read_scan(path)
    assert back.superseded.tolist() == [True] * 3 + [False] * 6
    assert len(back.table) == 9  # nothing acquired is deleted
    np.testing.assert_array_equal(back.table.latest_attempts(), ~back.superseded)


def test_bad_frames_and_tags_are_refused_before_writing(tmp_path: Path) -> None:
    path = tmp_path / "scan.h5"
    with ScanFileWriter(path, _header()) as w:
        with pytest.raises(ValueError, match="frame shape"):
            w.append(np.zeros((5, 8), np.uint16), _tags())
        with pytest.raises(ValueError, match="angle_index"):
            w.append(np.zeros((8, 8), np.uint16), {"image_key": 0})
        with pytest.raises(ValueError, match="g2_position_m"):
            w.append(np.zeros((8, 8), np.uint16), _tags(g2_position_m=float("nan")))
        assert w.frames_written == 0
    assert read_scan(path).frames.shape == (0, 8, 8)
    with pytest.raises(FileExistsError):
        ScanFileWriter(path, _header()).open()


@pytest.mark.parametrize(("field", "value"), [("scan_uid", ""), ("dtype", "U3")])
def test_header_validation_names_the_field(field: str, value: object) -> None:
    kwargs: dict[str, object] = {
        "scan_uid": "u",
        "instrument": TINY.instrument,
        "plan": TINY.scan_plan(),
        "dtype": "uint16",
    }
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        ScanHeader(**kwargs)  # type: ignore[arg-type]


def test_the_file_records_the_instrument_and_plan_never_the_simulation(tmp_path: Path) -> None:
    path = tmp_path / "scan.h5"
    header = ScanHeader("u1", TINY.instrument, TINY.scan_plan())
    with ScanFileWriter(path, header):
        pass
    with h5py.File(path) as f:
        inter = f["/entry/instrument/interferometer"].attrs
        assert (inter["grid_steps"], inter["periods"]) == (5, 1)
        text = inter["instrument_json"] + inter["scan_plan_json"]
        assert "phantom" not in text
        assert "incident_counts" not in text
        assert read_header(f) == header


def test_a_run_that_is_not_a_ct_records_no_plan(tmp_path: Path) -> None:
    path = tmp_path / "count.h5"
    with ScanFileWriter(path, ScanHeader("u2", TINY.instrument, None)) as w:
        w.append(np.zeros((32, 96), np.uint16), _tags(image_key=2))
    back = read_scan(path)
    assert back.header.plan is None
    with h5py.File(path) as f:
        assert f["/entry/instrument/interferometer"].attrs["scan_plan_json"] == "null"


def test_the_end_record_tells_complete_open_and_cut_short_files(tmp_path: Path) -> None:
    frame = np.zeros((8, 8), np.uint16)
    done = tmp_path / "done.h5"
    with ScanFileWriter(done, _header()) as w:
        w.append(frame, _tags(image_key=2))
    assert (read_scan(done).end.frames_written, read_scan(done).end.complete) == (1, True)
    aborted = tmp_path / "aborted.h5"
    w = ScanFileWriter(aborted, _header())
    w.open()
    w.append(frame, _tags(image_key=2))
    assert (read_scan(aborted).end.frames_written, read_scan(aborted).end.complete) == (None, False)
    w.close(complete=False)
    assert (read_scan(aborted).end.frames_written, read_scan(aborted).end.complete) == (1, False)


def test_not_a_scan_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = 1
    with pytest.raises(ValueError, match="not a Talbot scan file"):
        read_scan(path)


def test_a_second_process_reads_whole_frames_while_the_file_is_written(tmp_path: Path) -> None:
    path = tmp_path / "scan.h5"
    w = ScanFileWriter(path, _header((16, 32)))
    w.open()
    try:
        for i in range(3):
            w.append(np.full((16, 32), i, np.uint16), _tags(image_key=2, timestamp_s=i))
        reader = textwrap.dedent(
            f"""
            from contracts.scanfile import read_scan
            s = read_scan({str(path)!r})
            assert s.end.frames_written is None  # still being written
            assert s.frames.shape == (3, 16, 32), s.frames.shape
            assert [int(f.mean()) for f in s.frames] == [0, 1, 2]
            assert s.table.rows["timestamp_s"].tolist() == [0, 1, 2]
            print("ok")
            """
        )
        out = subprocess.run(
            [sys.executable, "-c", reader], capture_output=True, text=True, timeout=60
        )
        assert out.stdout.strip() == "ok", out.stderr
        w.append(np.full((16, 32), 3, np.uint16), _tags(image_key=2, timestamp_s=3))
    finally:
        w.close()
    assert read_scan(path).frames.shape[0] == 4


def test_frame_table_refuses_wrong_dtype() -> None:
    with pytest.raises(ValueError, match="FRAME_DTYPE"):
        FrameTable(np.zeros(3, dtype=[("a", "i4")]))
    t = FrameTable.empty(2)
    assert t.rows.dtype == FRAME_DTYPE
    assert t.column("image_key").tolist() == [ImageKey.PROJECTION] * 2
    with pytest.raises(KeyError, match="unknown frame field"):
        t.column("nope")


#: A first-layout (talbot-scan/1) file's preset: the former tiny preset, phantom included.
LEGACY_PRESET = {
    "name": "tiny",
    "geometry": {
        "energy_kev": 12.4, "g1_pitch_m": 2e-6, "g1_phase": "pi", "g2_pitch_m": 1e-6,
        "distance_m": 0.005000637, "talbot_order": 1, "pixel_size_m": 5e-7,
        "magnification": 1.0, "source_distance_m": None, "g0_pitch_m": None,
    },
    "detector": {
        "shape": [4, 8], "incident_counts": 2e4, "psf_sigma_px": 0.7, "read_noise_e": 2.0,
        "gain_adu_per_e": 1.0, "dark_offset_adu": 100.0, "exposure_s": 0.05,
    },
    "interferometer": {"visibility": 0.35},
    "schedule": {
        "steps": 5, "periods": 1, "angles": 90, "angular_range_deg": 180.0,
        "reference_every": 45, "darks": 5,
    },
    "phantom": {"rod_diameter_m": 4e-5},
    "rotation_center_offset_px": 1.5,
    "sample_out_mm": None,
}  # fmt: skip


def test_a_first_layout_file_is_still_read(tmp_path: Path) -> None:
    """A file in the layout written before the instrument / plan split, made with plain h5py."""
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:
        entry = f.create_group("entry")
        entry.attrs["talbot_layout"] = "talbot-scan/1"
        entry.attrs["scan_uid"] = "old-scan"
        f["/entry/data/data"] = np.arange(3 * 4 * 8, dtype=np.uint16).reshape(3, 4, 8)
        frames = f.create_group(FRAMES_GROUP)
        for name, dtype in TAG_FIELDS.items():
            frames[name] = np.zeros(3, dtype)
        frames["image_key"][...] = 2
        frames["superseded"] = np.array([0, 1, 0], np.uint8)
        inter = f.create_group("/entry/instrument/interferometer")
        inter.attrs["grid_steps"] = 5
        inter.attrs["periods"] = 1
        inter.attrs["preset_json"] = json.dumps(LEGACY_PRESET)
    back = read_scan(path)
    g = back.header.instrument.geometry
    assert (g.g1_phase_deg, g.pixel_size_m, g.magnification) == (180.0, 5e-7, 1.0)
    assert back.header.instrument.rotation_axis_offset_px == 1.5
    plan = back.header.plan
    assert plan is not None
    assert (plan.steps, plan.angles, plan.reference_every, plan.exposure_s) == (5, 90, 45, 0.05)
    assert back.table.rows["frame_number"].tolist() == [0, 1, 2]
    assert back.superseded.tolist() == [False, True, False]
    assert (back.end.frames_written, back.end.complete) == (None, False)


def test_a_file_read_while_its_writer_appends_is_never_called_truncated(tmp_path: Path) -> None:
    """The file grows between the reader's look at its size and its walk of the chunk index:
    only data beyond the size measured after the walk is beyond the end."""
    path = tmp_path / "scan.h5"
    writer = textwrap.dedent(
        f"""
        import sys, uuid
        import numpy as np
        from contracts.profile import builtin_profile
        from contracts.frames import TAG_FIELDS
        from contracts.scanfile import ScanFileWriter, ScanHeader
        from tests.profiles import with_detector_shape
        p = with_detector_shape(builtin_profile("tiny"), 64, 64)
        tags = dict.fromkeys(TAG_FIELDS, 0.0)
        tags["image_key"] = 2
        with ScanFileWriter({str(path)!r}, ScanHeader(str(uuid.uuid4()), p.instrument,
                                                    p.scan_plan())) as w:
            w.append(np.zeros((64, 64), np.uint16), tags)
            print("open", flush=True)
            for i in range(4000):
                w.append(np.full((64, 64), i % 60000, np.uint16), tags)
        """
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", writer], stdout=subprocess.PIPE, text=True, cwd=Path.cwd()
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "open"
        seen = []
        while proc.poll() is None and len(seen) < 300:
            seen.append(read_scan(path).frames.shape[0])  # raised "truncated" before
        assert len(set(seen)) > 10, seen  # the reads did fall while the file grew
        assert seen == sorted(seen)
    finally:
        proc.kill()
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
