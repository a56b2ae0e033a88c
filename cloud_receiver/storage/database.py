"""The receiver's database: every reading exactly once, every batch acknowledged once.

Idempotence comes from unique keys, not from memory: (concentrator, seq) for batches and
(meter, quantity, slot) for readings. A batch is stored in one transaction; the ack is
sent only after that transaction commits, so an ack always means "in the database". A
redelivered batch finds its (concentrator, seq) row and is acknowledged again as a
duplicate without touching the readings. Nothing here lives in process memory that a
second receiver would need: two receivers on one shared subscription can share one
PostgreSQL database.

One `Storage` for both backends (SQLite by default, PostgreSQL to scale out): the same
SQLAlchemy Core queries on the schema of `.schema`, migrated by `.migrate` when opened;
what differs (connecting, locking, the bulk insert of readings) is in `.backends`.
Each `Storage` holds one connection, used by one thread at a time.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, delete, exc, func, insert, select, update

from cloud_receiver.errors import StorageError
from cloud_receiver.storage import conflicts, migrate
from cloud_receiver.storage import quarantine as quarantine_budget
from cloud_receiver.storage.backends import (
    Backend,
    PostgresBackend,
    SqliteBackend,
    Upsert,
    backend_for,
)
from cloud_receiver.storage.ingest import Batch, GroupWriter
from cloud_receiver.storage.records import (
    CommandRecord,
    ConcentratorInfo,
    Conflict,
    IngestResult,
    MeterRecord,
    Quarantined,
    StoredRow,
)
from cloud_receiver.storage.schema import (
    batches,
    command_counters,
    command_log,
    commands,
    concentrators,
    events,
    meters,
    quarantine,
    reading_conflicts,
    readings,
)
from contract.records import Event, Reading

SETUP_TIMEOUT_S = 30.0
# PostgreSQL aborted the transaction to break a deadlock, or a serialisation failure.
RETRIED_SQLSTATES = ("40P01", "40001")
DEADLOCK_RETRIES = 3
IN_CHUNK = 500  # meters per IN (...) list: under SQLite's 999 host parameters
DEFAULT_BUDGET = quarantine_budget.Budget()
FINAL_STATUSES = ("done", "failed", "refused", "expired", "unanswered")


class Storage:
    """The receiver's database, on either backend (see the module docstring)."""

    def __init__(self, backend: Backend, *, create: bool = True) -> None:
        self._backend = backend
        self._lock = threading.Lock()
        self._group = GroupWriter(backend)  # the ingest statements, built once
        try:
            self._conn = _connect(backend)
        except exc.DBAPIError as error:  # say what the driver said, not SQLAlchemy's wrapper
            raise StorageError(str(error.orig)) from error
        try:
            with self.transaction() as conn:
                backend.lock_setup(conn)
                if not create:
                    migrate.require_ours(conn)
                migrate.upgrade(conn)
        except BaseException:
            self._conn.close()
            raise

    # ---------------------------------------------------------- transactions
    @contextlib.contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One read-modify-write transaction (prepayment charges, top-ups, rollouts):
        committed at the end, rolled back on an exception. Rows read with
        ``.with_for_update()`` stay locked until then (PostgreSQL; SQLite locks the
        whole database for the transaction)."""
        with self._lock:
            self._backend.set_write(True)
            with self._conn.begin():
                yield self._conn

    @contextlib.contextmanager
    def _reading(self) -> Iterator[Connection]:
        with self._lock:
            self._backend.set_write(False)
            with self._conn.begin():
                yield self._conn

    def insert(self, table: Table) -> Upsert:
        """An INSERT into ``table`` in this backend's dialect, for an upsert
        (``on_conflict_do_nothing`` / ``on_conflict_do_update``, alike on both)."""
        return self._backend.insert(table)

    def read(self) -> contextlib.AbstractContextManager[Connection]:
        """A read-only transaction (on SQLite it never blocks the writer)."""
        return self._reading()

    def _rows(self, query: Any) -> list[Any]:
        with self._reading() as conn:
            return list(conn.execute(query).all())

    def close(self) -> None:
        with self._lock:
            self._conn.close()
            self._backend.engine.dispose()

    # ---------------------------------------------------------- ingest
    def ingest(
        self,
        concentrator: str,
        seq: int,
        key_id: int,
        readings: Sequence[Reading],
        events: Sequence[Event],
        received_at: float,
    ) -> tuple[IngestResult, int]:
        """Store a batch exactly once: (STORED, new readings), (DUPLICATE, 0) when its
        (concentrator, seq) is already stored, or (REPLAY, 0) when it is older than the
        replay window and unknown. Two receivers racing on one batch: the second one's
        batch row waits for the first's commit and then finds it (a duplicate)."""
        batch = Batch(concentrator, seq, key_id, readings, events, received_at)
        return self.ingest_many([batch])[0]

    def ingest_many(self, group: Sequence[Batch]) -> list[tuple[IngestResult, int]]:
        """Store a group of batches in one transaction, each exactly once and as if
        stored one after another (`.ingest`); per batch what `ingest` returns. A
        transaction PostgreSQL aborts to break a deadlock is run again."""
        for attempt in range(DEADLOCK_RETRIES + 1):
            try:
                with self.transaction() as conn:
                    return self._group.store(conn, group)
            except Exception as error:  # SQLAlchemy's wrapper, or the driver's own (COPY)
                code = getattr(getattr(error, "orig", error), "sqlstate", None)
                if code not in RETRIED_SQLSTATES or attempt == DEADLOCK_RETRIES:
                    raise
        raise AssertionError("unreachable")

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
        budget: quarantine_budget.Budget = DEFAULT_BUDGET,
    ) -> int:
        """Keep a refused message within ``budget`` (`.quarantine`); how many of the
        oldest quarantined messages were evicted to make room."""
        with self.transaction() as conn:
            return quarantine_budget.store(
                conn, budget, topic=topic, concentrator=concentrator, seq=seq,
                reason=reason, detail=detail, payload=payload, received_at=received_at,
            )  # fmt: skip

    def quarantine_senders(self) -> list[quarantine_budget.SenderStats]:
        """Per sender: what the quarantine holds, and ever kept, truncated, evicted."""
        with self._reading() as conn:
            return quarantine_budget.senders(conn)

    def quarantine_held(self) -> tuple[int, int]:
        """(rows, bytes charged) the quarantine holds, counted from its rows."""
        with self._reading() as conn:
            return quarantine_budget.held(conn)

    # ---------------------------------------------------------- queries
    def readings(
        self,
        meter: str | None = None,
        since: int | None = None,
        until: int | None = None,
        limit: int | None = None,
        quantities: Sequence[str] = (),
    ) -> list[StoredRow]:
        """Stored readings by meter, quantity and slot, the first ``limit`` of them;
        ``quantities`` (empty: all) keeps only those canonical quantities."""
        r = readings.c
        query = _in_range(
            select(
                r.meter, r.quantity, r.slot, r.value, r.unit, r.read_at, r.source,
                r.concentrator, r.seq,
            ).order_by(r.meter, r.quantity, r.slot),
            meter, since, until, quantities,
        )  # fmt: skip
        if limit is not None:
            query = query.limit(limit)
        return [StoredRow(*row) for row in self._rows(query)]

    def count_readings(
        self,
        meter: str | None = None,
        since: int | None = None,
        until: int | None = None,
        quantities: Sequence[str] = (),
    ) -> int:
        """How many readings `readings` would return without a limit."""
        query = _in_range(
            select(func.count()).select_from(readings), meter, since, until, quantities
        )
        return int(self._rows(query)[0][0])

    def conflicts(
        self,
        *,
        since: float | None = None,
        until: float | None = None,
        meter: str | None = None,
        limit: int = 100,
    ) -> list[Conflict]:
        """Conflicting readings detected in ``since <= t < until``, newest first."""
        with self._reading() as conn:
            return conflicts.query(conn, since=since, until=until, meter=meter, limit=limit)

    def concentrators(self) -> list[ConcentratorInfo]:
        c, b = concentrators.c, batches.c
        query = (
            select(
                c.concentrator, c.last_seen, func.count(b.seq),
                func.coalesce(func.sum(b.readings), 0), c.max_seq,
            )
            .select_from(concentrators.outerjoin(batches, b.concentrator == c.concentrator))
            .group_by(c.concentrator, c.last_seen, c.max_seq)
            .order_by(c.concentrator)
        )  # fmt: skip
        return [
            ConcentratorInfo(
                r[0], r[1], int(r[2]), int(r[3]), int(r[4]), max(0, int(r[4]) - int(r[2]))
            )
            for r in self._rows(query)
        ]

    def quarantined(self, limit: int = 100) -> list[Quarantined]:
        q = quarantine.c
        query = (
            select(
                q.id, q.received_at, q.topic, q.concentrator, q.seq, q.reason, q.detail,
                q.size, func.length(q.payload),
            )
            .order_by(q.id.desc())
            .limit(limit)
        )  # fmt: skip
        return [Quarantined(*r) for r in self._rows(query)]

    def conflict_count(self) -> int:
        """Conflicting readings recorded (for the metrics)."""
        return int(self._rows(select(func.count()).select_from(reading_conflicts))[0][0])

    def quarantine_size(self) -> int:
        """Messages held in quarantine (for the metrics; counts rows, reads no payload)."""
        return int(self._rows(select(func.count()).select_from(quarantine))[0][0])

    def archive_deliveries(
        self, quantity: str, since: int, until: int
    ) -> list[tuple[str, str, int]]:
        """(concentrator, meter, readings) of ``quantity`` with ``since <= slot < until``
        for the meters of the archive: who delivered which archive meter, how often. The
        slot range leads the readings' primary key, so only that range is read."""
        r, m = readings.c, meters.c
        query = (
            select(r.concentrator, r.meter, func.count())
            .select_from(readings.join(meters, m.meter == r.meter))
            .where(r.quantity == quantity, r.slot >= since, r.slot < until)
            .group_by(r.concentrator, r.meter)
        )
        return [(row[0], row[1], int(row[2])) for row in self._rows(query)]

    def archive_size(self) -> int:
        return int(self._rows(select(func.count()).select_from(meters))[0][0])

    def events(self, concentrator: str | None = None) -> list[tuple[str, Event]]:
        e = events.c
        query = select(e.concentrator, e.kind, e.severity, e.meter, e.detail, e.at).order_by(e.id)
        if concentrator:
            query = query.where(e.concentrator == concentrator)
        return [(r[0], Event(r[1], r[2], r[3], dict(r[4]), r[5])) for r in self._rows(query)]

    # ---------------------------------------------------------- archive and analytics
    def archive(self) -> list[MeterRecord]:
        m = meters.c
        query = select(m.meter, m.area, m.role, m.account, m.group, m.multiplier).order_by(
            m.area, m.role.desc(), m.meter
        )
        return [MeterRecord(r[0], r[1], r[2], r[3], r[4], Decimal(r[5])) for r in self._rows(query)]

    def replace_archive(self, records: Sequence[MeterRecord]) -> None:
        with self.transaction() as conn:
            conn.execute(delete(meters))
            if records:
                conn.execute(
                    insert(meters),
                    [
                        {"meter": r.meter, "area": r.area, "role": r.role, "account": r.account,
                         "group": r.group, "multiplier": str(r.multiplier)}
                        for r in records
                    ],
                )  # fmt: skip

    def series(
        self, quantities: Sequence[str], meters: Sequence[str], since: int, until: int
    ) -> list[tuple[str, str, int, str]]:
        """(meter, quantity, slot, value) of these meters and quantities with
        ``since <= slot < until``, ordered by meter, quantity, slot."""
        if not quantities or not meters:
            return []
        r = readings.c
        rows: list[tuple[str, str, int, str]] = []
        for i in range(0, len(meters), IN_CHUNK):
            query = select(r.meter, r.quantity, r.slot, r.value).where(
                r.meter.in_(list(meters[i : i + IN_CHUNK])),
                r.quantity.in_(list(quantities)),
                r.slot >= since,
                r.slot < until,
            )
            rows += [(m, q, int(s), v) for m, q, s, v in self._rows(query)]
        rows.sort()
        return rows

    def series_counts(
        self, quantities: Sequence[str], meter: str, since: int, until: int, chunk_s: int
    ) -> dict[int, int]:
        """How many readings `series` would return for this meter, per chunk of slots
        (``slot // chunk_s``) in ``since <= slot < until``: read from the index alone,
        a fraction of fetching the values (`.series_cache` uses it to tell whether what
        it holds is still what is stored)."""
        if not quantities:
            return {}
        r = readings.c
        chunk = (r.slot // chunk_s).label("chunk")
        query = (
            select(chunk, func.count())
            .where(r.meter == meter, r.quantity.in_(list(quantities)), r.slot >= since,
                   r.slot < until)
            .group_by(chunk)
        )  # fmt: skip
        return {int(k): int(n) for k, n in self._rows(query)}

    def meter_events(self, meters: Sequence[str], since: float, until: float) -> list[Event]:
        """Events about these meters with ``since <= at < until``, oldest first."""
        e = events.c
        out: list[tuple[float, int, Event]] = []
        for i in range(0, len(meters), IN_CHUNK):
            query = select(e.id, e.kind, e.severity, e.meter, e.detail, e.at).where(
                e.meter.in_(list(meters[i : i + IN_CHUNK])), e.at >= since, e.at < until
            )
            out += [
                (r[5], r[0], Event(r[1], r[2], r[3], dict(r[4]), r[5])) for r in self._rows(query)
            ]
        return [ev for _, _, ev in sorted(out, key=lambda x: (x[0], x[1]))]

    # ---------------------------------------------------------- downlink commands
    def next_command_counter(self, concentrator: str) -> int:
        """A counter above every one issued to this concentrator (atomic upsert, so two
        issuers never sign the same number)."""
        first = self._backend.insert(command_counters).values(concentrator=concentrator, counter=1)
        upsert = first.on_conflict_do_update(
            index_elements=[command_counters.c.concentrator],
            set_={"counter": command_counters.c.counter + 1},
        ).returning(command_counters.c.counter)
        with self.transaction() as conn:
            return int(conn.execute(upsert).scalar_one())

    def add_command(self, record: CommandRecord) -> None:
        r = record
        with self.transaction() as conn:
            conn.execute(
                insert(commands).values(
                    id=r.id,
                    concentrator=r.concentrator,
                    counter=r.counter,
                    action=r.action,
                    meters=_json(r.meters),
                    params=_json(r.params),
                    not_before=r.not_before,
                    not_after=r.not_after,
                    issued_at=r.issued_at,
                    issued_by=r.issued_by,
                    status=r.status,
                    result=None if r.result is None else _json(r.result),
                    updated_at=r.updated_at,
                    blob=r.blob,
                )
            )
            _log_command(conn, r.id, r.issued_at, r.status, {"by": r.issued_by})

    def claim_command(self, command_id: str, at: float) -> bool:
        """Take an issued command for publishing; False when another receiver has."""
        with self.transaction() as conn:
            claimed = conn.execute(
                update(commands)
                .where(commands.c.id == command_id, commands.c.status == "issued")
                .values(status="published", updated_at=at)
                .returning(commands.c.id)
            ).first()
            if claimed is not None:
                _log_command(conn, command_id, at, "published", {})
        return claimed is not None

    def set_command_status(
        self, command_id: str, status: str, result: dict[str, Any] | None, at: float
    ) -> bool:
        """Record an outcome. A final outcome (done, failed, refused) is kept: a later
        "refused: replayed" for a redelivered copy of a done command changes nothing."""
        with self.transaction() as conn:
            changed = conn.execute(
                update(commands)
                .where(commands.c.id == command_id, commands.c.status.not_in(FINAL_STATUSES))
                .values(
                    status=status,
                    result=None if result is None else _json(result),
                    updated_at=at,
                )
                .returning(commands.c.id)
            ).first()
            note = status if changed is not None else f"{status} (ignored)"
            _log_command(conn, command_id, at, note, result or {})
        return changed is not None

    def commands(
        self,
        concentrator: str | None = None,
        status: str | None = None,
        command_id: str | None = None,
        limit: int | None = 100,
        since: float | None = None,
        until: float | None = None,
    ) -> list[CommandRecord]:
        """Commands by issue time (oldest first), issued in [since, until); the first
        ``limit`` (None: all)."""
        c = commands.c
        query = select(
            c.id, c.concentrator, c.counter, c.action, c.meters, c.params, c.not_before,
            c.not_after, c.issued_at, c.issued_by, c.status, c.result, c.updated_at, c.blob,
        )  # fmt: skip
        query = _commands_where(query, concentrator, status, command_id, since, until)
        query = query.order_by(c.issued_at, c.concentrator, c.counter)
        if limit is not None:
            query = query.limit(limit)
        return [
            CommandRecord(
                r[0], r[1], int(r[2]), r[3], _unjson(r[4]), _unjson(r[5]), float(r[6]),
                float(r[7]), float(r[8]), r[9], r[10], None if r[11] is None else _unjson(r[11]),
                float(r[12]), bytes(r[13]),
            )
            for r in self._rows(query)
        ]  # fmt: skip

    def count_commands(
        self,
        concentrator: str | None = None,
        status: str | None = None,
        command_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        """How many commands `commands` would return without a limit."""
        query = select(func.count()).select_from(commands)
        query = _commands_where(query, concentrator, status, command_id, since, until)
        return int(self._rows(query)[0][0])

    def command_log(self, command_id: str) -> list[tuple[float, str, dict[str, Any]]]:
        g = command_log.c
        query = select(g.at, g.status, g.detail).where(g.command_id == command_id).order_by(g.id)
        return [(float(r[0]), r[1], _unjson(r[2])) for r in self._rows(query)]


def _connect(backend: Backend) -> Connection:
    # Another process (a query, a second receiver) may hold a SQLite file while it is
    # being set up; switching to WAL then fails at once instead of waiting.
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    while True:
        try:
            return backend.engine.connect()
        except exc.OperationalError as error:
            if "locked" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _log_command(
    conn: Connection, command_id: str, at: float, status: str, detail: dict[str, Any]
) -> None:
    conn.execute(
        insert(command_log).values(
            command_id=command_id, at=at, status=status, detail=_json(detail)
        )
    )


def _json(value: object) -> str:
    return json.dumps(value)


def _unjson(text: str) -> Any:
    return json.loads(text)


class SqliteStorage(Storage):
    """`Storage` in a SQLite file (created, with its directory, when missing)."""

    def __init__(self, path: Path) -> None:
        super().__init__(SqliteBackend(path))


class PostgresStorage(Storage):
    """`Storage` in a PostgreSQL database (``postgresql://…``)."""

    def __init__(self, url: str) -> None:
        super().__init__(PostgresBackend(url))


def _commands_where(
    query: Any,
    concentrator: str | None,
    status: str | None,
    command_id: str | None,
    since: float | None,
    until: float | None,
) -> Any:
    """``query`` narrowed to the commands `Storage.commands` selects."""
    c = commands.c
    for column, value in ((c.concentrator, concentrator), (c.status, status), (c.id, command_id)):
        if value is not None:
            query = query.where(column == value)
    if since is not None:
        query = query.where(c.issued_at >= since)
    if until is not None:
        query = query.where(c.issued_at < until)
    return query


def _in_range(
    query: Any,
    meter: str | None,
    since: int | None,
    until: int | None,
    quantities: Sequence[str] = (),
) -> Any:
    """``query`` narrowed to a meter, a slot range [since, until) and some quantities."""
    r = readings.c
    if quantities:
        query = query.where(r.quantity.in_(list(quantities)))
    if meter is not None:
        query = query.where(r.meter == meter)
    if since is not None:
        query = query.where(r.slot >= since)
    if until is not None:
        query = query.where(r.slot < until)
    return query


def open_storage(url: str, *, create: bool = True) -> Storage:
    """``postgresql://…`` → PostgreSQL; ``sqlite:///path`` or a plain path → SQLite.

    Without ``create`` (the query commands), nothing is created: an SQLite file must
    exist, and a database without the receiver's tables is an error, not a new one."""
    return Storage(backend_for(url, create=create)(), create=create)
