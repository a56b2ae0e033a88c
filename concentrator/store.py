"""Store-and-forward for the concentrator: readings, events and the outbox in one SQLite file.

A reading exists once `Store.add_readings` has returned. From then on it is either
delivered (the receiver acked its batch) or explicitly recorded as lost by a ``loss``
event (quota eviction). It is never silently gone. Everything that changes more than
one row runs in one transaction, so a kill -9 at any point leaves the old state or the
new one. WAL mode makes that cheap, and ``synchronous=FULL`` also covers power loss.

Tables (schema version 1)::

    meters / quantities / units   name -> small integer id (dictionaries)
    series      (meter_id, quantity_id) -> id; one 2-byte id per reading instead of three
    readings    id | series_id | slot | value | unit_id | read_lag_ms | source
                   | uplink_seq (batch id, NULL = in the outbox) | delivered (0/1)
                UNIQUE (slot, series_id)   <- a re-read of a slot never makes a second row
    events      id | at | kind | severity | meter | detail (JSON) | uplink_seq | delivered
    batches     id | taken_at | delivered_at       (one row per batch, not per reading)
    missing     (slot, series_id) -> reason          slots we tried and failed to read
    counters    name -> last value handed out        (batch ids, AES-GCM nonces)

Size: about 51 bytes per reading on disk (table + unique index, measured with 1,000
meters x 4 quantities). Three choices keep it there:

- the value is one packed integer, ``mantissa * 16 + scale``, with no scale column.
  A decimal string the packing cannot restore exactly (for example "007" or "-0.0") is
  stored as the original text instead;
- ``read_at`` is kept as milliseconds after the slot start, which takes 2-3 bytes where
  a REAL takes 8;
- delivery is a 0/1 flag per row plus one ``batches`` row per batch. That avoids a full
  index on ``uplink_seq``, which would cost about 12 bytes for every delivered reading.
  The two outbox indexes are partial, so they only hold rows that are not yet taken or
  are still in flight.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import re
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, cast

from contract.records import Event, Reading

__all__ = [
    "Backlog",
    "Batch",
    "Missing",
    "ReadSuccess",
    "Stats",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "StoreFullError",
    "StoredEvent",
    "StoredReading",
]

log = logging.getLogger(__name__)

Synchronous = Literal["FULL", "NORMAL"]

# Stored as a small integer: 0 and 1 cost no body bytes in SQLite's record format.
_SOURCES: tuple[str, ...] = ("poll", "backfill", "ondemand")

_BATCH_COUNTER = "batch"
_WAL_LIMIT_BYTES = 4 * 1024 * 1024  # about SQLite's default autocheckpoint of 1,000 pages
_DAY_S = 86_400

# Live data is evicted down to this fraction of the quota, so that a store that
# reaches its quota does not evict again on every insert.
_QUOTA_LOW_WATER = 0.8
# Upper and lower bounds on the number of rows deleted by one eviction transaction.
# Each transaction also writes its own loss event. Small chunks keep the WAL small
# on a nearly full disk; large chunks keep down the number of loss events.
_EVICT_CHUNK_MIN = 500
_EVICT_CHUNK_MAX = 50_000

_SCALE_BITS = 4
_SCALE_MASK = (1 << _SCALE_BITS) - 1
_MANTISSA_LIMIT = 1 << (63 - _SCALE_BITS - 1)
# The spellings `_unpack_value` reproduces exactly. Other decimals are stored verbatim.
_CANONICAL_DECIMAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")

_CORRUPT_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_FULL_CODES = frozenset({sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR})


# --------------------------------------------------------------------------- errors


class StoreError(Exception):
    """Root of every error raised by the store."""


class StoreFullError(StoreError):
    """The disk is full or failed (SQLITE_FULL / SQLITE_IOERR).

    The failing transaction was rolled back and data committed before it is intact.
    Free some space (or lower ``quota_bytes``), then retry. Re-adding the same
    readings is harmless.
    """


class StoreCorruptError(StoreError):
    """The database file is damaged.

    Close the store and open it again. ``Store.open`` moves the damaged file aside and
    records a critical event.
    """


# -------------------------------------------------------------------------- records


@dataclass(frozen=True, slots=True)
class StoredReading:
    id: int
    reading: Reading
    batch_id: int | None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    event: Event
    batch_id: int | None


@dataclass(frozen=True, slots=True)
class Missing:
    meter: str
    quantity: str
    slot: int
    reason: str


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows taken out of the outbox together. Events come first, then readings oldest first."""

    batch_id: int
    readings: tuple[StoredReading, ...]
    events: tuple[StoredEvent, ...]


