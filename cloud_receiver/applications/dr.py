"""Demand response: curtail opted-in meters for a window, then report what it achieved.

An event limits a group's load to ``limit_kw`` between two times. The receiver estimates
each enrolled meter's load in that window from its own baseline (below) and curtails the
largest loads first — a signed ``relay_open`` due at the start, a ``relay_close`` due at
the end, both sent ahead and held by the concentrator until due, through the meter's
supply state (`applications.supply.state`: the reconnection never stands against
another reason to keep the supply off) — until the group's
remaining baseline load is within the limit (all enrolled meters when no baseline exists
yet).

Baseline: the mean energy the meter used in the same clock window on the most recent
comparable days (same kind of day: weekday or weekend) before the event that have the
readings for it — the "X of Y days" family utilities use, without the high-day
selection, so it is easy to check. Energy in a window is the forward-energy register at
its end minus at its start, each taken from the stored readings (linear between the two
nearest readings when no reading falls on the boundary, at most ``MAX_GAP_S`` apart).
The report gives baseline, actual and reduction per meter and in total, with the register
values it used, so every figure can be traced to the readings.
"""

from __future__ import annotations

import datetime as dt
import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import delete, insert, select

from cloud_receiver.applications.prepay import parse_offset
from cloud_receiver.applications.supply import state as supply
from cloud_receiver.errors import EXIT_USAGE, NotFound, ReceiverError
from cloud_receiver.storage import Storage
from cloud_receiver.storage.schema import dr_enrolment, dr_events, supply_reasons
from contract import quantities
from drivers.meter_ids import any_meter_problem, has_relay

ENERGY = quantities.ENERGY_FWD_TOTAL  # any protocol: docs/quantities.md
MAX_GAP_S = 3600  # readings further apart than this do not give a boundary value
DEFAULT_BASELINE_DAYS = 5
LOOKBACK_DAYS = 14


class DrError(ReceiverError, ValueError):
    """Bad input: unknown group or event, malformed times, empty window."""

    exit_code = EXIT_USAGE


class DrNotFound(NotFound, DrError):
    """No such event, or no meter in the group."""


@dataclass(frozen=True)
class MeterResult:
    meter: str
    curtailed: bool
    baseline_kwh: Decimal | None
    actual_kwh: Decimal | None
    reduction_kwh: Decimal | None
    baseline_days: list[dict[str, str]]  # {"day", "start_kwh", "end_kwh", "kwh"}
    actual_registers: dict[str, str] | None  # {"start_kwh", "end_kwh"}


@dataclass(frozen=True)
class Report:
    event: str
    group: str
    start: float
    end: float
    limit_kw: Decimal
    meters: list[MeterResult]

    @property
    def hours(self) -> Decimal:
        return Decimal(str(self.end - self.start)) / 3600

    def total(self, field: str) -> Decimal | None:
        values = [getattr(m, field) for m in self.meters]
        if any(v is None for v in values):
            return None
        return sum(values, Decimal(0))

    def as_dict(self) -> dict[str, Any]:
        reduction = self.total("reduction_kwh")
        return {
            "event": self.event,
            "group": self.group,
            "start": self.start,
            "end": self.end,
            "limit_kw": str(self.limit_kw),
            "baseline_kwh": _s(self.total("baseline_kwh")),
            "actual_kwh": _s(self.total("actual_kwh")),
            "reduction_kwh": _s(reduction),
            "reduction_kw": _s(None if reduction is None else reduction / self.hours),
            "meters": [{k: _s(v) if isinstance(v, Decimal) else v for k, v in asdict(m).items()}
                       for m in self.meters],
        }  # fmt: skip


def _s(value: Decimal | None) -> str | None:
    return None if value is None else str(value.quantize(Decimal("0.001")))


