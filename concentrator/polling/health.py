"""Meter health: online, degraded, offline — and an event whenever it changes.

A meter that failed its last job is degraded; after ``offline_after`` failed jobs in a
row it is offline and polled with a single attempt per slot, so a dead meter does not
eat the bus time of its neighbours with retries. One success brings it back online.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum


class Health(StrEnum):
    ONLINE = "online"
    DEGRADED = "degraded"
    OFFLINE = "offline"


@dataclass(slots=True)  # one per meter: no __dict__ each
class MeterHealth:
    state: Health = Health.ONLINE
    failures_in_row: int = 0
    last_ok: float | None = None
    last_error: str | None = None


class HealthTracker:
    def __init__(
        self,
        on_change: Callable[[str, Health, Health, str | None], None],
        *,
        offline_after: int = 3,
    ) -> None:
        self._meters: dict[str, MeterHealth] = {}
        self._on_change = on_change
        self.offline_after = offline_after

    def get(self, meter: str) -> MeterHealth:
        return self._meters.setdefault(meter, MeterHealth())

    def peek(self, meter: str) -> MeterHealth | None:
        """The meter's health, or None when no job has been tried on it yet."""
        return self._meters.get(meter)

    def success(self, meter: str, at: float) -> None:
        h = self.get(meter)
        h.failures_in_row = 0
        h.last_ok = at
        self._set(meter, h, Health.ONLINE, None)

    def failure(self, meter: str, reason: str) -> None:
        h = self.get(meter)
        h.failures_in_row += 1
        h.last_error = reason
        new = Health.OFFLINE if h.failures_in_row >= self.offline_after else Health.DEGRADED
        self._set(meter, h, new, reason)

    def _set(self, meter: str, h: MeterHealth, new: Health, reason: str | None) -> None:
        if h.state != new:
            old, h.state = h.state, new
            self._on_change(meter, old, new, reason)

    def counts(self) -> dict[str, int]:
        out = {state.value: 0 for state in Health}
        for h in self._meters.values():
            out[h.state.value] += 1
        return out

    def forget(self, keep: set[str]) -> None:
        for meter in list(self._meters):
            if meter not in keep:
                del self._meters[meter]
