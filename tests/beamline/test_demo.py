"""`talbot demo --offline` end to end (in memory, in this process), and the CLI's handling of
bad arguments. The whole-system demo runs in tests/beamline/test_system_demo.py (a subprocess:
it configures its own Channel Access client)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from beamline.cli import main

NAMES = {"delta": "1", "mu": "1/m", "darkfield": "1/m"}


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--offline", "--profile", "tiny", "--out", str(out), "--seed", "1"]) == 0
    return out


def test_demo_writes_volumes_with_units_and_voxel_size(demo_out: Path) -> None:
    with h5py.File(demo_out / "recon.h5") as rec, h5py.File(demo_out / "truth.h5") as tru:
        for name, units in NAMES.items():
            for f in (rec, tru):
                ds = f[name]
                assert ds.dtype == np.float32
                assert ds.shape == (32, 96, 96)
                assert ds.attrs["units"] == units
                assert ds.attrs["voxel_size_m"] == pytest.approx(0.5e-6)
        assert rec["projections/dphi"].shape == (90, 32, 96)
        # the gratings' curve at 5 steps, measured by the 48-step calibration series
        assert rec.attrs["fit_method"] == "shape-aware"
        assert rec.attrs["calibration_steps"] == 48
        assert rec.attrs["first_harmonic_bias_transmission"] > 0.01
        delta, truth = rec["delta"][...], tru["delta"][...]
    rod = truth > 2e-6
    assert np.median(delta[rod]) == pytest.approx(np.median(truth[rod]), rel=0.03)


def test_demo_prints_and_saves_quality_figures(demo_out: Path) -> None:
    metrics = json.loads((demo_out / "metrics.json").read_text())
    assert abs(metrics["delta_matrix_bias_pct"]) < 2.0
    assert 70.0 < metrics["halo_contrast_recovered_pct"] < 130.0
    assert abs(metrics["mu_matrix_bias_pct"]) < 3.0
    assert metrics["delta_matrix_noise"] < 0.05 * metrics["delta_matrix_true"]
    for png in ("slices.png", "halo_profile.png"):
        data = (demo_out / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert len(data) > 10_000


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["demo", "--out", "x", "--profile", "huge"], "profile must be one of"),
        (["demo"], "--out"),
        (["demo", "--out", "x", "--seed", "-3"], "--seed"),
        (["demo", "--out", "x", "--noise-free"], "--offline"),
        (["bogus"], "COMMAND"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(
    args: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_bad_profile_exits_2_naming_the_parameter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    profile = tmp_path / "bad.toml"
    profile.write_text('base = "tiny"\n[instrument.geometry]\ng2_pitch_m = 3e-6\n')
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--offline", "--out", str(tmp_path / "o"), "--profile", str(profile)])
    assert exc.value.code == 2
    assert "g2_pitch_m" in capsys.readouterr().err


def test_console_script_help_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "beamline.cli", "demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "recon.h5" in out.stdout
