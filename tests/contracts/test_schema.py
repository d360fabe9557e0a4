"""The published JSON Schemas: up to date with the models, and what the models accept."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from contracts.messages import encode_scan_start
from contracts.profile import builtin_profile
from contracts.schema import main, schemas, stale
from tests.contracts.test_stream import frame_parts, start_msg

SCHEMA_DIR = Path(__file__).parents[2] / "docs" / "schema"


def test_the_schemas_in_docs_are_the_models_schemas() -> None:
    """Fails when a model changed and ``python -m contracts.schema docs/schema`` was not run."""
    assert stale(SCHEMA_DIR) == []
    assert sorted(p.name for p in SCHEMA_DIR.glob("*.schema.json")) == sorted(
        f"{name}.schema.json" for name in schemas()
    )


def test_check_mode_names_a_stale_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 0
    (tmp_path / "frame.schema.json").write_text("{}")
    assert main([str(tmp_path), "--check"]) == 1
    assert "frame.schema.json" in capsys.readouterr().err


def _validator(name: str) -> jsonschema.Draft202012Validator:
    schema = json.loads((SCHEMA_DIR / f"{name}.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_messages_the_models_send_are_valid_by_the_schemas() -> None:
    _validator("scan-start").validate(json.loads(encode_scan_start(start_msg())[0]))
    _validator("frame").validate(json.loads(frame_parts()[0]))
    profile = builtin_profile("full")
    _validator("instrument").validate(profile.instrument.model_dump(mode="json"))
    _validator("scan-plan").validate(profile.scan_plan().model_dump(mode="json"))


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"angle_idx": 3}, "additional"),
        ({"step_index": "2"}, "integer"),
        ({"attempt": -1}, "minimum"),
        ({"protocol": None}, "required"),
    ],
)
def test_the_schemas_refuse_what_the_models_refuse(change: dict[str, object], why: str) -> None:
    header = json.loads(frame_parts()[0])
    header.update(change)
    header = {k: v for k, v in header.items() if v is not None}
    errors = list(_validator("frame").iter_errors(header))
    assert errors
    assert why in " ".join(e.message for e in errors) or why in " ".join(
        str(e.validator) for e in errors
    )


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"geometry": {"g1_phase_deg": 120}}, "is not one of"),
        ({"geometry": {"talbot_order": 2}}, "should not be valid"),
        ({"detector": {"shape": [0, 5]}}, "less than the minimum"),
        ({"pvs": {"prefix": "bad prefix "}}, "does not match"),
    ],
)
def test_the_instrument_schema_states_the_single_field_checks(
    change: dict[str, dict[str, object]], needle: str
) -> None:
    instrument = builtin_profile("tiny").instrument.model_dump(mode="json")
    for table, values in change.items():
        instrument[table] = {**instrument[table], **values}
    messages = [e.message for e in _validator("instrument").iter_errors(instrument)]
    assert any(needle in m for m in messages), messages


def test_the_frame_schema_states_the_identity_rules() -> None:
    header = json.loads(frame_parts()[0])
    assert not list(_validator("frame").iter_errors(header))
    for change in ({"angle_index": -1}, {"image_key": 1, "series_index": -1},
                   {"image_key": 1, "series_index": 0, "step_index": -1}):  # fmt: skip
        assert list(_validator("frame").iter_errors({**header, **change})), change
    dark = {**header, "image_key": 2, "angle_index": -1, "step_index": -1}
    assert not list(_validator("frame").iter_errors(dark))
