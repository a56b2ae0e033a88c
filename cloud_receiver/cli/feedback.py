"""``feedback list|show|answer|resolve``: customers' questions and complaints, answered
by operators (`cloud_receiver.applications.feedback`; customers raise them in the
portal). Reading a matter is a read of that customer's data and is audited."""

from __future__ import annotations

from pathlib import Path

import click

from clitools.options import db_option, json_option
from clitools.output import print_json, result
from clitools.table import limit_option, more_note
from clitools.timefmt import iso
from cloud_receiver.access.policy import Action, Resource
from cloud_receiver.cli.auth import acting, session_option
from cloud_receiver.cli.common import emit


@click.group()
def feedback() -> None:
    """Customers' questions and complaints (a wrong bill, an unexpected cut-off, a
    privacy concern) and the operators' answers."""


@feedback.command("list")
@click.option(
    "--status",
    type=click.Choice(["open", "answered", "resolved"]),
    default=None,
    help="Only matters in this status (default: all).",
)
@click.option("--account", "account_id", default=None, help="Only this account's matters.")
@limit_option()
@db_option()
@session_option()
@json_option()
def feedback_list(
    status: str | None,
    account_id: str | None,
    limit: int,
    db_url: str,
    session_file: Path | None,
    as_json: bool,
) -> None:
    """The matters customers raised, newest first, with their status (audited)."""
    from cloud_receiver.applications import feedback as fb

    target = Resource("account", account_id) if account_id else Resource("feedback")
    with acting(db_url, session_file, Action.DATA_READ, target) as actor:
        found, more = fb.listing(actor.storage, status=status, account=account_id,
                                 limit=limit or 1_000_000)  # fmt: skip
        actor.read("feedback list", str(target), customers=len({f.account for f in found}),
                   export="json" if as_json else None)  # fmt: skip
    rows = [[str(f.id), f.account, f.topic, f.status, iso(f.updated_at), f.subject] for f in found]
    emit(["id", "account", "topic", "status", "updated", "subject"], rows, "feedback", False,
         as_json, summary={"more": more})  # fmt: skip
    more_note(more, "older matters: use --limit/--status")


@feedback.command("show")
@click.argument("feedback_id", type=int)
@db_option()
@session_option()
@json_option()
def feedback_show(feedback_id: int, db_url: str, session_file: Path | None, as_json: bool) -> None:
    """One matter with every message (audited)."""
    from cloud_receiver.applications import feedback as fb

    with acting(
        db_url, session_file, Action.DATA_READ, Resource("feedback", str(feedback_id))
    ) as actor:
        found = fb.get(actor.storage, feedback_id)
        actor.read("feedback", f"account:{found.account}", customers=1,
                   export="json" if as_json else None)  # fmt: skip
    _print(found, as_json)


def _print(found: object, as_json: bool) -> None:
    from cloud_receiver.applications.feedback import Feedback

    assert isinstance(found, Feedback)
    if as_json:
        print_json(found.as_dict())
        return
    click.echo(
        f"feedback {found.id} ({found.topic}) on account {found.account}: {found.status}"
        f" — {found.subject}"
    )
    for m in found.messages:
        click.echo(f"  {iso(m.at)}  {m.author}: {m.body}")


def _write(feedback_id: int, message: str, resolve: bool, db_url: str,
           session_file: Path | None, as_json: bool) -> None:  # fmt: skip
    import time

    from cloud_receiver.applications import feedback as fb

    target = Resource("feedback", str(feedback_id))
    with acting(db_url, session_file, Action.FEEDBACK_ANSWER, target) as actor:
        done = fb.write(actor.storage, feedback_id, author_kind=fb.OPERATOR,
                        author=actor.principal.name, body=message, now=time.time(),
                        resolve=resolve)  # fmt: skip
        actor.record("change", str(Action.FEEDBACK_ANSWER), f"account:{done.account}",
                     detail={"feedback": done.id, "status": done.status})  # fmt: skip
    result(as_json, f"feedback {done.id}: {done.status}", done.as_dict())


@feedback.command("answer")
@click.argument("feedback_id", type=int)
@click.argument("message")
@db_option()
@session_option()
@json_option()
def feedback_answer(
    feedback_id: int, message: str, db_url: str, session_file: Path | None, as_json: bool
) -> None:
    """Answer a matter: the customer sees MESSAGE and the status ``answered``."""
    _write(feedback_id, message, False, db_url, session_file, as_json)


@feedback.command("resolve")
@click.argument("feedback_id", type=int)
@click.option("--note", default="", help="A last message to the customer.")
@db_option()
@session_option()
@json_option()
def feedback_resolve(
    feedback_id: int, note: str, db_url: str, session_file: Path | None, as_json: bool
) -> None:
    """Mark a matter resolved (it takes no more messages)."""
    _write(feedback_id, note, True, db_url, session_file, as_json)


COMMANDS = [feedback]
