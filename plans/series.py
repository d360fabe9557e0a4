"""Phase-stepping, reference and dark series: the atomic, re-takeable units of a scan.

These are plan *stubs*: they do not open a run (``phase_stepping_ct`` and the alignment plans do).
Every series starts with exactly one ``checkpoint`` and contains none inside, so a suspension
(beam dump) or a pause rewinds to the start of the series and the RunEngine re-takes the whole
series (``docs/operating.md``, "Beam dumps and re-takes"); :class:`plans.attempts.SeriesAttempts`
gives the re-take ``attempt + 1``.

After its checkpoint a series writes the scan tags (frame type, angle index, series index, step
index 0); per frame it writes the step index while the stepped grating moves (a put completes
only when the IOC holds the tag), then triggers and reads the detector(s) with the grating readback,
the rotation and sample readbacks, the ring current and the tags (event stream ``primary`` for
projections, ``reference`` and ``dark`` for the others). Stepping follows Weitkamp et al.,
Opt. Express 13, 6296 (2005): M steps over ``periods`` grating periods, end point excluded,
always approached from below (backlash: the grating first goes ``backlash_um`` below the first
step).
"""

from __future__ import annotations

import functools
import logging
import math
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bluesky import Msg
from bluesky import plan_stubs as bps
from bluesky.utils import FailedStatus, MsgGenerator
from ophyd import EpicsMotor

from contracts.scanplan import Grating, Stepping
from devices.detector import FrameLost
from devices.interferometer import Interferometer
from devices.motors import step_positions
from devices.sequencer import SeriesArming
from plans.attempts import SeriesAttempts
from plans.checks import (
    check_backlash,
    check_count,
    check_detectors,
    check_finite,
    check_positive,
    check_scan_uid,
    check_stepping,
)
from plans.frames import FrameReader, new_group, set_in, wait_for
from plans.hardware import HardwareStepping
from plans.restore import restoring_wrapper, shutter_command

FrameType = Literal["projection", "reference", "dark"]

#: Event stream of each frame type.
STREAMS: dict[str, str] = {"projection": "primary", "reference": "reference", "dark": "dark"}

#: Takes of a series that lost frames on the way to the file, at most.
MAX_TAKES = 3

log = logging.getLogger(__name__)


def stepping_axis(ifm: Interferometer, grating: Grating) -> EpicsMotor:
    """The motor that steps the phase: the G2 piezo x (um) or the G0 stage x (um)."""
    if grating == "g2":
        return ifm.g2.x
    if grating == "g0":
        return ifm.g0.x
    raise ValueError(f"grating must be 'g2' or 'g0', got {grating!r}")


def series_positions_um(
    *, steps: int, periods: int, period_um: float, start_um: float
) -> list[float]:
    """Step positions [um]: ``start_um + k periods period_um / steps``, k = 0..steps-1."""
    check_count("steps", steps, 3)
    check_count("periods", periods, 1)
    check_positive("period_um", period_um)
    check_finite("start_um", start_um)
    if periods > 1 and math.gcd(steps, periods) != 1:
        raise ValueError(f"steps={steps} and periods={periods} must be coprime (phases repeat)")
    return step_positions(steps, periods, float(start_um), float(period_um))


def first_step_um(axis: EpicsMotor, start_um: float | None) -> MsgGenerator[float]:
    """``start_um``, or (None) where ``axis`` is set now [um] (0 when it has no setpoint)."""
    if start_um is not None:
        return start_um
    now = yield from bps.rd(axis.user_setpoint, default_value=None)
    return float(now) if now is not None else 0.0


def _frame_reader(
    ifm: Interferometer, detectors: Sequence[Any], axis: EpicsMotor, stream: str
) -> FrameReader:
    """Trigger the detectors; read them with the stepped axis, rotation, sample, beam, tags."""
    return FrameReader(detectors, [axis, ifm.rotation, ifm.sample, ifm.beam, ifm.tags], stream)


@dataclass(frozen=True)
class NextProjection:
    """The projection series that follows a series in the scan: its angle index and rotation
    angle [deg]. A hardware-stepped series hands it to the IOC's series queue, so that it
    starts as soon as the series before it ends."""

    angle_index: int
    rotation_deg: float


