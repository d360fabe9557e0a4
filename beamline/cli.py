"""The ``talbot`` command line: one entry point for operators and scientists.

Bad arguments exit with status 2 and a message naming the argument (argparse convention).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from beamline import import_cli, scan_cli, stream_cli
from beamline.argtypes import count
from contracts.profile import ConfigError, Profile, resolve_profile


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``talbot`` command (exposed for tests and docs)."""
    parser = argparse.ArgumentParser(
        prog="talbot",
        description="Talbot: X-ray grating interferometer control, simulation and reconstruction.",
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", help="errors with their traceback (before COMMAND)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser(
        "demo",
        help="run a simulated phase-stepping CT of the bone phantom through the whole system",
        description=(
            "Start the simulated beamline and the streaming reconstructor on loopback, run a "
            "phase-stepping CT of the analytic bone phantom through bluesky over Channel Access, "
            "stream the frames into the reconstructor, and write the raw scan file and documents "
            "(data/), recon.h5, truth.h5 and PNG figures into --out. Prints the quality figures "
            "measured against the ground truth and the timings; stops every process it started. "
            "--offline simulates and reconstructs in memory instead (no services, seconds)."
        ),
    )
    demo.add_argument(
        "--profile",
        default="tiny",
        help="built-in profile (tiny: CI-sized, full) or a TOML profile file with [instrument], "
        "[plan] and [simulation] tables (docs/operating.md); default tiny",
    )
    demo.add_argument("--out", type=Path, required=True, help="output directory (created)")
    demo.add_argument("--seed", type=count, default=0, help="random seed (default 0)")
    demo.add_argument(
        "--offline",
        action="store_true",
        help="simulate and reconstruct in memory, without the beamline server and the stream",
    )
    demo.add_argument(
        "--noise-free",
        action="store_true",
        help="with --offline: no photon, read or step noise (checks)",
    )
    sim = sub.add_parser(
        "sim",
        help="serve the simulated beamline over Channel Access (caproto, loopback by default)",
        description="Serve the whole simulated beamline; `talbot sim --help` lists its options.",
        add_help=False,
    )
    stream_cli.add_parsers(sub)
    import_cli.add_parser(sub)
    scan_cli.add_scan_parser(sub)
    scan_cli.add_align_parser(sub)
    shell = sub.add_parser(
        "shell",
        help="IPython session with RE, the devices, the plans and the configuration loaded",
        description="Interactive operator session (IPython when installed, else the Python REPL).",
    )
    shell.add_argument("--profile", default=None, help=scan_cli.PROFILE_HELP)
    shell.add_argument("--data-dir", type=Path, default=Path("data"), help="scan files go here")
    del sim  # its options belong to sim.ioc (main() hands the arguments over unparsed)
    return parser


def _demo(parser: argparse.ArgumentParser, args: argparse.Namespace, config: Profile) -> int:
    if args.noise_free and not args.offline:
        parser.error("--noise-free needs --offline (the simulated detector is always noisy)")
    if args.offline:
        from beamline.demo import run_demo

        try:
            report = run_demo(config, out=args.out, seed=args.seed, noise=not args.noise_free)
        except ConfigError as exc:
            parser.error(str(exc))
    else:
        from beamline.system_demo import DemoError, run_system_demo

        try:
            report = run_system_demo(config, args.out, seed=args.seed, profile=args.profile)
        except DemoError as exc:
            print(f"talbot demo: {exc}", file=sys.stderr)
            return 1
    print(report.summary())
    return 0


def _shell(args: argparse.Namespace) -> int:
    from beamline.session import make_session, shell_namespace

    session = make_session(args.profile, args.data_dir, progress_bar=True)
    namespace = shell_namespace(session)
    banner = "Talbot session: " + ", ".join(sorted(k for k in namespace if not k.startswith("_")))
    try:
        from IPython import start_ipython
    except ImportError:
        import code

        code.interact(banner=banner, local=namespace)
    else:
        print(banner)
        start_ipython(argv=[], user_ns=namespace)
    session.close()
    return 0


def _one_line_warning(
    message: Warning | str, category: type[Warning], *args: object, **kwargs: object
) -> str:
    """``warnings.formatwarning`` for a command line: ``talbot: warning: ...`` (no source)."""
    return f"talbot: warning: {message}\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``talbot`` command; returns the process exit status."""
    warnings.formatwarning = _one_line_warning  # e.g. a GeometryWarning of a profile
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["sim"]:
        from sim.ioc.__main__ import main as sim_main

        return sim_main(args_list[1:])
    parser = build_parser()
    args = parser.parse_args(args_list)
    if args.command in stream_cli.COMMANDS:
        return stream_cli.handle(args)
    if args.command == "import":
        return import_cli.cmd_import(args)
    if args.command == "scan":
        return scan_cli.run_scan(args)
    if args.command == "align":
        return scan_cli.run_align(args)
    if args.command == "shell":
        return _shell(args)
    try:
        config = resolve_profile(args.profile)
        config.scan_plan()
        config.simulated()
    except ConfigError as exc:
        parser.error(str(exc))
    if args.command == "demo":
        return _demo(parser, args, config)
    parser.error(f"unknown command {args.command!r}")
    return 2  # pragma: no cover - parser.error exits


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
