"""Wall time for slot stamps, monotonic time for timeouts, and an optional time scale.

Slots belong to the wall clock (docs/architecture.md, "Time"); every wait and timeout
is measured on the monotonic clock so an NTP step or an RTC reset cannot stretch or skip
it. The scaled clock lets tests and demos run 15-minute slots in seconds: wall time then
advances ``scale`` times faster than real time, while bus timing stays real.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

log = logging.getLogger(__name__)


class Clock(Protocol):
    scale: float

    def wall(self) -> float: ...

    def monotonic(self) -> float: ...

    async def sleep_wall(self, seconds: float) -> None:
        """Sleep for ``seconds`` of wall-clock time (real seconds × scale)."""
        ...


def scaled_start(scale: float, origin: float | None, now: float | None = None) -> float:
    """Scaled wall time at real time ``now``: with an origin it is the same function of
    real time in every process, so a restarted daemon (or a simulator started apart from
    it) goes on with one scaled clock instead of starting its own."""
    now = time.time() if now is None else now
    return now if origin is None else origin + (now - origin) * scale


@dataclass
class SystemClock:
    scale: float = 1.0

    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep_wall(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


@dataclass
class ScaledClock:
    """Wall time runs ``scale`` times faster than real time from ``start``."""

    scale: float = 1.0
    start: float = field(default_factory=time.time)
    offset: float = 0.0  # a test steps the "wall clock" by changing this
    # A file holding the offset in seconds, re-read once a real second: a chaos run steps
    # a running daemon's wall clock as an NTP step would, without touching the machine's.
    step_file: Path | None = None
    step_every_s: float = 1.0
    _mono0: float = field(default_factory=time.monotonic)
    _step_read_at: float = -1.0

    def wall(self) -> float:
        if self.step_file is not None:
            self._read_step()
        return self.start + (time.monotonic() - self._mono0) * self.scale + self.offset

    def _read_step(self) -> None:
        now = time.monotonic()
        if self._step_read_at >= 0 and now - self._step_read_at < self.step_every_s:
            return
        self._step_read_at = now
        assert self.step_file is not None
        try:
            text = self.step_file.read_text().strip()
        except FileNotFoundError:
            text = "0"
        except OSError:
            return  # keep the last step: a transient read error is not a clock step
        try:
            self.offset = float(text or "0")
        except ValueError:
            log.warning("clock step file %s: %r is not a number of seconds", self.step_file, text)

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep_wall(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.scale)
