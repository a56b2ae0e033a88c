"""Events, and the slots that could not be read (missing), with the read-success
figures they make together."""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Literal

from concentrator.storage.base import StoreBase
from concentrator.storage.codec import EVENT_SELECT, SOURCES, stored_event
from concentrator.storage.held import RECOVERED_KEY, Held
from concentrator.storage.records import Missing, ReadSuccess, StoredEvent

if TYPE_CHECKING:
    import sqlite3  # the annotations' type; the driver is `engine`'s to load

_DAY_S = 86_400


def _not_older(stored: str, held: str) -> bool:
    """Whether the stored state value is at least as new as the held one: numbers
    (a task's last slot) compare as numbers; any other stored value is kept."""
    try:
        return int(stored) >= int(held)
    except ValueError:
        return True


class Events(StoreBase):
    """The event queries, the missing slots and the read-success counts."""

    # -------------------------------------------------------------------- missing

    def record_missing(self, meter: str, quantity: str, slot: int, reason: str) -> bool:
        """Record that a slot could not be read. Returns False if a reading for it exists.

        Recording the same slot again replaces the reason: the latest failure is the
        one worth seeing.
        """
        return self.record_missing_many([(meter, quantity, slot, reason)]) == 1

    def record_missing_many(self, rows: Sequence[tuple[str, str, int, str]]) -> int:
        """``record_missing`` for many (meter, quantity, slot, reason) in one
        transaction — a bus that falls behind misses many at once; one commit each made
        it fall further behind. Returns how many were recorded."""
        recorded = 0
        with self._transaction() as conn:
            for meter, quantity, slot, reason in rows:
                series_id = self._series_id(conn, meter, quantity)
                exists = conn.execute(
                    "SELECT 1 FROM readings WHERE slot = ? AND series_id = ?", (slot, series_id)
                ).fetchone()
                if exists:
                    continue
                conn.execute(
                    "INSERT INTO missing(slot, series_id, reason) VALUES (?, ?, ?)"
                    " ON CONFLICT (slot, series_id) DO UPDATE SET reason = excluded.reason",
                    (slot, series_id, reason),
                )
                recorded += 1
        return recorded

    def record_held(self, held: Held, at: float) -> int:
        """Account, in one transaction, for what a killed daemon held on a full disk
        (`concentrator.storage.held`): each held reading not stored becomes a missing
        record and part of one ``loss`` event, both with the true reason; held missing
        records, events and states are written as the writer would have. A state is not
        moved back (a newer value may be on disk). Once per episode: a second call
        for the same journal (killed before it was cleared) changes nothing. Returns
        the number of readings recorded lost."""
        with self._transaction() as conn:
            done = conn.execute("SELECT value FROM state WHERE key = ?", (RECOVERED_KEY,))
            if (row := done.fetchone()) is not None and row[0] == held.episode:
                return 0
            stored = {
                (m, q, s)
                for m, q, s in held.slot_keys()
                if self._stored(conn, s, self._series_id(conn, m, q))
            }
            missing, events, lost = held.account(stored, at)
            for meter, quantity, slot, reason in missing:
                conn.execute(
                    "INSERT INTO missing(slot, series_id, reason) VALUES (?, ?, ?)"
                    " ON CONFLICT (slot, series_id) DO UPDATE SET reason = excluded.reason",
                    (slot, self._series_id(conn, meter, quantity), reason),
                )
            for event in events:
                detail = json.dumps(event.detail, sort_keys=True, separators=(",", ":"))
                # Committed just before the kill, the journal not yet cleared: once only.
                # (The overflow's loss event got its time when it was committed.)
                same_at = "" if event.kind == "loss" else " AND at = ?"
                args: tuple[object, ...] = (event.kind, detail)
                if same_at:
                    args += (event.at,)
                sql = f"SELECT 1 FROM events WHERE kind = ? AND detail = ?{same_at}"
                if conn.execute(sql, args).fetchone() is None:
                    self._insert_event(conn, event, detail)
            for key, value in held.states.items():
                row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
                if row is not None and _not_older(str(row[0]), value):
                    continue
                conn.execute(
                    "INSERT INTO state(key, value) VALUES (?, ?)"
                    " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    (key, value),
                )
            conn.execute(
                "INSERT INTO state(key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (RECOVERED_KEY, held.episode),
            )
            return lost

    def stored_keys(self, keys: Iterable[tuple[str, str, int]]) -> set[tuple[str, str, int]]:
        """Those of the (meter, quantity, slot) keys that have a stored reading (a read:
        it works on a full disk)."""
        sql = (
            "SELECT 1 FROM readings r JOIN series s ON s.id = r.series_id"
            " JOIN meters m ON m.id = s.meter_id JOIN quantities q ON q.id = s.quantity_id"
            " WHERE m.name = ? AND q.name = ? AND r.slot = ?"
        )
        with self._transaction(write=False) as conn:
            return {k for k in keys if conn.execute(sql, k).fetchone() is not None}

    @staticmethod
    def _stored(conn: sqlite3.Connection, slot: int, series_id: int) -> bool:
        row = conn.execute(
            "SELECT 1 FROM readings WHERE slot = ? AND series_id = ?", (slot, series_id)
        ).fetchone()
        return row is not None

    def missing(
        self,
        meter: str | None = None,
        quantity: str | None = None,
        since: int | None = None,
        until: int | None = None,
    ) -> list[Missing]:
        where, params = self._series_filter(meter, quantity)
        if since is not None:
            where += " AND x.slot >= ?"
            params.append(since)
        if until is not None:
            where += " AND x.slot < ?"
            params.append(until)
        sql = (
            "SELECT m.name, q.name, x.slot, x.reason FROM missing x"
            " JOIN series s ON s.id = x.series_id"
            " JOIN meters m ON m.id = s.meter_id"
            " JOIN quantities q ON q.id = s.quantity_id"
            f" WHERE {where} ORDER BY x.slot, m.name, q.name"
        )
        with self._transaction(write=False) as conn:
            rows = conn.execute(sql, params).fetchall()
        return [Missing(str(a), str(b), int(c), str(d)) for a, b, c, d in rows]

    def read_success(
        self, day_start: int, day_end: int, *, by: Literal["day", "meter", "quantity"]
    ) -> list[ReadSuccess]:
        """Count stored readings and recorded missing slots with ``day_start <= slot < day_end``.

        Grouped by UTC day (key "YYYY-MM-DD"), by meter, or by quantity.
        """
        if by == "day":
            group, name = "x.slot / 86400", None
        elif by == "meter":
            group, name = "s.meter_id", "meters"
        elif by == "quantity":
            group, name = "s.quantity_id", "quantities"
        else:
            raise ValueError(f"by must be 'day', 'meter' or 'quantity', not {by!r}")
        join = "" if name is None else " JOIN series s ON s.id = x.series_id"
        counts: dict[int, list[int]] = {}
        with self._transaction(write=False) as conn:
            for column, table in ((0, "readings"), (1, "missing")):
                sql = (
                    f"SELECT {group}, count(*) FROM {table} x{join}"
                    f" WHERE x.slot >= ? AND x.slot < ? GROUP BY 1"
                )
                for key, n in conn.execute(sql, (day_start, day_end)):
                    counts.setdefault(int(key), [0, 0])[column] = int(n)
            names: dict[int, str] = {}
            if name is not None:
                names = {int(i): str(n) for i, n in conn.execute(f"SELECT id, name FROM {name}")}
        result = [
            ReadSuccess(
                key=_day_key(key) if name is None else names.get(key, str(key)),
                read=read,
                missing=missing,
            )
            for key, (read, missing) in counts.items()
        ]
        return sorted(result, key=lambda r: r.key)

    def held_slots(
        self, since: int, until: int, quantities: Sequence[str]
    ) -> list[tuple[str, int, bool]]:
        """(meter, slot, recovered) of every slot with ``since <= slot < until`` holding a
        reading of one of ``quantities``; ``recovered`` when all of them were backfilled
        from the meter's memory (none polled live). For the completeness figures."""
        if not quantities:
            return []
        marks = ",".join("?" * len(quantities))
        sql = (
            "SELECT m.name, x.slot, min(x.source = ?) FROM readings x"
            " JOIN series s ON s.id = x.series_id"
            " JOIN meters m ON m.id = s.meter_id"
            " JOIN quantities q ON q.id = s.quantity_id"
            f" WHERE x.slot >= ? AND x.slot < ? AND q.name IN ({marks})"
            " GROUP BY m.name, x.slot"
        )
        params = [SOURCES.index("backfill"), since, until, *quantities]
        with self._transaction(write=False) as conn:
            return [(str(m), int(slot), bool(r)) for m, slot, r in conn.execute(sql, params)]

    # --------------------------------------------------------------------- events

    def events(self, since: float | None = None, kind: str | None = None) -> list[StoredEvent]:
        where: list[str] = []
        params: list[object] = []
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        sql = f"{EVENT_SELECT} WHERE {' AND '.join(where) or '1'} ORDER BY id"
        with self._transaction(write=False) as conn:
            return [stored_event(row) for row in conn.execute(sql, params)]


def _day_key(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * _DAY_S))
