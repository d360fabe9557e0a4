"""``talbot replay``, ``talbot recon`` and ``talbot reconstruct``: the frame-stream commands.

Wiring (``beamline/cli.py``)::

    from beamline import stream_cli
    stream_cli.add_parsers(sub)                 # in build_parser()
    if args.command in stream_cli.COMMANDS:     # in main(), before a profile is loaded
        return stream_cli.handle(args)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from beamline import exitcodes, reconstruct_cli
from beamline.argtypes import count, positive_float, positive_int
from beamline.reconstruct_cli import add_fit_option, report_bad_pixels, report_fit

#: Sub-commands added by ``add_parsers``.
COMMANDS = ("replay", "recon", "reconstruct")

#: Default data-path endpoint (loopback).
DEFAULT_ENDPOINT = "tcp://127.0.0.1:5555"


def _reason(exc: BaseException) -> str:
    """An error's own words (an OSError's without its ``[Errno N]``)."""
    return getattr(exc, "strerror", None) or str(exc)


def _rows(text: str) -> tuple[int, ...]:
    try:
        rows = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected rows like 10,16,20, got {text!r}") from None
    if any(r < 0 for r in rows):
        raise argparse.ArgumentTypeError(f"rows must be >= 0, got {text!r}")
    return rows


def _reserve(text: str) -> tuple[int, int, int]:
    parts = text.lower().split("x")
    try:
        rows, cols, angles = (int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected ROWSxCOLSxANGLES (e.g. 1024x1024x180), got {text!r}"
        ) from None
    if rows < 1 or cols < 2 or angles < 1:
        raise argparse.ArgumentTypeError(f"rows, columns and angles must be positive: {text!r}")
    return rows, cols, angles


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``replay``, ``recon`` and ``reconstruct`` to the ``talbot`` sub-parsers."""
    rp = sub.add_parser(
        "replay",
        help="publish a recorded scan file on the frame stream",
        description="Publish a recorded scan through the frame stream protocol "
        "(docs/stream-protocol.md): scan-start, every frame in file order, scan-end. "
        "Waits for a consumer (PUSH back-pressure).",
    )
    rp.add_argument("file", type=Path, help="raw scan file (HDF5)")
    rp.add_argument("--rate", type=positive_float, default=None, help="frames per second")
    rp.add_argument("--bind", default=DEFAULT_ENDPOINT, help=f"endpoint ({DEFAULT_ENDPOINT})")
    rp.add_argument("--allow-remote", action="store_true", help="allow a non-loopback bind")

    rc = sub.add_parser(
        "recon",
        help="streaming reconstructor service: follow the frame stream scan after scan",
        description="Follow the frame stream scan after scan until stopped (Ctrl-C or "
        "SIGTERM): live slices while a scan runs and, when its last series is in, the whole "
        "volume in --out/<scan uid>/ (recon.h5, slices.png, stream.json; --out/latest links "
        "to the newest). Runs that are not phase-stepping CT are passed over. A late or "
        "restarted reconstructor catches up from the raw file the scan-start names. Exit "
        "status: 0 every scan complete, 3 a partial scan, 1 a failed one, 2 bad input, 130 "
        "stopped mid-scan.",
    )
    rc.add_argument(
        "--connect", default=DEFAULT_ENDPOINT, help=f"data endpoint ({DEFAULT_ENDPOINT})"
    )
    rc.add_argument("--out", type=Path, required=True, help="output directory (created)")
    rc.add_argument(
        "--file", type=Path, default=None,
        help="raw scan file to catch up from, for a publisher whose scan-start names none",
    )  # fmt: skip
    rc.add_argument("--live-bind", default=None, help="PUB endpoint for live slices")
    rc.add_argument("--live-rows", type=_rows, default=None, help="detector rows shown live")
    rc.add_argument("--live-interval", type=float, default=0.2, help="s between live updates")
    rc.add_argument("--center", type=float, default=None, help="rotation centre offset [px]")
    rc.add_argument("--workers", type=positive_int, default=1, help="row-slab workers")
    rc.add_argument("--rows", type=positive_int, default=None, help="detector rows (workers)")
    rc.add_argument("--max-frame-mib", type=positive_float, default=8.0, help="queue sizing")
    rc.add_argument(
        "--scans", type=count, default=0,
        help="CT scans to reconstruct, then exit (default 0: until stopped)",
    )  # fmt: skip
    rc.add_argument(
        "--reserve", type=_reserve, default=None, metavar="ROWSxCOLSxANGLES",
        help="at start, make the memory a scan of this size needs (fits and projections: 24 B "
        "per pixel per angle; volumes: 12 B per voxel; 17.5 GB for 1024x1024x180), so that the "
        "first scan runs as fast as later ones",
    )  # fmt: skip
    rc.add_argument("--allow-remote", action="store_true", help="allow non-loopback endpoints")

    add_fit_option(rc)
    reconstruct_cli.add_parser(sub)


