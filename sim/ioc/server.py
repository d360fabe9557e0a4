"""One caproto server = the whole simulated beamline.

:func:`build_beamline` assembles the PV groups of a profile's instrument and simulation under the
instrument's :class:`contracts.pvnames.PVNames` (motor records, G2 piezo, shutter, ring current,
scan tags, operator status, fault injection); :func:`serve` runs them in one Channel Access server
bound to one interface and one port (loopback by default), so a test session or a training session
needs exactly one ``EPICS_CA_ADDR_LIST`` entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
from dataclasses import dataclass, field
from typing import Any

import caproto.server.common as ca_server_common

from contracts.instrument import Geometry, Instrument
from contracts.profile import Profile, builtin_profile
from contracts.pvnames import PVNames
from sim.ioc.beam import BeamGroup, ShutterGroup
from sim.ioc.context import BeamlineContext
from sim.ioc.detector import DetectorSpec, SimDetector
from sim.ioc.faults import FaultsGroup
from sim.ioc.motor import MotorRecord, MotorSpec
from sim.ioc.piezo import PiezoRecord, PiezoSpec
from sim.ioc.publisher import FrameStreamHook
from sim.ioc.sequencer import StepSequencerGroup
from sim.ioc.tags import OperatorStatusGroup, ScanTagsGroup


def motor_specs(geometry: Geometry) -> dict[str, MotorSpec]:
    """Motor specs by role (``contracts.pvnames.MOTOR_RECORDS``) for an instrument's geometry.

    G2 z starts at the G1-G2 distance of the geometry [mm]; the G2 piezo (um) has 1 nm
    resolution and 100 um travel; G0 x is in um, z stages in mm, roll in mrad, rotation in deg.
    """
    g2_z_mm = geometry.distance_m * 1e3
    return {
        "g0_x": MotorSpec(
            "G0 source grating x (stepping)", "um", -2000.0, 2000.0,
            velocity=500.0, precision=3, resolution=0.001, hard_margin=10.0,
        ),
        "g0_z": MotorSpec(
            "G0 source grating z", "mm", -50.0, 50.0,
            velocity=10.0, precision=4, resolution=1e-4, hard_margin=1.0,
        ),
        "g2_x": MotorSpec(
            "G2 analyser piezo x (phase stepping)", "um", 0.5, 99.5, position=10.0,
            velocity=1000.0, precision=4, resolution=0.001, hard_margin=0.5, tick_s=0.002,
        ),
        "g2_roll": MotorSpec(
            "G2 analyser roll", "mrad", -20.0, 20.0,
            velocity=10.0, precision=4, resolution=1e-4, hard_margin=0.5,
        ),
        "g2_z": MotorSpec(
            "G2 analyser z (G1-G2 Talbot distance)", "mm", 0.0, max(1000.0, 2 * g2_z_mm),
            position=g2_z_mm, velocity=20.0, precision=4, resolution=1e-4, hard_margin=1.0,
        ),
        "rotation": MotorSpec(
            "sample rotation", "deg", -720.0, 720.0,
            velocity=180.0, precision=4, resolution=1e-4, hard_margin=5.0,
        ),
        "sample_x": MotorSpec(
            "sample x (in/out of the beam)", "mm", -50.0, 50.0,
            velocity=20.0, precision=4, resolution=1e-4, hard_margin=1.0,
        ),
    }  # fmt: skip


@dataclass
class SimBeamline:
    """The PV groups of the simulated beamline (one caproto server)."""

    pvs: PVNames
    motors: dict[str, MotorRecord]
    shutter: ShutterGroup
    beam: BeamGroup
    tags: ScanTagsGroup
    status: OperatorStatusGroup
    faults: FaultsGroup
    detector: SimDetector
    sequencer: StepSequencerGroup
    groups: list[Any] = field(default_factory=list)
    publisher: FrameStreamHook | None = None  # the frame stream, when configured

    @property
    def piezo(self) -> PiezoRecord:
        """The G2 phase-stepping piezo."""
        return _piezo_of(self.motors)

    @property
    def pvdb(self) -> dict[str, Any]:
        """The merged caproto PV database of every group."""
        db: dict[str, Any] = {}
        for group in self.groups:
            for name, pv in group.pvdb.items():
                if name in db:
                    raise ValueError(
                        f"PV name {name!r} served twice; check the profile's [instrument.pvs]"
                    )
                db[name] = pv
        return db

    def describe_pvs(self) -> dict[str, str]:
        """Every PV served (motor records: the fields with behaviour) -> meaning."""
        out: dict[str, str] = {}
        for group in self.groups:
            if isinstance(group, MotorRecord):
                out.update(group.describe_pvs())
                continue
            for name, pv in group.pvdb.items():
                out[name] = (pv.__doc__ or "").strip()
        return out


def build_beamline(
    profile: Profile | None = None,
    *,
    pvs: PVNames | None = None,
    piezo: PiezoSpec | None = None,
    detector: DetectorSpec | None = None,
    seed: int | None = None,
    stream: str | None = None,
    allow_remote: bool = False,
) -> SimBeamline:
    """Assemble the simulated beamline's PV groups (no socket I/O but the frame stream's bind;
    :func:`serve` runs them). ``profile``: instrument and simulation (default ``tiny``);
    ``pvs``: names other than the instrument's; ``stream``: ZeroMQ endpoint the detector
    publishes every written frame on (e.g. ``tcp://127.0.0.1:5555``), or None; loopback only
    unless ``allow_remote``."""
    profile = builtin_profile("tiny") if profile is None else profile
    simulation = profile.simulated()
    pvs = profile.instrument.pvs if pvs is None else pvs
    instrument = _with_pvs(profile.instrument, pvs)
    piezo = PiezoSpec(seed=seed) if piezo is None else piezo
    motors = _motor_records(pvs, instrument.geometry, piezo)
    shutter = ShutterGroup(pvs.full("shutter"))
    beam = BeamGroup(pvs.full("beam"), seed=seed)
    tags = ScanTagsGroup(pvs.full("tags"))
    status = OperatorStatusGroup(pvs.full("status"))
    faults = FaultsGroup(pvs.full("faults"), beam=beam, piezo=_piezo_of(motors))
    sequencer = _sequencer(pvs, motors, tags)
    camera = SimDetector(
        pvs.full("detector"),
        instrument=instrument,
        simulation=simulation,
        motors=motors,
        shutter=shutter,
        beam=beam,
        tags=tags,
        faults=faults,
        spec=DetectorSpec(seed=seed) if detector is None else detector,
        sequencer=sequencer,
    )
    return SimBeamline(
        pvs=pvs,
        motors=motors,
        shutter=shutter,
        beam=beam,
        tags=tags,
        status=status,
        faults=faults,
        detector=camera,
        sequencer=sequencer,
        groups=[*motors.values(), shutter, beam, tags, status, faults, sequencer, camera],
        publisher=_frame_stream(camera, stream, instrument.detector.shape, allow_remote),
    )


def _with_pvs(instrument: Instrument, pvs: PVNames) -> Instrument:
    """``instrument`` serving under ``pvs`` (itself when those are its names already)."""
    if pvs == instrument.pvs:
        return instrument
    return instrument.model_copy(update={"pvs": pvs})


def _motor_records(pvs: PVNames, geometry: Geometry, piezo: PiezoSpec) -> dict[str, MotorRecord]:
    """The motor records by role (:func:`motor_specs`); G2 x is the phase-stepping piezo."""
    records = pvs.motor_records()
    motors: dict[str, MotorRecord] = {}
    for role, spec in motor_specs(geometry).items():
        if role == "g2_x":
            motors[role] = PiezoRecord(records[role], spec=spec, piezo=piezo)
        else:
            motors[role] = MotorRecord(records[role], spec=spec)
    return motors


def _piezo_of(motors: dict[str, MotorRecord]) -> PiezoRecord:
    """The G2 x record of ``motors``: the phase-stepping piezo."""
    piezo = motors["g2_x"]
    assert isinstance(piezo, PiezoRecord)
    return piezo


def _sequencer(
    pvs: PVNames, motors: dict[str, MotorRecord], tags: ScanTagsGroup
) -> StepSequencerGroup:
    """The step sequencer: steps the G2 piezo; rotation and sample x gate a series' first
    exposure."""
    return StepSequencerGroup(
        pvs.full("sequencer"),
        axis=_piezo_of(motors),
        gated=(motors["rotation"], motors["sample_x"]),
        rotation=motors["rotation"],
        tags=tags,
    )


def _frame_stream(
    camera: SimDetector, stream: str | None, shape: tuple[int, int], allow_remote: bool = False
) -> FrameStreamHook | None:
    """Publish every frame ``camera`` writes (``shape`` rows x columns [px]) on the ZeroMQ
    endpoint ``stream`` (bound now), and each file's end; None without an endpoint."""
    if stream is None:
        return None
    publisher = FrameStreamHook(stream, shape, allow_remote=allow_remote)
    camera.frame_hooks.append(publisher.on_frame)
    camera.hdf.capture_end_hooks.append(publisher.on_capture_end)
    return publisher


def server_environment(host: str, port: int) -> dict[str, str]:
    """EPICS variables that confine a caproto server to one interface and port."""
    if not 0 < port < 65536:
        raise ValueError(f"port must be in 1..65535, got {port!r}")
    env = {
        "EPICS_CA_SERVER_PORT": str(port),
        "EPICS_CAS_INTF_ADDR_LIST": host,
        "EPICS_CAS_AUTO_BEACON_ADDR_LIST": "NO",
        "EPICS_CAS_BEACON_ADDR_LIST": host if host != "0.0.0.0" else "127.0.0.1",
    }
    return env


class PortInUse(OSError):
    """The Channel Access port asked for is taken."""


def check_port_free(host: str, port: int) -> None:
    """PortInUse naming the port when another server already listens on ``port`` of ``host``
    (TCP): caproto would then serve on a port of its own choosing, where no client looks."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise PortInUse(
                exc.errno,
                f"port {port} on {host} is in use (another IOC, or another talbot sim?): stop "
                f"it, or pass --port with a free port and set EPICS_CA_SERVER_PORT for the "
                f"clients",
            ) from None


async def _beacon_sink(host: str) -> tuple[asyncio.DatagramTransport, int]:
    """A UDP socket that swallows the server's beacons (nothing else listens on loopback)."""
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=(host, 0)
    )
    port = int(transport.get_extra_info("sockname")[1])
    return transport, port


