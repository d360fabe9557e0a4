"""The main job on the whole system: simulated beamline + bluesky scan + streaming reconstruction.

``talbot demo`` (the target of ``make demo``) starts, on loopback ports it picks:

1. the simulated beamline (``talbot sim``: one caproto server, the detector writing the raw scan
   file and publishing every frame on the frame stream),
2. the streaming reconstructor (``talbot recon``), following that stream,

then runs ``phase_stepping_ct`` through a bluesky RunEngine over Channel Access (the session of
``beamline.session``), waits for the reconstructor's final volume, scores it against the phantom's
ground truth and writes the figures. Every process it started is stopped on success, on error and
on Ctrl-C. Output directory layout:

- ``data/``: the raw scan file(s) (HDF5, SWMR) and ``documents/`` (the run's bluesky documents);
- ``<scan uid>/``: what the reconstructor service wrote for the scan (``recon.h5``,
  ``slices.png``, ``stream.json``: its counts, frames, lost, duplicates ..., and timings), with
  ``latest`` a link to it, and ``recon.h5`` and ``stream.json`` links into it;
- ``truth.h5``, ``slices.png`` (reconstruction beside truth), ``halo_profile.png``,
  ``metrics.json``;
- ``logs/``: the server's and the reconstructor's output.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import h5py
import numpy as np

from beamline.demo import DemoReport, score_and_write
from contracts.profile import Profile
from recon.pipeline import Volumes
from sim.ioc.launch import client_environment, free_port, stop_ioc

#: How long the server may take to start, and the reconstructor to finish after the scan [s].
START_TIMEOUT_S = 120.0
FINISH_TIMEOUT_S = 600.0


class DemoError(RuntimeError):
    """A part of the system failed; the message says which and where its log is."""


@contextlib.contextmanager
def _started(args: list[str], log: Path) -> Iterator[tuple[subprocess.Popen[bytes], IO[bytes]]]:
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, *args], stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        try:
            yield process, sink
        finally:
            with contextlib.suppress(subprocess.TimeoutExpired):
                stop_ioc(process, timeout_s=20)


def _wait_for_line(process: subprocess.Popen[bytes], log: Path, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        for line in text.splitlines():
            if needle in line:
                return line
        if process.poll() is not None:
            raise DemoError(f"{log.stem} exited with {process.returncode}; see {log}")
        time.sleep(0.05)
    raise DemoError(f"{log.stem} did not print {needle!r} within {timeout:.0f} s; see {log}")


def _read_volumes(path: Path) -> Volumes:
    with h5py.File(path, "r") as f:
        vols = {name: f[name][...].astype(np.float32) for name in ("delta", "mu", "darkfield")}
        voxel = float(f["delta"].attrs["voxel_size_m"])
        center = float(f.attrs.get("center_offset_px", 0.0))
    return Volumes(vols["delta"], vols["mu"], vols["darkfield"], voxel, center)


def run_system_demo(
    config: Profile,
    out: Path,
    *,
    seed: int = 0,
    profile: str | Path | None = None,
    exposure_s: float | None = None,
) -> DemoReport:
    """Run the whole simulated system once and score the streamed reconstruction.

    ``profile``: the built-in name or TOML file ``config`` came from (the server and the session
    load the same one; None: ``config.name``, a built-in). Raises DemoError naming the failing
    part and its log.
    """
    source = str(profile) if profile is not None else config.name
    out = out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    timings = _scan_through_the_system(config, source, out, seed, exposure_s)
    _link_scan_results(out)
    stream_report = json.loads((out / "stream.json").read_text())
    timings["last_frame_to_volume"] = float(
        stream_report["timings_s"].get("last_frame_to_volume_s", float("nan"))
    )
    volumes = _read_volumes(out / "recon.h5")
    from sim.scan import FrameRenderer

    # the server's phantom: same profile and seed
    phantom = FrameRenderer(config.instrument, config.simulated(), seed).phantom
    report = score_and_write(out, config, phantom, volumes, timings, files=["recon.h5"])
    report.files += ["stream.json", "data/", "logs/"]
    stats = stream_report["stats"]
    report.stream = {
        "frames": stats["frames"],
        "frames_sent": stats["frames_sent"],
        "lost": stats["lost_count"],
        "duplicates": stats["duplicates"],
        "malformed": stats["malformed"],
        "recovered_from_file": stats["recovered"],
    }
    (out / "metrics.json").write_text(json.dumps(report.as_dict(), indent=2))
    return report


def _link_scan_results(out: Path) -> None:
    """``recon.h5`` and ``stream.json`` in ``out``: relative links into the scan's own
    directory, which the reconstructor service wrote (``out/<scan uid>/``). (``slices.png``
    here is the demo's own figure, reconstruction beside truth.)"""
    latest = out / "latest"
    if not latest.is_dir():
        raise DemoError(f"the reconstructor wrote no scan directory in {out} (see logs/recon.log)")
    scan_dir = latest.resolve().name
    for name in ("recon.h5", "stream.json"):
        link = out / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path(scan_dir) / name)


def _scan_through_the_system(
    config: Profile, source: str, out: Path, seed: int, exposure_s: float | None
) -> dict[str, float]:
    """Start the simulated beamline and the reconstructor, run the CT through a session, wait
    for the reconstructor's volume; returns the timings [s]."""
    logs, data = out / "logs", out / "data"
    ca_port, stream_port = free_port(), free_port()
    prefix = f"DEMO{uuid.uuid4().hex[:6].upper()}:"
    stream = f"tcp://127.0.0.1:{stream_port}"
    server_args = [
        *("-m", "sim.ioc", "--port", str(ca_port), "--prefix", prefix, "--seed", str(seed)),
        *("--stream", stream, "--profile", source),
    ]
    recon_args = [
        *("-m", "beamline.cli", "recon", "--connect", stream, "--out", str(out)),
        *("--scans", "1"),
    ]
    timings: dict[str, float] = {}
    # the client side of Channel Access is configured before pyepics loads (in make_session)
    os.environ.update(client_environment(ca_port))
    t_start = time.perf_counter()
    with (
        _started(server_args, logs / "sim.log") as (server, _),
        _started(recon_args, logs / "recon.log") as (recon, _),
    ):
        _wait_for_line(server, logs / "sim.log", "ready:", START_TIMEOUT_S)
        timings["start_services"] = time.perf_counter() - t_start
        from beamline.session import make_session

        session = make_session(source, data, pvs=config.instrument.pvs.with_prefix(prefix))
        try:
            t0 = time.perf_counter()
            kwargs = {} if exposure_s is None else {"exposure_s": exposure_s}
            session.RE(session.ct(**kwargs))
            timings["scan"] = time.perf_counter() - t0
        finally:
            session.close()
        t0 = time.perf_counter()
        _wait_for_reconstructor(recon, logs / "recon.log")
        timings["scan_end_to_volume"] = time.perf_counter() - t0
    return timings


def _wait_for_reconstructor(recon: subprocess.Popen[bytes], log: Path) -> None:
    """Wait until the reconstructor has written its volume and exited; DemoError otherwise."""
    try:
        code = recon.wait(timeout=FINISH_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DemoError(
            f"the reconstructor did not finish within {FINISH_TIMEOUT_S:.0f} s after the "
            f"scan; see {log}"
        ) from None
    if code != 0:
        raise DemoError(f"the reconstructor exited with {code}; see {log}")
