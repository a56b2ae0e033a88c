"""Simulated wall clock, optionally running faster than real time.

Meters integrate energy and keep their own clocks on simulated time, so a test can run
four 15-minute slots in seconds. Wire and turnaround delays stay in real seconds: the
bus must stay exactly as slow as a real one whatever the time scale.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class SimClock:
    scale: float = 1.0
    start: float = field(default_factory=time.time)
    _mono0: float = field(default_factory=time.monotonic)

    @classmethod
    def from_origin(cls, scale: float, origin: float | None) -> SimClock:
        """A clock on the same scaled time line as `concentrator run --time-origin`."""
        from concentrator.public import scaled_start

        return cls(scale=scale, start=scaled_start(scale, origin) if scale != 1.0 else time.time())

    def now(self) -> float:
        """Simulated unix time."""
        return self.start + (time.monotonic() - self._mono0) * self.scale
