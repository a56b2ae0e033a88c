"""The read side the portal's pages and the API share (one place): meters, readings by
meter and range (canonical quantities, values as the exact decimal text stored),
events, prepaid accounts and their ledger, commands and requests with their status.

Every list is paged by a keyset cursor (an opaque string: pass ``next`` back as
``after``), so a page costs the same however deep it is. Nothing here checks roles:
the caller has (`cloud_receiver.web.security.Caller.require`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, or_, select

from cloud_receiver.access import customers
from cloud_receiver.access import requests as queue
from cloud_receiver.applications import prepay
from cloud_receiver.errors import NotFound, ReceiverError
from cloud_receiver.storage import Storage
from cloud_receiver.storage.schema import events, ledger, meters, readings

MAX_LIMIT = 5000
DEFAULT_LIMIT = 500


class BadCursor(ReceiverError, ValueError):
    """An ``after`` cursor this server did not hand out."""


@dataclass(frozen=True)
class Page:
    """One page of rows and the cursor of the next one (None: this was the last)."""

    rows: list[dict[str, Any]]
    next: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"items": self.rows, "next": self.next}


def _page(rows: list[dict[str, Any]], limit: int, cursor: Any) -> Page:
    if len(rows) > limit:
        return Page(rows[:limit], cursor(rows[limit - 1]))
    return Page(rows, None)


# ------------------------------------------------------------------ meters
def meter_list(storage: Storage, only: Sequence[str] | None, limit: int, after: str | None) -> Page:
    """Archive meters by id; ``only`` (a customer's meters): just these, with their
    archive entry where the archive has one."""
    m = meters.c
    q = select(m.meter, m.area, m.role, m.account, m.group, m.multiplier).order_by(m.meter)
    with storage.read() as conn:
        if only is None:
            ids = None
            if after is not None:
                q = q.where(m.meter > after)
            rows = {r[0]: r for r in conn.execute(q.limit(limit + 1)).all()}
        else:
            ids = sorted(x for x in only if after is None or x > after)[: limit + 1]
            rows = {r[0]: r for r in conn.execute(q.where(m.meter.in_(ids))).all()}
        owners = customers.owners_of(conn, list(ids if ids is not None else rows)[:limit])
    docs = []
    for meter in ids if ids is not None else list(rows):
        r = rows.get(meter)
        docs.append(
            {
                "meter": meter,
                "area": r[1] if r else None,
                "role": r[2] if r else None,
                "account": r[3] if r else None,
                "group": r[4] if r else None,
                "multiplier": r[5] if r else None,
                "customer": owners.get(meter),
            }
        )
    return _page(docs, limit, lambda d: d["meter"])


# ------------------------------------------------------------------ readings
def _reading_cursor(doc: dict[str, Any]) -> str:
    return f"{doc['slot']}.{doc['quantity']}"


def readings_page(
    storage: Storage,
    meter: str,
    *,
    since: int | None,
    until: int | None,
    quantities: Sequence[str],
    limit: int,
    after: str | None,
) -> Page:
    """A meter's readings in [since, until) by slot then quantity; values exact."""
    r = readings.c
    q = select(r.quantity, r.slot, r.value, r.unit, r.read_at, r.source, r.concentrator).where(
        r.meter == meter
    )
    if since is not None:
        q = q.where(r.slot >= since)
    if until is not None:
        q = q.where(r.slot < until)
    if quantities:
        q = q.where(r.quantity.in_(list(quantities)))
    if after is not None:
        slot_text, _, quantity = after.partition(".")
        if not slot_text.lstrip("-").isdigit() or not quantity:
            raise BadCursor(f"after {after!r}: not a cursor this server gave")
        slot = int(slot_text)
        q = q.where(or_(r.slot > slot, and_(r.slot == slot, r.quantity > quantity)))
    q = q.order_by(r.slot, r.quantity).limit(limit + 1)
    with storage.read() as conn:
        rows = conn.execute(q).all()
    docs = [
        {
            "meter": meter,
            "quantity": x[0],
            "slot": int(x[1]),
            "value": x[2],
            "unit": x[3],
            "read_at": float(x[4]),
            "source": x[5],
            "concentrator": x[6],
        }
        for x in rows
    ]
    return _page(docs, limit, _reading_cursor)


# ------------------------------------------------------------------ events
def events_page(
    storage: Storage,
    meter: str,
    *,
    since: float | None,
    until: float | None,
    limit: int,
    after: str | None,
) -> Page:
    """A meter's events in [since, until), in the order they arrived."""
    e = events.c
    q = select(e.id, e.concentrator, e.kind, e.severity, e.detail, e.at).where(e.meter == meter)
    if since is not None:
        q = q.where(e.at >= since)
    if until is not None:
        q = q.where(e.at < until)
    if after is not None:
        if not after.isdigit():
            raise BadCursor(f"after {after!r}: not a cursor this server gave")
        q = q.where(e.id > int(after))
    with storage.read() as conn:
        rows = conn.execute(q.order_by(e.id).limit(limit + 1)).all()
    docs = [
        {
            "id": int(x[0]),
            "meter": meter,
            "concentrator": x[1],
            "kind": x[2],
            "severity": x[3],
            "detail": x[4] if isinstance(x[4], dict) else json.loads(x[4]),
            "at": float(x[5]),
        }
        for x in rows
    ]
    return _page(docs, limit, lambda d: str(d["id"]))


# ------------------------------------------------------------------ accounts
def account_doc(acc: prepay.Account) -> dict[str, Any]:
    return {
        "account": acc.account,
        "meter": acc.meter,
        "concentrator": acc.concentrator,
        "balance": prepay.balance_text(acc.balance_cents),
        "balance_cents": acc.balance_cents,
        "grace": prepay.balance_text(acc.grace_cents),
        "low": prepay.balance_text(acc.low_cents),
        "state": acc.state,
        "low_warned": acc.low_warned,
        "billed_slot": acc.billed_slot,
        "billed_kwh": None if acc.billed_kwh is None else str(acc.billed_kwh),
        "created_at": acc.created_at,
    }


def account_list(storage: Storage, only: Sequence[str] | None) -> list[dict[str, Any]]:
    """Prepaid accounts (``only``: just these, a customer's)."""
    found = prepay.accounts(storage)
    return [account_doc(a) for a in found if only is None or a.account in only]


def account(storage: Storage, account_id: str) -> dict[str, Any]:
    return account_doc(prepay.get_account(storage, account_id))


def ledger_page(
    storage: Storage,
    account_id: str,
    *,
    since: float | None,
    until: float | None,
    limit: int,
    after: str | None,
) -> Page:
    """An account's ledger in [since, until), oldest first; amounts exact (yuan text)."""
    prepay.get_account(storage, account_id)
    g = ledger.c
    q = select(g.id, g.at, g.kind, g.ref, g.amount_cents, g.balance_cents, g.detail).where(
        g.account == account_id
    )
    if since is not None:
        q = q.where(g.at >= since)
    if until is not None:
        q = q.where(g.at < until)
    if after is not None:
        if not after.isdigit():
            raise BadCursor(f"after {after!r}: not a cursor this server gave")
        q = q.where(g.id > int(after))
    with storage.read() as conn:
        rows = conn.execute(q.order_by(g.id).limit(limit + 1)).all()
    docs = [
        {
            "id": int(x[0]),
            "at": float(x[1]),
            "kind": x[2],
            "ref": x[3],
            "amount": prepay.balance_text(int(x[4])),
            "amount_cents": int(x[4]),
            "balance": prepay.balance_text(int(x[5])),
            "balance_cents": int(x[5]),
            "detail": json.loads(x[6]),
        }
        for x in rows
    ]
    return _page(docs, limit, lambda d: str(d["id"]))


# ------------------------------------------------------------------ commands and requests
_COMMAND_FIELDS = (
    "id",
    "concentrator",
    "counter",
    "action",
    "meters",
    "params",
    "not_before",
    "not_after",
    "issued_at",
    "issued_by",
    "status",
    "result",
    "updated_at",
)


def command_list(
    storage: Storage,
    *,
    concentrator: str | None,
    status: str | None,
    since: float | None,
    until: float | None,
    limit: int,
) -> list[dict[str, Any]]:
    """Commands by issue time (oldest first), the first ``limit``."""
    rows = storage.commands(concentrator, status, None, limit, since, until)
    return [{f: getattr(r, f) for f in _COMMAND_FIELDS} for r in rows]


def command(storage: Storage, command_id: str) -> dict[str, Any]:
    """One command with its log (what became of it)."""
    rows = storage.commands(None, None, command_id, 1)
    if not rows:
        raise NotFound(f"no command {command_id!r}")
    doc = {f: getattr(rows[0], f) for f in _COMMAND_FIELDS}
    doc["log"] = [
        {"at": at, "status": st, "detail": d} for at, st, d in storage.command_log(command_id)
    ]
    return doc


def request_doc(req: queue.Request, approvers: list[str]) -> dict[str, Any]:
    return {**req.as_dict(), "approved_by": approvers}


def request_list(storage: Storage, status: str | None, limit: int) -> list[dict[str, Any]]:
    with storage.read() as conn:
        found = queue.listing(conn, status, limit)
        return [request_doc(r, [a.operator for a in queue.approvals_of(conn, r.id)]) for r in found]


def request(storage: Storage, request_id: int) -> dict[str, Any]:
    with storage.read() as conn:
        req = queue.get(conn, request_id)
        return request_doc(req, [a.operator for a in queue.approvals_of(conn, request_id)])
