"""What every contract model shares: the frozen base, the configuration error, error wording."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, ValidationError


class ConfigError(ValueError):
    """A configuration value is impossible; the message names the parameter."""


class Frozen(BaseModel):
    """A frozen pydantic model that refuses unknown fields, NaN and infinities."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


#: A model-level check's message that starts with the field it is about ("g2_pitch_m=...",
#: "angle_index: ...", "talbot_order must be ...").
_LEADING_FIELD = re.compile(r"^([a-z][a-z0-9]*_[a-z0-9_]*|[a-z]+)(?==|: | must | is )")


def first_error(exc: ValidationError) -> tuple[str, str]:
    """(dotted field path, reason) of a ValidationError's first error: list positions go into
    the reason (``shape``, ``[0]: ...``), and a model-level check that names its field in its
    message (``instrument.geometry`` + ``g2_pitch_m=...``) has that field added to the path."""
    first = exc.errors()[0]
    parts = [str(p) for p in first["loc"] if not isinstance(p, int)]
    items = "".join(f"[{p}]" for p in first["loc"] if isinstance(p, int))
    reason = str(first["msg"]).removeprefix("Value error, ")
    field = _LEADING_FIELD.match(reason)
    if field is not None and first["type"] == "value_error" and parts[-1:] != [field.group(1)]:
        parts.append(field.group(1))
        reason = reason.removeprefix(f"{field.group(1)}: ")
    return ".".join(parts), f"{items}: {reason}" if items else reason
