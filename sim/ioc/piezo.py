"""Closed-loop piezo stage (the G2 phase-stepping axis) as a motor record.

On top of :class:`~sim.ioc.motor.MotorRecord`: after the actuator reaches the commanded position
the servo settles. The position error starts at the hysteresis error (``hysteresis`` times the
sign of the move) and decays exponentially with time constant ``settle_s / 5``; ``DMOV`` returns
to 1 only once ``settle_s`` has passed since the motion arrived *and* the error is within
``tolerance``; a move to where the servo already holds (within ``tolerance``) settles at once.
``RBV`` is the true position plus Gaussian encoder noise (``encoder_noise`` rms, fresh each
update), published every ``publish_s`` while the servo settles (the controller's poll rate; the
settling itself is evaluated every ``tick_s``). While holding, the true position creeps at
``drift_per_s``. A stall (fault injection)
holds the error at ``10 * tolerance``, so ``DMOV`` stays 0 until the stall is cleared or the
move is stopped. Step positions follow Weitkamp et al., Opt. Express 13, 6296 (2005): M steps
over one G2 period.
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from sim.ioc.motor import (
    MSTA_GAIN_SUPPORT,
    MSTA_PRESENT,
    MSTA_PROBLEM,
    MSTA_SLIP_STALL,
    MotorRecord,
    MotorSpec,
)


@dataclass(frozen=True)
class PiezoSpec:
    """Closed-loop behaviour of the piezo (lengths in the motor's EGU, times in seconds)."""

    settle_s: float = 0.005
    tolerance: float = 0.005
    encoder_noise: float = 0.002
    hysteresis: float = 0.0
    drift_per_s: float = 0.0
    tick_s: float = 0.001
    publish_s: float = 0.01
    seed: int | None = None

    def __post_init__(self) -> None:
        for name in ("settle_s", "encoder_noise", "hysteresis"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        for name in ("tolerance", "tick_s", "publish_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")


class PiezoRecord(MotorRecord):
    """A motor record with closed-loop settling, encoder noise, hysteresis, drift and stall."""

    def __init__(self, prefix: str, *, spec: MotorSpec, piezo: PiezoSpec, **kwargs: Any) -> None:
        self.piezo = piezo
        self.stalled = False
        self.error = 0.0  # true position minus commanded position (servo error)
        self._rng = np.random.default_rng(piezo.seed)
        self._hold_since: float | None = None
        super().__init__(prefix, spec=spec, **kwargs)

    @property
    def user_position(self) -> float:
        """True position in user coordinates (commanded position plus the servo error)."""
        return self.dial + self.error + self.offset

    def readback(self) -> float:
        """Encoder reading: true position plus Gaussian noise."""
        noise = self.piezo.encoder_noise
        return self.user_position + (float(self._rng.normal(0.0, noise)) if noise > 0 else 0.0)

    def deadband(self) -> float:
        """In-position tolerance as the encoder sees it (tolerance + 4 sigma of encoder noise)."""
        return self.piezo.tolerance + 4.0 * self.piezo.encoder_noise

    def status_bits(self, *, moving: bool) -> int:
        """MSTA with the closed-loop bits (encoder present, gain support, stall)."""
        bits = super().status_bits(moving=moving) | MSTA_PRESENT | MSTA_GAIN_SUPPORT
        if self.stalled:
            bits |= MSTA_SLIP_STALL | MSTA_PROBLEM
        return bits

    async def set_stalled(self, stalled: bool) -> None:
        """Fault injection: a stalled servo never reaches the in-position tolerance."""
        self.stalled = stalled
        await self.fields.motor_status.write(
            self.status_bits(moving=self.completed_id < self.requested_id)
        )

    async def settle(self, target_dial: float) -> bool:
        """Closed-loop settling after arrival; returns True when STOP ended it."""
        piezo = self.piezo
        loop = asyncio.get_running_loop()
        if not self.travelled and abs(self.error) <= piezo.tolerance and not self.stalled:
            # commanded to where it holds: the servo is in position, nothing to settle
            self._hold_since = loop.time()
            return False
        self.error = piezo.hysteresis * self._direction
        e0 = self.error
        tau = piezo.settle_s / 5.0 if piezo.settle_s > 0 else 0.0
        t0 = min(self.arrival_time, loop.time())  # settling starts when the motion arrived
        next_publish = 0.0
        while True:
            elapsed = loop.time() - t0
            if self.stalled:
                self.error = math.copysign(10.0 * piezo.tolerance, e0 or 1.0)
                await self.fields.motor_status.write(self.status_bits(moving=True))
            elif tau > 0:
                self.error = e0 * math.exp(-elapsed / tau)
            else:
                self.error = 0.0
            if elapsed >= piezo.settle_s and abs(self.error) <= piezo.tolerance:
                break
            if elapsed >= next_publish:
                await self._publish_position()
                next_publish = elapsed + piezo.publish_s
            if self._interrupted():
                return self._stop_requested
            # Wakes on a fixed schedule from t0 (a late wake-up shortens the next sleep, so the
            # loop's latency does not add up over the settling time): at the settle time, at
            # each publication, and every tick after the settle time while out of tolerance.
            if elapsed < piezo.settle_s:
                wake = min(piezo.settle_s, next_publish)
            else:
                wake = min((math.floor(elapsed / piezo.tick_s) + 1) * piezo.tick_s, next_publish)
            await asyncio.sleep(max(wake - (loop.time() - t0), 0.0))
            if self._interrupted():
                return self._stop_requested
        self._hold_since = loop.time()
        return False

    async def drift_loop(self, period_s: float = 0.1) -> None:
        """While holding, creep at ``drift_per_s`` and publish the readback every period."""
        if self.piezo.drift_per_s == 0:
            return
        loop = asyncio.get_running_loop()
        last = loop.time()
        while True:
            await asyncio.sleep(period_s)
            now = loop.time()
            if self.completed_id >= self.requested_id:
                self.error += self.piezo.drift_per_s * (now - last)
                await self._publish_position()
            last = now
