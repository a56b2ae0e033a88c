"""``dr``: demand response — enrol meters, run an event, report its reduction."""

from __future__ import annotations

from pathlib import Path

import click

from clitools.options import db_option, json_option, pki_dir_option
from cloud_receiver.applications.fleet import pki
from cloud_receiver.cli.common import check_concentrator_id, open_db, time_arg


@click.group()
def dr() -> None:
    """Demand response: enrol meters, run an event, report its reduction."""


@dr.command("enrol")
@click.argument("group")
@click.argument("meters", nargs=-1, required=True)
@click.option(
    "--concentrator",
    "concentrator_id",
    required=True,
    callback=check_concentrator_id,
    help="The concentrator these meters are wired to.",
)
@db_option()
def dr_enrol(group: str, meters: tuple[str, ...], concentrator_id: str, db_url: str) -> None:
    """Opt METERS in to demand-response group GROUP (a meter is in one group)."""
    from cloud_receiver.applications import dr as dr_mod

    storage = open_db(db_url)
    try:
        dr_mod.enrol(storage, group, meters, concentrator_id)
    finally:
        storage.close()
    click.echo(f"{len(meters)} meter(s) enrolled in {group}")


@dr.command("event")
@click.option("--group", required=True, help="Enrolled group.")
@click.option("--from", "start", required=True, help="Start: unix seconds or ISO time.")
@click.option("--to", "end", required=True, help="End: unix seconds or ISO time.")
@click.option("--limit-kw", required=True, help="The group's load limit in kW.")
@click.option("--baseline-days", type=click.IntRange(1, 10), default=5, show_default=True)
@click.option("--tz", "tz_text", default="+08:00", show_default=True, help="Local time zone.")
@db_option()
@pki_dir_option(help="PKI directory holding command.key.")
@json_option()
def dr_event(
    group: str,
    start: str,
    end: str,
    limit_kw: str,
    baseline_days: int,
    tz_text: str,
    db_url: str,
    pki_dir: Path,
    as_json: bool,
) -> None:
    """Curtail the group's largest loads in a window, by signed relay commands held by
    the concentrators until due."""
    import json
    from decimal import Decimal, InvalidOperation

    from cloud_receiver.applications import dr as dr_mod

    t0, t1 = time_arg(start), time_arg(end)
    assert t0 is not None and t1 is not None
    try:
        limit = Decimal(limit_kw)
    except InvalidOperation:
        raise click.BadParameter(f"{limit_kw!r}: expected kW", param_hint="--limit-kw") from None
    storage = open_db(db_url)
    try:
        event = dr_mod.create_event(
            storage, pki.command_key(pki_dir), group=group, start=t0, end=t1,
            limit_kw=limit, tz=tz_text, baseline_days=baseline_days,
        )  # fmt: skip
    finally:
        storage.close()
    if as_json:
        click.echo(json.dumps(event))
    else:
        click.echo(
            f"event {event['id']}: {len(event['curtailed'])} meter(s) curtailed"
            f" ({', '.join(event['curtailed']) or 'none'}); `cloud-receiver dr report"
            f" {event['id']}` after the window"
        )


@dr.command("report")
@click.argument("event_id")
@db_option()
@json_option()
def dr_report(event_id: str, db_url: str, as_json: bool) -> None:
    """Baseline, actual use and reduction of an event, per meter and in total."""
    import json

    from rich.console import Console
    from rich.table import Table

    from cloud_receiver.applications import dr as dr_mod

    storage = open_db(db_url)
    try:
        doc = dr_mod.report(storage, event_id).as_dict()
    finally:
        storage.close()
    if as_json:
        click.echo(json.dumps(doc))
        return
    table = Table(title=f"event {event_id}: reduction {doc['reduction_kwh']} kWh"
                  f" ({doc['reduction_kw']} kW on average)")  # fmt: skip
    for c in ("meter", "curtailed", "baseline kWh", "actual kWh", "reduction kWh"):
        table.add_column(c)
    for m in doc["meters"]:
        table.add_row(m["meter"], "yes" if m["curtailed"] else "no", str(m["baseline_kwh"]),
                      str(m["actual_kwh"]), str(m["reduction_kwh"]))  # fmt: skip
    Console().print(table)


COMMANDS = [dr]
