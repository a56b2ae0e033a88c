"""``command`` and ``commands``: downlink commands (asked of the service, which signs
them) and their audit log."""

from __future__ import annotations

from pathlib import Path

import click

from clitools.options import db_option, json_option, quantity_option
from cloud_receiver.access.policy import Action
from cloud_receiver.cli.auth import acting, session_option, show_request, wait_done, wait_option
from cloud_receiver.cli.common import check_concentrator_id, duration, time_arg
from cloud_receiver.errors import NotFound

_ACTIONS = {
    "relay-open": "relay_open",
    "relay-close": "relay_close",
    "time-sync": "time_sync",
    "clock-check": "clock_check",
    "read": "read",
    "add-meter": "add_meter",
    "remove-meter": "remove_meter",
}


@click.command()
@click.argument("action", type=click.Choice(sorted(_ACTIONS)))
@click.option("--concentrator", "concentrator_id", required=True, callback=check_concentrator_id)
@click.option("--meter", "meters", multiple=True, help="Target meter (repeat for several).")
@quantity_option("read: a quantity to read (repeat for several).")
@click.option(
    "--threshold", type=click.FloatRange(min=0), default=None, help="clock-check: seconds."
)
@click.option("--bus", default=None, help="add-meter: the bus the meter is wired to.")
@click.option("--group", default=None, help="add-meter: the meter's task group.")
@click.option("--not-before", default=None, help="Valid from: unix seconds or ISO time.")
@click.option(
    "--valid-for",
    default="1h",
    show_default=True,
    callback=duration,
    help="How long the command may take effect after --not-before (at most 7d).",
)
@db_option()
@session_option()
@wait_option()
@json_option()
def command(
    action: str,
    concentrator_id: str,
    meters: tuple[str, ...],
    quantities: tuple[str, ...],
    threshold: float | None,
    bus: str | None,
    group: str | None,
    not_before: str | None,
    valid_for: float,
    db_url: str,
    session_file: Path | None,
    wait_s: float,
    as_json: bool,
) -> None:
    """Ask the running receiver to sign and send a command to a concentrator.

    The request is signed with your session; the service checks it (and a second
    operator's approval, for a relay-open of many meters) and signs the command with
    the utility's key, which never leaves it."""
    from cloud_receiver.applications.fleet import commands as receiver_commands

    params: dict[str, object] = {}
    if quantities:
        params["quantities"] = list(quantities)
    if threshold is not None:
        params["threshold_s"] = threshold
    if bus is not None:
        params["bus"] = bus
    if group is not None:
        params["group"] = group
    request = {
        "id": receiver_commands.new_command_id(), "concentrator": concentrator_id,
        "action": _ACTIONS[action], "meters": list(meters), "params": params,
        "not_before": time_arg(not_before), "valid_for_s": valid_for,
    }  # fmt: skip
    with acting(db_url, session_file) as actor:
        req = actor.submit("command", request)
        show_request(wait_done(actor.storage, req.id, wait_s), as_json)


@click.command("commands")
@db_option()
@session_option()
@click.option("--concentrator", "concentrator_id", default=None, help="Only this concentrator.")
@click.option(
    "--status",
    type=click.Choice(["issued", "published", "scheduled", "done", "failed", "refused", "expired"]),
    default=None,
)
@click.option("--id", "command_id", default=None, help="One command, with its audit log.")
@json_option()
def commands_list(
    db_url: str,
    session_file: Path | None,
    concentrator_id: str | None,
    status: str | None,
    command_id: str | None,
    as_json: bool,
) -> None:
    """Commands issued and what became of them (the receiver's audit log)."""
    import dataclasses
    import datetime as dt
    import json

    from rich.console import Console
    from rich.table import Table

    with acting(db_url, session_file, Action.FLEET_READ) as actor:
        rows = actor.storage.commands(concentrator_id, status, command_id, limit=1000)
        log = actor.storage.command_log(command_id) if command_id is not None else []
    if command_id is not None and not rows:
        raise NotFound(f"no command {command_id}")
    if as_json:
        docs = [{k: v for k, v in dataclasses.asdict(r).items() if k != "blob"} for r in rows]
        if command_id is not None:
            docs[0]["log"] = [{"at": at, "status": st, "detail": d} for at, st, d in log]
        click.echo(json.dumps(docs))
        return
    table = Table(title=f"{len(rows)} commands")
    for c in ("id", "concentrator", "counter", "action", "meters", "status", "issued", "outcome"):
        table.add_column(c)
    for r in rows:
        outcome = "" if r.result is None else str(r.result.get("reason") or r.result.get("result"))
        table.add_row(
            r.id,
            r.concentrator,
            str(r.counter),
            r.action,
            ", ".join(r.meters),
            r.status,
            dt.datetime.fromtimestamp(r.issued_at).isoformat(" ", "seconds"),
            outcome,
        )
    Console().print(table)
    for at, st, detail in log:
        when = dt.datetime.fromtimestamp(at).isoformat(" ", "seconds")
        click.echo(f"{when}  {st}  {json.dumps(detail)}")


COMMANDS = [command, commands_list]
