"""What every command that reads customer data or acts does first: act as the operator
logged in through the session file (`cloud_receiver.access.sessions`).

``with acting(db_url, session_file, Action.X, resource) as actor:`` reads the session
file, opens the database, checks the session there and the role (`authorize`; a refusal
is audited before it is reported), and gives the command an `Actor`: the storage, the
principal, and the session key that signs its audit entries and requests. Commands that
queue a request wait for the service to carry it out (`wait_done`, ``--wait``) and print
it as the command always printed its result (`show_request`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clitools.options import Decorator
from clitools.timefmt import iso
from cloud_receiver.access.acting import Acting
from cloud_receiver.access.policy import ANY, Action, Denied, Principal, Resource
from cloud_receiver.cli.common import duration, open_db
from cloud_receiver.errors import EXIT_DENIED, EXIT_FAILURE, ReceiverError

if TYPE_CHECKING:
    from cloud_receiver.access.requests import Request
    from cloud_receiver.storage import Storage

POLL_S = 0.2


def session_option() -> Decorator[Any]:
    """``--session FILE``: the login session to act through."""
    return click.option(
        "--session",
        "session_file",
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Session file from `cloud-receiver login` (default: $MF_SESSION, else"
        " $XDG_CONFIG_HOME/meterflow/session.json).",
    )


def _wait(ctx: click.Context, param: click.Parameter, value: str) -> float:
    return 0.0 if value.strip() in ("0", "0s") else duration(ctx, param, value)


def wait_option() -> Decorator[Any]:
    """``--wait D``: how long to wait for the service to carry a request out."""
    return click.option(
        "--wait",
        "wait_s",
        default="30s",
        show_default=True,
        callback=_wait,
        help="How long to wait for the running service to carry the request out (0: queue"
        " it and return).",
    )


def session_path(session_file: Path | None) -> Path:
    from cloud_receiver.access.sessions import default_path

    return session_file if session_file is not None else default_path()


@dataclass
class Actor(Acting):
    """An operator acting through a checked session (`Acting`: the role check and the
    audit, as the portal's)."""

    storage: Storage
    principal: Principal
    key: Ed25519PrivateKey
    expires_at: float

    @property
    def signing_key(self) -> Ed25519PrivateKey:
        return self.key

    def refusal(self, reason: str) -> Exception:
        return Denied(reason)  # exit 4

    def read(
        self,
        what: str,
        target: str,
        *,
        customers: int,
        export: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Audit a read of customer data (``export``: the format it leaves in: csv, json,
        png) before it is shown, and raise the abnormal-access alert at its threshold."""
        doc = {"what": what, "customers": customers, **(detail or {})}
        if export:
            doc["format"] = export
        self.audit_read("export" if export else "read", target, doc, alert=True)

    def submit(self, kind: str, params: dict[str, Any], attachment: bytes | None = None) -> Request:
        from cloud_receiver.applications import requests

        return requests.submit(
            self.storage,
            self.principal,
            self.key,
            kind,
            params,
            now=time.time(),
            attachment=attachment,
        )


@contextlib.contextmanager
def acting(
    db_url: str,
    session_file: Path | None,
    action: Action | None = None,
    resource: Resource = ANY,
) -> Iterator[Actor]:
    """The checked session's `Actor` (see the module); the storage closed afterwards."""
    from cloud_receiver.access import sessions

    file = sessions.SessionFile.read(session_path(session_file))
    storage = open_db(db_url)
    try:
        with storage.transaction() as tx:
            principal = sessions.open_session(tx, file, time.time(), sessions.origin())
        actor = Actor(storage, principal, file.key, file.expires_at)
        if action is not None:
            actor.require(action, resource)
        yield actor
    finally:
        storage.close()


# ------------------------------------------------------------------ requests
class RequestFailed(ReceiverError):
    """The service could not carry a request out, or refused it."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def wait_done(storage: Storage, request_id: int, wait_s: float) -> Request:
    """The request once it left ``ready``/``executing``, or as it is after ``wait_s``."""
    from cloud_receiver.access import requests as queue

    deadline = time.monotonic() + wait_s
    while True:
        with storage.transaction() as tx:
            req = queue.get(tx, request_id)
        if req.status not in ("ready", "executing") or time.monotonic() >= deadline:
            return req
        time.sleep(POLL_S)


def finished(req: Request) -> dict[str, Any]:
    """The result of a done request; `RequestFailed` for one that failed or was refused."""
    result = req.result or {}
    if req.status == "done":
        return result
    if req.status == "failed":
        raise RequestFailed(
            str(result.get("error", "failed")), int(result.get("exit_code", EXIT_FAILURE))
        )
    if req.status == "refused":
        raise RequestFailed(f"refused by the service: {result.get('error')}", EXIT_DENIED)
    raise RequestFailed(f"request {req.id} is {req.status}", EXIT_FAILURE)


def pending_text(req: Request) -> str | None:
    """What to say about a request not carried out yet (None: it is finished)."""

    from cloud_receiver.applications.requests import describe

    until = iso(req.expires_at)
    if req.status == "awaiting_approval":
        return (
            f"request {req.id} waits for a second operator's approval (`cloud-receiver approve"
            f" {req.id}`): {describe(req)}; it expires at {until}"
        )
    if req.status in ("ready", "executing"):
        return (
            f"request {req.id}: the receiver service has not carried it out yet (is"
            f" `cloud-receiver run` running, with command.key?): {describe(req)}; it expires"
            f" at {until}"
        )
    return None


def show_request(req: Request, as_json: bool) -> None:
    """Print a request as its command would: its result once carried out (a failure is
    raised with its exit code), else that it waits and for what."""
    import json

    waiting = pending_text(req)
    p = req.params
    if waiting is not None:
        if as_json:
            doc: dict[str, Any] = {"request": req.id, "status": req.status}
            if "id" in p:
                doc["id"] = p["id"]  # the command's or event's id, known in advance
            click.echo(json.dumps(doc))
        else:
            click.echo(waiting)
        return
    result = finished(req)
    if as_json:
        click.echo(json.dumps({**result, "request": req.id}))
    elif req.kind == "command":
        click.echo(
            f"command {result['id']} ({p['action'].replace('_', '-')}, counter"
            f" {result['counter']}) queued for {p['concentrator']}; `cloud-receiver commands"
            f" --id {result['id']}` shows its outcome"
        )
    elif req.kind == "dr.event":
        click.echo(
            f"event {result['id']}: {len(result['curtailed'])} meter(s) curtailed"
            f" ({', '.join(result['curtailed']) or 'none'}); `cloud-receiver dr report"
            f" {result['id']}` after the window"
        )
    elif req.kind == "archive.import":
        click.echo(
            f"{result['imported']} meters in {result['areas']} areas imported;"
            f" the archive holds {result['archive']} meters"
            + (f"; {result['assigned']} meter(s) assigned" if result.get("assigned") else "")
        )
    elif req.kind == "archive.push":
        click.echo(
            f"archive version {result['version']} ({result['meters']} meters) queued for"
            f" {p['concentrator']} as command {result['id']}; `cloud-receiver commands"
            f" --id {result['id']}` shows its outcome"
        )
    elif req.kind == "rollout.start":
        stages = ", ".join(f"{n}:{t}" for n, t in p["stages"])
        click.echo(f"rollout {result['id']} of {result['version']} started: {stages}")
    else:
        click.echo(f"request {req.id}: {req.status} {json.dumps(result)}")
