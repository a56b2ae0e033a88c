"""Collection completeness (采集成功率): of the interval readings the utility expects, how
many reached the receiver, live or recovered, and which meters fell short and why. The
one rule, for the ``completeness`` report, the Prometheus gauges and the daily figures.

**Expected** (`Plan`): one reading of ``quantity`` (the forward active energy register)
per archive meter per ``interval_s`` slot, the slots on a grid from local midnight in the
site's zone (a fixed UTC offset such as ``+08:00`` or ``+05:45``: no daylight saving, so
every day has ``86400 / interval_s`` slots). The plan is what the utility asked its
concentrators' interval task to collect, set at the receiver (``--interval``, env
``MF_COLLECTION_INTERVAL``, 15 min by default), not what each concentrator says it does:
a concentrator misconfigured to hourly polling shows 25 %, which is the point.

- meters: the archive's (`meters`); readings of meters outside it are not counted;
- a meter is expected from its first ownership assignment (``effective_from``, its
  commissioning: `cloud_receiver.storage.ownership`) on; one without any assignment is
  expected the whole day. A meter commissioned at 10:00 owes 56 quarter hours that day;
- a slot is due once it is over (``slot + interval_s <= now``): today counts so far;
- a reading counts at a due grid slot of the meter's expected range only (a reading off
  the grid, or before the meter was commissioned, is not a received slot).

**Received**, counted apart: *live* (source ``poll``, or ``ondemand``) and *recovered*
(``backfill``: read back from the meter's own memory after a gap).

**Late**: a reading that reached the receiver (its batch's ``received_at``) after the
day's *cut-off*, the next local midnight + ``late_after_s`` (default 2 h: when the
utility's day report is drawn). A day complete only thanks to late readings had a hole
in that report.

**Status** of a meter's day: ``complete``; ``late`` (complete, but some slots arrived
after the cut-off: recovered late); ``partial`` (some due slots missing);
``never_answered`` (none of the day's due slots arrived).

**Whose**: a meter's day counts for its owner at its last due slot of that day (a meter
moved during the day counts whole for its new owner); an unassigned meter's for the
concentrator that last delivered it (looking back one day before the window), else
for none (``""``).

**Reported**: beside its own count, the report carries each concentrator's
``collection_day`` event of those days (`reported`): what the concentrator held by its
own tasks. A slot held there but missing here was lost on the way; missing there too,
the meter was never read.

**Figures** per day, concentrator and area (`Totals`): meters, complete meters and
their share (the utility's headline success rate), expected / live / recovered / late
readings and the reading ratio received / expected.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Connection,
    Select,
    and_,
    case,
    func,
    literal_column,
    select,
)

from clitools.timefmt import iso
from cloud_receiver.storage.ownership import Assignment, histories, owner_at
from cloud_receiver.storage.schema import batches, events, meter_owners, meters, readings
from contract import quantities

DAY_S = 86_400
LIVE_SOURCES = ("poll", "ondemand")
RECOVERED_SOURCE = "backfill"
DEFAULT_INTERVAL_S = 900
DEFAULT_LATE_AFTER_S = 7200
CST = dt.timezone(dt.timedelta(hours=8))

Status = Literal["complete", "late", "partial", "never_answered"]
Grouping = Literal["day", "concentrator", "area", "all"]
INCOMPLETE: tuple[Status, ...] = ("late", "partial", "never_answered")


@dataclass(frozen=True)
class Plan:
    """What a complete day is (see the module docstring)."""

    tz: dt.timezone = CST
    quantity: str = quantities.ENERGY_FWD_TOTAL
    interval_s: int = DEFAULT_INTERVAL_S
    late_after_s: int = DEFAULT_LATE_AFTER_S

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or DAY_S % self.interval_s:
            raise ValueError(
                f"interval {self.interval_s} s: expected a divisor of a day (60, 300, 900, "
                "1800, 3600 ...), so that every day has the same slots"
            )
        if self.late_after_s < 0:
            raise ValueError(f"late_after {self.late_after_s} s: expected 0 or more")
        if self.offset_s % 60:
            raise ValueError(f"zone {self.tz}: expected a whole-minute UTC offset")

    @property
    def offset_s(self) -> int:
        offset = self.tz.utcoffset(None)
        return int(offset.total_seconds()) if offset is not None else 0

    @property
    def slots_per_day(self) -> int:
        return DAY_S // self.interval_s

    def day_start(self, day: dt.date) -> int:
        """Unix time of local midnight starting ``day``."""
        return (day.toordinal() - _EPOCH) * DAY_S - self.offset_s

    def day_of(self, t: float) -> dt.date:
        return dt.date.fromordinal(int((t + self.offset_s) // DAY_S) + _EPOCH)

    def grid_floor(self, t: float) -> int:
        """The last grid slot at or before ``t``."""
        local = int(t // 1) + self.offset_s
        return local - local % self.interval_s - self.offset_s

    def grid_ceil(self, t: int) -> int:
        floor = self.grid_floor(t)
        return floor if floor == t else floor + self.interval_s

    def cutoff(self, day: dt.date) -> int:
        return self.day_start(day) + DAY_S + self.late_after_s


_EPOCH = dt.date(1970, 1, 1).toordinal()


@dataclass(frozen=True)
class MeterDay:
    """One archive meter's day (or the day so far)."""

    day: dt.date
    meter: str
    area: str
    concentrator: str  # "" when unassigned and not heard from
    expected: int
    live: int = 0
    recovered: int = 0
    late: int = 0

    @property
    def received(self) -> int:
        return self.live + self.recovered

    @property
    def missing(self) -> int:
        return self.expected - self.received

    @property
    def ratio(self) -> float | None:
        return self.received / self.expected if self.expected else None

    @property
    def status(self) -> Status:
        if self.received == 0:
            return "never_answered"
        if self.received < self.expected:
            return "partial"
        return "late" if self.late else "complete"


