"""A reading and an event: the two records a concentrator produces and the receiver
stores. Both ends build them, so they live here, not in either end's storage."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Reading:
    """One register value for one wall-clock slot.

    ``slot`` is the start of the slot in unix seconds. ``value`` is the exact decimal
    string, never a float. ``read_at`` is when the meter was really read; it is kept
    to the millisecond.
    """

    meter: str
    quantity: str
    slot: int
    value: str
    unit: str
    read_at: float
    source: str = "poll"  # "poll" | "backfill" | "ondemand"


@dataclass(frozen=True, slots=True)
class Event:
    """Something the cloud must hear about (loss, corruption, clock drift...).

    ``detail`` must be serialisable as JSON. It is left out of the hash so that events
    can still be used in sets.
    """

    kind: str
    severity: str
    meter: str | None
    detail: dict[str, object] = field(hash=False)
    at: float
