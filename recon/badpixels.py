"""Dead, hot and saturated detector pixels: found from the darks and the references, replaced in
the retrieved projections by the median of their good neighbours, never fatal.

One dead pixel used to stop a reconstruction: its reference and its projections are 0 - 0, the
transmission 0/0, and the FBP refuses a sinogram that is not finite. A pixel is

- *dead* when its reference signal (mean flat minus mean dark) is below ``DEAD_FRACTION`` of
  the median pixel's;
- *hot* when its mean dark is more than ``HOT_SIGMAS`` robust standard deviations (1.4826 x the
  median absolute deviation, at least ``MIN_DARK_SIGMA`` counts) above the median dark;
- *saturated* when it reached its pixel type's largest count in some reference frame (the
  stepping curve is clipped there; integer frames only);
- *non-finite* when some frame has NaN or inf there (float frames): the value is set to 0 for
  the fits (which refuse non-finite frames) and the frame and pixel are named in a note.

The categories exclude each other, in the order non-finite, saturated, hot, dead (a pixel stuck
at the top count in every frame is saturated, not also hot and dead). The offline pipeline
(``recon.pipeline.retrieve_projections``) and the streaming fit store
(``recon.fitstore.FitStore.projections``) both find them with :func:`find_bad_pixels` and mend
T, dphi and D with :func:`repair`; a clean scan flags none, and its projections are untouched.

Arrays: images (rows, columns); stacks (..., rows, columns), e.g. projections (angles, rows,
columns) or frames (n, rows, columns); counts are detector counts (ADU).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import NDArray

#: Dead: reference signal below this fraction of the median pixel's.
DEAD_FRACTION: Final = 0.1
#: Hot: mean dark this many robust standard deviations above the median dark. The simulated
#: detector's darks (read noise 1.7 counts, 5 frames averaged) reach 4 sigma over 3072 pixels;
#: a Gaussian field of 4 Mpx reaches 5.5.
HOT_SIGMAS: Final = 10.0
#: Floor of the dark's robust standard deviation [counts] (integer darks averaged over few
#: frames can have a median absolute deviation of 0).
MIN_DARK_SIGMA: Final = 1.0
#: Frames named one by one in the notes on non-finite pixels; the rest are counted.
MAX_NOTES: Final = 5
#: The kinds of bad pixel, in the order they are counted.
KINDS: Final = ("dead", "hot", "saturated", "non-finite")
#: Bad pixels mended per pass of :func:`repair` (bounds its temporary: 8 neighbours x stack).
_BATCH: Final = 512

Mask = NDArray[np.bool_]


@dataclass(frozen=True)
class BadPixels:
    """The bad pixels of a detector, one (rows, columns) mask per kind (they exclude each
    other), and ``notes``: one line per frame with non-finite values."""

    dead: Mask
    hot: Mask
    saturated: Mask
    nonfinite: Mask
    notes: tuple[str, ...] = field(default=())

    @property
    def mask(self) -> Mask:
        """Every bad pixel (rows, columns)."""
        return self.dead | self.hot | self.saturated | self.nonfinite

    @property
    def count(self) -> int:
        """How many pixels are bad."""
        return int(self.mask.sum())

    def counts(self) -> dict[str, int]:
        """Bad pixels by kind."""
        masks = (self.dead, self.hot, self.saturated, self.nonfinite)
        return {kind: int(m.sum()) for kind, m in zip(KINDS, masks, strict=True)}

    def pixels(self) -> list[tuple[int, int]]:
        """(row, column) of every bad pixel, in row-major order."""
        return [(int(r), int(c)) for r, c in zip(*np.nonzero(self.mask), strict=True)]

    def describe(self) -> str:
        """One line: "masked 3 bad pixels: 1 dead, 1 hot, 1 saturated" (or "no bad pixels")."""
        n = self.count
        if n == 0:
            return "no bad pixels"
        parts = ", ".join(f"{v} {k}" for k, v in self.counts().items() if v)
        return f"masked {n} bad pixel{'s' if n != 1 else ''}: {parts}"


def saturation_count(dtype: np.dtype | type) -> int | None:
    """The largest count a pixel of ``dtype`` can hold (65535 for uint16); None for float
    pixels, which do not saturate at a type's bound."""
    dt = np.dtype(dtype)
    return int(np.iinfo(dt).max) if np.issubdtype(dt, np.integer) else None


