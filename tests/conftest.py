"""Shared fixtures: one simulated-beamline IOC per test session.

The Channel Access client environment is set here at import time, before anything loads pyepics'
libca: the server listens on a free loopback port and every client searches only there.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from contracts.pvnames import SIM_PVNAMES, PVNames
from sim.ioc.launch import client_environment, free_port, start_ioc, stop_ioc, wait_for_pv

IOC_PORT = free_port()
IOC_PREFIX = f"TT{uuid.uuid4().hex[:8].upper()}:"

os.environ.update(client_environment(IOC_PORT))


@dataclass(frozen=True)
class IocHandle:
    """A running simulated-beamline server."""

    prefix: str
    port: int
    pvs: PVNames
    process: subprocess.Popen[bytes]
    log_path: Path

    def pv(self, entry: str, suffix: str = "") -> str:
        """Full PV name of a ``contracts.pvnames`` entry plus suffix."""
        return self.pvs.full(entry, suffix)

    def log(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(errors="replace")


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
