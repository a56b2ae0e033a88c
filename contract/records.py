"""A reading and an event: the two records a concentrator produces and the receiver
stores. Both ends build them, so they live here, not in either end's storage."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


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


def _slot_setters() -> tuple[Callable[[Reading, Any], None], ...]:
    return tuple(
        Reading.__dict__[f].__set__
        for f in ("meter", "quantity", "slot", "value", "unit", "read_at", "source")
    )


_SET = _slot_setters()
_new = object.__new__


def decoded_reading(
    meter: str, quantity: str, slot: int, value: str, unit: str, read_at: float, source: str
) -> Reading:
    """A `Reading` as its constructor makes it, for a decoder that makes hundreds of
    thousands a second: a frozen dataclass's ``__init__`` sets each field through
    ``object.__setattr__``; this writes the slots directly (half the time)."""
    r: Reading = _new(Reading)
    sm, sq, ss, sv, su, sr, so = _SET
    sm(r, meter)
    sq(r, quantity)
    ss(r, slot)
    sv(r, value)
    su(r, unit)
    sr(r, read_at)
    so(r, source)
    return r


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