@dataclass(frozen=True, slots=True)
class Backlog:
    """Undelivered rows: both those still in the outbox and those in unacked batches."""

    readings: int
    events: int
    oldest_slot: int | None
    oldest_read_at: float | None


@dataclass(frozen=True, slots=True)
class ReadSuccess:
    key: str
    read: int
    missing: int

    @property
    def rate(self) -> float | None:
        total = self.read + self.missing
        return self.read / total if total else None


@dataclass(frozen=True, slots=True)
class Stats:
    readings: int
    events: int
    missing: int
    batches: int
    page_size: int
    page_count: int
    freelist_count: int
    db_bytes: int
    wal_bytes: int
    bytes_per_reading: float | None

    @property
    def file_bytes(self) -> int:
        return self.db_bytes + self.wal_bytes


# --------------------------------------------------------------------- value codec


def _pack_value(value: str) -> int | str:
    """Pack the decimal string into one integer, or keep it as text if packing is not exact.

    The low 4 bits hold the number of fraction digits, so "0.50" stays "0.50" and
    "-1.234" stays "-1.234". "-0" and "007" would not survive the round trip, so
    they, and anything longer than 59 bits, are stored as the text itself.
    """
    if _CANONICAL_DECIMAL.fullmatch(value):
        negative = value.startswith("-")
        whole, _, fraction = value.lstrip("-").partition(".")
        mantissa = int(whole + fraction)
        scale = len(fraction)
        if scale <= _SCALE_MASK and mantissa < _MANTISSA_LIMIT and (mantissa or not negative):
            return ((-mantissa if negative else mantissa) << _SCALE_BITS) | scale
    if _DECIMAL.fullmatch(value):
        return value
    raise ValueError(f"value {value!r} is not a decimal number")


def _unpack_value(stored: object) -> str:
    if isinstance(stored, str):
        return stored
    if not isinstance(stored, int):
        raise StoreCorruptError(f"reading value {stored!r} is neither packed integer nor text")
    scale = stored & _SCALE_MASK
    mantissa = stored >> _SCALE_BITS  # arithmetic shift: floor, correct for negatives
    digits = str(abs(mantissa))
    if scale:
        digits = digits.rjust(scale + 1, "0")
        digits = f"{digits[:-scale]}.{digits[-scale:]}"
    return f"-{digits}" if mantissa < 0 else digits


# ----------------------------------------------------------------------- migrations


def _schema_v1(conn: sqlite3.Connection) -> None:
    for statement in (
        "CREATE TABLE meters (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
        "CREATE TABLE quantities (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
        "CREATE TABLE units (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)",
        """CREATE TABLE series (
               id INTEGER PRIMARY KEY,
               meter_id INTEGER NOT NULL REFERENCES meters(id),
               quantity_id INTEGER NOT NULL REFERENCES quantities(id),
               UNIQUE (meter_id, quantity_id))""",
        """CREATE TABLE counters (
               name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID""",
        """CREATE TABLE batches (
               id INTEGER PRIMARY KEY, taken_at REAL NOT NULL, delivered_at REAL)""",
        # `value` has no declared type on purpose: with no type affinity, SQLite keeps
        # the packed integer as an integer and the fallback text as text.
        # `uplink_seq` has no foreign key: checking one when a batch row is deleted
        # would need an index on every delivered reading (see module docstring).
        """CREATE TABLE readings (
               id INTEGER PRIMARY KEY,
               series_id INTEGER NOT NULL REFERENCES series(id),
               slot INTEGER NOT NULL,
               value NOT NULL,
               unit_id INTEGER NOT NULL REFERENCES units(id),
               read_lag_ms INTEGER NOT NULL,
               source INTEGER NOT NULL,
               uplink_seq INTEGER,
               delivered INTEGER NOT NULL DEFAULT 0)""",
        # Slot first: the poller appends new slots, so this index stays densely packed.
        # It also serves slot-range queries and the eviction of the oldest slots.
        "CREATE UNIQUE INDEX readings_key ON readings(slot, series_id)",
        # Outbox order is (slot, id). An index on (slot) ends with the rowid, so one
        # index gives that order.
        "CREATE INDEX readings_outbox ON readings(slot) WHERE uplink_seq IS NULL",
        """CREATE INDEX readings_in_flight ON readings(uplink_seq)
               WHERE uplink_seq IS NOT NULL AND delivered = 0""",
        """CREATE TABLE events (
               id INTEGER PRIMARY KEY,
               at REAL NOT NULL,
               kind TEXT NOT NULL,
               severity TEXT NOT NULL,
               meter TEXT,
               detail TEXT NOT NULL,
               uplink_seq INTEGER,
               delivered INTEGER NOT NULL DEFAULT 0)""",
        "CREATE INDEX events_outbox ON events(id) WHERE uplink_seq IS NULL",
        """CREATE INDEX events_in_flight ON events(uplink_seq)
               WHERE uplink_seq IS NOT NULL AND delivered = 0""",
        """CREATE TABLE missing (
               slot INTEGER NOT NULL,
               series_id INTEGER NOT NULL REFERENCES series(id),
               reason TEXT NOT NULL,
               PRIMARY KEY (slot, series_id)) WITHOUT ROWID""",
    ):
        conn.execute(statement)


