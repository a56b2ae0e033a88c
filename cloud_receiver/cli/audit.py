"""``audit list``, ``audit verify`` and ``audit alerts``: the tamper-evident log
(administrators only)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from clitools.options import db_option, json_option
from clitools.table import more_note
from clitools.timefmt import iso, since_option, time_range, until_option
from cloud_receiver.access.policy import Action
from cloud_receiver.cli.auth import acting, session_option
from cloud_receiver.cli.common import emit
from cloud_receiver.errors import EXIT_INTEGRITY, ReceiverError


class ChainBroken(ReceiverError):
    """The audit log does not verify: an entry was edited, deleted or replaced."""

    exit_code = EXIT_INTEGRITY


def _when(t: float) -> str:
    return iso(t)


def _anchor(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> tuple[int, str] | None:
    if value is None:
        return None
    seq, _, digest = value.partition(":")
    if not seq.isdigit() or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise click.BadParameter(f"{value!r}: expected ENTRY:SHA256, e.g. 1200:9f86d08…(64 hex)")
    return int(seq), digest


@click.group()
def audit() -> None:
    """The audit log: who logged in, asked, approved, read and exported what."""


@audit.command("list")
@db_option()
@session_option()
@since_option("From this time on (ISO 8601, or unix seconds).")
@until_option("Before this time (ISO 8601, or unix seconds).")
@click.option("--operator", "operator_name", default=None, help="Only this operator's entries.")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    help="Only these kinds (login, login_failed, request, approval, execution, read, export,"
    " denied, operator, settings, backup, restore, alert ...); repeat for several.",
)
@click.option("--target", default=None, help="Only entries about this, e.g. account:A1.")
@click.option("--limit", type=click.IntRange(1), default=200, show_default=True)
@json_option()
def audit_list(
    db_url: str,
    session_file: Path | None,
    since: str | None,
    until: str | None,
    operator_name: str | None,
    kinds: tuple[str, ...],
    target: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Entries of the audit log, oldest first (the newest --limit of those selected; a
    note on stderr when older ones were left out)."""
    from cloud_receiver.storage import audit as chain

    first, end = time_range(since, until)
    with acting(db_url, session_file, Action.AUDIT_READ) as a, a.storage.transaction() as tx:
        found = chain.entries(
            tx,
            since=first,
            until=end,
            principal=None if operator_name is None else f"operator:{operator_name}",
            kinds=kinds,
            target=target,
            limit=limit + 1,  # one more: were older ones left out?
            newest_first=True,
        )
    older, found = len(found) > limit, found[:limit]
    found.reverse()
    if as_json:
        click.echo(json.dumps([e.as_dict() for e in found], ensure_ascii=False))
    if older:
        more_note(None, "older ones: use --limit/--since")
    if as_json:
        return
    rows = [
        [
            str(e.seq),
            _when(e.at),
            e.principal,
            e.origin,
            e.kind,
            e.action,
            e.target,
            e.outcome,
            e.detail,
        ]
        for e in found
    ]
    cols = ("seq", "at", "principal", "origin", "kind", "action", "target", "outcome", "detail")
    emit(cols, rows, f"{len(rows)} audit entries", False)


@audit.command("verify")
@db_option()
@session_option()
@click.option(
    "--anchor",
    default=None,
    callback=_anchor,
    help="ENTRY:SHA256 recorded earlier (the service's log, a backup): check it still holds.",
)
@json_option()
def audit_verify(
    db_url: str, session_file: Path | None, anchor: tuple[int, str] | None, as_json: bool
) -> None:
    """Check the hash chain from the first entry to the head; exit 8 naming each entry
    edited, deleted or forged."""
    from cloud_receiver.storage import audit as chain

    with acting(db_url, session_file, Action.AUDIT_READ) as a, a.storage.transaction() as tx:
        report = chain.verify(tx, anchor)
    if as_json:
        click.echo(json.dumps(report.as_dict()))
    else:
        for seq, problem in report.problems:
            click.echo(f"entry {seq}: {problem}")
        state = "intact" if report.intact else f"BROKEN ({len(report.problems)} problem(s))"
        click.echo(
            f"audit log {state}: {report.entries} entries, head entry {report.head_seq}"
            f" sha256 {report.head_hash}"
        )
    if not report.intact:
        first = report.problems[0][1]
        raise ChainBroken(f"the audit log does not verify: {first}")


@audit.command("alerts")
@db_option()
@session_option()
@since_option("From this time on (ISO 8601, or unix seconds).")
@until_option("Before this time (ISO 8601, or unix seconds).")
@click.option("--limit", type=click.IntRange(1), default=200, show_default=True)
@json_option()
def audit_alerts(
    db_url: str,
    session_file: Path | None,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
) -> None:
    """Alerts on abnormal access: many customers read, a new origin, repeated failed
    logins and lockouts, forged requests."""
    from cloud_receiver.storage import audit as chain

    first, end = time_range(since, until)
    with acting(db_url, session_file, Action.AUDIT_READ) as a, a.storage.transaction() as tx:
        found = chain.entries(
            tx, since=first, until=end, kinds=("alert",), limit=limit + 1, newest_first=True
        )
    older, found = len(found) > limit, found[:limit]
    found.reverse()
    if as_json:
        click.echo(json.dumps([e.as_dict() for e in found], ensure_ascii=False))
    if older:
        more_note(None, "older ones: use --limit/--since")
    if as_json:
        return
    rows = [[str(e.seq), _when(e.at), e.action, e.target, e.origin, e.detail] for e in found]
    emit(("seq", "at", "alert", "about", "origin", "detail"), rows, f"{len(rows)} alerts", False)


COMMANDS = [audit]
