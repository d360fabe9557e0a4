"""Start, reach and stop the simulated beamline server from another process (tests, benchmarks,
the whole-system demo), each on its own loopback port.

Importing this module loads no Channel Access client: set ``client_environment(port)`` in
``os.environ`` before anything imports pyepics.
"""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


_ISSUED: set[int] = set()
_LOWEST_PORT = 20000


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (Linux; IANA's 49152 elsewhere)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 49152


def free_port() -> int:
    """A port free for both TCP and UDP on 127.0.0.1 (Channel Access uses both).

    Drawn at random *below* the kernel's ephemeral range and never twice in one process. A port
    the kernel hands out (``bind(0)``) can be handed out again, to any socket that binds port 0 or
    sends before binding (every Channel Access client's UDP search socket does), between this call
    and the server's bind; the server then fails with EADDRINUSE. Below the ephemeral range only
    an explicit bind can take it.
    """
    high = max(_ephemeral_low(), _LOWEST_PORT + 1000)
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randrange(_LOWEST_PORT, high)
        if port in _ISSUED:
            continue
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                tcp.bind(("127.0.0.1", port))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                udp.bind(("127.0.0.1", port))
        except OSError:
            continue
        _ISSUED.add(port)
        return port
    raise RuntimeError("no free loopback port found")


def client_environment(port: int) -> dict[str, str]:
    """Channel Access client variables that reach only the server on 127.0.0.1:``port``."""
    if not 0 < port < 65536:
        raise ValueError(f"port must be in 1..65535, got {port!r}")
    return {
        "EPICS_CA_ADDR_LIST": f"127.0.0.1:{port}",
        "EPICS_CA_AUTO_ADDR_LIST": "NO",
        "EPICS_CA_SERVER_PORT": str(port),
        "EPICS_CA_MAX_ARRAY_BYTES": str(64 * 2**20),
    }


def start_ioc(prefix: str, port: int, log_path: Path, *extra: str) -> subprocess.Popen[bytes]:
    """Start ``python -m sim.ioc`` on loopback, output to ``log_path`` (the caller waits for a PV
    or the ``ready:`` line and stops it with ``stop_ioc``)."""
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "sim.ioc", "--prefix", prefix, "--port", str(port), *extra],
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
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
    """SIGTERM the server and wait for it (kill after ``timeout_s``); returns its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise
    return int(process.returncode)
