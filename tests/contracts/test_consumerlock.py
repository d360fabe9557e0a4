"""One consumer per data endpoint: the lock a second consumer finds taken."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from contracts.consumerlock import ConsumerLock, EndpointBusy, lock_path


def test_a_second_lock_on_the_same_endpoint_is_refused_naming_the_holder(tmp_path: Path) -> None:
    endpoint = "tcp://127.0.0.1:5555"
    with ConsumerLock(endpoint, tmp_path):
        with pytest.raises(EndpointBusy, match=rf"another consumer \(pid {os.getpid()}\)"):
            ConsumerLock(endpoint, tmp_path).acquire()
        with ConsumerLock("tcp://127.0.0.1:5556", tmp_path):  # another endpoint: free
            pass
    with ConsumerLock(endpoint, tmp_path):  # released: the next one takes it
        pass


def test_the_lock_goes_with_the_process_however_it_ends(tmp_path: Path) -> None:
    endpoint = "tcp://127.0.0.1:7000"
    code = (
        "import os, sys; from pathlib import Path; from contracts.consumerlock import "
        f"ConsumerLock; ConsumerLock({endpoint!r}, Path({str(tmp_path)!r})).acquire(); "
        "os._exit(9)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 9
    with ConsumerLock(endpoint, tmp_path):  # the dead holder's lock is free
        pass


def test_the_lock_file_is_named_by_a_hash_and_never_followed_as_a_link(tmp_path: Path) -> None:
    path = lock_path("tcp://../../etc/passwd", tmp_path)
    assert path.parent == tmp_path
    assert path.name.startswith("talbot-consumer-")
    target = tmp_path / "elsewhere"
    path.symlink_to(target)
    with pytest.raises(OSError, match=r"link|Too many"):
        ConsumerLock("tcp://../../etc/passwd", tmp_path).acquire()
    assert not target.exists()
