"""The streaming reconstructor against hostile messages, on real sockets (property-based).

What the tests show: hostile messages interleaved with a valid scan, through a real PUSH/PULL
pipe (``FramePublisher.send_raw`` -> ``FrameReceiver``) into ``StreamingReconstructor.run``,

1. leave the valid scan's volume (delta, mu, dark-field) and projections BIT-IDENTICAL to those of
   the same scan streamed alone through the same path;
2. are each dropped and counted exactly where docs/stream-protocol.md §2-4 says: malformed
   (receiver, scan and service counts), foreign (another scan uid, or before the scan-start),
   refused (valid frames of the scan that do not fit it, scan-ends claiming more than
   ``CLAIM_FACTOR`` x the planned frames), duplicates (a frame number received twice); nothing
   lost, every valid frame applied, repeated scan-starts of the scan ignored, scan-starts of
   runs without a plan passed over;
3. cost no memory in proportion to what they claim (scan-ends of 2^40 and 2^53 frames, frames
   of 65536 x 65536 px with a few bytes of data, frame numbers of 2^53, indices of 2^31 - 1,
   headers of 64 KiB): the process's resident memory grows by less than ``RSS_BOUND`` over such
   a scan, peak included.

Hypothesis chooses 0-30 hostile messages and where each goes among the valid scan's messages
(``slot`` k: just before message k of [scan-start, frame 0, ..., frame n-1, scan-end]):

- malformed (§4): not UTF-8, not JSON, not an object, a BOM, not 2 parts, NaN/Infinity (also
  an overflowing 1e400), another protocol, version or type, a field missing or unknown, wrong
  JSON types (3.0, "3", true, null), values out of range, a frame identity against the rules,
  a dtype not in the list, a data part of the wrong length, a frame over the size limit, a
  header over 64 KiB; scan-ends and scan-starts with a data part, an invalid plan or
  instrument, a shape not the detector's;
- foreign: valid frames and scan-ends of other scan uids (any frame number, shape or dtype,
  headers of exactly 64 KiB), and valid frames or scan-ends of the scan's own uid sent before
  its scan-start;
- refused: valid frames of the scan outside its plan (step index outside its series, angle
  index >= angles, reference series beyond the plan's), of another width, with too few rows or
  a row offset, or numbered >= CLAIM_FACTOR x the planned frames, with any attempt and dtype;
  scan-ends of the scan with frames_sent > CLAIM_FACTOR x the planned frames;
- duplicates: exact re-sends of frames already sent, and any frame of the scan whose number was
  already taken (a refused frame takes no number: the real frame of that number still counts);
- repeated scan-starts of the scan; before it, scan-starts of other uids without a plan.

Nothing generated is a message the protocol would use: no scan-start of another CT, no
scan-end of the scan within its bounds, no fitting frame of the scan with a fresh number. The
expected counts come from the protocol's rules (``expected``), not from the implementation.
"""

from __future__ import annotations

import copy
import functools
import gc
import json
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.frames import INT32_MAX, PIXEL_DTYPES, TAG_FIELDS, ImageKey
from contracts.messages import (
    MAX_HEADER_BYTES,
    MAX_SIDE,
    ScanEnd,
    ScanStart,
    encode_header,
    encode_scan_end,
    encode_scan_start,
    frame_header,
)
from contracts.sockets import FramePublisher, FrameReceiver, ReceiveStats
from recon.streaming import CLAIM_FACTOR, StreamingReconstructor, StreamResult
from tests.recon.scanfiles import Recorded, shared_recorded

NAMES: Final = ("delta", "mu", "darkfield")
#: Most hostile messages in one example.
MAX_HOSTILE: Final = 30
#: Largest frame_number and frames_sent a valid message may carry (stream-protocol §2.2, 2.3).
MAX_NUMBER: Final = 2**53
#: A blocked send gives up after this long (a test that went wrong must not hang) [s].
SEND_TIMEOUT_S: Final = 20.0
#: Resident-memory growth allowed over a scan with hostile messages that claim huge sizes: the
#: scan itself needs ~6 MB (fits 12 B/px of 28 series of 32 x 96 px, projections, 3 volumes of
#: 32 x 96 x 96 float32) plus what the pipe holds (at most the ~230 messages of the run: < 4 MB
#: of data and headers); honouring any one claim would cost far more (a 65536 x 65536 frame is
#: 4 GiB, a bit per claimed frame number 128 GiB, a list of 2^40 lost numbers more still).
RSS_BOUND: Final = 50 * 2**20
OTHER_UIDS: Final = ("other-scan", "0" * 32, "~" * 256, "!")

Kind = Literal["malformed", "frame", "scan-end", "repeat-start", "passed-over"]
Mutation = Callable[[dict[str, Any], bytes], list[bytes]]


def rec() -> Recorded:
    """The valid scan (188 frames of 32 x 96 px, one re-taken projection series)."""
    return shared_recorded()


def n_frames() -> int:
    return len(rec().rows)


