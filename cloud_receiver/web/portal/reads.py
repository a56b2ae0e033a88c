"""The read queries of the portal's pages beyond `cloud_receiver.web.data` (which the
pages and the API share): each gathers what one page shows from the applications'
own functions, so a figure on a page is the figure the CLI prints.

Nothing here checks roles or audits: the page that calls it does, before showing it.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from cloud_receiver.applications import dr, prepay
from cloud_receiver.applications.analytics import energy, lineloss, suspects, usage
from cloud_receiver.applications.fleet import rollout
from cloud_receiver.applications.fleet.archive import Archive, ArchiveError
from cloud_receiver.applications.supply import state as supply
from cloud_receiver.errors import ReceiverError
from cloud_receiver.storage import CommandRecord, MeterRecord, Storage, completeness
from cloud_receiver.storage import audit as chain
from cloud_receiver.storage.completeness import Plan
from cloud_receiver.storage.schema import commands, dr_events, meter_owners, meters, readings

SLOT_S = energy.SLOT_S
DAY_S = 86_400
MAX_RANGE_S = 31 * DAY_S  # the longest curve a page draws (2976 quarter hours)


# ------------------------------------------------------------------ fleet
@dataclass(frozen=True)
class FleetRow:
    concentrator: str
    last_seen: float
    batches: int
    readings: int
    missing_batches: int  # sequence numbers never received: the backlog still to come
    software: str | None
    meters: int  # meters the ownership table assigns to it now
    readings_today: int  # interval readings of today's slots received so far
    expected_today: int  # its meters x the quarter hours of today so far

    @property
    def completeness(self) -> float | None:
        """Interval readings received today / expected so far (None: nothing expected)."""
        if not self.expected_today:
            return None
        return min(1.0, self.readings_today / self.expected_today)


def fleet(storage: Storage, now: float, plan: Plan) -> list[FleetRow]:
    """Every concentrator heard from: when, what it delivered, what is still missing,
    the software it runs, and today's collection so far by the one completeness rule
    (`cloud_receiver.storage.completeness`: the receiver's plan, commissioning times,
    each meter counted for its owner)."""
    today = plan.day_of(now)
    seen = rollout.software(storage)
    o = meter_owners.c
    with storage.read() as conn:
        report = completeness.compute(conn, plan, today, today + dt.timedelta(days=1), now)
        latest = (
            select(o.meter, func.max(o.effective_from).label("since"))
            .where(o.effective_from <= now)
            .group_by(o.meter)
            .subquery()
        )
        owned: dict[str, int] = dict(
            conn.execute(
                select(o.concentrator, func.count())
                .join(latest, (o.meter == latest.c.meter) & (o.effective_from == latest.c.since))
                .group_by(o.concentrator)
            ).all()
        )
    collected = {t.key: t for t in report.totals("concentrator")}
    out = []
    for c in storage.concentrators():
        sw = seen.get(c.concentrator)
        got = collected.get(c.concentrator)
        out.append(
            FleetRow(c.concentrator, c.last_seen, c.batches, c.readings, c.missing_seqs,
                     sw[0] if sw else None, int(owned.get(c.concentrator, 0)),
                     got.received if got else 0, got.expected if got else 0)
        )  # fmt: skip
    return out


# ------------------------------------------------------------------ meters
def find_meters(storage: Storage, text: str, limit: int = 50) -> list[MeterRecord]:
    """Archive meters whose address, account or area starts with ``text``."""
    m = meters.c
    q = text.strip()
    if not q:
        return []
    like = q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
    query = (
        select(m.meter, m.area, m.role, m.account, m["group"], m.multiplier)
        .where(
            m.meter.like(like, escape="\\")
            | m.account.like(like, escape="\\")
            | m.area.like(like, escape="\\")
        )
        .order_by(m.meter)
        .limit(limit)
    )
    with storage.read() as conn:
        rows = conn.execute(query).all()
    return [MeterRecord(r[0], r[1], r[2], r[3], r[4], Decimal(r[5])) for r in rows]


def record_of(storage: Storage, meter: str) -> MeterRecord:
    """The meter's archive record, or a bare one (multiplier 1) for a meter delivering
    readings that nobody archived yet: its curve can still be drawn."""
    found = [r for r in find_meters(storage, meter, 1) if r.meter == meter]
    return found[0] if found else MeterRecord(meter, "", "customer")


@dataclass(frozen=True)
class Curve:
    """Mean load in kW per step (None: a gap), and the energy the curve covers."""

    step_s: int
    points: list[tuple[float, float | None]]
    kwh: float


MAX_POINTS = 1500  # what a page draws: finer data is averaged into wider steps


def load_curve(storage: Storage, meter: str, since: int, until: int) -> Curve:
    """The interval curve of ``meter`` over [since, until) (at most `MAX_RANGE_S`) from its
    forward energy register: kW = ΔkWh / Δh between consecutive readings (x the
    multiplier), at the register's own cadence (15 minutes in the field) or averaged
    into wider steps when that would draw more than `MAX_POINTS`; a reading gap longer
    than `energy.DEFAULT_MAX_GAP_S` is a gap, never a slope drawn across it."""
    until = min(until, since + MAX_RANGE_S)
    multiplier = float(record_of(storage, meter).multiplier)
    rows = storage.series([energy.ENERGY_FWD], [meter], since - energy.DEFAULT_MAX_GAP_S, until)
    regs = [(slot, float(value)) for _, _, slot, value in rows]
    spans = [
        (s1, s2, (v2 - v1) * multiplier)
        for (s1, v1), (s2, v2) in itertools.pairwise(regs)
        if s2 > since and 0 < s2 - s1 <= energy.DEFAULT_MAX_GAP_S and v2 >= v1
    ]
    if not spans:
        return Curve(SLOT_S, [], 0.0)
    native = min(s2 - s1 for s1, s2, _ in spans)
    width = spans[-1][1] - spans[0][0]
    step = max(native, -(-width // MAX_POINTS))
    buckets: dict[int, list[float]] = {}
    for s1, s2, kwh in spans:
        acc = buckets.setdefault((s2 - 1) // step * step, [0.0, 0.0])
        acc[0] += kwh
        acc[1] += s2 - s1
    points: list[tuple[float, float | None]] = []
    last: int | None = None
    for start in sorted(buckets):
        if last is not None and start - last > step:
            points.append((float(last + step), None))  # a gap: the line breaks here
        kwh, seconds = buckets[start]
        points.append((float(start + step), kwh * 3600 / seconds))
        last = start
    return Curve(step, points, sum(kwh for _, _, kwh in spans))


def freezes(storage: Storage, meter: str, since: int, until: int) -> list[tuple[int, str]]:
    """The meter's daily freezes (the forward energy frozen at midnight) in the range."""
    rows = storage.series([energy.FREEZE_FWD], [meter], since, until)
    return [(slot, value) for _, _, slot, value in rows]


