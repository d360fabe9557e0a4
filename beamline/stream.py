"""The frame stream: a versioned ZeroMQ protocol for detector frames (DESIGN §3.2).

A contract module: it imports nothing from ``devices``, ``plans``, ``sim`` or ``recon`` (only the
other contracts ``beamline.config`` and ``beamline.scanfile``). The wire format is written down in
``docs/stream-protocol.md``; this module is one implementation of it.

Data path: PUSH (publisher, binds) -> PULL (consumer, connects), lossless with back-pressure. Every
message has exactly two parts ``[JSON header (UTF-8), raw buffer]``; the buffer is empty except in
``frame`` messages, where it holds the frame in C order (rows, columns), little-endian, sent
zero-copy. Message types: ``scan-start``, ``frame``, ``scan-end`` (data path) and ``live-slices``
(viewer PUB socket, high-water mark 1-2, so a slow viewer never slows the data).

Never pickle: a header is plain JSON validated field by field (``decode``); a malformed message
raises ``MessageError`` naming the field, and ``FrameReceiver`` counts and drops it.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final
from urllib.parse import urlsplit

import numpy as np
import zmq
from numpy.typing import NDArray
from pydantic import ValidationError

from beamline.config import Preset
from beamline.scanfile import FRAME_FIELDS, ImageKey

#: Protocol name and version carried in every header (``protocol``, ``version``).
PROTOCOL: Final = "talbot-stream"
VERSION: Final = 1

#: Frame pixel types allowed on the wire (always little-endian), name -> numpy dtype.
DTYPES: Final[dict[str, np.dtype]] = {
    "uint8": np.dtype("<u1"),
    "uint16": np.dtype("<u2"),
    "uint32": np.dtype("<u4"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}

#: Largest frame buffer a receiver accepts by default [bytes] (4096 x 4096 x 4 bytes).
MAX_FRAME_BYTES: Final = 64 * 2**20
#: Largest JSON header [bytes] (a scan-start carries the whole preset).
MAX_HEADER_BYTES: Final = 2**20
#: Largest number of rows or columns.
MAX_SIDE: Final = 65536
#: Default memory for the queues of one PUSH->PULL pipe [bytes]; see ``hwm_for``.
DEFAULT_QUEUE_BYTES: Final = 256 * 2**20
#: Default high-water mark of the live-view PUB socket [messages].
LIVE_HWM: Final = 2

MESSAGE_TYPES: Final = ("scan-start", "frame", "scan-end", "live-slices")


class MessageError(ValueError):
    """A stream message is malformed; ``field`` names the offending header field (or part)."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class StreamTimeout(TimeoutError):
    """A send did not complete within the publisher's ``send_timeout_s`` (back-pressure)."""


# ------------------------------------------------------------------------------------------------
# messages


@dataclass(frozen=True)
class ScanStart:
    """``scan-start``: identity, instrument (preset), planned schedule and frame format."""

    scan_uid: str
    preset: Preset
    dtype: str  # a DTYPES name
    shape: tuple[int, int]  # (rows, columns) of a full detector frame
    frames_planned: int | None = None

    @property
    def frame_bytes(self) -> int:
        """Size of one frame buffer [bytes]."""
        return self.shape[0] * self.shape[1] * DTYPES[self.dtype].itemsize


@dataclass(frozen=True)
class FrameHeader:
    """``frame`` header: identity, tags (``beamline.scanfile.FRAME_FIELDS``) and format.

    ``row_offset`` > 0 only on a row slab forwarded by a relay: the buffer then holds detector rows
    ``row_offset .. row_offset + shape[0] - 1``.
    """

    scan_uid: str
    frame_number: int
    image_key: int
    angle_index: int
    series_index: int
    step_index: int
    attempt: int
    g2_position_m: float
    rotation_deg: float
    timestamp_s: float
    ring_current_ma: float
    dtype: str
    shape: tuple[int, int]
    row_offset: int = 0

    def tags(self) -> dict[str, float | int]:
        """The tag values by ``FRAME_FIELDS`` name (what ``ScanFileWriter.append`` takes)."""
        return {name: getattr(self, name) for name in FRAME_FIELDS}


