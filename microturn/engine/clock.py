"""Clocks: the same engine loop runs against wall time (live) or as fast as it can
(offline runs, tests, benchmarks)."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the clock started."""

    def sleep_until(self, t: float) -> None:
        """Return at time t (at once if t has passed)."""


class RealClock:
    """Wall time (monotonic). A late tick is never waited for: sleep_until returns at once."""

    def __init__(self) -> None:
        self._start = time.monotonic()

    def now(self) -> float:
        return time.monotonic() - self._start

    def sleep_until(self, t: float) -> None:
        delay = t - self.now()
        if delay > 0:
            time.sleep(delay)


class SimulatedClock:
    """Time that jumps to each deadline at once: an offline run costs only compute."""

    def __init__(self) -> None:
        self._now = 0.0

    def now(self) -> float:
        return self._now

    def sleep_until(self, t: float) -> None:
        self._now = max(self._now, t)
