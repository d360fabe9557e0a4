"""Dead, hot and saturated detector pixels are found from the darks and references and mended,
never fatal: offline and streaming, the volume away from them is the clean scan's."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from contracts.frames import FrameTable, ImageKey
from contracts.messages import ScanEnd, ScanStart, frame_header
from recon.badpixels import BadPixels, find_bad_pixels, repair
from recon.pipeline import Projections, Volumes, reconstruct_volumes, retrieve_projections
from recon.streaming import StreamingReconstructor
from tests.recon.scanfiles import Recorded, shared_recorded

DEAD, HOT, SATURATED = (8, 30), (16, 50), (24, 70)  # (row, column)
#: Counts a hot pixel's dark sits above the others' (~100 counts, read noise 1.7).
HOT_EXCESS = 3000


def injected(frames: np.ndarray) -> np.ndarray:
    """A copy of the scan's frames with one dead, one hot and one saturated pixel in every frame
    (darks included: a dead pixel reads 0, a saturated one the top count, a hot one high)."""
    out = frames.copy()
    out[:, DEAD[0], DEAD[1]] = 0
    out[:, HOT[0], HOT[1]] += HOT_EXCESS
    out[:, SATURATED[0], SATURATED[1]] = np.iinfo(out.dtype).max
    return out


def retrieved(rec: Recorded, frames: np.ndarray) -> Projections:
    return retrieve_projections(frames, FrameTable(rec.rows.copy()), rec.instrument.geometry)


@functools.lru_cache(maxsize=1)
def clean() -> tuple[Projections, Volumes]:
    rec = shared_recorded()
    proj = retrieved(rec, rec.frames)
    return proj, reconstruct_volumes(proj, rec.instrument.geometry)


def test_a_clean_simulated_scan_flags_no_pixel_and_its_projections_are_untouched() -> None:
    proj, _ = clean()
    assert proj.bad_pixels is not None
    assert proj.bad_pixels.count == 0
    assert proj.bad_pixels.describe() == "no bad pixels"
    for name in ("transmission", "dphi", "darkfield"):
        signals = getattr(proj, name)
        mended = signals.copy()
        repair(mended, proj.bad_pixels.mask)
        assert mended.tobytes() == signals.tobytes()  # bit for bit
        assert np.isfinite(signals).all()


def test_a_dead_a_hot_and_a_saturated_pixel_are_masked_and_the_volume_elsewhere_is_clean() -> None:
    rec = shared_recorded()
    want_proj, want = clean()
    proj = retrieved(rec, injected(rec.frames))
    bad = proj.bad_pixels
    assert bad is not None
    assert bad.pixels() == [DEAD, HOT, SATURATED]  # exactly those injected, row-major
    assert bad.counts() == {"dead": 1, "hot": 1, "saturated": 1, "non-finite": 0}
    assert bad.describe() == "masked 3 bad pixels: 1 dead, 1 hot, 1 saturated"
    geometry = rec.instrument.geometry
    found = reconstruct_volumes(proj, geometry)  # it once stopped on the dead pixel
    assert np.isfinite(found.delta).all()
    assert found.center_offset_px == pytest.approx(want.center_offset_px, abs=0.02)
    got = reconstruct_volumes(proj, geometry, center_offset_px=want.center_offset_px)
    scale = float(np.abs(want.delta).max())
    rows = [DEAD[0], HOT[0], SATURATED[0]]
    others = np.setdiff1d(np.arange(want.delta.shape[0]), rows)
    # slices through no bad pixel: only the calibration (a whole-field mean) moved (6e-5)
    np.testing.assert_allclose(got.delta[others], want.delta[others], rtol=0, atol=2e-4 * scale)
    # a mended pixel leaves a faint ring in its own slice (1.6 % at most, the hot pixel's, 2.5
    # columns from the axis)
    np.testing.assert_allclose(got.delta[rows], want.delta[rows], rtol=0, atol=2.5e-2 * scale)
    for name in ("transmission", "dphi", "darkfield"):
        got_p, want_p = getattr(proj, name), getattr(want_proj, name)
        for r, c in (DEAD, HOT, SATURATED):  # the neighbours' median: near the clean value
            np.testing.assert_allclose(got_p[:, r, c], want_p[:, r, c], rtol=0, atol=0.05)


def test_a_non_finite_value_in_a_float_frame_is_named_by_frame_and_pixel_and_mended() -> None:
    rec = shared_recorded()
    frames = rec.frames.astype(np.float32)
    victim = int(np.flatnonzero(rec.rows["image_key"] == ImageKey.PROJECTION)[7])
    frames[victim, 5, 60] = np.nan
    proj = retrieved(rec, frames)
    bad = proj.bad_pixels
    assert bad is not None
    assert bad.pixels() == [(5, 60)]
    assert bad.notes == (f"frame {victim}: 1 pixel not finite, first at (5, 60)",)
    assert np.isfinite(proj.dphi).all()
    assert bad.describe() == "masked 1 bad pixel: 1 non-finite"


def test_the_streaming_fit_store_masks_the_same_pixels_and_gives_the_offline_volume() -> None:
    rec = shared_recorded()
    frames = injected(rec.frames)
    recon = StreamingReconstructor(live_rows=())
    recon.start(
        ScanStart(
            scan_uid=rec.scan_uid,
            instrument=rec.instrument,
            plan=rec.plan,
            dtype="uint16",
            shape=(32, 96),
        )
    )
    for i in range(len(rec.rows)):
        header = frame_header(
            rec.scan_uid, rec.rows[i], frame_number=i, dtype="uint16", shape=(32, 96)
        )
        recon.add_frame(header, frames[i])
    result = recon.end(ScanEnd(scan_uid=rec.scan_uid, frames_sent=len(rec.rows)))
    assert result.projections is not None
    assert result.volumes is not None
    bad = result.projections.bad_pixels
    assert bad is not None
    assert bad.pixels() == [DEAD, HOT, SATURATED]
    offline = reconstruct_volumes(retrieved(rec, frames), rec.instrument.geometry)
    scale = float(np.abs(offline.delta).max())
    np.testing.assert_allclose(result.volumes.delta, offline.delta, rtol=0, atol=1e-4 * scale)


def test_find_bad_pixels_orders_the_kinds_and_needs_no_dark() -> None:
    dark = np.full((6, 8), 100.0)
    signal = np.full((6, 8), 20000.0)
    signal[1, 1] = 30.0  # dead
    dark[2, 2] = 100.0 + 11 * 1.0  # 11 sigma (the 1-count floor): hot
    signal[3, 3] = np.nan  # not finite
    saturated = np.zeros((6, 8), bool)
    saturated[4, 4] = True
    saturated[1, 1] = True  # saturated wins over dead
    bad = find_bad_pixels(dark, signal, saturated=saturated)
    assert (bad.dead.sum(), bad.hot.sum(), bad.saturated.sum(), bad.nonfinite.sum()) == (0, 1, 2, 1)
    assert bad.pixels() == [(1, 1), (2, 2), (3, 3), (4, 4)]
    no_dark = find_bad_pixels(None, signal)
    assert no_dark.pixels() == [(1, 1), (3, 3)]
    assert isinstance(no_dark, BadPixels)


def test_repair_takes_the_median_of_good_neighbours_and_fills_clusters_from_their_edges() -> None:
    image = np.arange(30, dtype=np.float32).reshape(1, 5, 6)  # a plane: medians are exact
    mask = np.zeros((5, 6), bool)
    mask[2, 3] = True
    mask[1:4, 1] = True  # a short column
    mended = image.copy()
    repair(mended, mask)
    assert mended[0, 2, 3] == image[0, 2, 3]
    assert mended[0, 2, 1] == image[0, 2, 1]
    block = np.zeros((9, 9), bool)
    block[2:7, 2:7] = True
    stack = np.ones((3, 9, 9), np.float32)
    stack[:, block] = np.nan
    repair(stack, block)
    assert np.all(stack == 1.0)
    with pytest.raises(ValueError, match="mask"):
        repair(stack, np.zeros((8, 9), bool))