def meter_commands(storage: Storage, meter: str, limit: int = 50) -> list[CommandRecord]:
    """The newest commands naming ``meter``, newest first."""
    c = commands.c
    with storage.read() as conn:
        ids = [
            r[0]
            for r in conn.execute(
                select(c.id)
                .where(c.meters.like(f'%"{meter}"%'))
                .order_by(c.issued_at.desc())
                .limit(limit)
            ).all()
        ]
    found = [storage.commands(command_id=i, limit=1) for i in ids]
    return [rows[0] for rows in found if rows]


def last_concentrator(storage: Storage, meter: str) -> str | None:
    """The concentrator of the meter's supply state, else of its newest reading (a meter
    no ownership row assigns yet)."""
    found = supply_of(storage, meter)
    if found is not None:
        return found.concentrator
    r = readings.c
    with storage.read() as conn:
        row = conn.execute(
            select(r.concentrator).where(r.meter == meter).order_by(r.slot.desc()).limit(1)
        ).first()
    return None if row is None else str(row[0])


def supply_of(storage: Storage, meter: str) -> supply.Supply | None:
    try:
        return supply.get(storage, meter)
    except supply.UnknownSupply:
        return None


# ------------------------------------------------------------------ areas
def area_names(storage: Storage) -> list[str]:
    m = meters.c
    with storage.read() as conn:
        return [r[0] for r in conn.execute(select(m.area).distinct().order_by(m.area)).all()]


@dataclass
class AreaView:
    name: str
    days: list[lineloss.AreaDay] = field(default_factory=list)
    summary: lineloss.LossSummary | None = None
    report: suspects.SuspectReport | None = None
    problems: list[str] = field(default_factory=list)


def area(storage: Storage, name: str, day: dt.date, days: int, tz: dt.tzinfo) -> AreaView:
    """Line loss for the ``days`` days up to ``day`` and the theft suspects of ``day``
    with the evidence behind each (what `report loss` and `report suspects` print)."""
    archive = Archive(storage.archive())
    archive.area(name)  # an unknown area is an error, not an empty page
    view = AreaView(name)
    first = day - dt.timedelta(days=days - 1)
    try:
        view.days = lineloss.line_loss(
            storage, archive, name, first, day + dt.timedelta(days=1), tz
        )
        view.summary = lineloss.summarise(view.days)
    except (ArchiveError, ReceiverError) as exc:
        view.problems.append(str(exc))
    try:
        view.report = suspects.rank_suspects(storage, archive, name, day, tz)
    except (ArchiveError, ReceiverError) as exc:
        view.problems.append(str(exc))
    return view


