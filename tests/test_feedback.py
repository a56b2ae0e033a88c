"""Customer feedback (issue 21, item 3): a customer raises a matter, operators answer it
with ``cloud-receiver feedback``, both see its status until it is resolved; one account's
matters are unknown to another; the roles that may answer; bad input named."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from helpers import NO_SESSION, Operators
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import select

from cloud_receiver.applications import feedback as fb
from cloud_receiver.cli import main
from cloud_receiver.storage import Storage, open_storage
from cloud_receiver.storage.schema import audit_log


def cli(*args: str, session: Path | None = None) -> Result:
    env = {"MF_SESSION": str(session) if session is not None else NO_SESSION}
    return CliRunner().invoke(main, list(args), env=env)


@pytest.fixture
def db(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    open_storage(url).close()
    return url


def _raise(storage: Storage, account: str = "A1", topic: str = "bill") -> fb.Feedback:
    return fb.raise_feedback(storage, account=account, customer="c-" + account, topic=topic,
                             subject="March bill too high", body="I was away all March.",
                             now=time.time())  # fmt: skip


def test_a_matter_moves_open_answered_open_resolved(db: str) -> None:
    s = open_storage(db)
    try:
        first = _raise(s)
        assert (first.status, first.topic, first.raised_by) == ("open", "bill", "customer:c-A1")
        answer = "The meter read 12 kWh; see the daily usage."
        answered = fb.write(s, first.id, author_kind="operator", author="olga", body=answer,
                            now=time.time())  # fmt: skip
        assert answered.status == "answered"
        reopened = fb.write(s, first.id, author_kind="customer", author="c-A1", account="A1",
                            body="12 kWh is still more than nothing.", now=time.time())  # fmt: skip
        assert reopened.status == "open"
        done = fb.write(s, first.id, author_kind="operator", author="olga", body="",
                        resolve=True, now=time.time())  # fmt: skip
        assert (done.status, done.resolved_by) == ("resolved", "operator:olga")
        assert [m.author for m in done.messages] == [
            "customer:c-A1", "operator:olga", "customer:c-A1"
        ]  # fmt: skip
        assert [m.from_operator for m in done.messages] == [False, True, False]
        with pytest.raises(fb.FeedbackError, match="resolved: raise a new one"):
            fb.write(s, first.id, author_kind="customer", author="c-A1", body="and?",
                     now=time.time())  # fmt: skip
        assert fb.counts(s) == {"open": 0, "answered": 0, "resolved": 1}
    finally:
        s.close()


def test_another_accounts_matter_is_unknown_not_forbidden(db: str) -> None:
    s = open_storage(db)
    try:
        theirs = _raise(s, "A2")
        with pytest.raises(fb.UnknownFeedback, match=f"feedback {theirs.id}: no such matter"):
            fb.get(s, theirs.id, account="A1")
        with pytest.raises(fb.UnknownFeedback):
            fb.write(s, theirs.id, author_kind="customer", author="c-A1", account="A1",
                     body="let me in", now=time.time())  # fmt: skip
        assert fb.get(s, theirs.id, account="A2").status == "open"
        mine, more = fb.listing(s, account="A1")
        assert (mine, more) == ([], 0)
    finally:
        s.close()


@pytest.mark.parametrize(
    ("field", "kwargs", "message"),
    [
        ("topic", {"topic": "weather"}, "topic 'weather': expected one of bill, cutoff"),
        ("subject", {"subject": "   "}, "subject: empty"),
        ("body", {"body": "x" * (fb.MAX_BODY + 1)}, f"message: {fb.MAX_BODY + 1} characters"),
    ],
)
def test_bad_input_is_named(db: str, field: str, kwargs: dict[str, str], message: str) -> None:
    s = open_storage(db)
    try:
        args = {"account": "A1", "customer": "c", "topic": "bill", "subject": "s", "body": "b"}
        with pytest.raises(fb.FeedbackError, match=message):
            fb.raise_feedback(s, **{**args, **kwargs}, now=time.time())  # type: ignore[arg-type]
    finally:
        s.close()


def test_operators_list_answer_and_resolve_from_the_command_line(
    db: str, operators: Callable[[str], Operators]
) -> None:
    s = open_storage(db)
    try:
        matter = _raise(s, "A1", "cutoff")
        _raise(s, "A2", "privacy")
    finally:
        s.close()
    clerk = operators(db).login("bea", "billing-clerk")
    listed = cli("feedback", "list", "--db", db, "--status", "open", "--json", session=clerk)
    assert listed.exit_code == 0, listed.output
    doc = json.loads(listed.stdout)
    assert [(r["account"], r["topic"]) for r in doc["rows"]] == [
        ("A2", "privacy"),
        ("A1", "cutoff"),
    ]
    answer = cli("feedback", "answer", str(matter.id), "Your balance ran out on the 3rd.",
                 "--db", db, "--json", session=clerk)  # fmt: skip
    assert answer.exit_code == 0, answer.output
    assert json.loads(answer.stdout)["status"] == "answered"
    done = cli("feedback", "resolve", str(matter.id), "--note", "Topped up; supply is back.",
               "--db", db, "--json", session=clerk)  # fmt: skip
    assert done.exit_code == 0, done.output
    doc = json.loads(done.stdout)
    assert (doc["status"], doc["resolved_by"]) == ("resolved", "operator:bea")
    assert doc["messages"][-1]["body"] == "Topped up; supply is back."
    shown = cli("feedback", "show", str(matter.id), "--db", db, session=clerk)
    assert shown.exit_code == 0, shown.output
    assert "cutoff) on account A1: resolved" in shown.stdout
    again = cli("feedback", "answer", str(matter.id), "more", "--db", db, session=clerk)
    assert again.exit_code == 2 and "is resolved" in again.stderr
    unknown = cli("feedback", "show", "999", "--db", db, session=clerk)
    assert unknown.exit_code == 9 and "feedback 999: no such matter" in unknown.stderr
    s = open_storage(db)
    try:
        with s.read() as conn:
            kinds = conn.execute(select(audit_log.c.kind, audit_log.c.target)).all()
    finally:
        s.close()
    assert ("export", "feedback:*") in [tuple(k) for k in kinds]  # --json: an export
    assert ("change", "account:A1") in [tuple(k) for k in kinds]
    assert ("read", "account:A1") in [tuple(k) for k in kinds]


def test_a_viewer_may_read_but_not_answer(db: str, operators: Callable[[str], Operators]) -> None:
    s = open_storage(db)
    try:
        matter = _raise(s)
    finally:
        s.close()
    viewer = operators(db).login("vic", "viewer")
    assert cli("feedback", "list", "--db", db, session=viewer).exit_code == 0
    refused = cli("feedback", "answer", str(matter.id), "hello", "--db", db, session=viewer)
    assert refused.exit_code == 4, refused.output
    assert "(viewer) may not feedback.answer" in refused.stderr
    bad = cli("feedback", "list", "--status", "closed", "--db", db, session=viewer)
    assert bad.exit_code == 2 and "'closed' is not one of" in bad.output


@given(st.text(max_size=300))
def test_a_subject_is_kept_stripped_or_refused_by_name(text: str) -> None:
    stripped = text.strip()
    if stripped and len(stripped) <= fb.MAX_SUBJECT:
        assert fb._text(text, "subject", fb.MAX_SUBJECT) == stripped
    else:
        with pytest.raises(fb.FeedbackError, match=r"^subject: "):
            fb._text(text, "subject", fb.MAX_SUBJECT)
