"""The frame-stream messages (protocol ``talbot-stream``, version 2): typed, validated, versioned.

Every message has exactly two parts ``[JSON header (UTF-8), raw buffer]``. The buffer is empty
except in ``frame`` messages (the frame in C order (rows, columns), little-endian) and
``live-slices`` (float32 (channels, rows, n, n)). The header's ``type`` says which model
validates it; ``docs/schema/*.schema.json`` are these models' JSON Schemas and
``docs/stream-protocol.md`` the prose. Never pickle: a header is strict JSON; a malformed message
raises :class:`MessageError` naming the field.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import numpy as np
import zmq
from numpy.typing import NDArray
from pydantic import ConfigDict, Field, StringConstraints, ValidationError

from contracts.base import Frozen, first_error
from contracts.frames import PIXEL_DTYPES, TAG_FIELDS, FrameTags, ImageKey, PixelType
from contracts.instrument import Instrument
from contracts.scanplan import ScanPlan

#: Protocol name and version carried in every header (``protocol``, ``version``).
PROTOCOL: Final = "talbot-stream"
VERSION: Final = 2


#: Largest frame buffer a receiver accepts by default [bytes] (4096 x 4096 x 4 bytes).
MAX_FRAME_BYTES: Final = 64 * 2**20
#: Largest JSON header [bytes].
MAX_HEADER_BYTES: Final = 2**16
#: Largest number of rows or columns.
MAX_SIDE: Final = 65536

MESSAGE_TYPES: Final = ("scan-start", "frame", "scan-end", "live-slices")

ScanUid = Annotated[
    str,
    StringConstraints(min_length=1, max_length=256, pattern=r"^[\x21-\x7e]+$"),
    Field(description="scan identity (the bluesky run start uid); printable ASCII, no spaces"),
]
Side = Annotated[int, Field(ge=1, le=MAX_SIDE)]


class MessageError(ValueError):
    """A stream message is malformed; ``field`` names the offending header field (or part)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class _Header(Frozen):
    model_config = ConfigDict(strict=True)

    protocol: Literal["talbot-stream"] = Field(default=PROTOCOL, description="always talbot-stream")
    version: Literal[2] = Field(default=VERSION, description="protocol version")
    scan_uid: ScanUid


class ScanStart(_Header):
    """``scan-start``: a scan's identity, instrument, plan and frame format. Frame numbers of
    the scan start at 0 (or where the publisher says, after a restart). A publisher repeats
    the scan-start of the scan in progress to a consumer that connects mid-scan; a consumer
    ignores a scan-start of the scan it is already following."""

    type: Literal["scan-start"] = "scan-start"
    instrument: Instrument
    plan: ScanPlan | None = Field(description="the plan as it ran; null: not a phase-stepping CT")
    dtype: PixelType = Field(description="pixel type of every frame (little-endian)")
    shape: tuple[Side, Side] = Field(description="(rows, columns) of a full frame")
    frames_planned: int | None = Field(
        default=None, ge=0, description="frames the publisher expects to send, when it knows"
    )
    raw_file: str | None = Field(
        default=None,
        min_length=2,
        max_length=4096,
        pattern=r"^/[^\x00]*$",
        description="absolute path of the raw scan file (HDF5, SWMR) that every frame is written "
        "to before it is published, where the consumer can read it: a late or restarted consumer "
        "catches up from it; null: none",
    )

    @property
    def frame_bytes(self) -> int:
        """Size of one frame buffer [bytes]."""
        return self.shape[0] * self.shape[1] * PIXEL_DTYPES[self.dtype].itemsize


class FrameHeader(FrameTags, _Header):
    """``frame``: the frame's tags (``contracts.frames.FrameTags``) and its format.

    ``row_offset`` > 0 only on a row slab forwarded by a relay: the buffer then holds detector
    rows ``row_offset .. row_offset + shape[0] - 1``.
    """

    type: Literal["frame"] = "frame"
    dtype: PixelType = Field(description="pixel type (little-endian)")
    shape: tuple[Side, Side] = Field(description="(rows, columns) of this buffer")
    row_offset: int = Field(default=0, ge=0, le=MAX_SIDE, description="first detector row")


class ScanEnd(_Header):
    """``scan-end``: frame numbers 0 .. frames_sent-1 were published (some may be lost)."""

    type: Literal["scan-end"] = "scan-end"
    frames_sent: int = Field(ge=0, le=2**53, description="one more than the last frame number")