def saturated_pixels(frames: Iterable[NDArray[np.generic]], shape: tuple[int, int]) -> Mask:
    """(rows, columns): the pixels at their type's largest count in any of ``frames`` (each
    (rows, columns) of one shape; float frames never), read one by one (no stacking copy)."""
    out = np.zeros(shape, bool)
    for frame in frames:
        top = saturation_count(frame.dtype)
        if top is not None:
            out |= np.greater_equal(frame, top)
    return out


def finite_frames(
    frames: NDArray[np.generic], first_number: int = 0
) -> tuple[NDArray[np.generic], Mask, tuple[str, ...]]:
    """``frames`` (n, rows, columns) with NaN and inf set to 0, the (rows, columns) mask of the
    pixels that had one in any frame, and one note per such frame ("frame 17: 2 pixels not
    finite, first at (10, 40)"; frames numbered from ``first_number``). Integer frames, or float
    frames that are all finite, come back as they are (no copy)."""
    shape = (int(frames.shape[1]), int(frames.shape[2]))
    mask = np.zeros(shape, bool)
    if not np.issubdtype(frames.dtype, np.floating):
        return frames, mask, ()
    bad = [i for i in range(frames.shape[0]) if not np.isfinite(frames[i]).all()]
    if not bad:
        return frames, mask, ()
    clean = frames.copy()
    notes: list[str] = []
    for i in bad:
        where = ~np.isfinite(clean[i])
        mask |= where
        clean[i][where] = 0
        if len(notes) < MAX_NOTES:
            r, c = (int(x[0]) for x in np.nonzero(where))
            count = int(where.sum())
            pixels = f"{count} pixel{'s' if count != 1 else ''}"
            notes.append(f"frame {first_number + i}: {pixels} not finite, first at ({r}, {c})")
    if len(bad) > MAX_NOTES:
        notes.append(f"{len(bad) - MAX_NOTES} more frames with pixels that are not finite")
    return clean, mask, tuple(notes)


def find_bad_pixels(
    dark: NDArray[np.floating] | None,
    signal: NDArray[np.floating],
    *,
    saturated: Mask | None = None,
    nonfinite: Mask | None = None,
    notes: Sequence[str] = (),
) -> BadPixels:
    """The bad pixels of a detector (module docstring: the criteria).

    ``dark``: the mean dark (rows, columns) [counts], or None (no darks: no pixel is hot);
    ``signal``: the mean reference minus the dark (rows, columns) [counts], e.g. the mean
    ``a0`` of the reference series' fits; ``saturated``: pixels that reached their type's
    largest count in a reference frame (:func:`saturated_pixels`); ``nonfinite``: pixels with
    NaN or inf in some frame (:func:`finite_frames`), and ``notes`` on them. A pixel whose
    ``signal`` or ``dark`` is not finite counts as non-finite.
    """
    s = np.asarray(signal, np.float64)
    if s.ndim != 2:
        raise ValueError(f"signal must be (rows, columns), got shape {s.shape}")
    bad_nf = np.zeros(s.shape, bool) if nonfinite is None else np.array(nonfinite, bool)
    bad_nf |= ~np.isfinite(s)
    sat = np.zeros(s.shape, bool) if saturated is None else np.array(saturated, bool)
    for name, m in (("nonfinite", bad_nf), ("saturated", sat)):
        if m.shape != s.shape:
            raise ValueError(f"{name} must have the signal's shape {s.shape}, got {m.shape}")
    hot = np.zeros(s.shape, bool)
    if dark is not None:
        d = np.asarray(dark, np.float64)
        if d.shape != s.shape:
            raise ValueError(f"dark must have the signal's shape {s.shape}, got {d.shape}")
        bad_nf |= ~np.isfinite(d)
        good = d[~bad_nf]
        if good.size:
            excess = d - np.median(good)
            sigma = max(1.4826 * float(np.median(np.abs(excess[~bad_nf]))), MIN_DARK_SIGMA)
            with np.errstate(invalid="ignore"):
                hot = excess > HOT_SIGMAS * sigma
    good_s = s[~bad_nf]
    dead = np.zeros(s.shape, bool)
    if good_s.size:
        with np.errstate(invalid="ignore"):
            dead = s < DEAD_FRACTION * float(np.median(good_s))
    sat &= ~bad_nf
    hot &= ~(bad_nf | sat)
    dead &= ~(bad_nf | sat | hot)
    return BadPixels(dead, hot, sat, bad_nf, tuple(notes))


