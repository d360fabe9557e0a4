"""The frame stream's sockets: a PUSH publisher, a PULL receiver and the live-view PUB socket.

Data path: PUSH (publisher, binds) -> PULL (consumer, connects), lossless with back-pressure; the
live view goes out on a PUB socket with a high-water mark of 1-2, so a slow viewer never slows
the data. Endpoints are loopback unless ``allow_remote``; CURVE authentication is available.
Every received message is validated (:func:`contracts.messages.decode`); a malformed one is
counted and dropped, never fatal.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
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
from zmq.utils.monitor import recv_monitor_message

from contracts.frames import PIXEL_DTYPES
from contracts.instrument import Instrument
from contracts.messages import (
    MAX_FRAME_BYTES,
    LiveSlices,
    Message,
    MessageError,
    ScanEnd,
    ScanStart,
    decode,
    encode_header,
    encode_live,
    encode_scan_end,
    encode_scan_start,
    frame_header,
    validation_error,
)
from contracts.scanplan import ScanPlan

#: Default memory for the queues of one PUSH->PULL pipe [bytes]; see ``hwm_for``.
DEFAULT_QUEUE_BYTES: Final = 256 * 2**20
#: Default high-water mark of the live-view PUB socket [messages].
LIVE_HWM: Final = 2
_HANDSHAKE_SUCCEEDED: Final = int(zmq.EVENT_HANDSHAKE_SUCCEEDED)
_HANDSHAKE_FAILED: Final = int(
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)
#: How long a blocked send waits between looks at the consumers that connected [ms].
SEND_POLL_MS: Final = 50
#: Rejected messages logged per offending field (all are counted in ``ReceiveStats``).
LOGGED_REJECTIONS: Final = 5

log = logging.getLogger(__name__)


class StreamTimeout(TimeoutError):
    """A send did not complete within the publisher's ``send_timeout_s`` (back-pressure)."""


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
        try:
            if bind:
                self.sock.bind(endpoint)
                self.endpoint = self.sock.getsockopt_string(zmq.LAST_ENDPOINT)
            else:
                self.sock.connect(endpoint)
                self.endpoint = endpoint
        except zmq.ZMQError as exc:  # (not an OSError): one that names the endpoint
            what = "bind" if bind else "connect"
            reason = zmq.strerror(exc.errno) if exc.errno is not None else str(exc)
            raise OSError(exc.errno, f"cannot {what} {endpoint}: {reason}") from None

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
        pub.start_scan(scan_uid, instrument, plan, dtype="uint16")
        for frame, tags in ...:          # write the frame to the scan file FIRST, then:
            pub.publish(frame, tags, frame_number=n)   # n = its row in the scan file
        pub.end_scan()
        pub.close(linger_s=10)

    A consumer that connects while a scan is in progress is sent that scan's ``scan-start``
    again (its ``raw_file`` tells a restarted consumer where to catch up); ``consumers`` counts
    the connected consumers, and a warning is logged when more than one is (PUSH deals the
    frames round-robin: each would get part of the scan).

    ``wait_for_consumers=False`` (a detector, whose frames are in its scan file): while no
    consumer is connected nothing waits: frames are dropped at once (``dropped``) and the
    scan-start is kept for the consumer that connects.

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
        wait_for_consumers: bool = True,
    ) -> None:
        super().__init__(zmq.PUSH, context)
        self.wait_for_consumers = wait_for_consumers
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
        #: consumers connected now (handshakes minus disconnections seen by the monitor)
        self.consumers = 0
        #: scan-starts sent again to consumers that connected mid-scan
        self.repeated_starts = 0
        # consumers that have the scan-start of the scan in progress: at least the one that
        # took it (its connection may be seen only after the send went through)
        self._have_start = 0
        self._monitor: zmq.Socket | None = self.sock.get_monitor_socket(
            zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED | _HANDSHAKE_SUCCEEDED | _HANDSHAKE_FAILED
        )
        # connections by socket descriptor: accepted, not yet through the handshake (in order)
        # and consumers (through it)
        self._pending: list[int] = []
        self._consumer_fds: set[int] = set()

    def close(self, linger_s: float = 0.0) -> None:
        """Close the socket (waiting up to ``linger_s`` to deliver queued messages)."""
        monitor, self._monitor = getattr(self, "_monitor", None), None
        if monitor is not None:
            with contextlib.suppress(zmq.ZMQError):
                self.sock.disable_monitor()
            monitor.close(linger=0)
        super().close(linger_s)

    def watch_consumers(self) -> int:
        """Take the connection events seen so far: count consumers, warn when more than one is
        connected, and send the scan-start of the scan in progress again when one connected
        mid-scan. Returns the consumers connected now. ``publish`` calls it."""
        monitor = self._monitor
        if monitor is None:
            return self.consumers
        while monitor.poll(0):
            event = recv_monitor_message(monitor)
            kind, value = int(event["event"]), int(event["value"])
            if kind == zmq.EVENT_ACCEPTED:
                self._pending.append(value)  # the new connection's descriptor
            elif kind & _HANDSHAKE_FAILED:  # (a plain client on a CURVE socket, a bad key)
                if self._pending:
                    self._pending.pop(0)
            elif kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                # the event names no descriptor: handshakes complete in the order accepted
                if self._pending:
                    self._consumer_fds.add(self._pending.pop(0))
                self.consumers += 1
                if self.consumers > 1:
                    log.warning(
                        "%d consumers connected to %s: PUSH deals the frames round-robin, so "
                        "each gets part of every scan; use one consumer (or the relay)",
                        self.consumers,
                        self.endpoint,
                    )
            elif kind == zmq.EVENT_DISCONNECTED:
                if value in self._pending:  # never a consumer
                    self._pending.remove(value)
                elif value in self._consumer_fds:
                    self._consumer_fds.discard(value)
                    self.consumers = max(0, self.consumers - 1)
                    self._have_start = min(self._have_start, self.consumers)
        if self.scan is not None and self.consumers > self._have_start:
            self._have_start = self.consumers
            self._send_control(encode_scan_start(self.scan), look=False)
            self.repeated_starts += 1
        return self.consumers

    def _send(self, parts: list[Any], copy: bool = False) -> bool:
        """Send a frame: ``block=False`` gives up at once on a full pipe (False); ``block=True``
        waits for room, at most the send timeout, watching for consumers that connect
        meanwhile (a consumer that connects while the publisher waits gets the scan-start
        before the frame)."""
        if not self.wait_for_consumers and self.watch_consumers() == 0:
            return False
        if not self.block:
            try:
                self.sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=copy)
            except zmq.Again:
                return False
            return True
        timeout_ms = int(self.sock.sndtimeo)
        deadline = None if timeout_ms < 0 else time.monotonic() + timeout_ms / 1000
        while True:
            if self.consumers == 0 and self._monitor is not None and self.sock.poll(0, zmq.POLLOUT):
                # room, and no consumer seen: one connected, and its connection event may trail
                # its connection: take it first, so that it gets the scan-start before the frame
                self._monitor.poll(SEND_POLL_MS)
                self.watch_consumers()
            try:
                self.sock.send_multipart(parts, flags=zmq.NOBLOCK, copy=copy)
                return True
            except zmq.Again:
                pass
            if deadline is not None and time.monotonic() >= deadline:
                raise StreamTimeout(f"send blocked longer than the send timeout on {self.endpoint}")
            self.sock.poll(SEND_POLL_MS, zmq.POLLOUT)
            self.watch_consumers()

    def _send_control(self, parts: list[Any], look: bool = True) -> bool:
        """Send a scan-start or scan-end: it waits (it is tiny and the consumer needs it), at most
        the send timeout; False (not sent) with ``wait_for_consumers=False`` and no consumer
        (``look``: take the connection events first)."""
        if look and not self.wait_for_consumers and self.watch_consumers() == 0:
            return False
        try:
            self.sock.send_multipart(parts, copy=True)
        except zmq.Again:
            raise StreamTimeout(
                f"no consumer took a control message within the send timeout on {self.endpoint}"
            ) from None
        return True

    def start_scan(
        self,
        scan_uid: str,
        instrument: Instrument,
        plan: ScanPlan | None,
        *,
        dtype: str = "uint16",
        frames_planned: int | None = None,
        first_frame: int = 0,
        raw_file: str | None = None,
    ) -> ScanStart:
        """Send ``scan-start``; frame numbers restart at ``first_frame``; ``raw_file``: the
        absolute path of the scan file the frames are written to (where a consumer can read
        it). ValueError naming the field when the message would be invalid."""
        try:
            start = ScanStart(
                scan_uid=scan_uid,
                instrument=instrument,
                plan=plan,
                dtype=dtype,  # type: ignore[arg-type]
                shape=instrument.detector.shape,
                frames_planned=frames_planned,
                raw_file=raw_file,
            )
        except ValidationError as exc:
            raise ValueError(str(validation_error(exc))) from None
        self.scan = None
        self.watch_consumers()  # consumers that connected before this scan need no repeat
        sent = self._send_control(encode_scan_start(start))
        self._have_start = max(self.consumers, 1) if sent else 0
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
        """Send one frame (rows, columns) with its tags (every ``TAG_FIELDS`` name).

        ``frame_number`` defaults to the next number; use the frame's row in the scan file.
        Returns False if the frame was dropped (``block=False`` and the pipe full).
        """
        if self.scan is None:
            raise RuntimeError("publish before start_scan")
        arr = np.asarray(frame)
        dt = PIXEL_DTYPES[self.scan.dtype]
        if arr.shape != self.scan.shape:
            raise ValueError(f"frame shape {arr.shape} differs from the scan's {self.scan.shape}")
        if arr.dtype != dt:
            raise ValueError(f"frame dtype {arr.dtype} differs from the scan's {self.scan.dtype}")
        arr = np.ascontiguousarray(arr)
        n = self.next_frame if frame_number is None else int(frame_number)
        if n < 0:
            raise ValueError(f"frame_number must be >= 0, got {n}")
        header = frame_header(
            self.scan.scan_uid, tags, frame_number=n, dtype=self.scan.dtype, shape=self.scan.shape
        )
        self.next_frame = max(self.next_frame, n + 1)
        self.watch_consumers()
        ok = self._send([encode_header(header), arr], copy=copy)
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
        end = ScanEnd(scan_uid=self.scan.scan_uid, frames_sent=self.next_frame)
        self.watch_consumers()
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
            seen = self.stats.malformed_fields[exc.field]
            if seen <= LOGGED_REJECTIONS:
                more = " (further ones counted, not logged)" if seen == LOGGED_REJECTIONS else ""
                log.warning("message rejected on %s: %s%s", self.endpoint, exc, more)
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
