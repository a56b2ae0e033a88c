"""The receiver's database: every reading exactly once, every batch acknowledged once.

Idempotence comes from unique keys, not from memory: (concentrator, seq) for batches and
(meter, quantity, slot) for readings. A batch is stored in one transaction; the ack is
sent only after that transaction commits, so an ack always means "in the database". A
redelivered batch finds its (concentrator, seq) row and is acknowledged again as a
duplicate without touching the readings. Nothing here lives in process memory that a
second receiver would need: two receivers on one shared subscription can share one
PostgreSQL database.

Backends: SQLite (default, through sqlite-utils for the schema) and PostgreSQL
(psycopg 3, COPY into a temporary table, then one INSERT … ON CONFLICT DO NOTHING).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

import sqlite_utils

from cloud_receiver.archive import MeterRecord
from contract.records import Event, Reading

SQLITE_SETUP_TIMEOUT_S = 30.0
REPLAY_WINDOW = 100_000  # batches older than max_seq - window that we never saw: refused


class IngestResult(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    REPLAY = "replay"  # older than the window and unknown: refused


@dataclass(frozen=True)
class StoredRow:
    meter: str
    quantity: str
    slot: int
    value: str
    unit: str
    read_at: float
    source: str
    concentrator: str
    seq: int


@dataclass(frozen=True)
class ConcentratorInfo:
    concentrator: str
    last_seen: float
    batches: int
    readings: int
    max_seq: int
    missing_seqs: int  # sequence numbers below max_seq never received (gaps)


@dataclass(frozen=True)
class Quarantined:
    id: int
    received_at: float
    topic: str
    concentrator: str | None
    seq: int | None
    reason: str
    detail: str
    size: int


class Tx(Protocol):
    """A statement runner inside one transaction; ``for_update`` is the row-lock clause
    a SELECT needs on this backend (PostgreSQL) or "" (SQLite locks the whole file)."""

    for_update: str

    def rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...


@dataclass
class _SqliteTx:
    conn: sqlite3.Connection
    for_update: str = ""

    def rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, args).fetchall()


@dataclass
class _PgTx:
    cur: Any
    for_update: str = " FOR UPDATE"

    def rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        self.cur.execute(sql.replace("?", "%s"), args)
        return list(self.cur.fetchall()) if self.cur.description else []


@dataclass(frozen=True)
class CommandRecord:
    """A signed downlink command and what became of it."""

    id: str
    concentrator: str
    counter: int
    action: str
    meters: list[str]
    params: dict[str, Any]
    not_before: float
    not_after: float
    issued_at: float
    issued_by: str
    status: str  # issued, published, done, failed, refused, expired
    result: dict[str, Any] | None
    updated_at: float
    blob: bytes


class Storage(Protocol):
    def ingest(
        self,
        concentrator: str,
        seq: int,
        key_id: int,
        readings: Sequence[Reading],
        events: Sequence[Event],
        received_at: float,
    ) -> tuple[IngestResult, int]: ...

    def quarantine(
        self,
        *,
        topic: str,
        concentrator: str | None,
        seq: int | None,
        reason: str,
        detail: str,
        payload: bytes,
        received_at: float,
    ) -> None: ...

    def readings(
        self, meter: str | None = None, since: int | None = None, until: int | None = None
    ) -> list[StoredRow]: ...

    def concentrators(self) -> list[ConcentratorInfo]: ...

    def quarantined(self, limit: int = 100) -> list[Quarantined]: ...

    def events(self, concentrator: str | None = None) -> list[tuple[str, Event]]: ...

    # The meter archive and the analytics queries (issue 10).
    def archive(self) -> list[MeterRecord]: ...

    def replace_archive(self, records: Sequence[MeterRecord]) -> None: ...

    def series(
        self, quantities: Sequence[str], meters: Sequence[str], since: int, until: int
    ) -> list[tuple[str, str, int, str]]: ...

    def meter_events(self, meters: Sequence[str], since: float, until: float) -> list[Event]: ...

    def next_command_counter(self, concentrator: str) -> int: ...

    def add_command(self, record: CommandRecord) -> None: ...

    def claim_command(self, command_id: str, at: float) -> bool: ...

    def set_command_status(
        self, command_id: str, status: str, result: dict[str, Any] | None, at: float
    ) -> bool: ...

    def commands(
        self,
        concentrator: str | None = None,
        status: str | None = None,
        command_id: str | None = None,
        limit: int = 100,
    ) -> list[CommandRecord]: ...

    def command_log(self, command_id: str) -> list[tuple[float, str, dict[str, Any]]]: ...

    def transaction(self) -> contextlib.AbstractContextManager[Tx]: ...

    def close(self) -> None: ...


def open_storage(url: str) -> Storage:
    """``postgresql://…`` → PostgreSQL; ``sqlite:///path`` or a plain path → SQLite."""
    if url.startswith(("postgresql://", "postgres://")):
        return PostgresStorage(url)
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    if not path:
        raise ValueError(f"database URL {url!r}: expected sqlite:///PATH or postgresql://…")
    return SqliteStorage(Path(path))