def claim_limit() -> int:
    """Frame numbers and frames_sent of the scan must be below / at most this."""
    return CLAIM_FACTOR * max(1, rec().plan.frames_planned())


def references() -> int:
    return sum(1 for kind, _ in rec().plan.order() if kind == "reference")


def other_uid() -> st.SearchStrategy[str]:
    uid = rec().scan_uid
    return st.sampled_from([*OTHER_UIDS, uid[:-1], uid + "-2"])


def scan_start_of(uid: str, *, plan: bool = True) -> ScanStart:
    r = rec()
    return ScanStart(
        scan_uid=uid,
        instrument=r.instrument,
        plan=r.plan if plan else None,
        dtype="uint16",
        shape=r.instrument.detector.shape,
    )


# ------------------------------------------------------------------------------------------------
# hostile messages


@dataclass(frozen=True)
class Hostile:
    """One hostile message, sent just before valid message ``slot`` (0: the scan-start,
    1 + i: frame i, n + 1: the scan-end). ``uid`` and ``number`` (frame_number or frames_sent)
    are set for valid frames and scan-ends."""

    slot: int
    kind: Kind
    what: str
    uid: str = ""
    number: int = -1
    parts: tuple[bytes, ...] = field(default=(), repr=False)


def dumps(header: Any) -> bytes:
    """JSON as Python writes it, NaN and Infinity included (they make a header malformed)."""
    return json.dumps(header, allow_nan=True, separators=(",", ":")).encode()


def padded(header: bytes, size: int) -> bytes:
    """The same JSON object, ``size`` bytes long (whitespace before its closing brace)."""
    assert header.endswith(b"}")
    assert len(header) <= size
    return header[:-1] + b" " * (size - len(header)) + b"}"


def tags_of(i: int) -> dict[str, Any]:
    """Frame ``i``'s tags as a mapping (every ``TAG_FIELDS`` name)."""
    row = rec().rows[i]
    return {name: row[name].item() for name in TAG_FIELDS}


def frame_bytes(i: int) -> bytes:
    return rec().frames[i].tobytes()


def encoded_frame(
    uid: str,
    tags: dict[str, Any],
    number: int,
    *,
    dtype: str = "uint16",
    shape: tuple[int, int] = (32, 96),
    row_offset: int = 0,
    data: bytes | None = None,
    fill: int = 0,
    header_size: int | None = None,
) -> tuple[bytes, bytes]:
    """A valid frame message (ValueError if it is not): the header validated by
    ``frame_header``; the data ``data`` or ``fill`` bytes of the length dtype and shape say."""
    header = encode_header(
        frame_header(
            uid, tags, frame_number=number, dtype=dtype, shape=shape, row_offset=row_offset
        )
    )
    if header_size is not None:
        header = padded(header, header_size)
    nbytes = shape[0] * shape[1] * PIXEL_DTYPES[dtype].itemsize
    if data is None:
        data = bytes([fill]) * nbytes
    assert len(data) == nbytes
    return header, data


def _set(path: str, value: Any) -> Mutation:
    """The header with the (dotted) field ``path`` set to ``value``."""

    def mutate(h: dict[str, Any], data: bytes) -> list[bytes]:
        h = copy.deepcopy(h)
        *outer, last = path.split(".")
        inner = h
        for key in outer:
            inner = inner[key]
        inner[last] = value
        return [dumps(h), data]

    return mutate


def _drop(path: str) -> Mutation:
    def mutate(h: dict[str, Any], data: bytes) -> list[bytes]:
        h = copy.deepcopy(h)
        *outer, last = path.split(".")
        inner = h
        for key in outer:
            inner = inner[key]
        del inner[last]
        return [dumps(h), data]

    return mutate


def _update(**values: Any) -> Mutation:
    return lambda h, data: [dumps({**h, **values}), data]


def _literal(name: str, literal: bytes) -> Mutation:
    """The field ``name`` written as the raw JSON ``literal`` (1e400: valid JSON, not finite)."""

    def mutate(h: dict[str, Any], data: bytes) -> list[bytes]:
        raw = dumps({**h, name: "@@"})
        return [raw.replace(b'"@@"', literal, 1), data]

    return mutate


def _other_type(h: dict[str, Any], data: bytes) -> list[bytes]:
    kinds = ["scan-start", "frame", "scan-end", "live-slices"]
    return [dumps({**h, "type": kinds[(kinds.index(h["type"]) + 1) % 4]}), data]


