"""Scan efficiency of a tiny phase-stepping CT on the simulated beamline.

Efficiency = (sum of exposure times) / (wall time of the run, open to close), at 50 ms exposure,
with the tiny profile's plan by default (90 angles x 5 steps, references every 45 angles, the
first one the 48-step calibration series, 5 darks: 5 + 48 + 2 x 5 + 90 x 5 = 513 frames).
Target (issue 4) >= 80 %. Both ways of stepping are measured in one run, on one simulated IOC:
``hardware`` (one camera acquisition per series, the step sequencer moves the piezo after each
exposure) and ``software`` (move, tag, trigger and read per step). Also reported, from the
exposure start times in the scan file: the median frame-to-frame time inside a series (exposure
+ step + overheads) and the median time from one projection series' first frame to the next
one's (a whole series including the rotation, approach and events).

Run: ``.venv/bin/python benchmarks/bench_scan.py [--out DIR] [--quick] [--angles N]
[--exposure S] [--stepping M] [--calibration-steps N]``. Starts its own simulated IOC
(``python -m sim.ioc``, tiny profile, seed 0) on a free loopback port; writes
``OUT/scan.json`` (default ``benchmarks/results``). ``--quick``: 20 angles, references every 10
(smoke run; the run-level overheads weigh more, so its efficiency is lower).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.common import bench_parser, write_json  # noqa: E402
from sim.ioc.launch import (  # noqa: E402
    client_environment,
    free_port,
    start_ioc,
    stop_ioc,
    wait_for_pv,
)

#: Exposure per frame [s] of the measured scan.
EXPOSURE_S = 0.05


def _measure(session: Any, args: argparse.Namespace, stepping: str) -> dict[str, Any]:
    """Run one scan; its efficiency and timings."""
    import h5py

    from beamline.documents import read_run
    from contracts.scanfile import read_frame_table

    plan = session.ct(
        angles=args.angles, reference_every=args.reference_every, steps=args.steps,
        calibration_steps=args.calibration_steps, darks=args.darks, exposure_s=args.exposure,
        stepping=stepping,
    )  # fmt: skip
    t0 = time.monotonic()
    (uid,) = session.RE(plan)
    wall_call = time.monotonic() - t0
    run = read_run(session.data_dir, uid)
    assert run.stop is not None
    assert run.stop["exit_status"] == "success"
    wall_run = float(run.stop["time"] - run.start["time"])
    (path,) = run.file_paths()
    with h5py.File(path, "r") as f:
        table = read_frame_table(f)
    start_s = table.column("timestamp_s")
    step = table.column("step_index")
    kind = table.column("image_key")
    n = len(table)
    inside = np.diff(start_s)[step[1:] > 0]
    firsts = start_s[(step == 0) & (kind == 0)]
    series_s = float(np.median(np.diff(firsts)))
    return {
        "stepping": stepping,
        "frames": n,
        "superseded": int(table.superseded.sum()),
        "run_wall_s": wall_run,
        "call_wall_s": wall_call,
        "efficiency": n * args.exposure / wall_run,
        "frame_to_frame_median_s": float(np.median(inside)),
        "projection_series_median_s": series_s,
        "series_efficiency": args.steps * args.exposure / series_s,
        "before_first_after_last_s": wall_run - float(start_s[-1] - start_s[0]) - args.exposure,
    }


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; prints, writes the JSON result and returns 0."""
    from contracts.profile import builtin_profile

    tiny = builtin_profile("tiny").scan_plan()
    parser = bench_parser(__doc__, result="scan")
    parser.add_argument("--angles", type=int, default=None, help=f"default {tiny.angles}")
    parser.add_argument(
        "--reference-every", type=int, default=None, help=f"default {tiny.reference_every}"
    )
    parser.add_argument("--steps", type=int, default=tiny.steps)
    parser.add_argument(
        "--calibration-steps", type=int, default=tiny.calibration_steps,
        help=f"steps of reference series 0 (0: none; default {tiny.calibration_steps})",
    )  # fmt: skip
    parser.add_argument("--darks", type=int, default=tiny.darks)
    parser.add_argument("--exposure", type=float, default=EXPOSURE_S)
    parser.add_argument(
        "--stepping", choices=("hardware", "software", "both"), default="both",
        help="series timing to measure (default: both, in one run)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.angles is None:
        args.angles = 20 if args.quick else tiny.angles
    if args.reference_every is None:
        args.reference_every = 10 if args.quick else tiny.reference_every
    modes = ["hardware", "software"] if args.stepping == "both" else [args.stepping]

    port = free_port()
    prefix = f"BSC{uuid.uuid4().hex[:8].upper()}:"
    os.environ.update(client_environment(port))  # before anything loads pyepics

    results = []
    with tempfile.TemporaryDirectory(prefix="talbot-bench-") as tmp:
        proc = start_ioc(prefix, port, Path(tmp) / "ioc.log", "--seed", "0")
        try:
            from beamline.session import make_session
            from contracts.pvnames import SIM_PVNAMES

            pvs = SIM_PVNAMES.with_prefix(prefix)
            wait_for_pv(pvs.full("beam", "Current"), proc)
            session = make_session("tiny", Path(tmp) / "data", pvs=pvs, suspend_sleep_s=0.0)
            try:
                for mode in modes:
                    results.append(_measure(session, args, mode))
            finally:
                session.close()
        finally:
            stop_ioc(proc)
    print(f"{results[0]['frames']} frames, exposure {args.exposure * 1e3:.0f} ms, "
          f"{args.angles} angles, references every {args.reference_every}")  # fmt: skip
    print(f"{'stepping':<10}{'wall s':>8}{'frame ms':>10}{'series ms':>11}{'series eff':>12}"
          f"{'efficiency':>12}")  # fmt: skip
    for r in results:
        print(
            f"{r['stepping']:<10}{r['run_wall_s']:>8.2f}{r['frame_to_frame_median_s'] * 1e3:>10.1f}"
            f"{r['projection_series_median_s'] * 1e3:>11.1f}{r['series_efficiency']:>12.1%}"
            f"{r['efficiency']:>12.1%}"
        )
    best = max(r["efficiency"] for r in results)
    print(f"scan efficiency {best:.1%} (target >= 80 %)")
    result = {
        "quick": bool(args.quick),
        "exposure_s": args.exposure,
        "angles": args.angles,
        "reference_every": args.reference_every,
        "steps": args.steps,
        "calibration_steps": args.calibration_steps,
        "results": results,
        "efficiency": best,
        "target_efficiency": 0.8,
    }
    if len(results) == 2:
        result["hardware_over_software_speedup"] = (
            results[1]["run_wall_s"] / results[0]["run_wall_s"]
        )
    print(f"wrote {write_json('scan', result, args.out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
