"""Message-level tests of the phase-stepping CT plan (no IOC)."""

from __future__ import annotations

from typing import Any

import pytest
from bluesky.utils import Msg

from beamline.config import Preset, preset
from plans import acquisition_order, frames_planned, phase_stepping_ct
from tests.plans.conftest import drive


@pytest.fixture(scope="module")
def tiny() -> Preset:
    return preset("tiny")


def _frames(msgs: list[Msg]) -> list[tuple[str, Any, Any, Any]]:
    """(stream, frame type, angle or series index, step) of every frame, in order."""
    tags: dict[str, Any] = {}
    out = []
    for m in msgs:
        name = getattr(m.obj, "name", "")
        if m.command == "set" and name.startswith("ifm_tags_"):
            tags[name.removeprefix("ifm_tags_")] = m.args[0]
        if m.command == "create":
            index = tags["angle_index"] if tags["frame_type"] == "projection" else None
            if tags["frame_type"] == "reference":
                index = tags["series_index"]
            out.append((m.kwargs["name"], tags["frame_type"], index, tags["step_index"]))
    return out


def test_acquisition_order_matches_simulator() -> None:
    assert acquisition_order(4, 2) == [
        ("reference", 0), ("projection", 0), ("projection", 1), ("reference", 1),
        ("projection", 2), ("projection", 3), ("reference", 2),
    ]  # fmt: skip
    assert acquisition_order(3, 2)[-2:] == [("projection", 2), ("reference", 2)]
    assert acquisition_order(1, 1) == [("reference", 0), ("projection", 0), ("reference", 1)]


def test_ct_order_of_darks_references_projections_and_steps(
    ifm: Any, det: Any, tiny: Preset
) -> None:
    plan = phase_stepping_ct(
        ifm, [det], preset=tiny, angles=4, reference_every=2, darks=2, steps=3, start_um=10.0,
        stepping="software",
    )  # fmt: skip
    msgs = drive(plan, {"ifm_shutter_state": "Closed", "ifm_sample_x_user_setpoint": 0.25})
    frames = _frames(msgs)
    expected = [("dark", "dark", None, -1)] * 2
    for kind, index in acquisition_order(4, 2):
        stream = "primary" if kind == "projection" else "reference"
        expected += [(stream, kind, index, k) for k in range(3)]
    assert frames == expected
    schedule = tiny.schedule.model_copy(
        update={"angles": 4, "reference_every": 2, "darks": 2, "steps": 3}
    )
    assert len(frames) == frames_planned(schedule)
    # one checkpoint per series (plus none elsewhere): darks + 7 series
    assert [m.command for m in msgs].count("checkpoint") == 1 + 7
    # rotation: one move per projection series, inside the series (after its checkpoint)
    rot = [m.args[0] for m in msgs if m.command == "set" and m.obj is ifm.rotation]
    assert rot == pytest.approx([0.0, 45.0, 90.0, 135.0])  # 4 angles over 180 deg
    # the shutter closes for the darks, opens after them and is restored at the end
    shutter = [m.args[0] for m in msgs if m.command == "set" and m.obj is ifm.shutter]
    assert shutter == ["close", "close", "open", "close"]
    # after close_run (finalize): sample back to where it was, then the shutter
    tail = [
        (m.obj.name, m.args[0])
        for m in msgs[msgs.index(next(m for m in msgs if m.command == "close_run")) :]
        if m.command == "set"
    ]
    assert tail == [("ifm_sample", 0.25), ("ifm_shutter", "close")]


