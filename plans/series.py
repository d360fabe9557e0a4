"""Phase-stepping, reference and dark series: the atomic, re-takeable units of a scan.

These are plan *stubs*: they do not open a run (``phase_stepping_ct`` and the alignment plans do).
Every series starts with exactly one ``checkpoint`` and contains none inside, so a suspension
(beam dump) or a pause rewinds to the start of the series and the RunEngine re-takes the whole
series (DESIGN §3.4); :class:`plans.attempts.SeriesAttempts` gives the re-take ``attempt + 1``.

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

import logging
import math
import uuid
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from bluesky import Msg
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp
from bluesky.utils import FailedStatus, MsgGenerator
from ophyd import EpicsMotor

from contracts.frames import CA_STRING_MAX
from contracts.scanplan import Grating, Stepping
from devices.detector import FrameLost
from devices.interferometer import Interferometer
from devices.motors import step_positions
from devices.sequencer import SequencedAcquisition, SequencedFrames, SeriesArming
from plans.attempts import SeriesAttempts
from plans.frames import FrameReader, new_group, set_in, wait_for

FrameType = Literal["projection", "reference", "dark"]

#: Event stream of each frame type.
STREAMS: dict[str, str] = {"projection": "primary", "reference": "reference", "dark": "dark"}

#: Length limit of the ScanUid tag PV (a CA string).
MAX_SCAN_UID = CA_STRING_MAX

#: Takes of a series that lost frames on the way to the file, at most.
MAX_TAKES = 3

log = logging.getLogger(__name__)


def check_positive(name: str, value: float) -> float:
    """``value`` as float; ValueError naming ``name`` unless it is finite and > 0."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number > 0, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return v


