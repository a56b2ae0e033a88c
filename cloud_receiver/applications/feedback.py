"""Customer feedback: a customer's question or complaint, answered by operators, with a
status both sides see until it is resolved (issue 21, item 3).

A customer raises a matter on their own account (``raise_feedback``) with a topic —
``bill`` (a wrong bill), ``cutoff`` (an unexpected cut-off), ``privacy`` (a privacy
concern) or ``other`` — a subject and a first message. Its status moves by one rule
(`_next_status`), whoever writes:

- an operator's answer makes it ``answered``;
- a customer's reply makes it ``open`` again (the answer did not settle it);
- ``resolve`` (an operator, or the customer accepting the answer) makes it
  ``resolved``; a resolved matter takes no more messages — a new doubt is a new matter.

Who may answer is the policy's (``feedback.answer``, `cloud_receiver.access.policy`);
which account a customer may write on is the portal's (their own only). This module
checks what is written: a known topic, a non-empty subject and message within bounds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, func, insert, select, update

from cloud_receiver.errors import EXIT_USAGE, NotFound, ReceiverError
from cloud_receiver.storage import Storage
from cloud_receiver.storage.schema import feedback, feedback_messages

TOPICS = ("bill", "cutoff", "privacy", "other")
OPEN, ANSWERED, RESOLVED = "open", "answered", "resolved"
STATUSES = (OPEN, ANSWERED, RESOLVED)
CUSTOMER, OPERATOR = "customer", "operator"
MAX_SUBJECT = 200
MAX_BODY = 4000

_F, _M = feedback.c, feedback_messages.c


class FeedbackError(ReceiverError, ValueError):
    """Bad input (topic, subject, message, status) or a message on a resolved matter."""

    exit_code = EXIT_USAGE


class UnknownFeedback(NotFound, FeedbackError):
    """No feedback of that id (for this account)."""


@dataclass(frozen=True)
class Message:
    at: float
    author: str  # "customer:<name>" or "operator:<name>", as the audit log names them
    body: str

    @property
    def from_operator(self) -> bool:
        return self.author.startswith(f"{OPERATOR}:")


@dataclass(frozen=True)
class Feedback:
    id: int
    account: str
    raised_by: str
    topic: str
    subject: str
    status: str
    created_at: float
    updated_at: float
    resolved_by: str | None
    messages: tuple[Message, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "account": self.account,
            "raised_by": self.raised_by,
            "topic": self.topic,
            "subject": self.subject,
            "status": self.status,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "resolved_by": self.resolved_by,
            "messages": [{"at": m.at, "author": m.author, "body": m.body} for m in self.messages],
        }


def check_topic(topic: str) -> str:
    if topic not in TOPICS:
        raise FeedbackError(f"topic {topic!r}: expected one of {', '.join(TOPICS)}")
    return topic


def check_status(status: str) -> str:
    if status not in STATUSES:
        raise FeedbackError(f"status {status!r}: expected one of {', '.join(STATUSES)}")
    return status


def _text(value: str, field: str, limit: int) -> str:
    text = value.strip()
    if not text:
        raise FeedbackError(f"{field}: empty; say what the matter is")
    if len(text) > limit:
        raise FeedbackError(f"{field}: {len(text)} characters, at most {limit}")
    return text


def _author(kind: str, name: str) -> str:
    if kind not in (CUSTOMER, OPERATOR):
        raise FeedbackError(f"author kind {kind!r}: expected customer or operator")
    if not name:
        raise FeedbackError("author: empty name")
    return f"{kind}:{name}"


def _next_status(current: str, author_kind: str, resolving: bool) -> str:
    """The one rule that moves a matter's status (see the module's docstring)."""
    if current == RESOLVED:
        raise FeedbackError("this matter is resolved: raise a new one for a new question")
    if resolving:
        return RESOLVED
    return ANSWERED if author_kind == OPERATOR else OPEN


def _row(r: Sequence[Any], messages: Sequence[Message] = ()) -> Feedback:
    return Feedback(
        id=int(r[0]),
        account=r[1],
        raised_by=r[2],
        topic=r[3],
        subject=r[4],
        status=r[5],
        created_at=float(r[6]),
        updated_at=float(r[7]),
        resolved_by=r[8],
        messages=tuple(messages),
    )


_COLUMNS = (_F.id, _F.account, _F.raised_by, _F.topic, _F.subject, _F.status, _F.created_at,
            _F.updated_at, _F.resolved_by)  # fmt: skip


def _load(conn: Connection, feedback_id: int, account: str | None) -> Feedback:
    query = select(*_COLUMNS).where(_F.id == feedback_id)
    row = conn.execute(query).first()
    if row is None or (account is not None and row[1] != account):
        # Another account's matter is "unknown" to a customer, never "forbidden": the
        # answer must not tell that it exists.
        raise UnknownFeedback(f"feedback {feedback_id}: no such matter")
    msgs = conn.execute(
        select(_M.at, _M.author, _M.body).where(_M.feedback == feedback_id).order_by(_M.id)
    ).all()
    return _row(row, [Message(float(m[0]), m[1], m[2]) for m in msgs])


def raise_feedback(
    storage: Storage,
    *,
    account: str,
    customer: str,
    topic: str,
    subject: str,
    body: str,
    now: float,
) -> Feedback:
    """A customer raises a matter on ``account`` (the caller checked it is theirs)."""
    check_topic(topic)
    subject_text = _text(subject, "subject", MAX_SUBJECT)
    body_text = _text(body, "message", MAX_BODY)
    author = _author(CUSTOMER, customer)
    if not account:
        raise FeedbackError("account: empty")
    with storage.transaction() as tx:
        new_id = tx.execute(
            insert(feedback)
            .values(account=account, raised_by=author, topic=topic, subject=subject_text,
                    status=OPEN, created_at=now, updated_at=now, resolved_by=None)
            .returning(_F.id)
        ).scalar_one()  # fmt: skip
        tx.execute(insert(feedback_messages).values(feedback=new_id, at=now, author=author,
                                                    body=body_text))  # fmt: skip
        return _load(tx, int(new_id), None)


def write(
    storage: Storage,
    feedback_id: int,
    *,
    author_kind: str,
    author: str,
    body: str,
    now: float,
    account: str | None = None,
    resolve: bool = False,
) -> Feedback:
    """Add a message (an operator's answer or a customer's reply) and move the status;
    ``resolve`` closes the matter (the message may then be empty: a plain "resolved").
    ``account`` confines a customer to their own matters."""
    who = _author(author_kind, author)
    text = body.strip()
    if text or not resolve:
        text = _text(body, "message", MAX_BODY)
    with storage.transaction() as tx:
        current = _load(tx, feedback_id, account)
        status = _next_status(current.status, author_kind, resolve)
        if text:
            tx.execute(insert(feedback_messages).values(feedback=feedback_id, at=now,
                                                        author=who, body=text))  # fmt: skip
        tx.execute(
            update(feedback)
            .where(_F.id == feedback_id)
            .values(status=status, updated_at=now, resolved_by=who if resolve else None)
        )
        return _load(tx, feedback_id, None)


def get(storage: Storage, feedback_id: int, *, account: str | None = None) -> Feedback:
    """One matter with its messages; ``account`` confines the look-up to that account's."""
    with storage.read() as conn:
        return _load(conn, feedback_id, account)


def listing(
    storage: Storage,
    *,
    status: str | None = None,
    account: str | None = None,
    limit: int = 200,
) -> tuple[list[Feedback], int]:
    """The newest matters first (without their messages), and how many more matched."""
    query = select(*_COLUMNS)
    counted = select(func.count()).select_from(feedback)
    if status is not None:
        check_status(status)
        query, counted = query.where(_F.status == status), counted.where(_F.status == status)
    if account is not None:
        query, counted = query.where(_F.account == account), counted.where(_F.account == account)
    with storage.read() as conn:
        rows = conn.execute(query.order_by(_F.id.desc()).limit(limit)).all()
        total = int(conn.execute(counted).scalar_one())
    return [_row(r) for r in rows], max(0, total - len(rows))


def counts(storage: Storage) -> dict[str, int]:
    """How many matters are in each status (the operators' queue at a glance)."""
    with storage.read() as conn:
        rows = conn.execute(select(_F.status, func.count()).group_by(_F.status)).all()
    found = {str(r[0]): int(r[1]) for r in rows}
    return {s: found.get(s, 0) for s in STATUSES}