#: Malformations of any message (§4): the envelope, the parts, the JSON, the common fields.
ANY_MALFORMED: Final[dict[str, Mutation]] = {
    "1 part": lambda h, data: [dumps(h)],
    "3 parts": lambda h, data: [dumps(h), data, b""],
    "4 parts": lambda h, data: [dumps(h), data, data, data],
    "not JSON": lambda h, data: [b"{not json", data],
    "truncated JSON": lambda h, data: [dumps(h)[:-1], data],
    "not UTF-8": lambda h, data: [b"\xff" + dumps(h), data],
    "latin-1 text": lambda h, data: [dumps(h).replace(b"}", b',"x":"\xe9"}'), data],
    "UTF-8 BOM": lambda h, data: [b"\xef\xbb\xbf" + dumps(h), data],
    "JSON array": lambda h, data: [dumps([h]), data],
    "JSON null": lambda h, data: [b"null", data],
    "JSON number": lambda h, data: [b"2", data],
    "empty header": lambda h, data: [b"", data],
    "empty parts": lambda h, data: [b"", b""],
    "NaN version": _set("version", math.nan),
    "Infinity version": _set("version", math.inf),
    "protocol other": _set("protocol", "talbot-stream-2"),
    "protocol case": _set("protocol", "Talbot-Stream"),
    "protocol null": _set("protocol", None),
    "no protocol": _drop("protocol"),
    "version 1": _set("version", 1),
    "version 3": _set("version", 3),
    "version '2'": _set("version", "2"),
    "version true": _set("version", True),
    "version [2]": _set("version", [2]),
    "no version": _drop("version"),
    "type bogus": _set("type", "bogus"),
    "type upper case": lambda h, data: [dumps({**h, "type": str(h["type"]).upper()}), data],
    "type of another message": _other_type,
    "no type": _drop("type"),
    "unknown field": _update(angle_idx=3),
    "unknown field null": _update(comment=None),
    "no scan_uid": _drop("scan_uid"),
    "scan_uid empty": _set("scan_uid", ""),
    "scan_uid with a space": _set("scan_uid", "a b"),
    "scan_uid not ASCII": _set("scan_uid", "scan-\u00e9"),
    "scan_uid NUL": _set("scan_uid", "scan\x00"),
    "scan_uid 257 chars": _set("scan_uid", "x" * 257),
    "scan_uid a number": _set("scan_uid", 12345),
    "header over 64 KiB": lambda h, data: [padded(dumps(h), MAX_HEADER_BYTES + 1), data],
}

#: Malformations of a frame message (§2.2, §4).
FRAME_MALFORMED: Final[dict[str, Mutation]] = {
    "NaN g2_position_m": _set("g2_position_m", math.nan),
    "Infinity rotation_deg": _set("rotation_deg", math.inf),
    "-Infinity timestamp_s": _set("timestamp_s", -math.inf),
    "1e400 rotation_deg": _literal("rotation_deg", b"1e400"),
    "-1e400 g2_position_m": _literal("g2_position_m", b"-1e400"),
    "1e400 ring_current_ma": _literal("ring_current_ma", b"1e400"),
    **{f"no {name}": _drop(name) for name in [*TAG_FIELDS, "frame_number", "dtype", "shape"]},
    "frame_number 3.0": _set("frame_number", 3.0),
    "frame_number '3'": _set("frame_number", "3"),
    "frame_number true": _set("frame_number", True),
    "frame_number null": _set("frame_number", None),
    "frame_number -1": _set("frame_number", -1),
    "frame_number 2^53 + 1": _set("frame_number", MAX_NUMBER + 1),
    "frame_number 2^64": _set("frame_number", 2**64),
    "image_key 3": _set("image_key", 3),
    "image_key -1": _set("image_key", -1),
    "image_key '0'": _set("image_key", "0"),
    "image_key null": _set("image_key", None),
    "angle_index -2": _set("angle_index", -2),
    "angle_index 2^31": _set("angle_index", INT32_MAX + 1),
    "series_index -2": _set("series_index", -2),
    "series_index 1.5": _set("series_index", 1.5),
    "step_index -2": _set("step_index", -2),
    "step_index 2^31": _set("step_index", INT32_MAX + 1),
    "attempt -1": _set("attempt", -1),
    "attempt 2^31": _set("attempt", INT32_MAX + 1),
    "attempt false": _set("attempt", False),
    "g2_position_m a string": _set("g2_position_m", "0.0"),
    "rotation_deg null": _set("rotation_deg", None),
    "ring_current_ma negative": _set("ring_current_ma", -0.5),
    "superseded 1": _set("superseded", 1),
    "superseded 'false'": _set("superseded", "false"),
    "projection without angle": _update(image_key=0, angle_index=-1, step_index=0),
    "projection without step": _update(image_key=0, angle_index=0, step_index=-1),
    "reference without series": _update(image_key=1, series_index=-1, step_index=0),
    "reference without step": _update(image_key=1, series_index=0, step_index=-1),
    "dtype int16": _set("dtype", "int16"),
    "dtype >u2": _set("dtype", ">u2"),
    "dtype UINT16": _set("dtype", "UINT16"),
    "dtype null": _set("dtype", None),
    "shape of 1": _set("shape", [32]),
    "shape of 3": _set("shape", [32, 96, 1]),
    "shape floats": _set("shape", [32.0, 96.0]),
    "shape a string": _set("shape", "32x96"),
    "shape 0 rows": _set("shape", [0, 96]),
    "shape 65537 columns": _set("shape", [1, MAX_SIDE + 1]),
    "row_offset -1": _set("row_offset", -1),
    "row_offset 65537": _set("row_offset", MAX_SIDE + 1),
    "data 1 byte long": lambda h, data: [dumps(h), data + b"\0"],
    "data 1 byte short": lambda h, data: [dumps(h), data[:-1]],
    "data empty": lambda h, data: [dumps(h), b""],
    "data of uint16 declared float64": _set("dtype", "float64"),
    "data of uint16 declared uint8": _set("dtype", "uint8"),
    "shape 65536 x 65536, 16 bytes": lambda h, data: [
        dumps({**h, "shape": [MAX_SIDE] * 2}),
        data[:16],
    ],
    "shape 65536 x 65536 float64, exact-looking rows": lambda h, data: [
        dumps({**h, "shape": [MAX_SIDE, MAX_SIDE], "dtype": "float64"}),
        data,
    ],
}

