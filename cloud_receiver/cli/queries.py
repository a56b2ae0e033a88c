"""``readings`` and ``concentrators``: what the receiver has stored."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from clitools.options import db_option, json_option, quantity_option
from clitools.output import print_json, to_jsonable
from clitools.table import Column, limit_option, more_note, print_table, window
from clitools.timefmt import iso, since_option, time_range, until_option
from cloud_receiver.access.policy import Action, Resource
from cloud_receiver.cli.auth import acting, session_option
from cloud_receiver.storage.records import StoredRow

_READING_COLUMNS = (
    Column("meter", "id"),
    Column("quantity"),
    Column("slot", "time"),
    Column("value", "number"),
    Column("unit"),
    Column("read_at", "time"),
    Column("source"),
    Column("concentrator", "id"),
    Column("seq", "number"),
)


def _reading_row(r: StoredRow) -> list[object]:
    """A stored reading for a table, CSV or JSON: times in ISO 8601 with offset."""
    return [r.meter, r.quantity, iso(r.slot), r.value, r.unit, iso(r.read_at), r.source,
            r.concentrator, r.seq]  # fmt: skip


@click.command()
@db_option()
@session_option()
@click.option("--meter", default=None, help="Meter address (all meters when omitted).")
@since_option("First slot (ISO 8601, or unix seconds); --from is the same.", also="--from")
@until_option("End slot, exclusive (ISO 8601, or unix seconds); --to is the same.", also="--to")
@limit_option()
@quantity_option("Only this quantity (repeat for several; all when omitted).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout instead of a table.")
@json_option()
def readings(
    db_url: str,
    session_file: Path | None,
    meter: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    quantities: tuple[str, ...],
    as_csv: bool,
    as_json: bool,
) -> None:
    """Readings the receiver stored, by meter and time range (audited). The database
    must exist: a query never creates one."""
    import csv

    first, end = time_range(since, until)
    scope = Resource("meter", meter) if meter is not None else Resource("all")
    with acting(db_url, session_file, Action.DATA_READ, scope) as actor:
        rows = actor.storage.readings(meter=meter, since=first, until=end, limit=limit or None,
                                      quantities=quantities)  # fmt: skip
        total = (
            actor.storage.count_readings(meter, first, end, quantities)
            if len(rows) == limit
            else len(rows)
        )
        actor.read("readings", str(scope), customers=1 if meter else len({r.meter for r in rows}),
                   export="csv" if as_csv else "json" if as_json else None,
                   detail={"from": first, "to": end, "rows": len(rows)})  # fmt: skip
    more = total - len(rows)
    names = [c.name for c in _READING_COLUMNS]
    if as_json:
        print_json({"readings": [dict(zip(names, _reading_row(r), strict=True)) for r in rows],
                    "more": more})  # fmt: skip
    elif as_csv:
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(names)
        out.writerows(_reading_row(r) for r in rows)
    else:
        title = f"{len(rows)} readings" + (f" of {total}" if more else "")
        print_table(_READING_COLUMNS, [_reading_row(r) for r in rows], title=title)
    more_note(more)


@click.command()
@db_option()
@session_option()
@since_option("Only concentrators last seen from this time on (ISO 8601, or unix seconds).")
@until_option("Only concentrators last seen before this time (ISO 8601, or unix seconds).")
@limit_option()
@json_option()
def concentrators(
    db_url: str,
    session_file: Path | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Every concentrator heard from: last seen, batches and readings acked, sequence gaps;
    the first --limit by identifier of those last seen in the --since/--until range."""
    first, end = time_range(since, until)
    with acting(db_url, session_file, Action.FLEET_READ) as actor:
        every = actor.storage.concentrators()
    infos, more = window(every, lambda i: i.last_seen, first, end, limit, newest=False)
    more_note(more)
    if as_json:
        print_json([{**to_jsonable(i), "last_seen": iso(i.last_seen)} for i in infos])
        return
    columns = (
        Column("concentrator", "id"),
        Column("last seen", "time"),
        Column("batches", "number"),
        Column("readings", "number"),
        Column("max seq", "number"),
        Column("gaps", "number"),
    )
    print_table(
        columns,
        [(i.concentrator, iso(i.last_seen), i.batches, i.readings, i.max_seq, i.missing_seqs)
         for i in infos],
        title="concentrators",
    )  # fmt: skip


COMMANDS = [readings, concentrators]
