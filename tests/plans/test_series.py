"""Message-level tests of the phase-stepping, reference and dark series (no IOC)."""

from __future__ import annotations

from typing import Any

import pytest
from bluesky.utils import Msg

from plans import (
    HardwareStepping,
    SeriesAttempts,
    dark_series,
    phase_stepping_series,
    reference_series,
)
from plans.series import NextProjection
from tests.plans.conftest import drive


def _names(msgs: list[Msg]) -> list[tuple[str, Any]]:
    return [(m.command, getattr(m.obj, "name", None)) for m in msgs]


def _sets(msgs: list[Msg], name: str) -> list[Any]:
    return [m.args[0] for m in msgs if m.command == "set" and getattr(m.obj, "name", "") == name]


def test_series_has_one_checkpoint_first_then_steps_from_below(ifm: Any, det: Any) -> None:
    attempts = SeriesAttempts()
    msgs = list(
        phase_stepping_series(
            ifm, [det], steps=5, period_um=1.0, start_um=10.0, angle_index=3, attempts=attempts
        )
    )
    assert msgs[0].command == "checkpoint"
    assert [m.command for m in msgs].count("checkpoint") == 1
    # the attempt bump is the first thing after the checkpoint (so a rewind replays it)
    assert msgs[1].command == "set"
    assert msgs[1].obj is attempts
    assert msgs[1].args[0] == ("projection", 3)
    # backlash: the grating approaches the first step from one step below, then ascends
    assert _sets(msgs, "ifm_g2_x") == pytest.approx([9.8, 10.0, 10.2, 10.4, 10.6, 10.8])
    assert _sets(msgs, "ifm_tags_step_index") == [0, 1, 2, 3, 4]
    assert set(_sets(msgs, "ifm_tags_angle_index")) == {3}
    assert set(_sets(msgs, "ifm_tags_frame_type")) == {"projection"}
    creates = [m for m in msgs if m.command == "create"]
    assert [m.kwargs["name"] for m in creates] == ["primary"] * 5
    # every frame reads the detector, the grating, the rotation, the ring current and the tags
    first_save = next(i for i, m in enumerate(msgs) if m.command == "save")
    read = {getattr(m.obj, "name", None) for m in msgs[:first_save] if m.command == "read"}
    assert read == {"det", "ifm_g2_x", "ifm_rotation", "ifm_sample", "ifm_beam", "ifm_tags"}
    # tags are written (and waited for) before each trigger
    for i, m in enumerate(msgs):
        if m.command == "trigger" and m.obj is det:
            assert msgs[i - 1].command == "wait"


def test_series_periods_and_g0(ifm: Any, det: Any) -> None:
    msgs = list(
        phase_stepping_series(
            ifm, [det], steps=5, periods=2, period_um=3.0, start_um=0.0, angle_index=0,
            grating="g0", backlash_um=0.5,
        )
    )  # fmt: skip
    assert _sets(msgs, "ifm_g0_x") == pytest.approx([-0.5, 0.0, 1.2, 2.4, 3.6, 4.8])
    assert _sets(msgs, "ifm_g2_x") == []


def test_attempt_counter_counts_takes_per_key() -> None:
    attempts = SeriesAttempts()
    assert attempts.attempt(("projection", 0)) == -1
    for _ in range(3):
        assert attempts.set(("projection", 0)).done
    attempts.set(("reference", 0))
    assert attempts.attempt(("projection", 0)) == 2
    assert attempts.attempt(("reference", 0)) == 0
    assert attempts.retakes == {("projection", 0): 2}


def test_a_take_started_elsewhere_makes_the_next_take_count_after_it() -> None:
    attempts = SeriesAttempts()
    key = ("projection", 4)
    # the IOC started the queued take 0 of a series its plan had not reached, then it was
    # abandoned (a pause at the series' checkpoint): the plan's own take is attempt 1
    attempts.started_elsewhere(key, 0)
    attempts.set(key)
    assert attempts.attempt(key) == 1
    # an older attempt reported late changes nothing
    attempts.started_elsewhere(key, 0)
    attempts.set(key)
    assert attempts.attempt(key) == 2


