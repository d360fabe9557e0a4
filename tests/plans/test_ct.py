"""Message-level tests of the phase-stepping CT plan (no IOC)."""

from __future__ import annotations

from typing import Any

import pytest
from bluesky.utils import Msg

from contracts.profile import Profile, builtin_profile
from contracts.scanplan import ScanPlan, acquisition_order
from plans import phase_stepping_ct
from tests.plans.conftest import drive


@pytest.fixture(scope="module")
def tiny() -> Profile:
    return builtin_profile("tiny")


def ct(ifm: Any, dets: list[Any], profile: Profile, **kwargs: Any) -> Any:
    """``phase_stepping_ct`` with the profile's instrument and plan defaults."""
    return phase_stepping_ct(ifm, dets, instrument=profile.instrument, plan=profile.plan, **kwargs)


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


def test_ct_order_of_darks_references_projections_and_steps(
    ifm: Any, det: Any, tiny: Profile
) -> None:
    plan = ct(
        ifm, [det], tiny, angles=4, reference_every=2, darks=2, steps=3, start_um=10.0,
        stepping="software",
    )  # fmt: skip
    msgs = drive(plan, {"ifm_shutter_state": "Closed", "ifm_sample_x_user_setpoint": 0.25})
    frames = _frames(msgs)
    schedule = tiny.scan_plan().model_copy(
        update={"angles": 4, "reference_every": 2, "darks": 2, "steps": 3}
    )
    assert schedule.calibration_steps == 48  # tiny's: reference series 0 takes 48 steps
    expected: list[tuple[str, str, int | None, int]] = [("dark", "dark", None, -1)] * 2
    for kind, index in acquisition_order(4, 2):
        stream = "primary" if kind == "projection" else "reference"
        steps = 48 if (kind, index) == ("reference", 0) else 3
        expected += [(stream, kind, index, k) for k in range(steps)]
    assert frames == expected
    assert len(frames) == schedule.frames_planned() == 2 + 48 + 6 * 3
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


def test_ct_start_metadata_describes_the_scan(ifm: Any, det: Any, tiny: Profile) -> None:
    msgs = list(
        ct(
            ifm, [det], tiny, angles=6, reference_every=3, exposure_s=0.02,
            start_um=12.0, md={"operator": "test"}, stepping="software",
        )
    )  # fmt: skip
    md = next(m for m in msgs if m.command == "open_run").kwargs
    assert md["plan_name"] == "phase_stepping_ct"
    assert md["detectors"] == ["det"]
    assert md["motors"] == ["ifm_g2_x", "ifm_rotation", "ifm_sample_x"]
    assert md["hints"] == {"dimensions": [(["ifm_rotation"], "primary")]}
    assert md["operator"] == "test"
    plan = ScanPlan.model_validate(md["scan_plan"])
    assert plan == tiny.scan_plan().model_copy(
        update={"angles": 6, "reference_every": 3, "exposure_s": 0.02, "stepping": "software"}
    )
    assert md["plan_args"]["scan_plan"] == md["scan_plan"]
    assert md["instrument"] == tiny.instrument.model_dump(mode="json")
    assert "phantom" not in str(md)  # the simulation never goes into the documents
    assert md["scan_plan"]["calibration_steps"] == 48
    assert md["frames_total"] == plan.darks + 48 + (6 + 2) * plan.steps
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
        ({"calibration_steps": 5}, "calibration_steps: calibration_steps=5 must be at least"),
        ({"periods": 2}, "calibration_steps: calibration_steps=48 and periods=2"),  # tiny's 48
        ({"periods": 3}, "calibration_steps: calibration_steps=48 and periods=3"),  # 48 = 16 x 3
        ({"calibration_steps": 300}, "calibration_steps: Input should be less than or equal"),
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
    ifm: Any, det: Any, tiny: Profile, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        ct(ifm, [det], tiny, **kwargs)


def test_ct_needs_a_detector(ifm: Any, tiny: Profile) -> None:
    with pytest.raises(ValueError, match="detectors"):
        ct(ifm, [], tiny)


