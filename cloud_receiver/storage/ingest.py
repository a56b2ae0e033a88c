"""Storing batches exactly once, a group of them per transaction (the ingest hot path).

A receiver that falls behind (a backlog arriving, a burst after an outage) takes the
batches waiting in its queue as one group and stores them in one transaction: one
commit (one fsync) and a handful of statements for the group instead of per batch.
Each batch keeps its own fate — stored, duplicate or replay — exactly as if the group's
batches had been stored one after another in arrival order:

- a batch whose (concentrator, seq) row exists, in the database or earlier in the
  group, is a duplicate and writes nothing;
- an unknown batch older than the replay window (counted from the highest sequence
  stored, this group's earlier batches included) is a replay and writes nothing;
- of one reading key delivered twice, the earlier batch's value is stored and the
  later one is a duplicate or a conflict (`.conflicts`), as if it came later.

Locks are taken in one order by every receiver — the group's batch rows sorted by
(concentrator, seq) in one statement, then the readings, then the concentrators' rows
sorted by name — so two receivers racing on the same batches wait for each other
instead of deadlocking: the second finds the first's batch rows once it commits and
counts those batches as duplicates. (Two *different* batches carrying the same reading
keys in different orders can still deadlock on PostgreSQL; it aborts one transaction
and `Storage.ingest_many` runs the group again.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Insert, case, insert, select, tuple_
from sqlalchemy.sql import ColumnElement

from cloud_receiver.storage import conflicts
from cloud_receiver.storage.backends import Backend
from cloud_receiver.storage.records import IngestResult
from cloud_receiver.storage.schema import batches, concentrators, events
from contract.records import Event, Reading
from contract.wire import REPLAY_WINDOW  # older than max_seq - window, never seen: refused

NAMES_PER_QUERY = 300  # concentrators (or batch keys) per IN list: under SQLite's limit


@dataclass(frozen=True)
class Batch:
    """One opened batch, ready to store: who sent it, its sequence and its content."""

    concentrator: str
    seq: int
    key_id: int
    readings: Sequence[Reading]
    events: Sequence[Event]
    received_at: float


class GroupWriter:
    """The group ingest's statements, built once per `Storage` (a group runs them
    without building SQL)."""

    def __init__(self, backend: Backend) -> None:
        self._backend = backend
        b, c = batches.c, concentrators.c
        self._add_batches: Insert = (
            backend.insert(batches).on_conflict_do_nothing().returning(b.concentrator, b.seq)
        )
        seen = backend.insert(concentrators)
        self._seen = seen.on_conflict_do_update(
            index_elements=[c.concentrator],
            set_={
                "last_seen": _greatest(c.last_seen, seen.excluded.last_seen),
                "max_seq": _greatest(c.max_seq, seen.excluded.max_seq),
            },
        )

    def store(self, conn: Connection, group: Sequence[Batch]) -> list[tuple[IngestResult, int]]:
        """Store ``group`` in the caller's transaction; per batch (result, new readings)."""
        results: list[tuple[IngestResult, int]] = [(IngestResult.DUPLICATE, 0)] * len(group)
        candidates = self._candidates(conn, group, results)
        if not candidates:
            return results
        rows = sorted(
            (
                {"concentrator": group[i].concentrator, "seq": group[i].seq,
                 "key_id": group[i].key_id, "received_at": group[i].received_at,
                 "readings": len(group[i].readings), "events": len(group[i].events)}
                for i in candidates
            ),
            key=lambda r: (r["concentrator"], r["seq"]),
        )  # fmt: skip
        added = {(row[0], int(row[1])) for row in conn.execute(self._add_batches.values(rows))}
        new = [i for i in candidates if (group[i].concentrator, group[i].seq) in added]
        if not new:
            return results
        stored = self._backend.add_readings(
            conn, [(group[i].concentrator, group[i].seq, group[i].readings) for i in new]
        )
        carried = sum(len(group[i].readings) for i in new)
        if stored == carried:
            counts = [len(group[i].readings) for i in new]
        else:  # some keys were stored already: duplicates or conflicts, per batch
            counts = [
                conflicts.record(conn, b.concentrator, b.seq, b.readings, b.received_at)
                for b in (group[i] for i in new)
            ]
        for i, count in zip(new, counts, strict=True):
            results[i] = (IngestResult.STORED, count)
        self._add_events(conn, [group[i] for i in new])
        latest: dict[str, tuple[float, int]] = {}
        for b in (group[i] for i in new):
            at, seq = latest.get(b.concentrator, (b.received_at, b.seq))
            latest[b.concentrator] = (max(at, b.received_at), max(seq, b.seq))
        conn.execute(
            self._seen,
            [
                {"concentrator": name, "last_seen": at, "max_seq": seq}
                for name, (at, seq) in sorted(latest.items())
            ],
        )
        return results

    def _candidates(
        self, conn: Connection, group: Sequence[Batch], results: list[tuple[IngestResult, int]]
    ) -> list[int]:
        """The group's batches that may be new, in arrival order; a replay or a batch
        that appears earlier in the group is settled in ``results`` here."""
        highest = _max_seqs(conn, {b.concentrator for b in group})
        old: list[int] = []
        candidates: list[int] = []
        first: set[tuple[str, int]] = set()
        for i, b in enumerate(group):
            key = (b.concentrator, b.seq)
            if key in first:
                continue  # the same batch twice in one group: the second is a duplicate
            first.add(key)
            top = highest.get(b.concentrator)
            if top is not None and b.seq <= top - REPLAY_WINDOW:
                old.append(i)
                continue
            candidates.append(i)
            highest[b.concentrator] = max(top or b.seq, b.seq)
        known = _stored(conn, [(group[i].concentrator, group[i].seq) for i in old])
        for i in old:
            if (group[i].concentrator, group[i].seq) not in known:
                results[i] = (IngestResult.REPLAY, 0)
        return candidates

    def _add_events(self, conn: Connection, stored: Sequence[Batch]) -> None:
        rows = [
            {"concentrator": b.concentrator, "seq": b.seq, "kind": e.kind,
             "severity": e.severity, "meter": e.meter, "detail": e.detail, "at": e.at}
            for b in stored
            for e in b.events
        ]  # fmt: skip
        if rows:
            conn.execute(insert(events), rows)


def _max_seqs(conn: Connection, names: set[str]) -> dict[str, int]:
    c = concentrators.c
    ordered = sorted(names)
    out: dict[str, int] = {}
    for i in range(0, len(ordered), NAMES_PER_QUERY):
        query = select(c.concentrator, c.max_seq).where(
            c.concentrator.in_(ordered[i : i + NAMES_PER_QUERY])
        )
        for row in conn.execute(query):
            out[row[0]] = int(row[1])
    return out


def _stored(conn: Connection, keys: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """Which of these (concentrator, seq) batches are stored (the rare replay path)."""
    b = batches.c
    out: set[tuple[str, int]] = set()
    for i in range(0, len(keys), NAMES_PER_QUERY):
        query = select(b.concentrator, b.seq).where(
            tuple_(b.concentrator, b.seq).in_(keys[i : i + NAMES_PER_QUERY])
        )
        out.update((row[0], int(row[1])) for row in conn.execute(query))
    return out


def _greatest(a: Any, b: Any) -> ColumnElement[Any]:
    """max(a, b) on both backends (SQLite's max() is PostgreSQL's greatest())."""
    return case((b > a, b), else_=a)