# ---------------------------------------------------------------------- enrolment
def enrol(storage: Storage, group: str, meters: Sequence[str], concentrator: str) -> None:
    """Opt meters wired to ``concentrator`` in to ``group``; their commands go there."""
    if not group:
        raise DrError("group name is empty")
    if not concentrator:
        raise DrError("the concentrator the meters are wired to is needed")
    for m in meters:
        problem = any_meter_problem(m)
        if problem is not None:
            raise DrError(f"meter: {problem}")
    with storage.transaction() as tx:
        for m in meters:
            tx.execute(delete(dr_enrolment).where(dr_enrolment.c.meter == m))
            tx.execute(insert(dr_enrolment).values(meter=m, group=group, concentrator=concentrator))


def enrolled(storage: Storage, group: str) -> dict[str, str]:
    """{meter: concentrator} of the group, without meters another reason holds open
    (prepayment, an operator's order, maintenance): a curtailment's reconnection must
    never restore a supply something else keeps off (`applications.supply.state`)."""
    with storage.transaction() as tx:
        e, r = dr_enrolment.c, supply_reasons.c
        held = select(r.meter).where(r.meter == e.meter, r.reason != supply.DEMAND_RESPONSE)
        rows = tx.execute(
            select(e.meter, e.concentrator)
            .where(e.group == group, ~held.exists())
            .order_by(e.meter)
        ).all()
    return {r[0]: r[1] for r in rows}


# ---------------------------------------------------------------------- energy
def _register_at(series: list[tuple[int, Decimal]], t: float) -> Decimal | None:
    before = [(s, v) for s, v in series if s <= t]
    after = [(s, v) for s, v in series if s >= t]
    if not before or not after:
        return None
    (s0, v0), (s1, v1) = before[-1], after[0]
    if s0 == s1:
        return v0
    if s1 - s0 > MAX_GAP_S:
        return None
    return v0 + (v1 - v0) * Decimal(str((t - s0) / (s1 - s0)))


def _window_energy(
    series: list[tuple[int, Decimal]], start: float, end: float
) -> tuple[Decimal, Decimal] | None:
    a, b = _register_at(series, start), _register_at(series, end)
    return None if a is None or b is None or b < a else (a, b)


def _series(storage: Storage, meter: str, since: float, until: float) -> list[tuple[int, Decimal]]:
    rows = storage.series([ENERGY], [meter], int(since) - MAX_GAP_S, int(until) + MAX_GAP_S + 1)
    return [(slot, Decimal(value)) for _, _, slot, value in rows]


def baseline(
    storage: Storage, meter: str, start: float, end: float, tz: dt.tzinfo, days: int
) -> tuple[Decimal | None, list[dict[str, str]]]:
    """Mean window energy on the ``days`` most recent comparable earlier days."""
    weekend = dt.datetime.fromtimestamp(start, tz).weekday() >= 5
    used: list[dict[str, str]] = []
    series = _series(storage, meter, start - LOOKBACK_DAYS * 86400, start)
    for back in range(1, LOOKBACK_DAYS + 1):
        s, e = start - back * 86400, end - back * 86400
        if (dt.datetime.fromtimestamp(s, tz).weekday() >= 5) != weekend:
            continue
        got = _window_energy(series, s, e)
        if got is None:
            continue
        used.append({"day": dt.datetime.fromtimestamp(s, tz).date().isoformat(),
                     "start_kwh": str(got[0]), "end_kwh": str(got[1]),
                     "kwh": str(got[1] - got[0])})  # fmt: skip
        if len(used) == days:
            break
    if not used:
        return None, []
    return sum((Decimal(u["kwh"]) for u in used), Decimal(0)) / len(used), used


# ---------------------------------------------------------------------- events
def new_event_id() -> str:
    return uuid.uuid4().hex[:12]


def check_event(
    storage: Storage, *, group: str, start: float, end: float, limit_kw: Decimal, tz: str
) -> dict[str, str]:
    """The enrolled meters ({meter: concentrator}) an event may curtail; `DrError` for
    an event that cannot be run (checked before one is asked for, and when it is run)."""
    if end <= start:
        raise DrError("the window must end after it starts")
    if end - start > 86400:
        raise DrError("a demand-response window lasts at most a day")
    if not limit_kw.is_finite() or limit_kw < 0:
        raise DrError("limit_kw cannot be negative")
    parse_offset(tz)
    meters = enrolled(storage, group)
    if not meters:
        raise DrNotFound(f"no meter is enrolled in group {group!r}")
    return meters


