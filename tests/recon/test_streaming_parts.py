"""The streaming reconstructor's parts on their own: series assembly, fit store, live view."""

from __future__ import annotations

import numpy as np

from contracts.frames import ImageKey
from contracts.messages import FrameHeader, frame_header
from recon.fitpool import FitPool
from recon.fitstore import FitStore
from recon.liveview import LiveView
from recon.retrieval import StepFit
from recon.scanresult import StreamStats
from recon.series import Series, SeriesAssembly
from tests.recon.scanfiles import Recorded, shared_recorded

SHAPE = (32, 96)


def header_of(rec: Recorded, n: int, **update: object) -> FrameHeader:
    h = frame_header(rec.scan_uid, rec.rows[n], frame_number=n, dtype="uint16", shape=SHAPE)
    return h.model_copy(update=update) if update else h


def first_series(rec: Recorded, key: ImageKey) -> list[int]:
    """Frame numbers of the first series of that image key, attempt 0, in step order."""
    r = rec.rows
    sel = (r["image_key"] == key) & (r["attempt"] == 0)
    index = "angle_index" if key == ImageKey.PROJECTION else "series_index"
    first = r[index][np.flatnonzero(sel)[0]]
    return [int(i) for i in np.flatnonzero(sel & (r[index] == first))]


def assembled(rec: Recorded, frames: list[int], stats: StreamStats) -> Series:
    series = SeriesAssembly(rec.plan, 8, stats)
    done = None
    for i in frames:
        h = header_of(rec, i)
        key = series.identify(h)
        assert key is not None
        done = series.put(key, h, rec.frames[i])
    assert done is not None
    return done


def test_a_newer_attempt_discards_the_open_older_series_and_older_frames_are_superseded() -> None:
    rec = shared_recorded()
    stats = StreamStats()
    series = SeriesAssembly(rec.plan.steps, 8, stats)
    first, second = first_series(rec, ImageKey.PROJECTION)[:2]
    h = header_of(rec, first)
    key = series.identify(h)
    assert key is not None
    assert series.put(key, h, rec.frames[first]) is None
    retake = header_of(rec, second, attempt=1, frame_number=1000)
    assert series.identify(retake) == (key[0], key[1], 1)
    assert series.open == {}  # the open attempt-0 series went with its one frame
    assert stats.superseded == 1
    assert series.identify(header_of(rec, second, frame_number=1001)) is None  # attempt 0 again
    assert stats.superseded == 2


def test_the_calibration_series_has_calibration_steps_and_every_other_series_steps() -> None:
    rec = shared_recorded()
    plan = rec.plan
    assert (plan.steps, plan.calibration_steps) == (5, 48)  # the tiny profile's
    stats = StreamStats()
    series = SeriesAssembly(plan, 8, stats)
    calibration = first_series(rec, ImageKey.FLAT)
    assert rec.rows["series_index"][calibration[0]] == 0
    assert len(calibration) == 48
    for i in calibration[:-1]:
        h = header_of(rec, i)
        key = series.identify(h)
        assert key is not None
        assert series.put(key, h, rec.frames[i]) is None  # open until its 48th step
    last = header_of(rec, calibration[-1])
    assert last.step_index == 47
    key = series.identify(last)
    assert key is not None
    assert series.valid_step(47, key)
    done = series.put(key, last, rec.frames[calibration[-1]])
    assert done is not None
    assert done.filled.shape == (48,)
    assert done.filled.all()
    assert stats.bad_frames == 0
    # no step 48 in the calibration series, no step 5 in any other series
    assert series.identify(header_of(rec, calibration[0], step_index=48)) is None
    assert series.refused == "step_index 48 is outside 0..47 of its series"
    projection = first_series(rec, ImageKey.PROJECTION)[0]
    assert series.identify(header_of(rec, projection, step_index=5)) is None
    assert series.refused == "step_index 5 is outside 0..4 of its series"
    later = np.flatnonzero(
        (rec.rows["image_key"] == ImageKey.FLAT) & (rec.rows["series_index"] == 1)
    )
    assert series.identify(header_of(rec, int(later[0]), step_index=5)) is None
    # nor a projection beyond the plan's angles, nor a reference series beyond its references
    assert series.identify(header_of(rec, projection, angle_index=rec.plan.angles)) is None
    assert series.refused.startswith(f"angle_index {rec.plan.angles} is beyond")
    assert series.identify(header_of(rec, int(later[0]), series_index=99)) is None
    assert series.refused.startswith("series_index 99 is beyond")
    assert stats.bad_frames == 0  # refused, not counted here: the reconstructor counts them
    assert series.open == {}
    assert series.identify(header_of(rec, projection, step_index=4)) is not None
    projection_key = (int(ImageKey.PROJECTION), 0, 0)
    assert not series.valid_step(5, projection_key)
    assert series.steps_of(projection_key) == 5
    # one number of steps for every series: the calibration series' step 5 is refused
    plain = SeriesAssembly(5, 8, StreamStats())
    assert plain.identify(header_of(rec, calibration[5])) is None
    assert plain.refused == "step_index 5 is outside 0..4 of its series"