def cmd_replay(args: argparse.Namespace) -> int:
    """``talbot replay``."""
    from contracts.scanfile import open_scan_file, read_header
    from contracts.sockets import FramePublisher
    from sim.replay import replay

    try:
        with open_scan_file(args.file) as f:
            header = read_header(f)
    except (OSError, ValueError) as exc:
        print(f"talbot replay: file: {exc}", file=sys.stderr)
        return 2
    import numpy as np

    frame_bytes = header.shape[0] * header.shape[1] * np.dtype(header.dtype).itemsize
    try:
        pub = FramePublisher(args.bind, frame_bytes=frame_bytes, allow_remote=args.allow_remote)
    except (ValueError, OSError) as exc:  # (sockets raise OSError for ZeroMQ's errors)
        print(f"talbot replay: --bind: {_reason(exc)}", file=sys.stderr)
        return 2
    try:
        print(f"publishing {args.file} on {pub.endpoint}", flush=True)
        end = replay(args.file, pub, rate_hz=args.rate)
        print(f"sent {end.frames_sent} frames of scan {end.scan_uid}")
    finally:
        pub.close(linger_s=30.0)
    return 0


def _report(result: Any, out: Path) -> None:
    """Print a scan's summary and keep its figures in ``stream.json`` of its directory."""
    print(result.summary(), flush=True)
    where = result.directory if result.directory is not None else out
    where.mkdir(parents=True, exist_ok=True)
    provenance = result.provenance
    record = {
        "scan_uid": result.scan_uid,
        "outcome": result.outcome,
        "provenance": None if provenance is None else _jsonable(provenance.attrs()),
        "stats": dataclasses.asdict(result.stats),
        "timings_s": result.timings_s,
        "files": result.files,
        "error": result.error,
    }
    (where / "stream.json").write_text(json.dumps(record, indent=2))


def _jsonable(attrs: dict[str, Any]) -> dict[str, Any]:
    plan = attrs.get("scan_plan")
    return {**attrs, "scan_plan": json.loads(plan) if plan else None}


