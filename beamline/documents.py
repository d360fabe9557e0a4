"""The embedded document store: every run's bluesky documents in one JSON-lines file, read back.

:class:`JsonlDocumentStore` is a RunEngine callback writing ``<directory>/<start uid>.jsonl``, one
``{"name": ..., "doc": ...}`` line per document (no server, no database); :func:`read_run` reads
a finished (or interrupted) run back as a :class:`RunRecord`. The session keeps the files under
``<data_dir>/documents/`` (:data:`DOCUMENTS_DIR`).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

#: Sub-directory of the data directory holding one ``<run uid>.jsonl`` file per run.
DOCUMENTS_DIR = "documents"


def _to_json(obj: Any) -> Any:
    """json.dumps ``default``: numpy scalars and arrays, paths, sets."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


class JsonlDocumentStore:
    """A bluesky callback that writes every run to ``<directory>/<start uid>.jsonl``.

    One line per document, ``{"name": ..., "doc": ...}``, flushed as it comes, so a crash or a
    power cut loses at most the line being written. No server, no database.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, IO[str]] = {}
        self._run_of_descriptor: dict[str, str] = {}
        self._run_of_resource: dict[str, str] = {}
        self.paths: list[Path] = []

    def _open_run(self, doc: Mapping[str, Any]) -> IO[str]:
        path = self.directory / f"{doc['uid']}.jsonl"
        handle = path.open("x", encoding="utf-8")
        self._files[doc["uid"]] = handle
        self.paths.append(path)
        return handle

    def _run_of(self, name: str, doc: Mapping[str, Any]) -> str | None:
        """The start uid of the run ``doc`` belongs to (None where it cannot be told)."""
        run: str | None
        if name in ("stop", "descriptor", "resource", "stream_resource"):
            run = doc.get("run_start")
            if name == "descriptor":
                self._run_of_descriptor[doc["uid"]] = str(run)
            elif name in ("resource", "stream_resource"):
                self._run_of_resource[doc["uid"]] = str(run)
        elif name in ("event", "event_page"):
            run = self._run_of_descriptor.get(doc["descriptor"])
        elif name in ("datum", "datum_page", "stream_datum"):
            key = doc.get("resource") or doc.get("stream_resource")
            run = self._run_of_resource.get(str(key))
        else:
            run = None
        if run is None and len(self._files) == 1:
            run = next(iter(self._files))
        return run

    def _file_for(self, name: str, doc: Mapping[str, Any]) -> IO[str] | None:
        if name == "start":
            return self._open_run(doc)
        run = self._run_of(name, doc)
        return self._files.get(str(run)) if run is not None else None

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        handle = self._file_for(name, doc)
        if handle is None:
            return
        handle.write(json.dumps({"name": name, "doc": doc}, default=_to_json) + "\n")
        handle.flush()
        if name == "stop":
            handle.close()
            self._files.pop(str(doc["run_start"]), None)

    def close(self) -> None:
        """Close the files of unfinished runs (their documents so far stay)."""
        for handle in self._files.values():
            handle.close()
        self._files.clear()


@dataclass
class RunRecord:
    """A run read back from the document store: its documents, by kind."""

    path: Path
    start: dict[str, Any]
    stop: dict[str, Any] | None
    descriptors: list[dict[str, Any]]
    events: list[dict[str, Any]]
    resources: list[dict[str, Any]]
    data_dir: Path

    @property
    def uid(self) -> str:
        """The run's start uid (= scan uid)."""
        return str(self.start["uid"])

    def streams(self) -> list[str]:
        """Event stream names in the run."""
        return sorted({d.get("name", "primary") for d in self.descriptors})

    def stream_events(self, stream: str = "primary") -> list[dict[str, Any]]:
        """The events of one stream in acquisition order (re-takes included, in order)."""
        ids = {d["uid"] for d in self.descriptors if d.get("name", "primary") == stream}
        return [e for e in self.events if e["descriptor"] in ids]

    def table(self, stream: str = "primary") -> dict[str, np.ndarray]:
        """Column name -> array of the stream's event data (plus ``time`` and ``seq_num``)."""
        events = self.stream_events(stream)
        out: dict[str, np.ndarray] = {
            "time": np.array([e["time"] for e in events], dtype=np.float64),
            "seq_num": np.array([e["seq_num"] for e in events], dtype=np.int64),
        }
        keys = sorted({k for e in events for k in e["data"]})
        for key in keys:
            out[key] = np.array([e["data"].get(key) for e in events])
        return out

    def file_paths(self) -> list[Path]:
        """Data files the detector wrote (from the resource documents), absolute paths."""
        out: list[Path] = []
        for res in self.resources:
            rel = res.get("resource_path") or res.get("uri", "")
            root = res.get("root", "")
            path = Path(root) / str(rel).removeprefix("file://localhost")
            if not path.is_absolute():
                path = self.data_dir / path
            if path not in out:
                out.append(path)
        return out


def run_paths(data_dir: str | Path) -> list[Path]:
    """Document files of every run in ``data_dir``, oldest first."""
    folder = Path(data_dir) / DOCUMENTS_DIR
    return sorted(folder.glob("*.jsonl"), key=lambda p: (p.stat().st_mtime, p.name))


def read_run(data_dir: str | Path, uid: str | None = None) -> RunRecord:
    """Read a run back from the document store of ``data_dir`` (the latest when ``uid`` is None;
    a unique uid prefix is enough)."""
    paths = run_paths(data_dir)
    if uid is not None:
        paths = [p for p in paths if p.stem.startswith(uid)]
        if len(paths) != 1:
            raise ValueError(f"uid {uid!r} matches {len(paths)} runs in {data_dir}")
    if not paths:
        raise ValueError(f"no runs in {Path(data_dir) / DOCUMENTS_DIR}")
    path = paths[-1]
    docs = _RunDocuments()
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                item = json.loads(line)
                docs.add(item["name"], item["doc"])
    if docs.start is None:
        raise ValueError(f"{path} has no start document")
    return RunRecord(
        path, docs.start, docs.stop, docs.descriptors, docs.events, docs.resources, Path(data_dir)
    )


@dataclass
class _RunDocuments:
    """A run's documents as :func:`read_run` collects them, line by line."""

    start: dict[str, Any] | None = None
    stop: dict[str, Any] | None = None
    descriptors: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    resources: list[dict[str, Any]] = field(default_factory=list)

    def add(self, name: str, doc: dict[str, Any]) -> None:
        """File one document by its kind (datums and unknown kinds are skipped)."""
        if name == "start":
            self.start = doc
        elif name == "stop":
            self.stop = doc
        elif name == "descriptor":
            self.descriptors.append(doc)
        elif name == "event":
            self.events.append(doc)
        elif name == "event_page":
            self.events.extend(_unpack_event_page(doc))
        elif name in ("resource", "stream_resource"):
            self.resources.append(doc)


def _unpack_event_page(page: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for i, uid in enumerate(page["uid"]):
        yield {
            "uid": uid,
            "descriptor": page["descriptor"],
            "seq_num": page["seq_num"][i],
            "time": page["time"][i],
            "data": {k: v[i] for k, v in page["data"].items()},
            "timestamps": {k: v[i] for k, v in page["timestamps"].items()},
        }
