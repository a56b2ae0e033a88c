"""The commands that ask the running daemon over its control socket: ``status``,
``meters``, ``read METER``, ``relay``, ``time-sync``, ``events``, ``buffer``, ``flush``,
``backfill`` and ``logs`` (`concentrator.control` is the other side)."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from clitools.options import day_option, json_option
from clitools.table import READING_COLUMNS, Column, limit_option, more_note, print_table
from concentrator.cli.common import (
    daemon_call,
    err_console,
    report_not_supported,
    socket_option,
    stdout_console,
    stream,
)
from concentrator.cli.exitcodes import exit_for_control
from concentrator.control.client import result_of
from concentrator.control.logring import LOG_RING_LINES
from concentrator.control.protocol import ErrorCode
from concentrator.storage.event_kinds import kind_problem
from contract.timezone import iso_time
from drivers import dlt645
from drivers.readers import PROTOCOL_NAMES

if TYPE_CHECKING:
    from rich.console import Console

DAY_METAVAR = "[%Y-%m-%d]"  # as the dates have always been shown in --help


def _tz(text: object) -> dt.tzinfo | None:
    try:
        return dt.datetime.strptime(str(text), "%z").tzinfo
    except ValueError:
        return None


def _when(t: float | None, tz: dt.tzinfo | None) -> str:
    """ISO 8601 with the offset of the concentrator's zone (docs/output.md)."""
    if t is None:
        return "-"
    return iso_time(t, tz or dt.UTC)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


def _rate(read: int, missing: int) -> str:
    total = read + missing
    return f"{read / total * 100:.2f} %" if total else "-"