def test_reference_series_moves_sample_out_after_checkpoint_and_restores(
    ifm: Any, det: Any
) -> None:
    plan = reference_series(ifm, [det], series_index=2, steps=4, period_um=1.0, start_um=5.0)
    msgs = drive(plan, {"ifm_sample_x_user_setpoint": 1.5})
    names = _names(msgs)
    i_ckpt = names.index(("checkpoint", None))
    i_out = next(i for i, m in enumerate(msgs) if m.command == "set" and m.args == ("out",))
    assert i_ckpt < i_out < names.index(("trigger", "det"))
    assert msgs[0].command == "read"
    assert msgs[0].obj.name == "ifm_sample_x_user_setpoint"
    assert set(_sets(msgs, "ifm_tags_series_index")) == {2}
    assert set(_sets(msgs, "ifm_tags_frame_type")) == {"reference"}
    assert [m.kwargs["name"] for m in msgs if m.command == "create"] == ["reference"] * 4
    # finalize: the sample goes back to the position read first
    assert msgs[-2].command == "set"
    assert msgs[-2].obj.name == "ifm_sample"
    assert msgs[-2].args == (1.5,)
    assert msgs[-1].command == "wait"


def test_dark_series_closes_shutter_and_restores(ifm: Any, det: Any) -> None:
    msgs = drive(dark_series(ifm, [det], frames=3), {"ifm_shutter_state": "Open"})
    assert [m.command for m in msgs].count("checkpoint") == 1
    shutter = [m.args[0] for m in msgs if m.command == "set" and m.obj is ifm.shutter]
    assert shutter == ["close", "open"]  # closed for the darks, then back to how it was
    assert set(_sets(msgs, "ifm_tags_step_index")) == {-1}
    assert set(_sets(msgs, "ifm_tags_frame_type")) == {"dark"}
    assert [m.kwargs["name"] for m in msgs if m.command == "create"] == ["dark"] * 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"steps": 2}, "steps"),
        ({"steps": 4, "periods": 2}, "coprime"),
        ({"periods": 0}, "periods"),
        ({"period_um": 0.0}, "period_um"),
        ({"period_um": float("nan")}, "period_um"),
        ({"start_um": float("inf")}, "start_um"),
        ({"backlash_um": -1.0}, "backlash_um"),
        ({"angle_index": -1}, "angle_index"),
        ({"frame_type": "dark"}, "frame_type"),
        ({"grating": "g1"}, "grating"),
        ({"scan_uid": "x" * 40}, "scan_uid"),
    ],
)
def test_series_validates_before_any_message(
    ifm: Any, det: Any, kwargs: dict[str, Any], match: str
) -> None:
    args: dict[str, Any] = {"steps": 5, "period_um": 1.0, "start_um": 10.0, "angle_index": 0}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        phase_stepping_series(ifm, [det], **args)


def test_series_validation_reference_and_dark(ifm: Any, det: Any) -> None:
    with pytest.raises(ValueError, match="series_index"):
        reference_series(ifm, [det], series_index=-1, steps=5, period_um=1.0, start_um=0.0)
    with pytest.raises(ValueError, match="frames"):
        dark_series(ifm, [det], frames=0)
    with pytest.raises(ValueError, match="detectors"):
        dark_series(ifm, [object()], frames=1)


