"""Series assembly: the frames of one scan grouped into phase-stepping series.

A frame belongs to the series (image_key, index, attempt), index being the angle index of a
projection, the series index of a reference (flat) and -1 for the darks. The latest attempt of a
series wins (docs/stream-protocol.md §3): a frame of an older attempt than one already seen is
superseded and dropped, and a newer attempt discards the open series of older ones. Darks are
summed (float64) per attempt; the dark is the mean of the latest attempt's.

A series has the plan's ``steps`` steps, except the calibration series (reference series 0 of
a plan with ``calibration_steps``, ``ScanPlan.series_steps``); a frame whose step index is not
one of its series' is refused (``StreamStats.bad_frames``).

Only open series hold raw frames, and at most ``max_open`` of them: the caller closes the oldest
(by first frame number) before it opens another. Frames are (rows, columns) arrays of raw counts,
kept where they arrived (a stream buffer or a file read), never copied into a stack.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from contracts.frames import ImageKey
from contracts.messages import FrameHeader
from contracts.scanplan import ScanPlan
from recon.scanresult import StreamStats

#: (image_key, angle or reference-series index (-1 for darks), attempt)
SeriesKey = tuple[int, int, int]


@dataclass
class Series:
    """An open series: its frames, one (rows, columns) array per step (None: not received yet),
    and the tags of each step."""

    key: SeriesKey
    first_frame: int  # frame number of the first frame received
    frames: list[NDArray[np.generic] | None]
    filled: NDArray[np.bool_]  # (steps,) received
    g2_m: NDArray[np.float64]  # (steps,) G2 position [m]
    current_ma: NDArray[np.float64]  # (steps,) ring current [mA]
    time_s: NDArray[np.float64]  # (steps,) timestamp [s]
    rotation_deg: NDArray[np.float64]  # (steps,) sample rotation [deg]

    @classmethod
    def empty(cls, key: SeriesKey, first_frame: int, steps: int) -> Series:
        """A series of ``steps`` steps with none received."""
        m = steps
        return cls(
            key,
            first_frame,
            [None] * m,
            np.zeros(m, bool),
            np.zeros(m),
            np.zeros(m),
            np.zeros(m),
            np.zeros(m),
        )

    def put(self, header: FrameHeader, frame: NDArray[np.generic]) -> None:
        """Store one step's frame (rows, columns) and its tags."""
        k = header.step_index
        self.frames[k] = frame
        self.filled[k] = True
        self.g2_m[k] = header.g2_position_m
        self.current_ma[k] = header.ring_current_ma
        self.time_s[k] = header.timestamp_s
        self.rotation_deg[k] = header.rotation_deg


