"""Shared helpers for the benchmarks: timing, machine description, JSON results, text tables.

The benchmarks are scripts (``python benchmarks/bench_fbp.py``), never part of ``make test``. Every
number is wall-clock time from ``time.perf_counter``, after warm-up calls (numba JIT, FFT plans,
page faults), as the best and the median of several repeats. On a shared 2-core box the best of N is
the most reproducible figure (interference only ever adds time); the median is reported beside it.
Every script takes the options of :func:`bench_parser` (``--out DIR``, ``--quick``), which
``run_all.py`` passes to each.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

#: Default folder for result files (git-ignored).
RESULTS_DIR = Path(__file__).resolve().parent / "results"

#: Distributions whose versions are recorded with every result file.
LIBRARIES = (
    "numpy",
    "scipy",
    "numba",
    "finufft",
    "astra-toolbox",
    "scikit-image",
    "algotom",
    "threadpoolctl",
)


def bench_parser(doc: str | None, *, result: str) -> argparse.ArgumentParser:
    """An argument parser with the options every benchmark takes (``run_all.py`` passes them):
    ``--out DIR``, the folder for ``RESULT.json`` (default ``benchmarks/results``), and
    ``--quick``, small sizes for a smoke run. ``doc``: the script's docstring (its first line
    describes the script)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0] if doc else None)
    parser.add_argument(
        "--out",
        type=Path,
        default=RESULTS_DIR,
        help=f"folder for {result}.json (default %(default)s)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    return parser


@dataclass(frozen=True)
class Timing:
    """Wall-clock times [s] of the measured (post-warm-up) calls of one function."""

    best_s: float
    median_s: float
    mean_s: float
    repeats: int
    warmup: int
    times_s: tuple[float, ...]
    minor_faults_per_call: float | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d = asdict(self)
        d["times_s"] = list(self.times_s)
        return d


def time_call(
    fn: Callable[[], object],
    *,
    repeats: int = 5,
    warmup: int = 1,
    budget_s: float | None = None,
    warmup_fn: Callable[[], object] | None = None,
) -> Timing:
    """Time ``fn()`` with ``time.perf_counter``: ``warmup`` untimed calls, then up to ``repeats``.

    ``warmup_fn`` (if given) is called once instead of the ``warmup`` calls of ``fn`` - e.g. a
    small problem that only triggers JIT compilation when one full call takes a minute.
    ``budget_s`` stops repeating once the measured calls have used that many seconds (at least
    one call is always measured), so slow peers are timed once and fast paths many times.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats!r}")
    if warmup < 0:
        raise ValueError(f"warmup must be >= 0, got {warmup!r}")
    if budget_s is not None and not budget_s > 0:
        raise ValueError(f"budget_s must be > 0 seconds or None, got {budget_s!r}")
    if warmup_fn is not None:
        warmup_fn()
        n_warm = 1
    else:
        for _ in range(warmup):
            fn()
        n_warm = warmup
    times: list[float] = []
    faults0 = _minor_faults()
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if budget_s is not None and sum(times) >= budget_s:
            break
    faults1 = _minor_faults()
    per_call = (
        (faults1 - faults0) / len(times) if faults0 is not None and faults1 is not None else None
    )
    return Timing(
        minor_faults_per_call=per_call,
        best_s=min(times),
        median_s=statistics.median(times),
        mean_s=statistics.fmean(times),
        repeats=len(times),
        warmup=n_warm,
        times_s=tuple(times),
    )


def steady_state_malloc() -> dict[str, Any]:
    """Make glibc keep freed memory for reuse (as a long-running stream with recycled buffers).

    By default glibc may hand each large array (> 128 KiB, adapting up to 32 MiB) back to the OS
    on free and map it anew on the next allocation, so every call pays page faults (zeroing
    fresh pages: ~2500 faults, +10-25 ms per 2048^2 projection here) depending on the heap's
    history. ``mallopt(M_MMAP_THRESHOLD, 32 MiB)`` and a huge ``M_TRIM_THRESHOLD`` make arrays up
    to 32 MiB come from the heap and stay there. Returns what was set (empty if not glibc).
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    if not name or platform.system() != "Linux":
        return {}
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return {}
    m_trim_threshold, m_mmap_threshold = -1, -3
    mmap_bytes = 32 * 2**20  # glibc's upper limit on 64-bit
    trim_bytes = 2**31 - 1
    ok = bool(mallopt(m_mmap_threshold, mmap_bytes)) and bool(mallopt(m_trim_threshold, trim_bytes))
    return {"mmap_threshold_bytes": mmap_bytes, "trim_threshold_bytes": trim_bytes} if ok else {}


def _minor_faults() -> int | None:
    """Minor page faults of this process so far (None where getrusage is unavailable)."""
    try:
        import resource
    except ImportError:
        return None
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def library_versions(names: Sequence[str] = LIBRARIES) -> dict[str, str | None]:
    """Installed versions of the given distributions (None where not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def blas_info() -> list[dict[str, Any]]:
    """Thread pools (BLAS, OpenMP) as seen by threadpoolctl; empty if it is not installed."""
    try:
        threadpoolctl = importlib.import_module("threadpoolctl")
    except ImportError:
        return []
    info: list[dict[str, Any]] = threadpoolctl.threadpool_info()
    keep = ("user_api", "internal_api", "version", "num_threads", "threading_layer", "prefix")
    return [{k: d.get(k) for k in keep} for d in info]


def machine_info() -> dict[str, Any]:
    """CPU, memory, Python, thread settings and library versions of this run."""
    threads_env = {
        k: os.environ[k]
        for k in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
        if k in os.environ
    }
    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "thread_env": threads_env,
        "libraries": library_versions(),
        "thread_pools": blas_info(),
    }
    try:
        numba = importlib.import_module("numba")
        info["numba_threads"] = int(numba.config.NUMBA_NUM_THREADS)
    except ImportError:
        info["numba_threads"] = None
    try:
        load = os.getloadavg()
        info["loadavg_1_5_15"] = [round(x, 2) for x in load]
    except OSError:
        info["loadavg_1_5_15"] = None
    return info


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, Timing):
        return obj.as_dict()
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def write_json(name: str, payload: Mapping[str, Any], out_dir: Path | str = RESULTS_DIR) -> Path:
    """Write ``payload`` (plus ``machine`` and a UTC timestamp) to ``out_dir/NAME.json``."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"name must be a plain file stem, got {name!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "timestamp_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(),
        **dict(payload),
    }
    path = out / f"{name}.json"
    path.write_text(json.dumps(_jsonable(doc), indent=2) + "\n", encoding="utf-8")
    return path


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float | np.floating):
        if not np.isfinite(value):
            return "-"
        return format(float(value), fmt) if fmt else f"{float(value):.4g}"
    return str(value)


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str, str]]) -> str:
    """Plain-text table. ``columns`` are (key, header, format spec), e.g. ("best_s", "s", ".3f")."""
    cells = [[header for _, header, _ in columns]]
    for row in rows:
        cells.append([_cell(row.get(key), fmt) for key, _, fmt in columns])
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = []
    for j, r in enumerate(cells):
        pairs = enumerate(zip(r, widths, strict=True))
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in pairs))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def print_header(title: str) -> None:
    """Print a title line with the machine in one line."""
    m = machine_info()
    print(f"\n== {title} ==")
    print(
        f"   {m['cpu_count']} CPU ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}, "
        f"numba threads {m['numba_threads']}, load {m['loadavg_1_5_15']}"
    )
