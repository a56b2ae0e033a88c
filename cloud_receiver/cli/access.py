"""``login``, ``logout``, ``whoami``, ``passwd``, ``operator``, ``requests``,
``approve``, ``cancel`` and ``settings``: operators, their sessions, the requests
waiting for a second operator, and the access settings.

Passwords are never taken from the command line: ``--password-file FILE`` (its first
line), else ``$MF_PASSWORD`` (``$MF_NEW_PASSWORD`` for a new one), else a prompt.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from clitools.options import Decorator, db_option, json_option
from clitools.output import result
from clitools.table import limit_option, more_note, window
from clitools.timefmt import iso, since_option, time_range, until_option
from cloud_receiver.access.policy import OPERATOR_ROLES, Action, Resource
from cloud_receiver.cli.auth import (
    acting,
    session_option,
    session_path,
    show_request,
    wait_done,
    wait_option,
)
from cloud_receiver.cli.common import duration, open_db
from cloud_receiver.errors import ReceiverError

_ROLE_NAMES = [str(r) for r in OPERATOR_ROLES]


def _password_file_option(
    flag: str = "--password-file", dest: str = "password_file"
) -> Decorator[Any]:
    return click.option(
        flag,
        dest,
        type=click.Path(path_type=Path, dir_okay=False),
        default=None,
        help="Read the password from the first line of FILE (for automation).",
    )


def _password(file: Path | None, prompt: str, env: str, *, confirm: bool = False) -> str:
    """From ``file``, else ``$env``, else a hidden prompt (typed twice when ``confirm``)."""
    if file is not None:
        try:
            lines = file.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ReceiverError(f"password file {file}: {exc.strerror or exc}") from exc
        if not lines or not lines[0]:
            raise ReceiverError(f"password file {file}: the first line is empty")
        return lines[0]
    if os.environ.get(env):
        return os.environ[env]
    text: str = click.prompt(prompt, hide_input=True, confirmation_prompt=confirm)
    return text


def _when(t: float | None) -> str:
    return iso(t)


def _show_secret(name: str, secret: str | None, as_json: bool, doc: dict[str, Any]) -> None:
    import json

    from cloud_receiver.access import operators as ops

    uri = None if secret is None else ops.provisioning_uri(name, secret)
    if as_json:
        click.echo(json.dumps({**doc, "totp_secret": secret, "totp_uri": uri}))
        return
    if secret is not None:
        click.echo(f"TOTP secret for {name} (shown once; add it to an authenticator app): {secret}")
        click.echo(f"provisioning URI: {uri}")


# ------------------------------------------------------------------ sessions
@click.command()
@click.argument("name")
@db_option()
@session_option()
@_password_file_option()
@click.option(
    "--totp",
    "code",
    default=None,
    help="The authenticator's current code (default: $MF_TOTP, else a prompt when needed).",
)
@click.option(
    "--for",
    "lifetime",
    default=None,
    callback=lambda ctx, param, value: None if value is None else duration(ctx, param, value),
    help="Session lifetime, e.g. 2h (at most the session-lifetime setting, its default).",
)
@json_option()
def login(
    name: str,
    db_url: str,
    session_file: Path | None,
    password_file: Path | None,
    code: str | None,
    lifetime: float | None,
    as_json: bool,
) -> None:
    """Log in as operator NAME: password and (for operators and administrators) a TOTP
    code; writes a short-lived session (its private key in a 0600 file)."""
    import json

    from cloud_receiver.access import sessions

    password = _password(password_file, f"Password for {name}", "MF_PASSWORD")
    path = session_path(session_file)
    storage = open_db(db_url)
    try:
        code = code or os.environ.get("MF_TOTP") or None
        if code is None and sessions.needs_totp(storage, name):
            code = click.prompt("TOTP code", hide_input=False)
        done = sessions.login(
            storage,
            name,
            password,
            code,
            where=sessions.origin(),
            now=time.time(),
            lifetime=lifetime,
        )
    finally:
        storage.close()
    done.file.write(path)
    p = done.principal
    if as_json:
        click.echo(
            json.dumps(
                {
                    "operator": p.name,
                    "role": str(p.role),
                    "session": p.session,
                    "expires_at": done.file.expires_at,
                    "file": str(path),
                }
            )
        )
        return
    click.echo(
        f"logged in as {p.name} ({p.role}) until {_when(done.file.expires_at)}; session in {path}"
    )
    if done.new_origin:
        click.echo(
            f"note: first login of {p.name} from {p.origin} (an alert was recorded)", err=True
        )


@click.command()
@db_option()
@session_option()
@json_option()
def logout(db_url: str, session_file: Path | None, as_json: bool) -> None:
    """End the session (the database forgets its key) and delete the session file."""
    from cloud_receiver.access import sessions

    path = session_path(session_file)
    with acting(db_url, session_file) as actor:
        sessions.logout(actor.storage, actor.principal, actor.key, time.time())
    path.unlink(missing_ok=True)
    result(as_json, f"logged out {actor.principal.name}", {"logged_out": actor.principal.name})


@click.command()
@db_option()
@session_option()
@json_option()
def whoami(db_url: str, session_file: Path | None, as_json: bool) -> None:
    """The operator the session acts for, its role and when the session ends."""
    import json

    with acting(db_url, session_file) as actor:
        p = actor.principal
    if as_json:
        click.echo(
            json.dumps(
                {
                    "operator": p.name,
                    "role": str(p.role),
                    "session": p.session,
                    "origin": p.origin,
                    "expires_at": actor.expires_at,
                }
            )
        )
    else:
        click.echo(f"{p.name} ({p.role}) from {p.origin}; session ends {_when(actor.expires_at)}")


@click.command()
@db_option()
@session_option()
@_password_file_option()
@_password_file_option("--new-password-file", "new_password_file")
@json_option()
def passwd(
    db_url: str,
    session_file: Path | None,
    password_file: Path | None,
    new_password_file: Path | None,
    as_json: bool,
) -> None:
    """Change your own password (the current one first)."""
    from cloud_receiver.access import audit
    from cloud_receiver.access import operators as ops
    from cloud_receiver.access.sessions import LoginRefused

    current = _password(password_file, "Current password", "MF_PASSWORD")
    new = _password(new_password_file, "New password", "MF_NEW_PASSWORD", confirm=True)
    ops.check_password(new)
    with acting(db_url, session_file) as actor:
        with actor.storage.transaction() as tx:
            found = ops.credentials(tx, actor.principal.name)
        if found is None or not ops.password_matches(found.password_hash, current):
            actor.record(
                "operator",
                "operator.passwd",
                actor.principal.label,
                outcome="refused",
                detail={"reason": "wrong current password"},
            )
            raise LoginRefused("the current password is wrong")
        with actor.storage.transaction() as tx:
            ops.set_password(tx, actor.principal.name, new, time.time())
            audit.record(
                tx,
                actor.principal,
                kind="operator",
                action="operator.passwd",
                target=actor.principal.label,
                at=time.time(),
                key=actor.key,
            )
    result(
        as_json,
        f"password of {actor.principal.name} changed",
        {"password_changed": actor.principal.name},
    )


# ------------------------------------------------------------------ operators
@click.group()
def operator() -> None:
    """Operator accounts: add, list, disable/enable, roles, TOTP, passwords."""


@operator.command("add")
@click.argument("name")
@click.option("--role", "role_text", type=click.Choice(_ROLE_NAMES), required=True)
@click.option(
    "--totp/--no-totp",
    "with_totp",
    default=False,
    help="A TOTP second factor also for a viewer or billing clerk (operators and"
    " administrators always have one).",
)
@db_option()
@session_option()
@_password_file_option()
@json_option()
def operator_add(
    name: str,
    role_text: str,
    with_totp: bool,
    db_url: str,
    session_file: Path | None,
    password_file: Path | None,
    as_json: bool,
) -> None:
    """Add an operator (an administrator's session; the very first operator, an
    administrator, needs none). Prints the TOTP secret once."""
    from cloud_receiver.access import audit
    from cloud_receiver.access import operators as ops
    from cloud_receiver.access.policy import AccessError, Principal, Role
    from cloud_receiver.access.sessions import origin

    role = ops.parse_role(role_text)
    ops.check_name(name)
    password = ops.check_password(
        _password(password_file, f"Password for {name}", "MF_NEW_PASSWORD", confirm=True)
    )
    storage = open_db(db_url, create=True)  # the first operator: a new database
    try:
        with storage.transaction() as tx:
            first = ops.bootstrap_allowed(tx)
    finally:
        storage.close()
    now = time.time()
    detail = {"role": str(role)}
    if first:
        if role is not Role.ADMINISTRATOR:
            raise AccessError(
                "no operator exists yet: the first one must be an administrator"
                " (--role administrator)"
            )
        storage = open_db(db_url)
        try:
            with storage.transaction() as tx:
                if not ops.bootstrap_allowed(tx):
                    raise AccessError("another operator was added meanwhile: log in as one")
                op, secret = ops.add(
                    tx,
                    name,
                    role,
                    password,
                    with_totp=with_totp,
                    by=f"bootstrap:{origin()}",
                    now=now,
                )
                audit.record(
                    tx,
                    Principal.system("bootstrap", origin()),
                    kind="operator",
                    action="operator.add",
                    target=f"operator:{name}",
                    at=now,
                    detail={**detail, "first": True, "totp": op.has_totp},
                )
        finally:
            storage.close()
    else:
        target = Resource("operator", name)
        with (
            acting(db_url, session_file, Action.OPERATOR_MANAGE, target) as a,
            a.storage.transaction() as tx,
        ):
            op, secret = ops.add(
                tx, name, role, password, with_totp=with_totp, by=a.principal.label, now=now
            )
            audit.record(
                tx,
                a.principal,
                kind="operator",
                action="operator.add",
                target=f"operator:{name}",
                at=now,
                detail={**detail, "totp": op.has_totp},
                key=a.key,
            )
    if not as_json:
        click.echo(
            f"operator {name} ({role}) added" + (" as the first administrator" if first else "")
        )
    _show_secret(name, secret, as_json, {"name": name, "role": str(role), "first": first})


def _manage(
    db_url: str,
    session_file: Path | None,
    name: str,
    what: str,
    change: Any,
    detail: dict[str, Any] | None = None,
) -> Any:
    """Run ``change(tx)`` as an administrator on operator ``name``, audited with it."""
    from cloud_receiver.access import audit

    target = Resource("operator", name)
    with (
        acting(db_url, session_file, Action.OPERATOR_MANAGE, target) as a,
        a.storage.transaction() as tx,
    ):
        result = change(tx)
        audit.record(
            tx,
            a.principal,
            kind="operator",
            action=f"operator.{what}",
            target=f"operator:{name}",
            at=time.time(),
            detail=detail,
            key=a.key,
        )
    return result


@operator.command("list")
@db_option()
@session_option()
@limit_option()
@json_option()
def operator_list(db_url: str, session_file: Path | None, limit: int, as_json: bool) -> None:
    """Every operator: role, second factor, disabled, failed logins, lockout (the first
    --limit by name)."""
    import json

    from cloud_receiver.access import operators as ops
    from cloud_receiver.cli.common import emit

    with acting(db_url, session_file, Action.OPERATOR_READ) as a, a.storage.transaction() as tx:
        every = ops.all_operators(tx)
    found, more = window(every, lambda o: 0.0, None, None, limit, newest=False)
    more_note(more, "use --limit (0: all)")
    if as_json:
        click.echo(json.dumps([o.as_dict() for o in found]))
        return
    rows = [
        [
            o.name,
            str(o.role),
            "yes" if o.has_totp else "no",
            "yes" if o.disabled else "no",
            str(o.failures),
            _when(o.locked_until),
            _when(o.created_at),
            o.created_by,
        ]
        for o in found
    ]
    cols = ("name", "role", "totp", "disabled", "failures", "locked until", "created", "by")
    emit(cols, rows, f"{len(rows)} operators", False)


@operator.command("disable")
@click.argument("name")
@db_option()
@session_option()
@json_option()
def operator_disable(name: str, db_url: str, session_file: Path | None, as_json: bool) -> None:
    """Disable an operator: their sessions end, their waiting requests are refused."""
    from cloud_receiver.access import operators as ops

    _manage(
        db_url,
        session_file,
        name,
        "disable",
        lambda tx: ops.set_disabled(tx, name, True, time.time()),
    )
    result(as_json, f"operator {name} disabled", {"operator": name, "disabled": True})


@operator.command("enable")
@click.argument("name")
@db_option()
@session_option()
@json_option()
def operator_enable(name: str, db_url: str, session_file: Path | None, as_json: bool) -> None:
    """Enable a disabled operator again (also ends a lockout)."""
    from cloud_receiver.access import operators as ops

    _manage(
        db_url,
        session_file,
        name,
        "enable",
        lambda tx: ops.set_disabled(tx, name, False, time.time()),
    )
    result(as_json, f"operator {name} enabled", {"operator": name, "disabled": False})


@operator.command("set-role")
@click.argument("name")
@click.argument("role_text", metavar="ROLE", type=click.Choice(_ROLE_NAMES))
@db_option()
@session_option()
@json_option()
def operator_set_role(
    name: str, role_text: str, db_url: str, session_file: Path | None, as_json: bool
) -> None:
    """Give an operator another role (a TOTP secret is made when the role needs one)."""
    from cloud_receiver.access import operators as ops

    role = ops.parse_role(role_text)
    secret = _manage(
        db_url,
        session_file,
        name,
        "set-role",
        lambda tx: ops.set_role(tx, name, role, time.time()),
        {"role": str(role)},
    )
    if not as_json:
        click.echo(f"operator {name} is now {role}")
    _show_secret(name, secret, as_json, {"name": name, "role": str(role)})


@operator.command("reset-totp")
@click.argument("name")
@db_option()
@session_option()
@json_option()
def operator_reset_totp(name: str, db_url: str, session_file: Path | None, as_json: bool) -> None:
    """A new TOTP secret for an operator (a lost phone); printed once."""
    from cloud_receiver.access import operators as ops

    secret = _manage(
        db_url, session_file, name, "reset-totp", lambda tx: ops.reset_totp(tx, name, time.time())
    )
    if not as_json:
        click.echo(f"operator {name}: new TOTP secret")
    _show_secret(name, secret, as_json, {"name": name})


@operator.command("reset-password")
@click.argument("name")
@db_option()
@session_option()
@_password_file_option()
@json_option()
def operator_reset_password(
    name: str,
    db_url: str,
    session_file: Path | None,
    password_file: Path | None,
    as_json: bool,
) -> None:
    """Set a forgotten password (also ends a lockout)."""
    from cloud_receiver.access import operators as ops

    new = ops.check_password(
        _password(password_file, f"New password for {name}", "MF_NEW_PASSWORD", confirm=True)
    )
    _manage(
        db_url,
        session_file,
        name,
        "reset-password",
        lambda tx: ops.set_password(tx, name, new, time.time()),
    )
    result(as_json, f"password of {name} set", {"operator": name, "password_set": True})


# ------------------------------------------------------------------ requests
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
            _when(r.created_at),
            _when(r.expires_at),
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


# ------------------------------------------------------------------ settings
@click.group()
def settings() -> None:
    """Access settings: lifetimes, the approval threshold, alerts and the lockout."""


@settings.command("show")
@db_option()
@session_option()
@json_option()
def settings_show(db_url: str, session_file: Path | None, as_json: bool) -> None:
    """The settings in force and what each means."""
    import json

    from cloud_receiver.access import settings as conf
    from cloud_receiver.cli.common import emit

    with acting(db_url, session_file) as a, a.storage.transaction() as tx:
        rows = conf.describe(conf.load(tx))
    if as_json:
        click.echo(json.dumps({name: value for name, value, _ in rows}))
    else:
        emit(("setting", "value", "meaning"), [list(r) for r in rows], "access settings", False)


@settings.command("set")
@click.argument("name")
@click.argument("value")
@db_option()
@session_option()
@json_option()
def settings_set(
    name: str, value: str, db_url: str, session_file: Path | None, as_json: bool
) -> None:
    """Change a setting (administrators); `settings show` lists them."""
    from cloud_receiver.access import audit
    from cloud_receiver.access import settings as conf

    conf.parse(name, value)  # a bad name or value is named before anything else
    target = Resource("setting", name)
    with (
        acting(db_url, session_file, Action.SETTINGS_CHANGE, target) as a,
        a.storage.transaction() as tx,
    ):
        before = dict((n, v) for n, v, _ in conf.describe(conf.load(tx)))[name]
        conf.store(tx, name, value, a.principal.label)
        audit.record(
            tx,
            a.principal,
            kind="settings",
            action=str(Action.SETTINGS_CHANGE),
            target=f"setting:{name}",
            at=time.time(),
            detail={"from": before, "to": value},
            key=a.key,
        )
    result(as_json, f"{name} = {value}", {"name": name, "value": value})


COMMANDS = [login, logout, whoami, passwd, operator, requests_list, approve, cancel, settings]
