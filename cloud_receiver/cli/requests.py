"""``requests``, ``approve`` and ``cancel``: the requests to the service, and the second
operator a request waits for.

An approved request is carried out by the running service, except an archive change,
which needs none of the service's keys: ``approve`` carries that out itself.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from clitools.options import db_option, json_option
from clitools.output import result
from clitools.table import limit_option, more_note, window
from clitools.timefmt import iso, since_option, time_range, until_option
from cloud_receiver.access.policy import Action
from cloud_receiver.cli.auth import acting, session_option, show_request, wait_done, wait_option


@click.command("requests")
@db_option()
@session_option()
@click.option(
    "--status",
    type=click.Choice(
        [
            "awaiting_approval",
            "ready",
            "executing",
            "done",
            "failed",
            "refused",
            "expired",
            "cancelled",
        ]
    ),
    default=None,
)
@click.option("--id", "request_id", type=int, default=None, help="One request, in full.")
@since_option("Only requests asked from this time on (ISO 8601, or unix seconds).")
@until_option("Only requests asked before this time (ISO 8601, or unix seconds).")
@limit_option(default=200)
@json_option()
def requests_list(
    db_url: str,
    session_file: Path | None,
    status: str | None,
    request_id: int | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Requests to the service: waiting for approval, queued, and what became of them
    (the newest --limit asked in the --since/--until range)."""
    import json

    from cloud_receiver.access import requests as queue
    from cloud_receiver.applications.requests import describe
    from cloud_receiver.cli.common import emit

    first, end = time_range(since, until)
    with acting(db_url, session_file, Action.REQUEST_READ) as a, a.storage.transaction() as tx:
        if request_id is not None:
            rows, more = [queue.get(tx, request_id)], 0
        else:
            every = queue.listing(tx, status, limit=1_000_000)  # people's requests: few
            listed = sorted(every, key=lambda r: (r.created_at, r.id))
            rows, more = window(listed, lambda r: r.created_at, first, end, limit)
        approved = {r.id: [x.operator for x in queue.approvals_of(tx, r.id)] for r in rows}
    more_note(more)
    if as_json:
        docs = [
            {**r.as_dict(), "summary": describe(r), "approved_by": approved[r.id]} for r in rows
        ]
        click.echo(json.dumps(docs[0] if request_id is not None else docs))
        return
    table = [
        [
            str(r.id),
            r.kind,
            describe(r),
            r.requested_by,
            r.status,
            f"{len(approved[r.id])}/{r.approvals_needed}",
            iso(r.created_at),
            iso(r.expires_at),
        ]
        for r in rows
    ]
    cols = ("id", "kind", "what", "by", "status", "approvals", "asked", "expires")
    emit(cols, table, f"{len(rows)} requests", False)
    if request_id is not None:
        r = rows[0]
        click.echo(f"approved by: {', '.join(approved[r.id]) or '-'}")
        if r.result is not None:
            click.echo(f"result: {json.dumps(r.result)}")


@click.command()
@click.argument("request_id", type=int)
@db_option()
@session_option()
@wait_option()
@json_option()
def approve(
    request_id: int, db_url: str, session_file: Path | None, wait_s: float, as_json: bool
) -> None:
    """Approve another operator's request; once it has its approvals it is carried out
    (by the running service, or — an archive change — by this command)."""
    from cloud_receiver.access import requests as queue
    from cloud_receiver.access.policy import Principal
    from cloud_receiver.applications import requests as kinds

    with acting(db_url, session_file) as a:
        req = queue.approve(a.storage, a.principal, a.key, request_id, time.time())
        click.echo(f"approved request {req.id}: {kinds.describe(req)}", err=True)
        kind = kinds.KINDS.get(req.kind)
        if req.status == "ready" and kind is not None and not kind.needs:
            kinds.execute_ready(
                a.storage,
                kinds.Keys(),
                time.time(),
                only=req.id,
                by=Principal.system("cli", a.principal.origin),
            )
        show_request(wait_done(a.storage, req.id, wait_s), as_json)


@click.command()
@click.argument("request_id", type=int)
@db_option()
@session_option()
@json_option()
def cancel(request_id: int, db_url: str, session_file: Path | None, as_json: bool) -> None:
    """Withdraw a request not carried out yet (yours, or anyone's as an administrator)."""
    from cloud_receiver.access import requests as queue

    with acting(db_url, session_file) as a:
        queue.cancel(a.storage, a.principal, a.key, request_id, time.time())
    result(
        as_json, f"request {request_id} cancelled", {"request": request_id, "status": "cancelled"}
    )
