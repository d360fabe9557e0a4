"""The frame-stream protocol: codec, strict validation, sockets, HWM, CURVE, live view, and a
consumer written only from docs/stream-protocol.md."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest
import zmq

from contracts.frames import FRAME_DTYPE, PIXEL_DTYPES
from contracts.messages import (
    Frame,
    LiveSlices,
    MessageError,
    ScanEnd,
    ScanStart,
    decode,
    encode_header,
    encode_scan_end,
    encode_scan_start,
    frame_header,
)
from contracts.profile import builtin_profile
from contracts.sockets import (
    CurveClient,
    CurveKeys,
    CurveServer,
    FramePublisher,
    FrameReceiver,
    LivePublisher,
    StreamTimeout,
    check_endpoint,
    hwm_for,
    live_subscriber,
)
from tests.profiles import with_detector_shape

P = builtin_profile("tiny")
SHAPE = (32, 96)


def start_msg(uid: str = "uid", frames_planned: int | None = None) -> ScanStart:
    return ScanStart(
        scan_uid=uid,
        instrument=P.instrument,
        plan=P.scan_plan(),
        dtype="uint16",
        shape=SHAPE,
        frames_planned=frames_planned,
    )


def tags(n: int) -> np.void:
    row = np.zeros(1, FRAME_DTYPE)[0]
    row["image_key"] = 0
    row["angle_index"] = n // 5
    row["series_index"] = -1
    row["step_index"] = n % 5
    row["g2_position_m"] = (n % 5) * 0.2e-6
    row["rotation_deg"] = 2.0 * (n // 5)
    row["timestamp_s"] = 0.06 * n
    row["ring_current_ma"] = 200.0
    return row


def frame(n: int) -> np.ndarray:
    return (np.arange(SHAPE[0] * SHAPE[1], dtype=np.uint16).reshape(SHAPE) + n).astype(np.uint16)


def frame_parts(n: int = 3, **changes: object) -> list[bytes]:
    row = tags(10)
    row["g2_position_m"] = 4e-7
    row["rotation_deg"] = 0.0
    row["timestamp_s"] = 0.1
    header = frame_header("uid", row, frame_number=n, dtype="uint16", shape=SHAPE)
    h = json.loads(encode_header(header))
    h.update(changes)
    h = {k: v for k, v in h.items() if v is not ...}
    return [json.dumps(h).encode(), frame(n).tobytes()]


def test_messages_round_trip() -> None:
    start = decode(encode_scan_start(start_msg(frames_planned=470)))
    assert isinstance(start, ScanStart)
    assert (start.instrument, start.plan, start.shape, start.frames_planned) == (
        P.instrument,
        P.scan_plan(),
        SHAPE,
        470,
    )
    assert start.frame_bytes == 32 * 96 * 2
    msg = decode(frame_parts(7))
    assert isinstance(msg, Frame)
    assert msg.header.frame_number == 7
    assert msg.header.g2_position_m == 4e-7
    np.testing.assert_array_equal(msg.data, frame(7))
    assert not msg.data.flags.writeable  # a zero-copy view of the received buffer
    end = ScanEnd(scan_uid="uid", frames_sent=12)
    assert decode(encode_scan_end(end)) == end


BAD = [
    ("random bytes", [bytes(range(256)) * 3, b""], "header"),
    ("bad JSON", [b'{"protocol": "talbot-stream", ', b""], "header"),
    ("not an object", [b"[1, 2]", b""], "header"),
    ("one part", frame_parts()[:1], "parts"),
    ("three parts", [*frame_parts(), b""], "parts"),
    ("wrong protocol", frame_parts(protocol="other"), "protocol"),
    ("wrong version", frame_parts(version=1), "version"),
    ("bool version", frame_parts(version=True), "version"),
    ("unknown type", frame_parts(type="image"), "type"),
    ("wrong dtype", frame_parts(dtype="int64"), "dtype"),
    ("big-endian dtype", frame_parts(dtype=">u2"), "dtype"),
    ("shape vs buffer", frame_parts(shape=[32, 95]), "data"),
    ("huge shape", frame_parts(shape=[65536, 65536]), "shape"),
    ("negative shape", frame_parts(shape=[-32, 96]), "shape"),
    ("3-D shape", frame_parts(shape=[1, 32, 96]), "shape"),
    ("missing frame number", frame_parts(frame_number=...), "frame_number"),
    ("missing uid", frame_parts(scan_uid=...), "scan_uid"),
    ("string step", frame_parts(step_index="2"), "step_index"),
    ("bool attempt", frame_parts(attempt=True), "attempt"),
    ("negative attempt", frame_parts(attempt=-1), "attempt"),
    ("image key 3", frame_parts(image_key=3), "image_key"),
    ("projection without angle", frame_parts(angle_index=-1), "angle_index"),
    ("NaN position", [frame_parts()[0].replace(b"4e-07", b"NaN"), frame_parts()[1]], "header"),
    ("infinite position", frame_parts(g2_position_m=1e400), "header"),
    (
        "huge position",
        [frame_parts()[0].replace(b"4e-07", b"1e400"), frame_parts()[1]],
        "g2_position_m",
    ),
    ("unknown field", frame_parts(angle_idx=3), "angle_idx"),
    ("float frame number", frame_parts(frame_number=3.0), "frame_number"),
    ("empty uid", frame_parts(scan_uid=""), "scan_uid"),
    ("negative current", frame_parts(ring_current_ma=-1.0), "ring_current_ma"),
    ("data on scan-end", [encode_scan_end(ScanEnd(scan_uid="u", frames_sent=1))[0], b"x"], "data"),
    (
        "negative frames_sent",
        [
            b'{"protocol":"talbot-stream","version":2,"type":"scan-end","scan_uid":"u",'
            b'"frames_sent":-1}',
            b"",
        ],
        "frames_sent",
    ),
]


@pytest.mark.parametrize(("case", "parts", "field"), BAD, ids=[b[0] for b in BAD])
def test_malformed_messages_raise_an_error_naming_the_field(
    case: str, parts: list[bytes], field: str
) -> None:
    with pytest.raises(MessageError) as info:
        decode(parts)
    assert info.value.field == field, str(info.value)


def test_scan_start_is_checked_against_its_instrument_and_plan() -> None:
    head, data = encode_scan_start(start_msg())
    h = json.loads(head)
    geometry = h["instrument"]["geometry"]
    for change, field in [
        ({"shape": [64, 96]}, "shape"),
        ({"instrument": {"name": "x"}}, "instrument.geometry"),
        ({"plan": {**h["plan"], "steps": 2}}, "plan.steps"),
        ({"plan": {**h["plan"], "phantom": {}}}, "plan.phantom"),
        (
            {"instrument": {**h["instrument"], "geometry": {**geometry, "g1_phase_deg": "pi"}}},
            "instrument.geometry.g1_phase_deg",
        ),
        ({"preset": {}}, "preset"),
    ]:
        with pytest.raises(MessageError) as info:
            decode([json.dumps({**h, **change}).encode(), data])
        assert info.value.field == field


def test_fuzzed_messages_are_counted_and_dropped_while_frames_go_on() -> None:
    rng = np.random.default_rng(3)
    garbage = [
        bytes(rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8)) for _ in range(20)
    ]
    garbage = [[g, b""] for g in garbage] + [parts for _, parts, _ in BAD]
    with FramePublisher(frame_bytes=6144) as pub, FrameReceiver(pub.endpoint) as rx:
        pub.start_scan("uid", P.instrument, P.scan_plan())
        for n in range(10):
            pub.publish(frame(n), tags(n))
            for parts in garbage[n::10]:
                pub.send_raw(list(parts))
        pub.end_scan()
        got: list[object] = []
        while not got or not isinstance(got[-1], ScanEnd):
            msg = rx.recv(timeout_s=10)
            assert msg is not None, "stream stalled"
            got.append(msg)
    frames = [m for m in got if isinstance(m, Frame)]
    assert [f.header.frame_number for f in frames] == list(range(10))
    np.testing.assert_array_equal(frames[9].data, frame(9))
    assert rx.stats.malformed == len(garbage)
    assert got[-1] == ScanEnd(scan_uid="uid", frames_sent=10)


def test_a_consumer_written_from_the_document_reads_the_stream() -> None:
    """Raw pyzmq + json, following docs/stream-protocol.md §1-2 only."""
    pub = FramePublisher(frame_bytes=6144)
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.rcvhwm = 16
    pull.connect(pub.endpoint)
    dtypes = {"uint8": "<u1", "uint16": "<u2", "uint32": "<u4", "float32": "<f4", "float64": "<f8"}

    def detector() -> None:
        pub.start_scan("scan-42", P.instrument, P.scan_plan(), frames_planned=6)
        for n in range(6):
            if n != 4:  # one frame lost
                pub.publish(frame(n), tags(n), frame_number=n)
        pub.next_frame = 6
        pub.end_scan()

    thread = threading.Thread(target=detector)
    thread.start()
    frames: dict[int, np.ndarray] = {}
    try:
        while True:
            assert pull.poll(10_000), "no message"
            parts = pull.recv_multipart()
            assert len(parts) == 2
            h = json.loads(parts[0])
            assert (h["protocol"], h["version"], h["scan_uid"]) == ("talbot-stream", 2, "scan-42")
            if h["type"] == "scan-start":
                assert h["shape"] == list(P.instrument.detector.shape)
                assert h["plan"]["steps"] == 5
                assert h["instrument"]["geometry"]["g2_pitch_m"] == pytest.approx(1e-6)
                assert parts[1] == b""
            elif h["type"] == "frame":
                arr = np.frombuffer(parts[1], dtypes[h["dtype"]]).reshape(h["shape"])
                frames[h["frame_number"]] = arr
                assert h["step_index"] == h["frame_number"] % 5
                assert h["rotation_deg"] == 2.0 * (h["frame_number"] // 5)
            elif h["type"] == "scan-end":
                lost = set(range(h["frames_sent"])) - set(frames)
                break
    finally:
        thread.join()
        pull.close(linger=0)
        ctx.term()
        pub.close()
    assert lost == {4}
    np.testing.assert_array_equal(frames[5], frame(5))


def test_hwm_is_sized_for_the_frame_size() -> None:
    assert hwm_for(8 * 2**20) == 16
    assert hwm_for(2 * 2**20) == 64
    assert hwm_for(6144) == 1000
    assert hwm_for(2**30) == 2
    with pytest.raises(ValueError, match="frame_bytes"):
        hwm_for(0)
    with (
        FramePublisher(frame_bytes=8 * 2**20) as pub,
        FrameReceiver(pub.endpoint, frame_bytes=8 * 2**20) as rx,
    ):
        assert (pub.sock.sndhwm, rx.sock.rcvhwm) == (16, 16)


def test_a_full_pipe_drops_or_times_out_instead_of_queueing_without_bound() -> None:
    big = np.zeros((512, 512), np.uint16)  # 512 KiB: beyond the kernel socket buffers
    p = with_detector_shape(P, 512, 512)
    with FramePublisher(hwm=2, block=False) as pub, FrameReceiver(pub.endpoint, hwm=2) as rx:
        pub.start_scan("uid", p.instrument, p.scan_plan())
        # copied sends: zero-copy sends dropped at a full pipe occasionally left context
        # termination waiting on pyzmq's buffer collector (pyzmq issue #65 family), a test hang
        sent = [pub.publish(big, tags(n), copy=True) for n in range(200)]
        assert not all(sent)
        assert pub.dropped == sent.count(False)
        assert pub.sent < 40  # about SNDHWM + RCVHWM + kernel buffers, not 200
        assert rx.sock.rcvhwm == 2
    with FramePublisher(hwm=2, send_timeout_s=0.2) as pub, pytest.raises(StreamTimeout):
        pub.start_scan(
            "uid", p.instrument, p.scan_plan()
        )  # no consumer: waits at most the send timeout


def test_publisher_checks_its_inputs() -> None:
    with FramePublisher() as pub:
        with pytest.raises(RuntimeError, match="start_scan"):
            pub.publish(frame(0), tags(0))
        with pytest.raises(ValueError, match="dtype"):
            pub.start_scan("uid", P.instrument, P.scan_plan(), dtype="int64")


def test_endpoints_are_loopback_unless_allowed() -> None:
    for ok in ("tcp://127.0.0.1:5555", "tcp://localhost:1", "tcp://[::1]:9", "ipc:///tmp/x"):
        assert check_endpoint(ok) == ok
    for bad in ("tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://10.1.2.3:5555", "udp://x:1", "x"):
        with pytest.raises(ValueError, match="endpoint"):
            check_endpoint(bad)
    assert check_endpoint("tcp://*:5555", allow_remote=True) == "tcp://*:5555"
    with pytest.raises(ValueError, match="endpoint"):
        FramePublisher("tcp://0.0.0.0:*")


def test_curve_authenticated_consumer_receives_and_a_plain_one_does_not() -> None:
    server, client = CurveKeys.generate(), CurveKeys.generate()
    curve = CurveServer(server, allowed_clients=(client.public,))
    with FramePublisher(frame_bytes=6144, curve=curve) as pub:
        plain = FrameReceiver(pub.endpoint)
        good = FrameReceiver(pub.endpoint, curve=CurveClient(client, server.public))
        stranger = CurveKeys.generate()
        other = FrameReceiver(pub.endpoint, curve=CurveClient(stranger, server.public))
        try:
            pub.start_scan("uid", P.instrument, P.scan_plan())
            pub.publish(frame(0), tags(0))
            assert isinstance(good.recv(timeout_s=10), ScanStart)
            msg = good.recv(timeout_s=10)
            assert isinstance(msg, Frame)
            np.testing.assert_array_equal(msg.data, frame(0))
            assert plain.recv(timeout_s=0.3) is None
            assert other.recv(timeout_s=0.3) is None
        finally:
            for r in (plain, good, other):
                r.close()


def test_live_view_is_a_pub_socket_with_a_tiny_hwm() -> None:
    with LivePublisher() as live:
        assert live.sock.sndhwm == 2
        with pytest.raises(ValueError, match="hwm"):
            LivePublisher(hwm=100)
        sub = live_subscriber(live.endpoint)
        try:
            data = np.arange(3 * 2 * 8 * 8, dtype=np.float32).reshape(3, 2, 8, 8)
            msg = None
            for _ in range(200):  # PUB drops until the subscription has propagated
                live.publish(
                    LiveSlices("uid", ("delta", "mu", "darkfield"), (3, 9), 4, 90, 5e-7, data)
                )
                msg = sub.recv(timeout_s=0.02)
                if msg is not None:
                    break
            assert isinstance(msg, LiveSlices)
            assert msg.rows == (3, 9)
            np.testing.assert_array_equal(msg.data, data)
        finally:
            sub.close()


def test_dtype_whitelist_is_little_endian() -> None:
    assert all(dt.str[0] in "<|" for dt in PIXEL_DTYPES.values())


def test_a_rejected_message_is_logged_at_once_naming_the_field(
    caplog: pytest.LogCaptureFixture,
) -> None:
    start = json.loads(encode_scan_start(start_msg())[0])
    del start["plan"]
    with FramePublisher(frame_bytes=6144) as pub, FrameReceiver(pub.endpoint) as rx:
        for _ in range(7):
            pub.send_raw([json.dumps(start).encode(), b""])
        with caplog.at_level("WARNING", logger="contracts.sockets"):
            assert rx.recv(timeout_s=2) is None
    assert rx.stats.malformed == 7
    assert rx.stats.malformed_fields["plan"] == 7
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 5  # LOGGED_REJECTIONS, then counted only
    assert all("plan: Field required" in line for line in lines)
    assert "further ones counted" in lines[-1]


def test_a_consumer_that_connects_mid_scan_is_sent_the_scan_start_first() -> None:
    """The first consumer goes away mid-scan; the one that connects next receives the
    scan-start (with the raw file it names) before any frame, and nothing twice."""
    with FramePublisher(frame_bytes=6144, hwm=2) as pub:
        first = FrameReceiver(pub.endpoint, hwm=2)
        pub.start_scan("uid", P.instrument, P.scan_plan(), raw_file="/data/scan.h5")
        pub.publish(frame(0), tags(0))
        assert isinstance(first.recv(timeout_s=10), ScanStart)
        assert isinstance(first.recv(timeout_s=10), Frame)
        first.close(linger_s=0)
        second = FrameReceiver(pub.endpoint, hwm=2)
        try:
            sender = threading.Thread(target=pub.publish, args=(frame(1), tags(1)))
            sender.start()  # blocks until the new consumer is there
            start = second.recv(timeout_s=10)
            assert isinstance(start, ScanStart)
            assert (start.scan_uid, start.raw_file) == ("uid", "/data/scan.h5")
            got = second.recv(timeout_s=10)
            assert isinstance(got, Frame)
            assert got.header.frame_number == 1
            sender.join(10)
            pub.end_scan()
            assert isinstance(second.recv(timeout_s=10), ScanEnd)
            assert second.recv(timeout_s=0.3) is None  # no second scan-start
        finally:
            second.close()
        assert (pub.repeated_starts, pub.consumers) == (1, 1)


def test_the_publisher_warns_of_a_second_consumer(caplog: pytest.LogCaptureFixture) -> None:
    with FramePublisher(frame_bytes=6144) as pub:
        receivers = [FrameReceiver(pub.endpoint) for _ in range(2)]
        try:
            deadline = threading.Event()
            while pub.watch_consumers() < 2 and not deadline.wait(0.01):
                pass
        finally:
            for r in receivers:
                r.close()
    assert any("2 consumers connected to" in r.getMessage() for r in caplog.records)


def test_a_detector_publisher_never_waits_for_an_absent_consumer() -> None:
    """``wait_for_consumers=False``: with nobody connected the scan-start and the frames go
    nowhere at once (counted as dropped); the consumer that connects later is sent the
    scan-start before the next frame."""
    with FramePublisher(frame_bytes=6144, wait_for_consumers=False, send_timeout_s=30) as pub:
        t0 = time.monotonic()
        pub.start_scan("uid", P.instrument, P.scan_plan(), raw_file="/data/scan.h5")
        assert not pub.publish(frame(0), tags(0))
        assert time.monotonic() - t0 < 5  # not the 30 s send timeout
        assert pub.dropped == 1
        rx = FrameReceiver(pub.endpoint)
        try:
            while not pub.publish(frame(1), tags(1), frame_number=1):  # until it is seen
                time.sleep(0.01)
            assert isinstance(rx.recv(timeout_s=10), ScanStart)
            got = rx.recv(timeout_s=10)
            assert isinstance(got, Frame)
            assert got.header.frame_number == 1
        finally:
            rx.close()