@dataclass(frozen=True)
class Frame:
    """A ``frame`` message: header and the frame (rows, columns), read-only, zero-copy."""

    header: FrameHeader
    data: NDArray[np.generic]


@dataclass(frozen=True)
class ScanEnd:
    """``scan-end``: frame numbers 0 .. frames_sent-1 were published."""

    scan_uid: str
    frames_sent: int


@dataclass(frozen=True)
class LiveSlices:
    """``live-slices``: the live reconstruction of some detector rows after ``projections`` of
    ``angles_planned`` projections; ``data`` (channels, rows, n, n) float32, (y, x)."""

    scan_uid: str
    channels: tuple[str, ...]
    rows: tuple[int, ...]
    projections: int
    angles_planned: int
    voxel_size_m: float
    data: NDArray[np.float32]


Message = ScanStart | Frame | ScanEnd | LiveSlices


# ------------------------------------------------------------------------------------------------
# validation helpers


def _int(h: Mapping[str, Any], name: str, lo: int, hi: int = 2**62) -> int:
    if name not in h:
        raise MessageError(name, "missing")
    v = h[name]
    if isinstance(v, bool) or not isinstance(v, int):
        raise MessageError(name, f"must be an integer, got {type(v).__name__}")
    if not lo <= v <= hi:
        raise MessageError(name, f"must be in [{lo}, {hi}], got {v}")
    return v


def _float(h: Mapping[str, Any], name: str, lo: float = -math.inf) -> float:
    if name not in h:
        raise MessageError(name, "missing")
    v = h[name]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise MessageError(name, f"must be a number, got {type(v).__name__}")
    v = float(v)
    if not math.isfinite(v) or v < lo:
        raise MessageError(name, f"must be finite and >= {lo}, got {v}")
    return v


def _str(h: Mapping[str, Any], name: str, max_len: int = 256) -> str:
    if name not in h:
        raise MessageError(name, "missing")
    v = h[name]
    if not isinstance(v, str) or not 0 < len(v) <= max_len:
        raise MessageError(name, f"must be a non-empty string of <= {max_len} characters")
    return v


def _dtype(h: Mapping[str, Any]) -> str:
    v = _str(h, "dtype", 16)
    if v not in DTYPES:
        raise MessageError("dtype", f"must be one of {sorted(DTYPES)}, got {v!r}")
    return v


def _shape(h: Mapping[str, Any], name: str = "shape", ndim: int = 2) -> tuple[int, ...]:
    if name not in h:
        raise MessageError(name, "missing")
    v = h[name]
    if not isinstance(v, list) or len(v) != ndim:
        raise MessageError(name, f"must be a list of {ndim} integers")
    out = []
    for x in v:
        if isinstance(x, bool) or not isinstance(x, int) or not 1 <= x <= MAX_SIDE:
            raise MessageError(name, f"entries must be integers in [1, {MAX_SIDE}], got {v!r}")
        out.append(x)
    return tuple(out)


def _reject_constant(name: str) -> float:
    raise MessageError("header", f"JSON constant {name} is not allowed")


def _header(part: bytes | memoryview) -> dict[str, Any]:
    raw = bytes(part)
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
    if h.get("version") != VERSION or isinstance(h.get("version"), bool):
        raise MessageError("version", f"must be {VERSION}, got {h.get('version')!r}")
    if h.get("type") not in MESSAGE_TYPES:
        raise MessageError("type", f"must be one of {list(MESSAGE_TYPES)}, got {h.get('type')!r}")
    return h


