"""``login``, ``logout``, ``whoami`` and ``passwd``: an operator's own session.

A login checks the password and (for operators and administrators) a TOTP code, then
writes a short-lived session file that every other command acts through (`.auth`).
Passwords come from a file, the environment or a prompt, never the command line
(`.passwords`).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import click

from clitools.options import db_option, json_option
from clitools.output import result
from clitools.timefmt import iso
from cloud_receiver.access.policy import Principal
from cloud_receiver.cli.auth import acting, session_option, session_path
from cloud_receiver.cli.common import duration, open_db
from cloud_receiver.cli.passwords import password_file_option, read_password


def _session_doc(p: Principal, **more: Any) -> dict[str, Any]:
    """``login --json`` and ``whoami --json``: who the session acts for, then ``more``."""
    return {"operator": p.name, "role": str(p.role), "session": p.session, **more}


@click.command()
@click.argument("name")
@db_option()
@session_option()
@password_file_option()
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

    password = read_password(password_file, f"Password for {name}", "MF_PASSWORD")
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
        click.echo(json.dumps(_session_doc(p, expires_at=done.file.expires_at, file=str(path))))
        return
    click.echo(
        f"logged in as {p.name} ({p.role}) until {iso(done.file.expires_at)}; session in {path}"
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
        click.echo(json.dumps(_session_doc(p, origin=p.origin, expires_at=actor.expires_at)))
    else:
        click.echo(f"{p.name} ({p.role}) from {p.origin}; session ends {iso(actor.expires_at)}")


@click.command()
@db_option()
@session_option()
@password_file_option()
@password_file_option("--new-password-file", "new_password_file")
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

    current = read_password(password_file, "Current password", "MF_PASSWORD")
    new = read_password(new_password_file, "New password", "MF_NEW_PASSWORD", confirm=True)
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
