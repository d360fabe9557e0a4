"""TalbotDetector (stock ophyd areaDetector classes) against the simulated IOC, under bluesky."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import epics
import h5py
import numpy as np
import pytest
from bluesky import RunEngine

from contracts.frames import ImageKey
from contracts.scanfile import DATA_PATH, FRAMES_GROUP
from devices import ScanTags, TalbotDetector
from tests.conftest import IocHandle


@pytest.fixture
def detector(sim_ioc: IocHandle, tmp_path: Path) -> Iterator[TalbotDetector]:
    det = TalbotDetector(sim_ioc.pv("detector"), name="det")
    det.hdf5.write_path_template = str(tmp_path)
    det.hdf5.reg_root = str(tmp_path)
    det.wait_for_connection(timeout=10.0)
    yield det
    det.unstage()


def test_every_pv_of_the_stock_classes_is_served(detector: TalbotDetector) -> None:
    names: set[str] = set()
    for walk in detector.walk_signals(include_lazy=True):
        sig = walk.item
        names.update(
            n for n in (getattr(sig, "pvname", None), getattr(sig, "setpoint_pvname", None)) if n
        )
    assert len(names) > 300
    values = epics.caget_many(sorted(names), connection_timeout=10.0, timeout=10.0)
    assert [n for n, v in zip(sorted(names), values, strict=True) if v is None] == []
    assert detector.hdf5.plugin_type.get().startswith("NDFileHDF5")
    assert detector.cam.image_mode.get(as_string=True) in ("Single", "Multiple", "Continuous")
    config = detector.read_configuration()
    assert config["det_cam_acquire_time"]["value"] > 0


def test_count_writes_frames_referenced_by_every_event(
    detector: TalbotDetector, sim_ioc: IocHandle
) -> None:
    tags = ScanTags(sim_ioc.pv("tags"), name="tags")
    tags.wait_for_connection(timeout=10.0)
    docs: list[tuple[str, dict[str, Any]]] = []
    RE = RunEngine({})
    RE.subscribe(lambda name, doc: docs.append((name, doc)))

    def plan() -> Any:
        @bpp.stage_decorator([detector])
        @bpp.run_decorator()
        def inner() -> Any:
            yield from bps.mv(tags.frame_type, "dark", tags.scan_uid, "devtest-uid")
            for step in range(3):
                yield from bps.mv(tags.step_index, step)
                yield from bps.trigger_and_read([detector])

        return (yield from inner())

    RE(plan())
    events = [doc for name, doc in docs if name == "event"]
    resources = [doc for name, doc in docs if name == "resource"]
    datums = [doc for name, doc in docs if name == "datum"]
    assert len(events) == 3
    assert len(resources) == 1
    assert len(datums) == 3
    assert resources[0]["spec"] == "AD_HDF5"
    assert [e["data"]["det_image"] for e in events] == [d["datum_id"] for d in datums]
    # point_number = the frame's index along /entry/data/data
    assert [d["datum_kwargs"] for d in datums] == [{"point_number": i} for i in range(3)]
    path = Path(resources[0]["root"]) / resources[0]["resource_path"]
    with h5py.File(path, "r") as f:  # closed at unstage; a plain h5py reader
        assert f[DATA_PATH].shape == (3, 32, 96)
        assert f["entry"].attrs["scan_uid"] == "devtest-uid"
        np.testing.assert_array_equal(f[FRAMES_GROUP]["step_index"][()], [0, 1, 2])
        np.testing.assert_array_equal(f[FRAMES_GROUP]["image_key"][()], [ImageKey.DARK] * 3)
    descriptor = next(doc for name, doc in docs if name == "descriptor")
    assert list(descriptor["data_keys"]["det_image"]["shape"]) == [1, 32, 96]
    assert descriptor["data_keys"]["det_image"]["dtype_numpy"] == "<u2"


def test_stage_primes_an_unprimed_plugin(detector: TalbotDetector) -> None:
    detector.prime()
    assert detector.hdf5.primed
    assert detector.hdf5.array_size.get() == (0, 32, 96)
