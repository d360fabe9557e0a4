"""Shared fixtures: one simulated-beamline IOC per test session (DESIGN §3.1 test isolation).

The Channel Access client environment is set here at import time, before anything loads pyepics'
libca: the server listens on a free loopback port and every client searches only there.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from beamline.pvnames import SIM_PVNAMES, PVNames


def _free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind(("127.0.0.1", 0))
            port = int(tcp.getsockname()[1])
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise RuntimeError("no free loopback port found")


IOC_PORT = _free_port()
IOC_PREFIX = f"TT{uuid.uuid4().hex[:8].upper()}:"

os.environ["EPICS_CA_ADDR_LIST"] = f"127.0.0.1:{IOC_PORT}"
os.environ["EPICS_CA_AUTO_ADDR_LIST"] = "NO"
os.environ["EPICS_CA_SERVER_PORT"] = str(IOC_PORT)
os.environ["EPICS_CA_MAX_ARRAY_BYTES"] = str(64 * 1024 * 1024)

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class IocHandle:
    """A running simulated-beamline server."""

    prefix: str
    port: int
    pvs: PVNames
    process: subprocess.Popen[bytes]
    log_path: Path

    def pv(self, entry: str, suffix: str = "") -> str:
        """Full PV name of a ``beamline.pvnames`` entry plus suffix."""
        return self.pvs.full(entry, suffix)

    def log(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(errors="replace")


def start_ioc(prefix: str, port: int, log_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    """Start ``python -m sim.ioc`` on loopback (the caller waits for a PV and stops it)."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "sim.ioc", "--prefix", prefix, "--port", str(port), *extra],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def wait_for_pv(pvname: str, process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Poll a PV until it answers (or fail early if the server process died)."""
    import epics

    pv = epics.PV(pvname, auto_monitor=False)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"IOC exited early with code {process.returncode}")
            if pv.wait_for_connection(timeout=0.2) and pv.get(timeout=5.0) is not None:
                return
    finally:
        pv.disconnect()
    raise TimeoutError(f"{pvname} did not connect within {timeout_s} s")


def stop_ioc(process: subprocess.Popen[bytes], timeout_s: float = 10.0) -> int:
    """SIGTERM the server and wait for it; returns its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    return process.returncode


@pytest.fixture(scope="session")
def sim_ioc() -> Iterator[IocHandle]:
    """The simulated beamline, served for the whole test session on a free loopback port."""
    with tempfile.TemporaryDirectory(prefix="talbot-ioc-") as tmp:
        log_path = Path(tmp) / "ioc.log"
        process = start_ioc(IOC_PREFIX, IOC_PORT, log_path, "--seed", "0")
        pvs = SIM_PVNAMES.with_prefix(IOC_PREFIX)
        handle = IocHandle(IOC_PREFIX, IOC_PORT, pvs, process, log_path)
        try:
            wait_for_pv(pvs.full("beam", "Current"), process)
            yield handle
        finally:
            code = stop_ioc(process)
            assert code == 0, f"IOC exit code {code}:\n{handle.log()}"
