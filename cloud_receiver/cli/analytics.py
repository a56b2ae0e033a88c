"""``archive`` and ``report``: the meter archive and the analytics on the readings.

Errors keep their exit codes (`cloud_receiver.errors`): 3 when the stored readings do
not cover the report, 7 when the archive is wrong, 9 for an unknown area, meter or
account.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click

from clitools.options import day_option, db_option, json_option
from clitools.table import limit_option, more_note, window
from clitools.timefmt import site_tz_text
from cloud_receiver.access.policy import Action, Resource
from cloud_receiver.cli.auth import Actor, acting, session_option, show_request
from cloud_receiver.cli.common import emit, num
from cloud_receiver.errors import ReceiverError

if TYPE_CHECKING:
    from cloud_receiver.applications.fleet.archive import Archive


@contextlib.contextmanager
def _archive_db(
    db_url: str, session_file: Path | None, scope: Resource
) -> Iterator[tuple[Actor, Archive]]:
    """The operator acting (allowed to read data) and the stored `Archive`."""
    from cloud_receiver.applications.fleet.archive import Archive

    with acting(db_url, session_file, Action.DATA_READ, scope) as actor:
        yield actor, Archive(actor.storage.archive())


def _export(as_csv: bool, as_json: bool = False, png: Path | None = None) -> str | None:
    """The format customer data leaves in, for the audit log (None: shown as a table)."""
    formats = [f for f, on in (("csv", as_csv), ("json", as_json), ("png", png)) if on]
    return "+".join(formats) or None


def _tz_arg(ctx: click.Context, param: click.Parameter, value: str) -> dt.tzinfo:
    from cloud_receiver.applications.analytics.energy import parse_tz

    try:
        return parse_tz(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def _date_range(first: dt.date, end: dt.date) -> None:
    if end <= first:
        raise click.UsageError(
            f"empty range: --to {end} must be after --from {first} (the --to day is excluded)"
        )


def _analytics_options(fn: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(
        [
            db_option(),
            session_option(),
            click.option(
                "--tz",
                default=site_tz_text,
                show_default="the site's zone: cloud-receiver --tz, MF_TZ, +08:00",
                callback=_tz_arg,
                help="UTC offset of the local days (China Standard Time by default).",
            ),
            click.option(
                "--max-gap",
                "max_gap_min",
                type=click.IntRange(15, 24 * 60),
                default=60,
                show_default=True,
                help="Minutes within which a missing midnight reading is interpolated.",
            ),
        ]
    ):
        fn = option(fn)
    return fn


@click.group()
def archive() -> None:
    """The meter archive: each meter's transformer area, role, account and group."""


