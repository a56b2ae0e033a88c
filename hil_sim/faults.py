"""Fault injection: what can go wrong between a meter and the concentrator.

Each request a meter would answer draws at most one fault from the plan, per meter or
bus-wide, from a seeded generator so a failing test can be replayed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

from hil_sim.errors import OptionError, SpecError

FaultKind = Literal["no_reply", "late_reply", "bad_checksum", "truncated", "noise", "error_reply"]
FAULT_KINDS: tuple[FaultKind, ...] = (
    "no_reply",
    "late_reply",
    "bad_checksum",
    "truncated",
    "noise",
    "error_reply",
)


@dataclass(frozen=True)
class OfflineWindow:
    """The meter is silent from ``start`` to ``end`` (simulated unix seconds)."""

    meter: str | None  # None: the whole bus (a cut cable)
    start: float
    end: float


@dataclass(frozen=True)
class CoverOpen:
    """Someone opens the meter's cover ``at`` simulated seconds after the simulator
    starts: its cover-open counter (DL/T 645 03300D00) goes up by one, as when a bypass
    is fitted inside. The theft analytics read the counter's increase as tamper."""

    meter: str | None  # None: every meter of the bus
    at: float


@dataclass
class FaultPlan:
    rates: dict[str, float] = field(default_factory=dict)  # kind -> probability, bus-wide
    per_meter: dict[str, dict[str, float]] = field(default_factory=dict)
    offline: list[OfflineWindow] = field(default_factory=list)
    cover_opens: list[CoverOpen] = field(default_factory=list)
    late_by: float = 1.0  # seconds a late reply comes after the normal one
    seed: int = 0
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        for kind in [*self.rates, *(k for r in self.per_meter.values() for k in r)]:
            if kind not in FAULT_KINDS:
                raise SpecError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        self._rng = random.Random(self.seed)

    @classmethod
    def uniform(cls, total_rate: float, seed: int = 0) -> FaultPlan:
        """Spread ``total_rate`` evenly over every fault kind but error replies."""
        kinds = [k for k in FAULT_KINDS if k != "error_reply"]
        return cls(rates={k: total_rate / len(kinds) for k in kinds}, seed=seed)

    def is_offline(self, meter: str, t: float) -> bool:
        return any(
            w.start <= t < w.end and (w.meter is None or w.meter == meter) for w in self.offline
        )

    def draw(self, meter: str) -> FaultKind | None:
        rates = self.per_meter.get(meter, self.rates)
        x = self._rng.random()
        for kind in FAULT_KINDS:
            p = rates.get(kind, 0.0)
            if x < p:
                return kind
            x -= p
        return None

    def rng(self) -> random.Random:
        return self._rng


def parse_fault_option(text: str) -> tuple[str | None, str, float]:
    """``KIND=P`` or ``KIND=P@METER`` → (meter, kind, probability)."""
    meter: str | None = None
    if "@" in text:
        text, meter = text.split("@", 1)
    kind, _, prob = text.partition("=")
    if kind not in FAULT_KINDS:
        raise OptionError(f"fault {kind!r}: expected one of {', '.join(FAULT_KINDS)}")
    try:
        p = float(prob)
    except ValueError:
        raise OptionError(f"fault {kind}: probability {prob!r} is not a number") from None
    if not 0.0 <= p <= 1.0:
        raise OptionError(f"fault {kind}: probability {p} outside 0..1")
    return meter, kind, p


def parse_offline_option(text: str) -> OfflineWindow:
    """``METER@START-END`` or ``*@START-END`` (seconds from simulator start)."""
    meter, _, span = text.partition("@")
    start, _, end = span.partition("-")
    try:
        s, e = float(start), float(end)
    except ValueError:
        raise OptionError(f"offline window {text!r}: expected METER@START-END in seconds") from None
    if e <= s:
        raise OptionError(f"offline window {text!r}: end must be after start")
    return OfflineWindow(None if meter in ("*", "") else meter, s, e)


def parse_cover_open_option(text: str) -> CoverOpen:
    """``METER@SECONDS`` or ``*@SECONDS`` (simulated seconds from simulator start)."""
    meter, sep, at = text.partition("@")
    try:
        seconds = float(at)
    except ValueError:
        seconds = -1.0
    if not sep or seconds < 0:
        raise OptionError(
            f"cover opening {text!r}: expected METER@SECONDS with SECONDS >= 0 "
            "(simulated seconds after start)"
        )
    return CoverOpen(None if meter in ("*", "") else meter, seconds)
