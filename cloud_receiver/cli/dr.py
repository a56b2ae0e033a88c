"""``dr``: demand response — enrol meters, run an event, report its reduction."""

from __future__ import annotations

from pathlib import Path

import click

from clitools.options import db_option, json_option
from clitools.output import result
from clitools.table import Column, print_table
from clitools.timefmt import site_tz_text
from cloud_receiver.access.policy import Action, Resource
from cloud_receiver.cli.auth import acting, session_option, show_request, wait_done, wait_option
from cloud_receiver.cli.common import check_concentrator_id, time_arg


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
@session_option()
@json_option()
def dr_enrol(
    group: str,
    meters: tuple[str, ...],
    concentrator_id: str,
    db_url: str,
    session_file: Path | None,
    as_json: bool,
) -> None:
    """Opt METERS in to demand-response group GROUP (a meter is in one group)."""
    from cloud_receiver.applications import dr as dr_mod

    with acting(db_url, session_file, Action.DR_ENROL, Resource("group", group)) as actor:
        dr_mod.enrol(actor.storage, group, meters, concentrator_id)
        actor.record("change", str(Action.DR_ENROL), f"group:{group}",
                     detail={"meters": list(meters), "concentrator": concentrator_id})  # fmt: skip
    result(
        as_json,
        f"{len(meters)} meter(s) enrolled in {group}",
        {"group": group, "meters": list(meters), "concentrator": concentrator_id},
    )


@dr.command("event")
@click.option("--group", required=True, help="Enrolled group.")
@click.option("--from", "start", required=True, help="Start: unix seconds or ISO time.")
@click.option("--to", "end", required=True, help="End: unix seconds or ISO time.")
@click.option("--limit-kw", required=True, help="The group's load limit in kW.")
@click.option("--baseline-days", type=click.IntRange(1, 10), default=5, show_default=True)
@click.option(
    "--tz",
    "tz_text",
    default=site_tz_text,
    show_default="the site's zone: cloud-receiver --tz, MF_TZ, +08:00",
    help="Local time zone.",
)
@db_option()
@session_option()
@wait_option()
@json_option()
def dr_event(
    group: str,
    start: str,
    end: str,
    limit_kw: str,
    baseline_days: int,
    tz_text: str,
    db_url: str,
    session_file: Path | None,
    wait_s: float,
    as_json: bool,
) -> None:
    """Curtail the group's largest loads in a window, by signed relay commands held by
    the concentrators until due. The running receiver signs them (a group of many
    meters needs a second operator's approval first)."""
    from decimal import Decimal, InvalidOperation

    from cloud_receiver.applications import dr as dr_mod

    t0, t1 = time_arg(start), time_arg(end)
    assert t0 is not None and t1 is not None
    try:
        Decimal(limit_kw)
    except InvalidOperation:
        raise click.BadParameter(f"{limit_kw!r}: expected kW", param_hint="--limit-kw") from None
    params = {
        "id": dr_mod.new_event_id(), "group": group, "start": t0, "end": t1,
        "limit_kw": limit_kw, "tz": tz_text, "baseline_days": baseline_days,
    }  # fmt: skip
    with acting(db_url, session_file) as actor:
        req = actor.submit("dr.event", params)
        show_request(wait_done(actor.storage, req.id, wait_s), as_json)


@dr.command("report")
@click.argument("event_id")
@db_option()
@session_option()
@json_option()
def dr_report(event_id: str, db_url: str, session_file: Path | None, as_json: bool) -> None:
    """Baseline, actual use and reduction of an event, per meter and in total (audited)."""
    import json

    from cloud_receiver.applications import dr as dr_mod

    target = Resource("dr-event", event_id)
    with acting(db_url, session_file, Action.DATA_READ, target) as actor:
        doc = dr_mod.report(actor.storage, event_id).as_dict()
        actor.read("demand-response report", str(target), customers=len(doc["meters"]),
                   export="json" if as_json else None)  # fmt: skip
    if as_json:
        click.echo(json.dumps(doc))
        return
    columns = (Column("meter", "id"), Column("curtailed"), Column("baseline kWh", "number"),
               Column("actual kWh", "number"), Column("reduction kWh", "number"))  # fmt: skip
    rows = [
        (m["meter"], "yes" if m["curtailed"] else "no", m["baseline_kwh"], m["actual_kwh"],
         m["reduction_kwh"])
        for m in doc["meters"]
    ]  # fmt: skip
    print_table(columns, rows, title=f"event {event_id}: reduction {doc['reduction_kwh']} kWh"
                f" ({doc['reduction_kw']} kW on average)")  # fmt: skip


COMMANDS = [dr]