@dataclass
class Totals:
    """A group of meter-days: a day, a concentrator, an area, or all of them."""

    key: str
    meters: int = 0  # meter-days
    complete: int = 0
    expected: int = 0
    live: int = 0
    recovered: int = 0
    late: int = 0

    @property
    def received(self) -> int:
        return self.live + self.recovered

    @property
    def ratio(self) -> float | None:
        return self.received / self.expected if self.expected else None

    @property
    def success_rate(self) -> float | None:
        """Complete meters / meters: the utility's headline figure."""
        return self.complete / self.meters if self.meters else None

    def add(self, m: MeterDay) -> None:
        self.meters += 1
        self.complete += m.status == "complete" or m.status == "late"
        self.expected += m.expected
        self.live += m.live
        self.recovered += m.recovered
        self.late += m.late


@dataclass
class Report:
    plan: Plan
    since: int  # local midnight of the first day
    until: int  # exclusive: local midnight after the last day
    now: float
    rows: list[MeterDay]
    heard: set[str] = field(default_factory=set)  # meters delivering in or a day before
    archive: int = 0  # archive meters (before the filters)
    # (concentrator, day) -> the detail of its collection_day event
    reported: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def totals(self, by: Grouping) -> list[Totals]:
        groups: dict[str, Totals] = {}
        for m in self.rows:
            key = {"day": m.day.isoformat(), "concentrator": m.concentrator, "area": m.area,
                   "all": "all"}[by]  # fmt: skip
            groups.setdefault(key, Totals(key)).add(m)
        return [groups[k] for k in sorted(groups)]

    def overall(self) -> Totals:
        return (self.totals("all") or [Totals("all")])[0]

    def incomplete(self) -> list[MeterDay]:
        return [m for m in self.rows if m.status in INCOMPLETE]


def compute(
    conn: Connection,
    plan: Plan,
    first: dt.date,
    end: dt.date,
    now: float,
    *,
    meter: str | None = None,
    area: str | None = None,
    concentrator: str | None = None,
    look_back: LookBack | None = None,
) -> Report:
    """Completeness of the local days ``first`` ≤ day < ``end`` as of ``now``: one
    `MeterDay` per archive meter and day with something due, by day and meter.
    ``look_back`` keeps the day before the window between calls (the metrics)."""
    if end <= first:
        raise ValueError(f"empty range: {end} is not after {first}")
    since, until = plan.day_start(first), plan.day_start(end)
    due_until = min(until, plan.grid_floor(now))  # slots before it are over
    archive = _archive(conn, meter, area)
    owners = histories(conn, archive) if archive else {}
    counts, in_window = _counts(conn, plan, since, due_until, now, meter, area)
    before = (look_back or LookBack()).get(conn, plan, since, meter, area)
    last_heard: Heard = {m: [*before.get(m, []), *in_window.get(m, [])] for m in archive}
    rows: list[MeterDay] = []
    day = first
    while day < end:
        start = plan.day_start(day)
        for name in sorted(archive):
            history = owners.get(name, [])
            lo = max(start, plan.grid_ceil(history[0].effective_from)) if history else start
            hi = min(start + DAY_S, due_until)
            if hi <= lo:
                continue
            c = counts.get((name, day), _Count())
            owner = _owner(history, hi - plan.interval_s, last_heard.get(name, []), hi)
            if concentrator is not None and owner != concentrator:
                continue
            rows.append(
                MeterDay(day, name, archive[name], owner, (hi - lo) // plan.interval_s,
                         c.live, c.recovered, c.late)
            )  # fmt: skip
        day += dt.timedelta(days=1)
    heard = {m for m, seen in last_heard.items() if seen}  # (filtered meters only)
    told = reported(conn, first, end, concentrator)
    return Report(plan, since, until, now, rows, heard, _archive_size(conn), told)


