"""One consumer per data endpoint on a host: a lock file that a second consumer finds taken.

PUSH/PULL deals messages round-robin, so two consumers connected to one data endpoint would each
receive part of every scan and neither would report it complete (docs/stream-protocol.md).
A consumer takes the endpoint's lock before it connects; the lock is an ``flock`` on a file in
``$XDG_RUNTIME_DIR`` (else the temporary directory), released by the kernel when the process
ends, however it ends. It guards consumers on the same host; the publisher warns of more than
one consumer wherever they run.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from pathlib import Path
from types import TracebackType


class EndpointBusy(RuntimeError):
    """Another consumer holds the data endpoint's lock."""


def lock_path(endpoint: str, directory: Path | None = None) -> Path:
    """The lock file of ``endpoint`` (the endpoint hashed into a safe file name)."""
    base = directory
    if base is None:
        runtime = os.environ.get("XDG_RUNTIME_DIR", "")
        base = Path(runtime) if runtime and Path(runtime).is_dir() else Path(tempfile.gettempdir())
    digest = hashlib.sha256(endpoint.encode()).hexdigest()[:16]
    return base / f"talbot-consumer-{digest}.lock"


class ConsumerLock:
    """Holds the lock of one data endpoint while open (a context manager).

    ``acquire`` raises ``EndpointBusy`` naming the endpoint and the process id of the holder.
    """

    def __init__(self, endpoint: str, directory: Path | None = None) -> None:
        self.endpoint = endpoint
        self.path = lock_path(endpoint, directory)
        self._fd: int | None = None

    def acquire(self) -> ConsumerLock:
        """Take the lock, or EndpointBusy."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise EndpointBusy(
                f"another consumer (pid {holder}) follows {self.endpoint}: PUSH/PULL would "
                "deal it half of the frames; stop it, or connect to another endpoint (the "
                "relay serves several)"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return self

    def release(self) -> None:
        """Let the lock go (the file stays; the next consumer takes it)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> ConsumerLock:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
