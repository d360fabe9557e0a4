"""Scan efficiency of a tiny phase-stepping CT on the simulated beamline.

Efficiency = (sum of exposure times) / (wall time of the run, open to close), at 50 ms exposure,
with the tiny preset's schedule by default (90 angles x 5 steps, references every 45 angles,
5 darks: 470 frames). Target (issue 4) >= 80 %. Also reported, from the event times: the step
efficiency inside a series (exposure / median frame-to-frame time) and the time spent between
series (rotation moves, the sample going out and back in for references, checkpoints).

Run: ``.venv/bin/python benchmarks/bench_scan.py [--angles N] [--exposure S]`` (``--help``).
Starts its own simulated IOC on a free loopback port; writes ``benchmarks/results/scan.json``.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import machine_info, write_json  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints, writes the JSON result and returns 0."""
    from beamline.config import preset

    tiny = preset("tiny").schedule
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--angles", type=int, default=tiny.angles)
    parser.add_argument("--reference-every", type=int, default=tiny.reference_every)
    parser.add_argument("--steps", type=int, default=tiny.steps)
    parser.add_argument("--darks", type=int, default=tiny.darks)
    parser.add_argument("--exposure", type=float, default=0.05)
    parser.add_argument(
        "--stepping", choices=("hardware", "software", "both"), default="hardware",
        help="series timing to measure (default: both, in one run)",
    )  # fmt: skip
    args = parser.parse_args(argv)

    import tests.conftest as ioc  # sets the loopback CA environment before pyepics loads

    with tempfile.TemporaryDirectory(prefix="talbot-bench-") as tmp:
        proc = ioc.start_ioc(ioc.IOC_PREFIX, ioc.IOC_PORT, Path(tmp) / "ioc.log", "--seed", "0")
        try:
            from beamline.pvnames import SIM_PVNAMES
            from beamline.session import make_session, read_run

            pvs = SIM_PVNAMES.with_prefix(ioc.IOC_PREFIX)
            ioc.wait_for_pv(pvs.full("beam", "Current"), proc)
            session = make_session("tiny", Path(tmp) / "data", pvs=pvs, suspend_sleep_s=0.0)
            plan = session.ct(
                angles=args.angles, reference_every=args.reference_every, steps=args.steps,
                darks=args.darks, exposure_s=args.exposure, stepping=args.stepping,
            )  # fmt: skip
            t0 = time.monotonic()
            session.RE(plan)
            wall_total = time.monotonic() - t0
            run = read_run(session.data_dir)
            times = sorted(e["time"] for s in run.streams() for e in run.stream_events(s))
            session.close()
        finally:
            ioc.stop_ioc(proc)
    assert run.stop is not None
    frames = len(times)
    wall_run = float(run.stop["time"] - run.start["time"])
    exposed = frames * args.exposure
    gaps = [b - a for a, b in itertools.pairwise(times)]
    step_s = statistics.median(gaps)
    # a gap longer than 1.5 median steps contains something besides a phase step
    between = sum(g - step_s for g in gaps if g > 1.5 * step_s)
    result = {
        "frames": frames,
        "exposure_s": args.exposure,
        "angles": args.angles,
        "reference_every": args.reference_every,
        "run_wall_s": wall_run,
        "call_wall_s": wall_total,
        "efficiency": exposed / wall_run,
        "step_median_s": step_s,
        "step_efficiency": args.exposure / step_s,
        "between_series_s": between,
        "before_first_after_last_s": wall_run - (times[-1] - times[0]),
        "target_efficiency": 0.8,
        "machine": machine_info(),
    }
    print(f"frames {frames}, exposure {args.exposure * 1e3:.0f} ms, {args.angles} angles")
    print(f"run wall time {wall_run:.2f} s (RE call incl. staging {wall_total:.2f} s)")
    print(
        f"per-frame time {wall_run / frames * 1e3:.1f} ms; median step inside a series "
        f"{step_s * 1e3:.1f} ms (step efficiency {result['step_efficiency']:.1%})"
    )
    print(
        f"between series (rotation, references out/in, checkpoints) {between:.2f} s; "
        f"open to first frame + last frame to close {result['before_first_after_last_s']:.2f} s"
    )
    print(f"scan efficiency {result['efficiency']:.1%} (target >= 80 %)")
    print(f"wrote {write_json('scan', result)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
