"""The RunEngine session of the Talbot beamline: devices, suspenders, document store, status.

:func:`make_session` assembles what a beamline's IPython profile would:

- a ``RunEngine`` with suspenders on the ring current and on the shutter
  (:mod:`beamline.suspenders`): a beam dump, or a shutter closed while the plan wants it open,
  suspends the scan, which rewinds to the checkpoint at the start of the current phase-stepping
  series and re-takes it with ``attempt + 1``;
- every run's documents in the embedded document store (:mod:`beamline.documents`), one JSON-lines
  file per run under ``<data_dir>/documents/``; a Tiled server too when ``tiled_uri`` is given
  (``bluesky-tiled-plugins`` ``TiledWriter``);
- the operator status PVs and an optional tqdm progress bar with ETA (:mod:`beamline.status`);
- :func:`shell_namespace` for ``talbot shell``; :func:`read_run` reads a finished run back.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluesky import RunEngine
from bluesky.suspenders import SuspenderBase
from bluesky.utils import Msg, MsgGenerator

from beamline.documents import DOCUMENTS_DIR, JsonlDocumentStore, read_run
from beamline.status import ScanStatusReporter
from beamline.suspenders import SuspendBeamFloor, SuspendShutterClosed
from contracts.profile import ConfigError, Profile, resolve_profile
from contracts.pvnames import PVNames
from devices import Interferometer, TalbotDetector

__all__ = ["Session", "make_session", "read_run", "shell_namespace"]


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
    #: Called with every message the RunEngine processes (``RE.msg_hook`` is :meth:`dispatch_msg`).
    msg_hooks: list[Callable[[Msg], None]] = field(default_factory=list)
    #: Closed with the session (the Tiled client's connections, when a Tiled server is used).
    closers: list[Callable[[], None]] = field(default_factory=list)

    def dispatch_msg(self, msg: Msg) -> None:
        """RunEngine ``msg_hook``: hand ``msg`` to every hook in :attr:`msg_hooks`."""
        for hook in self.msg_hooks:
            hook(msg)

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
    resume = _checked_resume_ma(beam_floor_ma, beam_resume_ma, suspend_sleep_s, connect_timeout_s)
    prof = resolve_profile(profile)
    names = pvs if pvs is not None else prof.instrument.pvs
    if names != prof.instrument.pvs:  # the instrument the documents record is the one served
        instrument = prof.instrument.model_copy(update={"pvs": names})
        prof = prof.model_copy(update={"instrument": instrument})
    data = Path(data_dir).resolve()
    data.mkdir(parents=True, exist_ok=True)
    ifm = _connect_interferometer(prof, names, connect_timeout_s)
    dets = _connect_detectors(detectors, names, data, connect_timeout_s)
    RE = run_engine if run_engine is not None else RunEngine({})
    RE.md.update({"beamline": "talbot", "profile": prof.name, "data_dir": str(data)})
    store, reporter = _subscribe_store_and_status(RE, ifm, data, progress_bar)
    beam, shutter = _install_suspenders(RE, ifm, reporter, beam_floor_ma, resume, suspend_sleep_s)
    session = Session(
        RE=RE, profile=prof, pvs=names, ifm=ifm, detectors=dets, data_dir=data, store=store,
        reporter=reporter, suspenders=[beam, shutter], msg_hooks=[shutter.watch],
    )  # fmt: skip
    RE.msg_hook = session.dispatch_msg  # type: ignore[assignment]
    if tiled_uri is not None:
        writer, close_tiled = _tiled_writer(tiled_uri, tiled_api_key)
        RE.subscribe(writer)
        session.closers.append(close_tiled)
    reporter.set_state("Idle", "session ready")
    return session


def _checked_resume_ma(
    beam_floor_ma: float,
    beam_resume_ma: float | None,
    suspend_sleep_s: float,
    connect_timeout_s: float,
) -> float:
    """Refuse bad :func:`make_session` numbers, naming the parameter; the resume threshold [mA]."""
    if not (math.isfinite(beam_floor_ma) and beam_floor_ma > 0):
        raise ValueError(f"beam_floor_ma must be > 0, got {beam_floor_ma!r}")
    resume = beam_floor_ma if beam_resume_ma is None else beam_resume_ma
    if not (math.isfinite(resume) and resume >= beam_floor_ma):
        raise ValueError(f"beam_resume_ma must be >= beam_floor_ma, got {beam_resume_ma!r}")
    if not (math.isfinite(suspend_sleep_s) and suspend_sleep_s >= 0):
        raise ValueError(f"suspend_sleep_s must be >= 0, got {suspend_sleep_s!r}")
    if not connect_timeout_s > 0:
        raise ValueError(f"connect_timeout_s must be > 0, got {connect_timeout_s!r}")
    return resume


def _connect_interferometer(prof: Profile, names: PVNames, timeout_s: float) -> Interferometer:
    """The interferometer, connected, with the profile's G2 period and sample-out position."""
    ifm = Interferometer(pvs=names, name="ifm")
    ifm.wait_for_connection(timeout=timeout_s)
    ifm.g2.x.period.put(prof.instrument.geometry.g2_pitch_m * 1e6)
    if prof.plan is not None:  # a CT sets it from its own plan; this is for other plans
        out_mm = prof.plan.sample_out_offset_mm(prof.instrument.field_of_view_m[1])
        ifm.sample.out_position.put(ifm.sample.in_position.get() + out_mm)
    return ifm