def check_count(name: str, value: int, minimum: int) -> int:
    """``value`` as int; ValueError naming ``name`` unless it is an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return value


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
    if not math.isfinite(float(start_um)):
        raise ValueError(f"start_um must be finite, got {start_um!r}")
    if periods > 1 and math.gcd(steps, periods) != 1:
        raise ValueError(f"steps={steps} and periods={periods} must be coprime (phases repeat)")
    return step_positions(steps, periods, float(start_um), float(period_um))


def _frame_reader(
    ifm: Interferometer, detectors: Sequence[Any], axis: EpicsMotor, stream: str
) -> FrameReader:
    """Trigger the detectors; read them with the stepped axis, rotation, sample, beam, tags."""
    return FrameReader(detectors, [axis, ifm.rotation, ifm.sample, ifm.beam, ifm.tags], stream)


def _check_detectors(detectors: Sequence[Any]) -> list[Any]:
    dets = list(detectors)
    for det in dets:
        if not (hasattr(det, "trigger") and hasattr(det, "read")):
            raise ValueError(f"detectors must be triggerable readables, got {det!r}")
    return dets


def check_stepping(stepping: str, grating: str, detectors: Sequence[Any]) -> None:
    """ValueError naming ``stepping`` unless it is possible with this grating and detectors."""
    if stepping == "software":
        return
    if stepping != "hardware":
        raise ValueError(f"stepping must be 'software' or 'hardware', got {stepping!r}")
    if grating != "g2":
        raise ValueError("stepping='hardware' steps the G2 piezo; use stepping='software' for G0")
    if len(detectors) != 1 or not all(
        hasattr(d, name) for d in detectors for name in ("acquire", "reference_frame", "cam")
    ):
        raise ValueError(
            "stepping='hardware' needs exactly one area detector whose exposures drive the "
            f"sequencer (got {[getattr(d, 'name', d) for d in detectors]}); "
            "use stepping='software'"
        )


#: One :class:`SequencedFrames` per (detector, interferometer, stepped axis): an event stream's
#: descriptor names the objects read, so every hardware-stepped series of a run must read
#: through the same one.
_SEQUENCED: weakref.WeakKeyDictionary[Any, SequencedFrames] = weakref.WeakKeyDictionary()


#: The acquisitions of those frames (one object, which holds the series queued in the IOC).
_ACQUISITIONS: weakref.WeakKeyDictionary[SequencedFrames, SequencedAcquisition] = (
    weakref.WeakKeyDictionary()
)


def sequenced_frames(ifm: Interferometer, detector: Any, axis: EpicsMotor) -> SequencedFrames:
    """The per-frame readings of hardware-stepped series with these devices (one object for
    every series, since the descriptor of an event stream names the objects read)."""
    frames = _SEQUENCED.get(detector)
    if frames is None or frames.axis is not axis or frames.sequencer is not ifm.sequencer:
        frames = SequencedFrames(
            detector,
            ifm.sequencer,
            axis,
            ifm.tags.step_index,
            [axis, ifm.rotation, ifm.sample, ifm.beam, ifm.tags],
        )
        _SEQUENCED[detector] = frames
    return frames


def sequenced_acquisition(frames: SequencedFrames) -> SequencedAcquisition:
    """The object that hands over, queues and follows the acquisitions of ``frames`` (one for
    every series, since it holds the series queued in the IOC)."""
    acquisition = _ACQUISITIONS.get(frames)
    if acquisition is None:
        acquisition = SequencedAcquisition(frames.detector, frames)
        _ACQUISITIONS[frames] = acquisition
    return acquisition


@dataclass(frozen=True)
class NextProjection:
    """The projection series that follows a series in the scan: its angle index and rotation
    angle [deg]. A hardware-stepped series hands it to the IOC's series queue, so that it
    starts as soon as the series before it ends."""

    angle_index: int
    rotation_deg: float


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
) -> MsgGenerator[None]:
    """One phase-stepping series (stub, no run): checkpoint, then M tagged frames.

    Parameters
    ----------
    ifm, detectors
        The interferometer device and the detector(s) to trigger and read at every step.
    steps, periods, period_um, start_um
        M >= 3 steps over ``periods`` grating periods of ``period_um`` [um] from ``start_um`` [um]
        (the stepped grating's user coordinate).
    frame_type, angle_index, series_index
        Tags: a projection carries its angle index (series -1), a reference its series index.
    grating
        ``"g2"`` (analyser piezo, default) or ``"g0"`` (source grating, Talbot-Lau).
    backlash_um
        The grating first moves this far [um] below the first step (default one step); with
        ``stepping="hardware"`` the piezo record does it (its ``BDST``, set to this).
    attempts
        Re-take counter shared by a scan (a fresh one by default).
    scan_uid
        Written to the ScanUid tag at the start of the series when given.
    setup
        ``setup(group)``: plan run right after the checkpoint (e.g. move the sample out, in the
        status group ``group`` that is waited on before the first step); a re-take repeats it.
    stepping
        ``"software"``: per step, move, write the step index, trigger and read. ``"hardware"``
        (G2 only, one area detector): after the first step's move, arm the step sequencer for
        M - 1 steps and take the M frames in one acquisition; then one event per frame with the
        encoder reading the sequencer latched for it (same data keys).
    rotation_deg
        Rotation angle [deg] to take the series at (moved after the checkpoint, in parallel
        with the grating's approach); None leaves the rotation where it is.
    next_projection
        With ``stepping="hardware"``: the projection series that follows in the scan, handed to
        the IOC's series queue while this series is acquired (``SequencedAcquisition``), so
        that it starts when this one ends, with no round trip in between. Ignored otherwise.
    """
    dets = _check_detectors(detectors)
    check_stepping(stepping, grating, dets)
    positions = series_positions_um(
        steps=steps, periods=periods, period_um=period_um, start_um=start_um
    )
    step_um = periods * float(period_um) / steps
    backlash = step_um if backlash_um is None else float(backlash_um)
    if not (math.isfinite(backlash) and backlash >= 0):
        raise ValueError(f"backlash_um must be >= 0, got {backlash_um!r}")
    if frame_type == "projection":
        check_count("angle_index", angle_index, 0)
        key = ("projection", angle_index)
    elif frame_type == "reference":
        check_count("series_index", series_index, 0)
        key = ("reference", series_index)
    else:
        raise ValueError(f"frame_type must be 'projection' or 'reference', got {frame_type!r}")
    if scan_uid is not None and len(scan_uid) > MAX_SCAN_UID:
        raise ValueError(f"scan_uid must have at most {MAX_SCAN_UID} characters, got {scan_uid!r}")
    angles = {"rotation_deg": rotation_deg}
    if next_projection is not None:
        angles["next_projection.rotation_deg"] = next_projection.rotation_deg
    for name, angle in angles.items():
        if angle is not None and not math.isfinite(float(angle)):
            raise ValueError(f"{name} must be finite, got {angle!r}")
    if next_projection is not None:
        check_count("next_projection.angle_index", next_projection.angle_index, 0)
    axis = stepping_axis(ifm, grating)
    counter = attempts if attempts is not None else SeriesAttempts(ifm.tags.attempt)
    stream = STREAMS[frame_type]
    tags = {"frame_type": frame_type, "angle_index": angle_index, "series_index": series_index}

    if stepping == "hardware":
        arming = SeriesArming(
            key=key, frame_type=frame_type, angle_index=angle_index, series_index=series_index,
            positions=tuple(positions), rotation_deg=rotation_deg, attempts=counter,
        )  # fmt: skip
        following = None
        if next_projection is not None:
            following = SeriesArming(
                key=("projection", next_projection.angle_index),
                frame_type="projection",
                angle_index=next_projection.angle_index,
                series_index=-1,
                positions=tuple(positions),
                rotation_deg=next_projection.rotation_deg,
                attempts=counter,
            )
        frames = sequenced_frames(ifm, dets[0], axis)
        acquisition = sequenced_acquisition(frames)
        return _sequenced_series(
            ifm, axis, frames, acquisition, arming, following, backlash, scan_uid, stream, setup
        )

    def take() -> MsgGenerator[int]:
        group = f"series-{uuid.uuid4().hex[:8]}"
        frame = _frame_reader(ifm, dets, axis, stream)
        yield from _series_start(ifm, counter, key, scan_uid, group)
        if rotation_deg is not None:
            yield from set_in(ifm.rotation, rotation_deg, group)
        yield from bps.abs_set(axis, positions[0] - backlash, group=group)
        yield from _tag_puts(ifm, group, step_index=0, **tags)  # type: ignore[arg-type]
        yield from _images_per_trigger(dets, 1, group)
        if setup is not None:
            yield from setup(group)
        yield from bps.wait(group)
        for k, x in enumerate(positions):
            step_group = new_group(group)
            yield from set_in(axis, x, step_group)
            if k > 0:
                yield from set_in(ifm.tags.step_index, k, step_group)
            yield from wait_for(step_group)
            if (yield from _frame_or_lost(frame)):
                return 1
        return 0

    return _until_complete(take, key)


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


def _sequenced_series(
    ifm: Interferometer,
    axis: EpicsMotor,
    frames: SequencedFrames,
    acquisition: SequencedAcquisition,
    arming: SeriesArming,
    following: SeriesArming | None,
    backlash: float,
    scan_uid: str | None,
    stream: str,
    setup: Callable[[str], MsgGenerator[Any]] | None,
) -> MsgGenerator[None]:
    """A hardware-stepped series: arm (or adopt the acquisition the IOC started from its
    queue), one M-frame acquisition, each frame's event as soon as the frame is in the file
    (while the next one exposes); meanwhile the ``following`` series goes to the IOC's queue."""
    reader = FrameReader([frames], [], stream)
    attempts = arming.attempts
    assert isinstance(attempts, SeriesAttempts)

    def take() -> MsgGenerator[int]:
        """One take: checkpoint, hand over, acquire; the number of frames lost."""
        group = f"series-{uuid.uuid4().hex[:8]}"
        yield from _series_start(ifm, attempts, arming.key, scan_uid, group)
        for x in arming.positions:  # LimitError before anything of this series moves
            axis.check_value(x)
        placed = new_group(group)
        if setup is not None:  # the sample moves while the plan arms
            yield from setup(placed)
        # The grating approaches its first step from below in one move: the motor record's
        # backlash (BDST) takes it below first when it comes from above.
        held = yield from bps.rd(axis.backlash, default_value=None)
        if held != backlash:  # the scan's first series: BDST first
            yield from set_in(axis.backlash, backlash, group)
        # The IOC's in-position gate holds the first exposure until the moves it knows of have
        # ended: the setup's moves must have been requested, so they are waited for here.
        yield from wait_for(placed)
        yield from wait_for(group)
        # The IOC starts the series (tags, image count, sequencer, rotation and first step, then
        # Acquire), or it has already, from its queue. No acquisition runs here: a suspension or
        # pause that interrupted one stopped it (SequencedAcquisition.pause).
        yield from set_in(acquisition, arming, group)
        yield from wait_for(group)
        acquired = new_group(group)
        yield Msg("trigger", acquisition, group=acquired)
        queued = new_group(group)
        if following is not None:  # started by the IOC as soon as this one ends
            yield from set_in(acquisition.next_series, following, queued)
        for _ in arming.positions:  # frame k's event while frame k + 1 exposes
            if (yield from _frame_or_lost(reader)):
                break  # the take is re-taken: its later frames get no event
        yield from wait_for(queued)
        yield from wait_for(acquired)
        return frames.lost()

    # The grating stays at the last step: the next series' own approach (below its first step,
    # then up) runs while the sample rotates, which takes as long.
    return _until_complete(take, arming.key)


def _restoring(
    body: MsgGenerator[None], signal: Any, mover: Any, transform: Callable[[Any], Any]
) -> MsgGenerator[None]:
    """Run ``body``; afterwards (whatever happens) put ``mover`` back where ``signal`` said."""
    before = yield from bps.rd(signal, default_value=None)

    def restore() -> MsgGenerator[None]:
        if before is not None:
            yield from bps.mv(mover, transform(before))

    return (yield from bpp.finalize_wrapper(body, restore()))


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
    )
    return _restoring(series, ifm.sample.x.user_setpoint, ifm.sample, float)


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
    dets = _check_detectors(detectors)
    check_count("frames", frames, 1)
    if scan_uid is not None and len(scan_uid) > MAX_SCAN_UID:
        raise ValueError(f"scan_uid must have at most {MAX_SCAN_UID} characters, got {scan_uid!r}")
    counter = attempts if attempts is not None else SeriesAttempts(ifm.tags.attempt)

    def take() -> MsgGenerator[int]:
        group = f"dark-{uuid.uuid4().hex[:8]}"
        yield from _series_start(ifm, counter, ("dark", 0), scan_uid, group)
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

    def body() -> MsgGenerator[None]:
        yield from _until_complete(take, ("dark", 0))

    def shutter_command(state: Any) -> str:
        return "open" if str(state) == "Open" else "close"

    return _restoring(body(), ifm.shutter.state, ifm.shutter, shutter_command)