def test_the_dark_is_the_mean_of_the_latest_attempts_darks() -> None:
    stats = StreamStats()
    series = SeriesAssembly(5, 8, stats)
    ones, threes, tens = (np.full(SHAPE, v, np.uint16) for v in (1, 3, 10))
    assert series.add_dark(0, ones).mean() == 1.0
    np.testing.assert_array_equal(series.add_dark(0, threes), np.full(SHAPE, 2.0, np.float32))
    dark = series.add_dark(1, tens)
    assert dark.dtype == np.float32
    assert dark.mean() == 10.0


def test_the_oldest_open_series_is_handed_back_when_the_assembly_is_full() -> None:
    rec = shared_recorded()
    series = SeriesAssembly(rec.plan.steps, 2, StreamStats())
    r = rec.rows
    starts = np.flatnonzero((r["image_key"] == 0) & (r["step_index"] == 0) & (r["attempt"] == 0))
    for i in starts[:2]:
        h = header_of(rec, int(i))
        key = series.identify(h)
        assert key is not None
        series.put(key, h, rec.frames[i])
    assert series.full
    oldest = series.pop_oldest()
    assert oldest.first_frame == starts[0]
    assert [s.first_frame for s in series.by_arrival()] == [starts[1]]


def test_a_fit_of_an_older_attempt_does_not_replace_the_stored_one_and_returns_its_buffer() -> None:
    rec = shared_recorded()
    stats = StreamStats()
    pool = FitPool()
    pool.use_shape(SHAPE)
    store = FitStore(pool, SHAPE, rec.instrument.geometry.g2_pitch_m, stats)
    frames = first_series(rec, ImageKey.PROJECTION)
    newer = store.fit(assembled(rec, frames, stats))
    older = store.fit(assembled(rec, frames, stats))
    assert newer is not None
    assert older is not None
    newer.attempt = 1
    assert store.keep(ImageKey.PROJECTION, newer)
    version = store.version
    assert not store.keep(ImageKey.PROJECTION, older)
    assert store.projs[newer.index] is newer
    assert (stats.projections, stats.superseded, store.version) == (1, len(frames), version)
    assert pool.take() is older.fit


def test_a_fit_corrected_to_a_later_dark_equals_a_fit_taken_with_that_dark() -> None:
    rec = shared_recorded()
    stats = StreamStats()
    pool = FitPool()
    pool.use_shape(SHAPE)
    frames = first_series(rec, ImageKey.FLAT)
    series = assembled(rec, frames, stats)
    dark = np.random.default_rng(0).uniform(90, 110, SHAPE).astype(np.float32)
    early = FitStore(pool, SHAPE, rec.instrument.geometry.g2_pitch_m, stats)
    before = early.fit(series)  # no dark yet
    early.set_dark(dark)
    late = FitStore(pool, SHAPE, rec.instrument.geometry.g2_pitch_m, stats)
    late.set_dark(dark)
    want = late.fit(series)
    assert before is not None
    assert want is not None
    got = early.corrected(before)
    np.testing.assert_allclose(got.a0, want.fit.a0, rtol=1e-5)
    np.testing.assert_allclose(got.c1, want.fit.c1, rtol=0, atol=1e-4 * np.abs(want.fit.c1).max())


