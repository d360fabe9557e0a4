"""Benchmark: phase-stepping retrieval throughput, Talbot against a plain NumPy FFT baseline.

Usage::

    .venv/bin/python benchmarks/bench_retrieval.py [--quick] [--out benchmarks/results]

One projection = M = 5 uint16 frames of N x N (1024 and 2048; ``--quick``: 256 and 512) of a
synthetic stepping curve ``I_k = dark + a0 T [1 + V D cos(2 pi k/M + phi_ref + dphi)]`` with
Poisson noise (a0 ~ 4000 counts, V ~ 0.3, moire reference fringes, a smooth sample), a dark frame
(~100 counts) and a reference (flat) series fitted BEFORE timing, as in a scan. Timed: raw frames
in -> transmission T, differential phase dphi and dark-field D out (float32 maps), dark
subtraction included, by

- Talbot ``retrieve_frames`` (fused numba kernel: one pass, polynomial atan2),
- Talbot ``fit_stepping(backend="numba")`` + ``retrieve`` (two stages),
- Talbot ``fit_stepping(backend="numpy")`` + ``retrieve`` (pure NumPy GEMM path),
- baseline: ``np.fft.fft`` along the step axis of float32 (and float64) data, first harmonic,
  then ``np.angle`` / ``np.abs`` against the FFT reference (what most groups' scripts do).

Reported: projections/s, Mpx/s (detector pixels per second) and the speed-up over the float32 FFT
baseline. The script also CHECKS (raises if not) that every Talbot path equals the FFT baseline
for these equidistant steps: |dphi - dphi_fft| (wrapped) and the relative T and D differences.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (
    bench_parser,
    format_table,
    print_header,
    steady_state_malloc,
    time_call,
    write_json,
)

from recon import retrieval

N_STEPS = 5
FULL_SIZES = (1024, 2048)
QUICK_SIZES = (256, 512)

#: Target from the issue: Talbot's retrieval at 2048 x 2048, 5 steps, on 2 cores.
TARGET_PROJ_PER_S_2048 = 40.0

#: Largest accepted difference to the float64 FFT baseline (equidistant steps).
TOL_DPHI_RAD = 1e-3
TOL_REL = 1e-4

Maps = tuple[NDArray[Any], NDArray[Any], NDArray[Any]]  # T, dphi, D


# ------------------------------------------------------------------------------------------------
# synthetic data


def make_data(n: int, m: int, seed: int = 0) -> dict[str, Any]:
    """Sample and reference stepping series (m, n, n) uint16, dark (n, n) uint16, truths."""
    rng = np.random.default_rng(seed)
    theta = 2.0 * np.pi * np.arange(m) / m
    u = (np.arange(n) - (n - 1) / 2.0) / (n / 2.0)  # [-1, 1]
    y, x = u[:, None], u[None, :]
    r2 = x * x + y * y
    a0 = 4000.0 * (1.0 - 0.3 * r2)  # illumination fall-off [counts]
    vis = 0.35 - 0.05 * r2
    phi_ref = 2.0 * np.pi * (x * n / 173.0 + y * n / 311.0)  # moire fringes (many wraps)
    bump = np.exp(-r2 / 0.3**2)
    trans = 1.0 - 0.5 * np.exp(-r2 / 0.5**2)
    dphi = 2.0 * (x / 0.3) * bump  # derivative of a Gaussian phase bump, |dphi| < 1.2 rad
    dark_mean = 100.0
    darkfield = 1.0 - 0.3 * bump

    def series(t: NDArray[Any], d: NDArray[Any], p: NDArray[Any]) -> NDArray[np.uint16]:
        out = np.empty((m, n, n), np.uint16)
        for k in range(m):
            mean = dark_mean + a0 * t * (1.0 + vis * d * np.cos(theta[k] + phi_ref + p))
            out[k] = rng.poisson(mean).astype(np.uint16)
        return out

    ones = np.ones((n, n))
    return {
        "theta": theta,
        "sample": series(trans * ones, darkfield * ones, dphi * ones),
        "reference": series(ones, ones, 0.0 * ones),
        "dark": rng.poisson(dark_mean, size=(n, n)).astype(np.uint16),
        "true_T": trans * ones,
        "true_dphi": dphi * ones,
        "true_D": darkfield * ones,
    }


# ------------------------------------------------------------------------------------------------
# the baseline


def fft_first_harmonic(
    frames: NDArray[Any], dark: NDArray[Any], dtype: type[np.floating[Any]]
) -> tuple[NDArray[Any], NDArray[Any]]:
    """a0 and c1 = (1/M) sum_k I_k e^{-2 pi i k/M} by ``np.fft.fft`` along the step axis."""
    x = frames.astype(dtype)
    x -= dark.astype(dtype)
    spec = np.fft.fft(x, axis=0)
    m = frames.shape[0]
    return spec[0].real / m, spec[1] / m


def fft_retrieve(
    frames: NDArray[Any],
    dark: NDArray[Any],
    ref: tuple[NDArray[Any], NDArray[Any]],
    dtype: type[np.floating[Any]],
) -> Maps:
    """Baseline: T = a0/a0_r, dphi = arg(c1 conj c1_r), D = (|c1|/a0)/(|c1_r|/a0_r)."""
    a0, c1 = fft_first_harmonic(frames, dark, dtype)
    a0_r, c1_r = ref
    t = a0 / a0_r
    dphi = np.angle(c1 * np.conj(c1_r))
    d = (np.abs(c1) * a0_r) / (a0 * np.abs(c1_r))
    return t, dphi, d


# ------------------------------------------------------------------------------------------------
# comparison


def compare(maps: Maps, baseline: Maps) -> dict[str, float]:
    """Max |wrapped dphi difference| [rad] and max relative T and D differences."""
    t, p, d = (np.asarray(a, dtype=np.float64) for a in maps)
    tb, pb, db = (np.asarray(a, dtype=np.float64) for a in baseline)
    dp = np.angle(np.exp(1j * (p - pb)))
    return {
        "max_abs_dphi_rad": float(np.max(np.abs(dp))),
        "max_rel_T": float(np.max(np.abs(t - tb) / np.abs(tb))),
        "max_rel_D": float(np.max(np.abs(d - db) / np.abs(db))),
    }


def truth_error(maps: Maps, data: dict[str, Any]) -> dict[str, float]:
    """RMS error against the noise-free truth (noise only: shows the data are sane)."""
    t, p, d = (np.asarray(a, dtype=np.float64) for a in maps)
    dp = np.angle(np.exp(1j * (p - data["true_dphi"])))
    return {
        "rms_dphi_vs_truth_rad": float(np.sqrt(np.mean(dp**2))),
        "rms_T_vs_truth": float(np.sqrt(np.mean((t - data["true_T"]) ** 2))),
        "rms_D_vs_truth": float(np.sqrt(np.mean((d - data["true_D"]) ** 2))),
    }


def _signals(s: Any) -> Maps:
    return (s.transmission, s.dphi, s.darkfield)


def _two_stage(
    frames: NDArray[Any], theta: NDArray[Any], dark: NDArray[Any], ref_fit: Any, backend: str
) -> Callable[[], Maps]:
    def call() -> Maps:
        fit = retrieval.fit_stepping(frames, theta, dark, backend=backend)
        return _signals(retrieval.retrieve(fit, ref_fit))

    return call


def talbot_paths(data: dict[str, Any], ref_fit: Any) -> list[tuple[str, str, Callable[[], Maps]]]:
    """(name, notes, call) for every retrieval path ``recon.retrieval`` offers."""
    frames, theta, dark = data["sample"], data["theta"], data["dark"]
    paths: list[tuple[str, str, Callable[[], Maps]]] = []
    if hasattr(retrieval, "retrieve_frames"):
        paths.append(
            (
                "talbot-fused-numba",
                "retrieve_frames: one numba pass, polynomial atan2",
                lambda: _signals(retrieval.retrieve_frames(frames, theta, ref_fit, dark)),
            )
        )
    for backend in ("numba", "numpy"):
        paths.append(
            (
                f"talbot-fit-{backend}",
                f"fit_stepping(backend='{backend}') + retrieve",
                _two_stage(frames, theta, dark, ref_fit, backend),
            )
        )
    return paths


def run_size(n: int, *, quick: bool) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Time all paths for one N x N projection; rows for the table and the equality checks."""
    print(f"\n-- {n} x {n} px, {N_STEPS} steps: generating data", flush=True)
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    data = make_data(n, N_STEPS)
    theta, dark = data["theta"], data["dark"]
    ref_fit = retrieval.fit_stepping(data["reference"], theta, dark)
    ref_fft32 = fft_first_harmonic(data["reference"], dark, np.float32)
    ref_fft64 = fft_first_harmonic(data["reference"], dark, np.float64)
    frames = data["sample"]
    budget = 3.0 if quick else 8.0
    candidates: list[tuple[str, str, Callable[[], Maps], int]] = [
        (name, notes, fn, 50 if "fused" in name else 20)
        for name, notes, fn in talbot_paths(data, ref_fit)
    ]
    candidates += [
        (
            "numpy-fft-float32",
            "np.fft.fft(axis=0) of float32, angle/abs",
            lambda: fft_retrieve(frames, dark, ref_fft32, np.float32),
            7,
        ),
        (
            "numpy-fft-float64",
            "np.fft.fft(axis=0) of float64, angle/abs",
            lambda: fft_retrieve(frames, dark, ref_fft64, np.float64),
            7,
        ),
    ]
    baseline = fft_retrieve(frames, dark, ref_fft64, np.float64)
    rows: list[dict[str, Any]] = []
    for name, notes, fn, repeats in candidates:
        print(f"   timing {name} ...", flush=True)
        out: dict[str, Maps] = {}

        def call(fn: Callable[[], Maps] = fn, out: dict[str, Maps] = out) -> None:
            out.clear()  # free the previous maps first: steady state reuses the memory
            out["maps"] = fn()

        timing = time_call(call, repeats=repeats, warmup=1, budget_s=budget)
        row: dict[str, Any] = {
            "method": name,
            "n": n,
            "steps": N_STEPS,
            "best_s": timing.best_s,
            "median_s": timing.median_s,
            "best_ms": 1e3 * timing.best_s,
            "proj_per_s": 1.0 / timing.best_s,
            "mpx_per_s": n * n / timing.best_s / 1e6,
            "input_gb_per_s": frames.nbytes / timing.best_s / 1e9,
            "faults_per_call": timing.minor_faults_per_call,
            "timing": timing.as_dict(),
            "notes": notes,
        }
        row.update(compare(out["maps"], baseline))
        row.update(truth_error(out["maps"], data))
        rows.append(row)
    by = {r["method"]: r for r in rows}
    base = by["numpy-fft-float32"]
    for r in rows:
        r["speedup_vs_fft32"] = base["best_s"] / r["best_s"]
    checks: dict[str, Any] = {
        "tolerances": {"dphi_rad": TOL_DPHI_RAD, "rel": TOL_REL},
        "loadavg_at_start": load_at_start,
    }
    failures = []
    for r in rows:
        if not r["method"].startswith("talbot"):
            continue
        ok = (
            r["max_abs_dphi_rad"] <= TOL_DPHI_RAD
            and r["max_rel_T"] <= TOL_REL
            and r["max_rel_D"] <= TOL_REL
        )
        r["equals_fft_baseline"] = ok
        if not ok:
            failures.append(r["method"])
    fused = by.get("talbot-fused-numba") or by.get("talbot-fit-numba")
    if fused is not None:
        checks["fastest_talbot"] = fused["method"]
        checks["proj_per_s"] = fused["proj_per_s"]
        checks["speedup_vs_fft32"] = fused["speedup_vs_fft32"]
        if n == 2048:
            checks["target_proj_per_s"] = TARGET_PROJ_PER_S_2048
            checks["target_met"] = bool(fused["proj_per_s"] >= TARGET_PROJ_PER_S_2048)
    checks["all_talbot_paths_equal_fft"] = not failures
    if failures:
        print(format_table(rows, COLUMNS))
        raise AssertionError(
            f"{n} px: Talbot retrieval paths {failures} differ from the FFT baseline beyond "
            f"{TOL_DPHI_RAD} rad / {TOL_REL} relative (equidistant steps must agree)"
        )
    return rows, checks