@archive.command("import")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False))
@db_option()
@session_option()
@click.option(
    "--replace", is_flag=True, help="Replace the whole archive (default: add and update meters)."
)
@click.option(
    "--effective",
    default=None,
    help="concentrator column: from when (unix seconds or ISO time; default: now).",
)
@json_option()
def archive_import(
    file: Path,
    db_url: str,
    session_file: Path | None,
    replace: bool,
    effective: str | None,
    as_json: bool,
) -> None:
    """Load an archive CSV (meter,area,role[,account,group,multiplier,concentrator]).

    A ``concentrator`` column assigns meters to concentrators from --effective on; the
    receiver then refuses their readings from any other. An archive change waits for a
    second operator's approval (`cloud-receiver approve ID`), which carries it out."""
    import time

    from cloud_receiver.applications.fleet.archive import ArchiveError, parse_archive
    from cloud_receiver.cli.common import time_arg

    try:
        records, owners = parse_archive(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ReceiverError(f"{file}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError:
        raise ArchiveError(f"{file}: not UTF-8 text") from None
    except ArchiveError as exc:
        raise ArchiveError(f"{file}: {exc}") from None
    rows = [[r.meter, r.area, r.role, r.account, r.group, str(r.multiplier)] for r in records]
    with acting(db_url, session_file) as actor:
        since = time_arg(effective)
        params = {"records": rows, "replace": replace, "source": file.name}
        if owners:
            params |= {"owners": owners, "effective": int(time.time()) if since is None else since}
        req = actor.submit("archive.import", params)
        show_request(req, as_json)


@archive.command("list")
@db_option()
@session_option()
@click.option("--area", default=None, help="Only this transformer area.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout (the import format).")
@limit_option()
@json_option()
def archive_list(
    db_url: str,
    session_file: Path | None,
    area: str | None,
    as_csv: bool,
    limit: int,
    as_json: bool,
) -> None:
    """The archive's meters, by area (total meter first); audited."""
    from cloud_receiver.applications.fleet.archive import COLUMNS

    scope = Resource("area", area) if area is not None else Resource("all")
    with _archive_db(db_url, session_file, scope) as (actor, arch):
        records = list(arch.area(area).meters) if area is not None else list(arch.records)
        actor.read("archive", str(scope), customers=sum(r.role == "customer" for r in records),
                   export=_export(as_csv, as_json))  # fmt: skip
    shown = records[:limit] if limit else records
    rows = [[r.meter, r.area, r.role, r.account, r.group, str(r.multiplier)] for r in shown]
    title = f"{len(rows)} meters" + (f" of {len(records)}" if len(shown) < len(records) else "")
    emit(COLUMNS, rows, title, as_csv, as_json, {"more": len(records) - len(shown)})
    more_note(len(records) - len(shown), "use --limit (0: all) or --area")


def _emit_first(
    columns: Sequence[str],
    rows: Sequence[Sequence[str]],
    title: str,
    as_csv: bool,
    as_json: bool,
    summary: dict[str, object],
    limit: int,
) -> None:
    """A report's first ``limit`` rows (0: all) by `emit`, ``more`` in its JSON and the
    note on stderr: a report's own day range is its time window (docs/output.md)."""
    shown, more = window(rows, lambda _: 0.0, None, None, limit, newest=False)
    if more:
        title = f"{title} (first {len(shown)} of {len(rows)} rows)"
    emit(columns, shown, title, as_csv, as_json, {**summary, "more": more})
    more_note(more, "use --limit (0: all) or a shorter --from/--to")


@click.group()
def report() -> None:
    """Utility analytics on the stored readings: usage, line loss, suspects, forecast."""


@report.command()
@click.option("--meter", default=None, help="One meter address.")
@click.option("--account", default=None, help="A billing account (all its meters).")
@click.option("--area", default=None, help="A transformer area (its total meter).")
@day_option("--from", "first", required=True, help="First day, YYYY-MM-DD.")
@day_option("--to", "end", required=True, help="End day (excluded).")
@click.option(
    "--by",
    type=click.Choice(["day", "month", "slot"]),
    default="day",
    show_default=True,
    help="Rows per day, per calendar month, or per 15-minute slot (the load curve).",
)
@click.option(
    "--tou",
    "tou_spec",
    default=None,
    help="Time-of-use periods, e.g. 'peak=08-11,18-23;valley=23-07' (flat: the rest)"
    " [default: that one].",
)
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout instead of a table.")
@click.option(
    "--png",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the load curve as a PNG.",
)
@limit_option()
@json_option()
@_analytics_options
def usage(
    meter: str | None,
    account: str | None,
    area: str | None,
    first: dt.date,
    end: dt.date,
    by: str,
    tou_spec: str | None,
    as_csv: bool,
    png: Path | None,
    limit: int,
    as_json: bool,
    db_url: str,
    session_file: Path | None,
    tz: dt.tzinfo,
    max_gap_min: int,
) -> None:
    """Energy per day, month or slot, time-of-use split, peak hour and load curve; a
    meter's or account's usage is one customer's data (audited). The days --from/--to
    are its time window; --limit keeps the first rows (the totals count them all)."""
    from cloud_receiver.applications.analytics.usage import (
        DEFAULT_TOU,
        Scope,
        parse_tou,
        slot_time,
        usage_report,
    )

    named: list[tuple[Scope, str | None]] = [
        ("meter", meter),
        ("account", account),
        ("area", area),
    ]
    chosen = [(s, v) for s, v in named if v is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --meter, --account, --area")
    _date_range(first, end)
    try:
        tou = parse_tou(tou_spec or DEFAULT_TOU)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--tou") from None
    scope, name = chosen[0]
    target = Resource(scope, str(name))
    with _archive_db(db_url, session_file, target) as (actor, arch):
        result = usage_report(
            actor.storage, arch, scope, name, first, end, tz, tou, max_gap_min * 60
        )
        actor.read(f"usage by {by}", str(target), customers=0 if scope == "area" else 1,
                   export=_export(as_csv, as_json, png),
                   detail={"from": str(first), "to": str(end)})  # fmt: skip
    if png is not None:
        from cloud_receiver.applications.analytics import plots

        plots.save_png(plots.load_curve(result, tz), png)
    total, peak = result.total_kwh, result.peak_hour
    summary: dict[str, object] = {"total_kwh": total, "peak_hour": peak, "png": png}
    periods = list(tou.periods)
    title = f"{scope} {name}: {first} to {end - dt.timedelta(days=1)}, time of use {tou.spec}"
    if by == "slot":
        rows = [
            [
                slot_time(result, i, tz).isoformat(timespec="minutes"),
                num(s.kw if s else None, 3),
                num(s.kwh if s else None, 4),
            ]
            for i, s in enumerate(result.curve)
        ]
        _emit_first(("slot", "kw", "kwh"), rows, title, as_csv, as_json, summary, limit)
    elif by == "month":
        rows = [
            [
                m.month,
                num(m.kwh),
                *(num(m.tou.get(p)) for p in periods),
                str(m.days),
                str(m.missing_days),
            ]
            for m in result.months
        ]
        cols = ("month", "kwh", *(f"{p}_kwh" for p in periods), "days", "missing_days")
        _emit_first(cols, rows, title, as_csv, as_json, summary, limit)
    else:
        rows = [
            [
                d.day.isoformat(),
                num(d.kwh),
                *(num(d.tou.get(p)) for p in periods),
                "" if d.peak_hour is None else f"{d.peak_hour:02d}:00",
                num(d.max_kw, 3),
                d.status,
                d.note,
            ]
            for d in result.days
        ]
        cols = (
            "day",
            "kwh",
            *(f"{p}_kwh" for p in periods),
            "peak_hour",
            "max_kw",
            "status",
            "note",
        )
        _emit_first(cols, rows, title, as_csv, as_json, summary, limit)
    if not (as_csv or as_json):
        click.echo(
            f"total {num(total) or 'incomplete'} kWh;"
            f" peak hour {'-' if peak is None else f'{peak:02d}:00-{peak + 1:02d}:00'}"
            + (f"; load curve written to {png}" if png else "")
        )


@report.command()
@click.option("--area", required=True, help="Transformer area.")
@day_option("--from", "first", required=True, help="First day, YYYY-MM-DD.")
@day_option("--to", "end", required=True, help="End day (excluded).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout instead of a table.")
@click.option(
    "--png",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also write the loss over time as a PNG.",
)
@limit_option()
@json_option()
@_analytics_options
def loss(
    area: str,
    first: dt.date,
    end: dt.date,
    as_csv: bool,
    png: Path | None,
    limit: int,
    as_json: bool,
    db_url: str,
    session_file: Path | None,
    tz: dt.tzinfo,
    max_gap_min: int,
) -> None:
    """Line loss per day: total meter against the sum of the customer meters. The days
    --from/--to are its time window; --limit keeps the first days (the summary counts
    them all)."""
    from cloud_receiver.applications.analytics.lineloss import line_loss, summarise

    _date_range(first, end)
    target = Resource("area", area)
    with _archive_db(db_url, session_file, target) as (actor, arch):
        days = line_loss(actor.storage, arch, area, first, end, tz, max_gap_min * 60)
        actor.read("line loss", str(target), customers=0, export=_export(as_csv, as_json, png),
                   detail={"from": str(first), "to": str(end)})  # fmt: skip
    if png is not None:
        from cloud_receiver.applications.analytics import plots

        plots.save_png(plots.line_loss(days, area), png)
    rows = [
        [
            d.day.isoformat(),
            num(d.supply_kwh),
            num(d.sales_kwh),
            num(d.loss_kwh),
            num(None if d.loss_rate is None else 100 * d.loss_rate),
            str(d.customers),
            str(len(d.missing_customers)),
            str(d.estimated),
            d.status,
            " ".join(d.missing_customers),
        ]
        for d in days
    ]
    cols = (
        "day",
        "supply_kwh",
        "sales_kwh",
        "loss_kwh",
        "loss_pct",
        "customers",
        "missing_customers",
        "estimated_meters",
        "status",
        "missing",
    )
    s = summarise(days)
    summary: dict[str, object] = {
        "days": s.days, "complete_days": s.complete_days, "supply_kwh": s.supply_kwh,
        "loss_kwh": s.loss_kwh, "loss_rate": s.loss_rate, "png": png,
    }  # fmt: skip
    _emit_first(cols, rows, f"line loss, area {area}", as_csv, as_json, summary, limit)
    if not (as_csv or as_json):
        rate = "-" if s.loss_rate is None else f"{100 * s.loss_rate:.2f} %"
        click.echo(
            f"{s.complete_days} of {s.days} days complete: supply {s.supply_kwh:.2f} kWh,"
            f" loss {s.loss_kwh:.2f} kWh, loss rate {rate}"
            " (incomplete days are left out, never counted as loss)"
            + (f"; plot written to {png}" if png else "")
        )


@report.command()
@click.option("--area", required=True, help="Transformer area.")
@day_option("--day", "day", required=True, help="Analysis day, YYYY-MM-DD.")
@limit_option()
@json_option()
@_analytics_options
def suspects(
    area: str,
    day: dt.date,
    limit: int,
    as_json: bool,
    db_url: str,
    session_file: Path | None,
    tz: dt.tzinfo,
    max_gap_min: int,
) -> None:
    """Theft and tamper suspects of an area, ranked, each with its evidence (audited: it
    names customers). --day is its time window; --limit keeps the highest ranked."""
    import dataclasses
    import json

    from cloud_receiver.applications.analytics.suspects import rank_suspects

    target = Resource("area", area)
    with _archive_db(db_url, session_file, target) as (actor, arch):
        result = rank_suspects(actor.storage, arch, area, day, tz, max_gap_s=max_gap_min * 60)
        actor.read("suspects", str(target), customers=len(result.suspects),
                   export=_export(False, as_json), detail={"day": str(day)})  # fmt: skip
    t = result.trend
    ranked, more = window(result.suspects, lambda _: 0.0, None, None, limit, newest=False)
    more_note(more, "use --limit (0: all)")
    if as_json:
        doc = dataclasses.asdict(result)
        doc["day"] = result.day.isoformat()
        doc["suspects"] = doc["suspects"][: len(ranked)]
        doc["more"] = more
        click.echo(json.dumps(doc, ensure_ascii=False))
        return
    if t.excess_points is None or t.excess_kwh is None or t.z is None:
        trend = "area loss trend: not enough complete days"
    else:
        trend = (
            f"area loss rate: baseline {num(100 * (t.baseline_rate or 0))} %, recent"
            f" {num(100 * (t.recent_rate or 0))} %; above what the load explains:"
            f" {t.excess_points:+.2f} points, {t.excess_kwh:+.1f} kWh/day (z = {t.z:.1f})"
        )
    rows = [
        [
            str(i),
            s.meter,
            s.account,
            f"{s.score:.1f}",
            "ALARM" if s.alarm else "",
            "\n".join(s.reasons),
        ]
        for i, s in enumerate(ranked, start=1)
    ]
    emit(
        ("rank", "meter", "account", "score", "alarm", "evidence"),
        rows,
        f"suspects, area {area}, {day} (alarm at score >= {result.alarm_score:.0f})",
        False,
    )
    click.echo(trend)
    for note in result.notes:
        click.echo(f"note: {note}")
    click.echo(f"{len(result.alarms)} alarm(s), {len(result.suspects)} suspect(s)")


@report.command()
@click.option("--area", required=True, help="Transformer area.")
@day_option("--day", "day", required=True, help="Day to forecast, YYYY-MM-DD.")
@click.option(
    "--history-days",
    type=click.IntRange(8, 730),
    default=56,
    show_default=True,
    help="Days of load before --day to learn from.",
)
@click.option("--csv", "as_csv", is_flag=True, help="The 96 values as CSV on stdout.")
@json_option()
@click.option(
    "--png",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="Also plot the forecast (and the actual load, when stored) as a PNG.",
)
@_analytics_options
def forecast(
    area: str,
    day: dt.date,
    history_days: int,
    as_csv: bool,
    as_json: bool,
    png: Path | None,
    db_url: str,
    session_file: Path | None,
    tz: dt.tzinfo,
    max_gap_min: int,
) -> None:
    """Next-day load of an area, 96 quarter-hours, by the method that validated best."""
    import json

    from cloud_receiver.applications.analytics import forecast as fc

    first = day - dt.timedelta(days=history_days)
    target = Resource("area", area)
    with _archive_db(db_url, session_file, target) as (actor, arch):
        history = fc.area_history(
            actor.storage, arch, area, first, day + dt.timedelta(days=1), tz, max_gap_min * 60
        )
        actor.read("forecast", str(target), customers=0,
                   export=_export(as_csv, as_json, png), detail={"day": str(day)})  # fmt: skip
    result = fc.forecast(history, area, day)
    actual = history.get(day)
    if actual is not None and all(v is None for v in actual):
        actual = None
    if png is not None:
        from cloud_receiver.applications.analytics import plots

        plots.save_png(plots.forecast(result, tz, actual), png)
    start = dt.datetime.combine(day, dt.time(), tzinfo=tz)
    times = [(start + dt.timedelta(minutes=15 * q)).strftime("%H:%M") for q in range(96)]
    complete = fc.complete(history, day)
    if as_json:
        doc = {
            "area": area,
            "day": day.isoformat(),
            "method": result.method,
            "validation_mape": result.validation,
            "validation_days": [d.isoformat() for d in result.validation_days],
            "baseline": fc.BASELINE,
            "kw": list(result.kw),
            "baseline_kw": list(result.baseline_kw) if result.baseline_kw else None,
            "actual_kw": list(actual) if actual is not None else None,
            "mape": fc.mape(complete, result.kw) if complete else None,
        }
        click.echo(json.dumps(doc))
        return
    baseline = result.baseline_kw
    rows = [
        [
            times[q],
            num(result.kw[q], 3),
            num(baseline[q] if baseline else None, 3),
            num(actual[q] if actual is not None else None, 3),
        ]
        for q in range(96)
    ]
    emit(
        ("time", "forecast_kw", "naive_kw", "actual_kw"),
        rows,
        f"load forecast, area {area}, {day} ({result.method})",
        as_csv,
    )
    if as_csv:
        return
    n = len(result.validation_days)
    for name, error in sorted(result.validation.items(), key=lambda x: x[1]):
        mark = " <- chosen" if name == result.method else ""
        mark += " (seasonal-naive baseline)" if name == fc.BASELINE else ""
        click.echo(f"  {name:14s} MAPE {error:6.2f} % on {n} validation days{mark}")
    if complete:
        got, naive = fc.mape(complete, result.kw), fc.mape(complete, baseline or complete)
        click.echo(f"actual {day}: forecast MAPE {num(got)} %, naive MAPE {num(naive)} %")
    if png:
        click.echo(f"plot written to {png}")


COMMANDS = [archive, report]