def _buffer(part: Any) -> memoryview:
    buf = part.buffer if isinstance(part, zmq.Frame) else part
    try:
        return memoryview(buf).cast("B")
    except TypeError:
        raise MessageError("data", "must be a bytes-like buffer") from None


# ------------------------------------------------------------------------------------------------
# encode


def _encode(header: Mapping[str, Any]) -> bytes:
    return json.dumps(
        {"protocol": PROTOCOL, "version": VERSION, **header}, allow_nan=False, separators=(",", ":")
    ).encode()


def encode_scan_start(start: ScanStart) -> list[bytes]:
    """The two parts of a ``scan-start`` message."""
    sched = start.preset.schedule
    return [
        _encode(
            {
                "type": "scan-start",
                "scan_uid": start.scan_uid,
                "preset": start.preset.model_dump(mode="json"),
                "schedule": {
                    **sched.model_dump(mode="json"),
                    "frames_planned": start.frames_planned,
                },
                "dtype": start.dtype,
                "shape": list(start.shape),
            }
        ),
        b"",
    ]


def encode_frame_header(header: FrameHeader) -> bytes:
    """The JSON header part of a ``frame`` message."""
    h: dict[str, Any] = {
        "type": "frame",
        "scan_uid": header.scan_uid,
        "frame_number": header.frame_number,
        "dtype": header.dtype,
        "shape": list(header.shape),
        **header.tags(),
    }
    if header.row_offset:
        h["row_offset"] = header.row_offset
    return _encode(h)


def encode_scan_end(end: ScanEnd) -> list[bytes]:
    """The two parts of a ``scan-end`` message."""
    return [
        _encode({"type": "scan-end", "scan_uid": end.scan_uid, "frames_sent": end.frames_sent}),
        b"",
    ]


def encode_live(live: LiveSlices) -> list[Any]:
    """The two parts of a ``live-slices`` message (the data part is the float32 array)."""
    data = np.ascontiguousarray(live.data, dtype="<f4")
    header = _encode(
        {
            "type": "live-slices",
            "scan_uid": live.scan_uid,
            "channels": list(live.channels),
            "rows": list(live.rows),
            "projections": live.projections,
            "angles_planned": live.angles_planned,
            "voxel_size_m": live.voxel_size_m,
            "dtype": "float32",
            "shape": list(data.shape),
        }
    )
    return [header, data]


# ------------------------------------------------------------------------------------------------
# decode


def decode(parts: Sequence[Any], *, max_frame_bytes: int = MAX_FRAME_BYTES) -> Message:
    """Validate and decode one multipart message (bytes, memoryviews or ``zmq.Frame``s).

    The frame array is a zero-copy, read-only view of the data part. Raises ``MessageError``
    naming the offending field: ``parts``, ``header``, ``protocol``, ``version``, ``type``, any
    header field, or ``data`` (buffer length vs declared dtype and shape).
    """
    if len(parts) != 2:
        raise MessageError("parts", f"a message has exactly 2 parts, got {len(parts)}")
    head = parts[0].bytes if isinstance(parts[0], zmq.Frame) else parts[0]
    h = _header(head)
    data = _buffer(parts[1])
    kind = h["type"]
    uid = _str(h, "scan_uid")
    if kind == "frame":
        return _decode_frame(h, uid, data, max_frame_bytes)
    if kind == "live-slices":
        return _decode_live(h, uid, data, max_frame_bytes)
    if len(data):
        raise MessageError("data", f"a {kind} message has an empty data part, got {len(data)} B")
    if kind == "scan-end":
        return ScanEnd(uid, _int(h, "frames_sent", 0))
    # scan-start
    preset_obj = h.get("preset")
    if not isinstance(preset_obj, dict):
        raise MessageError("preset", "missing or not a JSON object")
    try:
        preset = Preset.model_validate(preset_obj)
    except ValidationError as exc:
        raise MessageError("preset", f"not a valid preset ({exc.error_count()} errors)") from None
    sched = h.get("schedule")
    if not isinstance(sched, dict):
        raise MessageError("schedule", "missing or not a JSON object")
    planned = sched.get("frames_planned")
    if planned is not None:
        planned = _int(sched, "frames_planned", 0)
    for name in ("steps", "periods", "angles", "reference_every", "darks"):
        if _int(sched, name, 0) != getattr(preset.schedule, name):
            raise MessageError("schedule", f"{name} differs from the preset's schedule")
    dtype = _dtype(h)
    shape = _shape(h)
    if tuple(shape) != tuple(preset.detector.shape):
        raise MessageError("shape", f"{shape} differs from the preset detector shape")
    nbytes = shape[0] * shape[1] * DTYPES[dtype].itemsize
    if nbytes > max_frame_bytes:
        raise MessageError("shape", f"frames of {nbytes} B exceed the limit {max_frame_bytes} B")
    return ScanStart(uid, preset, dtype, (shape[0], shape[1]), planned)