async def serve(beamline: SimBeamline, *, host: str = "127.0.0.1", port: int = 5064) -> None:
    """Serve the beamline until cancelled, SIGINT or SIGTERM; then shut down cleanly.

    caproto reads its interface, port and beacon settings from ``os.environ``; they are set for
    the server's lifetime and restored afterwards, so a server run inside another process (a test)
    leaves no stale setting, such as the port of a beacon sink that no longer exists, behind for
    the servers that process starts later.
    """
    env = server_environment(host, port)
    check_port_free(host, port)
    saved = {key: os.environ.get(key) for key in (*env, "EPICS_CAS_BEACON_PORT")}
    os.environ.update(env)
    # caproto batches monitor updates: a batch waits HIGH_LOAD_TIMEOUT (default 10 ms) for more,
    # and under a steady flow (a settling piezo publishes every millisecond) the allowed latency
    # doubles from there after every batch, up to MAX_LATENCY (1 s). At 0 it stays 0: each
    # update goes out as soon as it is queued, and the replies wait for them
    # (sim.ioc.context.OrderedCircuit).
    ca_server_common.HIGH_LOAD_TIMEOUT = 0.0
    sink: asyncio.DatagramTransport | None = None
    if host.startswith("127.") and "EPICS_CAS_BEACON_PORT" not in os.environ:
        sink, beacon_port = await _beacon_sink(host)
        os.environ["EPICS_CAS_BEACON_PORT"] = str(beacon_port)
    ctx = BeamlineContext(beamline.pvdb, [host])
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(ctx.run(startup_hook=_startup(beamline, ctx)))
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, task.cancel)
    try:
        await task
    except asyncio.CancelledError:
        pass
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(sig)
        beamline.detector.close_now()  # never leave a scan file open
        if beamline.publisher is not None:
            beamline.publisher.close()
        if sink is not None:
            sink.close()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _startup(beamline: SimBeamline, ctx: BeamlineContext) -> Any:
    async def hook(async_lib: Any) -> None:
        prepare = asyncio.create_task(beamline.detector.prepare())
        stream = f", frames on {beamline.publisher.endpoint}" if beamline.publisher else ""
        print(f"ready: {len(beamline.pvdb)} records on port {ctx.port}{stream}", flush=True)
        await beamline.piezo.drift_loop()
        await prepare

    return hook