def _connect_detectors(
    detectors: list[Any] | None, names: PVNames, data_dir: Path, timeout_s: float
) -> list[Any]:
    """``detectors`` as given, or the profile's area detector, connected, writing under
    ``data_dir``."""
    if detectors is not None:
        return list(detectors)
    det = _make_detector(names, data_dir)
    det.wait_for_connection(timeout=timeout_s)
    # Every event stream of a run reads the detector's configuration for its descriptor;
    # ophyd connects those PVs on first use (~0.15 s), so the first scan's first frame
    # would wait for that: connect them now. (The image's data key is made at staging.)
    det.describe_configuration()
    det.read_configuration()
    return [det]


def _make_detector(pvs: PVNames, data_dir: Path) -> TalbotDetector:
    """The area detector, writing its scan files under ``data_dir``."""
    det = TalbotDetector(pvs.full("detector"), name="det")
    det.hdf5.write_path_template = f"{data_dir}/%Y/%m/%d/"
    return det


def _subscribe_store_and_status(
    RE: RunEngine, ifm: Interferometer, data_dir: Path, progress_bar: bool
) -> tuple[JsonlDocumentStore, ScanStatusReporter]:
    """Subscribe the document store and the status reporter (in that order) to ``RE``; the
    reporter mirrors the RunEngine's state too."""
    store = JsonlDocumentStore(data_dir / DOCUMENTS_DIR)
    RE.subscribe(store)
    reporter = ScanStatusReporter(
        ifm.status,
        rotation_key=ifm.rotation.name,
        tags_prefix=ifm.tags.name,
        progress_bar=progress_bar,
    )
    RE.subscribe(reporter)
    RE.state_hook = reporter.state_hook  # type: ignore[assignment]
    return store, reporter


def _install_suspenders(
    RE: RunEngine,
    ifm: Interferometer,
    reporter: ScanStatusReporter,
    floor_ma: float,
    resume_ma: float,
    sleep_s: float,
) -> tuple[SuspendBeamFloor, SuspendShutterClosed]:
    """Install the ring-current and shutter suspenders on ``RE``; each shows in the State PV
    while it holds the scan."""
    on_resume = _announcing(reporter, "Running", "resumed: re-taking the series")
    beam = SuspendBeamFloor(
        ifm.beam.current,
        floor_ma,
        resume_thresh=resume_ma,
        sleep=sleep_s,
        pre_plan=_announcing(reporter, "Suspended", "beam dump: waiting for beam"),
        post_plan=on_resume,
        tripped_message=f"ring current below {floor_ma} mA",
    )
    shutter = SuspendShutterClosed(
        ifm.shutter,
        sleep=sleep_s,
        pre_plan=_announcing(reporter, "Suspended", "shutter closed: waiting"),
        post_plan=on_resume,
    )
    for suspender in (beam, shutter):
        RE.install_suspender(suspender)
    return beam, shutter


def _announcing(
    reporter: ScanStatusReporter, state: str, message: str
) -> Callable[[], MsgGenerator[None]]:
    """A suspender's pre- or post-plan: write ``state`` and ``message`` to the status PVs."""

    def plan() -> MsgGenerator[None]:
        reporter.set_state(state, message)
        yield Msg("null")

    return plan


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
