"""``operator``: operator accounts: add, list, disable/enable, roles, TOTP, passwords.

Every change is an administrator's and is audited with the operator it touches
(`_manage`); only the very first operator, an administrator added to a new database,
needs no session. A TOTP secret is printed once, when it is made, and never again.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from clitools.options import db_option, json_option
from clitools.output import result
from clitools.table import limit_option, more_note, window
from clitools.timefmt import iso
from cloud_receiver.access.policy import OPERATOR_ROLES, Action, Resource
from cloud_receiver.cli.auth import acting, session_option
from cloud_receiver.cli.common import open_db
from cloud_receiver.cli.passwords import password_file_option, read_password

_ROLE_NAMES = [str(r) for r in OPERATOR_ROLES]


def _show_secret(name: str, secret: str | None, as_json: bool, doc: dict[str, Any]) -> None:
    """A new TOTP secret and its provisioning URI, if one was made (with ``--json``, in the
    command's document): the one time they are printed."""
    import json

    from cloud_receiver.access import operators as ops

    uri = None if secret is None else ops.provisioning_uri(name, secret)
    if as_json:
        click.echo(json.dumps({**doc, "totp_secret": secret, "totp_uri": uri}))
        return
    if secret is not None:
        click.echo(f"TOTP secret for {name} (shown once; add it to an authenticator app): {secret}")
        click.echo(f"provisioning URI: {uri}")


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
@password_file_option()
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
        read_password(password_file, f"Password for {name}", "MF_NEW_PASSWORD", confirm=True)
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
            iso(o.locked_until),
            iso(o.created_at),
            o.created_by,
        ]
        for o in found
    ]
    cols = ("name", "role", "totp", "disabled", "failures", "locked until", "created", "by")
    emit(cols, rows, f"{len(rows)} operators", False)


def _set_disabled(
    name: str, disabled: bool, db_url: str, session_file: Path | None, as_json: bool
) -> None:
    """``operator disable`` and ``operator enable``: one change, its direction the flag."""
    from cloud_receiver.access import operators as ops

    what = "disable" if disabled else "enable"
    _manage(
        db_url,
        session_file,
        name,
        what,
        lambda tx: ops.set_disabled(tx, name, disabled, time.time()),
    )
    result(as_json, f"operator {name} {what}d", {"operator": name, "disabled": disabled})


@operator.command("disable")
@click.argument("name")
@db_option()
@session_option()
@json_option()
def operator_disable(name: str, db_url: str, session_file: Path | None, as_json: bool) -> None:
    """Disable an operator: their sessions end, their waiting requests are refused."""
    _set_disabled(name, True, db_url, session_file, as_json)


@operator.command("enable")
@click.argument("name")
@db_option()
@session_option()
@json_option()
def operator_enable(name: str, db_url: str, session_file: Path | None, as_json: bool) -> None:
    """Enable a disabled operator again (also ends a lockout)."""
    _set_disabled(name, False, db_url, session_file, as_json)


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
@password_file_option()
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
        read_password(password_file, f"New password for {name}", "MF_NEW_PASSWORD", confirm=True)
    )
    _manage(
        db_url,
        session_file,
        name,
        "reset-password",
        lambda tx: ops.set_password(tx, name, new, time.time()),
    )
    result(as_json, f"password of {name} set", {"operator": name, "password_set": True})