class LiveSlicesHeader(_Header):
    """``live-slices`` header: the live reconstruction of some detector rows after
    ``projections`` of ``angles_planned`` projections; data float32 (channels, rows, n, n)."""

    type: Literal["live-slices"] = "live-slices"
    channels: list[Annotated[str, StringConstraints(min_length=1, max_length=32)]] = Field(
        max_length=8
    )
    rows: list[Annotated[int, Field(ge=0, le=MAX_SIDE)]] = Field(max_length=64)
    projections: int = Field(ge=0)
    angles_planned: int = Field(ge=1)
    voxel_size_m: float = Field(gt=0)
    dtype: Literal["float32"]
    shape: tuple[Side, Side, Side, Side] = Field(description="(channels, rows, n, n)")


def frame_header(
    scan_uid: str,
    tags: Mapping[str, Any] | np.void,
    *,
    frame_number: int,
    dtype: str,
    shape: tuple[int, int],
    row_offset: int = 0,
) -> FrameHeader:
    """A validated ``frame`` header from a frame's tags (every ``TAG_FIELDS`` name: a mapping or
    a frame-table row). ValueError naming the field when a tag is missing or out of range."""
    values: dict[str, Any] = {}
    for name, dt in TAG_FIELDS.items():
        try:
            value = tags[name]
        except (KeyError, ValueError, IndexError):
            raise ValueError(f"tags lack the field {name!r}") from None
        values[name] = int(value) if dt.kind == "i" else float(value)
    try:
        values["image_key"] = ImageKey(values["image_key"])
        return FrameHeader(
            scan_uid=scan_uid,
            frame_number=frame_number,
            dtype=dtype,  # type: ignore[arg-type]
            shape=shape,
            row_offset=row_offset,
            **values,
        )
    except ValidationError as exc:
        raise ValueError(str(validation_error(exc))) from None
    except ValueError as exc:  # not an ImageKey
        raise ValueError(f"image_key: {exc}") from None


_MODELS: Final[dict[str, type[_Header]]] = {
    "scan-start": ScanStart,
    "frame": FrameHeader,
    "scan-end": ScanEnd,
    "live-slices": LiveSlicesHeader,
}


@dataclass(frozen=True)
class Frame:
    """A ``frame`` message: header and the frame (rows, columns), read-only, zero-copy."""

    header: FrameHeader
    data: NDArray[np.generic]


@dataclass(frozen=True)
class LiveSlices:
    """A ``live-slices`` message: ``data`` (channels, rows, n, n) float32, (y, x)."""

    scan_uid: str
    channels: tuple[str, ...]
    rows: tuple[int, ...]
    projections: int
    angles_planned: int
    voxel_size_m: float
    data: NDArray[np.float32]


Message = ScanStart | Frame | ScanEnd | LiveSlices


# ------------------------------------------------------------------------------------------------
# encode


def encode_header(header: _Header) -> bytes:
    """A header as compact UTF-8 JSON."""
    return header.model_dump_json().encode()


def encode_scan_start(start: ScanStart) -> list[bytes]:
    """The two parts of a ``scan-start`` message."""
    return [encode_header(start), b""]


def encode_scan_end(end: ScanEnd) -> list[bytes]:
    """The two parts of a ``scan-end`` message."""
    return [encode_header(end), b""]


def encode_live(live: LiveSlices) -> list[Any]:
    """The two parts of a ``live-slices`` message (the data part is the float32 array)."""
    data = np.ascontiguousarray(live.data, dtype="<f4")
    header = LiveSlicesHeader(
        dtype="float32",
        scan_uid=live.scan_uid,
        channels=list(live.channels),
        rows=list(live.rows),
        projections=live.projections,
        angles_planned=live.angles_planned,
        voxel_size_m=live.voxel_size_m,
        shape=data.shape,
    )
    return [encode_header(header), data]


# ------------------------------------------------------------------------------------------------
# decode


def _reject_constant(name: str) -> float:
    raise MessageError("header", f"JSON constant {name} is not allowed")