@dataclass(frozen=True)
class _Series:
    """The checked arguments of one phase-stepping series (:func:`phase_stepping_series`)."""

    ifm: Interferometer
    dets: tuple[Any, ...]
    axis: EpicsMotor
    key: tuple[str, int]
    frame_type: Literal["projection", "reference"]
    angle_index: int
    series_index: int
    positions: tuple[float, ...]
    backlash_um: float
    rotation_deg: float | None
    next_projection: NextProjection | None
    attempts: SeriesAttempts
    scan_uid: str | None
    setup: Callable[[str], MsgGenerator[Any]] | None
    stepping: Stepping
    hardware: HardwareStepping | None

    @property
    def stream(self) -> str:
        return STREAMS[self.frame_type]


def _series_key(frame_type: str, angle_index: int, series_index: int) -> tuple[str, int]:
    """The series' key in the attempt counter: a projection's angle or a reference's index."""
    if frame_type == "projection":
        return ("projection", check_count("angle_index", angle_index, 0))
    if frame_type == "reference":
        return ("reference", check_count("series_index", series_index, 0))
    raise ValueError(f"frame_type must be 'projection' or 'reference', got {frame_type!r}")


def _checked_series(
    ifm: Interferometer,
    detectors: Sequence[Any],
    *,
    steps: int,
    period_um: float,
    start_um: float,
    periods: int,
    frame_type: Literal["projection", "reference"],
    angle_index: int,
    series_index: int,
    grating: Grating,
    backlash_um: float | None,
    attempts: SeriesAttempts | None,
    scan_uid: str | None,
    setup: Callable[[str], MsgGenerator[Any]] | None,
    stepping: Stepping,
    rotation_deg: float | None,
    next_projection: NextProjection | None,
    hardware: HardwareStepping | None,
) -> _Series:
    """The arguments of :func:`phase_stepping_series`, checked in this order: ValueError
    naming the first that is wrong."""
    dets = check_detectors(detectors)
    check_stepping(stepping, grating, dets)
    positions = series_positions_um(
        steps=steps, periods=periods, period_um=period_um, start_um=start_um
    )
    backlash = check_backlash(backlash_um)
    key = _series_key(frame_type, angle_index, series_index)
    check_scan_uid(scan_uid)
    check_finite("rotation_deg", rotation_deg)
    if next_projection is not None:
        check_finite("next_projection.rotation_deg", next_projection.rotation_deg)
        check_count("next_projection.angle_index", next_projection.angle_index, 0)
    axis = stepping_axis(ifm, grating)
    if stepping == "hardware" and hardware is not None and not hardware.serves(ifm, dets[0], axis):
        raise ValueError("hardware was made for another detector, stepped axis or sequencer")
    return _Series(
        ifm=ifm, dets=tuple(dets), axis=axis, key=key, frame_type=frame_type,
        angle_index=angle_index, series_index=series_index, positions=tuple(positions),
        backlash_um=periods * float(period_um) / steps if backlash is None else backlash,
        rotation_deg=rotation_deg, next_projection=next_projection,
        attempts=attempts if attempts is not None else SeriesAttempts(ifm.tags.attempt),
        scan_uid=scan_uid, setup=setup, stepping=stepping, hardware=hardware,
    )  # fmt: skip


def _images_per_trigger(detectors: Sequence[Any], images: int, group: str) -> MsgGenerator[None]:
    """Set ``cam.num_images`` of every area detector (each kind of series sets what it needs:
    1 for a software-triggered frame, M for a hardware-stepped series)."""
    for det in detectors:
        cam = getattr(det, "cam", None)
        if cam is not None and hasattr(cam, "num_images"):
            yield from set_in(cam.num_images, images, group)


def _tag_puts(
    ifm: Interferometer,
    group: str,
    *,
    frame_type: FrameType,
    angle_index: int,
    series_index: int,
    step_index: int,
) -> MsgGenerator[None]:
    """The tags of the frames that follow (a series writes them after its checkpoint, so a
    re-take writes them again; within the series only the step index changes)."""
    tags = ifm.tags
    yield from set_in(tags.frame_type, frame_type, group)
    yield from set_in(tags.angle_index, angle_index, group)
    yield from set_in(tags.series_index, series_index, group)
    yield from set_in(tags.step_index, step_index, group)


