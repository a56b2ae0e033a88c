"""Conflicting readings: never silent, never a silent replacement.

A reading's key is (meter, quantity, slot). A batch whose reading finds its key already
stored is one of two things:

- the same value again (a resend after a lost ack, or a re-read): an idempotent
  duplicate, nothing to record;
- a different value (or unit): a *conflict*. The stored reading stands; the later one is
  recorded here with both values, both sources (concentrator and batch) and both times,
  and a ``reading_conflict`` event is raised under the batch that brought it.

Why the first value stands: it is the one the receiver acknowledged first, so it may
already have been billed, charged against a prepaid balance or used by the analytics;
replacing it because another value arrived later would let whoever sends last rewrite
the record (the issue's stolen-concentrator attack, in reverse). An operator compares
both (``cloud-receiver conflicts``) and decides. Values compare as exact decimals
(``1.50`` equals ``1.5``); text that is not a number compares as text.

This is the one place the rule lives: `.ingest` calls `record` inside the batch's
transaction, on both backends, and only when a group of batches stored fewer readings
than it carried (the fast path of new readings reads nothing back).
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal, InvalidOperation

from sqlalchemy import Connection, and_, insert, select, tuple_

from cloud_receiver.storage.records import Conflict
from cloud_receiver.storage.schema import batches, events, reading_conflicts, readings
from contract.records import Reading

EVENT_KIND = "reading_conflict"
KEYS_PER_QUERY = 300  # three parameters per key: within SQLite's host parameter limit

_Key = tuple[str, str, int]


def same_value(a: str, b: str) -> bool:
    """Exact decimal equality; text that is not a number compares as text."""
    if a == b:
        return True
    try:
        return Decimal(a) == Decimal(b)
    except (InvalidOperation, ValueError):
        return False


def record(
    conn: Connection,
    concentrator: str,
    seq: int,
    batch: Sequence[Reading],
    received_at: float,
) -> int:
    """Record every reading of this batch that differs from the stored one of its key;
    return how many of its keys this batch stored (the rest were there before). Runs
    after the batch's readings went in (existing keys left alone), so a key stored by
    this very batch is compared too (two values for one key in a batch)."""
    stored: dict[_Key, tuple[str, str, float, str, int, float]] = {}
    keys = list(dict.fromkeys((r.meter, r.quantity, r.slot) for r in batch))
    r, b = readings.c, batches.c
    for i in range(0, len(keys), KEYS_PER_QUERY):
        chunk = keys[i : i + KEYS_PER_QUERY]
        query = (
            select(r.meter, r.quantity, r.slot, r.value, r.unit, r.read_at, r.concentrator,
                   r.seq, b.received_at)
            .select_from(readings.join(batches, and_(b.concentrator == r.concentrator,
                                                     b.seq == r.seq)))
            .where(tuple_(r.meter, r.quantity, r.slot).in_(chunk))
        )  # fmt: skip
        for row in conn.execute(query):
            stored[(row[0], row[1], int(row[2]))] = (
                row[3], row[4], float(row[5]), row[6], int(row[7]), float(row[8]),
            )  # fmt: skip
    mine = sum(1 for have in stored.values() if have[3] == concentrator and have[4] == seq)
    found: list[dict[str, object]] = []
    for reading in batch:
        have = stored.get((reading.meter, reading.quantity, reading.slot))
        if have is None:
            continue  # cannot happen inside the transaction; nothing to compare with
        value, unit, read_at, by, by_seq, by_at = have
        if unit == reading.unit and same_value(value, reading.value):
            continue  # the same reading again: a duplicate
        found.append(
            {"meter": reading.meter, "quantity": reading.quantity, "slot": reading.slot,
             "stored_value": value, "stored_unit": unit, "stored_read_at": read_at,
             "stored_concentrator": by, "stored_seq": by_seq, "stored_received_at": by_at,
             "value": reading.value, "unit": reading.unit, "read_at": reading.read_at,
             "source": reading.source, "concentrator": concentrator, "seq": seq,
             "received_at": received_at}
        )  # fmt: skip
    if not found:
        return mine
    conn.execute(insert(reading_conflicts), found)
    conn.execute(
        insert(events),
        [
            {"concentrator": concentrator, "seq": seq, "kind": EVENT_KIND,
             "severity": "warning", "meter": c["meter"], "at": received_at,
             "detail": {"quantity": c["quantity"], "slot": c["slot"],
                        "stored": {"value": c["stored_value"], "unit": c["stored_unit"],
                                   "concentrator": c["stored_concentrator"],
                                   "seq": c["stored_seq"]},
                        "received": {"value": c["value"], "unit": c["unit"]}}}
            for c in found
        ],
    )  # fmt: skip
    return mine


def query(
    conn: Connection,
    *,
    since: float | None = None,
    until: float | None = None,
    meter: str | None = None,
    limit: int = 100,
) -> list[Conflict]:
    """The conflicts detected in ``since <= received_at < until``, newest first."""
    c = reading_conflicts.c
    q = select(
        c.id, c.meter, c.quantity, c.slot, c.stored_value, c.stored_unit, c.stored_read_at,
        c.stored_concentrator, c.stored_seq, c.stored_received_at, c.value, c.unit,
        c.read_at, c.source, c.concentrator, c.seq, c.received_at,
    ).order_by(c.received_at.desc(), c.id.desc())  # fmt: skip
    if since is not None:
        q = q.where(c.received_at >= since)
    if until is not None:
        q = q.where(c.received_at < until)
    if meter is not None:
        q = q.where(c.meter == meter)
    rows = conn.execute(q.limit(limit)).all()
    return [
        Conflict(
            int(r[0]), r[1], r[2], int(r[3]), r[4], r[5], float(r[6]), r[7], int(r[8]),
            float(r[9]), r[10], r[11], float(r[12]), r[13], r[14], int(r[15]), float(r[16]),
        )
        for r in rows
    ]  # fmt: skip
