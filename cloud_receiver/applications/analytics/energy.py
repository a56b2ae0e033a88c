"""Energy from cumulative registers: per day from boundary readings, per slot from deltas.

Every analytics report starts here. The forward active energy register
(``energy_fwd_total``, kWh, DL/T 645 resolution 0.01 kWh) only grows, so the energy of
an interval is the difference of two readings, times the meter's multiplier (CT ratio).

**Day energy** = B(next day 00:00) − B(day 00:00), where the *boundary reading* B(t) of
local midnight t is, in this order:

1. ``freeze`` — the meter's own daily freeze of that day (``frozen_daily_energy_fwd_total``,
   stored under a slot of the same local day, as the concentrator's daily-freeze task does):
   the register at the meter's midnight, unaffected by how long the bus took to reach it;
2. ``slot`` — the interval reading of the 00:00 slot;
3. ``interpolated`` — linear between the nearest interval readings before and after t,
   only if both are within ``max_gap`` (default 60 min) of t, rounded to 0.01 kWh. The
   day then counts as *estimated*;
4. otherwise none: the meter is *missing* that day (never a zero).

A register that went backwards (meter exchanged, register reset) also makes the day
missing, with that reason. **Slot energy** (load curves, time-of-use) spreads each delta
between consecutive readings evenly over the 15-minute slots it covers; slots inside a
gap longer than ``max_gap`` are *estimated* (they still sum to the boundary difference,
but a load curve shows them as a gap).

Days are local days at a fixed UTC offset (default +08:00, China Standard Time, which has
no daylight saving): every day has 96 quarter-hour slots.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Literal, Protocol

from cloud_receiver.errors import EXIT_NO_DATA, ReceiverError
from cloud_receiver.storage import MeterRecord
from contract import quantities

# Canonical names (docs/quantities.md): every protocol's meters are stored under them.
ENERGY_FWD = quantities.ENERGY_FWD_TOTAL
ENERGY_REV = quantities.ENERGY_REV_TOTAL
FREEZE_FWD = quantities.FROZEN_ENERGY_FWD_TOTAL
CURRENTS = quantities.PHASE_CURRENTS

SLOT_S = 900  # 15-minute slots
SLOTS_PER_DAY = 96
DAY_S = 86_400
DEFAULT_MAX_GAP_S = 3600
DEFAULT_TZ = dt.timezone(dt.timedelta(hours=8))  # China Standard Time
CENT = Decimal("0.01")

BoundarySource = Literal["freeze", "slot", "interpolated"]

Series = list[tuple[int, Decimal]]  # (slot, value) sorted by slot


class Readings(Protocol):
    """Where reports read register series from: a `Storage`, or a cache in front of one
    that returns the same (`cloud_receiver.storage.series_cache`)."""

    def series(
        self, quantities: Sequence[str], meters: Sequence[str], since: int, until: int
    ) -> list[tuple[str, str, int, str]]: ...


class NotEnoughData(ReceiverError):
    """The stored readings do not cover what the report needs: widen the range or wait."""

    exit_code = EXIT_NO_DATA


def parse_tz(text: str) -> dt.timezone:
    """``+08:00``, ``-05:30``, ``+8`` or ``UTC`` → a fixed-offset zone; else ValueError."""
    if text.upper() in ("UTC", "Z"):
        return dt.UTC
    m = re.fullmatch(r"([+-])(\d{1,2})(?::?(\d{2}))?", text)
    if not m or int(m[2]) > 14 or int(m[3] or 0) >= 60:
        raise ValueError(f"{text!r}: expected a UTC offset such as +08:00")
    offset = dt.timedelta(hours=int(m[2]), minutes=int(m[3] or 0))
    return dt.timezone(-offset if m[1] == "-" else offset)


def midnight(day: dt.date, tz: dt.tzinfo) -> int:
    return int(dt.datetime.combine(day, dt.time(), tzinfo=tz).timestamp())


def days_between(first: dt.date, end: dt.date) -> list[dt.date]:
    """``first`` up to and excluding ``end``."""
    return [first + dt.timedelta(days=i) for i in range((end - first).days)]


@dataclass
class MeterData:
    """One meter's stored readings that analytics uses, values as exact decimals."""

    by_quantity: dict[str, Series]

    def get(self, quantity: str) -> Series:
        return self.by_quantity.get(quantity, [])