def _series_start(
    ifm: Interferometer,
    attempts: SeriesAttempts,
    key: tuple[str, int],
    scan_uid: str | None,
    group: str,
) -> MsgGenerator[None]:
    """The checkpoint and what must be re-executed on every take (attempt bump first); raw
    messages, as in ``plans.frames``, since a series runs this for every take."""
    yield Msg("checkpoint")
    yield from set_in(attempts, key, group)
    if scan_uid is not None:
        yield from set_in(ifm.tags.scan_uid, scan_uid, group)


def phase_stepping_series(
    ifm: Interferometer,
    detectors: Sequence[Any],
    *,
    steps: int,
    period_um: float,
    start_um: float,
    periods: int = 1,
    frame_type: Literal["projection", "reference"] = "projection",
    angle_index: int = -1,
    series_index: int = -1,
    grating: Grating = "g2",
    backlash_um: float | None = None,
    attempts: SeriesAttempts | None = None,
    scan_uid: str | None = None,
    setup: Callable[[str], MsgGenerator[Any]] | None = None,
    stepping: Stepping = "software",
    rotation_deg: float | None = None,
    next_projection: NextProjection | None = None,
    hardware: HardwareStepping | None = None,
) -> MsgGenerator[None]:
    """One phase-stepping series of the ``detectors`` (stub, no run): checkpoint, M tagged frames.

    M = ``steps`` >= 3 over ``periods`` periods of ``period_um`` [um] from ``start_um`` [um] (the
    user coordinate of the stepped ``grating``: ``"g2"``, the analyser piezo, or ``"g0"``, the
    source grating), approached from ``backlash_um`` [um] below (default one step). Tags: the
    ``frame_type``, a projection's ``angle_index`` or a reference's ``series_index``; the
    ScanUid tag ``scan_uid`` when given. ``attempts``: the scan's re-take counter (default a
    fresh one). ``setup(group)`` runs right after the checkpoint, its moves in the status group
    ``group`` that is waited for before the first step (a re-take repeats it). ``rotation_deg``
    [deg]: where the rotation goes after the checkpoint (None: it stays).

    ``stepping="software"``: per step, move, write the step index, trigger and read.
    ``stepping="hardware"`` (G2, one area detector): the series is handed to the IOC, which
    moves the grating (through the piezo record's backlash ``BDST``, set to ``backlash_um``),
    arms the step sequencer and takes the M frames in one acquisition; one event per frame, with
    the encoder reading latched for it (the same data keys). ``next_projection``, the projection
    series after this one, is queued in the IOC meanwhile, to start when this one ends. Every
    hardware-stepped series of a run reads through one ``hardware``
    (:class:`~plans.hardware.HardwareStepping`); a series given none makes its own.
    """
    series = _checked_series(
        ifm, detectors, steps=steps, period_um=period_um, start_um=start_um, periods=periods,
        frame_type=frame_type, angle_index=angle_index, series_index=series_index,
        grating=grating, backlash_um=backlash_um, attempts=attempts, scan_uid=scan_uid,
        setup=setup, stepping=stepping, rotation_deg=rotation_deg,
        next_projection=next_projection, hardware=hardware,
    )  # fmt: skip
    if series.stepping == "software":
        return _until_complete(functools.partial(_software_take, series), series.key)
    if series.hardware is None:
        return _with_own_hardware(series)
    return _sequenced_series(series, series.hardware)


def _software_take(s: _Series) -> MsgGenerator[int]:
    """One take of a software-stepped series: per step move, tag, trigger, read; 1 when a frame
    was lost (the take ends there), else 0."""
    ifm = s.ifm
    group = f"series-{uuid.uuid4().hex[:8]}"
    frame = _frame_reader(ifm, s.dets, s.axis, s.stream)
    yield from _series_start(ifm, s.attempts, s.key, s.scan_uid, group)
    if s.rotation_deg is not None:
        yield from set_in(ifm.rotation, s.rotation_deg, group)
    yield from bps.abs_set(s.axis, s.positions[0] - s.backlash_um, group=group)
    yield from _tag_puts(
        ifm, group, frame_type=s.frame_type, angle_index=s.angle_index,
        series_index=s.series_index, step_index=0,
    )  # fmt: skip
    yield from _images_per_trigger(s.dets, 1, group)
    if s.setup is not None:
        yield from s.setup(group)
    yield from bps.wait(group)
    for k, x in enumerate(s.positions):
        step_group = new_group(group)
        yield from set_in(s.axis, x, step_group)
        if k > 0:
            yield from set_in(ifm.tags.step_index, k, step_group)
        yield from wait_for(step_group)
        if (yield from _frame_or_lost(frame)):
            return 1
    return 0


