"""The raw scan file: layout, SWMR reading while writing, re-takes marked, bad input refused."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest

from beamline.config import preset
from beamline.scanfile import (
    DATA_PATH,
    FRAME_DTYPE,
    FRAME_FIELDS,
    FrameTable,
    ImageKey,
    ScanFileWriter,
    ScanHeader,
    read_scan,
)
from recon.pipeline import retrieve_projections
from sim.scan import simulate_scan


def _header(shape: tuple[int, int] = (4, 8)) -> ScanHeader:
    return ScanHeader(
        scan_uid=str(uuid.uuid4()),
        preset_json=preset("tiny").model_dump_json(),
        steps=5,
        periods=1,
        shape=shape,
    )


def _tags(**values: float) -> dict[str, float]:
    row = dict.fromkeys(FRAME_FIELDS, 0.0)
    row.update(values)
    return row


def test_simulated_scan_round_trips_and_reconstructs_the_same(tmp_path: Path) -> None:
    p = preset("tiny")
    schedule = p.schedule.model_copy(update={"angles": 6, "reference_every": 6})
    p = p.model_copy(update={"schedule": schedule})
    scan = simulate_scan(p, seed=0, noise=True)
    path = tmp_path / "scan.h5"
    header = ScanHeader(
        scan_uid="abc",
        preset_json=p.model_dump_json(),
        steps=p.schedule.steps,
        periods=p.schedule.periods,
        shape=p.detector.shape,
    )
    with ScanFileWriter(path, header) as w:
        for frame, row in zip(scan.frames, scan.table.rows, strict=True):
            w.append(frame, row)
    back = read_scan(path)
    assert back.header == header
    np.testing.assert_array_equal(back.frames, scan.frames)
    np.testing.assert_array_equal(back.table.rows, scan.table.rows)
    assert not back.superseded.any()
    a = retrieve_projections(scan.frames, scan.table, p.geometry)
    b = retrieve_projections(back.frames, back.table, p.geometry)
    np.testing.assert_array_equal(a.dphi, b.dphi)
    with h5py.File(path) as f:  # plain h5py, NXtomo places
        assert f[DATA_PATH].chunks == (1, *p.detector.shape)
        assert f["/entry/instrument/detector/data"].shape == scan.frames.shape
        keys = f["/entry/instrument/detector/image_key"][...]
        np.testing.assert_array_equal(keys, scan.table.rows["image_key"])


def test_a_retaken_series_marks_the_old_attempt_superseded(tmp_path: Path) -> None:
    path = tmp_path / "scan.h5"
    with ScanFileWriter(path, _header()) as w:
        frame = np.ones((4, 8), np.uint16)
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
            w.append(np.zeros((4, 8), np.uint16), {"image_key": 0})
        with pytest.raises(ValueError, match="g2_position_m"):
            w.append(np.zeros((4, 8), np.uint16), _tags(g2_position_m=float("nan")))
        assert w.frames_written == 0
    assert read_scan(path).frames.shape == (0, 4, 8)
    with pytest.raises(FileExistsError):
        ScanFileWriter(path, _header()).open()


@pytest.mark.parametrize(
    ("field", "value"),
    [("scan_uid", ""), ("steps", 2), ("periods", 0), ("shape", (0, 3)), ("dtype", "U3")],
)
def test_header_validation_names_the_field(field: str, value: object) -> None:
    kwargs = {
        "scan_uid": "u",
        "preset_json": "{}",
        "steps": 5,
        "periods": 1,
        "shape": (4, 8),
    }
    kwargs[field] = value
    with pytest.raises(ValueError, match=field):
        ScanHeader(**kwargs)  # type: ignore[arg-type]


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
            from beamline.scanfile import read_scan
            s = read_scan({str(path)!r})
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