def test_ct_steps_in_hardware_by_default_with_one_acquisition_per_series(
    ifm: Any, area_det: Any, tiny: Profile
) -> None:
    plan = ct(ifm, [area_det], tiny, angles=4, reference_every=2, darks=2, steps=3, start_um=10.0)
    msgs = drive(plan, {"ifm_shutter_state": "Closed", "ifm_sample_x_user_setpoint": 0.25})
    md = next(m for m in msgs if m.command == "open_run").kwargs
    assert md["scan_plan"]["stepping"] == "hardware"
    commands = [m.command for m in msgs]
    assert commands.count("checkpoint") == 1 + 7  # darks + 7 series
    acquisitions = [m for m in msgs if m.command == "trigger" and m.obj.name == "det_sequence"]
    assert len(acquisitions) == 7
    # darks stay software-triggered (one trigger per frame); the series read one event a frame
    streams = [m.kwargs["name"] for m in msgs if m.command == "create"]
    expected = ["dark"] * 2
    for kind, index in acquisition_order(4, 2):
        steps = 48 if (kind, index) == ("reference", 0) else 3  # the calibration series: 48
        expected += ["primary" if kind == "projection" else "reference"] * steps
    assert streams == expected
    # one object reads every hardware-stepped frame of the scan (one descriptor per stream)
    readers = {id(m.obj) for m in msgs if m.command == "read" and m.obj.name == "det_frames"}
    assert len(readers) == 1
    # each series is handed to the IOC at its angle; a projection followed by a projection
    # queues that one while it is acquired (the IOC starts it when it ends), no other series
    handed = [m.args[0] for m in msgs if m.command == "set" and m.obj.name == "det_sequence"]
    assert [a.key for a in handed] == acquisition_order(4, 2)
    # the calibration series in one acquisition of 48 frames, over the same period (1 um)
    assert handed[0].positions == pytest.approx([10.0 + k / 48 for k in range(48)])
    assert [len(a.positions) for a in handed[1:]] == [3] * 6
    angles = [a.rotation_deg for a in handed if a.frame_type == "projection"]
    assert angles == pytest.approx([0.0, 45.0, 90.0, 135.0])
    queued = [m.args[0] for m in msgs if m.command == "set" and m.obj.name == "det_sequence_next"]
    assert [a.key for a in queued] == [("projection", 1), ("projection", 3)]
    assert [a.rotation_deg for a in queued] == pytest.approx([45.0, 135.0])


def test_ct_steps_g0_in_software_by_default(ifm: Any, area_det: Any, tiny: Profile) -> None:
    geometry = tiny.instrument.geometry.model_copy(update={"g0_pitch_m": 2e-6})
    instrument = tiny.instrument.model_copy(update={"geometry": geometry})
    talbot_lau = tiny.model_copy(update={"instrument": instrument})
    msgs = list(
        ct(
            ifm, [area_det], talbot_lau, angles=2, reference_every=2, darks=0, steps=3,
            start_um=0.0, grating="g0",
        )
    )  # fmt: skip
    md = next(m for m in msgs if m.command == "open_run").kwargs
    assert md["scan_plan"]["stepping"] == "software"
    assert not any(m.command == "trigger" and m.obj.name == "det_sequence" for m in msgs)


def test_ct_publishes_its_scan_plan_to_the_ioc_before_the_first_frame(
    ifm: Any, det: Any, tiny: Profile
) -> None:
    msgs = drive(
        ct(ifm, [det], tiny, angles=2, reference_every=2, steps=8, stepping="software"),
        {"ifm_sample_in_position": 1.0},
    )
    md = next(m for m in msgs if m.command == "open_run").kwargs
    puts = [i for i, m in enumerate(msgs) if m.command == "set" and m.obj is ifm.tags.scan_plan]
    assert len(puts) == 1
    opened = next(i for i, m in enumerate(msgs) if m.command == "open_run")
    first_frame = next(i for i, m in enumerate(msgs) if m.command == "trigger")
    assert opened < puts[0] < first_frame
    assert (
        ScanPlan.model_validate_json(msgs[puts[0]].args[0]).model_dump(mode="json")
        == (md["scan_plan"])
    )
    assert md["scan_plan"]["steps"] == 8
    # the sample-out position for the references: in + twice the 48 um field (0.096 mm)
    out = next(m for m in msgs if m.command == "set" and m.obj is ifm.sample.out_position)
    assert out.args[0] == pytest.approx(1.0 + 0.096)


