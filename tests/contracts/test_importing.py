"""The mapping of Data Exchange and NXtomo files onto the raw scan file (contracts.importing).

Files here are a few frames of noise written with plain h5py; the round trip of a simulated
scan through `talbot import` and the reconstruction is in tests/beamline/test_import_cli.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import numpy as np
import pytest

from contracts.frames import ImageKey
from contracts.importing import (
    DX_PIXEL,
    ImportOptions,
    ScanMapping,
    SourceError,
    import_scan,
    map_file,
)
from contracts.profile import builtin_profile
from contracts.scanfile import read_scan

INSTRUMENT = builtin_profile("tiny").instrument
P2 = INSTRUMENT.geometry.g2_pitch_m
ANGLES, STEPS, ROWS, COLS = 4, 3, 4, 8


def _write(path: Path, datasets: dict[str, object], attrs: dict[str, dict[str, object]]) -> Path:
    with h5py.File(path, "w") as f:
        for name, value in datasets.items():
            if value is not None:
                f[name] = value
        for name, values in attrs.items():
            f[name].attrs.update(values)
    return path


def dx_file(
    path: Path,
    whites: int = 2,
    attrs: dict[str, dict[str, object]] | None = None,
    **replace: object,
) -> Path:
    """A Data Exchange file of noise: 4 angles x 3 steps, ``whites`` reference series."""
    rng = np.random.default_rng(0)
    datasets: dict[str, object] = {
        "/exchange/data": rng.integers(100, 200, (ANGLES, STEPS, ROWS, COLS), dtype=np.uint16),
        "/exchange/data_white": rng.integers(100, 200, (whites, STEPS, ROWS, COLS), np.uint16),
        "/exchange/data_dark": np.zeros((2, ROWS, COLS), np.uint16),
        "/exchange/theta": np.array([0.0, 45.0, 90.0, 135.0]),
    }
    datasets.update({"/" + k.replace("__", "/"): v for k, v in replace.items()})
    return _write(path, datasets, attrs or {})


def nxtomo_file(path: Path, key: list[int], angle: list[float], entry: str = "entry") -> Path:
    n = len(key)
    data = np.arange(n * ROWS * COLS, dtype=np.uint16).reshape(n, ROWS, COLS)
    return _write(
        path,
        {
            f"/{entry}/instrument/detector/data": data,
            f"/{entry}/instrument/detector/image_key": np.array(key, np.uint8),
            f"/{entry}/sample/rotation_angle": np.array(angle, float),
        },
        {},
    )


def _map(path: Path, **options: object) -> ScanMapping:
    with h5py.File(path, "r") as f:
        return map_file(f, P2, ImportOptions(**options))  # type: ignore[arg-type]


def test_data_exchange_frames_come_in_talbot_order_with_equidistant_steps(
    tmp_path: Path,
) -> None:
    m = _map(dx_file(tmp_path / "dx.h5"), periods=2)
    rows = m.rows
    keys = rows["image_key"].tolist()
    assert keys == [2] * 2 + [1] * 3 + [0] * 12 + [1] * 3
    assert rows["series_index"][keys.index(1)] == 0
    assert rows["series_index"][-1] == 1
    assert rows["angle_index"][5::3][:4].tolist() == [0, 1, 2, 3]
    np.testing.assert_allclose(rows["g2_position_m"][5:8], np.arange(3) * 2 * P2 / 3)
    np.testing.assert_allclose(rows["rotation_deg"][5:17:3], [0, 45, 90, 135])
    assert np.all(np.diff(rows["timestamp_s"]) > 0)
    plan = m.plan
    assert (plan.angles, plan.steps, plan.periods, plan.darks) == (4, 3, 2, 2)
    assert (plan.reference_every, plan.angular_range_deg) == (4, 180.0)
    sources = m.sources
    assert (sources[5].dataset, sources[5].index) == ("/exchange/data", (0, 0))
    assert (sources[-1].dataset, sources[-1].index) == ("/exchange/data_white", (1, 2))


def test_theta_in_radians_and_periods_seen_in_the_recorded_positions(tmp_path: Path) -> None:
    positions = np.arange(STEPS) * 2 * P2 / STEPS  # 3 steps over 2 periods, recorded in um
    src = dx_file(
        tmp_path / "dx.h5",
        attrs={"/exchange/theta": {"units": "rad"}, "/exchange/g2_position": {"units": "um"}},
        exchange__theta=np.deg2rad([0.0, 45.0, 90.0, 135.0]),
        exchange__g2_position=positions * 1e6,
    )
    m = _map(src)
    np.testing.assert_allclose(m.rows["rotation_deg"][5:17:3], [0, 45, 90, 135])
    np.testing.assert_allclose(m.rows["g2_position_m"][-3:], positions)
    assert m.plan.periods == 2


def test_one_white_series_stands_for_the_start_and_the_end(tmp_path: Path) -> None:
    m = _map(dx_file(tmp_path / "dx.h5", whites=1))
    rows = m.rows
    assert rows["series_index"][rows["image_key"] == ImageKey.FLAT].tolist() == [0] * 3 + [1] * 3
    assert m.plan.reference_every == ANGLES
    assert "written at the start and again at the end" in m.notes[0]


def test_white_series_spread_evenly_or_as_reference_every_says(tmp_path: Path) -> None:
    src = dx_file(tmp_path / "dx.h5", whites=3)
    assert _map(src).plan.reference_every == 2
    assert _map(src, reference_every=3).plan.reference_every == 3
    with pytest.raises(SourceError, match="/exchange/data_white: 4 reference series do not"):
        _map(dx_file(tmp_path / "four.h5", whites=4))
    with pytest.raises(SourceError, match="--reference-every 1"):
        _map(src, reference_every=1)


def test_geometry_the_file_records_overrides_the_profile(tmp_path: Path) -> None:
    src = dx_file(
        tmp_path / "dx.h5",
        attrs={DX_PIXEL: {"units": "um"}},
        **{
            "measurement__instrument__monochromator__energy": 12.6,
            DX_PIXEL.strip("/").replace("/", "__"): 0.6,
        },
    )
    result = import_scan(src, tmp_path / "raw.h5", INSTRUMENT, ImportOptions())
    geometry = read_scan(result.out).header.instrument.geometry
    assert geometry.energy_kev == 12.6
    assert geometry.pixel_size_m == pytest.approx(0.6e-6)
    assert geometry.distance_m == INSTRUMENT.geometry.distance_m  # the instrument's, kept
    assert read_scan(result.out).header.shape == (ROWS, COLS)
    bad = dx_file(tmp_path / "bad.h5", **{DX_PIXEL.strip("/").replace("/", "__"): 0.1})
    with pytest.raises(SourceError, match=f"^{DX_PIXEL}: .*pixel_size_m"):
        import_scan(bad, tmp_path / "bad-raw.h5", INSTRUMENT, ImportOptions())
    assert not (tmp_path / "bad-raw.h5").exists()


def test_pixels_of_another_type_become_float(tmp_path: Path) -> None:
    src = dx_file(tmp_path / "dx.h5", exchange__data=np.ones((ANGLES, STEPS, ROWS, COLS), np.int16))
    assert _map(src).dtype == "float32"


def test_too_few_steps_for_a_scan_plan_are_refused(tmp_path: Path) -> None:
    src = dx_file(
        tmp_path / "dx.h5",
        exchange__data=np.ones((ANGLES, 2, ROWS, COLS), np.uint16),
        exchange__data_white=np.ones((2, 2, ROWS, COLS), np.uint16),
    )
    with pytest.raises(SourceError, match=r"^/exchange/data: no Talbot scan plan fits it: steps"):
        _map(src)


def test_nxtomo_series_are_runs_of_one_key_and_angle_darks_go_first(tmp_path: Path) -> None:
    # flats, two projections, flats, then darks and an invalid frame at the end
    key = [1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2, 2, 3]
    angle = [0, 0, 0, 0, 0, 0, 90, 90, 90, 90, 90, 90, 0, 0, 0]
    m = _map(nxtomo_file(tmp_path / "scan.nx", key, angle, entry="entry0000"))
    rows = m.rows
    assert rows["image_key"].tolist() == [2, 2, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1]
    assert [s.index[0] for s in m.sources] == [12, 13, *range(12)]
    assert rows["angle_index"][5:11].tolist() == [0, 0, 0, 1, 1, 1]
    assert rows["step_index"][2:5].tolist() == [0, 1, 2]
    np.testing.assert_allclose(rows["timestamp_s"][2:5] / rows["timestamp_s"][3], [0, 1, 2])
    assert (m.plan.angles, m.plan.steps, m.plan.reference_every) == (2, 3, 2)
    assert m.notes == ("1 invalid frames (image_key 3) left out",)


def test_nxtomo_references_out_of_talbot_order_are_refused(tmp_path: Path) -> None:
    key = [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]  # two flat series at 0 and 10 deg: two in a row
    angle = [0, 0, 0, 10, 10, 10, 20, 20, 20, 30, 30, 30]
    path = "/entry/instrument/detector/image_key: reference series after [0, 0]"
    with pytest.raises(SourceError, match=re.escape(path)):
        _map(nxtomo_file(tmp_path / "scan.nx", key, angle))


def test_nxtomo_calibration_series_must_be_long_enough(tmp_path: Path) -> None:
    key = [1] * 4 + [0] * 3 + [0] * 3 + [1] * 3
    angle = [0.0] * 7 + [9.0] * 6
    with pytest.raises(SourceError, match="calibration_steps=4 must be at least"):
        _map(nxtomo_file(tmp_path / "scan.nx", key, angle))
