"""``archive owners`` and ``archive push``: which concentrator each meter sits behind,
and the archive download to a concentrator (docs/analytics.md, "Meter ownership").

Added to the ``archive`` group of `.analytics`; the assignments themselves come with
``archive import`` (its ``concentrator`` column and ``--effective``)."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import click

from clitools.options import db_option, json_option
from cloud_receiver.access.policy import Action, Resource
from cloud_receiver.cli.analytics import archive
from cloud_receiver.cli.auth import acting, session_option, show_request, wait_done, wait_option
from cloud_receiver.cli.common import check_concentrator_id, duration, emit, time_arg


def _when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(" ", "seconds")


@archive.command("owners")
@db_option()
@session_option()
@click.option("--meter", default=None, help="Only this meter (its whole history).")
@click.option(
    "--unassigned", is_flag=True, help="Only archive meters no concentrator owns (not guarded)."
)
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout.")
@json_option()
def archive_owners(
    db_url: str,
    session_file: Path | None,
    meter: str | None,
    unassigned: bool,
    as_csv: bool,
    as_json: bool,
) -> None:
    """Each meter's owners over time: from when it sits behind which concentrator."""
    from cloud_receiver.storage import ownership

    how = (Action.FLEET_READ, Resource("all"))
    with acting(db_url, session_file, *how) as actor, actor.storage.read() as conn:
        names = ownership.unassigned(conn) if unassigned else []
        history = (
            {}
            if unassigned
            else ownership.histories(conn, [meter])
            if meter is not None
            else ownership.all_histories(conn)
        )
    if unassigned:
        if as_json:
            click.echo(json.dumps({"unassigned": names}))
        else:
            emit(["meter"], [[n] for n in names], f"{len(names)} unassigned meters", as_csv)
        return
    rows = [a for h in history.values() for a in h]
    if as_json:
        click.echo(json.dumps([a.__dict__ for a in rows]))
        return
    emit(
        ["meter", "from (UTC)", "concentrator", "assigned (UTC)", "by"],
        [
            [a.meter, _when(a.effective_from), a.concentrator, _when(a.assigned_at), a.assigned_by]
            for a in rows
        ],
        f"{len(history)} meters, {len(rows)} assignments",
        as_csv,
    )


@archive.command("push")
@click.option("--concentrator", "concentrator_id", required=True, callback=check_concentrator_id)
@click.option(
    "--at", "at_text", default=None, help="Send the meters it owns at this time (default: now)."
)
@click.option(
    "--valid-for",
    default="1d",
    show_default=True,
    callback=duration,
    help="How long the command may take effect (at most 7d).",
)
@db_option()
@session_option()
@wait_option()
@json_option()
def archive_push(
    concentrator_id: str,
    at_text: str | None,
    valid_for: float,
    db_url: str,
    session_file: Path | None,
    wait_s: float,
    as_json: bool,
) -> None:
    """Download the archive to a concentrator: a signed ``archive`` command with every
    meter it owns; it polls those and no others (unless commissioning).

    An archive change: it waits for a second operator's approval, then the running
    service signs and sends it."""
    from cloud_receiver.applications.fleet import commands as receiver_commands

    at = time_arg(at_text)
    params = {
        "id": receiver_commands.new_command_id(),
        "concentrator": concentrator_id,
        "at": int(time.time()) if at is None else at,
        "valid_for_s": valid_for,
    }
    with acting(db_url, session_file) as actor:
        req = actor.submit("archive.push", params)
        show_request(wait_done(actor.storage, req.id, wait_s), as_json)


COMMANDS: list[click.Command] = []  # its commands live in the ``archive`` group
