"""Beam shutter and storage-ring current of the simulated beamline.

- Shutter: ``Open`` (enum Close/Open) is the command; ``Open_RBV`` (enum Closed/Open) follows
  after ``move_s``; a put to ``Open`` completes when the readback has followed.
- Ring current: ``Current`` [mA], nominal value plus Gaussian noise, refreshed every
  ``period_s``. A beam dump (fault injection) forces 0 mA for a given time, then the beam returns.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import numpy as np
from caproto import ChannelType
from caproto.server import PVGroup, pvproperty

SHUTTER_COMMANDS = ("Close", "Open")
SHUTTER_STATES = ("Closed", "Open")


class ShutterGroup(PVGroup):
    """Beam shutter: ``Open`` command and ``Open_RBV`` readback."""

    open_cmd = pvproperty(
        name="Open",
        value="Close",
        dtype=ChannelType.ENUM,
        enum_strings=SHUTTER_COMMANDS,
        record="bo",
        doc="shutter command (Close/Open); put completes when the readback follows",
    )
    open_rbv = pvproperty(
        name="Open_RBV",
        value="Closed",
        dtype=ChannelType.ENUM,
        enum_strings=SHUTTER_STATES,
        read_only=True,
        record="bi",
        doc="shutter state (Closed/Open)",
    )

    def __init__(self, prefix: str, *, move_s: float = 0.05, **kwargs: Any) -> None:
        if move_s < 0:
            raise ValueError(f"move_s must be >= 0, got {move_s!r}")
        self.move_s = move_s
        super().__init__(prefix, **kwargs)

    @property
    def is_open(self) -> bool:
        """Whether the shutter is open (readback)."""
        return bool(self.open_rbv.value == "Open")

    @open_cmd.putter  # type: ignore[no-redef]
    async def open_cmd(self, instance: Any, value: str) -> str:
        state = SHUTTER_STATES[SHUTTER_COMMANDS.index(value)]
        if self.open_rbv.value != state:
            await asyncio.sleep(self.move_s)
            await self.open_rbv.write(state)
        return value


class BeamGroup(PVGroup):
    """Storage-ring current (the dose monitor for normalisation and suspenders)."""

    current = pvproperty(
        name="Current",
        value=200.0,
        dtype=ChannelType.DOUBLE,
        read_only=True,
        precision=3,
        units="mA",
        record="ai",
        doc="storage-ring current [mA]",
    )

    def __init__(
        self,
        prefix: str,
        *,
        nominal_ma: float = 200.0,
        noise_ma: float = 0.01,
        period_s: float = 0.5,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not nominal_ma > 0:
            raise ValueError(f"nominal_ma must be > 0, got {nominal_ma!r}")
        if noise_ma < 0:
            raise ValueError(f"noise_ma must be >= 0, got {noise_ma!r}")
        if not period_s > 0:
            raise ValueError(f"period_s must be > 0, got {period_s!r}")
        self.nominal_ma = nominal_ma
        self.noise_ma = noise_ma
        self.period_s = period_s
        self.dumped = False
        self._rng = np.random.default_rng(seed)
        self._wake = asyncio.Event()
        super().__init__(prefix, **kwargs)

    def sample_ma(self) -> float:
        """One reading of the ring current [mA] in the present state."""
        if self.dumped:
            return 0.0
        noise = float(self._rng.normal(0.0, self.noise_ma)) if self.noise_ma > 0 else 0.0
        return self.nominal_ma + noise

    @current.startup  # type: ignore[no-redef]
    async def current(self, instance: Any, async_lib: Any) -> None:
        while True:
            await instance.write(self.sample_ma())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.period_s)

    async def dump(self, duration_s: float) -> None:
        """Beam dump: 0 mA for ``duration_s`` seconds, then the beam recovers."""
        if not duration_s > 0:
            raise ValueError(f"duration_s must be > 0, got {duration_s!r}")
        self.dumped = True
        self._wake.set()
        await self.current.write(0.0)
        try:
            await asyncio.sleep(duration_s)
        finally:
            self.dumped = False
            await self.current.write(self.sample_ma())
            self._wake.set()