# ------------------------------------------------------------------ demand response
@dataclass(frozen=True)
class DrView:
    id: str
    group: str
    start: float
    end: float
    limit_kw: str
    meters: int
    report: dict[str, Any] | None  # after the window: the measured reductions


def dr_list(storage: Storage, now: float, limit: int = 50) -> list[DrView]:
    e = dr_events.c
    with storage.read() as conn:
        rows = conn.execute(
            select(e.id, e["group"], e.start_at, e.end_at, e.limit_kw, e.detail)
            .order_by(e.start_at.desc())
            .limit(limit)
        ).all()
    out = []
    for r in rows:
        detail = json.loads(r[5] or "{}")
        report = None
        if float(r[3]) <= now:
            try:
                report = dr.report(storage, r[0]).as_dict()
            except ReceiverError:
                report = None
        meters = detail.get("meters", detail.get("curtailed", []))
        out.append(DrView(r[0], r[1], float(r[2]), float(r[3]), r[4], len(meters), report))
    return out


# ------------------------------------------------------------------ audit
def audit_entries(
    storage: Storage, *, kind: str | None, principal: str | None, limit: int
) -> list[chain.Entry]:
    with storage.read() as conn:
        return chain.entries(
            conn,
            since=None,
            until=None,
            principal=principal or None,
            kinds=(kind,) if kind else (),
            target=None,
            limit=limit,
            newest_first=True,
        )


# ------------------------------------------------------------------ a customer's account
@dataclass(frozen=True)
class Outlook:
    """ "Will my power be cut, and when": from the balance, the credit allowed below
    zero, and what the account was charged per day over the last week."""

    cut_now: bool
    daily_cents: int | None  # mean charge per day (None: no charges yet)
    days_left: float | None  # until the balance reaches -grace at that rate
    cut_at: float | None
    low: bool


def outlook(acc: prepay.Account, entries: list[tuple[Any, ...]], now: float) -> Outlook:
    week = [e for e in entries if e[1] == "charge" and e[0] >= now - 7 * DAY_S]
    spent = -sum(int(e[3]) for e in week)
    first = min((float(e[0]) for e in week), default=now)
    span_days = max(1.0, (now - first) / DAY_S)
    daily = round(spent / span_days) if week else None
    cut_now = acc.state in ("disconnecting", "disconnected")
    headroom = acc.balance_cents + acc.grace_cents
    days_left = None
    if daily and daily > 0 and not cut_now:
        days_left = max(0.0, headroom / daily)
    low = acc.balance_cents < acc.low_cents
    return Outlook(cut_now, daily, days_left,
                   None if days_left is None else now + days_left * DAY_S, low)  # fmt: skip


def used_since(storage: Storage, acc: prepay.Account, since: int, now: float) -> Decimal | None:
    """Energy the account's meter used from ``since`` (a local midnight) to its newest
    reading: the register then (its last reading at or before ``since``, else its first
    after) against now, x the multiplier; None without two readings."""
    rows = storage.series([energy.ENERGY_FWD], [acc.meter], since - 2 * DAY_S, int(now) + 1)
    regs = [(slot, Decimal(value)) for _, _, slot, value in rows]
    before = [v for slot, v in regs if slot <= since]
    after = [v for slot, v in regs if slot > since]
    if not after or (not before and len(after) < 2):
        return None
    start = before[-1] if before else after[0]
    return max(Decimal(0), after[-1] - start) * acc.multiplier


def customer_usage(
    storage: Storage, acc: prepay.Account, first: dt.date, end: dt.date, tz: dt.tzinfo,
    series: energy.Readings | None = None,
) -> usage.UsageReport:  # fmt: skip
    """The account meter's daily and monthly usage split by its own tariff's periods;
    the register series read through ``series`` when given (the web server's
    `SeriesCache`, which returns what the database holds)."""
    record = record_of(storage, acc.meter)
    if record.multiplier != acc.multiplier:
        record = MeterRecord(record.meter, record.area, record.role, record.account,
                             record.group, acc.multiplier)  # fmt: skip
    return usage.usage_report(series or storage, Archive([record]), "meter", acc.meter, first,
                              end, tz, acc.tariff.tou)  # fmt: skip


def day_charges(report: usage.UsageReport, tariff: prepay.Tariff) -> list[Decimal | None]:
    """What each day's energy cost at the tariff's period prices."""
    out: list[Decimal | None] = []
    for d in report.days:
        if not d.tou:
            out.append(None)
            continue
        cost = sum(
            (Decimal(str(kwh)) * tariff.prices.get(p, Decimal(0)) for p, kwh in d.tou.items()),
            Decimal(0),
        )
        out.append(cost.quantize(Decimal("0.01")))
    return out