def _log_to_screen(command: str) -> None:
    """Talbot's own log lines (``recon``, ``contracts``: rejected messages, scans passed over) to
    stderr, prefixed with the command; the libraries' loggers stay as they are."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{command}: %(message)s"))
    for name in ("recon", "contracts"):
        logger = logging.getLogger(name)
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)


def cmd_recon(args: argparse.Namespace) -> int:
    """``talbot recon``."""
    from recon.allocator import keep_freed_memory

    _log_to_screen("talbot recon")

    keep_freed_memory()  # a service: the next scan reuses this one's memory (recon/allocator.py)
    frame_bytes = int(args.max_frame_mib * 2**20)
    if args.workers > 1:
        return _recon_slab_workers(args, frame_bytes)
    return _recon_service(args, frame_bytes)


def _recon_slab_workers(args: argparse.Namespace, frame_bytes: int) -> int:
    """``talbot recon --workers N``: row-slab workers behind a relay."""
    from recon.slabs import run_slab_workers

    if args.rows is None or args.center is None:
        print("talbot recon: --workers > 1 needs --rows and --center", file=sys.stderr)
        return 2
    if args.reserve is not None:
        print("talbot recon: --reserve applies to one worker (no --workers)", file=sys.stderr)
        return 2
    from contracts.consumerlock import ConsumerLock, EndpointBusy

    lock = ConsumerLock(args.connect)
    try:
        lock.acquire()
    except (EndpointBusy, OSError) as exc:
        print(f"talbot recon: --connect: {_reason(exc)}", file=sys.stderr)
        return exitcodes.USAGE
    try:
        print(
            f"talbot recon: {args.workers} slab workers following {args.connect} for one scan, "
            f"into {args.out.resolve()}/<scan uid>/",
            flush=True,
        )
        res = run_slab_workers(
            args.connect,
            args.rows,
            args.workers,
            center_offset_px=args.center,
            out=args.out,
            frame_bytes=frame_bytes,
            idle_timeout_s=None,
            fit=args.fit,
        )
    finally:
        lock.release()
    if res.volumes is not None:
        report_fit("talbot recon", res.volumes.fit)
    for r in res.results:
        print(r.summary())
    if res.provenance is None:
        return exitcodes.FAILED
    record = res.provenance
    print(f"talbot recon: scan {record.scan_uid}: {record.label} in {res.directory}")
    return exitcodes.OK if record.complete else exitcodes.PARTIAL


def _reserve_memory(rec: Any, shape: tuple[int, int, int]) -> None:
    """Make the memory of a scan of ``shape`` (rows, columns, angles) now, and say so."""
    rows, cols, angles = shape
    t0 = time.perf_counter()
    nbytes = rec.reserve((rows, cols), angles)
    print(
        f"reserved {nbytes / 1e9:.3g} GB for {rows}x{cols} x {angles} angles in "
        f"{time.perf_counter() - t0:.1f} s",
        flush=True,
    )


def _recon_service(args: argparse.Namespace, frame_bytes: int) -> int:
    """``talbot recon``: one reconstructor following the stream scan after scan."""
    from contracts.consumerlock import ConsumerLock, EndpointBusy
    from contracts.sockets import FrameReceiver, LivePublisher
    from recon.streaming import StreamingReconstructor

    lock = ConsumerLock(args.connect)
    try:
        lock.acquire()
    except (EndpointBusy, OSError) as exc:
        print(f"talbot recon: --connect: {_reason(exc)}", file=sys.stderr)
        return exitcodes.USAGE
    try:
        receiver = FrameReceiver(
            args.connect, frame_bytes=frame_bytes, allow_remote=args.allow_remote
        )
    except (ValueError, OSError) as exc:  # (sockets raise OSError for ZeroMQ's errors)
        lock.release()
        print(f"talbot recon: --connect: {_reason(exc)}", file=sys.stderr)
        return exitcodes.USAGE
    try:
        live = (
            LivePublisher(args.live_bind, allow_remote=args.allow_remote)
            if args.live_bind
            else None
        )
    except (ValueError, OSError) as exc:
        receiver.close()
        lock.release()
        print(f"talbot recon: --live-bind: {_reason(exc)}", file=sys.stderr)
        return exitcodes.USAGE
    outcomes: list[str] = []

    def report(result: Any) -> None:
        outcomes.append(result.outcome)
        if result.volumes is not None:
            report_fit("talbot recon", result.volumes.fit)
        if result.projections is not None:
            report_bad_pixels("talbot recon", result.projections.bad_pixels)
        _report(result, args.out)

    stop = threading.Event()
    try:
        rec = StreamingReconstructor(
            out=args.out,
            live=live,
            live_rows=args.live_rows,
            live_interval_s=args.live_interval,
            center_offset_px=args.center,
            fit=args.fit,
        )
        if args.reserve is not None:
            _reserve_memory(rec, args.reserve)
        live_text = f"; live slices on {live.endpoint}" if live is not None else ""
        catch_up = f"; catching up from {args.file}" if args.file is not None else ""
        scans = f"{args.scans} CT scan(s)" if args.scans else "scans until stopped (Ctrl-C)"
        print(
            f"talbot recon: following {args.connect}{catch_up}{live_text}; {scans} into "
            f"{args.out.resolve()}/<scan uid>/ ({args.out}/latest: the newest)",
            flush=True,
        )
        with _stop_on_signals(stop, rec):
            # recycle: a service holds one scan's volumes at a time, and reuses their memory
            rec.run(
                receiver,
                catch_up=args.file,
                scans=args.scans or None,
                on_result=report,
                recycle=True,
                stop=stop,
                finish_on_stop=True,
            )
    except KeyboardInterrupt:  # a second Ctrl-C: at once, the scan in progress not written
        print("talbot recon: interrupted; the scan in progress was not written", file=sys.stderr)
        return exitcodes.INTERRUPTED
    finally:
        receiver.close()
        if live is not None:
            live.close()
        lock.release()
    print(f"talbot recon: {rec.totals.summary()}", flush=True)
    return _service_status(outcomes, stopped_mid_scan=stop.is_set() and bool(rec.stopped_scan))


def _service_status(outcomes: list[str], *, stopped_mid_scan: bool) -> int:
    """The exit status of a service run: 130 when a signal cut a scan short, else 1 when a
    scan failed, 3 when one was partial, 0 when every scan was complete (or none came)."""
    if stopped_mid_scan:
        return exitcodes.INTERRUPTED
    if "failed" in outcomes:
        return exitcodes.FAILED
    if "partial" in outcomes:
        return exitcodes.PARTIAL
    return exitcodes.OK


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event, rec: Any) -> Iterator[None]:
    """SIGINT and SIGTERM set ``stop``: the service finishes the scan in progress as cut short
    (its volume says what it lacks) and exits. A second SIGINT interrupts at once."""

    def handler(signum: int, frame: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        name = signal.Signals(signum).name
        uid = rec.scan_uid
        doing = f"finishing scan {uid} as cut short" if uid else "no scan in progress"
        again = " (Ctrl-C again to quit at once)" if signum == signal.SIGINT else ""
        print(f"talbot recon: {name}: stopping; {doing}{again}", file=sys.stderr, flush=True)

    saved = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in saved.items():
            signal.signal(sig, old)


HANDLERS: dict[str, Callable[[argparse.Namespace], int]] = {
    "replay": cmd_replay,
    "recon": cmd_recon,
    "reconstruct": reconstruct_cli.cmd_reconstruct,
}


def handle(args: argparse.Namespace) -> int:
    """Run the sub-command named by ``args.command``."""
    return HANDLERS[args.command](args)


def main(argv: list[str] | None = None) -> int:
    """Stand-alone entry point (``python -m beamline.stream_cli``) until cli.py wires these."""
    parser = argparse.ArgumentParser(prog="talbot")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_parsers(sub)
    return handle(parser.parse_args(argv))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