def test_ct_start_metadata_describes_the_scan(ifm: Any, det: Any, tiny: Preset) -> None:
    msgs = list(
        phase_stepping_ct(
            ifm, [det], preset=tiny, angles=6, reference_every=3, exposure_s=0.02,
            start_um=12.0, md={"operator": "test"}, stepping="software",
        )
    )  # fmt: skip
    md = next(m for m in msgs if m.command == "open_run").kwargs
    assert md["plan_name"] == "phase_stepping_ct"
    assert md["detectors"] == ["det"]
    assert md["motors"] == ["ifm_g2_x", "ifm_rotation", "ifm_sample_x"]
    assert md["hints"] == {"dimensions": [(["ifm_rotation"], "primary")]}
    assert md["plan_args"]["exposure_s"] == 0.02
    assert md["operator"] == "test"
    assert Preset.model_validate_json(md["preset_json"]) == tiny
    assert md["schedule"]["angles"] == 6
    assert md["schedule"]["reference_every"] == 3
    assert md["frames_total"] == tiny.schedule.darks + (1 + 6 + 2) * tiny.schedule.steps
    assert md["period_um"] == pytest.approx(1.0)  # tiny: p2 = 1 um
    assert md["angles_deg"] == pytest.approx([0, 30, 60, 90, 120, 150])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 2}, "steps"),
        ({"angles": 0}, "angles"),
        ({"reference_every": 0}, "reference_every"),
        ({"angles": 4, "reference_every": 5}, "reference_every"),
        ({"exposure_s": 0.0}, "exposure_s"),
        ({"exposure_s": -1.0}, "exposure_s"),
        ({"darks": -1}, "darks"),
        ({"periods": 5}, "coprime"),
        ({"angular_range_deg": 400.0}, "angular_range_deg"),
        ({"angular_range_deg": 0.0}, "angular_range_deg"),
        ({"grating": "g0"}, "g0_pitch_m"),
        ({"start_um": float("nan")}, "start_um"),
        ({"backlash_um": -0.1}, "backlash_um"),
        ({"start_deg": float("inf")}, "start_deg"),
        ({"md": ["not", "a", "dict"]}, "md"),
        ({"stepping": "fly"}, "stepping"),
        ({}, "stepping='hardware' needs exactly one area detector"),
    ],
)
def test_ct_validates_before_any_message(
    ifm: Any, det: Any, tiny: Preset, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        phase_stepping_ct(ifm, [det], preset=tiny, **kwargs)


def test_ct_needs_a_detector(ifm: Any, tiny: Preset) -> None:
    with pytest.raises(ValueError, match="detectors"):
        phase_stepping_ct(ifm, [], preset=tiny)


def test_ct_steps_in_hardware_by_default_with_one_acquisition_per_series(
    ifm: Any, area_det: Any, tiny: Preset
) -> None:
    plan = phase_stepping_ct(
        ifm, [area_det], preset=tiny, angles=4, reference_every=2, darks=2, steps=3,
        start_um=10.0,
    )  # fmt: skip
    msgs = drive(plan, {"ifm_shutter_state": "Closed", "ifm_sample_x_user_setpoint": 0.25})
    md = next(m for m in msgs if m.command == "open_run").kwargs
    assert md["stepping"] == "hardware"
    assert md["plan_args"]["stepping"] == "hardware"
    commands = [m.command for m in msgs]
    assert commands.count("checkpoint") == 1 + 7  # darks + 7 series
    acquisitions = [m for m in msgs if m.command == "trigger" and m.obj.name == "det_sequence"]
    assert len(acquisitions) == 7
    # darks stay software-triggered (one trigger per frame); the series read one event a frame
    streams = [m.kwargs["name"] for m in msgs if m.command == "create"]
    expected = ["dark"] * 2
    for kind, _ in acquisition_order(4, 2):
        expected += ["primary" if kind == "projection" else "reference"] * 3
    assert streams == expected
    # one object reads every hardware-stepped frame of the scan (one descriptor per stream)
    readers = {id(m.obj) for m in msgs if m.command == "read" and m.obj.name == "det_frames"}
    assert len(readers) == 1
    # each series is handed to the IOC at its angle; a projection followed by a projection
    # queues that one while it is acquired (the IOC starts it when it ends), no other series
    handed = [m.args[0] for m in msgs if m.command == "set" and m.obj.name == "det_sequence"]
    assert [a.key for a in handed] == acquisition_order(4, 2)
    angles = [a.rotation_deg for a in handed if a.frame_type == "projection"]
    assert angles == pytest.approx([0.0, 45.0, 90.0, 135.0])
    queued = [m.args[0] for m in msgs if m.command == "set" and m.obj.name == "det_sequence_next"]
    assert [a.key for a in queued] == [("projection", 1), ("projection", 3)]
    assert [a.rotation_deg for a in queued] == pytest.approx([45.0, 135.0])


def test_ct_steps_g0_in_software_by_default(ifm: Any, area_det: Any, tiny: Preset) -> None:
    geometry = tiny.geometry.model_copy(update={"g0_pitch_m": 2e-6})
    talbot_lau = tiny.model_copy(update={"geometry": geometry})
    msgs = list(
        phase_stepping_ct(
            ifm, [area_det], preset=talbot_lau, angles=2, reference_every=2, darks=0, steps=3,
            start_um=0.0, grating="g0",
        )
    )  # fmt: skip
    md = next(m for m in msgs if m.command == "open_run").kwargs
    assert md["stepping"] == "software"
    assert not any(m.command == "trigger" and m.obj.name == "det_sequence" for m in msgs)
