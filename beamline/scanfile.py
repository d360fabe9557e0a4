"""Per-frame bookkeeping shared by the simulator, the scan file and the reconstructor.

A contract module (DESIGN §2, §3.3-3.4): it imports nothing from the other Talbot packages.
``image_key`` follows NeXus NXtomo: 0 projection, 1 flat (reference), 2 dark.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray


class ImageKey(IntEnum):
    """NXtomo image_key values."""

    PROJECTION = 0
    FLAT = 1
    DARK = 2


#: Field name -> dtype of one row of the frame table (one row per acquired frame, file order).
FRAME_FIELDS: dict[str, np.dtype] = {
    "image_key": np.dtype(np.int8),
    "angle_index": np.dtype(np.int32),  # projection angle index; -1 for darks and references
    "series_index": np.dtype(np.int32),  # reference series number; -1 for projections and darks
    "step_index": np.dtype(np.int32),  # phase-step index k within a series; -1 for darks
    "attempt": np.dtype(np.int32),  # 0 for the first take of a series, +1 for each re-take
    "g2_position_m": np.dtype(np.float64),  # measured (encoder) stepped-grating position [m]
    "rotation_deg": np.dtype(np.float64),  # measured rotation angle [deg]
    "timestamp_s": np.dtype(np.float64),  # acquisition time since scan start [s]
    "ring_current_ma": np.dtype(np.float64),  # beam monitor (dose normalisation) [mA]
}

FRAME_DTYPE = np.dtype(list(FRAME_FIELDS.items()))


@dataclass(frozen=True)
class FrameTable:
    """Per-frame tags and readbacks as a NumPy structured array of ``FRAME_DTYPE``."""

    rows: NDArray[np.void]

    def __post_init__(self) -> None:
        if self.rows.dtype != FRAME_DTYPE:
            raise ValueError(f"rows must have dtype FRAME_DTYPE, got {self.rows.dtype}")
        if self.rows.ndim != 1:
            raise ValueError(f"rows must be 1-D, got shape {self.rows.shape}")

    @classmethod
    def empty(cls, n: int) -> FrameTable:
        """A table of ``n`` zeroed rows."""
        return cls(np.zeros(n, dtype=FRAME_DTYPE))

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def column(self, name: str) -> NDArray[np.generic]:
        """One field as a 1-D array (a view)."""
        if name not in FRAME_FIELDS:
            raise KeyError(f"unknown frame field {name!r}; known: {sorted(FRAME_FIELDS)}")
        return self.rows[name]

    def latest_attempts(self) -> NDArray[np.bool_]:
        """Mask of frames that belong to the latest attempt of their series (DESIGN §3.4)."""
        key = self.rows["image_key"].astype(np.int64)
        series = np.where(
            key == ImageKey.PROJECTION, self.rows["angle_index"], self.rows["series_index"]
        ).astype(np.int64)
        attempt = self.rows["attempt"].astype(np.int64)
        best: dict[tuple[int, int], int] = {}
        for k, s, a in zip(key.tolist(), series.tolist(), attempt.tolist(), strict=True):
            best[(k, s)] = max(best.get((k, s), a), a)
        return np.array(
            [a == best[(k, s)] for k, s, a in zip(key, series, attempt, strict=True)],
            dtype=bool,
        )
