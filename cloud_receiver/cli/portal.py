"""``customer`` and ``token``: who may use the portal and the API.

Customers log in to the portal and see only the meters linked to them (and those
meters' prepaid accounts); a billing clerk or an administrator adds and links them.
API tokens (``token create``) are an administrator's to give: per operator (acting as
that operator, in a role no wider than theirs) or per system (a billing system, a
payment provider); the token is printed once and only its hash is kept.
"""

from __future__ import annotations

import time
from pathlib import Path

import click

from clitools.options import db_option, json_option
from clitools.output import result
from clitools.table import print_table
from clitools.timefmt import iso
from cloud_receiver.access.policy import Action, Resource
from cloud_receiver.cli.auth import acting, session_option
from cloud_receiver.cli.common import duration
from cloud_receiver.cli.passwords import password_file_option, read_password

_TOKEN_ROLES = ["viewer", "billing-clerk", "operator", "administrator", "system"]


@click.group()
def customer() -> None:
    """Customers of the portal: their logins and the meters they may see."""


@customer.command("add")
@click.argument("name")
@click.option("--meter", "meters", multiple=True, help="A meter of theirs (repeatable).")
@click.option(
    "--account", "accounts", multiple=True, help="A prepaid account of theirs (its meter)."
)
@click.option("--language", type=click.Choice(["zh", "en"]), default="zh", show_default=True)
@db_option()
@session_option()
@password_file_option()
@json_option()
def customer_add(
    name: str,
    meters: tuple[str, ...],
    accounts: tuple[str, ...],
    language: str,
    db_url: str,
    session_file: Path | None,
    password_file: Path | None,
    as_json: bool,
) -> None:
    """Add customer NAME with a portal password, linked to their meters/accounts."""
    from cloud_receiver.access import customers
    from cloud_receiver.access import operators as ops

    password = ops.check_password(
        read_password(password_file, f"Password for {name}", "MF_NEW_PASSWORD", confirm=True)
    )
    target = Resource("customer", name)
    with acting(db_url, session_file, Action.CUSTOMER_MANAGE, target) as actor:
        with actor.storage.transaction() as tx:
            found = customers.add(
                tx,
                name,
                password,
                meters=list(meters),
                account_ids=list(accounts),
                language=language,
                by=actor.principal.label,
                now=time.time(),
            )
        actor.record(
            "operator",
            "customer.add",
            str(target),
            detail={"meters": list(found.meters), "language": language},
        )
    result(
        as_json,
        f"customer {name} added: meters {', '.join(found.meters) or 'none'}",
        found.as_dict(),
    )


@customer.command("link")
@click.argument("name")
@click.option("--meter", "meters", multiple=True, required=True, help="Repeatable.")
@click.option("--unlink", is_flag=True, help="Take these meters away from the customer.")
@db_option()
@session_option()
@json_option()
def customer_link(
    name: str,
    meters: tuple[str, ...],
    unlink: bool,
    db_url: str,
    session_file: Path | None,
    as_json: bool,
) -> None:
    """Link meters to customer NAME (or --unlink them)."""
    from cloud_receiver.access import customers

    target = Resource("customer", name)
    with acting(db_url, session_file, Action.CUSTOMER_MANAGE, target) as actor:
        with actor.storage.transaction() as tx:
            customers.get(tx, name)
            if unlink:
                customers.unlink(tx, name, list(meters))
            else:
                customers.link(tx, name, list(meters), by=actor.principal.label, now=time.time())
            found = customers.get(tx, name)
        actor.record(
            "operator",
            "customer.unlink" if unlink else "customer.link",
            str(target),
            detail={"meters": list(meters)},
        )
    result(as_json, f"customer {name}: meters {', '.join(found.meters) or 'none'}", found.as_dict())


@customer.command("disable")
@click.argument("name")
@click.option("--enable", is_flag=True, help="Enable again (also ends a lockout).")
@db_option()
@session_option()
@json_option()
def customer_disable(
    name: str, enable: bool, db_url: str, session_file: Path | None, as_json: bool
) -> None:
    """Disable customer NAME's portal login (or --enable it)."""
    from cloud_receiver.access import customers

    target = Resource("customer", name)
    with acting(db_url, session_file, Action.CUSTOMER_MANAGE, target) as actor:
        with actor.storage.transaction() as tx:
            customers.set_disabled(tx, name, not enable, time.time())
            found = customers.get(tx, name)
        actor.record("operator", "customer.enable" if enable else "customer.disable", str(target))
    result(as_json, f"customer {name} {'enabled' if enable else 'disabled'}", found.as_dict())


@customer.command("password")
@click.argument("name")
@db_option()
@session_option()
@password_file_option()
@json_option()
def customer_password(
    name: str, db_url: str, session_file: Path | None, password_file: Path | None, as_json: bool
) -> None:
    """Give customer NAME a new portal password (it also ends a lockout)."""
    from cloud_receiver.access import customers
    from cloud_receiver.access import operators as ops

    password = ops.check_password(
        read_password(password_file, f"New password for {name}", "MF_NEW_PASSWORD", confirm=True)
    )
    target = Resource("customer", name)
    with acting(db_url, session_file, Action.CUSTOMER_MANAGE, target) as actor:
        with actor.storage.transaction() as tx:
            customers.set_password(tx, name, password, time.time())
        actor.record("operator", "customer.password", str(target))
    result(as_json, f"customer {name}: password changed", {"customer": name, "password": "changed"})


