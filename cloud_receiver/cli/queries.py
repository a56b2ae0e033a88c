"""``readings`` and ``concentrators``: what the receiver has stored."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from clitools.options import db_option, json_option, quantity_option
from cloud_receiver.access.policy import Action, Resource
from cloud_receiver.cli.auth import acting, session_option
from cloud_receiver.cli.common import time_arg


@click.command()
@db_option()
@session_option()
@click.option("--meter", default=None, help="Meter address (all meters when omitted).")
@click.option("--from", "since", default=None, help="First slot: unix seconds or ISO time.")
@click.option("--to", "until", default=None, help="End slot (exclusive): unix or ISO time.")
@quantity_option("Only this quantity (repeat for several; all when omitted).")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout instead of a table.")
def readings(
    db_url: str,
    session_file: Path | None,
    meter: str | None,
    since: str | None,
    until: str | None,
    quantities: tuple[str, ...],
    as_csv: bool,
) -> None:
    """Readings the receiver stored, by meter and time range (audited)."""
    import csv

    from rich.console import Console
    from rich.table import Table

    first, end = time_arg(since), time_arg(until)
    scope = Resource("meter", meter) if meter is not None else Resource("all")
    with acting(db_url, session_file, Action.DATA_READ, scope) as actor:
        rows = actor.storage.readings(meter=meter, since=first, until=end, quantities=quantities)
        actor.read("readings", str(scope), customers=1 if meter else len({r.meter for r in rows}),
                   export="csv" if as_csv else None,
                   detail={"from": first, "to": end, "rows": len(rows)})  # fmt: skip
    columns = (
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
    if as_csv:
        out = csv.writer(sys.stdout)
        out.writerow(columns)
        for r in rows:
            out.writerow([getattr(r, c) for c in columns])
        return
    table = Table(title=f"{len(rows)} readings")
    for c in columns:
        table.add_column(c)
    for r in rows:
        table.add_row(*(str(getattr(r, c)) for c in columns))
    Console().print(table)


@click.command()
@db_option()
@session_option()
@json_option()
def concentrators(db_url: str, session_file: Path | None, as_json: bool) -> None:
    """Every concentrator heard from: last seen, batches and readings acked, sequence gaps."""
    import dataclasses
    import json

    from rich.console import Console
    from rich.table import Table

    with acting(db_url, session_file, Action.FLEET_READ) as actor:
        infos = actor.storage.concentrators()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(i) for i in infos]))
        return
    table = Table(title="concentrators")
    for c in ("concentrator", "last seen", "batches", "readings", "max seq", "gaps"):
        table.add_column(c)
    import datetime as dt

    for i in infos:
        table.add_row(
            i.concentrator,
            dt.datetime.fromtimestamp(i.last_seen).isoformat(" ", "seconds"),
            str(i.batches),
            str(i.readings),
            str(i.max_seq),
            str(i.missing_seqs),
        )
    Console().print(table)


COMMANDS = [readings, concentrators]
