"""Scan efficiency of a tiny phase-stepping CT on the simulated beamline.

Efficiency = (sum of exposure times) / (wall time of the run, open to close), at 50 ms exposure.
Target >= 80 %. Run: ``.venv/bin/python benchmarks/bench_scan.py [--angles N] [--exposure S]``.
Starts its own simulated IOC on a free loopback port.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints and returns 0."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--angles", type=int, default=6)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--exposure", type=float, default=0.05)
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
                angles=args.angles, reference_every=args.angles, steps=args.steps, darks=5,
                exposure_s=args.exposure,
            )  # fmt: skip
            t0 = time.monotonic()
            session.RE(plan)
            wall_total = time.monotonic() - t0
            run = read_run(session.data_dir)
            frames = sum(len(run.stream_events(s)) for s in run.streams())
            assert run.stop is not None
            wall_run = float(run.stop["time"] - run.start["time"])
            exposed = frames * args.exposure
            print(f"frames {frames}, exposure {args.exposure * 1e3:.0f} ms")
            print(f"run wall time {wall_run:.2f} s (RE call incl. staging {wall_total:.2f} s)")
            print(f"per-frame time {wall_run / frames * 1e3:.1f} ms")
            print(f"scan efficiency {exposed / wall_run:.1%} (target >= 80 %)")
            session.close()
        finally:
            ioc.stop_ioc(proc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
