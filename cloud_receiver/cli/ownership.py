"""``archive owners`` and ``archive push``: which concentrator each meter sits behind,
and the archive download to a concentrator (docs/analytics.md, "Meter ownership").

Added to the ``archive`` group of `.analytics`; the assignments themselves come with
``archive import`` (its ``concentrator`` column and ``--effective``)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from clitools.options import db_option, json_option
from clitools.table import limit_option, more_note, window
from clitools.timefmt import iso, since_option, time_range, until_option
from cloud_receiver.access.policy import Action, Resource
from cloud_receiver.cli.analytics import archive
from cloud_receiver.cli.auth import acting, session_option, show_request, wait_done, wait_option
from cloud_receiver.cli.common import check_concentrator_id, duration, emit, time_arg


@archive.command("owners")
@db_option()
@session_option()
@click.option("--meter", default=None, help="Only this meter (its whole history).")
@click.option(
    "--unassigned", is_flag=True, help="Only archive meters no concentrator owns (not guarded)."
)
@since_option("Only assignments effective from this time on (ISO 8601, or unix seconds).")
@until_option("Only assignments effective before this time (ISO 8601, or unix seconds).")
@limit_option()
@click.option("--csv", "as_csv", is_flag=True, help="CSV on stdout.")
@json_option()
def archive_owners(
    db_url: str,
    session_file: Path | None,
    meter: str | None,
    unassigned: bool,
    since: str | None,
    until: str | None,
    limit: int,
    as_csv: bool,
    as_json: bool,
) -> None:
    """Each meter's owners over time: from when it sits behind which concentrator; the
    first --limit assignments (by meter, then time) effective in the --since/--until
    range, or the first --limit unassigned meters."""
    from cloud_receiver.storage import ownership

    first, end = time_range(since, until)
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
        shown, more = window(names, lambda n: 0.0, None, None, limit, newest=False)
        more_note(more, "use --limit (0: all)")
        if as_json:
            click.echo(json.dumps({"unassigned": shown, "more": more}))
        else:
            emit(["meter"], [[n] for n in shown], f"{len(names)} unassigned meters", as_csv)
        return
    every = [a for h in history.values() for a in h]
    rows, more = window(every, lambda a: a.effective_from, first, end, limit, newest=False)
    more_note(more)
    if as_json:
        click.echo(json.dumps([a.__dict__ | {"effective_from_iso": iso(a.effective_from),
                                             "assigned_at_iso": iso(a.assigned_at)}
                               for a in rows]))  # fmt: skip
        return
    emit(
        ["meter", "from", "concentrator", "assigned", "by"],
        [
            [a.meter, iso(a.effective_from), a.concentrator, iso(a.assigned_at), a.assigned_by]
            for a in rows
        ],
        f"{len({a.meter for a in rows})} meters, {len(rows)} assignments",
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