#: Malformations of a scan-end message (§2.3, §4).
END_MALFORMED: Final[dict[str, Mutation]] = {
    "data part": lambda h, data: [dumps(h), b"\0"],
    "frames_sent -1": _set("frames_sent", -1),
    "frames_sent 2^53 + 1": _set("frames_sent", MAX_NUMBER + 1),
    "frames_sent 188.0": _set("frames_sent", 188.0),
    "frames_sent '188'": _set("frames_sent", "188"),
    "frames_sent true": _set("frames_sent", True),
    "frames_sent null": _set("frames_sent", None),
    "frames_sent NaN": _set("frames_sent", math.nan),
    "frames_sent 1e400": _literal("frames_sent", b"1e400"),
    "no frames_sent": _drop("frames_sent"),
}

#: Malformations of a scan-start message (§2.1, §4).
START_MALFORMED: Final[dict[str, Mutation]] = {
    "data part": lambda h, data: [dumps(h), b"x"],
    "shape not the detector's": _set("shape", [32, 95]),
    "detector shape not the shape": _set("instrument.detector.shape", [16, 96]),
    "no instrument": _drop("instrument"),
    "no plan": _drop("plan"),
    "no dtype": _drop("dtype"),
    "dtype int16": _set("dtype", "int16"),
    "plan.steps 2": _set("plan.steps", 2),
    "plan.steps 5.0": _set("plan.steps", 5.0),
    "plan.reference_every > angles": _set("plan.reference_every", 25),
    "plan.calibration_steps too few": _set("plan.calibration_steps", 5),
    "plan.angles 0": _set("plan.angles", 0),
    "plan unknown field": _set("plan.angle_count", 24),
    "plan a list": _set("plan", [5, 24]),
    "instrument g2 pitch off": _set("instrument.geometry.g2_pitch_m", 1.0),
    "instrument NaN energy": _set("instrument.geometry.energy_kev", math.nan),
    "frames_planned 1e400": _literal("frames_planned", b"1e400"),
    "talbot_order 3.0": _set("instrument.geometry.talbot_order", 3.0),
    "talbot_order even": _set("instrument.geometry.talbot_order", 2),
    "frames_planned -1": _set("frames_planned", -1),
    "frames_planned 183.0": _set("frames_planned", 183.0),
    "raw_file relative": _set("raw_file", "relative/scan.h5"),
    "raw_file NUL": _set("raw_file", "/scan\x00.h5"),
}


@functools.cache
def series_span(i: int) -> tuple[int, int]:
    """The first and last frame of frame ``i``'s series (its image key, index and attempt)."""
    rows = rec().rows
    keys = np.stack([rows[name] for name in ("image_key", "angle_index", "series_index")])
    same = np.all(keys == keys[:, i : i + 1], axis=0) & (rows["attempt"] == rows["attempt"][i])
    members = np.flatnonzero(same)
    return int(members[0]), int(members[-1])


def slot_near(draw: st.DrawFn, i: int) -> int:
    """Anywhere, or often among the frames of frame ``i``'s series (from just before its
    first frame to just before its last): where a stray frame could disturb an open series
    or take the number of a real frame still to come."""
    first, last = series_span(i)
    return draw(st.one_of(st.integers(first + 1, last + 1), st.integers(0, n_frames() + 1)))


