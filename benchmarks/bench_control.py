"""Control overhead of one phase step over Channel Access, and simulated-beamline start-up time.

``python benchmarks/bench_control.py [--out DIR] [--quick] [--steps N] [--exposure S]
[--startups K]``

- start-up: ``python -m sim.ioc`` from ``Popen`` to the first answered PV (pyepics), K times;
- one phase step, as a plan does it through stock ophyd: ``g2.x.set(x).wait()`` (EpicsMotor on
  the closed-loop piezo record), ``det.trigger().wait()`` (SingleTrigger on the simulated camera,
  frame written to the HDF5 file with blocking callbacks), ``det.read()`` and ``g2.x.read()``.
  Overhead = step time - exposure - detector readout - piezo settle time (the physics of the
  step, which no software can remove). Target (issue 3): <= 20 ms per step.

Prints a table and writes ``OUT/control.json`` (default ``benchmarks/results``). Wall-clock
``time.perf_counter``; best and median of the steps (the best is the most reproducible figure on a
shared box). ``--quick``: 10 steps, one start-up (smoke run).
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

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

PORT = free_port()
os.environ.update(client_environment(PORT))

import epics  # noqa: E402  (after the CA environment)

from contracts.profile import builtin_profile  # noqa: E402
from contracts.pvnames import SIM_PVNAMES  # noqa: E402
from devices import PiezoStepper, TalbotDetector  # noqa: E402
from sim.ioc.detector import DetectorSpec  # noqa: E402
from sim.ioc.piezo import PiezoSpec  # noqa: E402


def measure_startups(count: int, tmp: Path) -> list[float]:
    """Seconds from Popen to the first answered PV, ``count`` fresh servers."""
    times = []
    for i in range(count):
        prefix = f"BSU{i}{os.getpid()}:"
        t0 = time.perf_counter()
        proc = start_ioc(prefix, PORT, tmp / f"startup{i}.log")
        try:
            wait_for_pv(SIM_PVNAMES.with_prefix(prefix).full("beam", "Current"), proc)
            times.append(time.perf_counter() - t0)
        finally:
            stop_ioc(proc, timeout_s=20)
    return times


def measure_steps(steps: int, exposure_s: float, tmp: Path) -> dict[str, Any]:
    """Time ``steps`` phase steps (move, trigger, read) through ophyd."""
    prefix = f"BST{os.getpid()}:"
    pvs = SIM_PVNAMES.with_prefix(prefix)
    proc = start_ioc(prefix, PORT, tmp / "steps.log")
    try:
        wait_for_pv(pvs.full("beam", "Current"), proc)
        g2 = PiezoStepper(pvs.motor_records()["g2_x"], name="g2")
        det = TalbotDetector(pvs.full("detector"), name="det")
        det.hdf5.write_path_template = str(tmp)
        det.hdf5.reg_root = str(tmp)
        g2.wait_for_connection(timeout=10)
        det.wait_for_connection(timeout=10)
        det.cam.acquire_time.set(exposure_s).wait(10)
        det.stage()
        p2_um = builtin_profile("tiny").instrument.geometry.g2_pitch_m * 1e6
        start = 10.0
        for k in range(3):  # warm-up (lazy connections, first render)
            g2.set(start + k * p2_um / 5).wait(10)
            det.trigger().wait(10)
            det.read()
        times = []
        for k in range(steps):
            t0 = time.perf_counter()
            g2.set(start + (k % 5) * p2_um / 5).wait(10)
            det.trigger().wait(10)
            det.read()
            g2.read()
            times.append(time.perf_counter() - t0)
        det.unstage()
        ca_times = measure_ca_steps(pvs, steps, p2_um)
    finally:
        stop_ioc(proc, timeout_s=20)
    settle = PiezoSpec().settle_s
    readout = DetectorSpec().readout_s
    physics = exposure_s + readout + settle
    overhead = [t - physics for t in times]
    return {
        "steps": steps,
        "exposure_s": exposure_s,
        "readout_s": readout,
        "piezo_settle_s": settle,
        "step_best_s": min(times),
        "step_median_s": statistics.median(times),
        "overhead_best_ms": 1e3 * min(overhead),
        "overhead_median_ms": 1e3 * statistics.median(overhead),
        "ca_step_best_s": min(ca_times),
        "ca_step_median_s": statistics.median(ca_times),
        "ca_overhead_best_ms": 1e3 * (min(ca_times) - physics),
        "ca_overhead_median_ms": 1e3 * (statistics.median(ca_times) - physics),
        "target_overhead_ms": 20.0,
    }


def measure_ca_steps(pvs: Any, steps: int, p2_um: float) -> list[float]:
    """The same step with raw pyepics monitors (DMOV 0->1, Acquire_RBV 1->0), no ophyd."""
    import threading

    moved, acquired = threading.Event(), threading.Event()
    record = pvs.motor_records()["g2_x"]
    dmov = epics.PV(record + ".DMOV", callback=lambda value, **_: value == 1 and moved.set())
    rbv = epics.PV(
        pvs.full("detector", "cam1:Acquire_RBV"),
        callback=lambda value, **_: int(value) == 0 and acquired.set(),
    )
    motor = epics.PV(record)
    acquire = epics.PV(pvs.full("detector", "cam1:Acquire"))
    for pv in (dmov, rbv, motor, acquire):
        pv.wait_for_connection(timeout=10)
    epics.caput(pvs.full("detector", "cam1:ImageMode"), "Single", wait=True)
    times = []
    for k in range(steps + 3):
        moved.clear()
        acquired.clear()
        t0 = time.perf_counter()
        motor.put(10.0 + (k % 5) * p2_um / 5, use_complete=True)
        while not motor.put_complete:
            time.sleep(0.0002)
        moved.wait(10)
        acquire.put(1)
        acquired.wait(10)
        if k >= 3:  # warm-up
            times.append(time.perf_counter() - t0)
    return times


def main(argv: list[str] | None = None) -> int:
    """Run, print, write the JSON result."""
    parser = bench_parser(__doc__, result="control")
    parser.add_argument("--steps", type=int, default=None, help="phase steps to time (50)")
    parser.add_argument("--exposure", type=float, default=0.01, help="AcquireTime [s]")
    parser.add_argument("--startups", type=int, default=None, help="server start-ups to time (3)")
    args = parser.parse_args(argv)
    quick = bool(args.quick)
    if args.steps is None:
        args.steps = 10 if quick else 50
    if args.startups is None:
        args.startups = 1 if quick else 3
    if args.steps < 1 or args.startups < 1 or not args.exposure > 0:
        parser.error("--steps and --startups must be >= 1, --exposure > 0")
    with tempfile.TemporaryDirectory(prefix="talbot-bench-") as tmp:
        startups = measure_startups(args.startups, Path(tmp))
        step = measure_steps(args.steps, args.exposure, Path(tmp))
    result = {
        "quick": quick,
        "startup_best_s": min(startups),
        "startup_median_s": statistics.median(startups),
        "startups": startups,
        "phase_step": step,
    }
    print(
        f"server start-up (Popen -> first PV): best {min(startups):.2f} s, "
        f"median {statistics.median(startups):.2f} s over {len(startups)}"
    )
    print(
        f"phase step (move G2 + trigger + read, exposure {args.exposure * 1e3:.0f} ms): "
        f"best {step['step_best_s'] * 1e3:.1f} ms, median {step['step_median_s'] * 1e3:.1f} ms"
    )
    print(
        f"control overhead beyond exposure + readout + settle: "
        f"best {step['overhead_best_ms']:.1f} ms, median {step['overhead_median_ms']:.1f} ms "
        f"(target <= 20 ms)"
    )
    print(f"same step with raw pyepics monitors (no ophyd): best "
          f"{step['ca_step_best_s'] * 1e3:.1f} ms, median {step['ca_step_median_s'] * 1e3:.1f} ms; "
          f"overhead best {step['ca_overhead_best_ms']:.1f} ms, "
          f"median {step['ca_overhead_median_ms']:.1f} ms")  # fmt: skip
    print(f"wrote {write_json('control', result, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
