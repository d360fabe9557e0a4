"""The live view: a few detector rows of a scan reconstructed while it runs.

The chosen rows of each new projection are retrieved (by the caller) against the reference
interpolated in time between the reference series received so far, then here filtered (Hilbert
for delta, ramp for mu and dark-field, docs/reconstruction.md §3) and backprojected into live
slices (``accumulate_projection``); a re-take replaces its earlier contribution. Updates go out
on the viewer PUB socket at most every ``interval_s``.

Live slices of a detector wider than ``max_px`` are binned b x b, with the smallest b that brings
them to at most that many pixels across (columns binned before the filter): a viewer's slice, at
a quarter of the work for b = 2.

Arrays: live slices (channels, rows, y, x) float32, channels ``CHANNELS`` in units delta [1],
mu [1/m], dark-field [1/m]; filtered lines (3 * rows, binned columns).
"""

from __future__ import annotations

import math
import time

import numpy as np
import scipy.fft
from numpy.typing import NDArray

from contracts.instrument import Geometry
from contracts.messages import LiveSlices
from contracts.sockets import LivePublisher
from recon.fbp import accumulate_projection, filter_response, padded_length
from recon.retrieval import StepFit, retrieve
from recon.scanresult import StreamStats

F32 = NDArray[np.float32]
CHANNELS = ("delta", "mu", "darkfield")


class LiveView:
    """Live slices of the detector rows ``wanted`` that lie in the slab ``rows`` = (r0, r1).

    ``cols``: detector columns; ``angles``: projections planned (each adds pi / angles of the
    backprojection); ``axis_offset_px``: the rotation axis from the detector's centre column
    [px]. Counts updates into ``stats``.
    """

    def __init__(
        self,
        *,
        scan_uid: str,
        geometry: Geometry,
        angles: int,
        cols: int,
        rows: tuple[int, int],
        wanted: tuple[int, ...],
        max_px: int,
        axis_offset_px: float,
        publisher: LivePublisher | None,
        interval_s: float,
        stats: StreamStats,
    ) -> None:
        r0, r1 = rows
        self.scan_uid = scan_uid
        self.angles = angles
        self.publisher = publisher
        self.interval_s = interval_s
        self.stats = stats
        #: absolute detector rows shown, and the same rows in the slab
        self.rows = tuple(r for r in wanted if r0 <= r < r1)
        self.local_rows = np.asarray([r - r0 for r in self.rows], dtype=np.int64)
        self.bin = b = max(1, math.ceil(cols / max_px))
        n = cols // b
        self.slices: F32 = np.zeros((len(CHANNELS), len(self.rows), n, n), np.float32)
        #: the live voxel [m]: b pixels
        self.voxel_m = geometry.pixel_size_m * b
        #: seconds from the arrival of a projection's last frame to its live update, per update
        self.latency_s: list[float] = []
        #: projections (angle indices) waiting for the first reference series
        self.pending: list[int] = []
        self._weight = math.pi / angles
        self._n_pad = padded_length(n)
        self._response = _responses(geometry, self.voxel_m, self._n_pad, len(self.rows))
        # the axis at full column (cols-1)/2 + offset, in binned columns (bin j spans jb..jb+b-1)
        axis = ((cols - 1) / 2.0 + axis_offset_px - (b - 1) / 2.0) / b
        self._center = axis - (n - 1) / 2.0
        self._added: dict[int, tuple[float, F32]] = {}  # angle: (rotation [deg], filtered lines)
        self._last_publish = -math.inf

    def take_pending(self) -> list[int]:
        """The projections waiting for a reference; none wait afterwards."""
        pending, self.pending = self.pending, []
        return pending

    def add(
        self,
        angle: int,
        rotation_deg: float,
        sample: StepFit,
        reference: StepFit,
        t_arrival: float | None,
    ) -> None:
        """Add a projection: ``sample`` and ``reference`` fits of the live rows (rows, columns),
        taken at ``rotation_deg``; ``t_arrival`` (``time.perf_counter``) of its last frame, for
        the latency (None: not measured)."""
        sig = retrieve(sample, reference)
        lines = np.concatenate(
            [
                _finite(sig.dphi),
                -np.log(_positive(sig.transmission)),
                -np.log(_positive(sig.darkfield)),
            ]
        )
        b = self.bin
        n = self.slices.shape[-1]
        if b > 1:
            lines = lines[:, : n * b].reshape(len(lines), n, b).mean(axis=-1)
        spec = scipy.fft.rfft(lines, n=self._n_pad, axis=-1) * self._response
        q = np.ascontiguousarray(
            scipy.fft.irfft(spec, n=self._n_pad, axis=-1)[:, :n], dtype=np.float32
        )
        self._added[angle] = (rotation_deg, q)
        self._accumulate(rotation_deg, q, self._weight)
        self.stats.live_updates += 1
        if t_arrival is not None:
            self.latency_s.append(time.perf_counter() - t_arrival)

    def withdraw(self, angle: int) -> None:
        """Take a projection's contribution out again (it is being replaced by a re-take)."""
        added = self._added.pop(angle, None)
        if added is not None:
            self._accumulate(added[0], added[1], -self._weight)

    def _accumulate(self, rotation_deg: float, q: F32, weight: float) -> None:
        n = self.slices.shape[-1]
        flat = self.slices.reshape(-1, n, n)
        accumulate_projection(
            flat, q, math.radians(rotation_deg), weight=weight, center_offset=self._center
        )

    def publish(self, projections: int, force: bool = False) -> None:
        """Send the slices (``projections`` of the plan's in them), unless the last update went
        out less than ``interval_s`` ago (``force``: regardless)."""
        if self.publisher is None:
            return
        now = time.monotonic()
        if not force and now - self._last_publish < self.interval_s:
            return
        self._last_publish = now
        self.publisher.publish(
            LiveSlices(
                self.scan_uid,
                CHANNELS,
                self.rows,
                projections,
                self.angles,
                self.voxel_m,
                self.slices,
            )
        )


def _responses(geometry: Geometry, voxel_m: float, n_pad: int, rows: int) -> NDArray[np.complex64]:
    """Filter responses (3 * rows, n_pad // 2 + 1), channel by channel, row by row: Hilbert
    (delta), ramp (mu, dark-field), times the units."""
    # the Hilbert FBP of the phase difference over the shear does not depend on the sampling;
    # the ramp FBP is per (binned) pixel
    scale = np.array(
        [
            geometry.wavelength_m / (2.0 * math.pi * geometry.shear_m),
            1.0 / voxel_m,
            1.0 / voxel_m,
        ],
        np.float32,
    )
    hil = filter_response("hilbert", n_pad) * scale[0]
    ramp = filter_response("ramp", n_pad)
    return np.concatenate(
        [
            np.repeat(hil[None], rows, axis=0),
            np.repeat(ramp[None] * scale[1], rows, axis=0),
            np.repeat(ramp[None] * scale[2], rows, axis=0),
        ]
    ).astype(np.complex64)


def _finite(x: F32) -> F32:
    return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


def _positive(x: F32) -> F32:
    return np.clip(np.nan_to_num(x, nan=1.0, posinf=1.0, neginf=1.0), 1e-6, None).astype(np.float32)