def _frame_or_lost(frame: FrameReader) -> MsgGenerator[bool]:
    """Take and read one frame; True (no event) when the detector reports it lost."""
    try:
        yield from frame()
    except FrameLost:  # a sequenced frame's reading: the acquisition ended without it
        return True
    except FailedStatus as exc:
        status: Any = exc.args[0] if exc.args else None
        cause = status.exception() if hasattr(status, "exception") else None
        if isinstance(cause, FrameLost):
            return True
        raise
    return False


def _until_complete(
    take: Callable[[], MsgGenerator[int]], key: tuple[str, int]
) -> MsgGenerator[None]:
    """Run ``take`` (one take of a series: its frames lost on the way to the file) again, with
    the next attempt, until no frame is lost; RuntimeError after ``MAX_TAKES`` lossy takes."""
    for _ in range(MAX_TAKES):
        lost = yield from take()
        if not lost:
            return
        log.warning("%s %d: %d frame(s) lost on the way to the file; re-taking", *key, lost)
    raise RuntimeError(
        f"{key[0]} series {key[1]}: frames lost on the way to the file in {MAX_TAKES} takes; "
        "check the detector's file writer (DroppedArrays)"
    )


def _armings(s: _Series) -> tuple[SeriesArming, SeriesArming | None]:
    """What the IOC is handed for the series, and for the projection series queued after it."""
    arming = SeriesArming(
        key=s.key, frame_type=s.frame_type, angle_index=s.angle_index,
        series_index=s.series_index, positions=s.positions, rotation_deg=s.rotation_deg,
        attempts=s.attempts,
    )  # fmt: skip
    after = s.next_projection
    if after is None:
        return arming, None
    following = SeriesArming(
        key=("projection", after.angle_index), frame_type="projection",
        angle_index=after.angle_index, series_index=-1, positions=s.positions,
        rotation_deg=after.rotation_deg, attempts=s.attempts,
    )  # fmt: skip
    return arming, following


def _with_own_hardware(s: _Series) -> MsgGenerator[None]:
    """A hardware-stepped series through objects of its own, released after it."""
    hardware = HardwareStepping.create(s.ifm, s.dets[0], s.axis)
    try:
        yield from _sequenced_series(s, hardware)
    finally:
        hardware.release()


def _sequenced_series(s: _Series, hardware: HardwareStepping) -> MsgGenerator[None]:
    """A hardware-stepped series: arm (or adopt the acquisition the IOC started from its
    queue), one M-frame acquisition, each frame's event as soon as the frame is in the file
    (while the next one exposes); meanwhile the next projection series goes to the IOC's queue.

    The grating stays at the last step: the next series' own approach (below its first step,
    then up) runs while the sample rotates, which takes as long."""
    arming, following = _armings(s)
    reader = FrameReader([hardware.frames], [], s.stream)

    def take() -> MsgGenerator[int]:
        """One take: checkpoint, hand over, acquire; the number of frames lost."""
        group = f"series-{uuid.uuid4().hex[:8]}"
        yield from _before_hand_over(s, group)
        # The IOC starts the series (tags, image count, sequencer, rotation and first step, then
        # Acquire), or it has already, from its queue. No acquisition runs here: a suspension or
        # pause that interrupted one stopped it (SequencedAcquisition.pause).
        yield from set_in(hardware.acquisition, arming, group)
        yield from wait_for(group)
        yield from _acquire(hardware, following, reader, len(arming.positions), group)
        return hardware.frames.lost()

    return _until_complete(take, s.key)


def _before_hand_over(s: _Series, group: str) -> MsgGenerator[None]:
    """The checkpoint, the step limits, the setup and the grating's backlash, all waited for."""
    axis = s.axis
    yield from _series_start(s.ifm, s.attempts, s.key, s.scan_uid, group)
    for x in s.positions:  # LimitError before anything of this series moves
        axis.check_value(x)
    placed = new_group(group)
    if s.setup is not None:  # the sample moves while the plan arms
        yield from s.setup(placed)
    # The grating approaches its first step from below in one move: the motor record's
    # backlash (BDST) takes it below first when it comes from above.
    held = yield from bps.rd(axis.backlash, default_value=None)
    if held != s.backlash_um:  # the scan's first series: BDST first
        yield from set_in(axis.backlash, s.backlash_um, group)
    # The IOC's in-position gate holds the first exposure until the moves it knows of have
    # ended: the setup's moves must have been requested, so they are waited for here.
    yield from wait_for(placed)
    yield from wait_for(group)


