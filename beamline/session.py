"""The RunEngine session of the Talbot beamline: devices, suspenders, document store, status.

:func:`make_session` assembles what a beamline's IPython profile would:

- a ``RunEngine`` with suspenders on the ring current (``SuspendFloor``: a beam dump suspends the
  scan, which rewinds to the checkpoint at the start of the current phase-stepping series and
  re-takes it with ``attempt + 1``) and on the shutter (closed while the plan wants it open);
- every run's documents in an embedded document store, one JSON-lines file per run under
  ``<data_dir>/documents/`` (no server); a Tiled server too when ``tiled_uri`` is given
  (``bluesky-tiled-plugins`` ``TiledWriter``);
- the operator status PVs (state, progress, frames, elapsed, ETA, current angle, message) and an
  optional tqdm progress bar with ETA;
- :func:`shell_namespace` for ``talbot shell``; :func:`read_run` reads a finished run back.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np
from bluesky import RunEngine
from bluesky.suspenders import SuspenderBase, SuspendFloor
from bluesky.utils import Msg, MsgGenerator

from contracts.profile import ConfigError, Profile, resolve_profile
from contracts.pvnames import PVNames
from devices import Interferometer, Shutter, TalbotDetector

#: Sub-directory of the data directory holding one ``<run uid>.jsonl`` file per run.
DOCUMENTS_DIR = "documents"


# ------------------------------------------------------------------------------------------------
# Embedded document store


def _to_json(obj: Any) -> Any:
    """json.dumps ``default``: numpy scalars and arrays, tuples, paths."""
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

    def _file_for(self, name: str, doc: Mapping[str, Any]) -> IO[str] | None:
        if name == "start":
            path = self.directory / f"{doc['uid']}.jsonl"
            handle = path.open("x", encoding="utf-8")
            self._files[doc["uid"]] = handle
            self.paths.append(path)
            return handle
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
    start: dict[str, Any] | None = None
    stop = None
    descriptors: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    resources: list[dict[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            item = json.loads(line)
            name, doc = item["name"], item["doc"]
            if name == "start":
                start = doc
            elif name == "stop":
                stop = doc
            elif name == "descriptor":
                descriptors.append(doc)
            elif name == "event":
                events.append(doc)
            elif name == "event_page":
                events.extend(_unpack_event_page(doc))
            elif name in ("resource", "stream_resource"):
                resources.append(doc)
    if start is None:
        raise ValueError(f"{path} has no start document")
    return RunRecord(path, start, stop, descriptors, events, resources, Path(data_dir))


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


# ------------------------------------------------------------------------------------------------
# Operator status and progress


class ScanStatusReporter:
    """A bluesky callback that keeps the operator status PVs (and a progress bar) current.

    Progress counts *distinct* frames (frame type, angle, series, step from the tags in the
    event), so a re-taken series does not overshoot; the ETA is elapsed x remaining / done.
    ``status`` is the ``OperatorStatus`` device or None (progress bar only). The per-frame PVs
    (frames done, progress, elapsed, ETA, angle) are written at most every ``min_interval_s``
    and at the last frame: five puts per frame cost a 20 frames/s scan ~1 ms a frame, and
    nobody reads a status display faster.
    """

    def __init__(
        self,
        status: Any | None,
        *,
        rotation_key: str | None = None,
        tags_prefix: str | None = None,
        progress_bar: bool = False,
        clock: Callable[[], float] = time.monotonic,
        min_interval_s: float = 0.25,
    ) -> None:
        if not (math.isfinite(min_interval_s) and min_interval_s >= 0):
            raise ValueError(f"min_interval_s must be >= 0, got {min_interval_s!r}")
        self.status = status
        self.min_interval_s = min_interval_s
        self._last_put = -math.inf
        self.rotation_key = rotation_key
        self.tags_prefix = tags_prefix
        self.progress_bar = progress_bar
        self._clock = clock
        self._bar: Any = None
        self.total = 0
        self.events = 0
        self.done: set[tuple[Any, ...]] = set()
        self.t0 = 0.0
        self.eta_s = 0.0
        self.angle_deg: float | None = None

    def _put(self, attr: str, value: Any) -> None:
        if self.status is None:
            return
        with contextlib.suppress(Exception):  # a status PV must never stop a scan
            getattr(self.status, attr).put(value, wait=False)

    def set_state(self, state: str, message: str | None = None) -> None:
        """Write the State PV (Idle, Running, Paused, Suspended, Done, Failed, Aborted)."""
        self._put("state", state)
        if message is not None:
            self._put("message", message[:39])

    def __call__(self, name: str, doc: Mapping[str, Any]) -> None:
        getattr(self, f"_{name}", lambda doc: None)(doc)

    def _start(self, doc: Mapping[str, Any]) -> None:
        self.total = int(doc.get("frames_total") or doc.get("num_points") or 0)
        self.events = 0
        self.done = set()
        self.t0 = self._clock()
        self._last_put = -math.inf
        self.eta_s = 0.0
        self._put("frames_total", self.total)
        self._put("frames_done", 0)
        self._put("progress", 0.0)
        self._put("elapsed", 0.0)
        self._put("eta", 0.0)
        self.set_state("Running", f"{doc.get('plan_name', 'scan')} {str(doc['uid'])[:8]}")
        if self.progress_bar:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total or None, unit="frame", desc="scan")

    def _frame_key(self, data: Mapping[str, Any]) -> tuple[Any, ...] | None:
        if self.tags_prefix is None:
            return None
        fields = ("frame_type", "angle_index", "series_index", "step_index")
        try:
            return tuple(data[f"{self.tags_prefix}_{f}"] for f in fields)
        except KeyError:
            return None

    def _event(self, doc: Mapping[str, Any]) -> None:
        self.events += 1
        data = doc.get("data", {})
        key = self._frame_key(data)
        before = len(self.done)
        self.done.add(key if key is not None else ("event", self.events))
        # darks share one key per frame number: count them by event
        if key is not None and key[0] == "dark" and len(self.done) == before:
            self.done.add(("dark-event", self.events))
        n = len(self.done)
        if self.rotation_key and self.rotation_key in data:
            self.angle_deg = float(data[self.rotation_key])
        now = self._clock()
        elapsed = now - self.t0
        total = max(self.total, n)
        self.eta_s = elapsed * (total - n) / n if n else 0.0
        if self._bar is not None:
            self._bar.update(n - self._bar.n)
        if now - self._last_put < self.min_interval_s and n < total:
            return
        self._last_put = now
        if self.angle_deg is not None:
            self._put("angle", self.angle_deg)
        self._put("frames_done", n)
        self._put("progress", 100.0 * n / total if total else 0.0)
        self._put("elapsed", elapsed)
        self._put("eta", self.eta_s)

    def _stop(self, doc: Mapping[str, Any]) -> None:
        status = doc.get("exit_status", "success")
        state = {"success": "Done", "abort": "Aborted"}.get(status, "Failed")
        self._put("eta", 0.0)
        self.set_state(state, doc.get("reason") or f"run {status}")
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def state_hook(self, new: str, old: str) -> None:
        """RunEngine ``state_hook``: mirror paused / idle in the State PV."""
        if new == "paused":
            self.set_state("Paused", "paused: RE.resume() or RE.stop()")
        elif new == "running" and old == "paused":
            self.set_state("Running")


# ------------------------------------------------------------------------------------------------
# Suspenders


class ConsistentSuspender(SuspenderBase):
    """A suspender whose ``get_futures`` reads the tripped state under its lock.

    bluesky's reads ``tripped`` before it takes the lock: a resume that lands in between clears
    the suspender and its event, and ``get_futures`` then makes a fresh event that no later
    monitor update sets. The RunEngine, starting a plan, waits on it for ever (seen in CI as a
    hang with an empty justification). Here the resume waits for the lock, then sets the event
    that ``get_futures`` handed out.
    """

    def get_futures(self) -> tuple[list[Any], str]:
        """The futures to wait on and why, consistent with the tripped state."""
        with self._lock:
            if not self.tripped:
                return [], ""
            make_event = getattr(self, "_SuspenderBase__make_event")  # noqa: B009 (name-mangled)
            return [make_event().wait], self._get_justification()


class SuspendBeamFloor(ConsistentSuspender, SuspendFloor):
    """``SuspendFloor`` on the ring current, with :class:`ConsistentSuspender`'s futures."""


