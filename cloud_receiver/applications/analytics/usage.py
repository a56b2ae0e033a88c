"""Usage reports per meter, account or area: daily and monthly energy, time-of-use
split, peak hour and the load curve.

- *meter*: that meter; *account*: the sum of the account's meters; *area*: the area's
  total meter (the energy the transformer supplied, losses included).
- Daily energy comes from boundary readings (`.energy`); a day where any
  of the meters is missing is *incomplete* (no energy shown), one with an interpolated
  boundary *estimated*. Monthly energy is the sum of a calendar month's days in the
  range, complete only if all of them are.
- The time-of-use split, peak hour and load curve come from slot energies: kW =
  ΔkWh / Δh per 15-minute slot. Energy over a reading gap is spread evenly over the gap,
  so the split still adds up to the day's energy; such slots are left out of the load
  curve and the maximum demand.
- Time-of-use periods (`TouSchedule`) are configurable; the default is a common Chinese
  schedule: **peak 08:00-11:00 and 18:00-23:00, valley 23:00-07:00, flat otherwise**
  (07:00-08:00, 11:00-18:00). Provinces differ (some add a sharp period, 尖峰, inside
  the evening peak): pass ``--tou``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Literal

from cloud_receiver.applications.analytics.energy import (
    DEFAULT_MAX_GAP_S,
    SLOT_S,
    SLOTS_PER_DAY,
    MeterDay,
    Readings,
    SlotEnergy,
    add_slots,
    days_between,
    load_days,
    meter_days,
    midnight,
    slot_energy,
)
from cloud_receiver.applications.fleet.archive import Archive, ArchiveError
from cloud_receiver.storage import MeterRecord

Scope = Literal["meter", "account", "area"]
PERIODS = ("sharp", "peak", "flat", "valley")  # 尖, 峰, 平, 谷
DEFAULT_TOU = "peak=08-11,18-23;valley=23-07"


@dataclass(frozen=True)
class TouSchedule:
    """The period of each quarter-hour of the local day."""

    by_slot: tuple[str, ...]  # 96 period names
    spec: str

    def period(self, slot_of_day: int) -> str:
        return self.by_slot[slot_of_day]

    @property
    def periods(self) -> tuple[str, ...]:
        return tuple(p for p in PERIODS if p in self.by_slot)


def parse_tou(spec: str = DEFAULT_TOU) -> TouSchedule:
    """``peak=08-11,18-23;valley=23-07`` (HH or HH:MM on the quarter hour, ranges may
    wrap midnight, ``24`` is the day's end); slots named nowhere are flat. ValueError if
    the spec is malformed or two periods overlap."""
    by_slot: list[str | None] = [None] * SLOTS_PER_DAY
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        name, eq, ranges = part.partition("=")
        name = name.strip().lower()
        if not eq or name not in PERIODS or name == "flat":
            raise ValueError(
                f"{part!r}: expected NAME=HH-HH[,HH-HH…] with NAME one of sharp, peak,"
                " valley (flat is what is left)"
            )
        for r in ranges.split(","):
            m = re.fullmatch(r"\s*(\d{1,2})(?::(\d{2}))?-(\d{1,2})(?::(\d{2}))?\s*", r)
            if not m:
                raise ValueError(f"{r!r} in {part!r}: expected HH-HH or HH:MM-HH:MM")
            start = _quarter(int(m[1]), int(m[2] or 0), r)
            end = _quarter(int(m[3]), int(m[4] or 0), r)
            if start == end:
                raise ValueError(f"{r!r}: an empty range")
            q = start
            while q != end:
                if by_slot[q] is not None:
                    at = f"{q // 4:02d}:{q % 4 * 15:02d}"
                    raise ValueError(f"{at} is both {by_slot[q]} and {name}")
                by_slot[q] = name
                q = (q + 1) % SLOTS_PER_DAY
    return TouSchedule(tuple(p or "flat" for p in by_slot), spec)


def _quarter(hour: int, minute: int, text: str) -> int:
    if not (0 <= hour <= 24 and minute in (0, 15, 30, 45)) or (hour == 24 and minute):
        raise ValueError(f"{text!r}: times must be 00:00-24:00 on the quarter hour")
    return (hour * 4 + minute // 15) % SLOTS_PER_DAY


@dataclass(frozen=True)
class UsageDay:
    day: dt.date
    kwh: Decimal | None  # from boundary readings; None when a meter is missing
    tou: dict[str, float]  # kWh per period, from slot energies
    peak_hour: int | None  # local hour (0-23) with the most energy
    max_kw: float | None  # highest 15-minute demand among measured slots
    status: str  # ok | estimated | incomplete
    note: str


@dataclass(frozen=True)
class UsageMonth:
    month: str  # YYYY-MM
    kwh: Decimal | None  # None unless every day in range is complete
    days: int  # days of the month inside the range
    missing_days: int
    tou: dict[str, float]


@dataclass(frozen=True)
class UsageReport:
    scope: Scope
    name: str
    meters: tuple[MeterRecord, ...]
    first: dt.date
    end: dt.date
    tou_spec: str
    days: tuple[UsageDay, ...]
    months: tuple[UsageMonth, ...]
    curve: tuple[SlotEnergy | None, ...]  # every slot of the range, None: no measured load
    since: int

    @property
    def total_kwh(self) -> Decimal | None:
        """The range's energy; None when a day is incomplete."""
        total = Decimal("0.00")
        for d in self.days:
            if d.kwh is None:
                return None
            total += d.kwh
        return total

    @property
    def peak_hour(self) -> int | None:
        """The local hour with the highest mean load over the range."""
        by_hour = [0.0] * 24
        seen = False
        for i, s in enumerate(self.curve):
            if s is not None:
                by_hour[(i % SLOTS_PER_DAY) // 4] += s.kwh
                seen = True
        return by_hour.index(max(by_hour)) if seen else None


def meters_of(archive: Archive, scope: Scope, name: str) -> list[MeterRecord]:
    if scope == "meter":
        return [archive.meter(name)]
    if scope == "account":
        return archive.account(name)
    area = archive.area(name)
    if area.total is None:
        raise ArchiveError(
            f"area {name} has no total meter in the archive: import a row with role=total"
        )
    return [area.total]


def usage_report(
    storage: Readings,
    archive: Archive,
    scope: Scope,
    name: str,
    first: dt.date,
    end: dt.date,
    tz: dt.tzinfo,
    tou: TouSchedule,
    max_gap_s: int = DEFAULT_MAX_GAP_S,
) -> UsageReport:
    meters = meters_of(archive, scope, name)
    days = days_between(first, end)
    since, until = midnight(first, tz), midnight(end, tz)
    data = load_days(storage, [m.meter for m in meters], first, end, tz, max_gap_s)
    per_meter = [meter_days(m, data[m.meter], days, tz, max_gap_s) for m in meters]
    slots = [slot_energy(m, data[m.meter], since, until, max_gap_s) for m in meters]
    summed = add_slots(slots, since, until)
    out_days = [_day(day, i, per_meter, summed, tou) for i, day in enumerate(days)]
    curve = tuple([s if s is not None and s.measured else None for s in summed])
    return UsageReport(
        scope,
        name,
        tuple(meters),
        first,
        end,
        tou.spec,
        tuple(out_days),
        tuple(_months(out_days, tou)),
        curve,
        since,
    )


def subrange(report: UsageReport, first: dt.date, end: dt.date, tou: TouSchedule) -> UsageReport:
    """The days ``first`` ≤ day < ``end`` of a report over a wider range, without
    reading the database again (a page showing a month and the year around it)."""
    if first < report.first or end > report.end or end <= first:
        raise ValueError(f"{first}..{end} is not inside {report.first}..{report.end}")
    days = tuple(d for d in report.days if first <= d.day < end)
    skip = (first - report.first).days * SLOTS_PER_DAY
    curve = report.curve[skip : skip + len(days) * SLOTS_PER_DAY]
    return replace(report, first=first, end=end, days=days,
                   months=tuple(_months(days, tou)), curve=curve,
                   since=report.since + skip * SLOT_S)  # fmt: skip


def _day(
    day: dt.date,
    i: int,
    per_meter: Sequence[Sequence[MeterDay]],
    summed: Sequence[SlotEnergy | None],
    tou: TouSchedule,
) -> UsageDay:
    parts = [m[i] for m in per_meter]
    missing = [p for p in parts if p.kwh is None]
    kwh = None if missing else sum((p.kwh for p in parts if p.kwh is not None), Decimal("0.00"))
    slots = summed[i * SLOTS_PER_DAY : (i + 1) * SLOTS_PER_DAY]
    split = dict.fromkeys(tou.periods, 0.0)
    by_hour = [0.0] * 24
    if not any(slots):  # SlotEnergy is always true: a day without data (most of a year)
        known: list[SlotEnergy] = []
    else:
        for q, s in enumerate(slots):
            if s is not None:
                split[tou.period(q)] += s.kwh
                by_hour[q // 4] += s.kwh
        known = [s for s in slots if s is not None]
    measured = [s.kw for s in known if s.measured]
    notes = [f"{p.meter}: {p.problem}" for p in missing]
    if any(p.estimated for p in parts):
        notes.append("a midnight reading was interpolated")
    if len(known) < len(slots):
        notes.append(f"time-of-use split covers {len(known)} of {len(slots)} slots")
    if len(measured) < len(known):
        notes.append(f"{len(known) - len(measured)} slots spread over a reading gap")
    status = "incomplete" if missing else "estimated" if notes else "ok"
    return UsageDay(
        day,
        kwh,
        split if known else {},
        by_hour.index(max(by_hour)) if known else None,
        max(measured) if measured else None,
        status,
        "; ".join(notes),
    )


def _months(days: Sequence[UsageDay], tou: TouSchedule) -> list[UsageMonth]:
    months: dict[str, list[UsageDay]] = {}
    for d in days:
        months.setdefault(f"{d.day:%Y-%m}", []).append(d)
    out = []
    for month, members in months.items():
        missing = sum(d.kwh is None for d in members)
        total = None if missing else sum((d.kwh for d in members if d.kwh is not None), Decimal(0))
        split = {p: sum(d.tou.get(p, 0.0) for d in members) for p in tou.periods}
        out.append(UsageMonth(month, total, len(members), missing, split))
    return out


def slot_time(report: UsageReport, index: int, tz: dt.tzinfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(report.since + index * SLOT_S, tz)