@st.composite
def malformed(draw: st.DrawFn) -> Hostile:
    """A malformed message, of the scan's uid or another, anywhere."""
    uid = draw(st.one_of(st.just(rec().scan_uid), other_uid()))
    base = draw(st.sampled_from(["frame", "scan-end", "scan-start"]))
    slot = draw(st.integers(0, n_frames() + 1))
    if base == "frame":
        i = draw(st.integers(0, n_frames() - 1))
        slot = slot_near(draw, i)
        header = json.loads(encoded_frame(uid, tags_of(i), i)[0])
        data = frame_bytes(i)
        table = {**ANY_MALFORMED, **FRAME_MALFORMED}
    elif base == "scan-end":
        # within the bounds: were it not malformed, it would end the scan
        header = json.loads(encode_scan_end(ScanEnd(scan_uid=uid, frames_sent=n_frames()))[0])
        data = b""
        table = {**ANY_MALFORMED, **END_MALFORMED}
    else:
        # of another CT scan: were it not malformed, it would end the scan
        header = json.loads(encode_scan_start(scan_start_of(uid))[0])
        data = b""
        table = {**ANY_MALFORMED, **START_MALFORMED}
    name = draw(st.sampled_from(sorted(table)))
    parts = table[name](header, data)
    return Hostile(slot, "malformed", f"{base}: {name}", parts=tuple(parts))


FILLS: Final = (0, 0x7F, 0xFF)  # 0xFF: NaN pixels in float32 and float64


@st.composite
def foreign_frame(draw: st.DrawFn) -> Hostile:
    """A valid frame of another scan (anywhere), or of this scan before its scan-start."""
    before_start = draw(st.booleans())
    uid = rec().scan_uid if before_start else draw(other_uid())
    i = draw(st.integers(0, n_frames() - 1))
    slot = 0 if before_start else slot_near(draw, i)
    number = draw(st.one_of(st.just(i), st.integers(0, MAX_NUMBER)))
    header_size = draw(st.sampled_from([None, MAX_HEADER_BYTES]))
    if draw(st.booleans()):  # a copy of one of the scan's frames
        parts = encoded_frame(uid, tags_of(i), number, data=frame_bytes(i), header_size=header_size)
        what = f"frame {i} as {number}"
    else:
        shape = (draw(st.integers(1, 64)), draw(st.integers(1, 128)))
        dtype = draw(st.sampled_from(sorted(PIXEL_DTYPES)))
        fill = draw(st.sampled_from(FILLS))
        parts = encoded_frame(
            uid, tags_of(i), number, dtype=dtype, shape=shape, fill=fill, header_size=header_size
        )
        what = f"frame {i} as {number}, {dtype} {shape}"
    return Hostile(slot, "frame", what, uid=uid, number=number, parts=parts)


@st.composite
def foreign_end(draw: st.DrawFn) -> Hostile:
    """A valid scan-end of another scan (anywhere), or of this scan before its scan-start."""
    before_start = draw(st.booleans())
    uid = rec().scan_uid if before_start else draw(other_uid())
    slot = 0 if before_start else draw(st.integers(0, n_frames() + 1))
    sent = draw(st.integers(0, MAX_NUMBER))
    parts = encode_scan_end(ScanEnd(scan_uid=uid, frames_sent=sent))
    return Hostile(
        slot, "scan-end", f"frames_sent {sent}", uid=uid, number=sent, parts=tuple(parts)
    )


def _indices(image_key: ImageKey) -> list[int]:
    return [int(i) for i in np.flatnonzero(rec().rows["image_key"] == image_key)]


@st.composite
def unfitting_frame(draw: st.DrawFn) -> Hostile:
    """A valid frame of the scan that does not fit it: refused (a duplicate where its number
    was taken), with any attempt and dtype; before the scan-start, foreign."""
    r = rec()
    n, plan = n_frames(), r.plan
    reason = draw(
        st.sampled_from(["step", "angle", "series", "width", "rows", "row_offset", "claim"])
    )
    kinds = {"step": [ImageKey.PROJECTION, ImageKey.FLAT], "angle": [ImageKey.PROJECTION]}
    kinds["series"] = [ImageKey.FLAT]
    pool = [i for k in kinds.get(reason, list(ImageKey)) for i in _indices(k)]
    i = draw(st.sampled_from(sorted(pool)))
    slot = slot_near(draw, i)
    tags = tags_of(i)
    shape, row_offset = (32, 96), 0
    if reason == "step":
        if tags["image_key"] == ImageKey.PROJECTION:
            steps = plan.series_steps(("projection", int(tags["angle_index"])))
        else:
            steps = plan.series_steps(("reference", int(tags["series_index"])))
        tags["step_index"] = draw(st.integers(steps, INT32_MAX))
    elif reason == "angle":
        tags["angle_index"] = draw(st.integers(plan.angles, INT32_MAX))
    elif reason == "series":
        tags["series_index"] = draw(st.integers(references(), INT32_MAX))
    elif reason == "width":
        shape = (draw(st.integers(1, 32)), draw(st.integers(1, 1024).filter(lambda c: c != 96)))
    elif reason == "rows":
        shape = (draw(st.integers(1, 31)), 96)
    elif reason == "row_offset":
        shape = (draw(st.integers(1, 32)), 96)
        row_offset = draw(st.integers(1, MAX_SIDE))
    if draw(st.booleans()):
        tags["attempt"] = draw(st.integers(0, INT32_MAX))  # must discard no real series
    if reason == "claim":
        number = draw(st.integers(claim_limit(), MAX_NUMBER))
    else:  # its base frame's number, one taken or still to come, or one no frame has
        numbers = st.integers(0, n - 1), st.integers(n, claim_limit() - 1)
        number = draw(st.one_of(st.just(i), *numbers))
    dtype = draw(st.sampled_from(sorted(PIXEL_DTYPES)))
    fill = draw(st.sampled_from(FILLS))
    data = frame_bytes(i) if (dtype, shape) == ("uint16", (32, 96)) and fill == 0 else None
    parts = encoded_frame(
        r.scan_uid, tags, number, dtype=dtype, shape=shape, row_offset=row_offset, data=data,
        fill=fill,
    )  # fmt: skip
    what = f"frame {i} as {number}: {reason}, attempt {tags['attempt']}, {dtype} {shape}"
    return Hostile(slot, "frame", what, uid=r.scan_uid, number=number, parts=parts)