def repair(stack: NDArray[np.floating], mask: Mask) -> None:
    """Replace, in place, every masked pixel of ``stack`` (..., rows, columns) by the median of
    its good neighbours (of the 8 around it, in every image of the stack at once). A pixel with
    none (inside a cluster) takes the median of those mended in the pass before, so clusters
    fill in from their edges; with no good pixel at all the stack is left as it is. A clean
    ``mask`` leaves ``stack`` untouched, bit for bit."""
    m = np.asarray(mask, bool)
    if stack.shape[-2:] != m.shape:
        raise ValueError(f"mask {m.shape} must be the stack's (rows, columns) {stack.shape[-2:]}")
    if not np.issubdtype(stack.dtype, np.floating):
        raise ValueError(f"stack must be floating-point, got dtype {stack.dtype}")
    bad = m.copy()
    rows, cols = m.shape
    lead = (1,) * (stack.ndim - 2)
    offsets = [(dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if dr or dc]
    while bad.any():
        r_all, c_all = np.nonzero(bad)
        mended: list[tuple[NDArray[np.intp], NDArray[np.intp], NDArray[np.floating]]] = []
        for start in range(0, r_all.size, _BATCH):
            r, c = r_all[start : start + _BATCH], c_all[start : start + _BATCH]
            values = np.empty((len(offsets), *stack.shape[:-2], r.size), stack.dtype)
            usable = np.zeros((len(offsets), r.size), bool)
            for k, (dr, dc) in enumerate(offsets):
                rr, cc = r + dr, c + dc
                inside = (rr >= 0) & (rr < rows) & (cc >= 0) & (cc < cols)
                rr, cc = np.clip(rr, 0, rows - 1), np.clip(cc, 0, cols - 1)
                usable[k] = inside & ~bad[rr, cc]
                values[k] = stack[..., rr, cc]
            has = usable.any(axis=0)
            if has.any():
                mended.append((r[has], c[has], _median(values[..., has], usable[:, has], lead)))
        if not mended:
            return  # nothing good left to take from
        for r, c, med in mended:  # after the pass: every pixel from the same neighbours
            stack[..., r, c] = med
            bad[r, c] = False


def _median(
    values: NDArray[np.floating], usable: Mask, lead: tuple[int, ...]
) -> NDArray[np.floating]:
    """The median over axis 0 of ``values`` (8, ..., n) counting only the ``usable`` (8, n)
    neighbours of each pixel (at least one): sorted with the others last, the middle one or
    the mean of the middle two."""
    n = usable.shape[1]
    ordered = np.where(usable.reshape(usable.shape[0], *lead, n), values, np.inf)
    ordered.sort(axis=0)
    k = usable.sum(axis=0)
    shape = (1, *ordered.shape[1:])
    lo = np.broadcast_to(((k - 1) // 2).reshape(1, *lead, n), shape)
    hi = np.broadcast_to((k // 2).reshape(1, *lead, n), shape)
    low = np.take_along_axis(ordered, lo, axis=0)[0]
    high = np.take_along_axis(ordered, hi, axis=0)[0]
    return (0.5 * (low + high)).astype(values.dtype)
