"""Retention and the disk quota: what is deleted, in which order, and how each loss
of an undelivered reading is recorded; and the store's figures about itself."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from concentrator.storage.base import size_or_zero
from concentrator.storage.engine import errors
from concentrator.storage.errors import StoreError
from concentrator.storage.readings import Readings
from concentrator.storage.records import Stats
from contract.records import Event

if TYPE_CHECKING:
    import sqlite3  # the annotations' type; the driver is `engine`'s to load

log = logging.getLogger(__name__)


# Live data is evicted down to this fraction of the quota, so that a store that
# reaches its quota does not evict again on every insert.
_QUOTA_LOW_WATER = 0.8
# Upper and lower bounds on the number of rows deleted by one eviction transaction.
# Each transaction also writes its own loss event. Small chunks keep the WAL small
# on a nearly full disk; large chunks keep down the number of loss events.
_EVICT_CHUNK_MIN = 500
_EVICT_CHUNK_MAX = 50_000


class Quota(Readings):
    """Retention and the quota; it evicts the rows of batches in flight, so it sits on the
    outbox."""

    def _after_insert(self) -> None:
        # Two PRAGMAs and one stat() cost microseconds; the commit before this costs an
        # fsync. So the check runs on every call. That also keeps a single very large
        # add_readings from going unnoticed.
        if self.quota_bytes is None:
            return
        try:
            with self._lock:
                over = self._file_bytes() > self.quota_bytes
                if over:
                    self.enforce_quota(time.time())
        except StoreError:
            # The readings are committed; failing the call would make the caller think
            # they were not. The next insert tries eviction again.
            log.exception("quota enforcement on %s failed", self.path)

    # ------------------------------------------------------------ retention/quota

    def prune(self, now: float) -> int:
        """Delete rows delivered more than ``retention_s`` before ``now``; return how many.

        A reading is always read before it is acked, so one delivered before the cutoff
        has ``slot < cutoff``. The range scan on the slot index therefore only visits
        old rows, never the whole table. Missing-slot records older than the cutoff go
        as well.
        """
        cutoff = now - self.retention_s
        recent = (
            "NOT EXISTS (SELECT 1 FROM batches b WHERE b.id = x.uplink_seq"
            " AND (b.delivered_at IS NULL OR b.delivered_at >= :cutoff))"
        )
        params = {"cutoff": cutoff}
        with self._transaction() as conn:
            deleted = conn.execute(
                "DELETE FROM readings AS x"
                f" WHERE x.slot < :cutoff AND x.delivered = 1 AND {recent}",
                params,
            ).rowcount
            deleted += conn.execute(
                f"DELETE FROM events AS x WHERE x.delivered = 1 AND {recent}", params
            ).rowcount
            # A delivered batch row is only needed for its delivered_at. Any reading
            # left pointing at it (its slot was after the cutoff, so the clock must
            # have jumped) counts as old enough once its slot is.
            conn.execute(
                "DELETE FROM batches WHERE delivered_at IS NOT NULL AND delivered_at < ?",
                (cutoff,),
            )
            conn.execute("DELETE FROM missing WHERE slot < ?", (cutoff,))
        return deleted

    def enforce_quota(self, now: float) -> int:
        """Bring the store back under ``quota_bytes``. Returns how many readings were deleted.

        Eviction order: delivered readings first (their loss costs nothing), then the
        oldest readings still in the outbox, then the reading rows of the batches in
        flight, oldest first, each batch's rows whole; those batches stay in flight with
        their events and sealed bytes (`_evict_in_flight`). Every deletion of
        undelivered readings writes a ``loss`` event in the same transaction. At the
        end the free pages are returned to the file system (incremental vacuum and a
        truncating checkpoint), so the file really shrinks.
        """
        quota = self.quota_bytes
        if quota is None:
            return 0
        with self._lock:
            try:
                if self._file_bytes() <= quota:
                    return 0
                self.prune(now)
                target = int(quota * _QUOTA_LOW_WATER)
                deleted = 0
                for step in (self._evict_delivered, self._evict_outbox, self._evict_in_flight):
                    while self._live_bytes() > target:
                        n = step(now, self._chunk_size(target))
                        if n == 0:
                            break
                        deleted += n
                self._shrink_file()
                if self._file_bytes() > quota:
                    log.warning(
                        "store %s is still above its quota of %d bytes after eviction",
                        self.path,
                        quota,
                    )
                return deleted
            except errors() as exc:  # from the PRAGMAs run outside a transaction
                raise self._error(exc) from exc

    def _chunk_size(self, target: int) -> int:
        # Estimate how many rows the excess is worth, from the current bytes per row.
        conn = self._live()
        live = self._live_bytes()
        rows = int(conn.execute("SELECT count(*) FROM readings").fetchone()[0])
        per_row = max(live / max(rows, 1), 1.0)
        wanted = math.ceil((live - target) / per_row)
        return min(max(wanted, _EVICT_CHUNK_MIN), _EVICT_CHUNK_MAX)

    def _evict_delivered(self, now: float, limit: int) -> int:
        with self._transaction() as conn:
            ids = [
                (int(r[0]),)
                for r in conn.execute(
                    "SELECT id FROM readings WHERE delivered = 1 ORDER BY slot LIMIT ?", (limit,)
                )
            ]
            conn.executemany("DELETE FROM readings WHERE id = ?", ids)
            return len(ids)

    def _evict_outbox(self, now: float, limit: int) -> int:
        with self._transaction() as conn:
            rows = conn.execute(
                "SELECT id, series_id, slot FROM readings WHERE uplink_seq IS NULL"
                " ORDER BY slot, id LIMIT ?",
                (limit,),
            ).fetchall()
            if not rows:
                return 0
            conn.executemany("DELETE FROM readings WHERE id = ?", [(r[0],) for r in rows])
            self._record_loss(conn, now, rows, batch_id=None)
            return len(rows)

    def _evict_in_flight(self, now: float, limit: int) -> int:
        """The last resort: the reading rows of the oldest batch in flight that still has
        any. The batch itself stays in flight — its row, its events and its sealed
        bytes — because it may have reached the receiver already (the ack is what
        says so) and the uplink resends those bytes until it is acked: its events put
        back into the outbox would reach the receiver twice, and its readings still
        travel in the sealed bytes. So the loss event names the batch and says
        ``in_flight``: the readings are gone from this store, and reach the receiver
        only with that batch (not if the receiver asks for it again as a key batch)."""
        del limit  # a batch's rows are evicted whole, whatever their number
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT b.id FROM batches b WHERE b.delivered_at IS NULL AND EXISTS"
                " (SELECT 1 FROM readings r WHERE r.uplink_seq = b.id AND r.delivered = 0)"
                " ORDER BY b.id LIMIT 1"
            ).fetchone()
            if row is None:
                return 0
            batch_id = int(row[0])
            rows = conn.execute(
                "SELECT id, series_id, slot FROM readings WHERE uplink_seq = ? AND delivered = 0",
                (batch_id,),
            ).fetchall()
            conn.executemany("DELETE FROM readings WHERE id = ?", [(r[0],) for r in rows])
            self._record_loss(conn, now, rows, batch_id=batch_id)
            return len(rows)

    def _record_loss(
        self,
        conn: sqlite3.Connection,
        now: float,
        rows: Sequence[tuple[int, int, int]],
        *,
        batch_id: int | None,
    ) -> None:
        """Write the ``loss`` event for evicted readings (in the caller's transaction).

        The detail says what was lost for each meter and quantity::

            {"reason": "quota", "quota_bytes": ..., "readings": <total>, ["batch_id": ...,]
             "losses": [{"quantity": q, "count": c, "first_slot": a, "last_slot": b,
                         "meters": [m, ...]}, ...]}

        Every meter in ``meters`` lost ``count`` readings of ``quantity`` with slots from
        ``first_slot`` to ``last_slot``. Meters that lost the same thing share one entry.
        Eviction removes whole slots across the fleet, so there are few entries. That
        keeps the event small: an event that cost as much space as it frees would defeat
        the quota.
        """
        per_series: dict[int, list[int]] = {}  # series_id -> [count, first_slot, last_slot]
        for _, series_id, slot in rows:
            entry = per_series.setdefault(series_id, [0, slot, slot])
            entry[0] += 1
            entry[1] = min(entry[1], slot)
            entry[2] = max(entry[2], slot)
        names = {
            int(sid): (str(meter), str(quantity))
            for sid, meter, quantity in conn.execute(
                "SELECT s.id, m.name, q.name FROM series s"
                " JOIN meters m ON m.id = s.meter_id JOIN quantities q ON q.id = s.quantity_id"
            )
        }
        groups: dict[tuple[str, int, int, int], list[str]] = {}
        for sid, (count, first, last) in per_series.items():
            meter, quantity = names[sid]
            groups.setdefault((quantity, count, first, last), []).append(meter)
        losses = [
            {
                "quantity": quantity,
                "count": count,
                "first_slot": first,
                "last_slot": last,
                "meters": sorted(meters),
            }
            for (quantity, count, first, last), meters in sorted(groups.items())
        ]
        detail: dict[str, object] = {
            "reason": "quota",
            "quota_bytes": self.quota_bytes,
            "readings": len(rows),
            "losses": losses,
        }
        if batch_id is not None:
            detail["batch_id"] = batch_id
            detail["in_flight"] = True  # still in that batch's sealed bytes (`_evict_in_flight`)
        event = Event(kind="loss", severity="critical", meter=None, detail=detail, at=now)
        log.error("store %s over quota: evicted %d undelivered readings", self.path, len(rows))
        self._insert_event(conn, event, json.dumps(detail, separators=(",", ":")))

    def _shrink_file(self) -> None:
        conn = self._live()
        # executescript runs the pragma to completion. execute() would free only one
        # page, because Python steps a statement with no result columns once.
        conn.executescript("PRAGMA incremental_vacuum")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def _live_bytes(self) -> int:
        conn = self._live()
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        return (pages - free) * int(conn.execute("PRAGMA page_size").fetchone()[0])

    def _file_bytes(self) -> int:
        conn = self._live()
        pages = int(conn.execute("PRAGMA page_count").fetchone()[0])
        size = pages * int(conn.execute("PRAGMA page_size").fetchone()[0])
        return size + size_or_zero(Path(f"{self.path}-wal"))

    # ----------------------------------------------------------------- inspection

    def stats(self) -> Stats:
        with self._transaction(write=False) as conn:
            counts = {
                table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
                for table in ("readings", "events", "missing", "batches")
            }
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            page_count = int(conn.execute("PRAGMA page_count").fetchone()[0])
            freelist = int(conn.execute("PRAGMA freelist_count").fetchone()[0])
        readings = counts["readings"]
        return Stats(
            readings=readings,
            events=counts["events"],
            missing=counts["missing"],
            batches=counts["batches"],
            page_size=page_size,
            page_count=page_count,
            freelist_count=freelist,
            db_bytes=size_or_zero(self.path),
            wal_bytes=size_or_zero(Path(f"{self.path}-wal")),
            bytes_per_reading=(page_count - freelist) * page_size / readings if readings else None,
        )

    def integrity_check(self) -> list[str]:
        """Run ``integrity_check`` and ``foreign_key_check``; return the problems (none = ok).

        This reads the whole file, so it is too slow for every open (which runs
        ``quick_check``). Run it from maintenance or after a suspected fault.
        """
        with self._transaction(write=False) as conn:
            problems = [str(r[0]) for r in conn.execute("PRAGMA integrity_check")]
            problems = [] if problems == ["ok"] else problems
            problems += [
                f"foreign key violation: {table} row {rowid} -> {parent}"
                for table, rowid, parent, _ in conn.execute("PRAGMA foreign_key_check")
            ]
        return problems