def test_hardware_series_hands_itself_and_the_next_to_the_ioc_and_reads_one_event_per_frame(
    ifm: Any, area_det: Any
) -> None:
    attempts = SeriesAttempts()
    msgs = list(
        phase_stepping_series(
            ifm, [area_det], steps=5, period_um=1.0, start_um=10.0, angle_index=3,
            attempts=attempts, stepping="hardware", rotation_deg=6.0,
            next_projection=NextProjection(angle_index=4, rotation_deg=8.0),
        )
    )  # fmt: skip
    commands = [m.command for m in msgs]
    assert commands[0] == "checkpoint"
    assert commands.count("checkpoint") == 1
    assert msgs[1].obj is attempts
    # the grating approaches the first step from below in one move: the motor record's
    # backlash (one step), set first and waited for before the series is handed over
    assert _sets(msgs, "ifm_g2_x_backlash") == pytest.approx([0.2])
    bdst = next(
        i for i, m in enumerate(msgs) if m.command == "set" and m.obj.name.endswith("backlash")
    )
    # one set hands the whole series to the IOC (tags, image count, steps, rotation, first
    # step): the plan puts nothing else and never moves the grating or the camera itself
    (arming,) = _sets(msgs, "det_sequence")
    assert arming.key == ("projection", 3)
    assert (arming.frame_type, arming.angle_index, arming.series_index) == ("projection", 3, -1)
    assert arming.positions == pytest.approx((10.0, 10.2, 10.4, 10.6, 10.8))
    assert arming.rotation_deg == 6.0
    assert arming.attempts is attempts
    hand_over = next(
        i for i, m in enumerate(msgs) if m.command == "set" and m.obj.name == "det_sequence"
    )
    assert "wait" in commands[bdst:hand_over]
    for name in ("ifm_g2_x", "ifm_rotation", "ifm_sequencer_num_steps", "det_cam_acquire"):
        assert _sets(msgs, name) == []
    # then one acquisition, after the hand-over has been waited for
    acquire = next(i for i, m in enumerate(msgs) if m.command == "trigger")
    assert msgs[acquire].obj.name == "det_sequence"
    assert commands[acquire - 1] == "wait"
    assert msgs[acquire - 1].kwargs["group"] == msgs[hand_over].kwargs["group"]
    # the next projection goes to the IOC's queue while this one is acquired, same steps
    (following,) = _sets(msgs, "det_sequence_next")
    queue = next(
        i for i, m in enumerate(msgs) if m.command == "set" and m.obj.name == "det_sequence_next"
    )
    assert following.key == ("projection", 4)
    assert (following.angle_index, following.rotation_deg) == (4, 8.0)
    assert following.positions == arming.positions
    creates = [i for i, m in enumerate(msgs) if m.command == "create"]
    assert acquire < queue < creates[0]
    assert [msgs[i].kwargs["name"] for i in creates] == ["primary"] * 5
    reads = [getattr(m.obj, "name", None) for m in msgs[acquire:] if m.command == "read"]
    assert reads == ["det_frames"] * 5
    frame_triggers = [m for m in msgs[acquire + 1 :] if m.command == "trigger"]
    assert [m.obj.name for m in frame_triggers] == ["det_frames"] * 5
    # the queueing and then the acquisition's group are waited for only after the last event
    waits = [i for i, m in enumerate(msgs) if m.command == "wait"]
    assert msgs[waits[-2]].kwargs["group"] == msgs[queue].kwargs["group"]
    assert msgs[waits[-1]].kwargs["group"] == msgs[acquire].kwargs["group"]
    assert creates[-1] < waits[-2] < waits[-1] == len(msgs) - 1


