"""Alignment analysis on synthetic stepping series with known visibility, moire and centre."""

from __future__ import annotations

import numpy as np
import pytest

from contracts.frames import FRAME_DTYPE, FrameTable, ImageKey
from recon.alignment import (
    center_check_result,
    distance_scan_result,
    fringe_frequency,
    roll_scan_result,
    visibility_maps,
)

P2 = 1.0e-6  # analyser pitch [m]
STEPS = 5
SHAPE = (16, 48)


def _series(vis: float, fy: float, fx: float = 0.0, mean: float = 1000.0, trans=None):
    """STEPS frames I = a0 T (1 + V cos(2 pi x_k/p2 + phi(y, x))) and their tags."""
    y, x = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    phi = 2 * np.pi * (fy * y + fx * x)
    t = np.ones(SHAPE) if trans is None else trans
    xs = np.arange(STEPS) * P2 / STEPS
    frames = [mean * t * (1 + vis * np.cos(2 * np.pi * xk / P2 + phi)) for xk in xs]
    return np.array(frames), xs


def _table(entries: list[tuple[int, int, np.ndarray]]) -> FrameTable:
    """(image_key, index, positions) per series -> frame table."""
    rows = []
    for key, index, xs in entries:
        for k, xk in enumerate(xs):
            row = np.zeros(1, FRAME_DTYPE)[0]
            row["image_key"] = key
            row["angle_index"] = index if key == ImageKey.PROJECTION else -1
            row["series_index"] = index if key == ImageKey.FLAT else -1
            row["step_index"] = k
            row["g2_position_m"] = xk
            rows.append(row)
    return FrameTable(np.array(rows, dtype=FRAME_DTYPE))


def test_visibility_maps_recover_visibility_and_phase() -> None:
    frames, xs = _series(0.3, fy=0.0, fx=0.05)
    maps = visibility_maps(frames, _table([(ImageKey.FLAT, 0, xs)]), P2)
    assert float(np.median(maps.visibility)) == pytest.approx(0.3, abs=1e-4)
    assert float(np.median(maps.mean)) == pytest.approx(1000.0, rel=1e-4)
    assert fringe_frequency(np.exp(1j * maps.phase))[1] == pytest.approx(0.05, abs=1e-4)


def test_roll_scan_finds_the_roll_without_moire(tmp_path) -> None:
    rolls = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])  # mrad
    best = 0.7
    fys = 0.02 * (rolls - best)  # cycles/px per mrad of mismatch
    parts = [_series(0.3, fy=f) for f in fys]
    frames = np.concatenate([p[0] for p in parts])
    table = _table([(ImageKey.FLAT, i, p[1]) for i, p in enumerate(parts)])
    result = roll_scan_result(frames, table, P2, rolls)
    assert result.best == pytest.approx(best, abs=1e-3)
    assert result.values[0] == pytest.approx(1 / (0.02 * 2.7), rel=1e-3)  # moire period [px]
    with pytest.raises(ValueError, match="rolls_mrad"):
        roll_scan_result(frames, table, P2, rolls[:2])


def test_distance_scan_peaks_at_the_talbot_distance() -> None:
    z = np.array([4.0, 4.5, 5.0, 5.5, 6.0])  # mm
    vis = 0.35 - 0.2 * (z - 5.1) ** 2
    parts = [_series(v, fy=0.0) for v in vis]
    frames = np.concatenate([p[0] for p in parts])
    table = _table([(ImageKey.FLAT, i, p[1]) for i, p in enumerate(parts)])
    result = distance_scan_result(frames, table, P2, z)
    assert result.values == pytest.approx(vis, abs=1e-4)
    assert result.best == pytest.approx(5.1, abs=1e-3)


def test_center_check_from_opposite_projections() -> None:
    c_off = 3.0  # axis 3 px right of the detector centre
    cols = np.arange(SHAPE[1])
    centre = (SHAPE[1] - 1) / 2 + c_off
    # an off-centre absorber at +6 px from the axis at theta, -6 px at theta + 180
    t0 = np.exp(-0.5 * np.exp(-0.5 * ((cols - centre - 6.0) / 2.0) ** 2))
    t1 = np.exp(-0.5 * np.exp(-0.5 * ((cols - centre + 6.0) / 2.0) ** 2))
    ref, xs = _series(0.3, fy=0.0)
    p0, _ = _series(0.3, fy=0.0, trans=np.broadcast_to(t0, SHAPE))
    p1, _ = _series(0.3, fy=0.0, trans=np.broadcast_to(t1, SHAPE))
    frames = np.concatenate([ref, p0, p1])
    table = _table(
        [(ImageKey.FLAT, 0, xs), (ImageKey.PROJECTION, 0, xs), (ImageKey.PROJECTION, 1, xs)]
    )
    assert center_check_result(frames, table, P2) == pytest.approx(c_off, abs=0.05)


def test_analysis_validates() -> None:
    frames, xs = _series(0.3, fy=0.0)
    table = _table([(ImageKey.FLAT, 0, xs)])
    with pytest.raises(ValueError, match="period_m"):
        visibility_maps(frames, table, 0.0)
    with pytest.raises(ValueError, match="frames"):
        visibility_maps(frames[:3], table, P2)
    with pytest.raises(ValueError, match="series reference 1"):
        visibility_maps(frames, table, P2, series_index=1)
