"""``conflicts``: readings that arrived with a value different from the stored one.

The stored value stands (`cloud_receiver.storage.conflicts` says why); this lists both
so an operator can decide. Conflicts carry meter values: reading them is a data read,
audited like ``readings``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from pathlib import Path

import click

from clitools.options import db_option, json_option
from cloud_receiver.access.policy import Action, Resource
from cloud_receiver.cli.auth import acting, session_option
from cloud_receiver.cli.common import emit, time_arg


@click.command()
@db_option()
@session_option()
@click.option("--meter", default=None, help="Only this meter's conflicts.")
@click.option(
    "--since", default=None, help="Detected at or after: unix seconds or an ISO date/time."
)
@click.option("--until", default=None, help="Detected before: unix seconds or ISO date/time.")
@click.option(
    "--limit",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="At most this many, newest first.",
)
@json_option()
def conflicts(
    db_url: str,
    session_file: Path | None,
    meter: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Readings that arrived with a different value than the stored one (audited)."""
    first, end = time_arg(since), time_arg(until)
    if first is not None and end is not None and end <= first:
        raise click.BadParameter(f"--until {until} is not after --since {since}")
    scope = Resource("meter", meter) if meter is not None else Resource("all")
    with acting(db_url, session_file, Action.DATA_READ, scope) as actor:
        found = actor.storage.conflicts(since=first, until=end, meter=meter, limit=limit)
        actor.read(
            "conflicts", str(scope), customers=len({c.meter for c in found}),
            export="json" if as_json else None,
            detail={"since": first, "until": end, "rows": len(found)},
        )  # fmt: skip
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(c) for c in found]))
        return

    def at(t: float) -> str:
        return dt.datetime.fromtimestamp(t).isoformat(" ", "seconds")

    rows = [
        (at(c.received_at), c.meter, c.quantity, at(c.slot),
         f"{c.stored_value} {c.stored_unit}", f"{c.stored_concentrator}#{c.stored_seq}",
         f"{c.value} {c.unit}", f"{c.concentrator}#{c.seq}")
        for c in found
    ]  # fmt: skip
    columns = ("detected", "meter", "quantity", "slot", "stored", "by", "received", "by")
    emit(columns, rows, f"{len(found)} conflicts (the stored value stands)", as_csv=False)


COMMANDS = [conflicts]