def test_each_ct_run_reads_through_objects_of_its_own_and_releases_the_sequencer_monitors(
    ifm: Any, area_det: Any, tiny: Profile
) -> None:
    watched = [ifm.sequencer.latched, ifm.sequencer.finished]
    before = [len(s._callbacks[s.SUB_VALUE]) for s in watched]
    readers = []
    for _ in range(2):
        plan = ct(
            ifm, [area_det], tiny, angles=2, reference_every=2, darks=0, steps=3, start_um=10.0
        )
        msgs = drive(plan, {"ifm_shutter_state": "Closed", "ifm_sample_x_user_setpoint": 0.25})
        frames = {m.obj for m in msgs if m.command == "read" and m.obj.name == "det_frames"}
        assert len(frames) == 1  # every series of the run: one descriptor per stream
        readers.append(frames.pop())
        assert [len(s._callbacks[s.SUB_VALUE]) for s in watched] == before
    assert readers[0] is not readers[1]


@pytest.mark.parametrize("stepping", ["software", "hardware"])
def test_the_calibration_series_is_reference_series_0_with_calibration_steps(
    ifm: Any, det: Any, area_det: Any, tiny: Profile, stepping: str
) -> None:
    detector = det if stepping == "software" else area_det
    plan = ct(
        ifm, [detector], tiny, angles=2, reference_every=2, darks=0, steps=5, periods=3,
        calibration_steps=16, start_um=10.0, stepping=stepping,
    )  # fmt: skip
    msgs = drive(plan, {"ifm_shutter_state": "Closed", "ifm_sample_x_user_setpoint": 0.25})
    md = next(m for m in msgs if m.command == "open_run").kwargs
    scan_plan = ScanPlan.model_validate(md["scan_plan"])
    assert (scan_plan.calibration_steps, scan_plan.steps, scan_plan.periods) == (16, 5, 3)
    assert md["frames_total"] == scan_plan.frames_planned() == 16 + 5 + 5 + 5
    streams = [m.kwargs["name"] for m in msgs if m.command == "create"]
    assert streams == ["reference"] * 16 + ["primary"] * 10 + ["reference"] * 5
    x = ifm.g2.x
    if stepping == "software":
        moves = [m.args[0] for m in msgs if m.command == "set" and m.obj is x]
        # reference 0: below its first step by one step of M = 5 (3 periods of 1 um / 5), then
        # the 16 steps over the same 3 periods; each later series the same approach, 5 steps
        calibration = [10.0 - 3 / 5] + [10.0 + 3 * k / 16 for k in range(16)]
        series = [10.0 - 3 / 5] + [10.0 + 3 * k / 5 for k in range(5)]
        assert moves == pytest.approx(calibration + series * 3)
        steps = [m.args[0] for m in msgs if m.command == "set" and m.obj is ifm.tags.step_index]
        assert steps == list(range(16)) + list(range(5)) * 3
    else:
        handed = [m.args[0] for m in msgs if m.command == "set" and m.obj.name == "det_sequence"]
        assert [a.key for a in handed] == acquisition_order(2, 2)
        assert handed[0].positions == pytest.approx([10.0 + 3 * k / 16 for k in range(16)])
        for arming in handed[1:]:
            assert arming.positions == pytest.approx([10.0 + 3 * k / 5 for k in range(5)])
        # one backlash for every series, the calibration series' too: one step of M (the fake
        # motor reads no BDST back, so each series puts it)
        bdst = [m.args[0] for m in msgs if m.command == "set" and m.obj is x.backlash]
        assert bdst == pytest.approx([3 / 5] * 4)