def _envelope(raw: bytes) -> str:
    """Check the header's envelope (JSON object, protocol, version, type); returns the type."""
    if len(raw) > MAX_HEADER_BYTES:
        raise MessageError("header", f"longer than {MAX_HEADER_BYTES} bytes")
    try:
        h = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except MessageError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise MessageError("header", f"not valid UTF-8 JSON ({exc})") from None
    if not isinstance(h, dict):
        raise MessageError("header", "must be a JSON object")
    if h.get("protocol") != PROTOCOL:
        raise MessageError("protocol", f"must be {PROTOCOL!r}, got {h.get('protocol')!r}")
    if type(h.get("version")) is not int or h.get("version") != VERSION:  # (not 2.0, not true)
        raise MessageError("version", f"must be {VERSION}, got {h.get('version')!r}")
    kind = h.get("type")
    if kind not in MESSAGE_TYPES:
        raise MessageError("type", f"must be one of {list(MESSAGE_TYPES)}, got {kind!r}")
    # pydantic's strict mode admits 1.0 and true for an IntEnum: the protocol does not
    if kind == "frame" and "image_key" in h and type(h["image_key"]) is not int:
        raise MessageError("image_key", f"must be a JSON integer, got {h['image_key']!r}")
    return str(kind)


def validation_error(exc: ValidationError) -> MessageError:
    """The first error of a pydantic ValidationError as a MessageError naming the field."""
    field, reason = first_error(exc)
    return MessageError(field or "header", reason)


def _buffer(part: Any) -> memoryview:
    buf = part.buffer if isinstance(part, zmq.Frame) else part
    try:
        return memoryview(buf).cast("B")
    except TypeError:
        raise MessageError("data", "must be a bytes-like buffer") from None


def decode(parts: Sequence[Any], *, max_frame_bytes: int = MAX_FRAME_BYTES) -> Message:
    """Validate and decode one multipart message (bytes, memoryviews or ``zmq.Frame``s).

    The frame array is a zero-copy, read-only view of the data part. Raises ``MessageError``
    naming the offending field: ``parts``, ``header``, ``protocol``, ``version``, ``type``, any
    header field (dotted for nested ones, e.g. ``instrument.geometry.energy_kev``), or ``data``
    (buffer length against the declared dtype and shape).
    """
    if len(parts) != 2:
        raise MessageError("parts", f"a message has exactly 2 parts, got {len(parts)}")
    head = parts[0].bytes if isinstance(parts[0], zmq.Frame) else bytes(parts[0])
    kind = _envelope(head)
    try:
        header = _MODELS[kind].model_validate_json(head, strict=True)
    except ValidationError as exc:
        raise validation_error(exc) from None
    data = _buffer(parts[1])
    if isinstance(header, FrameHeader):
        return _frame(header, data, max_frame_bytes)
    if isinstance(header, LiveSlicesHeader):
        return _live(header, data, max_frame_bytes)
    if len(data):
        raise MessageError("data", f"a {kind} message has an empty data part, got {len(data)} B")
    if isinstance(header, ScanStart):
        if header.shape != header.instrument.detector.shape:
            raise MessageError(
                "shape", f"{header.shape} differs from the instrument's detector shape"
            )
        if header.frame_bytes > max_frame_bytes:
            raise MessageError(
                "shape", f"frames of {header.frame_bytes} B exceed the limit {max_frame_bytes} B"
            )
    assert isinstance(header, ScanStart | ScanEnd)
    return header


def _frame(header: FrameHeader, data: memoryview, max_bytes: int) -> Frame:
    rows, cols = header.shape
    dt = PIXEL_DTYPES[header.dtype]
    nbytes = rows * cols * dt.itemsize
    if nbytes > max_bytes:
        raise MessageError("shape", f"a frame of {nbytes} B exceeds the limit {max_bytes} B")
    if len(data) != nbytes:
        raise MessageError("data", f"{len(data)} B, but dtype and shape declare {nbytes} B")
    return Frame(header, np.frombuffer(data, dtype=dt).reshape(rows, cols))


def _live(header: LiveSlicesHeader, data: memoryview, max_bytes: int) -> LiveSlices:
    shape = header.shape
    if shape[0] != len(header.channels) or shape[1] != len(header.rows) or shape[2] != shape[3]:
        raise MessageError("shape", f"{shape} must be (channels, rows, n, n)")
    nbytes = 4 * math.prod(shape)
    if nbytes > max_bytes or len(data) != nbytes:
        raise MessageError("data", f"{len(data)} B, but the shape declares {nbytes} B")
    arr = np.frombuffer(data, dtype="<f4").reshape(shape)
    return LiveSlices(
        header.scan_uid,
        tuple(header.channels),
        tuple(header.rows),
        header.projections,
        header.angles_planned,
        header.voxel_size_m,
        arr,
    )


def message_schemas() -> dict[str, dict[str, Any]]:
    """The JSON Schema of each message header, by message type."""
    return {kind: model.model_json_schema() for kind, model in _MODELS.items()}
