"""Reconstruction output: ``recon.h5`` (volumes and projections) and PNG previews.

``recon.h5``: float32 datasets ``delta`` [1], ``mu`` [1/m], ``darkfield`` [1/m], axes
(z, y, x), attributes ``units``, ``voxel_size_m`` and ``axes``; the retrieved projections under
``projections/`` (transmission, dphi [rad], darkfield, each (angle, row, column), and
``angles_rad``); the stepping-curve fit that gave them as root attributes (``fit_method``,
``calibration_steps``, the curve's measured harmonics and the first-harmonic bias they
predict: ``recon.curve.FitChoice.attrs``); the scan it is of and whether it is complete
(``recon.provenance.Provenance.attrs``: ``scan_uid``, ``scan_plan``, ``projections_used``,
``projections_planned``, ``complete``, ``incomplete_reason``...). Shared by the demo job,
the offline ``talbot reconstruct`` and the streaming reconstructor so all three write the same
format.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np
from numpy.typing import NDArray

from recon.pipeline import Projections, Volumes
from recon.provenance import Provenance

CHANNELS = ("delta", "mu", "darkfield")


def write_volumes(
    path: Path, volumes: Mapping[str, NDArray[np.float32]], voxel_m: float, **attrs: object
) -> None:
    """Write delta, mu and darkfield (z, y, x) float32 with units and voxel size [m] to ``path``
    (created or truncated); ``attrs`` go to the file's root attributes."""
    units = Volumes.UNITS
    with h5py.File(path, "w") as f:
        for key, value in attrs.items():
            f.attrs[key] = value
        for name in CHANNELS:
            ds = _dataset(f, name, volumes[name].astype(np.float32, copy=False))
            ds.attrs["units"] = units[name]
            ds.attrs["voxel_size_m"] = voxel_m
            ds.attrs["axes"] = "z,y,x"


def write_projections(path: Path, projections: Projections) -> None:
    """Append the retrieved projections (angle, row, column) under ``projections/``."""
    with h5py.File(path, "a") as f:
        g = f.create_group("projections")
        g.attrs["axes"] = "angle,row,column"
        for name in ("transmission", "dphi", "darkfield"):
            ds = _dataset(g, name, getattr(projections, name))
            ds.attrs["units"] = "rad" if name == "dphi" else "1"
        g.create_dataset("angles_rad", data=projections.angles_rad).attrs["units"] = "rad"


def _dataset(group: h5py.Group, name: str, data: NDArray[np.float32]) -> h5py.Dataset:
    """An uncompressed dataset in chunks of one slice (z for volumes, angle for projections).

    Not compressed: gzip saved 14 % on the tiny scan's recon.h5 (noise compresses badly) but
    took 0.2 s of its 0.8 s from last frame to files; it compresses the demo's volumes at
    ~25 MB/s on one core here, ~9 minutes for the 13 GB of a 1024^3 scan.
    ``h5repack -f GZIP=4`` compresses afterwards.
    """
    chunks = (1, *data.shape[1:]) if data.ndim == 3 and data.shape[0] > 0 else None
    return group.create_dataset(name, data=data, chunks=chunks)


def volumes_dict(volumes: Volumes) -> dict[str, NDArray[np.float32]]:
    """The three volumes by name."""
    return {"delta": volumes.delta, "mu": volumes.mu, "darkfield": volumes.darkfield}


def write_recon(
    out: Path,
    volumes: Volumes,
    projections: Projections | None = None,
    provenance: Provenance | None = None,
) -> list[str]:
    """``recon.h5`` (+ projections when given) and ``slices.png`` into ``out``; file names.
    ``provenance``: the scan's identity and completeness (``recon.provenance``), as root
    attributes and in the figure's title."""
    out.mkdir(parents=True, exist_ok=True)
    fit = {} if projections is None or projections.fit is None else projections.fit.attrs()
    scan = {} if provenance is None else provenance.attrs()
    write_volumes(
        out / "recon.h5",
        volumes_dict(volumes),
        volumes.voxel_size_m,
        center_offset_px=volumes.center_offset_px,
        **fit,
        **scan,
    )
    if projections is not None:
        write_projections(out / "recon.h5", projections)
    title = None if provenance is None else provenance.title()
    write_preview(out / "slices.png", volumes, title=title)
    return ["recon.h5", "slices.png"]


def load_plotting() -> None:
    """Import matplotlib (Agg) now: the import takes ~0.9 s, which a streaming reconstructor
    pays at scan start, in the background, rather than between the last frame and its figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot


def write_preview(
    path: Path, volumes: Volumes, z: int | None = None, title: str | None = None
) -> None:
    """PNG of one axial slice (default: the middle one) of delta, mu and dark-field, masked
    outside the reconstruction circle, axes in micrometres; ``title`` above the three (a
    partial scan's says so: ``recon.provenance.Provenance.title``)."""
    load_plotting()
    import matplotlib.pyplot as plt

    vols = volumes_dict(volumes)
    shape = volumes.delta.shape
    z = shape[0] // 2 if z is None else z
    if not 0 <= z < shape[0]:
        raise ValueError(f"z must be in [0, {shape[0]}), got {z}")
    voxel = volumes.voxel_size_m
    extent_um = tuple(np.array([-1, 1, -1, 1]) * shape[2] * voxel * 1e6 / 2)
    yy, xx = np.indices(shape[1:])
    outside = np.hypot(yy - (shape[1] - 1) / 2, xx - (shape[2] - 1) / 2) > shape[2] / 2
    titles = {"delta": "δ", "mu": "μ [1/m]", "darkfield": "dark-field ε [1/m]"}
    # A fixed layout: constrained layout draws the figure twice (~0.6 s at scan end).
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    top = 0.92 if title is None else 0.84
    fig.subplots_adjust(left=0.06, right=0.97, bottom=0.12, top=top, wspace=0.45)
    if title is not None:
        partial = not title.endswith(": complete")
        fig.suptitle(title, color="red" if partial else "black", fontsize=11)
    for ax, name in zip(axes, CHANNELS, strict=True):
        img = np.where(outside, np.nan, vols[name][z])
        finite = img[np.isfinite(img)]
        lo, hi = (
            (float(np.percentile(finite, 1)), float(np.percentile(finite, 99.5)))
            if finite.size
            else (0.0, 1.0)
        )
        im = ax.imshow(img, cmap="gray", vmin=lo, vmax=max(hi, lo + 1e-30), extent=extent_um)
        ax.set_title(f"{titles[name]}, z = {z}")
        ax.set_xlabel("x [µm]")
        ax.set_ylabel("y [µm]")
        fig.colorbar(im, ax=ax, shrink=0.8)
    fig.savefig(path, dpi=110)
    plt.close(fig)
