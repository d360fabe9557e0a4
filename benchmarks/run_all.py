"""Run every benchmark (``make bench``): each in its own Python process, one after the other.

Usage::

    .venv/bin/python benchmarks/run_all.py --out benchmarks/results [--quick] [--only NAME ...]

Runs every ``benchmarks/bench_*.py`` (retrieval and fbp first), each with ``--out OUT`` (and
``--quick``); each prints its table and writes its JSON to OUT. This script then prints a short
summary per benchmark and exits non-zero if any of them failed (a failed equality check counts).
Separate processes keep the timings independent (no shared thread pools, JIT caches or heap).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: Run first, in this order; any other ``bench_*.py`` in this folder runs after them, sorted.
FIRST = ("retrieval", "fbp")


def discover() -> dict[str, str]:
    """name -> script for every ``bench_NAME.py`` next to this file, in run order."""
    found = {p.stem.removeprefix("bench_"): p.name for p in sorted(HERE.glob("bench_*.py"))}
    order = [n for n in FIRST if n in found] + [n for n in found if n not in FIRST]
    return {n: found[n] for n in order}


BENCHMARKS = discover()


#: Result files whose stem is not the benchmark's name (``--quick`` adds ``_quick`` to these).
RESULT_STEMS = {"stream": "bench_stream"}


def result_path(name: str, out_dir: Path, quick: bool) -> Path:
    """Where benchmark ``name`` writes its JSON result."""
    stem = RESULT_STEMS.get(name)
    if stem is None:
        return out_dir / f"{name}.json"
    return out_dir / f"{stem}{'_quick' if quick else ''}.json"


def headline(name: str, doc: dict[str, Any]) -> list[str]:
    """The headline figures of one result document, one line each."""
    parts: list[str] = []
    for size, checks in doc.get("checks", {}).items():
        if "proj_per_s" in checks:
            parts.append(f"{size}: {checks['proj_per_s']:.0f} proj/s")
        for row, c in checks.items():
            if isinstance(c, dict) and "astra_over_this" in c:
                parts.append(
                    f"{size} {row}: {c['astra_over_this']:.1f}x astra, RMSE "
                    f"{'<=' if c['rmse_met'] else '>'} astra"
                )
        if "target_met" in checks:
            parts.append(f"{size}: headline target {'met' if checks['target_met'] else 'NOT met'}")
    if name == "scan":
        for r in doc.get("results", []):
            parts.append(f"{r['stepping']} stepping: efficiency {r['efficiency']:.1%}")
    if name == "control":
        step = doc.get("phase_step", {})
        parts.append(
            f"phase step overhead: best {step.get('overhead_best_ms', float('nan')):.1f} ms, "
            f"median {step.get('overhead_median_ms', float('nan')):.1f} ms"
        )
    if name == "stream":
        for r in doc.get("throughput", []):
            parts.append(f"{r['size']} {r['path']}: {r['gb_per_s']:.2f} GB/s, lost {r['lost']}")
    return parts


def summary(name: str, out_dir: Path, quick: bool = False) -> str:
    """The headline figures from the benchmark's result file."""
    path = result_path(name, out_dir, quick)
    if not path.exists():
        return f"{name}: done, but wrote no {path}"
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"{name}: no readable result ({exc})"
    parts = headline(name, doc)
    return f"{name} -> {path}\n  " + ("\n  ".join(parts) if parts else "done")


def main(argv: list[str] | None = None) -> int:
    """Run the selected benchmarks; return 0 if all succeeded."""
    parser = argparse.ArgumentParser(description="Run all Talbot benchmarks.")
    parser.add_argument("--out", type=Path, default=HERE / "results", help="results folder")
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument(
        "--only", nargs="*", choices=sorted(BENCHMARKS), default=None, help="subset to run"
    )
    args = parser.parse_args(argv)
    out_dir: Path = args.out.resolve()
    names = args.only or list(BENCHMARKS)
    failed: list[str] = []
    lines: list[str] = []
    for name in names:
        cmd = [sys.executable, str(HERE / BENCHMARKS[name]), "--out", str(out_dir)]
        if args.quick:
            cmd.append("--quick")
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, check=False).returncode
        dt = time.perf_counter() - t0
        if rc != 0:
            failed.append(name)
            lines.append(f"{name}: FAILED (exit {rc}) after {dt:.0f} s")
        else:
            lines.append(summary(name, out_dir, args.quick) + f" ({dt:.0f} s)")
    print("\n== summary ==")
    print("\n".join(lines))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
