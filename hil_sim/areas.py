"""Transformer areas (台区) for the analytics: a total meter, customers, loss and theft.

One area is a distribution transformer whose low-voltage side has a total meter, and N
customer meters behind it. Per 15-minute slot:

    customer load   P_c = peak_kW × daily shape(hour) × weekday factor × area weather
                          × customer day factor × noise  (× level while on vacation)
    technical loss  rate = loss_min + (loss_max − loss_min) × min(1, ΣP_c / ΣP_peak):
                    I²R losses grow with the load, so the *rate* grows linearly with it
    total meter     P_total = ΣP_c / (1 − rate)

Theft is something the customer's meter does not register while the total meter does:

- ``bypass``: a share of the load goes round the meter (the forward register misses it);
- ``reverse``: a share runs through a reversed current transformer and lands on the
  reverse register (``energy_rev_total``) instead of the forward one;
- ``phase``: a three-phase (commercial) customer bypasses part of phase A: the meter
  misses ``share`` of that phase's energy and sees its current drop accordingly.

A theft may come with a tamper event (e.g. ``meter_cover_open``, kinds from
`cloud_receiver.tamper`) on the day it starts. Vacations (a customer's load drops with
no theft) and data gaps (readings never delivered) test that neither is called theft.

Readings, as a concentrator delivers them: ``energy_fwd_total`` of every meter at every
slot (the register at the slot start, DL/T 645 resolution: truncated to 0.01 kWh), at
each local midnight ``energy_rev_total`` and the daily freeze
``frozen_daily_energy_fwd_total`` (stored under the 00:05 slot, like the concentrator's
``daily@00:05`` task), and for three-phase meters ``current_a``/``_b``/``_c`` (A, 0.001)
per slot. One concentrator per area (``dc-<area>``), one batch per area and day.

Ground truth (JSON lines, `write_truth`): one ``area`` record (meters, thieves), then per
area and day a ``day`` record with the registered supply, sales and loss (exact decimal
text: what the receiver must compute) and the true energies behind them (technical
loss, theft per meter). Randomness is seeded per area: the same options give the same
readings, whatever else is simulated.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal, cast

from clitools.files import open_text
from cloud_receiver.public import TAMPER_EVENTS, MeterRecord, Storage
from contract.records import Event, Reading
from hil_sim.errors import SpecError
from hil_sim.model import CHINA_TZ, DAILY_SHAPES, Profile

TheftMethod = Literal["bypass", "reverse", "phase"]
THEFT_METHODS: tuple[TheftMethod, ...] = ("bypass", "reverse", "phase")

SLOT_S = 900
SLOTS_PER_DAY = 96
FREEZE_SLOT_S = 300  # the daily freeze is read at 00:05 and stored under that slot
PHASE_SHARES = (0.36, 0.33, 0.31)  # a three-phase customer's load per phase (as model.py)
VOLTS, POWER_FACTOR = 220.0, 0.95
# Weekday factors (Monday first): households use a little more at weekends, shops and
# offices much less.
WEEKLY: dict[Profile, tuple[float, ...]] = {
    "household": (1.0, 0.98, 1.0, 0.99, 1.02, 1.12, 1.15),
    "commercial": (1.0, 1.02, 1.0, 1.01, 0.97, 0.55, 0.35),
}


@dataclass(frozen=True)
class Theft:
    customer: int  # 1-based customer number in its area
    start_day: int  # days after the simulation's first day (0 = from the start)
    share: float = 0.5  # of the load (bypass, reverse) or of phase A (phase)
    method: TheftMethod = "bypass"
    event: str | None = None  # tamper event kind reported on the first theft day


@dataclass(frozen=True)
class Vacation:
    customer: int
    start_day: int
    days: int
    level: float = 0.15  # share of the usual load (fridge, standby)


@dataclass(frozen=True)
class Gap:
    meter: int  # 0 = the total meter, 1.. = customers
    start_s: int  # seconds after the simulation's start (local midnight of day 0)
    seconds: int  # readings with a slot in [start, start + seconds) never arrive


@dataclass(frozen=True)
class AreaSpec:
    customers: int = 20
    commercial: int = 2  # how many of them are three-phase commercial customers
    loss_min: float = 0.03
    loss_max: float = 0.06
    thefts: tuple[Theft, ...] = ()
    vacations: tuple[Vacation, ...] = ()
    gaps: tuple[Gap, ...] = ()


@dataclass(frozen=True)
class Options:
    areas: tuple[AreaSpec, ...]
    start: dt.date
    days: int
    seed: int = 0
    tz: dt.tzinfo = CHINA_TZ


@dataclass(frozen=True)
class Batch:
    concentrator: str
    seq: int
    readings: list[Reading]
    events: list[Event]
    received_at: float


def area_name(index: int) -> str:
    return f"TA-{index:04d}"


def meter_address(area_index: int, number: int) -> str:
    """12-digit DL/T 645 address: area number, then 0 for the total meter, 1.. customers."""
    return f"{area_index:04d}{number:08d}"


def register(kwh: float) -> Decimal:
    """What the register shows: whole hundredths of a kWh, truncated (never ahead)."""
    return Decimal(math.floor(kwh * 100)).scaleb(-2)


@dataclass
class _Customer:
    number: int
    address: str
    profile: Profile
    peak_kw: float
    fwd_kwh: float  # true registered cumulative energies
    rev_kwh: float = 0.0
    thefts: list[Theft] = field(default_factory=list)
    vacations: list[Vacation] = field(default_factory=list)

    @property
    def phases(self) -> int:
        return 3 if self.profile == "commercial" else 1


@dataclass
class _Area:
    index: int
    spec: AreaSpec
    rng: random.Random
    customers: list[_Customer]
    total_kwh: float
    weather: float = 1.0

    @property
    def name(self) -> str:
        return area_name(self.index)

    @property
    def concentrator(self) -> str:
        return f"dc-{self.name}"

    @property
    def total_address(self) -> str:
        return meter_address(self.index, 0)


class AreaSim:
    """Simulate the options' areas day by day; `batches` yields what the concentrators
    deliver, `truth` collects the ground truth as it goes."""

    def __init__(self, options: Options) -> None:
        for spec in options.areas:
            _check(spec)
        self.options = options
        self.truth: list[dict[str, Any]] = []
        self._areas = [self._build(i, spec) for i, spec in enumerate(options.areas, start=1)]

    def _build(self, index: int, spec: AreaSpec) -> _Area:
        rng = random.Random(f"{self.options.seed}:{index}")
        customers = []
        for n in range(1, spec.customers + 1):
            profile: Profile = "commercial" if n > spec.customers - spec.commercial else "household"
            peak = rng.uniform(5.0, 20.0) if profile == "commercial" else rng.uniform(0.4, 1.6)
            customers.append(
                _Customer(
                    number=n,
                    address=meter_address(index, n),
                    profile=profile,
                    peak_kw=peak,
                    fwd_kwh=rng.uniform(1000, 20000),
                    thefts=[t for t in spec.thefts if t.customer == n],
                    vacations=[v for v in spec.vacations if v.customer == n],
                )
            )
        return _Area(index, spec, rng, customers, total_kwh=rng.uniform(100_000, 500_000))

    def archive(self) -> list[MeterRecord]:
        records: list[MeterRecord] = []
        for a in self._areas:
            records.append(MeterRecord(a.total_address, a.name, "total"))
            for c in a.customers:
                account = f"AC{a.index:04d}{c.number:06d}"
                records.append(MeterRecord(c.address, a.name, "customer", account, c.profile))
        return records

    def batches(self) -> Iterator[Batch]:
        opts = self.options
        start = _midnight(opts.start, opts.tz)
        for a in self._areas:
            self.truth.append(self._area_truth(a))
        for d in range(opts.days):
            day = opts.start + dt.timedelta(days=d)
            for a in self._areas:
                readings, events = self._day(a, d, day)
                if d == opts.days - 1:  # the closing boundary, so the last day is complete
                    end = _midnight(day + dt.timedelta(days=1), opts.tz)
                    readings += self._boundary_readings(a, end)
                kept = [r for r in readings if not _in_gap(a, r, start)]
                yield Batch(a.concentrator, d + 1, kept, events, float(start + (d + 1) * 86400))

    # -------------------------------------------------------------- one area, one day
    def _day(self, a: _Area, d: int, day: dt.date) -> tuple[list[Reading], list[Event]]:
        opts = self.options
        rng = a.rng
        t0 = _midnight(day, opts.tz)
        weekday = day.weekday()
        a.weather = 1.0 + 0.8 * (a.weather - 1.0) + rng.gauss(0.0, 0.03)
        day_factor = [min(1.3, max(0.7, rng.gauss(1.0, 0.05))) for _ in a.customers]
        readings = self._boundary_readings(a, t0)
        events: list[Event] = []
        total_start = register(a.total_kwh)
        fwd_start = [register(c.fwd_kwh) for c in a.customers]
        technical = 0.0
        true_supply = 0.0
        theft_by_meter: dict[str, float] = {}
        peak_sum = sum(c.peak_kw for c in a.customers)
        for k in range(SLOTS_PER_DAY):
            slot = t0 + k * SLOT_S
            if k:
                readings += self._slot_readings(a, slot)
            hour = k / 4 + 1 / 8  # the slot's middle
            load_sum = 0.0
            for i, c in enumerate(a.customers):
                shape = DAILY_SHAPES[c.profile]
                lo, hi = shape[int(hour) % 24], shape[(int(hour) + 1) % 24]
                rel = lo + (hi - lo) * (hour - int(hour))
                noise = max(0.3, rng.gauss(1.0, 0.12))
                p = c.peak_kw * rel * WEEKLY[c.profile][weekday] * a.weather * day_factor[i]
                p *= noise * _vacation_level(c, d)
                kwh = p * SLOT_S / 3600
                theft = _active_theft(c, d)
                unregistered = 0.0
                if theft is not None:
                    share = theft.share * (PHASE_SHARES[0] if theft.method == "phase" else 1.0)
                    unregistered = kwh * share
                    theft_by_meter[c.address] = theft_by_meter.get(c.address, 0.0) + unregistered
                    if theft.method == "reverse":
                        c.rev_kwh += unregistered
                c.fwd_kwh += kwh - unregistered
                if c.phases == 3:
                    readings += _currents(c, slot, p, theft, rng)
                load_sum += p
            rate = a.spec.loss_min + (a.spec.loss_max - a.spec.loss_min) * min(
                1.0, load_sum / peak_sum
            )
            supply_kw = load_sum / (1.0 - rate)
            technical += (supply_kw - load_sum) * SLOT_S / 3600
            true_supply += supply_kw * SLOT_S / 3600
            a.total_kwh += supply_kw * SLOT_S / 3600
        for c in a.customers:
            for theft in c.thefts:
                if theft.start_day == d and theft.event:
                    at = t0 + 2 * 3600 + 13 * 60 + c.number  # small hours, as thieves work
                    events.append(
                        Event(theft.event, "warning", c.address, {"source": "hil-sim"}, float(at))
                    )
        supply = register(a.total_kwh) - total_start
        sales = sum(
            (register(c.fwd_kwh) - s for c, s in zip(a.customers, fwd_start, strict=True)),
            Decimal("0.00"),
        )
        self.truth.append(
            {
                "type": "day",
                "area": a.name,
                "day": day.isoformat(),
                "supply_kwh": str(supply),
                "sales_kwh": str(sales),
                "loss_kwh": str(supply - sales),
                "true_supply_kwh": round(true_supply, 4),
                "technical_loss_kwh": round(technical, 4),
                "theft_kwh": round(sum(theft_by_meter.values()), 4),
                "theft_by_meter": {m: round(v, 4) for m, v in sorted(theft_by_meter.items())},
            }
        )
        return readings, events

    def _slot_readings(self, a: _Area, slot: int) -> list[Reading]:
        out = [_reading(a.total_address, "energy_fwd_total", slot, register(a.total_kwh), "kWh")]
        out += [
            _reading(c.address, "energy_fwd_total", slot, register(c.fwd_kwh), "kWh")
            for c in a.customers
        ]
        return out

    def _boundary_readings(self, a: _Area, midnight: int) -> list[Reading]:
        """Midnight: the 00:00 interval reading, the reverse register, the daily freeze."""
        out = self._slot_readings(a, midnight)
        registers = [(a.total_address, a.total_kwh, 0.0)]
        registers += [(c.address, c.fwd_kwh, c.rev_kwh) for c in a.customers]
        for address, fwd, rev in registers:
            out.append(_reading(address, "energy_rev_total", midnight, register(rev), "kWh"))
            out.append(
                _reading(
                    address,
                    "frozen_daily_energy_fwd_total",
                    midnight + FREEZE_SLOT_S,
                    register(fwd),
                    "kWh",
                )
            )
        return out

    def _area_truth(self, a: _Area) -> dict[str, Any]:
        first = self.options.start
        return {
            "type": "area",
            "area": a.name,
            "concentrator": a.concentrator,
            "total_meter": a.total_address,
            "customers": [c.address for c in a.customers],
            "loss_min": a.spec.loss_min,
            "loss_max": a.spec.loss_max,
            "thieves": [
                {
                    "meter": c.address,
                    "method": t.method,
                    "share": t.share,
                    "from": (first + dt.timedelta(days=t.start_day)).isoformat(),
                    "event": t.event,
                }
                for c in a.customers
                for t in c.thefts
            ],
            "vacations": [
                {
                    "meter": c.address,
                    "from": (first + dt.timedelta(days=v.start_day)).isoformat(),
                    "days": v.days,
                    "level": v.level,
                }
                for c in a.customers
                for v in c.vacations
            ],
        }


def _check(spec: AreaSpec) -> None:
    if spec.customers < 1 or not 0 <= spec.commercial <= spec.customers:
        raise SpecError(f"{spec.customers} customers, {spec.commercial} commercial: impossible")
    if not 0 <= spec.loss_min <= spec.loss_max < 0.5:
        raise SpecError(f"loss {spec.loss_min}-{spec.loss_max}: expected 0 <= min <= max < 0.5")
    for t in spec.thefts:
        if not 1 <= t.customer <= spec.customers:
            raise SpecError(f"theft by customer {t.customer}: the area has {spec.customers}")
        if not 0 < t.share <= 1 or t.start_day < 0:
            raise SpecError(
                f"theft share {t.share} from day {t.start_day}: expected 0 < share <= 1"
            )
        if t.method == "phase" and t.customer <= spec.customers - spec.commercial:
            raise SpecError(
                f"phase theft by customer {t.customer}: only the three-phase (commercial)"
                f" customers {spec.customers - spec.commercial + 1}..{spec.customers} have phases"
            )
        if t.event is not None and t.event not in TAMPER_EVENTS:
            raise SpecError(f"tamper event {t.event!r}: expected one of {', '.join(TAMPER_EVENTS)}")
    for v in spec.vacations:
        if not 1 <= v.customer <= spec.customers or v.days < 1 or not 0 <= v.level <= 1:
            raise SpecError(f"vacation {v}: customer, days or level out of range")


def _midnight(day: dt.date, tz: dt.tzinfo) -> int:
    return int(dt.datetime.combine(day, dt.time(), tzinfo=tz).timestamp())


def _reading(meter: str, quantity: str, slot: int, value: Decimal, unit: str) -> Reading:
    # Read a couple of seconds into the slot; the value is the register at the slot start.
    return Reading(meter, quantity, slot, str(value), unit, slot + 2.5)


def _active_theft(c: _Customer, day: int) -> Theft | None:
    active = [t for t in c.thefts if t.start_day <= day]
    return max(active, key=lambda t: t.start_day) if active else None


def _vacation_level(c: _Customer, day: int) -> float:
    for v in c.vacations:
        if v.start_day <= day < v.start_day + v.days:
            return v.level
    return 1.0


def _currents(
    c: _Customer, slot: int, p_kw: float, theft: Theft | None, rng: random.Random
) -> list[Reading]:
    out = []
    for phase, share in zip("abc", PHASE_SHARES, strict=True):
        seen = 1.0 - theft.share if theft and theft.method == "phase" and phase == "a" else 1.0
        amps = p_kw * share * seen * 1000 / (VOLTS * POWER_FACTOR) * rng.uniform(0.97, 1.03)
        value = Decimal(round(amps * 1000)).scaleb(-3)
        out.append(_reading(c.address, f"current_{phase}", slot, value, "A"))
    return out


def _in_gap(a: _Area, r: Reading, sim_start: int) -> bool:
    offset = r.slot - sim_start
    for g in a.spec.gaps:
        address = a.total_address if g.meter == 0 else meter_address(a.index, g.meter)
        if r.meter == address and g.start_s <= offset < g.start_s + g.seconds:
            return True
    return False


# ---------------------------------------------------------------------- delivery

# The CSV columns `hil-sim areas` writes without --db: those of `cloud-receiver readings
# --csv`, and those of the receiver's events table.
READING_COLUMNS = (
    "meter",
    "quantity",
    "slot",
    "value",
    "unit",
    "read_at",
    "source",
    "concentrator",
    "seq",
)
EVENT_COLUMNS = ("concentrator", "seq", "kind", "severity", "meter", "detail", "at")


def ingest(storage: Storage, sim: AreaSim) -> int:
    """Deliver every batch into receiver storage, as `cloud-receiver run` would store
    them; returns the number of readings stored."""
    stored = 0
    for b in sim.batches():
        stored += storage.ingest(b.concentrator, b.seq, 1, b.readings, b.events, b.received_at)[1]
    return stored


def write_truth(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with open_text(path) as fh:
        for record in records:
            fh.write(json.dumps(record, separators=(",", ":"), ensure_ascii=False) + "\n")


def read_truth(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


# ---------------------------------------------------------------------- CLI specs

_THEFT_RE = re.compile(r"(\d+):(\d+)@(\d+)(?::([0-9.]+))?(?::(\w+))?(?::(\w+))?")
_VACATION_RE = re.compile(r"(\d+):(\d+)@(\d+)\+(\d+)(?::([0-9.]+))?")


def parse_theft(text: str) -> tuple[int, Theft]:
    """``AREA:CUSTOMER@DAY[:SHARE[:METHOD[:EVENT]]]`` → (area number, theft)."""
    m = _THEFT_RE.fullmatch(text)
    if not m:
        raise SpecError(
            f"{text!r}: expected AREA:CUSTOMER@DAY[:SHARE[:METHOD[:EVENT]]],"
            " e.g. 1:3@40:0.5:bypass:meter_cover_open"
        )
    method = m[5] or "bypass"
    if method not in THEFT_METHODS:
        raise SpecError(f"{text!r}: method {method!r}; expected {', '.join(THEFT_METHODS)}")
    theft = Theft(
        customer=int(m[2]),
        start_day=int(m[3]),
        share=float(m[4] or 0.5),
        method=cast(TheftMethod, method),
        event=m[6],
    )
    return int(m[1]), theft


def parse_vacation(text: str) -> tuple[int, Vacation]:
    """``AREA:CUSTOMER@DAY+DAYS[:LEVEL]`` → (area number, vacation)."""
    m = _VACATION_RE.fullmatch(text)
    if not m:
        raise SpecError(f"{text!r}: expected AREA:CUSTOMER@DAY+DAYS[:LEVEL], e.g. 2:5@30+14:0.1")
    return int(m[1]), Vacation(int(m[2]), int(m[3]), int(m[4]), float(m[5] or 0.15))