class SuspendShutterClosed(ConsistentSuspender):
    """Suspend while the shutter is closed although the plan last commanded it open.

    The plan's own closing (dark series) does not trip it; a closure by the PSS, an operator or a
    fault does, and the scan resumes (re-taking the series) when the shutter is open again.
    Feed every message to :meth:`watch` (the session does it through ``RE.msg_hook``).
    """

    def __init__(self, shutter: Shutter, **kwargs: Any) -> None:
        super().__init__(shutter.state, **kwargs)
        self.shutter = shutter
        self.wanted_open = False
        self._commanded_at = -math.inf  # when the plan last commanded the shutter [unix s]
        self._value_time: float | None = None  # the IOC's timestamp of the value being judged

    def watch(self, msg: Msg) -> None:
        """Track the plan's shutter commands (and forget them at the end of a run)."""
        if msg.command == "set" and msg.obj is self.shutter and msg.args:
            self.wanted_open = str(msg.args[0]).lower() == "open"
            self._commanded_at = time.time()
        elif msg.command == "close_run":
            self.wanted_open = False

    def __call__(self, value: Any, **kwargs: Any) -> None:
        """Monitor callback: judge ``value`` together with its timestamp."""
        stamp = kwargs.get("timestamp")
        self._value_time = float(stamp) if stamp is not None else None
        super().__call__(value, **kwargs)

    def _should_suspend(self, value: Any) -> bool:
        if not (self.wanted_open and str(value) == "Closed"):
            return False
        # A "Closed" the IOC stamped before the plan commanded "open" is the plan's own earlier
        # closing (a dark series), delivered late by a busy monitor thread: not a closure.
        return self._value_time is None or self._value_time >= self._commanded_at

    def _should_resume(self, value: Any) -> bool:
        return str(value) == "Open" or not self.wanted_open

    def _get_justification(self) -> str:
        if not self.tripped:
            return ""
        return "the shutter closed while the scan needs beam"