@st.composite
def resent_frame(draw: st.DrawFn) -> Hostile:
    """An exact re-send of a frame of the scan, after the frame itself: a duplicate."""
    i = draw(st.integers(0, n_frames() - 1))
    slot = draw(st.integers(i + 2, n_frames() + 1))
    parts = encoded_frame(rec().scan_uid, tags_of(i), i, data=frame_bytes(i))
    return Hostile(
        slot, "frame", f"re-send of frame {i}", uid=rec().scan_uid, number=i, parts=parts
    )


@st.composite
def claiming_end(draw: st.DrawFn) -> Hostile:
    """A scan-end of the scan claiming more frames than the plan allows: refused (foreign
    before the scan-start)."""
    slot = draw(st.integers(0, n_frames() + 1))
    sent = draw(st.integers(claim_limit() + 1, MAX_NUMBER))
    parts = encode_scan_end(ScanEnd(scan_uid=rec().scan_uid, frames_sent=sent))
    return Hostile(
        slot, "scan-end", f"frames_sent {sent}", uid=rec().scan_uid, number=sent, parts=tuple(parts)
    )


@st.composite
def repeated_start(draw: st.DrawFn) -> Hostile:
    """The scan's scan-start again, after it: ignored."""
    slot = draw(st.integers(1, n_frames() + 1))
    parts = encode_scan_start(scan_start_of(rec().scan_uid))
    return Hostile(slot, "repeat-start", "scan-start again", parts=tuple(parts))


@st.composite
def planless_start(draw: st.DrawFn) -> Hostile:
    """Before the scan: the scan-start of a run that is not a CT (no plan): passed over."""
    uid = draw(other_uid())
    parts = encode_scan_start(scan_start_of(uid, plan=False))
    return Hostile(0, "passed-over", f"scan-start of {uid} without a plan", parts=tuple(parts))


HOSTILE: Final = st.one_of(
    malformed(),
    foreign_frame(),
    foreign_end(),
    unfitting_frame(),
    unfitting_frame(),  # twice as often: the frames the reconstructor must look into
    resent_frame(),
    claiming_end(),
    repeated_start(),
    planless_start(),
)


# ------------------------------------------------------------------------------------------------
# what the protocol says must happen


@dataclass
class Expected:
    """The counts docs/stream-protocol.md prescribes for the valid scan plus ``hostile``."""

    malformed: int = 0  # every malformed message (receiver and service)
    malformed_in_scan: int = 0  # of which after the scan-start (the scan's own count)
    foreign: int = 0
    foreign_in_scan: int = 0
    bad_frames: int = 0
    refused_ends: int = 0
    duplicates: int = 0
    passed_over: int = 0
    messages: Counter[str] = field(default_factory=Counter)  # valid messages by type


def expected(hostile: Sequence[Hostile]) -> Expected:
    """Classify each hostile message by the rules alone: its slot says whether the scan has
    started and which of the scan's frames were sent before it (frame i goes at slot i + 1)."""
    n, uid = n_frames(), rec().scan_uid
    e = Expected(messages=Counter(ScanStart=1, Frame=n, ScanEnd=1))
    for h in hostile:
        in_scan = h.slot > 0
        if h.kind == "malformed":
            e.malformed += 1
            e.malformed_in_scan += in_scan
            continue
        e.messages[{"frame": "Frame", "scan-end": "ScanEnd"}.get(h.kind, "ScanStart")] += 1
        if h.kind == "passed-over":
            e.passed_over += 1
        elif h.kind in ("frame", "scan-end") and (not in_scan or h.uid != uid):
            e.foreign += 1
            e.foreign_in_scan += in_scan
        elif h.kind == "scan-end":
            assert h.number > claim_limit()  # (the strategies make only such)
            e.refused_ends += 1
        elif h.kind == "frame":
            if h.number < h.slot - 1:  # the scan's frame of that number came before
                e.duplicates += 1
            else:  # a frame of the scan that does not fit it takes no number
                e.bad_frames += 1
    return e


# ------------------------------------------------------------------------------------------------
# streaming