def test_hardware_series_without_a_next_projection_queues_nothing(ifm: Any, area_det: Any) -> None:
    msgs = list(
        phase_stepping_series(
            ifm, [area_det], steps=3, period_um=1.0, start_um=10.0, angle_index=0,
            stepping="hardware",
        )
    )  # fmt: skip
    assert _sets(msgs, "det_sequence_next") == []
    (arming,) = _sets(msgs, "det_sequence")
    assert arming.rotation_deg is None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"rotation_deg": float("nan")}, "rotation_deg must be finite"),
        (
            {"next_projection": NextProjection(1, float("inf"))},
            "next_projection.rotation_deg must be finite",
        ),
        ({"next_projection": NextProjection(-1, 0.0)}, "next_projection.angle_index"),
    ],
)
def test_series_rotation_arguments_are_checked(
    ifm: Any, area_det: Any, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        phase_stepping_series(
            ifm, [area_det], steps=5, period_um=1.0, start_um=10.0, angle_index=0,
            stepping="hardware", **kwargs,
        )  # fmt: skip


def test_reference_series_hardware_moves_the_sample_out_first(ifm: Any, area_det: Any) -> None:
    msgs = drive(
        reference_series(
            ifm, [area_det], series_index=1, steps=3, period_um=1.0, start_um=5.0,
            stepping="hardware",
        ),
        {"ifm_sample_x_user_setpoint": 0.0},
    )  # fmt: skip
    sample = [i for i, m in enumerate(msgs) if m.command == "set" and m.obj is ifm.sample]
    hand_over = next(
        i for i, m in enumerate(msgs) if m.command == "set" and m.obj.name == "det_sequence"
    )
    acquire = next(i for i, m in enumerate(msgs) if m.command == "trigger")
    assert msgs[sample[0]].args[0] == "out"
    # the sample is out before the IOC starts the series (its in-position gate only knows of
    # moves already requested)
    out_group = msgs[sample[0]].kwargs["group"]
    waited = [
        i for i, m in enumerate(msgs) if m.command == "wait" and m.kwargs.get("group") == out_group
    ]
    assert sample[0] < waited[0] < hand_over < acquire < sample[1]
    assert msgs[sample[1]].args[0] == 0.0
    (arming,) = _sets(msgs, "det_sequence")
    assert (arming.frame_type, arming.series_index, arming.rotation_deg) == ("reference", 1, None)
    assert [m.kwargs["name"] for m in msgs if m.command == "create"] == ["reference"] * 3


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"stepping": "fly"}, "stepping must be"),
        ({"stepping": "hardware", "grating": "g0"}, "G0"),
    ],
)
def test_hardware_stepping_validation(
    ifm: Any, area_det: Any, kwargs: dict[str, Any], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        phase_stepping_series(
            ifm, [area_det], steps=5, period_um=1.0, start_um=10.0, angle_index=0, **kwargs
        )


def test_hardware_stepping_needs_one_area_detector(ifm: Any, det: Any, area_det: Any) -> None:
    for dets in ([det], [area_det, area_det]):
        with pytest.raises(ValueError, match="exactly one area detector"):
            phase_stepping_series(
                ifm, dets, steps=5, period_um=1.0, start_um=10.0, angle_index=0,
                stepping="hardware",
            )  # fmt: skip


def test_hardware_series_checks_every_step_against_the_limits_before_moving(
    ifm: Any, area_det: Any
) -> None:
    from ophyd.utils import LimitError

    plan = phase_stepping_series(
        ifm, [area_det], steps=5, period_um=1.0, start_um=98.9, angle_index=0,
        stepping="hardware",
    )  # fmt: skip
    msgs: list[Msg] = []

    def drain() -> None:
        msgs.extend(plan)

    with pytest.raises(LimitError):
        drain()
    assert not any(m.command == "set" and m.obj is ifm.g2.x for m in msgs)


def _monitors(ifm: Any) -> list[int]:
    """Callbacks on the sequencer's latched-reading PVs (a HardwareStepping adds one to each)."""
    return [len(s._callbacks[s.SUB_VALUE]) for s in (ifm.sequencer.latched, ifm.sequencer.finished)]


def test_hardware_series_read_through_the_hardware_stepping_they_are_given(
    ifm: Any, area_det: Any
) -> None:
    from ophyd.sim import make_fake_device

    from devices import TalbotDetector

    hardware = HardwareStepping.create(ifm, area_det, ifm.g2.x)
    msgs: list[Msg] = []
    for i in range(2):
        msgs += phase_stepping_series(
            ifm, [area_det], steps=3, period_um=1.0, start_um=10.0, angle_index=i,
            stepping="hardware", hardware=hardware,
        )  # fmt: skip
    assert {m.obj for m in msgs if m.command == "read" and m.obj.name == "det_frames"} == {
        hardware.frames
    }
    assert {m.obj for m in msgs if m.command == "trigger" and m.obj.name == "det_sequence"} == {
        hardware.acquisition
    }
    other = make_fake_device(TalbotDetector)("OTHER:", name="other")
    with pytest.raises(ValueError, match="hardware was made for another detector"):
        phase_stepping_series(
            ifm, [other], steps=3, period_um=1.0, start_um=10.0, angle_index=0,
            stepping="hardware", hardware=hardware,
        )  # fmt: skip
    hardware.release()
    assert _monitors(ifm) == [0, 0]


def test_a_hardware_series_given_no_hardware_stepping_releases_its_own(
    ifm: Any, area_det: Any
) -> None:
    before = _monitors(ifm)
    msgs = list(
        phase_stepping_series(
            ifm, [area_det], steps=3, period_um=1.0, start_um=10.0, angle_index=0,
            stepping="hardware",
        )
    )  # fmt: skip
    assert [m.obj.name for m in msgs if m.command == "read"][-3:] == ["det_frames"] * 3
    assert _monitors(ifm) == before