@customer.command("list")
@db_option()
@session_option()
@json_option()
def customer_list(db_url: str, session_file: Path | None, as_json: bool) -> None:
    """Every customer with their meters and accounts."""
    import json

    from cloud_receiver.access import customers

    with acting(db_url, session_file, Action.PREPAY_READ) as actor:
        with actor.storage.transaction() as tx:
            found = customers.all_customers(tx)
        actor.read("customers", "customers", customers=len(found))
    if as_json:
        click.echo(json.dumps([c.as_dict() for c in found]))
        return
    rows = [
        (
            c.name,
            c.language,
            "yes" if c.disabled else "",
            ", ".join(c.meters),
            ", ".join(c.accounts),
        )
        for c in found
    ]
    print_table(
        ["name", "language", "disabled", "meters", "accounts"],
        rows,
        title=f"{len(found)} customers",
    )


@click.group()
def token() -> None:
    """API tokens: per operator or per system, scoped by role, revocable."""


@token.command("create")
@click.option("--operator", "operator", default=None, help="Act as this operator.")
@click.option("--system", "system", default=None, help="Act as this system (e.g. billing).")
@click.option(
    "--role",
    type=click.Choice(_TOKEN_ROLES),
    default=None,
    help="The token's scope: an operator's role or a narrower one (default: theirs); a"
    " system's: viewer, billing-clerk or system.",
)
@click.option(
    "--expires-in",
    "lifetime",
    default="90d",
    show_default=True,
    callback=duration,
    help="How long the token is good for (at most 366d).",
)
@click.option("--note", default="", help="What it is for (shown by token list).")
@db_option()
@session_option()
@json_option()
def token_create(
    operator: str | None,
    system: str | None,
    role: str | None,
    lifetime: float,
    note: str,
    db_url: str,
    session_file: Path | None,
    as_json: bool,
) -> None:
    """Create an API token for --operator NAME or --system NAME; printed once."""
    from cloud_receiver.access import tokens
    from cloud_receiver.access.policy import Role

    if (operator is None) == (system is None):
        raise click.UsageError("give one of --operator NAME or --system NAME")
    kind, subject = ("operator", operator) if operator is not None else ("system", system)
    assert subject is not None
    if kind == "system" and role is None:
        raise click.UsageError("a system token needs --role (viewer, billing-clerk or system)")
    with acting(db_url, session_file, Action.OPERATOR_MANAGE, Resource("token")) as actor:
        with actor.storage.transaction() as tx:
            found, text = tokens.create(
                tx,
                kind,
                subject,
                None if role is None else Role(role),
                lifetime=lifetime,
                note=note,
                by=actor.principal.label,
                now=time.time(),
            )
        actor.record(
            "operator",
            "token.create",
            f"token:{found.id}",
            detail={
                "kind": kind,
                "subject": subject,
                "role": str(found.role),
                "expires_at": found.expires_at,
            },
        )
    result(
        as_json,
        f"token {found.id} for {kind} {subject} ({found.role}), until {iso(found.expires_at)};"
        f" shown once, keep it secret:\n{text}",
        {**found.as_dict(), "token": text},
    )


@token.command("list")
@db_option()
@session_option()
@json_option()
def token_list(db_url: str, session_file: Path | None, as_json: bool) -> None:
    """Every API token (never their secrets), with when each was last used."""
    import json

    from cloud_receiver.access import tokens

    with (
        acting(db_url, session_file, Action.OPERATOR_READ) as actor,
        actor.storage.transaction() as tx,
    ):
        found = tokens.listing(tx)
    if as_json:
        click.echo(json.dumps([t.as_dict() for t in found]))
        return
    rows = [
        (
            t.id,
            t.kind,
            t.subject,
            str(t.role),
            iso(t.expires_at),
            iso(t.revoked_at),
            iso(t.last_used_at),
            t.note,
        )
        for t in found
    ]
    print_table(
        ["id", "kind", "subject", "role", "expires", "revoked", "last used", "note"],
        rows,
        title=f"{len(found)} tokens",
    )


@token.command("revoke")
@click.argument("token_id")
@db_option()
@session_option()
@json_option()
def token_revoke(token_id: str, db_url: str, session_file: Path | None, as_json: bool) -> None:
    """Revoke token TOKEN_ID: every later call with it is refused."""
    from cloud_receiver.access import tokens

    with acting(db_url, session_file, Action.OPERATOR_MANAGE, Resource("token", token_id)) as actor:
        with actor.storage.transaction() as tx:
            found = tokens.revoke(tx, token_id, time.time())
        actor.record("operator", "token.revoke", f"token:{token_id}")
    result(as_json, f"token {token_id} revoked", found.as_dict())


COMMANDS = [customer, token]