def _decode_frame(h: dict[str, Any], uid: str, data: memoryview, max_bytes: int) -> Frame:
    key = _int(h, "image_key", 0, 2)
    dtype = _dtype(h)
    rows, cols = _shape(h)
    header = FrameHeader(
        scan_uid=uid,
        frame_number=_int(h, "frame_number", 0),
        image_key=key,
        angle_index=_int(h, "angle_index", -1, 2**31 - 1),
        series_index=_int(h, "series_index", -1, 2**31 - 1),
        step_index=_int(h, "step_index", -1, 2**31 - 1),
        attempt=_int(h, "attempt", 0, 2**31 - 1),
        g2_position_m=_float(h, "g2_position_m"),
        rotation_deg=_float(h, "rotation_deg"),
        timestamp_s=_float(h, "timestamp_s"),
        ring_current_ma=_float(h, "ring_current_ma", 0.0),
        dtype=dtype,
        shape=(rows, cols),
        row_offset=_int(h, "row_offset", 0, MAX_SIDE) if "row_offset" in h else 0,
    )
    if key == ImageKey.PROJECTION and header.angle_index < 0:
        raise MessageError("angle_index", "a projection frame needs angle_index >= 0")
    if key == ImageKey.FLAT and header.series_index < 0:
        raise MessageError("series_index", "a reference frame needs series_index >= 0")
    if key != ImageKey.DARK and header.step_index < 0:
        raise MessageError("step_index", "a projection or reference frame needs step_index >= 0")
    dt = DTYPES[dtype]
    nbytes = rows * cols * dt.itemsize
    if nbytes > max_bytes:
        raise MessageError("shape", f"a frame of {nbytes} B exceeds the limit {max_bytes} B")
    if len(data) != nbytes:
        raise MessageError("data", f"{len(data)} B, but dtype and shape declare {nbytes} B")
    arr = np.frombuffer(data, dtype=dt).reshape(rows, cols)
    return Frame(header, arr)


def _decode_live(h: dict[str, Any], uid: str, data: memoryview, max_bytes: int) -> LiveSlices:
    channels = h.get("channels")
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise MessageError("channels", "must be a list of strings")
    rows = h.get("rows")
    if not isinstance(rows, list) or not all(
        isinstance(r, int) and not isinstance(r, bool) and r >= 0 for r in rows
    ):
        raise MessageError("rows", "must be a list of non-negative integers")
    if _str(h, "dtype", 16) != "float32":
        raise MessageError("dtype", "live slices are float32")
    shape = _shape(h, ndim=4)
    if shape[0] != len(channels) or shape[1] != len(rows) or shape[2] != shape[3]:
        raise MessageError("shape", f"{shape} must be (channels, rows, n, n)")
    nbytes = 4 * math.prod(shape)
    if nbytes > max_bytes or len(data) != nbytes:
        raise MessageError("data", f"{len(data)} B, but the shape declares {nbytes} B")
    arr = np.frombuffer(data, dtype="<f4").reshape(shape)
    return LiveSlices(
        uid,
        tuple(channels),
        tuple(rows),
        _int(h, "projections", 0),
        _int(h, "angles_planned", 1),
        _float(h, "voxel_size_m", 0.0),
        arr,
    )


