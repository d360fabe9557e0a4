"""Replay: a recorded scan published through the frame stream reconstructs to the offline volume."""

from __future__ import annotations

import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from beamline.stream_cli import main as stream_main
from contracts.sockets import FramePublisher, FrameReceiver
from recon.offline import reconstruct_file
from recon.streaming import StreamingReconstructor
from sim.replay import replay
from tests.recon.scanfiles import Recorded, shared_recorded, shared_scan_file

UNITS = {"delta": "1", "mu": "1/m", "darkfield": "1/m"}


@pytest.fixture(scope="module")
def recorded() -> Recorded:
    return shared_recorded()


@pytest.fixture(scope="module")
def scan_file() -> Path:
    return shared_scan_file()


def test_replay_reconstructs_to_the_offline_volume(
    recorded: Recorded, scan_file: Path, tmp_path: Path
) -> None:
    offline, _ = reconstruct_file(scan_file)
    pub = FramePublisher(frame_bytes=recorded.frame_bytes)
    rx = FrameReceiver(pub.endpoint, frame_bytes=recorded.frame_bytes)
    sent: list[int] = []
    thread = threading.Thread(target=lambda: sent.append(replay(scan_file, pub).frames_sent))
    thread.start()
    try:
        results = StreamingReconstructor(out=tmp_path).run(rx, idle_timeout_s=60)
    finally:
        thread.join()
        pub.close()
        rx.close()
    (result,) = results
    n = len(recorded.rows)
    assert sent == [n]
    stats = result.stats
    assert (stats.frames, stats.frames_sent, stats.lost, stats.duplicates) == (n, n, [], 0)
    assert stats.malformed == 0
    assert stats.superseded == recorded.plan.steps  # the beam-dump attempt
    assert stats.projections == recorded.plan.angles + 1  # + the re-take
    assert result.volumes is not None
    for name in UNITS:
        got, want = getattr(result.volumes, name), getattr(offline, name)
        assert got.shape == want.shape == (32, 96, 96)
        scale = float(np.abs(want).max())
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)
    # physical sanity: delta of the bone rod matches the phantom's ground truth
    truth = recorded.scan.phantom.voxelize(offline.delta.shape, offline.voxel_size_m)["delta"]
    rod = truth > 2e-6
    assert np.median(result.volumes.delta[rod]) == pytest.approx(np.median(truth[rod]), rel=0.03)
    assert result.directory == tmp_path / recorded.scan_uid  # the scan's own directory
    with h5py.File(result.directory / "recon.h5") as f:
        for name, units in UNITS.items():
            assert f[name].dtype == np.float32
            assert f[name].attrs["units"] == units
            assert f[name].attrs["voxel_size_m"] == pytest.approx(0.5e-6)
    assert (result.directory / "slices.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_reconstruct_command_writes_the_offline_volume(scan_file: Path, tmp_path: Path) -> None:
    assert stream_main(["reconstruct", str(scan_file), "--out", str(tmp_path)]) == 0
    offline, _ = reconstruct_file(scan_file)
    with h5py.File(tmp_path / "recon.h5") as f:
        np.testing.assert_array_equal(f["delta"][...], offline.delta)
        assert f["projections/dphi"].shape == (24, 32, 96)


def test_replay_rejects_a_bad_rate(scan_file: Path) -> None:
    with FramePublisher() as pub, pytest.raises(ValueError, match="rate_hz"):
        replay(scan_file, pub, rate_hz=0.0)


def test_reconstruct_command_names_a_missing_file(tmp_path: Path) -> None:
    code = stream_main(["reconstruct", str(tmp_path / "nope.h5"), "--out", str(tmp_path)])
    assert code == 2


@pytest.mark.parametrize("value", ["1024x1024", "axbxc", "0x96x10"])
def test_recon_command_refuses_a_bad_reserve(value: str, tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        stream_main(["recon", "--reserve", value, "--out", str(tmp_path)])
    assert exc.value.code == 2