def create_event(
    storage: Storage,
    key: Ed25519PrivateKey,
    *,
    group: str,
    start: float,
    end: float,
    limit_kw: Decimal,
    tz: str = "+08:00",
    baseline_days: int = DEFAULT_BASELINE_DAYS,
    now: float | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """Choose the meters to curtail and queue their commands; returns the event.
    ``event_id``: the id an operator's request chose for it (default: a new one)."""
    now = time.time() if now is None else now
    meters = check_event(storage, group=group, start=start, end=end, limit_kw=limit_kw, tz=tz)
    zone = parse_offset(tz)
    hours = Decimal(str(end - start)) / 3600
    loads: list[tuple[Decimal | None, str]] = []
    for m in meters:
        kwh, _ = baseline(storage, m, start, end, zone, baseline_days)
        loads.append((None if kwh is None else kwh / hours, m))
    known = all(kw is not None for kw, _ in loads)
    remaining = sum((kw or Decimal(0) for kw, _ in loads), Decimal(0))
    chosen: list[str] = []
    # A meter without a relay (Modbus) counts in the load but cannot be curtailed.
    for kw, m in sorted(loads, key=lambda x: (-(x[0] or 0), x[1])):
        if known and remaining <= limit_kw:
            break
        if not has_relay(m):
            continue
        chosen.append(m)
        remaining -= kw or Decimal(0)
    event_id = event_id or new_event_id()
    sent: list[dict[str, str]] = []
    held: list[str] = []
    for m in chosen:
        # Through the supply state: a meter some other reason took meanwhile is left.
        got = supply.curtail(storage, key, meter=m, concentrator=meters[m], start=start,
                             end=end, ref=event_id, by=f"dr:{event_id}", now=now)  # fmt: skip
        if got is None:
            held.append(m)
            continue
        sent.append({"meter": m, "open": got[0].id, "close": got[1].id})
    detail = {
        "tz": tz,
        "baseline_days": baseline_days,
        "baseline_kw": {m: _s(kw) for kw, m in loads},
        "curtailed": [c["meter"] for c in sent],
        "held_open": held,
        "commands": sent,
    }
    with storage.transaction() as tx:
        tx.execute(
            insert(dr_events).values(
                id=event_id, group=group, start_at=start, end_at=end, limit_kw=str(limit_kw),
                detail=json.dumps(detail), created_at=now,
            )
        )  # fmt: skip
    return {"id": event_id, "group": group, "start": start, "end": end, **detail}


def report(storage: Storage, event_id: str) -> Report:
    with storage.transaction() as tx:
        d = dr_events.c
        row = tx.execute(
            select(d.group, d.start_at, d.end_at, d.limit_kw, d.detail).where(d.id == event_id)
        ).first()
    if row is None:
        raise DrNotFound(f"unknown demand-response event {event_id!r}")
    group, start, end, limit_kw, detail_text = row
    detail = json.loads(detail_text)
    zone = parse_offset(detail["tz"])
    results = []
    for m in sorted(detail["baseline_kw"]):
        base, days = baseline(storage, m, float(start), float(end), zone, detail["baseline_days"])
        got = _window_energy(_series(storage, m, float(start), float(end)), start, end)
        actual = None if got is None else got[1] - got[0]
        results.append(
            MeterResult(
                meter=m,
                curtailed=m in detail["curtailed"],
                baseline_kwh=base,
                actual_kwh=actual,
                reduction_kwh=None if base is None or actual is None else base - actual,
                baseline_days=days,
                actual_registers=None if got is None
                else {"start_kwh": str(got[0]), "end_kwh": str(got[1])},
            )
        )  # fmt: skip
    return Report(event_id, group, float(start), float(end), Decimal(limit_kw), results)
