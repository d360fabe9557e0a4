"""Benchmark: one parallel-beam slice by ramp-filter FBP, Talbot against CPU peers, side by side.

Usage::

    .venv/bin/python benchmarks/bench_fbp.py [--quick] [--out benchmarks/results] [--skip NAME ...]

Data: the modified Shepp-Logan phantom with EXACT line integrals (``analytic_phantom``), N
detector columns, N_theta angles k pi / N_theta, no noise; 1024 px x 900 angles and 2048 px x 1500
angles (``--quick``: 256 x 180 and 512 x 360). Every method reconstructs the same sinogram into an
N x N image and is timed (wall clock, best of its repeats); the accuracy is the RMSE against the
phantom image (3 x 3 supersampled) inside the reconstruction circle (radius N/2 - 2 px), and
"RMSE flat" the same over the pixels more than 3 px from any ellipse edge (streaks, ringing and
bias in flat regions, without the edge blur/overshoot that dominates the plain RMSE).

Conventions are checked, not assumed: before timing, every method reconstructs an off-centre unit
disk plus a marker disk (256 px, same angle count). That fixes its orientation (the peers put +y
up, so their images are flipped up-down: one of the 8 axis flips/transposes, chosen by RMSE and
printed) and its scale (mean inside the unit disk, ideally 1; each image is divided by it before
the RMSE, and the factor is printed and stored - all are within 0.3 % of 1). scikit-image puts the
rotation axis at detector column N//2 (image centre N//2) instead of (N-1)/2, so its sinogram is
sampled from the same analytic phantom with that axis (otherwise it would be penalised by a
half-pixel centre error that is not its fault); everybody else gets the identical array.

The Hilbert (differential-phase) row is Talbot only (no peer has one): the data are the exact
finite differences ``p(s + 1/2) - p(s - 1/2)`` (shear 1 px), reconstructed with the finite-shear
correction and compared with the same phantom.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import maximum_filter, minimum_filter

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import analytic_phantom as ap
from common import bench_parser, format_table, print_header, time_call, write_json

from recon import fbp as tfbp

F32 = NDArray[np.float32]
Recon = Callable[[F32, NDArray[np.float64], float], NDArray[Any]]

FULL_SIZES = ((1024, 900), (2048, 1500))
QUICK_SIZES = ((256, 180), (512, 360))
CAL_N = 256

#: The fast-path rows compared with astra (the first one, as shipped, decides "target_met").
FAST_ROWS = (
    "talbot-gridding",
    "talbot-gridding-e4",
    "talbot-gridding-e4-plan",
    "talbot-gridding-e4-sl",
)

#: Target from the issue: Talbot's fast path at least this many times faster than astra CPU FBP.
TARGET_SPEEDUP_VS_ASTRA = 20.0


@dataclass
class Method:
    """One reconstruction method: ``run(sinogram, angles_rad, axis_col) -> image``."""

    name: str
    library: str
    filter: str
    threads: str
    run: Recon
    axis: str = "mid"  # detector axis at (N-1)/2 ("mid") or at N//2 ("half", scikit-image)
    fast: bool = False  # sub-second: warm up with a full call and repeat more
    data: str = "line integrals"
    notes: str = ""
    calib: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------------
# the methods


def _talbot_gridding(sino: F32, angles: NDArray[np.float64], axis_col: float) -> F32:
    return tfbp.fbp(sino, angles, "ramp", method="gridding")


def _talbot_direct(sino: F32, angles: NDArray[np.float64], axis_col: float) -> F32:
    return tfbp.fbp(sino, angles, "ramp", method="direct")


def _talbot_hilbert_gridding(sino: F32, angles: NDArray[np.float64], axis_col: float) -> F32:
    return tfbp.fbp(sino, angles, "hilbert", method="gridding", shear_px=1.0)


def _talbot_hilbert_direct(sino: F32, angles: NDArray[np.float64], axis_col: float) -> F32:
    return tfbp.fbp(sino, angles, "hilbert", method="direct", shear_px=1.0)


#: NUFFT settings of the tuned fast-path rows: one transform per slice (no empty packed partner)
#: and eps 1e-4 (the reconstruction error is ~1e-2, so 1e-6 buys nothing; RMSE identical).
TUNED = {"batch": 1, "eps": 1e-4}


class _Gridding:
    """Talbot fast path through the public ``GriddingBackprojector`` with chosen settings.

    ``reuse_plan=False`` builds the plan inside every call (one-shot cost, like ``fbp``);
    ``reuse_plan=True`` builds it once per geometry (the per-slice cost in a volume).
    """

    def __init__(self, *, reuse_plan: bool, window: tfbp.Window = "none") -> None:
        self.reuse_plan = reuse_plan
        self.window: tfbp.Window = window
        self._key: tuple[int, int] | None = None
        self._bp: tfbp.GriddingBackprojector | None = None

    def _make(self, n_cols: int, angles: NDArray[np.float64]) -> tfbp.GriddingBackprojector:
        return tfbp.GriddingBackprojector(
            n_cols, angles, batch=int(TUNED["batch"]), eps=float(TUNED["eps"])
        )

    def prepare(self, n_cols: int, angles: NDArray[np.float64]) -> None:
        key = (n_cols, angles.size)
        if self.reuse_plan and self._key != key:
            self._bp = self._make(n_cols, angles)
            self._key = key

    def __call__(self, sino: F32, angles: NDArray[np.float64], axis_col: float) -> F32:
        if self.reuse_plan:
            self.prepare(sino.shape[-1], angles)
            assert self._bp is not None
            bp = self._bp
        else:
            bp = self._make(sino.shape[-1], angles)
        return bp(tfbp.filter_sinogram(sino, "ramp", window=self.window))


def _astra_fbp(sino: F32, angles: NDArray[np.float64], axis_col: float) -> NDArray[Any]:
    import astra  # type: ignore[import-untyped]

    n = sino.shape[-1]
    vol_geom = astra.create_vol_geom(n, n)
    proj_geom = astra.create_proj_geom("parallel", 1.0, n, angles)
    pid = astra.create_projector("linear", proj_geom, vol_geom)
    sid = astra.data2d.create("-sino", proj_geom, sino)
    rid = astra.data2d.create("-vol", vol_geom, 0.0)
    cfg = astra.astra_dict("FBP")
    cfg["ProjectorId"] = pid
    cfg["ProjectionDataId"] = sid
    cfg["ReconstructionDataId"] = rid
    cfg["option"] = {"FilterType": "ram-lak"}
    aid = astra.algorithm.create(cfg)
    try:
        astra.algorithm.run(aid)
        out: NDArray[Any] = astra.data2d.get(rid)
    finally:
        astra.algorithm.delete(aid)
        astra.data2d.delete([sid, rid])
        astra.projector.delete(pid)
    return out


def _skimage_iradon(sino: F32, angles: NDArray[np.float64], axis_col: float) -> NDArray[Any]:
    from skimage.transform import iradon

    out: NDArray[Any] = iradon(
        sino.T,
        theta=np.rad2deg(angles),
        filter_name="ramp",
        interpolation="linear",
        circle=True,
    )
    return out


def _algotom_fbp(sino: F32, angles: NDArray[np.float64], axis_col: float) -> NDArray[Any]:
    from algotom.rec.reconstruction import fbp_reconstruction  # type: ignore[import-untyped]

    n = sino.shape[-1]
    out: NDArray[Any] = fbp_reconstruction(
        sino,
        axis_col,
        angles=angles,
        filter_name=None,  # plain ramp (its default is "hann")
        pad=n // 2,  # linear convolution like the others (its default pads min(0.15 N, 150))
        apply_log=False,
        gpu=False,
        ratio=None,
    )
    return out


def _algotom_dfi(sino: F32, angles: NDArray[np.float64], axis_col: float) -> NDArray[Any]:
    from algotom.rec.reconstruction import dfi_reconstruction

    out: NDArray[Any] = dfi_reconstruction(
        sino, axis_col, angles=angles, filter_name=None, apply_log=False, ratio=None, ncore=2
    )
    return out


def make_methods(skip: set[str]) -> list[Method]:
    """All methods in table order, minus the skipped names (or libraries)."""
    tuned = f"batch {TUNED['batch']}, eps {TUNED['eps']:g}"
    methods = [
        Method(
            "talbot-gridding",
            "talbot",
            "ramp",
            "2",
            _talbot_gridding,
            fast=True,
            notes="fbp(method='gridding') as shipped: filter + NUFFT plan + transform",
        ),
        Method(
            "talbot-gridding-e4",
            "talbot",
            "ramp",
            "2",
            _Gridding(reuse_plan=False),
            fast=True,
            notes=f"GriddingBackprojector({tuned}), plan built in the call",
        ),
        Method(
            "talbot-gridding-e4-plan",
            "talbot",
            "ramp",
            "2",
            _Gridding(reuse_plan=True),
            fast=True,
            notes=f"same ({tuned}), plan reused: per-slice cost in a volume",
        ),
        Method(
            "talbot-gridding-e4-sl",
            "talbot",
            "ramp*sinc",
            "2",
            _Gridding(reuse_plan=False, window="shepp-logan"),
            fast=True,
            notes=f"same one-shot ({tuned}), Shepp-Logan window (the low-pass that linear "
            "interpolation gives the peers)",
        ),
        Method(
            "talbot-direct",
            "talbot",
            "ramp",
            "2",
            _talbot_direct,
            notes="fbp(method='direct'): numba backprojection, linear interpolation",
        ),
        Method(
            "astra-cpu-fbp", "astra", "ram-lak", "1", _astra_fbp, notes="'FBP', 'linear' projector"
        ),
        Method(
            "skimage-iradon",
            "skimage",
            "ramp",
            "1",
            _skimage_iradon,
            axis="half",
            notes="iradon, linear interpolation, circle=True",
        ),
        Method(
            "algotom-fbp",
            "algotom",
            "ramp",
            "2",
            _algotom_fbp,
            notes="fbp_reconstruction(gpu=False), numba",
        ),
        Method(
            "algotom-dfi",
            "algotom",
            "ramp",
            "1",
            _algotom_dfi,
            notes="dfi_reconstruction (direct Fourier inversion, extra Fourier-class peer)",
        ),
        Method(
            "talbot-hilbert-gridding",
            "talbot",
            "hilbert",
            "2",
            _talbot_hilbert_gridding,
            fast=True,
            data="differences, shear 1 px",
            notes="DPC path as shipped (fbp defaults), finite-shear corrected; no peer",
        ),
        Method(
            "talbot-hilbert-direct",
            "talbot",
            "hilbert",
            "2",
            _talbot_hilbert_direct,
            data="differences, shear 1 px",
            notes="DPC path, direct backprojection; no peer",
        ),
    ]
    return [m for m in methods if m.name not in skip and m.library not in skip]


# ------------------------------------------------------------------------------------------------
# geometry conventions


def _axis_col(method: Method, n: int) -> float:
    return (n - 1) / 2.0 if method.axis == "mid" else float(n // 2)


def _truth_centres(method: Method, n: int) -> tuple[float, float]:
    """(x, y) pixel centre of the ground-truth image in the frame the method's output is compared
    in (scikit-image: axis at N//2; after its up-down flip the row centre is N-1-N//2)."""
    if method.axis == "mid":
        c = (n - 1) / 2.0
        return c, c
    return float(n // 2), float(n - 1 - n // 2)


_TRANSFORMS: dict[str, Callable[[NDArray[Any]], NDArray[Any]]] = {
    "identity": lambda a: a,
    "flipud": lambda a: a[::-1, :],
    "fliplr": lambda a: a[:, ::-1],
    "rot180": lambda a: a[::-1, ::-1],
    "transpose": lambda a: a.T,
    "rot90": lambda a: np.rot90(a, 1),
    "rot270": lambda a: np.rot90(a, 3),
    "antitranspose": lambda a: np.rot90(a, 2).T,
}


def _sinogram_for(
    method: Method, ellipses: tuple[ap.Ellipse, ...], angles: NDArray[np.float64], n: int
) -> F32:
    shear = 1.0 if method.filter == "hilbert" else None
    return ap.sinogram(ellipses, angles, n, axis_col=_axis_col(method, n), shear_px=shear)


def _away_from_edges(truth: F32, mask: NDArray[np.bool_], margin_px: int = 3) -> NDArray[np.bool_]:
    """``mask`` minus every pixel within ``margin_px`` of an ellipse boundary of ``truth``."""
    size = 2 * margin_px + 1
    flat = maximum_filter(truth, size=size) == minimum_filter(truth, size=size)
    return np.asarray(mask & flat)


def _rmse(img: NDArray[Any], truth: F32, mask: NDArray[np.bool_]) -> float:
    d = np.asarray(img, dtype=np.float64)[mask] - truth[mask]
    return float(np.sqrt(np.mean(d * d)))


def calibrate(method: Method, angles: NDArray[np.float64]) -> dict[str, Any]:
    """Orientation and scale of ``method`` from an off-centre unit disk (CAL_N px)."""
    n = CAL_N
    ph = ap.calibration_phantom()
    sino = _sinogram_for(method, ph, angles, n)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = np.asarray(method.run(sino, angles, _axis_col(method, n)), dtype=np.float32)
    if raw.shape != (n, n):
        raise RuntimeError(f"{method.name}: output shape {raw.shape}, expected {(n, n)}")
    cx, cy = _truth_centres(method, n)
    truth = ap.image(ph, n, centre=cx, centre_y=cy)
    mask = ap.circle_mask(n)
    errs = {k: _rmse(t(raw), truth, mask) for k, t in _TRANSFORMS.items()}
    best = min(errs, key=lambda k: errs[k])
    img = _TRANSFORMS[best](raw)
    # interior of the unit disk (radius 0.35 R, centre (0.2, -0.1) R): the inner 0.25 R
    inner = ap.image((ap.Ellipse(1.0, 0.25, 0.25, 0.2, -0.1),), n, centre=cx, centre_y=cy) > 0.999
    scale = float(np.mean(img[inner]))
    return {
        "orientation": best,
        "disk_value": scale,
        "scale_factor_applied": 1.0 / scale,
        "calibration_rmse": errs[best],
        "calibration_rmse_identity": errs["identity"],
    }


# ------------------------------------------------------------------------------------------------
# the benchmark


def run_size(
    n: int, n_angles: int, methods: list[Method], *, quick: bool
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Calibrate and time every method at one size; rows for the table plus target checks."""
    angles = np.arange(n_angles, dtype=np.float64) * np.pi / n_angles
    load_at_start = [round(x, 2) for x in os.getloadavg()]
    print(f"\n-- {n} px x {n_angles} angles: calibrating conventions on a {CAL_N} px unit disk")
    for m in methods:
        m.calib = calibrate(m, angles)
        print(
            f"   {m.name:24s} orientation {m.calib['orientation']:9s} "
            f"disk value {m.calib['disk_value']:.5f}  (rmse {m.calib['calibration_rmse']:.4f})"
        )
    ph = ap.SHEPP_LOGAN
    truths: dict[str, F32] = {}
    sinos: dict[tuple[str, str], F32] = {}
    rows: list[dict[str, Any]] = []
    for m in methods:
        key = (m.axis, m.filter)
        if key not in sinos:
            sinos[key] = _sinogram_for(m, ph, angles, n)
        if m.axis not in truths:
            cx, cy = _truth_centres(m, n)
            truths[m.axis] = ap.image(ph, n, centre=cx, centre_y=cy)
        sino = sinos[key]
        axis_col = _axis_col(m, n)
        if isinstance(m.run, _Gridding):
            m.run.prepare(n, angles)
        result: dict[str, NDArray[Any]] = {}

        def call(
            m: Method = m,
            sino: F32 = sino,
            axis_col: float = axis_col,
            result: dict[str, NDArray[Any]] = result,
        ) -> None:
            result.clear()  # free the previous image first (steady state)
            result["img"] = np.asarray(m.run(sino, angles, axis_col))

        print(f"   timing {m.name} ...", flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if m.fast:
                timing = time_call(call, repeats=7, warmup=1, budget_s=10.0)
            else:
                # the calibration call already compiled / imported everything
                timing = time_call(call, repeats=3, warmup=0, budget_s=5.0 if quick else 20.0)
        img = _TRANSFORMS[m.calib["orientation"]](result["img"]).astype(np.float64)
        cx, _ = _truth_centres(m, n)
        mask = ap.circle_mask(n, centre=cx)
        truth = truths[m.axis]
        rows.append(
            {
                "method": m.name,
                "library": m.library,
                "filter": m.filter,
                "data": m.data,
                "threads": m.threads,
                "n": n,
                "n_angles": n_angles,
                "best_s": timing.best_s,
                "median_s": timing.median_s,
                "timing": timing.as_dict(),
                "rmse": _rmse(img * m.calib["scale_factor_applied"], truth, mask),
                "rmse_raw": _rmse(img, truth, mask),
                "rmse_flat": _rmse(
                    img * m.calib["scale_factor_applied"], truth, _away_from_edges(truth, mask)
                ),
                "calibration": dict(m.calib),
                "notes": m.notes,
            }
        )
    by = {r["method"]: r for r in rows}
    ref = by.get("talbot-gridding")
    for r in rows:
        r["time_vs_talbot_gridding"] = r["best_s"] / ref["best_s"] if ref else None
    checks: dict[str, Any] = {"loadavg_at_start": load_at_start}
    astra = by.get("astra-cpu-fbp")
    if astra:
        for name in FAST_ROWS:
            fast = by.get(name)
            if fast is None:
                continue
            speedup = astra["best_s"] / fast["best_s"]
            checks[name] = {
                "astra_over_this": speedup,
                "rmse_this": fast["rmse"],
                "rmse_astra": astra["rmse"],
                "speedup_met": bool(speedup >= TARGET_SPEEDUP_VS_ASTRA),
                "rmse_met": bool(fast["rmse"] <= astra["rmse"]),
                "target_met": bool(
                    speedup >= TARGET_SPEEDUP_VS_ASTRA and fast["rmse"] <= astra["rmse"]
                ),
            }
        if "talbot-gridding" in checks:
            checks["target_met"] = checks["talbot-gridding"]["target_met"]
    return rows, checks


COLUMNS = (
    ("method", "method", ""),
    ("filter", "filter", ""),
    ("threads", "thr", ""),
    ("best_s", "best s", ".3f"),
    ("median_s", "median s", ".3f"),
    ("time_vs_talbot_gridding", "x gridding", ".1f"),
    ("rmse", "RMSE", ".4f"),
    ("rmse_raw", "RMSE raw", ".4f"),
    ("rmse_flat", "RMSE flat", ".4f"),
)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark, print the tables and write ``OUT/fbp.json``."""
    ap_ = bench_parser(__doc__, result="fbp")
    ap_.add_argument("--skip", nargs="*", default=[], help="method names or libraries to leave out")
    ap_.add_argument(
        "--sizes",
        nargs="*",
        default=None,
        help="override sizes as N:ANGLES, e.g. 1024:900",
    )
    args = ap_.parse_args(argv)
    if args.sizes:
        sizes = tuple(tuple(int(v) for v in s.split(":")) for s in args.sizes)
    else:
        sizes = QUICK_SIZES if args.quick else FULL_SIZES
    print_header("FBP: one slice, Shepp-Logan with exact line integrals")
    methods = make_methods(set(args.skip))
    all_rows: list[dict[str, Any]] = []
    all_checks: dict[str, Any] = {}
    for n, n_ang in sizes:
        rows, checks = run_size(n, n_ang, methods, quick=args.quick)
        all_rows.extend(rows)
        all_checks[f"{n}x{n_ang}"] = checks
        print(f"\n{n} px x {n_ang} angles (RMSE in phantom units, values 0..1)")
        print(format_table(rows, COLUMNS))
        for name in FAST_ROWS:
            c = checks.get(name)
            if not c:
                continue
            print(
                f"astra CPU FBP / {name} = {c['astra_over_this']:.1f}x (target "
                f">= {TARGET_SPEEDUP_VS_ASTRA:.0f}x: {'met' if c['speedup_met'] else 'NOT met'}); "
                f"RMSE {c['rmse_this']:.4f} vs astra {c['rmse_astra']:.4f} "
                f"({'equal or lower' if c['rmse_met'] else 'HIGHER'})"
            )
    path = write_json(
        "fbp",
        {
            "quick": bool(args.quick),
            "phantom": "modified Shepp-Logan (Toft), exact line integrals, no noise",
            "rmse_mask": "inside radius N/2 - 2 px",
            "rmse_flat_mask": "same, minus pixels within 3 px of an ellipse edge",
            "results": all_rows,
            "checks": all_checks,
        },
        args.out,
    )
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