@dataclass
class Run:
    results: list[StreamResult]
    recon: StreamingReconstructor
    received: ReceiveStats

    @property
    def result(self) -> StreamResult:
        (result,) = self.results
        return result


def stream(hostile: Sequence[Hostile]) -> Run:
    """Publish the valid scan with ``hostile`` in their slots (one thread, one PUSH socket, so
    in this order) to a fresh reconstructor on a PULL socket; its run of one scan."""
    r = rec()
    n = n_frames()
    at: dict[int, list[Hostile]] = {}
    for h in hostile:
        at.setdefault(h.slot, []).append(h)
    pub = FramePublisher(frame_bytes=r.frame_bytes, send_timeout_s=SEND_TIMEOUT_S)
    rx = FrameReceiver(pub.endpoint, frame_bytes=r.frame_bytes)
    failed: list[BaseException] = []

    def detector() -> None:
        try:
            for slot in range(n + 2):
                for h in at.get(slot, []):
                    pub.send_raw(list(h.parts))
                if slot == 0:
                    pub.start_scan(r.scan_uid, r.instrument, r.plan)
                elif slot <= n:
                    pub.publish(r.frames[slot - 1], r.rows[slot - 1], frame_number=slot - 1)
                else:
                    pub.end_scan()
        except BaseException as exc:  # reported by the test, not lost in the thread
            failed.append(exc)

    recon = StreamingReconstructor(live_rows=())
    thread = threading.Thread(target=detector, name="hostile-detector", daemon=True)
    thread.start()
    try:
        results = recon.run(rx, idle_timeout_s=60)
    finally:
        thread.join(timeout=2 * SEND_TIMEOUT_S)
        pub.close()
        rx.close()
    assert not thread.is_alive(), "the publisher is still sending"
    assert not failed, f"publishing failed: {failed[0]!r}"
    return Run(results, recon, rx.stats)


@functools.cache
def alone() -> StreamResult:
    """The valid scan streamed alone through the same path (once per test process)."""
    run = stream([])
    assert run.received.malformed == 0
    result = run.result
    assert result.outcome == "complete"
    return result


def assert_bit_identical(result: StreamResult, want: StreamResult) -> None:
    got_v, want_v = result.volumes, want.volumes
    assert got_v is not None
    assert want_v is not None
    for name in NAMES:
        np.testing.assert_array_equal(getattr(got_v, name), getattr(want_v, name), err_msg=name)
    got_p, want_p = result.projections, want.projections
    assert got_p is not None
    assert want_p is not None
    for name in ("transmission", "dphi", "darkfield"):
        if hasattr(want_p, name):
            np.testing.assert_array_equal(getattr(got_p, name), getattr(want_p, name), name)


def check(run: Run, hostile: Sequence[Hostile]) -> None:
    """The run's counts are the expected ones and its volume is the scan's alone."""
    want = alone()
    e = expected(hostile)
    assert len(run.results) == 1
    result, recon, received = run.result, run.recon, run.received
    assert result.scan_uid == rec().scan_uid
    s, t = result.stats, recon.totals
    assert (received.malformed, t.malformed, s.malformed) == (
        e.malformed,
        e.malformed,
        e.malformed_in_scan,
    ), received.malformed_fields
    assert (t.foreign, s.foreign) == (e.foreign, e.foreign_in_scan)
    assert (s.bad_frames, s.refused_ends, t.refused) == (
        e.bad_frames,
        e.refused_ends,
        e.bad_frames + e.refused_ends,
    )
    assert s.duplicates == e.duplicates
    assert t.passed_over == e.passed_over
    assert received.messages == e.messages
    n = n_frames()
    assert (s.frames, s.frames_sent, s.lost_count, s.lost, s.from_file) == (n, n, 0, [], 0)
    w = want.stats
    assert (s.superseded, s.projections, s.references) == (
        w.superseded,
        w.projections,
        w.references,
    )
    assert (s.incomplete_series, s.unusable_series) == (0, 0)
    assert result.outcome == "complete", result.error
    assert t.outcomes == Counter(complete=1)
    assert_bit_identical(result, want)


# ------------------------------------------------------------------------------------------------
# the tests


@settings(
    max_examples=50,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    hostile=st.integers(0, MAX_HOSTILE).flatmap(lambda k: st.lists(HOSTILE, min_size=k, max_size=k))
)
def test_hostile_messages_are_dropped_counted_exactly_and_change_nothing(
    hostile: list[Hostile],
) -> None:
    check(stream(hostile), hostile)