class SeriesAssembly:
    """Groups one scan's frames into series; accumulates the darks.

    ``steps``: the scan plan, whose ``series_steps`` gives each series' steps (the calibration
    series has more), or one number of steps for every series. Counts superseded frames into
    ``stats``; says why it refuses a frame that is not one of the plan's (``refused``).
    """

    def __init__(self, steps: ScanPlan | int, max_open: int, stats: StreamStats) -> None:
        self.plan = steps if isinstance(steps, ScanPlan) else None
        #: steps of every series but the calibration series
        self.steps = steps.steps if isinstance(steps, ScanPlan) else steps
        self.max_open = max_open
        self.stats = stats
        #: open series by key
        self.open: dict[SeriesKey, Series] = {}
        self._latest: dict[tuple[int, int], int] = {}  # latest attempt per (image_key, index)
        self._dark_sum: dict[int, NDArray[np.float64]] = {}  # per attempt, (rows, columns)
        self._dark_count: dict[int, int] = {}
        #: why ``identify`` refused the latest frame it refused ("": it took the last one)
        self.refused = ""
        self._references = (
            0
            if self.plan is None
            else sum(1 for kind, _ in self.plan.order() if kind == "reference")
        )

    def steps_of(self, key: SeriesKey) -> int:
        """The steps of series ``key`` (the calibration series': ``calibration_steps``)."""
        image_key, index = key[0], key[1]
        if self.plan is None or image_key == ImageKey.DARK:
            return self.steps
        if image_key == ImageKey.FLAT:
            return self.plan.series_steps(("reference", index))
        return self.plan.series_steps(("projection", index))

    def identify(self, header: FrameHeader) -> SeriesKey | None:
        """The series of a frame; None for an attempt older than one seen (superseded, counted)
        and for a projection or reference frame that is not one of the plan's series (a step,
        angle or reference-series index outside them: ``refused`` says which; the caller
        counts it). A newer attempt than any seen discards the open series (and dark
        sums) of older ones."""
        key = int(header.image_key)
        index = {
            ImageKey.PROJECTION: header.angle_index,
            ImageKey.FLAT: header.series_index,
        }.get(ImageKey(key), -1)
        series = (key, index)
        out = (key, index, header.attempt)
        # refused before its attempt counts: a stray frame never discards a real series
        self.refused = self.refusal(header)
        if self.refused:
            return None
        latest = self._latest.get(series, -1)
        if header.attempt < latest:
            self.stats.superseded += 1
            return None
        if header.attempt > latest:
            self._latest[series] = header.attempt
            self._discard_older(series, header.attempt)
        return out

    def refusal(self, header: FrameHeader) -> str:
        """Why a frame is not one of this scan's series ("": it may be), naming the field."""
        image_key = int(header.image_key)
        index = {
            ImageKey.PROJECTION: header.angle_index,
            ImageKey.FLAT: header.series_index,
        }.get(ImageKey(image_key), -1)
        key = (image_key, index, header.attempt)
        if image_key == ImageKey.DARK:
            return ""
        if not self.valid_step(header.step_index, key):
            return (
                f"step_index {header.step_index} is outside 0..{self.steps_of(key) - 1} of its "
                "series"
            )
        if self.plan is not None:
            if image_key == ImageKey.PROJECTION and index >= self.plan.angles:
                return f"angle_index {index} is beyond the plan's {self.plan.angles} angles"
            if image_key == ImageKey.FLAT and index >= self._references:
                return (
                    f"series_index {index} is beyond the plan's {self._references} reference series"
                )
        return ""

    def _discard_older(self, series: tuple[int, int], attempt: int) -> None:
        for skey in [k for k in self.open if k[:2] == series and k[2] < attempt]:
            self.stats.superseded += int(self.open.pop(skey).filled.sum())
        if series[0] == ImageKey.DARK:
            for a in [a for a in self._dark_sum if a < attempt]:
                self.stats.superseded += self._dark_count.pop(a)
                del self._dark_sum[a]

    def add_dark(self, attempt: int, frame: NDArray[np.generic]) -> NDArray[np.float32]:
        """Add a dark frame (rows, columns) to its attempt's sum; returns the dark now: the mean
        of the latest attempt's darks [counts], (rows, columns) float32."""
        if attempt not in self._dark_sum:
            self._dark_sum[attempt] = np.zeros(frame.shape, np.float64)
            self._dark_count[attempt] = 0
        self._dark_sum[attempt] += frame.astype(np.float64)
        self._dark_count[attempt] += 1
        latest = max(self._dark_sum)
        return (self._dark_sum[latest] / self._dark_count[latest]).astype(np.float32)

    def valid_step(self, step_index: int, key: SeriesKey | None = None) -> bool:
        """Whether a step index belongs to series ``key``; without one, to any series of this
        scan (``identify`` has refused a frame outside its own series)."""
        if key is not None:
            return 0 <= step_index < self.steps_of(key)
        most = self.steps if self.plan is None else max(self.steps, self.plan.calibration_steps)
        return 0 <= step_index < most

    @property
    def full(self) -> bool:
        """Whether ``max_open`` series are open (close the oldest before opening another)."""
        return len(self.open) >= self.max_open

    def pop_oldest(self) -> Series:
        """Remove and return the open series whose first frame came first."""
        oldest = min(self.open.values(), key=lambda s: s.first_frame)
        del self.open[oldest.key]
        return oldest

    def put(self, key: SeriesKey, header: FrameHeader, frame: NDArray[np.generic]) -> Series | None:
        """Store a frame (rows, columns) in its series, opened if need be; returns the series
        (no longer open) once every step is in, else None."""
        s = self.open.get(key)
        if s is None:
            s = self.open[key] = Series.empty(key, header.frame_number, self.steps_of(key))
        s.put(header, frame)
        if not s.filled.all():
            return None
        del self.open[key]
        return s

    def by_arrival(self) -> list[Series]:
        """The open series by first frame number (they stay open)."""
        return sorted(self.open.values(), key=lambda s: s.first_frame)
