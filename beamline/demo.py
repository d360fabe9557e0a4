"""The offline main job: simulate a phase-stepping CT of the bone phantom and reconstruct it.

Writes into the output directory:

- ``recon.h5``: float32 ``delta`` [1], ``mu`` [1/m], ``darkfield`` [1/m], axes (z, y, x), attributes
  ``units`` and ``voxel_size_m``; plus the retrieved projections under ``projections/``;
- ``truth.h5``: the phantom's ground truth on the same grid and under the same names;
- ``slices.png`` and ``halo_profile.png``: figures a scientist looks at;
- ``metrics.json``: the quality figures measured against the truth (also printed).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from contracts.profile import ConfigError, Profile
from recon.output import volumes_dict, write_projections, write_volumes
from recon.pipeline import Volumes, reconstruct_volumes, retrieve_projections
from sim.phantom import BonePhantom
from sim.scan import simulate_scan

#: Classical electron radius [m] and Avogadro's number [1/mol] (CODATA 2018).
R_E_M = 2.8179403262e-15
N_A = 6.02214076e23


def delta_per_density(wavelength_m: float, z_over_a: float = 0.5) -> float:
    """delta per mass density [1 per kg/m^3] for light elements away from edges (Z/A given).

    delta = r_e lambda^2 N_A (Z/A) rho / (2 pi), rho in g/mol-consistent units (physics.md §2.1).
    """
    per_g_cm3 = R_E_M * wavelength_m**2 * N_A * z_over_a / (2 * math.pi) * 1e6  # rho in g/cm^3
    return per_g_cm3 / 1000.0  # per kg/m^3 (1 g/cm^3 = 1000 kg/m^3)


@dataclass
class DemoReport:
    """Quality figures measured against the truth, and timings."""

    profile: str
    shape_zyx: tuple[int, int, int]
    voxel_size_m: float
    center_offset_px: float
    center_offset_true_px: float
    delta_matrix_true: float
    delta_matrix_mean: float
    delta_matrix_bias_pct: float
    delta_matrix_noise: float
    delta_matrix_noise_mg_cm3: float
    halo_contrast_true: float
    halo_contrast_measured: float
    halo_contrast_recovered_pct: float
    mu_matrix_true_per_m: float
    mu_matrix_mean_per_m: float
    mu_matrix_bias_pct: float
    delta_rmse_in_rod: float
    timings_s: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    stream: dict[str, int] = field(default_factory=dict)  # frame-stream counts (whole system)

    def as_dict(self) -> dict[str, object]:
        """Plain JSON-able dictionary (what ``metrics.json`` holds)."""
        return asdict(self)

    def summary(self) -> str:
        """Human-readable summary (what the CLI prints)."""
        t = self.timings_s
        lines = [
            f"Talbot demo, profile {self.profile!r}: volume {self.shape_zyx} (z, y, x), "
            f"voxel {self.voxel_size_m * 1e6:.3g} um",
            f"  rotation centre      {self.center_offset_px:+.2f} px "
            f"(true {self.center_offset_true_px:+.2f} px)",
            f"  delta, bone matrix   {self.delta_matrix_mean:.4e} vs truth "
            f"{self.delta_matrix_true:.4e}  (bias {self.delta_matrix_bias_pct:+.2f} %)",
            f"  delta noise (matrix) {self.delta_matrix_noise:.2e} "
            f"(~{self.delta_matrix_noise_mg_cm3:.0f} mg/cm^3 per voxel)",
            f"  halo - matrix delta  {self.halo_contrast_measured:.3e} vs truth "
            f"{self.halo_contrast_true:.3e}  (recovered {self.halo_contrast_recovered_pct:.1f} %)",
            f"  mu, bone matrix      {self.mu_matrix_mean_per_m:.1f} 1/m vs truth "
            f"{self.mu_matrix_true_per_m:.1f} 1/m  (bias {self.mu_matrix_bias_pct:+.2f} %)",
            f"  delta RMSE in rod    {self.delta_rmse_in_rod:.2e}",
            "  timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in t.items()),
        ]
        if self.stream:
            lines.append("  frame stream: " + ", ".join(f"{k} {v}" for k, v in self.stream.items()))
        lines.append("  wrote: " + ", ".join(self.files))
        return "\n".join(lines)


def _best_slice(mask: NDArray[np.bool_]) -> int:
    counts = mask.reshape(mask.shape[0], -1).sum(axis=1)
    return int(np.argmax(counts)) if counts.max() > 0 else mask.shape[0] // 2


def _halo_profile(
    phantom: BonePhantom, z_index: int, shape: tuple[int, int, int], voxel: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]] | None:
    """Sample points (z, y, x in voxel index units) across the most in-plane canaliculus."""
    z_m = (z_index - (shape[0] - 1) / 2) * voxel
    best: tuple[float, NDArray[np.float64], NDArray[np.float64]] | None = None
    for start, end in phantom.canaliculus_axes:
        axis = end - start
        length = float(np.linalg.norm(axis))
        if length == 0:
            continue
        direction = axis / length
        if abs(direction[2]) > 0.999:
            continue
        # the point of the axis closest to the slice plane, away from the lacuna
        t = np.clip((z_m - start[2]) / direction[2], 0.3 * length, length) if direction[2] else None
        point = start + (t if t is not None else 0.6 * length) * direction
        score = abs(point[2] - z_m) + abs(direction[2]) * 1e-6
        if best is None or score < best[0]:
            best = (score, point, direction)
    if best is None:
        return None
    _, point, direction = best
    normal = np.array([-direction[1], direction[0], 0.0])
    normal /= np.linalg.norm(normal)
    offsets = np.linspace(-4e-6, 4e-6, 161)
    pts = point[None, :] + offsets[:, None] * normal[None, :]
    centre = (np.asarray(shape) - 1) / 2
    idx = np.stack(
        [
            np.full(offsets.size, float(z_index)),
            pts[:, 1] / voxel + centre[1],
            pts[:, 0] / voxel + centre[2],
        ]
    )
    return offsets, idx, point


def _figures(
    out: Path,
    recon: dict[str, NDArray[np.float32]],
    truth: dict[str, NDArray[np.float32]],
    masks: dict[str, NDArray[np.bool_]],
    phantom: BonePhantom,
    voxel: float,
    delta_matrix: float,
) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy import ndimage

    written = []
    z = _best_slice(masks["halo"])
    shape = recon["delta"].shape
    extent_um = np.array([-1, 1, -1, 1]) * shape[2] * voxel * 1e6 / 2
    yy, xx = np.indices(shape[1:])
    outside = np.hypot(yy - (shape[1] - 1) / 2, xx - (shape[2] - 1) / 2) > shape[2] / 2
    fig, axes = plt.subplots(2, 3, figsize=(12, 7.5), constrained_layout=True)
    titles = {"delta": "δ", "mu": "μ [1/m]", "darkfield": "dark-field ε [1/m]"}
    for col, name in enumerate(("delta", "mu", "darkfield")):
        t_img = truth[name][z]
        lo, hi = float(np.percentile(t_img, 1)), float(np.percentile(t_img, 99.5))
        if name == "delta":  # window on the bone matrix, where the mineral-depleted halos are
            lo, hi = 0.75 * delta_matrix, 1.03 * delta_matrix
        if hi <= lo:
            lo, hi = float(recon[name][z].min()), float(recon[name][z].max())
        for row, (label, vol) in enumerate((("reconstruction", recon), ("truth", truth))):
            ax = axes[row, col]
            img = np.where(outside, np.nan, vol[name][z])  # outside the reconstruction circle
            im = ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, extent=tuple(extent_um))
            ax.set_title(f"{titles[name]} — {label}, z = {z}")
            ax.set_xlabel("x [µm]")
            ax.set_ylabel("y [µm]")
            fig.colorbar(im, ax=ax, shrink=0.8)
    fig.savefig(out / "slices.png", dpi=110)
    plt.close(fig)
    written.append("slices.png")

    profile = _halo_profile(phantom, z, shape, voxel)
    if profile is not None:
        offsets, idx, _ = profile
        rec = ndimage.map_coordinates(recon["delta"].astype(np.float64), idx, order=1)
        tru = ndimage.map_coordinates(truth["delta"].astype(np.float64), idx, order=1)
        fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
        ax.plot(offsets * 1e6, tru * 1e6, label="truth", color="k", lw=1.5)
        ax.plot(offsets * 1e6, rec * 1e6, label="reconstruction", color="C1", lw=1.5)
        ax.axhline(delta_matrix * 1e6, color="0.6", ls="--", lw=1, label="bone matrix")
        ax.set_xlabel("distance across the canaliculus [µm]")
        ax.set_ylabel("δ × 10⁶")
        ax.set_title("Mineral-depleted halo around a canaliculus")
        ax.legend()
        fig.savefig(out / "halo_profile.png", dpi=110)
        plt.close(fig)
        written.append("halo_profile.png")
    return written


def score_and_write(
    out: Path,
    profile: Profile,
    phantom: BonePhantom,
    volumes: Volumes,
    timings: dict[str, float],
    *,
    files: list[str],
) -> DemoReport:
    """Voxelize the truth on the volumes' grid, write ``truth.h5``, the figures and
    ``metrics.json``, and return the quality figures (volumes already written by the caller)."""
    voxel = volumes.voxel_size_m
    shape = volumes.delta.shape
    t0 = time.perf_counter()
    truth = phantom.voxelize(shape, voxel)
    masks = phantom.region_masks(shape, voxel)
    timings["truth"] = time.perf_counter() - t0
    write_volumes(out / "truth.h5", truth, voxel)

    matrix, halo = masks["matrix"], masks["halo"]
    d_true = float(truth["delta"][matrix].mean())
    d_mean = float(volumes.delta[matrix].mean())
    d_noise = float(volumes.delta[matrix].std())
    halo_true = float(truth["delta"][halo].mean()) - d_true if halo.any() else float("nan")
    halo_meas = float(volumes.delta[halo].mean()) - d_mean if halo.any() else float("nan")
    mu_true = float(truth["mu"][matrix].mean())
    mu_mean = float(volumes.mu[matrix].mean())
    rod = truth["delta"] > 0.5 * d_true
    rmse = float(np.sqrt(np.mean((volumes.delta[rod] - truth["delta"][rod]) ** 2)))
    per_density = delta_per_density(profile.instrument.geometry.wavelength_m)

    recon = {"delta": volumes.delta, "mu": volumes.mu, "darkfield": volumes.darkfield}
    t0 = time.perf_counter()
    figures = _figures(out, recon, truth, masks, phantom, voxel, d_true)
    timings["figures"] = time.perf_counter() - t0
    report = DemoReport(
        profile=profile.name,
        shape_zyx=(int(shape[0]), int(shape[1]), int(shape[2])),
        voxel_size_m=voxel,
        center_offset_px=volumes.center_offset_px,
        center_offset_true_px=profile.simulated().axis_offset_px(
            profile.instrument.rotation_axis_offset_px
        ),
        delta_matrix_true=d_true,
        delta_matrix_mean=d_mean,
        delta_matrix_bias_pct=100 * (d_mean / d_true - 1),
        delta_matrix_noise=d_noise,
        delta_matrix_noise_mg_cm3=d_noise / per_density,  # kg/m^3 == mg/cm^3
        halo_contrast_true=halo_true,
        halo_contrast_measured=halo_meas,
        halo_contrast_recovered_pct=100 * halo_meas / halo_true,
        mu_matrix_true_per_m=mu_true,
        mu_matrix_mean_per_m=mu_mean,
        mu_matrix_bias_pct=100 * (mu_mean / mu_true - 1),
        delta_rmse_in_rod=rmse,
        timings_s=timings,
        files=[*files, "truth.h5", *figures, "metrics.json"],
    )
    (out / "metrics.json").write_text(json.dumps(report.as_dict(), indent=2))
    return report


#: Raw frames the offline demo may hold in memory [bytes].
OFFLINE_FRAME_BUDGET = 4 * 2**30


def run_demo(profile: Profile, out: Path, seed: int = 0, noise: bool = True) -> DemoReport:
    """Offline: simulate in memory, reconstruct, score against the truth, write into ``out``."""
    instrument, plan = profile.instrument, profile.scan_plan()
    rows, cols = instrument.detector.shape
    need = plan.frames_planned() * rows * cols * 8
    if need > OFFLINE_FRAME_BUDGET:
        raise ConfigError(
            f"profile {profile.name!r}: the offline demo would hold {need / 2**30:.0f} GiB of "
            f"frames in memory (limit {OFFLINE_FRAME_BUDGET / 2**30:.0f} GiB); run the whole "
            "system (talbot demo without --offline), which streams the frames"
        )
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    scan = simulate_scan(instrument, plan, profile.simulated(), seed=seed, noise=noise)
    timings["simulate"] = time.perf_counter() - t0

    geometry = instrument.geometry
    t0 = time.perf_counter()
    projections = retrieve_projections(scan.frames, scan.table, geometry)
    timings["retrieve"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    volumes = reconstruct_volumes(projections, geometry)
    timings["reconstruct"] = time.perf_counter() - t0
    fit = {} if projections.fit is None else projections.fit.attrs()
    write_volumes(out / "recon.h5", volumes_dict(volumes), volumes.voxel_size_m, **fit)
    write_projections(out / "recon.h5", projections)
    return score_and_write(out, profile, scan.phantom, volumes, timings, files=["recon.h5"])