def huge_claims() -> list[Hostile]:
    """Messages that claim huge sizes, each at the start, in the middle and before the end."""
    r = rec()
    uid, n, limit = r.scan_uid, n_frames(), claim_limit()
    projection = _indices(ImageKey.PROJECTION)[0]
    flat = _indices(ImageKey.FLAT)[-1]
    big = {"angle_index": INT32_MAX, "series_index": -1, "step_index": INT32_MAX}
    base = json.loads(encoded_frame(uid, tags_of(projection), projection)[0])
    out: list[Hostile] = []
    for slot in (0, 1, n // 2, n + 1):

        def add(kind: Kind, what: str, parts: Sequence[bytes], who: str = "", k: int = -1) -> None:
            out.append(Hostile(slot, kind, what, uid=who, number=k, parts=tuple(parts)))  # noqa: B023

        for sent in (2**40, MAX_NUMBER, limit + 1):
            add(
                "scan-end",
                "claim",
                encode_scan_end(ScanEnd(scan_uid=uid, frames_sent=sent)),
                uid,
                sent,
            )
        add(
            "scan-end",
            "foreign",
            encode_scan_end(ScanEnd(scan_uid="x", frames_sent=MAX_NUMBER)),
            "x",
            MAX_NUMBER,
        )
        for number in (MAX_NUMBER, limit):
            frame = encoded_frame(uid, tags_of(projection), number, data=frame_bytes(projection))
            add("frame", "frame number", frame, uid, number)
        steps = encoded_frame(uid, {**tags_of(projection), **big, "attempt": INT32_MAX}, n + 1)
        add("frame", "indices", steps, uid, n + 1)
        series = encoded_frame(uid, {**tags_of(flat), "series_index": INT32_MAX}, n + 2)
        add("frame", "series", series, uid, n + 2)
        wide = encoded_frame(uid, tags_of(flat), n + 3, dtype="uint8", shape=(1, MAX_SIDE))
        add("frame", "1 x 65536", wide, uid, n + 3)
        offset = encoded_frame(uid, tags_of(flat), n + 4, shape=(32, 96), row_offset=MAX_SIDE)
        add("frame", "row offset 65536", offset, uid, n + 4)
        tall = encoded_frame("x", tags_of(flat), MAX_NUMBER, dtype="uint8", shape=(MAX_SIDE, 1))
        add("frame", "65536 x 1 foreign", tall, "x", MAX_NUMBER)
        near = encoded_frame("x", tags_of(flat), MAX_NUMBER, header_size=MAX_HEADER_BYTES)
        add("frame", "64 KiB header", near, "x", MAX_NUMBER)
        for mutate in (
            FRAME_MALFORMED["shape 65536 x 65536, 16 bytes"],
            FRAME_MALFORMED["shape 65536 x 65536 float64, exact-looking rows"],
            ANY_MALFORMED["header over 64 KiB"],
            _update(frame_number=MAX_NUMBER + 1),
            _update(shape=[MAX_SIDE + 1, MAX_SIDE + 1]),
        ):
            add("malformed", "huge", mutate(base, frame_bytes(projection)))
    return out


def _resident_bytes() -> int:
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux /proc")
def test_messages_claiming_huge_sizes_cost_no_memory_in_proportion() -> None:
    hostile = huge_claims()
    alone()
    check(stream(hostile), hostile)  # warm: imports, allocator pools, logging, error paths
    gc.collect()
    before = _resident_bytes()
    peak = [before]
    done = threading.Event()

    def sample() -> None:  # the peak while the scan runs, not only its end
        while not done.is_set():
            peak[0] = max(peak[0], _resident_bytes())
            time.sleep(0.001)

    sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
    sampler.start()
    try:
        run = stream(hostile)
    finally:
        done.set()
        sampler.join()
    after = _resident_bytes()
    check(run, hostile)
    e = expected(hostile)
    assert (e.refused_ends, e.bad_frames, e.malformed) == (9, 18, 20)  # the claims all arrived
    assert peak[0] - before < RSS_BOUND, f"peak {(peak[0] - before) / 2**20:.1f} MiB"
    assert after - before < RSS_BOUND, f"growth {(after - before) / 2**20:.1f} MiB"


#: Malformed by §2 and §4 ("integers must be JSON integers (3, not 3.0, "3" or true)") where a
#: plain comparison or pydantic's strict mode would admit them: ``version`` 2.0 (2.0 == 2) and
#: 1.0 or true for the IntEnum ``image_key``.
LOOKALIKE_INTEGERS: Final[dict[str, dict[str, Any]]] = {
    "version 2.0": {"version": 2.0},
    "image_key 1.0": {"image_key": 1.0, "series_index": 0, "step_index": 0},
    "image_key true": {"image_key": True, "series_index": 0, "step_index": 0},
}


@pytest.mark.parametrize("name", sorted(LOOKALIKE_INTEGERS))
def test_an_integer_written_as_a_float_or_a_boolean_is_malformed(name: str) -> None:
    """A frame of another scan whose only fault is such an integer: malformed, not foreign."""
    i = _indices(ImageKey.FLAT)[0]
    header = json.loads(encoded_frame("other-scan", tags_of(i), i)[0])
    parts = (dumps({**header, **LOOKALIKE_INTEGERS[name]}), frame_bytes(i))
    hostile = [Hostile(1, "malformed", name, parts=parts)]
    check(stream(hostile), hostile)
