"""Readings and the outbox: storing them, reading them back, and taking them out in
batches for the uplink until the receiver acks each batch."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from concentrator.storage.base import StoreBase
from concentrator.storage.codec import (
    EVENT_SELECT,
    READING_SELECT,
    pack_value_for,
    source_code,
    stored_event,
    stored_reading,
)
from concentrator.storage.records import Backlog, Batch, SealedBatch, StoredReading
from contract.records import Reading

if TYPE_CHECKING:
    import sqlite3  # the annotations' type; the driver is `engine`'s to load

BATCH_COUNTER = "batch"


class Readings(StoreBase):
    """Readings in, and out again in batches: the outbox the uplink drains."""

    # ------------------------------------------------------------------ readings

    def add_readings(self, readings: Sequence[Reading]) -> int:
        """Store the readings in one transaction and return how many were new.

        A reading for a (meter, quantity, slot) that is already stored is ignored: the
        first value wins, and a re-read never makes a second row. When this returns,
        the new readings are committed (durable with ``synchronous=FULL``).
        """
        if not readings:
            return 0
        # Validate before taking the lock, so bad input never opens a transaction.
        encoded = [
            (r, pack_value_for(r), round(r.read_at * 1000) - r.slot * 1000, source_code(r))
            for r in readings
        ]
        with self._transaction() as conn:
            rows = [
                (
                    self._series_id(conn, r.meter, r.quantity),
                    r.slot,
                    value,
                    self._name_id(conn, "units", r.unit),
                    lag_ms,
                    source,
                )
                for r, value, lag_ms, source in encoded
            ]
            cur = conn.executemany(
                "INSERT OR IGNORE INTO readings"
                " (series_id, slot, value, unit_id, read_lag_ms, source)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            new = cur.rowcount
            # A reading fills a slot recorded as missing (a successful backfill).
            # Skip the deletes when nothing is missing, which is the usual case.
            if conn.execute("SELECT EXISTS (SELECT 1 FROM missing)").fetchone()[0]:
                conn.executemany(
                    "DELETE FROM missing WHERE slot = ? AND series_id = ?",
                    [(slot, series_id) for series_id, slot, *_ in rows],
                )
        self._after_insert()
        return new

    def get_readings(
        self,
        meter: str | None = None,
        quantity: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int | None = None,
    ) -> list[StoredReading]:
        """Return stored readings ordered by (slot, id), with ``since <= slot < until``.

        The index leads with slot. Give ``since``/``until`` when you can; filtering
        only by meter scans all readings.
        """
        where, params = self._series_filter(meter, quantity)
        if since is not None:
            where += " AND r.slot >= ?"
            params.append(since)
        if until is not None:
            where += " AND r.slot < ?"
            params.append(until)
        sql = f"{READING_SELECT} WHERE {where} ORDER BY r.slot, r.id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._transaction(write=False) as conn:
            return [stored_reading(row) for row in conn.execute(sql, params)]

    # --------------------------------------------------------------------- outbox

    def take_batch(self, max_readings: int, max_events: int) -> Batch | None:
        """Take the next batch out of the outbox, or return None if the outbox is empty.

        Events go first, ahead of the backlog. Then come readings, oldest slot first.
        The batch id comes from a persisted counter and is committed durably with
        the marking, so it is never reused, not even after a power cut.
        """
        with self._transaction(durable=True) as conn:
            return self._take(conn, max_readings, max_events)

    def take_sealed_batch(
        self, max_readings: int, max_events: int, seal: Callable[[Batch], bytes]
    ) -> SealedBatch | None:
        """`take_batch`, and ``seal(batch)`` kept in the same transaction until the batch
        is acked or requeued, so a restart resends these bytes (`resume_in_flight`).
        The payload is only published after this commits: bytes never kept are bytes
        never sent, and their ``seq`` stays unused."""
        with self._transaction(durable=True) as conn:
            batch = self._take(conn, max_readings, max_events)
            if batch is None:
                return None
            payload = seal(batch)
            conn.execute(
                "INSERT INTO sealed (batch_id, payload) VALUES (?, ?)", (batch.batch_id, payload)
            )
            return SealedBatch(batch, payload)

    def _take(self, conn: sqlite3.Connection, max_readings: int, max_events: int) -> Batch | None:
        if max_readings < 0 or max_events < 0:
            raise ValueError("max_readings and max_events must not be negative")
        # Marked in one statement each, with no list of row ids in Python: a list of
        # 30,000 ids and their parameter tuples cost the daemon megabytes at every take.
        outbox = [
            (table, order, limit)
            for table, order, limit in (
                ("events", "id", max_events),
                ("readings", "slot, id", max_readings),
            )
            if limit
        ]
        if not any(
            conn.execute(f"SELECT 1 FROM {table} WHERE uplink_seq IS NULL LIMIT 1").fetchone()
            for table, _, _ in outbox
        ):
            return None
        batch_id = self._bump_counter(conn, BATCH_COUNTER)
        conn.execute("INSERT INTO batches(id, taken_at) VALUES (?, ?)", (batch_id, time.time()))
        for table, order, limit in outbox:
            conn.execute(
                f"UPDATE {table} SET uplink_seq = ? WHERE id IN (SELECT id FROM {table}"
                f" WHERE uplink_seq IS NULL ORDER BY {order} LIMIT ?)",
                (batch_id, limit),
            )
        return self._load_batch(conn, batch_id)

    @staticmethod
    def _load_batch(conn: sqlite3.Connection, batch_id: int) -> Batch:
        # Same order as take_batch, so a batch reloaded after a restart is identical
        # and can be resent under the same id (and nonce).
        # A batch repeats a few thousand meter, quantity and unit names and slots over
        # tens of thousands of rows; SQLite hands out a new object for each, so they
        # are shared here: a 30,000-reading batch takes megabytes less.
        shared: dict[object, object] = {}
        one = shared.setdefault
        readings = tuple(
            stored_reading(
                (rid, one(m, m), one(q, q), one(s, s), v, one(u, u), lag, src, one(b, b))
            )
            for rid, m, q, s, v, u, lag, src, b in conn.execute(
                f"{READING_SELECT} WHERE r.uplink_seq = ? AND r.delivered = 0"
                " ORDER BY r.slot, r.id",
                (batch_id,),
            )
        )
        events = tuple(
            stored_event(row)
            for row in conn.execute(
                f"{EVENT_SELECT} WHERE uplink_seq = ? AND delivered = 0 ORDER BY id",
                (batch_id,),
            )
        )
        return Batch(batch_id=batch_id, readings=readings, events=events)

    def mark_delivered(self, batch_id: int, *, now: float | None = None) -> bool:
        """Record the receiver's ack for a batch; False if it was already acked or is unknown.

        Duplicate acks are normal (the receiver acks a duplicate batch again), so this is
        idempotent.
        """
        at = time.time() if now is None else now
        with self._transaction() as conn:
            cur = conn.execute(
                "UPDATE batches SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL",
                (at, batch_id),
            )
            if cur.rowcount == 0:
                return False
            conn.execute("DELETE FROM sealed WHERE batch_id = ?", (batch_id,))
            for table in ("readings", "events"):
                conn.execute(
                    f"UPDATE {table} SET delivered = 1 WHERE uplink_seq = ? AND delivered = 0",
                    (batch_id,),
                )
            return True

    def requeue(self, batch_id: int) -> int:
        """Put an unacked batch's rows back into the outbox. Returns how many rows went back.

        A batch already delivered is left alone (returns 0).
        """
        with self._transaction() as conn:
            return self._requeue(conn, batch_id)

    def requeue_all_undelivered(self) -> int:
        """At start-up, put the batches that were in flight when the process died back."""
        with self._transaction() as conn:
            ids = [
                int(r[0]) for r in conn.execute("SELECT id FROM batches WHERE delivered_at IS NULL")
            ]
            return sum(self._requeue(conn, batch_id) for batch_id in ids)

    def resume_in_flight(self) -> tuple[list[SealedBatch], int]:
        """At start-up: the batches in flight that kept their sealed bytes, oldest first,
        to resend as they are, and how many rows of the others (taken by a release that
        kept no bytes) went back into the outbox."""
        with self._transaction() as conn:
            # Bytes of a batch an older release acked or requeued are of no use.
            conn.execute(
                "DELETE FROM sealed WHERE batch_id NOT IN"
                " (SELECT id FROM batches WHERE delivered_at IS NULL)"
            )
            kept = dict(conn.execute("SELECT batch_id, payload FROM sealed").fetchall())
            ids = [
                int(r[0])
                for r in conn.execute(
                    "SELECT id FROM batches WHERE delivered_at IS NULL ORDER BY id"
                )
            ]
            resend = [
                SealedBatch(self._load_batch(conn, i), bytes(kept[i])) for i in ids if i in kept
            ]
            moved = sum(self._requeue(conn, i) for i in ids if i not in kept)
            return resend, moved

    @staticmethod
    def _requeue(conn: sqlite3.Connection, batch_id: int) -> int:
        cur = conn.execute("DELETE FROM batches WHERE id = ? AND delivered_at IS NULL", (batch_id,))
        if cur.rowcount == 0:
            return 0
        conn.execute("DELETE FROM sealed WHERE batch_id = ?", (batch_id,))  # bytes never resent
        moved = 0
        for table in ("readings", "events"):
            moved += conn.execute(
                f"UPDATE {table} SET uplink_seq = NULL WHERE uplink_seq = ? AND delivered = 0",
                (batch_id,),
            ).rowcount
        return moved

    def pending_batches(self) -> list[Batch]:
        """Return the batches taken but not yet acked, oldest first, exactly as they were taken."""
        with self._transaction(write=False) as conn:
            ids = [
                int(r[0])
                for r in conn.execute(
                    "SELECT id FROM batches WHERE delivered_at IS NULL ORDER BY id"
                )
            ]
            return [self._load_batch(conn, batch_id) for batch_id in ids]

    def backlog(self) -> Backlog:
        with self._transaction(write=False) as conn:
            parts = [
                conn.execute(
                    "SELECT count(*), min(slot), min(slot * 1000 + read_lag_ms)"
                    f" FROM readings WHERE {condition}"
                ).fetchone()
                for condition in (
                    "uplink_seq IS NULL",
                    "uplink_seq IS NOT NULL AND delivered = 0",
                )
            ]
            events = sum(
                int(conn.execute(f"SELECT count(*) FROM events WHERE {condition}").fetchone()[0])
                for condition in (
                    "uplink_seq IS NULL",
                    "uplink_seq IS NOT NULL AND delivered = 0",
                )
            )
        slots = [int(p[1]) for p in parts if p[1] is not None]
        read_ms = [int(p[2]) for p in parts if p[2] is not None]
        return Backlog(
            readings=sum(int(p[0]) for p in parts),
            events=events,
            oldest_slot=min(slots) if slots else None,
            oldest_read_at=min(read_ms) / 1000 if read_ms else None,
        )
