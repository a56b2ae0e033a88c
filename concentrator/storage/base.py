"""The store's connection: opening (and moving a damaged file aside), migrating,
transactions under one lock, the name dictionaries, named state and counters.

The parts of the store (`readings`, `events`, `quota`) build on this class; `Store`
puts them together.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Self, cast

from clitools.files import private_database
from concentrator.storage.engine import (
    CACHE_KIB,
    connect,
    database_errors,
    encrypt_in_place,
    errors,
    fsync_path,
    is_plaintext,
)
from concentrator.storage.errors import (
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreKeyError,
)
from concentrator.storage.schema import (
    MIGRATIONS,
    MIN_READER_KEY,
    SCHEMA_VERSION,
    STORE_MIN_READER,
)
from contract.records import Event

if TYPE_CHECKING:
    import sqlite3  # the annotations' type; the driver is `engine`'s to load

log = logging.getLogger(__name__)

Synchronous = Literal["FULL", "NORMAL"]

_WAL_LIMIT_BYTES = 4 * 1024 * 1024  # about SQLite's default autocheckpoint of 1,000 pages

# SQLite's primary result codes (sqlite3.h), the same in either driver (`engine`).
SQLITE_IOERR, SQLITE_CORRUPT, SQLITE_FULL, SQLITE_NOTADB = 10, 11, 13, 26
_CORRUPT_CODES = frozenset({SQLITE_CORRUPT, SQLITE_NOTADB})
_FULL_CODES = frozenset({SQLITE_FULL, SQLITE_IOERR})


def _error_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    return code & 0xFF if isinstance(code, int) else None  # primary code of extended codes


def _connect(path: Path, busy_timeout_s: float, key: bytes | None) -> sqlite3.Connection:
    # isolation_level=None: the store issues BEGIN/COMMIT itself. With Python's own
    # implicit transactions, a PRAGMA or DDL statement could commit half a change.
    # check_same_thread=False: asyncio.to_thread may use any worker thread. The
    # store's lock serialises them.
    conn = connect(path, key, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False)
    try:
        # Our memory, not the build's, from the first read on (the quick_check at open
        # reads every page): SQLCipher's wheel defaults to an 8 MiB page cache and
        # in-memory temp tables, where the daemon's RSS budget (bench/daemon.py) is set
        # with CACHE_KIB and temp files.
        if key is not None and size_or_zero(path) > 0:
            _check_key(conn, path)
        with contextlib.suppress(*database_errors()):  # a damaged file: _damage judges it
            conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            conn.execute("PRAGMA temp_store = FILE")
    except BaseException:
        conn.close()
        raise
    return conn


def _check_key(conn: sqlite3.Connection, path: Path) -> None:
    """An encrypted store that the key does not open is refused as it is: with a wrong
    key every page looks damaged, and moving it aside as damaged would lose the store."""
    try:
        conn.execute("SELECT count(*) FROM sqlite_schema").fetchone()
    except database_errors() as exc:
        if _error_code(exc) != SQLITE_NOTADB:
            raise
        raise StoreKeyError(
            f"{path}: the key does not open this store (a wrong [storage] key_file, or "
            "the store's page 1 is damaged); the store was left as it is"
        ) from None


def _damage(conn: sqlite3.Connection) -> str | None:
    """Return why the file is not a usable database, or None if it is."""
    try:
        rows = [str(r[0]) for r in conn.execute("PRAGMA quick_check")]
    except database_errors() as exc:
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
    fsync_path(path.parent)
    return target


def size_or_zero(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


class StoreBase:
    """One SQLite connection under a lock; see `Store`."""

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
        key: bytes | None = None,
    ) -> Self:
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
        encrypted_now = False
        try:
            private_database(path)
            if key is not None and is_plaintext(path):
                encrypt_in_place(path, key, busy_timeout_s=busy_timeout_s)
                encrypted_now = True
            conn = _connect(path, busy_timeout_s, key)
        except OSError as exc:
            kind = StoreFullError if exc.errno == errno.ENOSPC else StoreError
            raise kind(f"{path}: cannot create database: {exc}") from exc
        except errors() as exc:
            raise StoreError(f"{path}: cannot open database: {exc}") from exc
        moved_to: Path | None = None
        try:
            damage = _damage(conn)
            if damage is not None and key is None and not is_plaintext(path):
                # Kept, not lost: moved aside, and opened again once the key is given.
                damage += "; no SQLite header: if the store is encrypted, give its key_file"
            if damage is not None:
                # Closing lets SQLite checkpoint a leftover WAL into the damaged file
                # (or leave it, and we move it too). Either way the last commits stay
                # with the evidence.
                with contextlib.suppress(*errors()):
                    conn.close()
                moved_to = _move_aside(path)
                log.critical("store %s is damaged (%s); moved aside to %s", path, damage, moved_to)
                private_database(path)
                conn = _connect(path, busy_timeout_s, key)
            store = cls(
                conn,
                path,
                synchronous=synchronous,
                quota_bytes=quota_bytes,
                retention_s=retention_s,
            )
            store._configure()
        except errors() as exc:
            conn.close()
            code = _error_code(exc)
            kind = StoreFullError if code in _FULL_CODES else StoreError
            raise kind(f"{path}: cannot open database: {exc}") from exc
        except BaseException:
            conn.close()
            raise
        if encrypted_now:
            log.warning("store %s was plaintext; now encrypted with its key", path)
            store.add_event(
                Event("store_encrypted", "info", None, {"path": str(path)}, time.time())
            )
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

    @classmethod
    def open_read_only(
        cls, path: Path, *, busy_timeout_s: float = 5.0, key: bytes | None = None
    ) -> Self:
        """Open an existing store for queries (``concentrator stats``): nothing is created,
        migrated, moved aside or written (``mode=ro``, ``PRAGMA query_only``), whatever
        the daemon does with it meanwhile (issue 18: a query never creates a database).
        A store of another schema version is refused with both versions named."""
        path = Path(path)
        if not path.is_file():
            what = "is not a file" if path.exists() else "does not exist"
            raise StoreError(
                f"{path}: the store {what}: nothing stored yet (`concentrator run` creates it)"
            )
        try:
            conn = connect(
                f"{path.absolute().as_uri()}?mode=ro",
                key,
                uri=True,
                timeout=busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute("PRAGMA query_only = ON")
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        except errors() as exc:
            raise StoreError(f"{path}: cannot open database read-only: {exc}") from exc
        store = cls(conn, path, synchronous="FULL", quota_bytes=None, retention_s=7 * 86400)
        if version != SCHEMA_VERSION:
            try:
                if version < SCHEMA_VERSION:
                    raise StoreError(
                        f"{path}: schema version {version}, this software reads "
                        f"{SCHEMA_VERSION}: start `concentrator run` once to migrate it"
                    )
                store._check_readable(conn, version)
            except BaseException:
                conn.close()
                raise
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
                MIGRATIONS[version](conn)
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
            with contextlib.suppress(*errors()):  # a planner hint; closing matters more
                conn.execute("PRAGMA optimize")
            conn.close()

    def __enter__(self) -> Self:
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
            except errors() as exc:
                raise self._error(exc) from exc
            finally:
                if force_full:
                    with contextlib.suppress(*errors()):
                        conn.execute(f"PRAGMA synchronous = {self._synchronous}")

    def _rollback(self, conn: sqlite3.Connection) -> None:
        self._ids.clear()
        self._series.clear()
        # SQLite may already have rolled back by itself (it does for some SQLITE_FULL
        # and IOERR cases). A failing ROLLBACK must not hide the original error.
        if conn.in_transaction:
            with contextlib.suppress(*errors()):
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

    def _after_insert(self) -> None:
        """Run after readings are committed (the quota looks at the file size here)."""

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