def _compact(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _plain(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def _modem_line(modem: dict[str, Any] | None) -> str:
    if modem is None:
        return "not configured"
    state = "link up" if modem["link_up"] else f"link DOWN ({modem['cause']})"
    signal = "-" if modem["rssi_dbm"] is None else f"{modem['rssi_dbm']} dBm"
    return (
        f"{state}, {modem['registration']}, {modem['operator'] or '-'}, signal {signal}; "
        f"{modem['outages']} outages, {modem['resets']} resets, {modem['hangs']} hangs"
    )


def _uplink_line(uplink: dict[str, Any] | None) -> str:
    if uplink is None:
        return "not configured"
    state = "connected" if uplink["connected"] else "not connected"
    return (
        f"{state}, {uplink['in_flight']} batches in flight, {uplink['batches_acked']} acked, "
        f"{uplink['batches_resent']} resent, {uplink['rejected']} rejected"
    )


@click.command()
@socket_option
@json_option()
def status(socket_path: Path, as_json: bool) -> None:
    """The running daemon: uptime, buses, meter health, today's read success, backlog,
    uplink."""
    doc = daemon_call(socket_path, "status")
    if as_json:
        click.echo(json.dumps(doc))
        return
    tz = _tz(doc["timezone"])
    m, today, b = doc["meters"], doc["today"], doc["backlog"]
    console = stdout_console()
    for line in (
        f"concentrator {doc['concentrator']}  version {doc['version']}  pid {doc['pid']}  "
        f"up {_age(doc['uptime_s'])}",
        f"clock    {_when(doc['wall'], tz)} ({doc['timezone']})",
        f"meters   {m['total']}: {m['online']} online, {m['degraded']} degraded, "
        f"{m['offline']} offline, {m['unknown']} not read yet",
        f"today    {_rate(today['read'], today['missing'])} read success "
        f"({today['read']} read, {today['missing']} missing)",
        f"backlog  {b['readings']} readings, {b['events']} events undelivered; "
        f"oldest read {_age(b['oldest_age_s'])} ago",
        f"uplink   {_uplink_line(doc['uplink'])}",
        f"modem    {_modem_line(doc['modem'])}",
        f"archive  {_archive_line(doc['archive'])}",
    ):
        _plain(console, line)
    numbers = ("utilisation", "queued", "transactions", "timeouts", "frame errors", "reads",
               "missing")  # fmt: skip
    columns = [Column("bus", "id"), Column("type"), Column("busy"),
               *(Column(c, "number") for c in numbers)]  # fmt: skip
    rows = [
        (name, bus["type"], "yes" if bus["busy"] else "no", f"{bus['utilisation'] * 100:.1f} %",
         bus["queued"], bus["transactions"], bus["timeouts"], bus["frame_errors"],
         bus["reads_ok"], bus["missing"])
        for name, bus in doc["buses"].items()
    ]  # fmt: skip
    print_table(columns, rows, title="buses")


@click.command()
@click.option("--offline", is_flag=True, help="Only the meters that are offline.")
@click.option("--bus", default=None, help="Only the meters on this bus.")
@limit_option()
@socket_option
@json_option()
def meters(offline: bool, bus: str | None, limit: int, socket_path: Path, as_json: bool) -> None:
    """Every configured meter: bus, protocol, health, last read, today's read/missing
    (the first --limit of them, with a note on stderr when there are more)."""
    doc = daemon_call(socket_path, "meters", {"offline": offline, "bus": bus})
    more = max(0, len(doc["meters"]) - limit) if limit else 0
    if more:
        doc["meters"] = doc["meters"][:limit]
    more_note(more, "use --limit (0: all), --bus or --offline")
    if as_json:
        click.echo(json.dumps({**doc, "more": more}))
        return
    tz = _tz(doc["timezone"])
    columns = (
        Column("meter", "id"), Column("bus", "id"), Column("protocol"), Column("state"),
        Column("last read", "time"), Column("read today", "number"),
        Column("missing today", "number"), Column("last error"),
    )  # fmt: skip
    rows = [
        (row["address"], row["bus"], row["protocol"], row["state"],
         _when(row["last_read_at"], tz), row["read_today"], row["missing_today"],
         row["last_error"] or "")
        for row in doc["meters"]
    ]  # fmt: skip
    print_table(
        columns,
        rows,
        title="meters" + (" (offline)" if offline else "") + (f" on {bus}" if bus else ""),
    )
    _plain(stdout_console(), f"{len(doc['meters'])} meter(s)")


def read_via_daemon(
    socket_path: Path, address: str, quantities: Sequence[str], as_json: bool
) -> None:
    """``read METER``: the daemon reads ahead of its polls; shown as direct mode shows it."""
    doc = daemon_call(socket_path, "read", {"meter": address, "quantities": list(quantities)})
    unsupported: list[str] = doc["not_supported"]
    if as_json:
        out = {
            "meter": doc["meter"],
            "bus": doc["bus"],
            "protocol": doc["protocol"],
            "readings": doc["readings"],
        }
        if unsupported:
            out["not_supported"] = unsupported
        click.echo(json.dumps(out))
    else:
        kind = PROTOCOL_NAMES.get(doc["protocol"], doc["protocol"])
        print_table(
            READING_COLUMNS,
            [(r["name"], r["di"], r["value"], r["unit"]) for r in doc["readings"]],
            title=f"meter {doc['meter']} on {doc['bus']}: {kind} (daemon)",
        )
    code = report_not_supported(
        address, unsupported, read_any=bool(doc["readings"]), as_json=as_json
    )
    if code:
        sys.exit(code)


@click.command()
@click.argument("meter")
@click.argument("action", type=click.Choice(["open", "close"]))
@socket_option
@json_option()
def relay(meter: str, action: str, socket_path: Path, as_json: bool) -> None:
    """Open (trip) or close a meter's load switch: DL/T 645 0x1C with the meter's
    password and operator code from the daemon's config, ahead of the polls on its bus.
    Every attempt is recorded as a "relay" event (who, when, result)."""
    doc = daemon_call(socket_path, "relay", {"meter": meter, "action": action})
    if as_json:
        click.echo(json.dumps(doc))
        return
    state = doc["relay_state"]
    if state is None:
        text = f"meter {meter}: {action} accepted; the relay state could not be read back"
    else:
        text = f"meter {meter}: relay {state} (status word 3 = {doc['status_word_3']})"
        if action == "close" and state == "open":
            text += "; closing is allowed, the customer closes it at the meter"
    _plain(stdout_console(), text)


@click.command("time-sync")
@socket_option
@json_option()
def time_sync(socket_path: Path, as_json: bool) -> None:
    """Set the clock of every DL/T 645 meter: one broadcast time frame (0x08) per bus,
    sent by each bus worker between two polls. Recorded as a "time_sync" event."""
    doc = daemon_call(socket_path, "time-sync")
    if as_json:
        click.echo(json.dumps(doc))
    else:
        rows = [
            (row["bus"], row["meters"], row["result"],
             row.get("sent") or row.get("reason") or row.get("error", {}).get("message"))
            for row in doc["buses"]
        ]  # fmt: skip
        columns = (Column("bus", "id"), Column("meters", "number"), Column("result"),
                   Column("time sent / why not"))  # fmt: skip
        print_table(columns, rows, title=f"broadcast time ({doc['timezone']})")
    failed = [row for row in doc["buses"] if row["result"] == "failed"]
    if failed:
        sys.exit(exit_for_control(failed[0]["error"]["code"]))


def _event_kind(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``--kind``: one of the kinds the concentrator records, checked before the daemon
    is asked (`concentrator.storage.event_kinds`, the daemon's own rule)."""
    if value is not None and (problem := kind_problem(value)) is not None:
        raise click.BadParameter(problem, ctx=ctx, param=param)
    return value


@click.command()
@click.option(
    "--since",
    default=None,
    help="Unix seconds, an ISO date or time (concentrator time), or an age: 30m, 2h, 1d.",
)
@click.option(
    "--until",
    default=None,
    help="Only events before this time (the same forms as --since).",
)
@click.option(
    "--kind",
    default=None,
    callback=_event_kind,
    help="Only this kind: relay, time_sync, meter_state, loss... (a wrong one lists them all).",
)
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="The newest N."
)
@socket_option
@json_option()
def events(
    since: str | None,
    until: str | None,
    kind: str | None,
    limit: int,
    socket_path: Path,
    as_json: bool,
) -> None:
    """Events from the daemon's store, oldest first (they also go upstream); the newest
    --limit of them, with a note on stderr when there are more."""
    args: dict[str, Any] = {"since": since, "kind": kind, "limit": limit}
    if until is not None:  # only when given: a daemon of the previous release lacks it
        args["until"] = until
    doc = daemon_call(socket_path, "events", args)
    more = doc["total"] - len(doc["events"])
    if as_json:
        click.echo(json.dumps(doc))
        more_note(more)
        return
    tz = _tz(doc["timezone"])
    rows = [
        (_when(e["at"], tz), e["kind"], e["severity"], e["meter"] or "",
         " ".join(f"{k}={_compact(v)}" for k, v in e["detail"].items()))
        for e in doc["events"]
    ]  # fmt: skip
    columns = (Column("time", "time"), Column("kind", "id"), Column("severity"),
               Column("meter", "id"), Column("detail"))  # fmt: skip
    print_table(columns, rows, title="events")
    _plain(stdout_console(), f"{len(doc['events'])} of {doc['total']} event(s)")
    more_note(more, "older ones: use --limit/--since/--until")


@click.command()
@socket_option
@json_option()
def buffer(socket_path: Path, as_json: bool) -> None:
    """What waits for the uplink: undelivered readings and events, the oldest one's age,
    batches in flight."""
    doc = daemon_call(socket_path, "buffer")
    if as_json:
        click.echo(json.dumps(doc))
        return
    tz = _tz(doc["timezone"])
    console = stdout_console()
    for line in (
        f"undelivered  {doc['readings']} readings, {doc['events']} events",
        f"oldest       slot {_when(doc['oldest_slot'], tz)}, read {_age(doc['oldest_age_s'])} ago",
        f"in flight    {doc['batches_in_flight']} batches ({doc['readings_in_flight']} readings)",
        f"not written  {doc['pending_writes']} readings"
        + (" (disk full: held in memory)" if doc["disk_full"] else ""),
        f"uplink       {_uplink_line(doc['uplink'])}",
    ):
        _plain(console, line)


def _archive_line(a: dict[str, Any]) -> str:
    """The meter archive and commissioning mode, on one line (docs/analytics.md)."""
    if a["archive_version"] is None:
        text = "none received: polling every configured meter"
    else:
        text = f"version {a['archive_version']}, {a['archive_meters']} meters"
    mode = "on" if a["commissioning"] else "off"
    text += f"; commissioning {mode} ({a['commissioning_source']})"
    refused = a["refused"]
    if refused:
        more = f" and {len(refused) - 5} more" if len(refused) > 5 else ""
        shown = ", ".join(refused[:5]) + more
        text += f"; not polled (outside the archive): {shown}"
    return text


@click.command()
@click.argument("mode", type=click.Choice(["on", "off", "config"]))
@socket_option
@json_option()
def commissioning(mode: str, socket_path: Path, as_json: bool) -> None:
    """Commissioning mode: on polls every configured meter, off only those of the
    archive the receiver downloaded, config as [concentrator] commissioning says.

    The word is kept in the store (it outlives restarts) and written as a
    ``commissioning`` event."""
    doc = daemon_call(socket_path, "commissioning", {"mode": mode})
    if as_json:
        click.echo(json.dumps(doc))
        return
    _plain(stdout_console(), f"archive  {_archive_line(doc)}")


@click.command()
@socket_option
@json_option()
def flush(socket_path: Path, as_json: bool) -> None:
    """Ask the uplink to send what is waiting now instead of at its next poll."""
    doc = daemon_call(socket_path, "flush")
    if as_json:
        click.echo(json.dumps(doc))
        return
    p = doc["pending"]
    uplink = doc["uplink"]
    text = (
        f"uplink asked to send now: {p['readings']} readings and {p['events']} events were "
        f"waiting (oldest read {_age(p['oldest_age_s'])} ago); {_uplink_line(uplink)}"
    )
    if not uplink["connected"]:
        text += "; they go as soon as the broker is reached"
    _plain(stdout_console(), text)


@click.command()
@click.argument("meter")
@day_option(
    "--from",
    "first",
    required=True,
    metavar=DAY_METAVAR,
    help="First day (YYYY-MM-DD, concentrator time).",
)
@day_option("--to", "last", required=True, metavar=DAY_METAVAR, help="Last day, included.")
@socket_option
@json_option()
def backfill(meter: str, first: dt.date, last: dt.date, socket_path: Path, as_json: bool) -> None:
    """Recover a meter's daily freezes of a range of days from its own history (the last
    62 days), through the daemon's backfill at low priority; shows progress."""
    # Checked here, before the daemon is asked: a bad range is a usage error (exit 2).
    if first > last:
        raise click.BadParameter(
            f"--from {first} is after --to {last}: give the earlier day first", param_hint="--from"
        )
    if (last - first).days + 1 > dlt645.MAX_DAILY_FREEZES:
        raise click.BadParameter(
            f"{(last - first).days + 1} days from {first} to {last}: at most "
            f"{dlt645.MAX_DAILY_FREEZES} (the daily freezes a meter keeps)",
            param_hint="--to",
        )
    args = {"meter": meter, "from": first.isoformat(), "to": last.isoformat()}
    # No timeout: a backfill waits behind the polls on a busy bus. The first line comes
    # at once; the bar appears only once the daemon answers.
    lines = stream(socket_path, "backfill", args, timeout=None)
    final: dict[str, Any] = next(lines)
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn(f"backfill {meter}"),
        BarColumn(),
        TextColumn(
            "{task.completed}/{task.total} days, "
            "{task.fields[stored]} stored, {task.fields[failed]} failed"
        ),
        TimeElapsedColumn(),
        console=err_console.rich(),
        disable=as_json,
    ) as progress:
        bar = progress.add_task("backfill", total=None, stored=0, failed=0)
        for doc in itertools.chain([final], lines):
            if "progress" in doc:
                p = doc["progress"]
                progress.update(
                    bar,
                    total=p["total"],
                    completed=p["done"],
                    stored=p["stored"],
                    failed=p["failed"],
                )
            final = doc
    result = result_of(final)
    if as_json:
        click.echo(json.dumps(result))
    else:
        rows = []
        for row in result["days"]:
            if row["state"] == "stored":
                detail = ", ".join(f"{r['name']} {r['value']}" for r in row["readings"][:2])
            else:
                detail = row.get("reason") or row.get("error", {}).get("message", "")
            rows.append((row["day"], row["state"], detail))
        columns = (Column("day", "time"), Column("state"), Column("detail"))
        print_table(columns, rows, title=f"daily freezes of meter {meter}")
    failed = [row for row in result["days"] if row["state"] == "failed"]
    if failed:
        sys.exit(exit_for_control(failed[0]["error"]["code"]))


@click.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines until Ctrl-C.")
@click.option(
    "-n",
    "--lines",
    type=click.IntRange(0, LOG_RING_LINES),
    default=50,
    show_default=True,
    help="How many recent lines first (the newest, of those in --since/--until).",
)
@click.option(
    "--since",
    default=None,
    help="Only lines from this time on: unix seconds, an ISO date or time (concentrator "
    "time), or an age: 30m, 2h, 1d.",
)
@click.option(
    "--until",
    default=None,
    help="Only lines before this time (the same forms as --since; not with --follow).",
)
@socket_option
@json_option()
def logs(
    follow: bool,
    lines: int,
    since: str | None,
    until: str | None,
    socket_path: Path,
    as_json: bool,
) -> None:
    """The daemon's recent log lines (INFO and up, or DEBUG with run -vv), from memory:
    the newest -n of those logged in the --since/--until range."""
    if follow and until is not None:
        raise click.UsageError("--until with --follow: nothing later would be printed")
    args: dict[str, Any] = {"lines": lines, "follow": follow}
    for name, value in (("since", since), ("until", until)):
        if value is not None:  # only when given: a daemon of the previous release lacks them
            args[name] = value
    final: dict[str, Any] = {}
    try:
        for doc in stream(socket_path, "logs", args, timeout=None if follow else 300):
            if "log" in doc:
                click.echo(json.dumps(doc["log"]) if as_json else doc["log"]["text"])
                sys.stdout.flush()
            final = doc
    except KeyboardInterrupt:
        return  # how a follower ends
    error = final.get("error")
    if follow and isinstance(error, dict) and error.get("code") == ErrorCode.STOPPING:
        err_console.print("the daemon stopped")
        return
    result_of(final)
