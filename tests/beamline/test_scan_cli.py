"""``talbot scan ct`` with a schedule other than the profile's: the scan file, the stream and
both reconstructions follow the plan as it ran, not the IOC's start-up profile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import h5py
import numpy as np
import pytest

from contracts.profile import builtin_profile
from contracts.scanfile import read_scan
from sim.ioc.launch import client_environment, free_port, start_ioc, stop_ioc
from sim.scan import FrameRenderer

STEPS, ANGLES, REFERENCE_EVERY, CALIBRATION_STEPS = 8, 60, 30, 21


def _talbot(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "beamline.cli", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
        )


def _wait_for(log: Path, needle: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if needle in log.read_text(errors="replace"):
            return
        assert process.poll() is None, log.read_text(errors="replace")
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not in {log} after {timeout_s} s")


@pytest.fixture(scope="module")
def overridden(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run ``talbot scan ct --steps 8 --angles 60 --calibration-steps 21`` against a fresh
    simulated beamline (tiny profile: 5 steps, 90 angles, 48 calibration steps) with
    ``talbot recon`` following the stream."""
    root = tmp_path_factory.mktemp("override")
    prefix = f"OV{uuid.uuid4().hex[:6].upper()}:"
    profile = root / "beamline.toml"
    profile.write_text(f'base = "tiny"\n[instrument.pvs]\nprefix = "{prefix}"\n')
    port, stream_port = free_port(), free_port()
    stream = f"tcp://127.0.0.1:{stream_port}"
    env = {**os.environ, **client_environment(port)}
    ioc = start_ioc(
        prefix, port, root / "sim.log", "--seed", "0", "--stream", stream, "--profile", str(profile)
    )
    recon = _talbot(
        ["recon", "--connect", stream, "--out", str(root / "live"), "--scans", "1"],
        env,
        root / "r.log",
    )
    try:
        _wait_for(root / "sim.log", "ready:", ioc, 120)
        scan = subprocess.run(
            [sys.executable, "-m", "beamline.cli", "scan", "ct", "--profile", str(profile),
             "--data-dir", str(root / "data"), "--steps", str(STEPS), "--angles", str(ANGLES),
             "--reference-every", str(REFERENCE_EVERY),
             "--calibration-steps", str(CALIBRATION_STEPS), "--no-progress"],
            capture_output=True, text=True, env=env, timeout=400,
        )  # fmt: skip
        assert scan.returncode == 0, scan.stdout + scan.stderr
        assert recon.wait(timeout=300) == 0, (root / "r.log").read_text()
    finally:
        recon.kill()
        assert stop_ioc(ioc) == 0, (root / "sim.log").read_text()
    return root


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--calibration-steps", "4"], "calibration_steps=4 must be at least 2 steps + 5 = 15"),
        (["--calibration-steps", "40", "--steps", "20"], "calibration_steps=40 must be at least"),
        (["--calibration-steps", "257"], "less than or equal to 256"),
        (["--calibration-steps", "-1"], "greater than or equal to 0"),
        (["--periods", "2"], "calibration_steps=48 and periods=2 must be coprime"),  # tiny's
        (["--periods", "3"], "calibration_steps=48 and periods=3 must be coprime"),  # tiny's
        (["--calibration-steps", "33", "--periods", "3"], "calibration_steps=33 and periods=3"),
    ],
)
def test_a_bad_calibration_steps_exits_2_naming_the_option_before_anything_connects(
    args: list[str],
    needle: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from beamline import session
    from beamline.cli import main

    def no_session(*args: object, **kwargs: object) -> None:
        raise AssertionError("the session was made: the plan was not checked first")

    monkeypatch.setattr(session, "make_session", no_session)
    assert main(["scan", "ct", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --calibration-steps: calibration_steps"), err
    assert needle in err
    assert len(err.strip().splitlines()) == 1


def _scan_file(root: Path) -> Path:
    (path,) = (root / "data").rglob("*.h5")
    return path


def _matrix_delta(recon_h5: Path) -> tuple[float, float]:
    """(reconstructed, true) mean δ in the bone matrix of the tiny phantom (IOC seed 0)."""
    tiny = builtin_profile("tiny")
    with h5py.File(recon_h5) as f:
        delta = f["delta"][()]
        voxel = float(f["delta"].attrs["voxel_size_m"])
    phantom = FrameRenderer(tiny.instrument, tiny.simulated(), 0).phantom
    matrix = phantom.region_masks(delta.shape, voxel)["matrix"]
    truth = phantom.voxelize(delta.shape, voxel)["delta"]
    return float(delta[matrix].mean()), float(truth[matrix].mean())


def test_the_scan_file_and_the_stream_carry_the_plan_as_it_ran(overridden: Path) -> None:
    contents = read_scan(_scan_file(overridden))
    plan = contents.header.plan
    assert plan is not None
    assert (plan.steps, plan.angles, plan.reference_every) == (STEPS, ANGLES, REFERENCE_EVERY)
    assert plan.calibration_steps == CALIBRATION_STEPS
    assert contents.end.complete
    # darks, the calibration series (reference series 0), 2 more references, the projections
    n = 5 + CALIBRATION_STEPS + (ANGLES + 2) * STEPS
    assert len(contents.table) == plan.frames_planned() == contents.end.frames_written == n
    rows = contents.table.rows
    steps = rows["step_index"][rows["image_key"] == 0]
    assert sorted(set(steps.tolist())) == list(range(STEPS))
    flat = rows["image_key"] == 1
    for index, m in ((0, CALIBRATION_STEPS), (1, STEPS), (2, STEPS)):
        assert rows["step_index"][flat & (rows["series_index"] == index)].tolist() == list(range(m))
    stream = json.loads((overridden / "live" / "latest" / "stream.json").read_text())
    assert stream["stats"]["projections"] == ANGLES
    assert stream["stats"]["lost"] == []


def test_the_overridden_scan_reconstructs_live_and_offline(overridden: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "beamline.cli", "reconstruct", str(_scan_file(overridden)),
         "--out", str(overridden / "offline")],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    live, truth = _matrix_delta(overridden / "live" / "latest" / "recon.h5")
    offline, _ = _matrix_delta(overridden / "offline" / "recon.h5")
    assert live == pytest.approx(truth, rel=0.03)
    assert offline == pytest.approx(truth, rel=0.03)
    with (
        h5py.File(overridden / "live" / "latest" / "recon.h5") as a,
        h5py.File(overridden / "offline" / "recon.h5") as b,
    ):
        assert a["projections/dphi"].shape == (ANGLES, 32, 96)
        np.testing.assert_allclose(a["delta"][()], b["delta"][()], atol=1e-3 * truth)
        # the same fit live and offline, from the scan's own calibration series
        for f in (a, b):
            assert f.attrs["fit_method"] == "shape-aware"
            assert (f.attrs["fit_steps"], f.attrs["calibration_steps"]) == (8, CALIBRATION_STEPS)
    assert "shape-aware fit at 8 steps" in done.stderr