REPORTED_FIELDS = ("meters", "complete", "expected", "live", "recovered")


def reported(
    conn: Connection, first: dt.date, end: dt.date, concentrator: str | None = None
) -> dict[tuple[str, str], dict[str, Any]]:
    """The concentrators' own ``collection_day`` figures of the days ``first`` ≤ day <
    ``end``, by (concentrator, day): the event's totals (its meter list left out). The
    event is sent after the day, on the concentrator's clock: looked for up to two days
    after the window."""
    e = events.c
    lo = dt.datetime.combine(first, dt.time(), dt.UTC).timestamp() - DAY_S
    hi = dt.datetime.combine(end, dt.time(), dt.UTC).timestamp() + 2 * DAY_S
    query = (
        select(e.concentrator, e.detail)
        .where(e.kind == "collection_day", e.at >= lo, e.at < hi)
        .order_by(e.id)
    )
    if concentrator is not None:
        query = query.where(e.concentrator == concentrator)
    days = {(first + dt.timedelta(days=i)).isoformat() for i in range((end - first).days)}
    out: dict[tuple[str, str], dict[str, Any]] = {}
    for conc, detail in conn.execute(query):
        if isinstance(detail, dict) and detail.get("day") in days:
            out[(conc, detail["day"])] = {k: detail.get(k) for k in REPORTED_FIELDS}
    return out


@dataclass
class _Count:
    live: int = 0
    recovered: int = 0
    late: int = 0


def _owner(
    history: Sequence[Assignment], slot: int, heard: Sequence[tuple[int, str]], before: int
) -> str:
    """The meter-day's concentrator (see "Whose" in the module docstring)."""
    owner = owner_at(history, slot)
    if owner is not None:
        return owner
    delivered = [(s, c) for s, c in heard if s < before]
    return max(delivered)[1] if delivered else ""


def _archive(conn: Connection, meter: str | None, area: str | None) -> dict[str, str]:
    m = meters.c
    query = select(m.meter, m.area)
    if meter is not None:
        query = query.where(m.meter == meter)
    if area is not None:
        query = query.where(m.area == area)
    return {r[0]: r[1] for r in conn.execute(query)}


def _archive_size(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(meters)).scalar_one())


Heard = dict[str, list[tuple[int, str]]]  # meter -> (latest slot, concentrator) per day


def _int(n: int) -> ColumnElement[Any]:
    """An integer written into the SQL (never a value from outside: our own constants)."""
    return literal_column(str(int(n)), BigInteger())


class LookBack:
    """The look-back day's deliveries (who last delivered each meter), kept while the
    window's first day stays the same: the metrics refresh today's figures every few
    seconds, and yesterday no longer changes much."""

    def __init__(self) -> None:
        self._key: tuple[int, str | None, str | None] | None = None
        self._heard: Heard = {}

    def get(
        self, conn: Connection, plan: Plan, since: int, meter: str | None, area: str | None
    ) -> Heard:
        key = (since, meter, area)
        if self._key != key:
            self._heard = _delivered(conn, plan, since - DAY_S, since, meter, area)
            self._key = key
        return self._heard


def _grid_readings(
    plan: Plan, since: int, until: int, meter: str | None, area: str | None
) -> Select[Any]:
    """The plan's readings of archive meters on its grid in ``[since, until)``, from each
    meter's commissioning on (columns to be chosen by the caller)."""
    r, m, o = readings.c, meters.c, meter_owners.c
    first_owned = (
        select(o.meter.label("meter"), func.min(o.effective_from).label("since"))
        .group_by(o.meter)
        .subquery()
    )
    query = (
        select(r.meter)
        .select_from(
            readings.join(meters, m.meter == r.meter).outerjoin(
                first_owned, first_owned.c.meter == r.meter
            )
        )
        .where(
            r.quantity == plan.quantity,
            r.slot >= since,
            r.slot < until,
            (r.slot + plan.offset_s) % plan.interval_s == 0,
            r.slot >= func.coalesce(first_owned.c.since, 0),
        )
    )
    if meter is not None:
        query = query.where(r.meter == meter)
    if area is not None:
        query = query.where(m.area == area)
    return query