def load(
    storage: Readings,
    meters: Iterable[str],
    quantities: Sequence[str],
    since: int,
    until: int,
) -> dict[str, MeterData]:
    """Readings of ``quantities`` with ``since <= slot < until``, per meter (every meter
    asked for is in the result, with no readings if none were stored). A value that is
    not a decimal number is skipped: it cannot be an energy register."""
    wanted = list(dict.fromkeys(meters))
    grouped: dict[str, dict[str, Series]] = {m: defaultdict(list) for m in wanted}
    for meter, quantity, slot, value in storage.series(quantities, wanted, since, until):
        try:
            number = Decimal(value)
        except InvalidOperation:
            continue
        if number.is_finite():
            grouped[meter][quantity].append((slot, number))
    return {m: MeterData(dict(q)) for m, q in grouped.items()}


def load_days(
    storage: Readings,
    meters: Iterable[str],
    first: dt.date,
    end: dt.date,
    tz: dt.tzinfo,
    max_gap_s: int = DEFAULT_MAX_GAP_S,
    quantities: Sequence[str] = (ENERGY_FWD, FREEZE_FWD),
) -> dict[str, MeterData]:
    """What the days ``first``..``end`` (end excluded) need: both boundaries, the last
    day's freeze, and ``max_gap_s`` either side for interpolation."""
    since = midnight(first, tz) - max_gap_s
    until = midnight(end, tz) + max(max_gap_s, DAY_S) + 1
    return load(storage, meters, quantities, since, until)


@dataclass(frozen=True)
class Boundary:
    value: Decimal
    source: BoundarySource


def _slot_of(row: tuple[int, Decimal]) -> int:
    return row[0]


def boundary(
    data: MeterData, t: int, tz: dt.tzinfo, max_gap_s: int = DEFAULT_MAX_GAP_S
) -> Boundary | str:
    """The register at local midnight ``t`` (see the module notes), or why there is none."""
    day_end = t + DAY_S
    for slot, value in data.get(FREEZE_FWD):
        if t <= slot < day_end:
            return Boundary(value, "freeze")
    fwd = data.get(ENERGY_FWD)
    i = bisect.bisect_left(fwd, t, key=_slot_of)  # no copy of the slots: a day each call
    if i < len(fwd) and fwd[i][0] == t:
        return Boundary(fwd[i][1], "slot")
    before = fwd[i - 1] if i > 0 else None
    after = fwd[i] if i < len(fwd) else None
    if before and after and t - before[0] <= max_gap_s and after[0] - t <= max_gap_s:
        (s1, v1), (s2, v2) = before, after
        value = v1 + (v2 - v1) * Decimal(t - s1) / Decimal(s2 - s1)
        return Boundary(value.quantize(CENT, ROUND_HALF_EVEN), "interpolated")
    stamp = dt.datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M")
    near = [abs(r[0] - t) for r in (before, after) if r]
    nearest = f", nearest reading {min(near) // 60} min away" if near else ", no reading near"
    return (
        f"no boundary reading at {stamp} (no daily freeze, no 00:00 reading{nearest};"
        f" interpolation needs readings within {max_gap_s // 60} min on both sides)"
    )


@dataclass(frozen=True)
class MeterDay:
    meter: str
    day: dt.date
    kwh: Decimal | None  # register difference × multiplier; None: missing
    estimated: bool  # a boundary was interpolated
    problem: str  # why kwh is None ("" otherwise)


