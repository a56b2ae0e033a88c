"""``readings`` and ``concentrators``: what the receiver has stored."""

from __future__ import annotations

import sys

import click

from clitools.options import db_option, json_option
from cloud_receiver.cli.common import open_db, time_arg


@click.command()
@db_option()
@click.option("--meter", default=None, help="Meter address (all meters when omitted).")
@click.option("--from", "since", default=None, help="First slot: unix seconds or ISO time.")
@click.option("--to", "until", default=None, help="End slot (exclusive): unix or ISO time.")
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout instead of a table.")
def readings(
    db_url: str, meter: str | None, since: str | None, until: str | None, as_csv: bool
) -> None:
    """Readings the receiver stored, by meter and time range."""
    import csv

    from rich.console import Console
    from rich.table import Table

    storage = open_db(db_url)
    try:
        rows = storage.readings(meter=meter, since=time_arg(since), until=time_arg(until))
    finally:
        storage.close()
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
@json_option()
def concentrators(db_url: str, as_json: bool) -> None:
    """Every concentrator heard from: last seen, batches and readings acked, sequence gaps."""
    import dataclasses
    import json

    from rich.console import Console
    from rich.table import Table

    storage = open_db(db_url)
    try:
        infos = storage.concentrators()
    finally:
        storage.close()
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
