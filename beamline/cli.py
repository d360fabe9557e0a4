"""The ``talbot`` command line: one entry point for operators and scientists.

Bad arguments exit with status 2 and a message naming the argument (argparse convention).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from beamline import stream_cli
from beamline.config import PRESETS, ConfigError, Preset, load_profile, preset


def _load(args: argparse.Namespace) -> Preset:
    if args.profile is not None:
        return load_profile(args.profile)
    return preset(args.preset)


def _add_preset_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="tiny",
        help="built-in instrument and scan preset (default: tiny, CI-sized)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="TOML profile overriding a preset (see docs/physics.md); wins over --preset",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``talbot`` command (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="talbot",
        description="Talbot: X-ray grating interferometer control, simulation and reconstruction.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="simulate a phase-stepping CT of the bone phantom and reconstruct it",
        description=(
            "Simulate a whole phase-stepping CT scan of the analytic bone phantom, reconstruct "
            "delta, mu and dark-field, and write recon.h5, truth.h5 and PNG figures into --out. "
            "Prints the quality figures measured against the ground truth."
        ),
    )
    _add_preset_arguments(demo)
    demo.add_argument("--out", type=Path, required=True, help="output directory (created)")
    demo.add_argument("--seed", type=_positive_int, default=0, help="random seed (default 0)")
    demo.add_argument(
        "--noise-free", action="store_true", help="no photon, read or step noise (checks)"
    )
    sim = sub.add_parser(
        "sim",
        help="serve the simulated beamline over Channel Access (caproto, loopback by default)",
        description="Serve the whole simulated beamline; `talbot sim --help` lists its options.",
        add_help=False,
    )
    stream_cli.add_parsers(sub)
    del sim  # its options belong to sim.ioc (main() hands the arguments over unparsed)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``talbot`` command; returns the process exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["sim"]:
        from sim.ioc.__main__ import main as sim_main

        return sim_main(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command in stream_cli.COMMANDS:
        return stream_cli.handle(args)
    try:
        config = _load(args)
    except ConfigError as exc:
        parser.error(str(exc))
    if args.command == "demo":
        from beamline.demo import run_demo

        try:
            report = run_demo(config, out=args.out, seed=args.seed, noise=not args.noise_free)
        except ConfigError as exc:
            parser.error(str(exc))
        print(report.summary())
        return 0
    parser.error(f"unknown command {args.command!r}")
    return 2  # pragma: no cover - parser.error exits


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