def _acquire(
    hardware: HardwareStepping,
    following: SeriesArming | None,
    reader: FrameReader,
    frames: int,
    group: str,
) -> MsgGenerator[None]:
    """The handed-over series' acquisition: queue ``following`` in the IOC, then the event of
    each of the ``frames`` frames while the next one exposes, until one is lost."""
    acquisition = hardware.acquisition
    acquired = new_group(group)
    yield Msg("trigger", acquisition, group=acquired)
    queued = new_group(group)
    if following is not None:  # started by the IOC as soon as this one ends
        yield from set_in(acquisition.next_series, following, queued)
    for _ in range(frames):  # frame k's event while frame k + 1 exposes
        if (yield from _frame_or_lost(reader)):
            break  # the take is re-taken: its later frames get no event
    yield from wait_for(queued)
    yield from wait_for(acquired)


def reference_series(
    ifm: Interferometer,
    detectors: Sequence[Any],
    *,
    series_index: int,
    steps: int,
    period_um: float,
    start_um: float,
    periods: int = 1,
    grating: Grating = "g2",
    backlash_um: float | None = None,
    attempts: SeriesAttempts | None = None,
    scan_uid: str | None = None,
    stepping: Stepping = "software",
    hardware: HardwareStepping | None = None,
) -> MsgGenerator[None]:
    """A reference (flat) phase-stepping series with the sample out of the beam (stub, no run).

    The sample goes out after the series' checkpoint (so a re-take repeats it) and back to the
    position it had before [mm] afterwards, whatever happens. Arguments as
    :func:`phase_stepping_series`.
    """
    series = phase_stepping_series(
        ifm,
        detectors,
        steps=steps,
        period_um=period_um,
        start_um=start_um,
        periods=periods,
        frame_type="reference",
        series_index=series_index,
        grating=grating,
        backlash_um=backlash_um,
        attempts=attempts,
        scan_uid=scan_uid,
        setup=lambda group: bps.abs_set(ifm.sample, "out", group=group),
        stepping=stepping,
        hardware=hardware,
    )
    return restoring_wrapper(series, ifm.sample.x.user_setpoint, ifm.sample, float)


def dark_series(
    ifm: Interferometer,
    detectors: Sequence[Any],
    *,
    frames: int,
    attempts: SeriesAttempts | None = None,
    scan_uid: str | None = None,
) -> MsgGenerator[None]:
    """``frames`` dark frames with the shutter closed (stub, no run); shutter restored after.

    Tags: frame type dark, angle, series and step index -1; event stream ``dark``.
    """
    dets = check_detectors(detectors)
    check_count("frames", frames, 1)
    check_scan_uid(scan_uid)
    counter = attempts if attempts is not None else SeriesAttempts(ifm.tags.attempt)
    take = functools.partial(_dark_take, ifm, dets, frames, counter, scan_uid)
    darks = _until_complete(take, ("dark", 0))
    return restoring_wrapper(darks, ifm.shutter.state, ifm.shutter, shutter_command)


def _dark_take(
    ifm: Interferometer,
    dets: Sequence[Any],
    frames: int,
    attempts: SeriesAttempts,
    scan_uid: str | None,
) -> MsgGenerator[int]:
    """One take of the darks: close the shutter, then ``frames`` frames; 1 when one was lost."""
    group = f"dark-{uuid.uuid4().hex[:8]}"
    yield from _series_start(ifm, attempts, ("dark", 0), scan_uid, group)
    yield from _tag_puts(
        ifm, group, frame_type="dark", angle_index=-1, series_index=-1, step_index=-1
    )
    yield from bps.abs_set(ifm.shutter, "close", group=group)
    yield from _images_per_trigger(dets, 1, group)
    yield from bps.wait(group)
    frame = _frame_reader(ifm, dets, ifm.g2.x, STREAMS["dark"])
    for _ in range(frames):
        if (yield from _frame_or_lost(frame)):
            return 1
    return 0
