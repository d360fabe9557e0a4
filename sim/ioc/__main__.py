"""``python -m sim.ioc``: serve the simulated beamline over Channel Access (loopback default)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from contracts.profile import BUILTIN, ConfigError, resolve_profile
from contracts.pvnames import PVNameError
from sim.ioc.server import PortInUse, build_beamline, check_port_free, serve


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="talbot sim", description="Simulated Talbot beamline (caproto IOC)."
    )
    parser.add_argument("--prefix", default=None, help="global PV prefix (default TALBOT:)")
    parser.add_argument("--host", default="127.0.0.1", help="interface to bind (default loopback)")
    parser.add_argument("--port", type=int, default=5064, help="CA server port (default 5064)")
    parser.add_argument(
        "--profile",
        default="tiny",
        help=f"built-in profile ({', '.join(BUILTIN)}) or a TOML profile file with [instrument] "
        "and [simulation] tables (default tiny)",
    )
    parser.add_argument("--seed", type=int, default=None, help="random seed (noise)")
    parser.add_argument(
        "--stream",
        default=None,
        metavar="ENDPOINT",
        help="publish every frame on the frame stream, bound here (e.g. tcp://127.0.0.1:5555; "
        "loopback unless --allow-remote)",
    )
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --stream endpoint beyond loopback (the stream is not authenticated)",
    )
    parser.add_argument("--list-pvs", action="store_true", help="print every PV and exit")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = parse_args(argv)
    try:
        profile = resolve_profile(args.profile)
        profile.simulated()
        pvs = profile.instrument.pvs
        if args.prefix is not None:
            pvs = pvs.with_prefix(args.prefix)
    except (PVNameError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.list_pvs:
        beamline = build_beamline(profile, pvs=pvs, seed=args.seed)
        for name, meaning in beamline.describe_pvs().items():
            print(f"{name}\t{meaning}")
        return 0
    try:
        check_port_free(args.host, args.port)
    except PortInUse as exc:
        print(f"error: --port: {exc.strerror or exc}", file=sys.stderr)
        return 2
    try:
        beamline = build_beamline(
            profile, pvs=pvs, seed=args.seed, stream=args.stream, allow_remote=args.allow_remote
        )
    except (ValueError, OSError) as exc:  # a bad or busy stream endpoint
        print(f"error: --stream: {getattr(exc, 'strerror', None) or exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        asyncio.run(serve(beamline, host=args.host, port=args.port))
    except PortInUse as exc:
        if beamline.publisher is not None:
            beamline.publisher.close()
        print(f"error: --port: {exc.strerror or exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
