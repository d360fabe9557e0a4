"""Ring (stripe) suppression on sinograms and a ring index to measure it.

Stripe removal by sorting (Vo, Atwood, Drakopoulos, Opt. Express 26, 28396 (2018), "algorithm 3"):
sort every detector column of a sinogram over the angles, so that object structure becomes smooth
along the columns while a defective pixel's constant (or slowly varying) offset stays a stripe;
median-filter the sorted sinogram across the columns, which removes the stripe; put the values
back in their original angular order. A constant column error in a DPC sinogram is a broad ring
after Hilbert FBP, so the same treatment applies to dphi sinograms (docs/physics.md).

Sinograms are (angles, columns) or stacks (angles, rows, columns); every row is its own sinogram.
"""

from __future__ import annotations

import numpy as np
import scipy.ndimage
from numpy.typing import ArrayLike, NDArray

F32 = NDArray[np.float32]


def remove_stripes_sorting(sinogram: ArrayLike, size: int = 21) -> F32:
    """Sorting-based stripe removal (Vo et al. 2018) along the columns.

    ``sinogram`` (angles, columns) or (angles, rows, columns), any units; ``size`` the median
    window across columns [px] (odd, >= 3; wider than the widest stripe). Returns float32, same
    shape and units.
    """
    s = np.asarray(sinogram, dtype=np.float32)
    if s.ndim not in (2, 3):
        raise ValueError(
            f"sinogram must be (angles, columns) or (angles, rows, columns), got shape {s.shape}"
        )
    if not np.all(np.isfinite(s)):
        raise ValueError("sinogram contains NaN or inf")
    if size < 3 or size % 2 == 0:
        raise ValueError(f"size must be an odd window >= 3 [px], got {size!r}")
    if size > s.shape[-1]:
        raise ValueError(f"size {size} exceeds the number of columns {s.shape[-1]}")
    order = np.argsort(s, axis=0, kind="stable")
    sorted_s = np.take_along_axis(s, order, axis=0)
    window = (1,) * (s.ndim - 1) + (size,)
    smoothed = scipy.ndimage.median_filter(sorted_s, size=window, mode="reflect")
    out = np.empty_like(s)
    np.put_along_axis(out, order, smoothed, axis=0)
    return out


def remove_stripes(sinogram: ArrayLike, size: int = 21, method: str = "sorting") -> F32:
    """Stripe (ring) suppression entry point; ``method="sorting"`` (Vo et al. 2018) is the one
    implemented. ``sinogram`` (angles, [rows,] columns) -> float32, same shape and units."""
    if method != "sorting":
        raise ValueError(f"method must be 'sorting', got {method!r}")
    return remove_stripes_sorting(sinogram, size=size)


def ring_index(
    image: ArrayLike, radius_px: float, *, center: tuple[float, float] | None = None
) -> float:
    """Variance of the radial mean profile (1-px annuli) of a slice within ``radius_px``.

    ``image`` (y, x) of a homogeneous region around the rotation axis (default the image centre
    ``((n-1)/2, (n-1)/2)``). Rings raise it; a perfectly homogeneous disk gives 0
    (docs/physics.md). Units: image units squared.
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2:
        raise ValueError(f"image must be 2-D (y, x), got shape {img.shape}")
    if not radius_px >= 2:
        raise ValueError(f"radius_px must be >= 2, got {radius_px!r}")
    cy, cx = center if center is not None else ((img.shape[0] - 1) / 2.0, (img.shape[1] - 1) / 2.0)
    y, x = np.indices(img.shape)
    r = np.hypot(y - cy, x - cx)
    inside = r < radius_px
    bins = r[inside].astype(np.int64)
    counts = np.bincount(bins)
    profile = np.bincount(bins, weights=img[inside]) / np.maximum(counts, 1)
    return float(np.var(profile[counts > 0]))