# Migration i upgrades user_version i to i + 1. To change the schema, append a function.
# Never edit one that has shipped.
def _schema_v2(conn: sqlite3.Connection) -> None:
    # Small named values the daemon keeps across restarts (e.g. the last slot each task
    # started), so slots missed while it was down are counted, not forgotten.
    conn.execute("CREATE TABLE state (key TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT")


_MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (_schema_v1, _schema_v2)
SCHEMA_VERSION = len(_MIGRATIONS)
# The oldest software schema that can still use a store at SCHEMA_VERSION. Additive
# migrations (a new table or index) keep it; one that older code would misread raises
# it. It is written into the store, so that older software — a rolled-back release —
# can tell whether it may open a store a newer release has migrated.
STORE_MIN_READER = 2
MIN_READER_KEY = "store:min_reader_schema"


# ---------------------------------------------------------------------- open helpers


def _error_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None  # primary code of extended codes


def _connect(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    # isolation_level=None: the store issues BEGIN/COMMIT itself. With Python's own
    # implicit transactions, a PRAGMA or DDL statement could commit half a change.
    # check_same_thread=False: asyncio.to_thread may use any worker thread. The
    # store's lock serialises them.
    return sqlite3.connect(
        str(path), timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
    )


def _damage(conn: sqlite3.Connection) -> str | None:
    """Return why the file is not a usable database, or None if it is."""
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as exc:
        if _error_code(exc) in _CORRUPT_CODES:
            return str(exc)
        raise
    return None if rows == ["ok"] else "; ".join(rows[:5])


def _move_aside(path: Path) -> Path:
    """Rename the damaged database and its -wal/-shm to ``<name>.corrupt-<UTC time>``.

    The -wal file is moved first. A stale WAL left next to a fresh database would be
    replayed into it. If we are killed half way, the next open sees the damaged file
    again and moves it then.
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    n = 0
    while any(Path(f"{target}{s}").exists() for s in ("", "-wal", "-shm")):
        n += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{n}")
    for suffix in ("-wal", "-shm", ""):
        source = Path(f"{path}{suffix}")
        if source.exists():
            os.replace(source, f"{target}{suffix}")
    _fsync_dir(path.parent)
    return target


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- store


class Store:
    """The concentrator's SQLite store. Synchronous and safe to call from any one thread at a time.

    Create it with `Store.open`. All methods take an internal lock, so calls from
    several ``asyncio.to_thread`` workers are serialised instead of interleaving
    transactions on one connection.
    """

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        synchronous: Synchronous,
        quota_bytes: int | None,
        retention_s: float,
    ) -> None:
        self.path = path
        self.quota_bytes = quota_bytes
        self.retention_s = retention_s
        self._conn: sqlite3.Connection | None = conn
        self._synchronous: Synchronous = synchronous
        self._lock = threading.RLock()
        # (table, name) -> id and (meter, quantity) -> series id. Cleared on rollback,
        # because an id inserted in a rolled-back transaction does not exist.
        self._ids: dict[tuple[str, str], int] = {}
        self._series: dict[tuple[str, str], int] = {}

    # ------------------------------------------------------------------ lifecycle

    @classmethod
    def open(
        cls,
        path: Path,
        *,
        synchronous: Synchronous = "FULL",
        quota_bytes: int | None = None,
        retention_s: float = 7 * 86400,
        busy_timeout_s: float = 5.0,
    ) -> Store:
        """Open or create the store. A damaged file is moved aside, never silently replaced.

        Only SQLITE_CORRUPT, SQLITE_NOTADB or a failing ``quick_check`` count as
        damage. Any other error (locked, permission denied, full disk) is raised, so
        a healthy database is never moved aside because of a passing problem.
        """
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be 'FULL' or 'NORMAL', not {synchronous!r}")
        if quota_bytes is not None and quota_bytes <= 0:
            raise ValueError(f"quota_bytes must be positive, not {quota_bytes}")
        path = Path(path)
        try:
            conn = _connect(path, busy_timeout_s)
        except sqlite3.Error as exc:
            raise StoreError(f"{path}: cannot open database: {exc}") from exc
        moved_to: Path | None = None
        try:
            damage = _damage(conn)
            if damage is not None:
                # Closing lets SQLite checkpoint a leftover WAL into the damaged file
                # (or leave it, and we move it too). Either way the last commits stay
                # with the evidence.
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
                moved_to = _move_aside(path)
                log.critical("store %s is damaged (%s); moved aside to %s", path, damage, moved_to)
                conn = _connect(path, busy_timeout_s)
            store = cls(
                conn,
                path,
                synchronous=synchronous,
                quota_bytes=quota_bytes,
                retention_s=retention_s,
            )
            store._configure()
        except sqlite3.Error as exc:
            conn.close()
            code = _error_code(exc)
            kind = StoreFullError if code in _FULL_CODES else StoreError
            raise kind(f"{path}: cannot open database: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        if moved_to is not None:
            store.add_event(
                Event(
                    kind="store_corrupt",
                    severity="critical",
                    meter=None,
                    detail={"moved_to": str(moved_to), "reason": damage},
                    at=time.time(),
                )
            )
        return store

    def _configure(self) -> None:
        conn = self._live()
        fresh = conn.execute("PRAGMA page_count").fetchone()[0] == 0
        if fresh:
            # Only possible before the first table exists. Without it, deleted pages
            # stay in the file and the quota could never shrink it.
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StoreError(f"{self.path}: cannot switch to WAL mode (got {mode!r})")
        conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        # After a checkpoint SQLite cuts the WAL file back to this size. Otherwise one
        # large transaction would leave a large -wal file on disk for good.
        wal_budget = _WAL_LIMIT_BYTES
        if self.quota_bytes is not None:
            # With a quota, checkpoint well before the WAL alone uses much of it.
            page_size = int(conn.execute("PRAGMA page_size").fetchone()[0])
            wal_budget = min(wal_budget, max(self.quota_bytes // 10, 16 * page_size))
            conn.execute(f"PRAGMA wal_autocheckpoint = {max(wal_budget // page_size, 16)}")
        conn.execute(f"PRAGMA journal_size_limit = {wal_budget}")
        self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        while True:
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Read again under the write lock: another process may have migrated.
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                if version >= SCHEMA_VERSION:
                    if version == SCHEMA_VERSION:
                        conn.execute(
                            "INSERT INTO state VALUES (?, ?) ON CONFLICT(key) DO UPDATE"
                            " SET value = excluded.value WHERE CAST(value AS INTEGER) < ?",
                            (MIN_READER_KEY, str(STORE_MIN_READER), STORE_MIN_READER),
                        )
                    conn.execute("COMMIT")
                    if version > SCHEMA_VERSION:
                        self._check_readable(conn, version)
                    return
                _MIGRATIONS[version](conn)
                conn.execute(f"PRAGMA user_version = {version + 1}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _check_readable(self, conn: sqlite3.Connection, version: int) -> None:
        """A store a newer release migrated: usable if that release said so."""
        row = conn.execute("SELECT value FROM state WHERE key = ?", (MIN_READER_KEY,)).fetchone()
        min_reader = int(row[0]) if row is not None else version
        if min_reader > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: schema version {version} needs software of schema "
                f"{min_reader} or newer; this software has {SCHEMA_VERSION}: refusing to use it"
            )
        log.warning(
            "%s: schema %d from a newer release; it declares schema %d can still use it",
            self.path,
            version,
            min_reader,
        )

    def close(self) -> None:
        with self._lock:
            if self._conn is None:
                return
            conn, self._conn = self._conn, None
            with contextlib.suppress(sqlite3.Error):  # a planner hint; closing matters more
                conn.execute("PRAGMA optimize")
            conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -------------------------------------------------------------- transactions

    def _live(self) -> sqlite3.Connection:
        if self._conn is None:
            raise StoreError(f"{self.path}: store is closed")
        return self._conn

    def _error(self, exc: sqlite3.Error) -> StoreError:
        code = _error_code(exc)
        if code in _FULL_CODES:
            return StoreFullError(
                f"{self.path}: {exc}; the write was rolled back, data committed before it "
                "is intact. Free disk space or lower quota_bytes."
            )
        if code in _CORRUPT_CODES:
            return StoreCorruptError(
                f"{self.path}: {exc}; close and reopen the store to move the file aside"
            )
        return StoreError(f"{self.path}: {exc}")

    @contextlib.contextmanager
    def _transaction(
        self, *, write: bool = True, durable: bool = False
    ) -> Iterator[sqlite3.Connection]:
        """Hold the lock and run the body as one transaction.

        ``durable`` forces ``synchronous=FULL`` for this commit even in NORMAL mode.
        Counters and batch ids must survive a power cut: a repeated value would be a
        reused AES-GCM nonce, or a batch the receiver treats as a duplicate.
        """
        with self._lock:
            conn = self._live()
            force_full = durable and self._synchronous != "FULL"
            try:
                if force_full:
                    conn.execute("PRAGMA synchronous = FULL")
                # IMMEDIATE takes the write lock up front, so a busy database fails
                # here (after busy_timeout) and never in the middle of a change.
                conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    self._rollback(conn)
                    raise
            except sqlite3.Error as exc:
                raise self._error(exc) from exc
            finally:
                if force_full:
                    with contextlib.suppress(sqlite3.Error):
                        conn.execute(f"PRAGMA synchronous = {self._synchronous}")

    def _rollback(self, conn: sqlite3.Connection) -> None:
        self._ids.clear()
        self._series.clear()
        # SQLite may already have rolled back by itself (it does for some SQLITE_FULL
        # and IOERR cases). A failing ROLLBACK must not hide the original error.
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")

    # -------------------------------------------------------------- dictionaries

    def _name_id(self, conn: sqlite3.Connection, table: str, name: str) -> int:
        key = (table, name)
        cached = self._ids.get(key)
        if cached is not None:
            return cached
        conn.execute(f"INSERT OR IGNORE INTO {table}(name) VALUES (?)", (name,))
        row = conn.execute(f"SELECT id FROM {table} WHERE name = ?", (name,)).fetchone()
        self._ids[key] = int(row[0])
        return int(row[0])

    def _series_id(self, conn: sqlite3.Connection, meter: str, quantity: str) -> int:
        key = (meter, quantity)
        cached = self._series.get(key)
        if cached is not None:
            return cached
        ids = (self._name_id(conn, "meters", meter), self._name_id(conn, "quantities", quantity))
        conn.execute("INSERT OR IGNORE INTO series(meter_id, quantity_id) VALUES (?, ?)", ids)
        row = conn.execute(
            "SELECT id FROM series WHERE meter_id = ? AND quantity_id = ?", ids
        ).fetchone()
        self._series[key] = int(row[0])
        return int(row[0])

    @staticmethod
    def _series_filter(meter: str | None, quantity: str | None) -> tuple[str, list[object]]:
        """Return an SQL condition on ``s`` (series) and the names it needs as parameters."""
        clauses: list[str] = []
        params: list[object] = []
        if meter is not None:
            clauses.append("s.meter_id = (SELECT id FROM meters WHERE name = ?)")
            params.append(meter)
        if quantity is not None:
            clauses.append("s.quantity_id = (SELECT id FROM quantities WHERE name = ?)")
            params.append(quantity)
        return " AND ".join(clauses) or "1", params

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
            (r, _pack_value_for(r), round(r.read_at * 1000) - r.slot * 1000, _source_code(r))
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
        self._check_quota_after_insert()
        return new

    def _check_quota_after_insert(self) -> None:
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
        sql = f"{_READING_SELECT} WHERE {where} ORDER BY r.slot, r.id"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        with self._transaction(write=False) as conn:
            return [_stored_reading(row) for row in conn.execute(sql, params)]

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

    # --------------------------------------------------------------------- events

    def add_event(self, event: Event) -> int:
        """Store an event for the uplink and return its row id.

        ``TypeError`` if its detail cannot be serialised as JSON.
        """
        detail = json.dumps(event.detail, sort_keys=True, separators=(",", ":"))
        with self._transaction() as conn:
            return self._insert_event(conn, event, detail)

    @staticmethod
    def _insert_event(conn: sqlite3.Connection, event: Event, detail: str) -> int:
        cur = conn.execute(
            "INSERT INTO events(at, kind, severity, meter, detail) VALUES (?, ?, ?, ?, ?)",
            (event.at, event.kind, event.severity, event.meter, detail),
        )
        return int(cast(int, cur.lastrowid))

    def events(self, since: float | None = None, kind: str | None = None) -> list[StoredEvent]:
        where: list[str] = []
        params: list[object] = []
        if since is not None:
            where.append("at >= ?")
            params.append(since)
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        sql = f"{_EVENT_SELECT} WHERE {' AND '.join(where) or '1'} ORDER BY id"
        with self._transaction(write=False) as conn:
            return [_stored_event(row) for row in conn.execute(sql, params)]

    # --------------------------------------------------------------------- outbox

    def take_batch(self, max_readings: int, max_events: int) -> Batch | None:
        """Take the next batch out of the outbox, or return None if the outbox is empty.

        Events go first, ahead of the backlog. Then come readings, oldest slot first.
        The batch id comes from a persisted counter and is committed durably with
        the marking, so it is never reused, not even after a power cut.
        """
        if max_readings < 0 or max_events < 0:
            raise ValueError("max_readings and max_events must not be negative")
        with self._transaction(durable=True) as conn:
            event_ids = [
                int(r[0])
                for r in conn.execute(
                    "SELECT id FROM events WHERE uplink_seq IS NULL ORDER BY id LIMIT ?",
                    (max_events,),
                )
            ]
            reading_ids = [
                int(r[0])
                for r in conn.execute(
                    "SELECT id FROM readings WHERE uplink_seq IS NULL ORDER BY slot, id LIMIT ?",
                    (max_readings,),
                )
            ]
            if not event_ids and not reading_ids:
                return None
            batch_id = self._bump_counter(conn, _BATCH_COUNTER)
            conn.execute("INSERT INTO batches(id, taken_at) VALUES (?, ?)", (batch_id, time.time()))
            for table, ids in (("events", event_ids), ("readings", reading_ids)):
                conn.executemany(
                    f"UPDATE {table} SET uplink_seq = ? WHERE id = ?",
                    [(batch_id, row_id) for row_id in ids],
                )
            return self._load_batch(conn, batch_id)

    @staticmethod
    def _load_batch(conn: sqlite3.Connection, batch_id: int) -> Batch:
        # Same order as take_batch, so a batch reloaded after a restart is identical
        # and can be resent under the same id (and nonce).
        readings = tuple(
            _stored_reading(row)
            for row in conn.execute(
                f"{_READING_SELECT} WHERE r.uplink_seq = ? AND r.delivered = 0"
                " ORDER BY r.slot, r.id",
                (batch_id,),
            )
        )
        events = tuple(
            _stored_event(row)
            for row in conn.execute(
                f"{_EVENT_SELECT} WHERE uplink_seq = ? AND delivered = 0 ORDER BY id",
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

    @staticmethod
    def _requeue(conn: sqlite3.Connection, batch_id: int) -> int:
        cur = conn.execute("DELETE FROM batches WHERE id = ? AND delivered_at IS NULL", (batch_id,))
        if cur.rowcount == 0:
            return 0
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

    # ------------------------------------------------------------------- counters

    def next_counter(self, name: str) -> int:
        """Return the next value of a named counter (1, 2, ...). Never the same value twice.

        The new value is committed durably before it is returned. So a value that was
        used (for example as an AES-GCM nonce) cannot come back after a kill -9 or a
        power cut. Names share one namespace with the batch id counter ``"batch"``.
        """
        with self._transaction(durable=True) as conn:
            return self._bump_counter(conn, name)

    def get_state(self, key: str) -> str | None:
        with self._lock:
            row = self._live().execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_state(self, key: str, value: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "INSERT INTO state(key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def delete_state(self, key: str) -> None:
        with self._transaction() as conn:
            conn.execute("DELETE FROM state WHERE key = ?", (key,))

    @staticmethod
    def _bump_counter(conn: sqlite3.Connection, name: str) -> int:
        conn.execute(
            "INSERT INTO counters(name, value) VALUES (?, 1)"
            " ON CONFLICT (name) DO UPDATE SET value = value + 1",
            (name,),
        )
        return int(conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()[0])

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
        oldest readings still in the outbox, then whole unacked batches, oldest first.
        Those batches go last and whole, because a batch resent under its id must
        carry exactly the rows it was sent with. Every deletion of undelivered
        readings writes a ``loss`` event in the same transaction. At the end the free
        pages are returned to the file system (incremental vacuum and a truncating
        checkpoint), so the file really shrinks.
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
            except sqlite3.Error as exc:  # from the PRAGMAs run outside a transaction
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
        del limit  # a batch is evicted whole, whatever its size
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT id FROM batches WHERE delivered_at IS NULL ORDER BY id LIMIT 1"
            ).fetchone()
            if row is None:
                return 0
            batch_id = int(row[0])
            rows = conn.execute(
                "SELECT id, series_id, slot FROM readings WHERE uplink_seq = ? AND delivered = 0",
                (batch_id,),
            ).fetchall()
            conn.executemany("DELETE FROM readings WHERE id = ?", [(r[0],) for r in rows])
            # The batch is gone, but its events are small and cost nothing to keep:
            # they go back to the outbox.
            self._requeue(conn, batch_id)
            if rows:
                self._record_loss(conn, now, rows, batch_id=batch_id)
            # Return at least 1 so the loop goes on to the next batch, even when this
            # batch held only events.
            return max(len(rows), 1)

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
        return size + _size_or_zero(Path(f"{self.path}-wal"))

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
            db_bytes=_size_or_zero(self.path),
            wal_bytes=_size_or_zero(Path(f"{self.path}-wal")),
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


# --------------------------------------------------------------------- row helpers

_READING_SELECT = (
    "SELECT r.id, m.name, q.name, r.slot, r.value, u.name, r.read_lag_ms, r.source,"
    " r.uplink_seq FROM readings r"
    " JOIN series s ON s.id = r.series_id"
    " JOIN meters m ON m.id = s.meter_id"
    " JOIN quantities q ON q.id = s.quantity_id"
    " JOIN units u ON u.id = r.unit_id"
)
_EVENT_SELECT = "SELECT id, at, kind, severity, meter, detail, uplink_seq FROM events"


def _stored_reading(row: tuple[object, ...]) -> StoredReading:
    rid, meter, quantity, slot, value, unit, lag_ms, source, batch_id = row
    slot_i = cast(int, slot)
    return StoredReading(
        id=cast(int, rid),
        reading=Reading(
            meter=str(meter),
            quantity=str(quantity),
            slot=slot_i,
            value=_unpack_value(value),
            unit=str(unit),
            read_at=(slot_i * 1000 + cast(int, lag_ms)) / 1000,
            source=_SOURCES[cast(int, source)],
        ),
        batch_id=cast("int | None", batch_id),
    )


def _stored_event(row: tuple[object, ...]) -> StoredEvent:
    eid, at, kind, severity, meter, detail, batch_id = row
    return StoredEvent(
        id=cast(int, eid),
        event=Event(
            kind=str(kind),
            severity=str(severity),
            meter=cast("str | None", meter),
            detail=cast("dict[str, object]", json.loads(cast(str, detail))),
            at=cast(float, at),
        ),
        batch_id=cast("int | None", batch_id),
    )


def _pack_value_for(reading: Reading) -> int | str:
    try:
        return _pack_value(reading.value)
    except ValueError as exc:
        raise ValueError(
            f"{exc} (meter {reading.meter!r}, quantity {reading.quantity!r}, slot {reading.slot})"
        ) from None


def _source_code(reading: Reading) -> int:
    try:
        return _SOURCES.index(reading.source)
    except ValueError:
        raise ValueError(
            f"source {reading.source!r} is not one of {', '.join(_SOURCES)}"
            f" (meter {reading.meter!r}, slot {reading.slot})"
        ) from None


def _day_key(day: int) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(day * _DAY_S))


def _size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
