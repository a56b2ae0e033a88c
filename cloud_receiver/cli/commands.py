"""``command`` and ``commands``: downlink commands (asked of the service, which signs
them) and their audit log."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from clitools.options import db_option, json_option, quantity_option
from clitools.table import Column, limit_option, more_note, print_table
from clitools.timefmt import iso, since_option, time_range, until_option
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
@since_option("Only commands issued from this time on (ISO 8601, or unix seconds).")
@until_option("Only commands issued before this time (ISO 8601, or unix seconds).")
@limit_option()
@json_option()
def commands_list(
    db_url: str,
    session_file: Path | None,
    concentrator_id: str | None,
    status: str | None,
    command_id: str | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Commands issued and what became of them (the receiver's audit log), oldest first;
    the first --limit of them, with a note on stderr when there are more."""
    import dataclasses
    import json

    first, end = time_range(since, until)
    with acting(db_url, session_file, Action.FLEET_READ) as actor:
        store = actor.storage
        rows = store.commands(concentrator_id, status, command_id, limit or None, first, end)
        total = (
            store.count_commands(concentrator_id, status, command_id, first, end)
            if len(rows) == limit
            else len(rows)
        )
        log = store.command_log(command_id) if command_id is not None else []
    if command_id is not None and not rows:
        raise NotFound(f"no command {command_id}")
    if as_json:
        docs = [_command_doc(dataclasses.asdict(r)) for r in rows]
        if command_id is not None:
            docs[0]["log"] = [{"at": at, "at_iso": iso(at), "status": st, "detail": d}
                              for at, st, d in log]  # fmt: skip
        click.echo(json.dumps(docs))
        more_note(total - len(rows))
        return
    columns = (
        Column("id", "id"), Column("concentrator", "id"), Column("counter", "number"),
        Column("action"), Column("meters"), Column("status"), Column("issued", "time"),
        Column("outcome"),
    )  # fmt: skip
    table_rows = [
        (r.id, r.concentrator, r.counter, r.action, ", ".join(r.meters), r.status,
         iso(r.issued_at),
         "" if r.result is None else str(r.result.get("reason") or r.result.get("result")))
        for r in rows
    ]  # fmt: skip
    print_table(columns, table_rows, title=f"{len(rows)} commands")
    more_note(total - len(rows))
    for at, st, detail in log:
        when = iso(at)
        click.echo(f"{when}  {st}  {json.dumps(detail)}")


_TIMES = ("not_before", "not_after", "issued_at", "updated_at")


def _command_doc(record: dict[str, Any]) -> dict[str, Any]:
    """A command for ``--json``: its unix times kept for scripts, each with an ISO twin
    (``issued_at_iso``) in the site's zone for people (docs/output.md); no blob."""
    doc = {k: v for k, v in record.items() if k != "blob"}
    return doc | {f"{k}_iso": iso(doc[k]) for k in _TIMES}


COMMANDS = [command, commands_list]
