"""The frame record: one typed set of per-frame tags for the IOC, the file, the stream and the
reconstructor.

``image_key`` follows NeXus NXtomo: 0 projection, 1 flat (reference), 2 dark. A series is
identified by (image_key, angle index for projections | series index for references | -1 for
darks); its frames by the step index; a re-take of a series has ``attempt + 1``, and the
latest attempt of a series wins (superseded frames stay in the file, marked).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Final, Literal, get_args

import numpy as np
from numpy.typing import NDArray
from pydantic import ConfigDict, Field, JsonValue, model_validator

from contracts.base import Frozen

#: Longest value of a Channel Access string (DBR_STRING holds 40 bytes with the NUL).
CA_STRING_MAX: Final = 39

#: Largest value of a 32-bit signed index.
INT32_MAX: Final = 2**31 - 1


class ImageKey(IntEnum):
    """NXtomo image_key values."""

    PROJECTION = 0
    FLAT = 1
    DARK = 2


#: Frame-type names, index = ``ImageKey`` (the ``TAG:FrameType`` enum strings).
FRAME_TYPES: Final = ("projection", "reference", "dark")

#: Pixel types a frame may have (in the scan file and on the stream), name -> little-endian dtype.
PIXEL_DTYPES: Final[dict[str, np.dtype]] = {
    "uint8": np.dtype("<u1"),
    "uint16": np.dtype("<u2"),
    "uint32": np.dtype("<u4"),
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
}
PixelType = Literal["uint8", "uint16", "uint32", "float32", "float64"]
if set(PIXEL_DTYPES) != set(get_args(PixelType)):  # pragma: no cover
    raise AssertionError("PixelType must name the PIXEL_DTYPES")


#: The identity rules of ``FrameTags._check_identity`` in JSON Schema.
_IDENTITY_RULES: Final[list[JsonValue]] = [
    {"if": {"properties": {"image_key": {"const": 0}}},
     "then": {"properties": {"angle_index": {"minimum": 0}}}},
    {"if": {"properties": {"image_key": {"const": 1}}},
     "then": {"properties": {"series_index": {"minimum": 0}}}},
    {"if": {"properties": {"image_key": {"enum": [0, 1]}}},
     "then": {"properties": {"step_index": {"minimum": 0}}}},
]  # fmt: skip


class FrameTags(Frozen):
    """Identity and measured readbacks of one frame."""

    model_config = ConfigDict(strict=True, json_schema_extra={"allOf": _IDENTITY_RULES})

    frame_number: int = Field(
        ge=0, le=2**53, description="row of the frame in the scan file, from 0 in file order"
    )
    image_key: ImageKey = Field(description="0 projection, 1 reference (flat), 2 dark")
    angle_index: int = Field(
        ge=-1, le=INT32_MAX, description="projection angle index; -1 for darks and references"
    )
    series_index: int = Field(
        ge=-1, le=INT32_MAX, description="reference series number; -1 for projections and darks"
    )
    step_index: int = Field(
        ge=-1, le=INT32_MAX, description="phase-step index k within the series; -1 for darks"
    )
    attempt: int = Field(
        ge=0, le=INT32_MAX, description="0 for the first take of a series, +1 for each re-take"
    )
    g2_position_m: float = Field(
        description="measured (encoder) position of the stepped grating [m]; the phase comes "
        "from it, not from the step index"
    )
    rotation_deg: float = Field(description="measured rotation angle [deg]")
    timestamp_s: float = Field(description="acquisition time since the scan started [s]")
    ring_current_ma: float = Field(
        ge=0, description="beam monitor [mA] (dose normalisation); 0 without a beam monitor"
    )
    superseded: bool = Field(
        default=False, description="a later attempt of the same series replaced this frame"
    )

    @model_validator(mode="after")
    def _check_identity(self) -> FrameTags:
        if self.image_key == ImageKey.PROJECTION and self.angle_index < 0:
            raise ValueError("angle_index: a projection frame needs angle_index >= 0")
        if self.image_key == ImageKey.FLAT and self.series_index < 0:
            raise ValueError("series_index: a reference frame needs series_index >= 0")
        if self.image_key != ImageKey.DARK and self.step_index < 0:
            raise ValueError("step_index: a projection or reference frame needs step_index >= 0")
        return self


def series_key(image_key: int, angle_index: int, series_index: int) -> tuple[int, int]:
    """(image_key, angle index for projections | series index for references | -1 for darks)."""
    if image_key == ImageKey.PROJECTION:
        return image_key, angle_index
    if image_key == ImageKey.FLAT:
        return image_key, series_index
    return image_key, -1


#: Storage type of every FrameTags field (scan-file datasets, frame-table columns), in order.
FRAME_FIELD_DTYPES: Final[dict[str, np.dtype]] = {
    "frame_number": np.dtype(np.int64),
    "image_key": np.dtype(np.int8),
    "angle_index": np.dtype(np.int32),
    "series_index": np.dtype(np.int32),
    "step_index": np.dtype(np.int32),
    "attempt": np.dtype(np.int32),
    "g2_position_m": np.dtype(np.float64),
    "rotation_deg": np.dtype(np.float64),
    "timestamp_s": np.dtype(np.float64),
    "ring_current_ma": np.dtype(np.float64),
    "superseded": np.dtype(np.uint8),
}
if tuple(FRAME_FIELD_DTYPES) != tuple(FrameTags.model_fields):  # pragma: no cover
    raise AssertionError("FRAME_FIELD_DTYPES must list the FrameTags fields in order")

#: The fields a frame source attaches to each frame: every field but the two the scan file
#: assigns (``frame_number``, the row; ``superseded``, set when a later attempt arrives).
TAG_FIELDS: Final[dict[str, np.dtype]] = {
    name: dt
    for name, dt in FRAME_FIELD_DTYPES.items()
    if name not in ("frame_number", "superseded")
}

#: One row of the frame table.
FRAME_DTYPE: Final = np.dtype(list(FRAME_FIELD_DTYPES.items()))


@dataclass(frozen=True)
class FrameTable:
    """Per-frame tags of a scan as a NumPy structured array of ``FRAME_DTYPE`` (file order)."""

    rows: NDArray[np.void]

    def __post_init__(self) -> None:
        if self.rows.dtype != FRAME_DTYPE:
            raise ValueError(f"rows must have dtype FRAME_DTYPE, got {self.rows.dtype}")
        if self.rows.ndim != 1:
            raise ValueError(f"rows must be 1-D, got shape {self.rows.shape}")

    @classmethod
    def empty(cls, n: int) -> FrameTable:
        """A table of ``n`` zeroed rows numbered 0 .. n-1."""
        rows = np.zeros(n, dtype=FRAME_DTYPE)
        rows["frame_number"] = np.arange(n)
        return cls(rows)

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def column(self, name: str) -> NDArray[np.generic]:
        """One field as a 1-D array (a view)."""
        if name not in FRAME_FIELD_DTYPES:
            raise KeyError(f"unknown frame field {name!r}; known: {list(FRAME_FIELD_DTYPES)}")
        return self.rows[name]

    @property
    def superseded(self) -> NDArray[np.bool_]:
        """Mask of the frames a later attempt of their series replaced."""
        return self.rows["superseded"].astype(bool)

    def latest_attempts(self) -> NDArray[np.bool_]:
        """Mask of frames that belong to the latest attempt of their series."""
        key = self.rows["image_key"].astype(np.int64)
        series = np.where(
            key == ImageKey.PROJECTION,
            self.rows["angle_index"],
            np.where(key == ImageKey.FLAT, self.rows["series_index"], -1),
        ).astype(np.int64)
        attempt = self.rows["attempt"].astype(np.int64)
        best: dict[tuple[int, int], int] = {}
        for k, s, a in zip(key.tolist(), series.tolist(), attempt.tolist(), strict=True):
            best[(k, s)] = max(best.get((k, s), a), a)
        return np.array(
            [a == best[(k, s)] for k, s, a in zip(key, series, attempt, strict=True)],
            dtype=bool,
        )
