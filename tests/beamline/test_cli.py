"""The `talbot` command hands `sim` over to the simulated beamline server's own options."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from beamline.cli import main
from contracts.frames import TAG_FIELDS
from contracts.profile import builtin_profile
from contracts.scanfile import ScanFileWriter, ScanHeader


def test_talbot_sim_lists_the_served_pvs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sim", "--list-pvs", "--prefix", "XY:"]) == 0
    out = capsys.readouterr().out
    names = [line.split("\t")[0] for line in out.splitlines()]
    assert "XY:G2:X.RBV" in names
    assert "XY:ROT.DMOV" in names
    assert all(name.startswith("XY:") for name in names)


def test_talbot_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for command in ("demo", "sim"):
        assert command in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--steps", "2"], "--steps: steps: Input should be greater than or equal to 3"),
        (["--angles", "10", "--reference-every", "20"], "reference_every=20"),
        (["--exposure", "-1"], "exposure_s"),
        (["--grating", "g0"], "g0_pitch_m"),
        (["--profile", "missing.toml"], "missing.toml"),
    ],
)
def test_a_bad_scan_argument_exits_2_before_anything_connects(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # no simulated beamline is asked: the plan and the profile are checked first
    assert main(["scan", "ct", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err
    assert len(err.strip().splitlines()) == 1


def test_reconstruct_refuses_a_run_that_is_not_a_ct_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "count.h5"
    header = ScanHeader("a-count-run", builtin_profile("tiny").instrument, None)
    with ScanFileWriter(path, header) as writer:
        tags = dict.fromkeys(TAG_FIELDS, 0)
        tags.update(image_key=2, angle_index=-1, series_index=-1, step_index=-1)
        writer.append(np.zeros((32, 96), np.uint16), tags)
    assert main(["reconstruct", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a phase-stepping CT scan" in err
    assert len(err.splitlines()) == 1
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    assert main(["reconstruct", str(tmp_path / "junk.h5"), "--out", str(tmp_path / "o2")]) == 2
    assert "talbot reconstruct: file:" in capsys.readouterr().err


def test_recon_reserve_takes_rows_columns_and_angles() -> None:
    from beamline.cli import build_parser

    args = ["recon", "--connect", "tcp://127.0.0.1:1", "--out", "x", "--reserve", "32x96x90"]
    assert build_parser().parse_args(args).reserve == (32, 96, 90)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["recon", "--connect", "tcp://10.1.2.3:5999", "--out", "x"], "--connect: endpoint"),
        (["replay", "/dev/null"], "talbot replay: file:"),
    ],
)
def test_stream_commands_answer_bad_input_in_one_line(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert needle in err
    assert len(err.splitlines()) == 1


def test_reconstruct_says_when_a_file_is_open_or_short_of_its_plan(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.recon.scanfiles import shared_recorded

    rec = shared_recorded()
    path = tmp_path / "short.h5"
    writer = ScanFileWriter(path, rec.header())
    writer.open()
    for frame, tags in list(zip(rec.frames, rec.rows, strict=True))[: len(rec.rows) - 10]:
        writer.append(frame, tags)
    try:  # the writer still has it open, ten frames short
        code = main(["reconstruct", str(path), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        written_without_partial = (tmp_path / "out" / "recon.h5").exists()
        partial = main(["reconstruct", str(path), "--out", str(tmp_path / "out"), "--partial"])
    finally:
        writer.close(complete=False)
    assert code == 3  # reported, nothing reconstructed without --partial
    assert err.count("\n") == 1
    planned = rec.plan.frames_planned()  # (the file's superseded take is not counted)
    assert f"holds {planned - 10} of {planned} planned frames" in err
    assert "--partial" in err
    assert not written_without_partial
    assert partial == 3
    with h5py.File(tmp_path / "out" / "recon.h5") as f:
        assert not bool(f.attrs["complete"])
