"""What differs between SQLite and PostgreSQL: connecting, transactions, the set-up
lock, and the bulk insert of a batch's readings (the ingest hot path).

Everything else is one SQLAlchemy Core query for both (`.database`). The bulk paths use
the driver directly because a benchmark shows it pays (bench/receiver.py): SQLAlchemy's
``executemany`` spends more time per row in Python than SQLite spends storing it.
The statements are still compiled from the schema, never written by hand.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from itertools import chain
from pathlib import Path
from typing import Protocol
from urllib.parse import quote

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Engine,
    Insert,
    MetaData,
    Table,
    create_engine,
    event,
    func,
    insert,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool
from sqlalchemy.schema import CreateTable

from clitools.files import private_database
from cloud_receiver.storage.schema import readings
from contract.records import Reading

Upsert = sqlite_dialect.Insert | postgresql.Insert  # the same on_conflict_* API

SQLITE_BUSY_TIMEOUT_S = 30.0
ROWS_PER_INSERT = 2000  # readings per SQLite INSERT (fewer if its parameter limit says so)
SETUP_LOCK = 4242  # PostgreSQL advisory lock: two receivers starting at once


class Backend(Protocol):
    """The per-backend part of `Storage`."""

    engine: Engine

    def insert(self, table: Table) -> Upsert:
        """The backend's INSERT (with ``on_conflict_do_*``)."""

    def lock_setup(self, conn: Connection) -> None:
        """Serialise the schema set-up of two receivers that start at once."""

    def add_readings(self, conn: Connection, parts: Sequence[Part]) -> int:
        """Insert the readings not stored yet, the parts in order (of one key given
        twice, the first is kept); return how many were new."""

    def set_write(self, write: bool) -> None:
        """The next transaction writes (take the write lock at once) or only reads."""


_READING_COLUMNS = ("meter", "quantity", "slot", "value", "unit", "read_at", "source")
_ALL_COLUMNS = (*_READING_COLUMNS, "concentrator", "seq")
SQLITE_CACHE_KIB = 64 * 1024  # per connection, filled only as pages are read
Part = tuple[str, int, Sequence[Reading]]  # a batch's concentrator, seq and readings