def meter_days(
    record: MeterRecord,
    data: MeterData,
    days: Sequence[dt.date],
    tz: dt.tzinfo,
    max_gap_s: int = DEFAULT_MAX_GAP_S,
) -> list[MeterDay]:
    """The energy of each day (local), from its two boundary readings."""
    if not days:
        return []
    edges = [*days, days[-1] + dt.timedelta(days=1)]
    bounds = [boundary(data, midnight(d, tz), tz, max_gap_s) for d in edges]
    out: list[MeterDay] = []
    for day, start, end in zip(days, bounds, bounds[1:], strict=False):
        if isinstance(start, str) or isinstance(end, str):
            problem = start if isinstance(start, str) else end
            out.append(MeterDay(record.meter, day, None, False, str(problem)))
        elif end.value < start.value:
            out.append(
                MeterDay(
                    record.meter,
                    day,
                    None,
                    False,
                    f"register went backwards ({start.value} → {end.value} kWh):"
                    " meter exchanged or reset?",
                )
            )
        else:
            estimated = "interpolated" in (start.source, end.source)
            kwh = (end.value - start.value) * record.multiplier
            out.append(MeterDay(record.meter, day, kwh, estimated, ""))
    return out


@dataclass(frozen=True)
class SlotEnergy:
    slot: int  # slot start, unix seconds
    kwh: float  # × multiplier
    measured: bool  # False: spread over a gap longer than max_gap

    @property
    def kw(self) -> float:
        return self.kwh * 3600 / SLOT_S


def slot_energy(
    record: MeterRecord,
    data: MeterData,
    since: int,
    until: int,
    max_gap_s: int = DEFAULT_MAX_GAP_S,
) -> dict[int, SlotEnergy]:
    """Energy per 15-minute slot in ``[since, until)`` from consecutive readings of
    ``energy_fwd_total``; slots before the first or after the last reading are absent."""
    out: dict[int, SlotEnergy] = {}
    fwd = data.get(ENERGY_FWD)
    m = float(record.multiplier)
    for (s1, v1), (s2, v2) in itertools.pairwise(fwd):
        if s2 <= since or s1 >= until or v2 < v1:
            continue  # outside the range, or a register reset: no energy to spread
        per_slot = float(v2 - v1) * m * SLOT_S / (s2 - s1)
        measured = s2 - s1 <= max_gap_s
        first = s1 if s1 >= since else s1 + -(-(since - s1) // SLOT_S) * SLOT_S
        for slot in range(first, min(s2, until), SLOT_S):
            out[slot] = SlotEnergy(slot, per_slot, measured)
    return out


def add_slots(
    parts: Sequence[dict[int, SlotEnergy]], since: int, until: int
) -> list[SlotEnergy | None]:
    """Per slot in ``[since, until)``: the sum over meters, or None when a meter lacks it.

    Walks the first meter's slots rather than every slot of the range: a year's report
    of a meter with a few months of data would otherwise look up 35,000 empty slots."""
    slots = range(since, until, SLOT_S)
    total: list[SlotEnergy | None] = [None] * len(slots)
    if not parts:
        return total
    first, rest = parts[0], parts[1:]
    for slot, got in first.items():
        i, off = divmod(slot - since, SLOT_S)
        if off or not 0 <= i < len(total):
            continue  # not a slot of the range
        if not rest:  # one meter (a customer's page): the sum of one is itself (but -0.0)
            total[i] = got if got.kwh else SlotEnergy(slot, 0 + got.kwh, got.measured)
            continue
        present = [got]
        for p in rest:
            other = p.get(slot)
            if other is None:
                break
            present.append(other)
        else:
            total[i] = SlotEnergy(
                slot, sum(g.kwh for g in present), all(g.measured for g in present)
            )
    return total


def growth(series: Series, since: int, until: int) -> Decimal:
    """How much a cumulative register grew in ``(since, until]``: the sum of the rises
    between consecutive readings that end in that range (a reset adds nothing)."""
    total = Decimal(0)
    for (_, v1), (s2, v2) in itertools.pairwise(series):
        if since < s2 <= until and v2 > v1:
            total += v2 - v1
    return total