# ------------------------------------------------------------------------------------------------
# The session


@dataclass
class Session:
    """A configured RunEngine with the beamline's devices and where its data goes."""

    RE: RunEngine
    profile: Profile
    pvs: PVNames
    ifm: Interferometer
    detectors: list[Any]
    data_dir: Path
    store: JsonlDocumentStore
    reporter: ScanStatusReporter
    suspenders: list[SuspenderBase] = field(default_factory=list)
    msg_hooks: list[Callable[[Msg], None]] = field(default_factory=list)
    #: Closed with the session (the Tiled client's connections, when a Tiled server is used).
    closers: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        """Remove the suspenders, close the document store, the Tiled connection and disconnect
        the devices."""
        for suspender in self.suspenders:
            self.RE.remove_suspender(suspender)
        self.store.close()
        for closer in self.closers:
            closer()
        for det in self.detectors:
            if hasattr(det, "destroy"):
                det.destroy()
        self.ifm.destroy()

    def ct(self, **kwargs: Any) -> MsgGenerator[Any]:
        """``phase_stepping_ct`` with this session's devices, instrument and plan defaults
        (keyword arguments override the plan)."""
        from plans import phase_stepping_ct

        kwargs.setdefault("instrument", self.profile.instrument)
        kwargs.setdefault("plan", self.profile.plan)
        return phase_stepping_ct(self.ifm, self.detectors, **kwargs)


def _make_detector(pvs: PVNames, data_dir: Path) -> TalbotDetector:
    """The area detector, writing its scan files under ``data_dir``."""
    det = TalbotDetector(pvs.full("detector"), name="det")
    det.hdf5.write_path_template = f"{data_dir}/%Y/%m/%d/"
    return det