# ------------------------------------------------------------------------------------------------
# sockets


def hwm_for(frame_bytes: int, queue_bytes: int = DEFAULT_QUEUE_BYTES) -> int:
    """High-water mark [messages] per socket such that a PUSH->PULL pipe (SNDHWM + RCVHWM
    messages queued) holds at most about ``queue_bytes`` of frames of ``frame_bytes``; 2..1000."""
    if frame_bytes < 1:
        raise ValueError(f"frame_bytes must be >= 1, got {frame_bytes!r}")
    if queue_bytes < 1:
        raise ValueError(f"queue_bytes must be >= 1, got {queue_bytes!r}")
    return int(max(2, min(1000, queue_bytes // (2 * frame_bytes))))


def check_endpoint(endpoint: str, allow_remote: bool = False) -> str:
    """Accept ``inproc://``, ``ipc://`` and ``tcp://`` on loopback; any other TCP host (or ``*``)
    only with ``allow_remote=True``. Returns the endpoint; ValueError names ``endpoint``."""
    if not isinstance(endpoint, str) or "://" not in endpoint:
        raise ValueError(
            f"endpoint must be 'tcp://HOST:PORT', 'ipc://PATH' or 'inproc://NAME', got {endpoint!r}"
        )
    scheme = endpoint.split("://", 1)[0]
    if scheme in ("inproc", "ipc"):
        return endpoint
    if scheme != "tcp":
        raise ValueError(f"endpoint scheme must be tcp, ipc or inproc, got {endpoint!r}")
    host = urlsplit(endpoint.replace("*", "0.0.0.0", 1) if "//*" in endpoint else endpoint)
    name = host.hostname or ""
    loopback = name == "localhost"
    with contextlib.suppress(ValueError):
        loopback = loopback or ipaddress.ip_address(name).is_loopback
    if not loopback and not allow_remote:
        raise ValueError(
            f"endpoint {endpoint!r} is not on loopback; pass allow_remote=True (--allow-remote) "
            "to expose the stream beyond this host, preferably with CURVE"
        )
    return endpoint


@dataclass(frozen=True)
class CurveKeys:
    """A CURVE key pair (Z85-encoded, 40 characters each)."""

    public: bytes
    secret: bytes

    @classmethod
    def generate(cls) -> CurveKeys:
        """A fresh key pair (``zmq.curve_keypair``)."""
        public, secret = zmq.curve_keypair()
        return cls(public, secret)


@dataclass(frozen=True)
class CurveServer:
    """CURVE on the binding side. ``allowed_clients`` (Z85 public keys) restricts who may
    connect (a ZAP authenticator); None admits any client that knows the server's public key."""

    keys: CurveKeys
    allowed_clients: tuple[bytes, ...] | None = None


@dataclass(frozen=True)
class CurveClient:
    """CURVE on the connecting side: own keys and the server's public key."""

    keys: CurveKeys
    server_public: bytes


class _AllowKeys:
    def __init__(self, keys: Sequence[bytes]) -> None:
        self.keys = frozenset(keys)

    def callback(self, domain: str, key: bytes) -> bool:
        return key in self.keys


def _apply_server_curve(ctx: zmq.Context, sock: zmq.Socket, curve: CurveServer) -> Any:
    auth = None
    if curve.allowed_clients is not None:
        from zmq.auth.thread import ThreadAuthenticator

        auth = ThreadAuthenticator(ctx)
        auth.start()
        auth.configure_curve_callback("*", credentials_provider=_AllowKeys(curve.allowed_clients))
    sock.curve_secretkey = curve.keys.secret
    sock.curve_publickey = curve.keys.public
    sock.curve_server = True
    return auth


def _apply_client_curve(sock: zmq.Socket, curve: CurveClient) -> None:
    sock.curve_secretkey = curve.keys.secret
    sock.curve_publickey = curve.keys.public
    sock.curve_serverkey = curve.server_public


class _Socket:
    """Owns a context, one socket and an optional authenticator."""

    def __init__(self, kind: int, context: zmq.Context | None) -> None:
        self._own_ctx = context is None
        self.ctx: zmq.Context = context if context is not None else zmq.Context()
        self.sock: zmq.Socket = self.ctx.socket(kind)
        self._auth: Any = None
        self.endpoint = ""

    def _open(
        self,
        endpoint: str,
        bind: bool,
        allow_remote: bool,
        server: CurveServer | None,
        client: CurveClient | None,
    ) -> None:
        check_endpoint(endpoint, allow_remote)
        if server is not None:
            self._auth = _apply_server_curve(self.ctx, self.sock, server)
        if client is not None:
            _apply_client_curve(self.sock, client)
        if bind:
            self.sock.bind(endpoint)
            self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
        else:
            self.sock.connect(endpoint)
            self.endpoint = endpoint

    def close(self, linger_s: float = 0.0) -> None:
        """Close the socket (waiting up to ``linger_s`` to deliver queued messages)."""
        if not self.sock.closed:
            self.sock.close(linger=int(linger_s * 1000))
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._own_ctx and not self.ctx.closed:
            self.ctx.term()

    def __enter__(self) -> Any:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class FramePublisher(_Socket):
    """The sending end of the data path: a PUSH socket that binds (the detector or replay).

    Typical use (one scan)::

        pub = FramePublisher("tcp://127.0.0.1:*", frame_bytes=rows * cols * 2)
        pub.start_scan(scan_uid, preset, dtype="uint16")
        for frame, tags in ...:          # write the frame to the scan file FIRST, then:
            pub.publish(frame, tags, frame_number=n)   # n = its row in the scan file
        pub.end_scan()
        pub.close(linger_s=10)

    ``block=True`` (default) honours back-pressure: ``publish`` waits while the pipe is full
    (at most ``send_timeout_s``, then ``StreamTimeout``). ``block=False`` never waits: a frame that
    finds the pipe full is dropped and counted in ``dropped`` (the consumer sees the gap in the
    frame numbers). The frame buffer is handed to ZeroMQ without a copy: do not modify it after
    ``publish`` (pass ``copy=True`` if you must).
    """

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:*",
        *,
        frame_bytes: int | None = None,
        hwm: int | None = None,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        block: bool = True,
        send_timeout_s: float | None = None,
        allow_remote: bool = False,
        curve: CurveServer | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        super().__init__(zmq.PUSH, context)
        try:
            self.hwm = (
                hwm if hwm is not None else hwm_for(frame_bytes or MAX_FRAME_BYTES, queue_bytes)
            )
            if self.hwm < 1:
                raise ValueError(f"hwm must be >= 1 message, got {hwm!r}")
            self.sock.sndhwm = self.hwm
            if send_timeout_s is not None:
                if not send_timeout_s > 0:
                    raise ValueError(f"send_timeout_s must be > 0, got {send_timeout_s!r}")
                self.sock.sndtimeo = int(send_timeout_s * 1000)
            self._open(endpoint, True, allow_remote, curve, None)
        except BaseException:
            self.close()
            raise
        self.block = block
        self.scan: ScanStart | None = None
        self.next_frame = 0
        self.sent = 0
        self.dropped = 0

    def _send(self, parts: list[Any], copy: bool = False) -> bool:
        flags = 0 if self.block else zmq.NOBLOCK
        try:
            self.sock.send_multipart(parts, flags=flags, copy=copy)
        except zmq.Again:
            if self.block:
                raise StreamTimeout(
                    f"send blocked longer than the send timeout on {self.endpoint}"
                ) from None
            return False
        return True

    def _send_control(self, parts: list[Any]) -> None:
        # control messages always wait (they are tiny and the consumer needs them), at most the
        # send timeout
        try:
            self.sock.send_multipart(parts, copy=True)
        except zmq.Again:
            raise StreamTimeout(
                f"no consumer took a control message within the send timeout on {self.endpoint}"
            ) from None

    def start_scan(
        self,
        scan_uid: str,
        preset: Preset,
        *,
        dtype: str = "uint16",
        frames_planned: int | None = None,
        first_frame: int = 0,
    ) -> ScanStart:
        """Send ``scan-start``; frame numbers restart at ``first_frame``."""
        if dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {dtype!r}")
        if not scan_uid or not isinstance(scan_uid, str):
            raise ValueError(f"scan_uid must be a non-empty string, got {scan_uid!r}")
        rows, cols = preset.detector.shape
        start = ScanStart(scan_uid, preset, dtype, (rows, cols), frames_planned)
        self._send_control(encode_scan_start(start))
        self.scan = start
        self.next_frame = first_frame
        return start

    def publish(
        self,
        frame: NDArray[np.generic],
        tags: Mapping[str, Any] | np.void,
        *,
        frame_number: int | None = None,
        copy: bool = False,
    ) -> bool:
        """Send one frame (rows, columns) with its tags (every ``FRAME_FIELDS`` name).

        ``frame_number`` defaults to the next number; use the frame's row in the scan file.
        Returns False if the frame was dropped (``block=False`` and the pipe full).
        """
        if self.scan is None:
            raise RuntimeError("publish before start_scan")
        arr = np.asarray(frame)
        dt = DTYPES[self.scan.dtype]
        if arr.shape != self.scan.shape:
            raise ValueError(f"frame shape {arr.shape} differs from the scan's {self.scan.shape}")
        if arr.dtype != dt:
            raise ValueError(f"frame dtype {arr.dtype} differs from the scan's {self.scan.dtype}")
        arr = np.ascontiguousarray(arr)
        n = self.next_frame if frame_number is None else int(frame_number)
        if n < 0:
            raise ValueError(f"frame_number must be >= 0, got {n}")
        values = {}
        for name in FRAME_FIELDS:
            try:
                values[name] = tags[name]
            except (KeyError, ValueError, IndexError):
                raise ValueError(f"tags lack the field {name!r}") from None
        header = FrameHeader(
            scan_uid=self.scan.scan_uid,
            frame_number=n,
            image_key=int(values["image_key"]),
            angle_index=int(values["angle_index"]),
            series_index=int(values["series_index"]),
            step_index=int(values["step_index"]),
            attempt=int(values["attempt"]),
            g2_position_m=float(values["g2_position_m"]),
            rotation_deg=float(values["rotation_deg"]),
            timestamp_s=float(values["timestamp_s"]),
            ring_current_ma=float(values["ring_current_ma"]),
            dtype=self.scan.dtype,
            shape=self.scan.shape,
        )
        self.next_frame = max(self.next_frame, n + 1)
        ok = self._send([encode_frame_header(header), arr], copy=copy)
        if ok:
            self.sent += 1
        else:
            self.dropped += 1
        return ok

    def send_raw(self, parts: list[Any]) -> bool:
        """Send pre-encoded parts as they are (relays and tests)."""
        return self._send(parts)

    def end_scan(self) -> ScanEnd:
        """Send ``scan-end`` with ``frames_sent`` = the next frame number."""
        if self.scan is None:
            raise RuntimeError("end_scan before start_scan")
        end = ScanEnd(self.scan.scan_uid, self.next_frame)
        self._send_control(encode_scan_end(end))
        self.scan = None
        return end


@dataclass
class ReceiveStats:
    """What a receiver saw: valid messages by type, malformed ones by offending field."""

    messages: Counter[str] = field(default_factory=Counter)
    malformed: int = 0
    malformed_fields: Counter[str] = field(default_factory=Counter)
    last_error: str = ""


class FrameReceiver(_Socket):
    """The receiving end of the data path: a PULL socket (connects by default).

    ``recv`` returns the next valid message; malformed ones are counted in ``stats`` and dropped.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        bind: bool = False,
        frame_bytes: int | None = None,
        hwm: int | None = None,
        queue_bytes: int = DEFAULT_QUEUE_BYTES,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        allow_remote: bool = False,
        curve: CurveClient | None = None,
        context: zmq.Context | None = None,
        kind: int = zmq.PULL,
    ) -> None:
        super().__init__(kind, context)
        try:
            self.hwm = (
                hwm if hwm is not None else hwm_for(frame_bytes or MAX_FRAME_BYTES, queue_bytes)
            )
            self.sock.rcvhwm = self.hwm
            if kind == zmq.SUB:
                self.sock.setsockopt(zmq.SUBSCRIBE, b"")
            self._open(endpoint, bind, allow_remote, None, curve)
        except BaseException:
            self.close()
            raise
        self.max_frame_bytes = max_frame_bytes
        self.stats = ReceiveStats()

    def recv_parts(self, timeout_s: float | None) -> list[zmq.Frame] | None:
        """The next raw multipart message (zero-copy frames), or None after ``timeout_s``."""
        timeout = None if timeout_s is None else int(max(0.0, timeout_s) * 1000)
        if not self.sock.poll(timeout):
            return None
        return list(self.sock.recv_multipart(copy=False))

    def recv(self, timeout_s: float | None = None) -> Message | None:
        """The next valid message, or None when none arrived within ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            parts = self.recv_parts(left)
            if parts is None:
                return None
            msg = self.decode(parts)
            if msg is not None:
                return msg
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def decode(self, parts: Sequence[Any]) -> Message | None:
        """Decode and count; None (counted as malformed) if the message is invalid."""
        try:
            msg = decode(parts, max_frame_bytes=self.max_frame_bytes)
        except MessageError as exc:
            self.stats.malformed += 1
            self.stats.malformed_fields[exc.field] += 1
            self.stats.last_error = str(exc)
            return None
        self.stats.messages[type(msg).__name__] += 1
        return msg


class LivePublisher(_Socket):
    """The live-view PUB socket (binds, HWM ``LIVE_HWM``): never blocks; a slow viewer misses
    updates, the data path never waits for it."""

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:*",
        *,
        hwm: int = LIVE_HWM,
        allow_remote: bool = False,
        curve: CurveServer | None = None,
        context: zmq.Context | None = None,
    ) -> None:
        super().__init__(zmq.PUB, context)
        try:
            if not 1 <= hwm <= 16:
                raise ValueError(f"hwm must be 1..16 messages for the live view, got {hwm!r}")
            self.sock.sndhwm = hwm
            self._open(endpoint, True, allow_remote, curve, None)
        except BaseException:
            self.close()
            raise
        self.published = 0

    def publish(self, live: LiveSlices) -> None:
        """Send one live update (copied; dropped by ZeroMQ if the viewer is behind)."""
        self.sock.send_multipart(encode_live(live), copy=True)
        self.published += 1


def live_subscriber(
    endpoint: str,
    *,
    hwm: int = LIVE_HWM,
    curve: CurveClient | None = None,
    allow_remote: bool = False,
    context: zmq.Context | None = None,
) -> FrameReceiver:
    """A SUB receiver for ``live-slices`` messages (same ``recv``/``stats`` as FrameReceiver)."""
    return FrameReceiver(
        endpoint,
        hwm=hwm,
        curve=curve,
        allow_remote=allow_remote,
        context=context,
        kind=zmq.SUB,
    )