COLUMNS = (
    ("method", "method", ""),
    ("best_ms", "best ms", ".1f"),
    ("proj_per_s", "proj/s", ".1f"),
    ("mpx_per_s", "Mpx/s", ".0f"),
    ("speedup_vs_fft32", "x fft32", ".1f"),
    ("faults_per_call", "faults/call", ".0f"),
    ("max_abs_dphi_rad", "|ddphi| rad", ".1e"),
    ("max_rel_T", "rel dT", ".1e"),
    ("max_rel_D", "rel dD", ".1e"),
    ("rms_dphi_vs_truth_rad", "rms dphi-truth", ".4f"),
)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables and write ``OUT/retrieval.json``."""
    parser = bench_parser(__doc__, result="retrieval")
    parser.add_argument("--sizes", nargs="*", type=int, default=None, help="override N values")
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's malloc defaults (fresh pages, page faults, on many calls)",
    )
    args = parser.parse_args(argv)
    sizes = tuple(args.sizes) if args.sizes else (QUICK_SIZES if args.quick else FULL_SIZES)
    malloc = {} if args.default_malloc else steady_state_malloc()
    print_header(f"Phase retrieval: {N_STEPS} steps, uint16 frames -> T, dphi, D")
    print(f"   malloc: {malloc or 'glibc defaults'}")
    all_rows: list[dict[str, Any]] = []
    all_checks: dict[str, Any] = {}
    for n in sizes:
        rows, checks = run_size(n, quick=args.quick)
        all_rows.extend(rows)
        all_checks[str(n)] = checks
        print(f"\n{n} x {n} px, {N_STEPS} steps (|ddphi|, rel dT/dD: max vs float64 FFT)")
        print(format_table(rows, COLUMNS))
        line = (
            f"fastest Talbot path {checks.get('fastest_talbot')}: "
            f"{checks.get('proj_per_s', math.nan):.1f} proj/s, "
            f"{checks.get('speedup_vs_fft32', math.nan):.1f}x the float32 FFT baseline; "
            "all Talbot paths equal the FFT baseline: "
            f"{checks['all_talbot_paths_equal_fft']}"
        )
        if "target_met" in checks:
            verdict = "MET" if checks["target_met"] else "NOT MET"
            line += f"; target >= {TARGET_PROJ_PER_S_2048:.0f} proj/s {verdict}"
        print(line)
    path = write_json(
        "retrieval",
        {
            "quick": bool(args.quick),
            "steps": N_STEPS,
            "malloc": malloc or "glibc defaults",
            "input": "uint16 frames, Poisson noise, dark ~100 counts, a0 ~ 4000, V ~ 0.3",
            "results": all_rows,
            "checks": all_checks,
        },
        args.out,
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