LOCAL_POSTGRES_URLS = (
    # The usual developer/CI set-up: trust authentication on loopback.
    "postgresql://postgres@127.0.0.1:5432/test",
    # A fresh Debian after `make setup`: peer authentication on the Unix socket, as a
    # database role named after the current user.
    "postgresql:///test?host=/var/run/postgresql",
)


def local_postgres_url(env: str = "MF_TEST_POSTGRES_URL") -> str:
    """The PostgreSQL that tests and benchmarks use: ``$env``, else the first local one
    that accepts a connection (``LOCAL_POSTGRES_URLS``), else a clear error."""
    import os

    import psycopg

    if os.environ.get(env):
        return os.environ[env]
    errors = []
    for url in LOCAL_POSTGRES_URLS:
        try:
            psycopg.connect(url, connect_timeout=5).close()
            return url
        except psycopg.Error as exc:
            errors.append(f"{url}: {str(exc).strip()}")
    raise RuntimeError(
        f"no PostgreSQL reachable (run `make setup`, or set {env}): " + "; ".join(errors)
    )


def _event_row(concentrator: str, seq: int, e: Event) -> tuple[Any, ...]:
    return (concentrator, seq, e.kind, e.severity, e.meter, json.dumps(e.detail), e.at)


class _SqlStorage:
    """The queries both backends share. SQL is written with ``?`` placeholders; each
    backend says how to run a statement (``_rows``/``_execute``) and how its driver
    returns an event's JSON ``detail``."""

    def _rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _execute(self, sql: str, args: Sequence[object] = ()) -> None:
        raise NotImplementedError

    @staticmethod
    def _detail(value: Any) -> dict[str, object]:
        return json.loads(value) if isinstance(value, str) else dict(value)

    def quarantine(
        self,
        *,
        topic: str,
        concentrator: str | None,
        seq: int | None,
        reason: str,
        detail: str,
        payload: bytes,
        received_at: float,
    ) -> None:
        self._execute(
            "INSERT INTO quarantine (received_at, topic, concentrator, seq, reason, detail,"
            " payload) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (received_at, topic, concentrator, seq, reason, detail, payload),
        )

    def readings(
        self, meter: str | None = None, since: int | None = None, until: int | None = None
    ) -> list[StoredRow]:
        sql, args = _filter(meter, since, until)
        rows = self._rows(
            "SELECT meter, quantity, slot, value, unit, read_at, source, concentrator, seq"
            f" FROM readings{sql} ORDER BY meter, quantity, slot",
            args,
        )
        return [StoredRow(*r) for r in rows]

    def concentrators(self) -> list[ConcentratorInfo]:
        rows = self._rows(
            "SELECT c.concentrator, c.last_seen, count(b.seq), coalesce(sum(b.readings), 0),"
            " c.max_seq FROM concentrators c LEFT JOIN batches b USING (concentrator)"
            " GROUP BY c.concentrator, c.last_seen, c.max_seq ORDER BY c.concentrator"
        )
        return [
            ConcentratorInfo(
                r[0], r[1], int(r[2]), int(r[3]), int(r[4]), max(0, int(r[4]) - int(r[2]))
            )
            for r in rows
        ]

    def quarantined(self, limit: int = 100) -> list[Quarantined]:
        rows = self._rows(
            "SELECT id, received_at, topic, concentrator, seq, reason, detail,"
            " length(payload) FROM quarantine ORDER BY id DESC LIMIT ?",
            (limit,),
        )
        return [Quarantined(*r) for r in rows]

    def events(self, concentrator: str | None = None) -> list[tuple[str, Event]]:
        sql = " WHERE concentrator = ?" if concentrator else ""
        rows = self._rows(
            f"SELECT concentrator, kind, severity, meter, detail, at FROM events{sql} ORDER BY id",
            (concentrator,) if concentrator else (),
        )
        return [(r[0], Event(r[1], r[2], r[3], self._detail(r[4]), r[5])) for r in rows]

    # ---------------------------------------------------------- archive and analytics
    def _write(self, steps: Sequence[tuple[str, Sequence[Sequence[object]]]]) -> None:
        """Run each (statement, rows) with executemany, all in one transaction."""
        raise NotImplementedError

    def archive(self) -> list[MeterRecord]:
        rows = self._rows(f"SELECT {_ARCHIVE_SELECT} FROM meters ORDER BY area, role DESC, meter")
        return [MeterRecord(r[0], r[1], r[2], r[3], r[4], Decimal(r[5])) for r in rows]

    def replace_archive(self, records: Sequence[MeterRecord]) -> None:
        self._write(
            [
                ("DELETE FROM meters", [()]),
                (
                    f"INSERT INTO meters ({_ARCHIVE_SELECT}) VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (r.meter, r.area, r.role, r.account, r.group, str(r.multiplier))
                        for r in records
                    ],
                ),
            ]
        )

    def series(
        self, quantities: Sequence[str], meters: Sequence[str], since: int, until: int
    ) -> list[tuple[str, str, int, str]]:
        """(meter, quantity, slot, value) of these meters and quantities with
        ``since <= slot < until``, ordered by meter, quantity, slot."""
        if not quantities or not meters:
            return []
        rows: list[tuple[str, str, int, str]] = []
        q_marks = ", ".join("?" * len(quantities))
        for i in range(0, len(meters), _IN_CHUNK):
            chunk = list(meters[i : i + _IN_CHUNK])
            rows += self._rows(
                "SELECT meter, quantity, slot, value FROM readings"
                f" WHERE meter IN ({', '.join('?' * len(chunk))}) AND quantity IN ({q_marks})"
                " AND slot >= ? AND slot < ?",
                [*chunk, *quantities, since, until],
            )
        rows.sort()
        return [(r[0], r[1], int(r[2]), r[3]) for r in rows]

    def meter_events(self, meters: Sequence[str], since: float, until: float) -> list[Event]:
        """Events about these meters with ``since <= at < until``, oldest first."""
        out: list[tuple[float, int, Event]] = []
        for i in range(0, len(meters), _IN_CHUNK):
            chunk = list(meters[i : i + _IN_CHUNK])
            rows = self._rows(
                "SELECT id, kind, severity, meter, detail, at FROM events"
                f" WHERE meter IN ({', '.join('?' * len(chunk))}) AND at >= ? AND at < ?",
                [*chunk, since, until],
            )
            out += [(r[5], r[0], Event(r[1], r[2], r[3], self._detail(r[4]), r[5])) for r in rows]
        return [e for _, _, e in sorted(out, key=lambda x: (x[0], x[1]))]

    # ---------------------------------------------------------- transactions
    def transaction(self) -> contextlib.AbstractContextManager[Tx]:
        """One read-modify-write transaction (prepayment charges, top-ups)."""
        raise NotImplementedError

    # ---------------------------------------------------------- downlink commands
    def next_command_counter(self, concentrator: str) -> int:
        """A counter above every one issued to this concentrator (atomic upsert, so two
        issuers never sign the same number)."""
        rows = self._rows(
            "INSERT INTO command_counters (concentrator, counter) VALUES (?, 1)"
            " ON CONFLICT (concentrator) DO UPDATE SET counter = command_counters.counter + 1"
            " RETURNING counter",
            (concentrator,),
        )
        return int(rows[0][0])

    def add_command(self, record: CommandRecord) -> None:
        r = record
        self._write(
            [
                (
                    "INSERT INTO commands (id, concentrator, counter, action, meters, params,"
                    " not_before, not_after, issued_at, issued_by, status, result, updated_at,"
                    " blob) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            r.id,
                            r.concentrator,
                            r.counter,
                            r.action,
                            json.dumps(r.meters),
                            json.dumps(r.params),
                            r.not_before,
                            r.not_after,
                            r.issued_at,
                            r.issued_by,
                            r.status,
                            None if r.result is None else json.dumps(r.result),
                            r.updated_at,
                            r.blob,
                        )
                    ],
                ),
                (
                    "INSERT INTO command_log (command_id, at, status, detail) VALUES (?, ?, ?, ?)",
                    [(r.id, r.issued_at, r.status, json.dumps({"by": r.issued_by}))],
                ),
            ]
        )

    def claim_command(self, command_id: str, at: float) -> bool:
        """Take an issued command for publishing; False when another receiver has."""
        rows = self._rows(
            "UPDATE commands SET status = 'published', updated_at = ?"
            " WHERE id = ? AND status = 'issued' RETURNING id",
            (at, command_id),
        )
        if rows:
            self._log_command(command_id, at, "published", {})
        return bool(rows)

    def set_command_status(
        self, command_id: str, status: str, result: dict[str, Any] | None, at: float
    ) -> bool:
        """Record an outcome. A final outcome (done, failed, refused) is kept: a later
        "refused: replayed" for a redelivered copy of a done command changes nothing."""
        rows = self._rows(
            "UPDATE commands SET status = ?, result = ?, updated_at = ?"
            " WHERE id = ? AND status NOT IN ('done', 'failed', 'refused', 'expired',"
            " 'unanswered') RETURNING id",
            (status, None if result is None else json.dumps(result), at, command_id),
        )
        self._log_command(command_id, at, status if rows else f"{status} (ignored)", result or {})
        return bool(rows)

    def _log_command(self, command_id: str, at: float, status: str, detail: dict[str, Any]) -> None:
        self._execute(
            "INSERT INTO command_log (command_id, at, status, detail) VALUES (?, ?, ?, ?)",
            (command_id, at, status, json.dumps(detail)),
        )

    def commands(
        self,
        concentrator: str | None = None,
        status: str | None = None,
        command_id: str | None = None,
        limit: int = 100,
    ) -> list[CommandRecord]:
        clauses, args = [], []
        for column, value in (
            ("concentrator", concentrator),
            ("status", status),
            ("id", command_id),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                args.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._rows(
            "SELECT id, concentrator, counter, action, meters, params, not_before, not_after,"
            f" issued_at, issued_by, status, result, updated_at, blob FROM commands{where}"
            " ORDER BY issued_at, concentrator, counter LIMIT ?",
            [*args, limit],
        )
        return [
            CommandRecord(
                r[0],
                r[1],
                int(r[2]),
                r[3],
                json.loads(r[4]),
                json.loads(r[5]),
                float(r[6]),
                float(r[7]),
                float(r[8]),
                r[9],
                r[10],
                None if r[11] is None else json.loads(r[11]),
                float(r[12]),
                bytes(r[13]),
            )
            for r in rows
        ]

    def command_log(self, command_id: str) -> list[tuple[float, str, dict[str, Any]]]:
        rows = self._rows(
            "SELECT at, status, detail FROM command_log WHERE command_id = ? ORDER BY id",
            (command_id,),
        )
        return [(float(r[0]), r[1], json.loads(r[2])) for r in rows]


# Downlink commands (issue 7): the same DDL for both backends but for the id column and
# the blob type. `command_log` is the receiver's audit log of every command.
_COMMANDS_SCHEMA = """
CREATE TABLE IF NOT EXISTS command_counters (concentrator TEXT PRIMARY KEY,
  counter BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS commands (id TEXT PRIMARY KEY, concentrator TEXT NOT NULL,
  counter BIGINT NOT NULL, action TEXT NOT NULL, meters TEXT NOT NULL, params TEXT NOT NULL,
  not_before DOUBLE PRECISION NOT NULL, not_after DOUBLE PRECISION NOT NULL,
  issued_at DOUBLE PRECISION NOT NULL, issued_by TEXT NOT NULL, status TEXT NOT NULL,
  result TEXT, updated_at DOUBLE PRECISION NOT NULL, blob {blob} NOT NULL,
  UNIQUE (concentrator, counter));
CREATE INDEX IF NOT EXISTS commands_by_status ON commands (status, concentrator, counter);
CREATE TABLE IF NOT EXISTS command_log (id {serial}, command_id TEXT NOT NULL,
  at DOUBLE PRECISION NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS command_log_by_command ON command_log (command_id, id);
CREATE TABLE IF NOT EXISTS software_seen (concentrator TEXT PRIMARY KEY,
  software TEXT NOT NULL, wire_version INTEGER NOT NULL, seen_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS releases (version TEXT PRIMARY KEY, manifest {blob} NOT NULL,
  signature {blob} NOT NULL, payload {blob} NOT NULL, added_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS rollouts (id {serial}, version TEXT NOT NULL, stages TEXT NOT NULL,
  health_window_s DOUBLE PRECISION NOT NULL, stage INTEGER NOT NULL, state TEXT NOT NULL,
  reason TEXT, started_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS rollout_targets (rollout BIGINT NOT NULL, concentrator TEXT NOT NULL,
  stage INTEGER NOT NULL, state TEXT NOT NULL, reason TEXT, command_id TEXT,
  detail TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (rollout, concentrator));
CREATE TABLE IF NOT EXISTS accounts (account TEXT PRIMARY KEY, meter TEXT NOT NULL UNIQUE,
  concentrator TEXT NOT NULL, multiplier TEXT NOT NULL, tariff TEXT NOT NULL,
  balance_cents BIGINT NOT NULL, grace_cents BIGINT NOT NULL, low_cents BIGINT NOT NULL,
  billed_slot BIGINT, billed_kwh TEXT, billed_amount TEXT NOT NULL, state TEXT NOT NULL,
  low_warned INTEGER NOT NULL, command_id TEXT,
  command_at DOUBLE PRECISION, created_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS ledger (id {serial}, account TEXT NOT NULL,
  at DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, ref TEXT NOT NULL,
  amount_cents BIGINT NOT NULL, balance_cents BIGINT NOT NULL, detail TEXT NOT NULL,
  UNIQUE (account, ref));
CREATE TABLE IF NOT EXISTS dr_enrolment (meter TEXT PRIMARY KEY, "group" TEXT NOT NULL,
  concentrator TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dr_events (id TEXT PRIMARY KEY, "group" TEXT NOT NULL,
  start_at DOUBLE PRECISION NOT NULL, end_at DOUBLE PRECISION NOT NULL,
  limit_kw TEXT NOT NULL, detail TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL);
"""


# The archive table (issue 10), the same DDL for both backends. "group" is quoted: it is
# an SQL keyword. The multiplier is exact decimal text, like reading values.
_ARCHIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS meters (meter TEXT PRIMARY KEY, area TEXT NOT NULL,
  role TEXT NOT NULL, account TEXT NOT NULL, "group" TEXT NOT NULL, multiplier TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS meters_by_area ON meters (area);
"""
_ARCHIVE_SELECT = 'meter, area, role, account, "group", multiplier'
_IN_CHUNK = 500  # meters per IN (...) list: under SQLite's 999 host parameters


class SqliteStorage(_SqlStorage):
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(
            path, isolation_level=None, check_same_thread=False, timeout=30
        )
        self._lock = threading.Lock()
        # Another process (a query, a second receiver) may hold the file while it is
        # being set up; switching to WAL then fails at once instead of waiting.
        deadline = time.monotonic() + SQLITE_SETUP_TIMEOUT_S
        while True:
            try:
                self._setup()
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _setup(self) -> None:
        if self._conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        db = sqlite_utils.Database(self._conn)
        # Each statement is idempotent: a set-up interrupted by a lock is simply retried.
        db.table("batches").create(
            {
                "concentrator": str,
                "seq": int,
                "key_id": int,
                "received_at": float,
                "readings": int,
                "events": int,
            },
            pk=("concentrator", "seq"),
            if_not_exists=True,
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS readings (meter TEXT NOT NULL, quantity TEXT NOT NULL,"
            " slot INTEGER NOT NULL, value TEXT NOT NULL, unit TEXT NOT NULL,"
            " read_at REAL NOT NULL, source TEXT NOT NULL, concentrator TEXT NOT NULL,"
            " seq INTEGER NOT NULL, PRIMARY KEY (slot, meter, quantity)) WITHOUT ROWID"
        )
        db.table("events").create(
            {
                "id": int,
                "concentrator": str,
                "seq": int,
                "kind": str,
                "severity": str,
                "meter": str,
                "detail": str,
                "at": float,
            },
            pk="id",
            if_not_exists=True,
        )
        db.table("quarantine").create(
            {
                "id": int,
                "received_at": float,
                "topic": str,
                "concentrator": str,
                "seq": int,
                "reason": str,
                "detail": str,
                "payload": bytes,
            },
            pk="id",
            if_not_exists=True,
        )
        db.table("concentrators").create(
            {"concentrator": str, "last_seen": float, "max_seq": int},
            pk="concentrator",
            if_not_exists=True,
        )
        self._conn.executescript(_ARCHIVE_SCHEMA)  # also added to databases made before it
        self._conn.executescript(_COMMANDS_SCHEMA.format(blob="BLOB", serial="INTEGER PRIMARY KEY"))

    def ingest(
        self,
        concentrator: str,
        seq: int,
        key_id: int,
        readings: Sequence[Reading],
        events: Sequence[Event],
        received_at: float,
    ) -> tuple[IngestResult, int]:
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                if c.execute(
                    "SELECT 1 FROM batches WHERE concentrator = ? AND seq = ?", (concentrator, seq)
                ).fetchone():
                    c.execute("ROLLBACK")
                    return IngestResult.DUPLICATE, 0
                row = c.execute(
                    "SELECT max_seq FROM concentrators WHERE concentrator = ?", (concentrator,)
                ).fetchone()
                if row is not None and seq <= int(row[0]) - REPLAY_WINDOW:
                    c.execute("ROLLBACK")
                    return IngestResult.REPLAY, 0
                c.execute(
                    "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?)",
                    (concentrator, seq, key_id, received_at, len(readings), len(events)),
                )
                before = c.total_changes
                c.executemany(
                    "INSERT OR IGNORE INTO readings VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            r.meter,
                            r.quantity,
                            r.slot,
                            r.value,
                            r.unit,
                            r.read_at,
                            r.source,
                            concentrator,
                            seq,
                        )
                        for r in readings
                    ],
                )
                new = c.total_changes - before
                c.executemany(
                    "INSERT INTO events (concentrator, seq, kind, severity, meter, detail, at)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [_event_row(concentrator, seq, e) for e in events],
                )
                c.execute(
                    "INSERT INTO concentrators VALUES (?, ?, ?) ON CONFLICT (concentrator) DO"
                    " UPDATE SET last_seen = max(last_seen, excluded.last_seen),"
                    " max_seq = max(max_seq, excluded.max_seq)",
                    (concentrator, received_at, seq),
                )
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise
        return IngestResult.STORED, new

    def _rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            return self._conn.execute(sql, args).fetchall()

    def _execute(self, sql: str, args: Sequence[object] = ()) -> None:
        with self._lock:
            self._conn.execute(sql, args)

    def _write(self, steps: Sequence[tuple[str, Sequence[Sequence[object]]]]) -> None:
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                for sql, rows in steps:
                    c.executemany(sql, rows)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock:
            c = self._conn
            c.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(c)
                c.execute("COMMIT")
            except BaseException:
                c.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _filter(meter: str | None, since: int | None, until: int | None) -> tuple[str, list[object]]:
    where: list[str] = []
    args: list[object] = []
    if meter is not None:
        where.append("meter = ?")
        args.append(meter)
    if since is not None:
        where.append("slot >= ?")
        args.append(since)
    if until is not None:
        where.append("slot < ?")
        args.append(until)
    return (" WHERE " + " AND ".join(where) if where else ""), args


_PG_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (concentrator TEXT NOT NULL, seq BIGINT NOT NULL,
  key_id BIGINT NOT NULL, received_at DOUBLE PRECISION NOT NULL, readings INTEGER NOT NULL,
  events INTEGER NOT NULL, PRIMARY KEY (concentrator, seq));
CREATE TABLE IF NOT EXISTS readings (meter TEXT NOT NULL, quantity TEXT NOT NULL,
  slot BIGINT NOT NULL, value TEXT NOT NULL, unit TEXT NOT NULL,
  read_at DOUBLE PRECISION NOT NULL, source TEXT NOT NULL, concentrator TEXT NOT NULL,
  seq BIGINT NOT NULL, PRIMARY KEY (slot, meter, quantity));
CREATE INDEX IF NOT EXISTS readings_by_meter ON readings (meter, slot);
CREATE TABLE IF NOT EXISTS events (id BIGSERIAL PRIMARY KEY, concentrator TEXT NOT NULL,
  seq BIGINT NOT NULL, kind TEXT NOT NULL, severity TEXT NOT NULL, meter TEXT,
  detail JSONB NOT NULL, at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (id BIGSERIAL PRIMARY KEY,
  received_at DOUBLE PRECISION NOT NULL, topic TEXT NOT NULL, concentrator TEXT, seq BIGINT,
  reason TEXT NOT NULL, detail TEXT NOT NULL, payload BYTEA NOT NULL);
CREATE TABLE IF NOT EXISTS concentrators (concentrator TEXT PRIMARY KEY,
  last_seen DOUBLE PRECISION NOT NULL, max_seq BIGINT NOT NULL);
"""
_PG_SCHEMA += _ARCHIVE_SCHEMA
_PG_SCHEMA += _COMMANDS_SCHEMA.format(blob="BYTEA", serial="BIGSERIAL PRIMARY KEY")


class PostgresStorage(_SqlStorage):
    def __init__(self, url: str) -> None:
        import psycopg

        self._psycopg = psycopg
        self._conn = psycopg.connect(url, autocommit=False)
        self._lock = threading.Lock()
        with self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_xact_lock(4242)")  # two receivers start at once
            cur.execute(_PG_SCHEMA)
        self._conn.commit()

    def ingest(
        self,
        concentrator: str,
        seq: int,
        key_id: int,
        readings: Sequence[Reading],
        events: Sequence[Event],
        received_at: float,
    ) -> tuple[IngestResult, int]:
        try:
            return self._ingest(concentrator, seq, key_id, readings, events, received_at)
        except _Replay:
            return IngestResult.REPLAY, 0

    def _ingest(
        self,
        concentrator: str,
        seq: int,
        key_id: int,
        readings: Sequence[Reading],
        events: Sequence[Event],
        received_at: float,
    ) -> tuple[IngestResult, int]:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute(
                "INSERT INTO batches VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT DO NOTHING RETURNING seq",
                (concentrator, seq, key_id, received_at, len(readings), len(events)),
            )
            if cur.fetchone() is None:
                return IngestResult.DUPLICATE, 0  # the other receiver (or we) stored it
            cur.execute(
                "SELECT max_seq FROM concentrators WHERE concentrator = %s", (concentrator,)
            )
            row = cur.fetchone()
            if row is not None and seq <= int(row[0]) - REPLAY_WINDOW:
                raise _Replay
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS incoming (LIKE readings) ON COMMIT DELETE ROWS"
            )
            with cur.copy("COPY incoming FROM STDIN") as copy:
                for r in readings:
                    copy.write_row(
                        (
                            r.meter,
                            r.quantity,
                            r.slot,
                            r.value,
                            r.unit,
                            r.read_at,
                            r.source,
                            concentrator,
                            seq,
                        )
                    )
            cur.execute("INSERT INTO readings SELECT * FROM incoming ON CONFLICT DO NOTHING")
            new = cur.rowcount
            if events:
                cur.executemany(
                    "INSERT INTO events (concentrator, seq, kind, severity, meter, detail, at)"
                    " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                    [_event_row(concentrator, seq, e) for e in events],
                )
            cur.execute(
                "INSERT INTO concentrators VALUES (%s, %s, %s) ON CONFLICT (concentrator) DO"
                " UPDATE SET last_seen = greatest(concentrators.last_seen, excluded.last_seen),"
                " max_seq = greatest(concentrators.max_seq, excluded.max_seq)",
                (concentrator, received_at, seq),
            )
        return IngestResult.STORED, new

    def _rows(self, sql: str, args: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), args)
            return cur.fetchall()

    def _execute(self, sql: str, args: Sequence[object] = ()) -> None:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            cur.execute(sql.replace("?", "%s"), args)

    def _write(self, steps: Sequence[tuple[str, Sequence[Sequence[object]]]]) -> None:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            for sql, rows in steps:
                cur.executemany(sql.replace("?", "%s"), rows)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Tx]:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            yield _PgTx(cur)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class _Replay(Exception):
    """Raised inside the PostgreSQL transaction to roll the batch row back."""
