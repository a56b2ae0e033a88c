"""``completeness``: the collection success rate (采集成功率) per day, concentrator, area
and meter, and the meters that fell short and why.

The rule (what is expected, live, recovered, late) is `cloud_receiver.storage.completeness`;
this prints it. Fleet data (no meter values), so a fleet read.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path

import click

from clitools.options import day_option, db_option, json_option
from clitools.output import print_json
from clitools.table import Column, limit_option, more_note, print_table
from clitools.timefmt import site_tz
from cloud_receiver.access.policy import Action, Resource
from cloud_receiver.cli.auth import acting, session_option
from cloud_receiver.cli.common import collection_options
from cloud_receiver.storage.completeness import (
    REPORTED_FIELDS,
    Grouping,
    MeterDay,
    Plan,
    Report,
    compute,
    document,
)

_TOTAL_COLUMNS = (
    Column("scope", "id"), Column("meters", "number"), Column("complete", "number"),
    Column("success", "number"), Column("expected", "number"), Column("live", "number"),
    Column("recovered", "number"), Column("late", "number"), Column("missing", "number"),
    Column("ratio", "number"),
)  # fmt: skip
_REPORTED_COLUMNS = (
    Column("concentrator", "id"), Column("day", "time"), Column("meters", "number"),
    Column("complete", "number"), Column("task slots", "number"), Column("live", "number"),
    Column("recovered", "number"),
)  # fmt: skip
_METER_COLUMNS = (
    Column("day", "time"), Column("meter", "id"), Column("area", "id"),
    Column("concentrator", "id"), Column("expected", "number"), Column("live", "number"),
    Column("recovered", "number"), Column("late", "number"), Column("missing", "number"),
    Column("status"),
)  # fmt: skip


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.2f} %"


def _days(day: dt.date | None, since: dt.date | None, until: dt.date | None, today: dt.date
          ) -> tuple[dt.date, dt.date]:  # fmt: skip
    """The local days asked for, as [first, end)."""
    if day is not None:
        if since is not None or until is not None:
            raise click.UsageError("--day is one day: give it, or --since/--until, not both")
        return day, day + dt.timedelta(days=1)
    first = since or today
    end = until or max(today, first) + dt.timedelta(days=1)
    if end <= first:
        raise click.UsageError(
            f"empty range: --until {end} must be after --since {first} (--until is excluded)"
        )
    return first, end


@click.command()
@db_option()
@session_option()
@day_option("--day", "day", metavar="DAY", help="One local day, YYYY-MM-DD (default: today).")
@day_option("--since", "since", metavar="DAY", help="First local day, YYYY-MM-DD.")
@day_option("--until", "until", metavar="DAY", help="Day after the last one (excluded).")
@click.option("--concentrator", default=None, help="Only the meters of this concentrator.")
@click.option("--area", default=None, help="Only the meters of this transformer area.")
@click.option("--meter", default=None, help="Only this meter.")
@click.option(
    "--incomplete-only", is_flag=True, help="List only the meters that fell short (and why)."
)
@collection_options()
@limit_option()
@json_option()
def completeness(
    db_url: str,
    session_file: Path | None,
    day: dt.date | None,
    since: dt.date | None,
    until: dt.date | None,
    concentrator: str | None,
    area: str | None,
    meter: str | None,
    incomplete_only: bool,
    interval_s: int,
    late_after: float,
    limit: int,
    as_json: bool,
) -> None:
    """Collection completeness: of the interval readings expected from the archive's
    meters, the share that reached the receiver (live and recovered apart), per day,
    concentrator and transformer area, with each meter's day and why it fell short
    (never_answered, partial, late). Today counts the slots completed so far."""
    tz = site_tz()
    now = time.time()
    first, end = _days(day, since, until, Plan(tz).day_of(now))
    plan = Plan(tz, interval_s=interval_s, late_after_s=int(late_after))
    scope = next(
        (Resource(k, v) for k, v in (("meter", meter), ("area", area),
         ("concentrator", concentrator)) if v is not None),
        Resource("all"),
    )  # fmt: skip
    with (
        acting(db_url, session_file, Action.FLEET_READ, scope) as actor,
        actor.storage.read() as conn,
    ):
        report = compute(conn, plan, first, end, now, meter=meter, area=area,
                         concentrator=concentrator)  # fmt: skip
    rows = report.incomplete() if incomplete_only else report.rows
    shown = rows[:limit] if limit else rows
    more = len(rows) - len(shown)
    if as_json:
        print_json(document(report, shown, more))
    else:
        _print(report, shown, first, end)
    more_note(more, "use --limit/--incomplete-only")


def _print(report: Report, rows: list[MeterDay], first: dt.date, end: dt.date) -> None:
    p = report.plan
    last = end - dt.timedelta(days=1)
    span = first.isoformat() if last == first else f"{first} to {last}"
    groups: tuple[Grouping, ...] = ("day", "concentrator", "area")
    totals = [
        (f"{by} {t.key or '(unassigned)'}", t.meters, t.complete, _pct(t.success_rate),
         t.expected, t.live, t.recovered, t.late, t.expected - t.received, _pct(t.ratio))
        for by in groups
        for t in report.totals(by)
    ]  # fmt: skip
    title = (f"collection completeness {span}: {p.slots_per_day} {p.quantity} readings per "
             f"meter and day (every {p.interval_s // 60} min)")  # fmt: skip
    print_table(_TOTAL_COLUMNS, totals, title=title)
    print_table(
        _METER_COLUMNS,
        [(m.day.isoformat(), m.meter, m.area, m.concentrator or "-", m.expected, m.live,
          m.recovered, m.late, m.missing, m.status.replace("_", " ")) for m in rows],
        title="meters",
    )  # fmt: skip
    if report.reported:
        print_table(
            _REPORTED_COLUMNS,
            [(c, d, *(f.get(k) for k in REPORTED_FIELDS))
             for (c, d), f in sorted(report.reported.items())],
            title="as the concentrators held it (their collection_day events)",
        )  # fmt: skip


COMMANDS = [completeness]
