"""`talbot demo` on the whole system: simulated beamline server, bluesky scan over Channel Access,
frame stream into the streaming reconstructor, scored against the phantom. Runs as a subprocess,
exactly as `make demo` does (a short schedule keeps it CI-sized)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from beamline.session import read_run
from contracts.frames import ImageKey
from contracts.scanfile import read_scan


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("system-demo")
    profile = root / "short.toml"
    profile.write_text('base = "tiny"\n[plan]\nangles = 12\nreference_every = 6\ndarks = 3\n')
    out = root / "out"
    command = ["demo", "--profile", str(profile), "--out", str(out)]
    proc = subprocess.run(
        [sys.executable, "-m", "beamline.cli", *command],
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def test_every_frame_reaches_the_reconstructor_and_the_file(demo: tuple[Path, str]) -> None:
    out, stdout = demo
    # darks + tiny's 48-step calibration series (reference series 0) + (angles + 2 more
    # reference series) x 5 steps
    expected = 3 + 48 + (12 + 2) * 5
    stream = json.loads((out / "stream.json").read_text())["stats"]
    assert stream["frames_sent"] == expected
    assert stream["frames"] == expected
    assert stream["lost"] == []
    assert stream["malformed"] == 0
    (scan_file,) = sorted((out / "data").rglob("*.h5"))
    scan = read_scan(scan_file)
    assert scan.frames.shape == (expected, 32, 96)
    keys = scan.table.rows["image_key"]
    assert (keys == ImageKey.DARK).sum() == 3
    assert (keys == ImageKey.FLAT).sum() == 48 + 2 * 5
    run = read_run(out / "data")
    assert run.stop is not None
    assert run.stop["exit_status"] == "success"
    assert run.start["uid"] == scan.header.scan_uid
    assert f"frame stream: frames {expected}" in stdout


def test_streamed_volume_is_quantitative(demo: tuple[Path, str]) -> None:
    out, _ = demo
    metrics = json.loads((out / "metrics.json").read_text())
    assert abs(metrics["delta_matrix_bias_pct"]) < 3.0
    assert abs(metrics["mu_matrix_bias_pct"]) < 5.0
    assert metrics["halo_contrast_recovered_pct"] > 50.0
    assert metrics["timings_s"]["last_frame_to_volume"] > 0
    with h5py.File(out / "recon.h5") as rec, h5py.File(out / "truth.h5") as tru:
        assert rec["delta"].shape == tru["delta"].shape == (32, 96, 96)
        assert rec["delta"].attrs["units"] == "1"
        assert rec["mu"].attrs["units"] == "1/m"
        assert np.isfinite(rec["delta"][...]).all()
    for name in ("slices.png", "halo_profile.png"):
        assert (out / name).stat().st_size > 10_000