def make_session(
    profile: str | Path | None = None,
    data_dir: str | Path = "data",
    *,
    pvs: PVNames | None = None,
    detectors: list[Any] | None = None,
    connect_timeout_s: float = 10.0,
    beam_floor_ma: float = 10.0,
    beam_resume_ma: float | None = None,
    suspend_sleep_s: float = 5.0,
    progress_bar: bool = False,
    tiled_uri: str | None = None,
    tiled_api_key: str | None = None,
    run_engine: RunEngine | None = None,
) -> Session:
    """Build the beamline session.

    Parameters
    ----------
    profile
        ``"tiny"`` / ``"full"`` (simulated beamline names) or a TOML profile (its
        ``[instrument.pvs]`` table names the real IOCs' PVs); None = ``tiny``.
    data_dir
        Where scan files and the document store (``documents/``) go; created if missing.
    pvs
        PV names overriding the profile's (e.g. a test prefix).
    detectors
        Detector devices to use instead of the area detector of the profile.
    beam_floor_ma, beam_resume_ma, suspend_sleep_s
        Ring-current suspender: suspend below ``beam_floor_ma`` [mA], resume above
        ``beam_resume_ma`` [mA] (default: the floor) after ``suspend_sleep_s`` [s] more.
    progress_bar
        Show a tqdm progress bar with ETA (interactive sessions).
    tiled_uri, tiled_api_key
        Also write every run to this Tiled server (needs ``bluesky-tiled-plugins``).
    run_engine
        A RunEngine to configure instead of a new one.
    """
    if not (math.isfinite(beam_floor_ma) and beam_floor_ma > 0):
        raise ValueError(f"beam_floor_ma must be > 0, got {beam_floor_ma!r}")
    resume = beam_floor_ma if beam_resume_ma is None else beam_resume_ma
    if not (math.isfinite(resume) and resume >= beam_floor_ma):
        raise ValueError(f"beam_resume_ma must be >= beam_floor_ma, got {beam_resume_ma!r}")
    if not (math.isfinite(suspend_sleep_s) and suspend_sleep_s >= 0):
        raise ValueError(f"suspend_sleep_s must be >= 0, got {suspend_sleep_s!r}")
    if not connect_timeout_s > 0:
        raise ValueError(f"connect_timeout_s must be > 0, got {connect_timeout_s!r}")
    prof = resolve_profile(profile)
    names = pvs if pvs is not None else prof.instrument.pvs
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)

    ifm = Interferometer(pvs=names, name="ifm")
    ifm.wait_for_connection(timeout=connect_timeout_s)
    ifm.g2.x.period.put(prof.instrument.geometry.g2_pitch_m * 1e6)
    if prof.plan is not None:  # a CT sets it from its own plan; this is for other plans
        out_mm = prof.plan.sample_out_offset_mm(prof.instrument.field_of_view_m[1])
        ifm.sample.out_position.put(ifm.sample.in_position.get() + out_mm)
    dets = list(detectors) if detectors is not None else []
    if detectors is None:
        det = _make_detector(names, data)
        det.wait_for_connection(timeout=connect_timeout_s)
        # Every event stream of a run reads the detector's configuration for its descriptor;
        # ophyd connects those PVs on first use (~0.15 s), so the first scan's first frame
        # would wait for that: connect them now. (The image's data key is made at staging.)
        det.describe_configuration()
        det.read_configuration()
        dets.append(det)

    RE = run_engine if run_engine is not None else RunEngine({})
    RE.md.update({"beamline": "talbot", "profile": prof.name, "data_dir": str(data)})
    store = JsonlDocumentStore(data / DOCUMENTS_DIR)
    RE.subscribe(store)
    reporter = ScanStatusReporter(
        ifm.status,
        rotation_key=ifm.rotation.name,
        tags_prefix=ifm.tags.name,
        progress_bar=progress_bar,
    )
    RE.subscribe(reporter)
    RE.state_hook = reporter.state_hook  # type: ignore[assignment]

    def on_suspend(reason: str) -> Callable[[], MsgGenerator[None]]:
        def plan() -> MsgGenerator[None]:
            reporter.set_state("Suspended", reason)
            yield Msg("null")

        return plan

    def on_resume() -> MsgGenerator[None]:
        reporter.set_state("Running", "resumed: re-taking the series")
        yield Msg("null")

    beam = SuspendBeamFloor(
        ifm.beam.current,
        beam_floor_ma,
        resume_thresh=resume,
        sleep=suspend_sleep_s,
        pre_plan=on_suspend("beam dump: waiting for beam"),
        post_plan=on_resume,
        tripped_message=f"ring current below {beam_floor_ma} mA",
    )
    shutter = SuspendShutterClosed(
        ifm.shutter,
        sleep=suspend_sleep_s,
        pre_plan=on_suspend("shutter closed: waiting"),
        post_plan=on_resume,
    )
    for suspender in (beam, shutter):
        RE.install_suspender(suspender)
    session = Session(
        RE=RE,
        profile=prof,
        pvs=names,
        ifm=ifm,
        detectors=dets,
        data_dir=data,
        store=store,
        reporter=reporter,
        suspenders=[beam, shutter],
        msg_hooks=[shutter.watch],
    )

    def msg_hook(msg: Msg) -> None:
        for hook in session.msg_hooks:
            hook(msg)

    RE.msg_hook = msg_hook  # type: ignore[assignment]
    if tiled_uri is not None:
        writer, close_tiled = _tiled_writer(tiled_uri, tiled_api_key)
        RE.subscribe(writer)
        session.closers.append(close_tiled)
    reporter.set_state("Idle", "session ready")
    return session


def _tiled_writer(uri: str, api_key: str | None) -> tuple[Any, Callable[[], None]]:
    """A ``bluesky_tiled_plugins.TiledWriter`` for the Tiled server at ``uri`` (the key in the
    URI or ``api_key``), and the function that closes its connection."""
    try:
        from bluesky_tiled_plugins import TiledWriter
        from tiled.client import from_uri
    except ImportError as exc:
        raise ConfigError(
            f"tiled_uri needs bluesky-tiled-plugins and tiled[client] installed ({exc})"
        ) from exc
    client = from_uri(uri, api_key=api_key)
    return TiledWriter(client), client.context.close


def shell_namespace(session: Session) -> dict[str, Any]:
    """Names for an interactive ``talbot shell`` (IPython): RE, devices, plans, configuration."""
    import bluesky.plan_stubs as bps
    import bluesky.plans as bp
    import bluesky.preprocessors as bpp

    import plans

    ns: dict[str, Any] = {
        "session": session,
        "RE": session.RE,
        "ifm": session.ifm,
        "dets": session.detectors,
        "det": session.detectors[0] if session.detectors else None,
        "profile": session.profile,
        "instrument": session.profile.instrument,
        "pvs": session.pvs,
        "data_dir": session.data_dir,
        "read_run": lambda uid=None: read_run(session.data_dir, uid),
        "plans": plans,
        "bp": bp,
        "bps": bps,
        "bpp": bpp,
    }
    for name in plans.__all__:
        ns.setdefault(name, getattr(plans, name))
    return ns