class SqliteBackend:
    """One file, WAL, ``synchronous=FULL`` (an ack means the rows survive a power cut).

    pysqlite's own transaction handling is switched off and each transaction begins with
    an explicit ``BEGIN IMMEDIATE`` (writes: the write lock is taken at once, so two
    writers queue instead of failing half-way) or ``BEGIN`` (reads: WAL readers never
    block the writer), as SQLAlchemy's documentation recommends for SQLite. A read
    transaction also runs under ``PRAGMA query_only``: a query never writes (issue 18).
    """

    def __init__(self, path: Path, *, create: bool = True) -> None:
        if create:
            path.parent.mkdir(parents=True, exist_ok=True)
        elif not path.is_file():
            from cloud_receiver.errors import StorageError

            what = "is not a file" if path.exists() else "does not exist"
            raise StorageError(
                f"database {path} {what} (only `cloud-receiver run` and `restore` create one)"
            )
        private_database(path)
        self.engine = create_engine(
            f"sqlite:///{path}"
            if create
            # mode=rw: SQLite creates no file, even if one vanishes after the check above
            else f"sqlite:///file:{quote(str(path))}?mode=rw&uri=true",
            poolclass=NullPool,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S, "check_same_thread": False},
        )
        self._write = True
        event.listen(self.engine, "connect", _sqlite_connect)
        event.listen(self.engine, "begin", self._on_begin)
        self._readings_sql = str(
            insert(readings)
            .prefix_with("OR IGNORE")
            .compile(dialect=self.engine.dialect, column_keys=[c.name for c in readings.c])
        )

        self._many_sql = ""  # the same for `ROWS_PER_INSERT` rows, built at first use
        self._per = 1

    def _on_begin(self, conn: Connection) -> None:
        conn.exec_driver_sql(f"PRAGMA query_only = {0 if self._write else 1}")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if self._write else "BEGIN")

    def set_write(self, write: bool) -> None:
        self._write = write

    def insert(self, table: Table) -> Upsert:
        return sqlite_dialect.insert(table)

    def lock_setup(self, conn: Connection) -> None:
        pass  # BEGIN IMMEDIATE already holds the file's write lock

    def add_readings(self, conn: Connection, parts: Sequence[Part]) -> int:
        """Many rows per ``INSERT OR IGNORE`` (`ROWS_PER_INSERT`, within SQLite's limit
        of host parameters), the rest one per row: binding costs Python a little per
        row, and each statement then runs as one long SQLite step without Python's
        lock, beside the ingest's decoding of the next group (`.ingest`). Rows go in
        arrival order, so of one key given twice the first is kept."""
        dbapi = conn.connection.driver_connection
        rows = [
            (r.meter, r.quantity, r.slot, r.value, r.unit, r.read_at, r.source, concentrator, seq)
            for concentrator, seq, batch in parts
            for r in batch
        ]
        per = self._rows_per_insert(dbapi)  # type: ignore[arg-type]
        bulk = len(rows) - len(rows) % per if per > 1 else 0
        new = 0
        cur = dbapi.cursor()  # type: ignore[union-attr]
        try:
            if bulk:
                cur.executemany(
                    self._many_sql,
                    [tuple(chain.from_iterable(rows[i : i + per])) for i in range(0, bulk, per)],
                )
                new += cur.rowcount  # the rows each INSERT changed: the ignored ones add 0
            if bulk < len(rows):
                cur.executemany(self._readings_sql, rows[bulk:])
                new += cur.rowcount
            return int(new)
        finally:
            cur.close()

    def _rows_per_insert(self, dbapi: sqlite3.Connection) -> int:
        if not self._many_sql:
            limit = dbapi.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
            self._per = max(1, min(ROWS_PER_INSERT, limit // len(_ALL_COLUMNS)))
            head, values = self._readings_sql.split(" VALUES ", 1)
            self._many_sql = f"{head} VALUES {', '.join([values] * self._per)}"
        return self._per


def _sqlite_connect(dbapi_conn: sqlite3.Connection, record: object) -> None:
    dbapi_conn.isolation_level = None  # we say BEGIN ourselves (see SqliteBackend)
    if dbapi_conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
    dbapi_conn.execute("PRAGMA synchronous=FULL")
    # A group of live batches inserts into every meter's part of ``readings_by_meter``
    # once per slot: SQLite's default 2 MiB page cache lets those leaf pages go between
    # two slots of one transaction and reads them back from the file each time.
    dbapi_conn.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")


class PostgresBackend:
    """psycopg 3. A group's readings are copied (binary ``COPY``) straight into the
    ``readings`` table under a savepoint: when none of their keys is stored yet — the
    usual case, since a batch that is new carries new readings — that is the whole
    insert, and the fastest there is (bench/receiver.py). When a key is stored already
    (a re-batched resend, a conflicting value, another receiver's batch with the same
    keys) the copy fails on the primary key, the savepoint is rolled back, and the rows
    go the careful way: copied into a temporary table, then moved with one ``INSERT …
    SELECT … ON CONFLICT DO NOTHING`` in key order (first part first for one key), so
    the exactly-once guarantee never rests on the fast path."""

    def __init__(self, url: str) -> None:
        sa_url = make_url(url).set(drivername="postgresql+psycopg")
        self.engine = create_engine(sa_url, poolclass=NullPool)
        self._write = True
        event.listen(self.engine, "begin", self._on_begin)
        incoming = Table(
            "incoming_readings",
            MetaData(),
            *(Column(n, readings.c[n].type) for n in _ALL_COLUMNS),
            Column("part", BigInteger),
            prefixes=["TEMPORARY"],
            postgresql_on_commit="DELETE ROWS",
        )
        self._create_incoming = str(
            CreateTable(incoming, if_not_exists=True).compile(dialect=self.engine.dialect)
        )
        columns = ", ".join(_ALL_COLUMNS)
        self._copy_direct = f"COPY {readings.name} ({columns}) FROM STDIN (FORMAT BINARY)"
        self._copy_incoming = f"COPY {incoming.name} ({columns}, part) FROM STDIN (FORMAT BINARY)"
        # Binary COPY needs each column's type; the schema's, as PostgreSQL names them.
        self._copy_types = [
            readings.c[n].type.compile(dialect=self.engine.dialect).lower() for n in _ALL_COLUMNS
        ]
        i = incoming.c
        self._move: Insert = (
            postgresql.insert(readings)
            .from_select(
                list(_ALL_COLUMNS),
                select(*(i[n] for n in _ALL_COLUMNS)).order_by(
                    *(i[c.name] for c in readings.primary_key.columns), i.part
                ),
            )
            .on_conflict_do_nothing()
            .execution_options(preserve_rowcount=True)  # the new readings
        )

    def set_write(self, write: bool) -> None:
        # Writes lock rows as they go; a read transaction is READ ONLY: a query never writes.
        self._write = write

    def _on_begin(self, conn: Connection) -> None:
        if not self._write:
            conn.exec_driver_sql("SET TRANSACTION READ ONLY")

    def insert(self, table: Table) -> Upsert:
        return postgresql.insert(table)

    def lock_setup(self, conn: Connection) -> None:
        conn.execute(select(func.pg_advisory_xact_lock(SETUP_LOCK)))

    def add_readings(self, conn: Connection, parts: Sequence[Part]) -> int:
        total = sum(len(rows) for _, _, rows in parts)
        if not total:
            return 0
        from psycopg.errors import UniqueViolation

        try:
            with conn.begin_nested():
                self._copy(conn, self._copy_direct, parts, numbered=False)
            return total
        except UniqueViolation:
            pass  # a key is stored already: the careful way below
        # Created in the transaction: a rolled-back first group takes it away again.
        conn.exec_driver_sql(self._create_incoming)
        self._copy(conn, self._copy_incoming, parts, numbered=True)
        return int(conn.execute(self._move).rowcount)

    def _copy(self, conn: Connection, sql: str, parts: Sequence[Part], *, numbered: bool) -> None:
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            with cur.copy(sql) as copy:
                copy.set_types([*self._copy_types, "int8"] if numbered else self._copy_types)
                for n, (concentrator, seq, rows) in enumerate(parts):
                    tail = (concentrator, seq, n) if numbered else (concentrator, seq)
                    for r in rows:
                        copy.write_row(
                            (r.meter, r.quantity, r.slot, r.value, r.unit, r.read_at, r.source,
                             *tail)
                        )  # fmt: skip
        finally:
            cur.close()


def backend_for(url: str, *, create: bool = True) -> Callable[[], Backend]:
    """``postgresql://…`` → PostgreSQL; ``sqlite:///path`` or a plain path → SQLite.
    Without ``create``, an SQLite file (and its folder) must exist already."""
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        pg_url = "postgresql://" + url.split("://", 1)[1]
        return lambda: PostgresBackend(pg_url)
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    if not path:
        from cloud_receiver.errors import StorageError

        raise StorageError(f"database URL {url!r}: expected sqlite:///PATH or postgresql://…")
    return lambda: SqliteBackend(Path(path), create=create)