def test_a_withdrawn_live_contribution_leaves_the_slices_as_before() -> None:
    rec = shared_recorded()
    stats = StreamStats()
    pool = FitPool()
    pool.use_shape(SHAPE)
    store = FitStore(pool, SHAPE, rec.instrument.geometry.g2_pitch_m, stats)
    ref = store.fit(assembled(rec, first_series(rec, ImageKey.FLAT), stats))
    proj = store.fit(assembled(rec, first_series(rec, ImageKey.PROJECTION), stats))
    assert ref is not None
    assert proj is not None
    view = LiveView(
        scan_uid=rec.scan_uid,
        geometry=rec.instrument.geometry,
        angles=rec.plan.angles,
        cols=SHAPE[1],
        rows=(0, SHAPE[0]),
        wanted=(16, 40),  # 40 is not on the detector
        max_px=48,
        axis_offset_px=0.0,
        publisher=None,
        interval_s=0.0,
        stats=stats,
    )
    assert (view.rows, view.bin, view.slices.shape) == ((16,), 2, (3, 1, 48, 48))
    rows = view.local_rows
    sample = StepFit(proj.fit.a0[rows], proj.fit.c1[rows])
    view.add(proj.index, 10.0, sample, StepFit(ref.fit.a0[rows], ref.fit.c1[rows]), None)
    peak = np.abs(view.slices).max(axis=(1, 2, 3))
    assert np.all(peak > 0)
    assert stats.live_updates == 1
    view.withdraw(proj.index)
    view.withdraw(proj.index)  # withdrawn once only
    for channel, top in zip(view.slices, peak, strict=True):
        np.testing.assert_allclose(channel, 0.0, atol=1e-5 * top)


def test_the_fit_store_chooses_the_fit_from_the_calibration_series() -> None:
    """The calibration series (reference 0, 48 steps) gives the curve's shape; the fit is then
    chosen from the first projection's steps (the gratings' curve at 5 steps: shape-aware).
    Asked for the shape-aware fit without a calibration series, a service goes on with the
    first-harmonic fit and says why."""
    rec = shared_recorded()
    pitch = rec.instrument.geometry.g2_pitch_m

    def pool() -> FitPool:
        p = FitPool()
        p.use_shape(SHAPE)
        return p

    calibration = assembled(rec, first_series(rec, ImageKey.FLAT), StreamStats())
    projection = assembled(rec, first_series(rec, ImageKey.PROJECTION), StreamStats())
    for mode, expected in (("auto", "shape-aware"), ("shape-aware", "shape-aware")):
        store = FitStore(pool(), SHAPE, pitch, StreamStats(), steps=5, fit_mode=mode)
        assert store.choice().method == "first-harmonic"  # nothing fitted yet
        for s, image_key in ((calibration, ImageKey.FLAT), (projection, ImageKey.PROJECTION)):
            fitted = store.fit(s)
            assert fitted is not None
            store.keep(image_key, fitted)
        assert store.curve is not None
        assert store.curve.steps == 48
        assert store.choice().method == expected
    bare = FitStore(pool(), SHAPE, pitch, StreamStats(), steps=5, fit_mode="shape-aware")
    fitted = bare.fit(projection)
    assert fitted is not None
    bare.keep(ImageKey.PROJECTION, fitted)
    choice = bare.choice()
    assert choice.method == "first-harmonic"
    assert choice.warnings == (
        "fit 'shape-aware' asked for, but the scan has no calibration series",
    )
