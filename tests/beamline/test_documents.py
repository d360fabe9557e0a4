"""The embedded document store: one JSON-lines file per run, read back by kind and by stream."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.plans import count
from ophyd import Signal

from beamline.documents import DOCUMENTS_DIR, JsonlDocumentStore, read_run, run_paths


def _write_run(store: JsonlDocumentStore, uid: str, *, stop: bool = True) -> None:
    """A hand-made run: one event, one event page of two, a resource and a datum."""
    centre = np.array([1.0, 2.0])
    store("start", {"uid": uid, "time": 0.0, "shape": (2, 3), "centre": centre, "dir": Path("/d")})
    store("descriptor", {"uid": f"{uid}-d", "run_start": uid, "name": "primary"})
    store("resource", {"uid": f"{uid}-r", "run_start": uid, "root": "/", "resource_path": "s.h5"})
    store("datum", {"datum_id": f"{uid}-r/0", "resource": f"{uid}-r"})
    event = {"uid": f"{uid}-e0", "descriptor": f"{uid}-d", "seq_num": 1, "time": 1.0}
    store("event", {**event, "data": {"x": np.float64(1.5)}, "timestamps": {"x": 1.0}})
    store("event_page", {
        "uid": [f"{uid}-e1", f"{uid}-e2"], "descriptor": f"{uid}-d", "seq_num": [2, 3],
        "time": [2.0, 3.0], "data": {"x": [2.5, 3.5]}, "timestamps": {"x": [2.0, 3.0]},
    })  # fmt: skip
    if stop:
        store("stop", {"uid": f"{uid}-s", "run_start": uid, "exit_status": "success"})


def test_a_run_reads_back_by_kind_and_stream(tmp_path: Path) -> None:
    store = JsonlDocumentStore(tmp_path / DOCUMENTS_DIR)
    _write_run(store, "abc123")
    run = read_run(tmp_path)
    assert run.uid == "abc123"
    assert run.path == tmp_path / DOCUMENTS_DIR / "abc123.jsonl" == store.paths[0]
    assert (run.start["shape"], run.start["centre"], run.start["dir"]) == ([2, 3], [1.0, 2.0], "/d")
    assert run.stop is not None
    assert run.stop["exit_status"] == "success"
    assert run.streams() == ["primary"]
    table = run.table()
    assert list(table["seq_num"]) == [1, 2, 3]
    assert list(table["x"]) == [1.5, 2.5, 3.5]
    assert run.file_paths() == [Path("/s.h5")]
    assert run.stream_events("dark") == []


def test_runs_are_found_by_a_unique_uid_prefix(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no runs"):
        read_run(tmp_path)
    store = JsonlDocumentStore(tmp_path / DOCUMENTS_DIR)
    _write_run(store, "aa11")
    _write_run(store, "aa22")
    assert [p.stem for p in run_paths(tmp_path)] == ["aa11", "aa22"]
    assert read_run(tmp_path, "aa1").uid == "aa11"
    with pytest.raises(ValueError, match="matches 2 runs"):
        read_run(tmp_path, "aa")


def test_an_unfinished_run_keeps_its_documents_so_far(tmp_path: Path) -> None:
    store = JsonlDocumentStore(tmp_path / DOCUMENTS_DIR)
    _write_run(store, "cut", stop=False)
    store.close()
    run = read_run(tmp_path)
    assert run.stop is None
    assert len(run.events) == 3


def test_the_store_records_what_a_run_engine_emits(tmp_path: Path) -> None:
    RE = RunEngine({})
    RE.subscribe(JsonlDocumentStore(tmp_path / DOCUMENTS_DIR))
    signal = Signal(value=np.float32(2.0), name="sig")
    (uid,) = RE(count([signal], num=3))
    run = read_run(tmp_path, uid)
    assert run.stop is not None
    assert run.stop["exit_status"] == "success"
    assert list(run.table()["sig"]) == [2.0, 2.0, 2.0]