def _delivered(
    conn: Connection, plan: Plan, since: int, until: int, meter: str | None, area: str | None
) -> Heard:
    r = readings.c
    query = _grid_readings(plan, since, until, meter, area)
    grouped: Select[Any] = query.with_only_columns(
        r.meter, r.concentrator, func.max(r.slot)
    ).group_by(r.meter, r.concentrator)
    heard: Heard = defaultdict(list)
    for row in conn.execute(grouped):
        heard[row[0]].append((int(row[2]), row[1]))
    return dict(heard)


def _counts(
    conn: Connection,
    plan: Plan,
    since: int,
    until: int,
    now: float,
    meter: str | None,
    area: str | None,
) -> tuple[dict[tuple[str, dt.date], _Count], Heard]:
    """Per (meter, day) the due grid readings of the plan's quantity from each meter's
    commissioning on, live / recovered / late; and per meter, (latest slot, concentrator)
    of each deliverer per day. Batches are looked up for their arrival only when a day
    of the window is past its cut-off (nothing is late before)."""
    r, b = readings.c, batches.c
    # Constants inline (integers): grouped by, an expression must read the same.
    day_no = (r.slot + _int(plan.offset_s)) // _int(DAY_S)
    query = _grid_readings(plan, since, until, meter, area)
    keys: list[ColumnElement[Any]] = [r.meter, r.concentrator, r.source, day_no]
    late: ColumnElement[Any] = _int(0)  # selected, never grouped by ("GROUP BY 0": a position)
    if plan.cutoff(plan.day_of(since)) < now:
        cutoff = (day_no + _int(1)) * _int(DAY_S) - _int(plan.offset_s - plan.late_after_s)
        late = case((b.received_at > cutoff, 1), else_=0)
        keys.append(late)
        query = query.outerjoin(batches, and_(b.concentrator == r.concentrator, b.seq == r.seq))
    grouped = query.with_only_columns(
        r.meter, r.concentrator, r.source, day_no, late, func.count(), func.max(r.slot)
    ).group_by(*keys)
    counts: dict[tuple[str, dt.date], _Count] = defaultdict(_Count)
    latest: dict[tuple[str, str, int], int] = {}
    for name, conc, source, day_no_, is_late, n, last in conn.execute(grouped).all():
        key = (name, conc, int(day_no_))
        latest[key] = max(latest.get(key, 0), int(last))
        c = counts[(name, dt.date.fromordinal(int(day_no_) + _EPOCH))]
        if source == RECOVERED_SOURCE:
            c.recovered += int(n)
        elif source in LIVE_SOURCES:
            c.live += int(n)
        else:
            continue
        c.late += int(n) if is_late else 0
    heard: Heard = defaultdict(list)
    for (name, conc, _), last in latest.items():
        heard[name].append((last, conc))
    return dict(counts), dict(heard)


# ------------------------------------------------------------------ the document
def _total(t: Totals) -> dict[str, Any]:
    return {
        "meters": t.meters, "complete": t.complete, "success_rate": t.success_rate,
        "expected": t.expected, "live": t.live, "recovered": t.recovered, "late": t.late,
        "missing": t.expected - t.received, "ratio": t.ratio,
    }  # fmt: skip


def _meter(m: MeterDay) -> dict[str, Any]:
    return {
        "day": m.day.isoformat(), "meter": m.meter, "area": m.area,
        "concentrator": m.concentrator or None, "expected": m.expected, "live": m.live,
        "recovered": m.recovered, "late": m.late, "missing": m.missing, "status": m.status,
    }  # fmt: skip


def document(report: Report, rows: list[MeterDay], more: int) -> dict[str, Any]:
    """The report as `completeness --json` and ``GET /api/v1/completeness`` give it:
    totals by day, concentrator and area, ``rows`` (the meters' days shown) and how
    many more there were."""
    p = report.plan
    return {
        "plan": {"quantity": p.quantity, "interval_s": p.interval_s,
                 "slots_per_day": p.slots_per_day, "late_after_s": p.late_after_s},
        "since": iso(report.since), "until": iso(report.until), "at": iso(report.now),
        "overall": _total(report.overall()),
        "days": {t.key: _total(t) for t in report.totals("day")},
        "concentrators": {t.key or "": _total(t) for t in report.totals("concentrator")},
        "areas": {t.key: _total(t) for t in report.totals("area")},
        "meters": [_meter(m) for m in rows],
        "reported": [{"concentrator": c, "day": d, **figures}
                     for (c, d), figures in sorted(report.reported.items())],
        "more": more,
    }  # fmt: skip
