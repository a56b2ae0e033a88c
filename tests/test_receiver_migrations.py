"""Migrations of the receiver's database: a new database is exactly the schema, and a
database made by the release before migrations (SQLite through sqlite-utils, PostgreSQL
from its own DDL) opens, is stamped, and keeps working with its rows.

The previous release's DDL is copied here as it was (sqlite_master's text for SQLite,
the release's DDL strings for PostgreSQL; long lines wrapped): it is a fixture, never to be updated.
"""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from cloud_receiver.applications.fleet import commands
from cloud_receiver.errors import StorageError
from cloud_receiver.storage import IngestResult, MeterRecord, open_storage
from cloud_receiver.storage.backends import backend_for
from cloud_receiver.storage.schema import metadata
from contract import commands as wire_commands
from contract.records import Event, Reading

HEAD = "0012"  # the newest revision (refused_latest; 0011: readings_by_meter on SQLite)

PREVIOUS_SQLITE_DDL = """
CREATE TABLE "batches" (
   "concentrator" TEXT,
   "seq" INTEGER,
   "key_id" INTEGER,
   "received_at" REAL,
   "readings" INTEGER,
   "events" INTEGER,
   PRIMARY KEY ("concentrator", "seq")
);
CREATE TABLE readings (meter TEXT NOT NULL, quantity TEXT NOT NULL,
  slot INTEGER NOT NULL, value TEXT NOT NULL, unit TEXT NOT NULL, read_at REAL NOT NULL,
  source TEXT NOT NULL, concentrator TEXT NOT NULL, seq INTEGER NOT NULL,
  PRIMARY KEY (slot, meter, quantity)) WITHOUT ROWID;
CREATE TABLE "events" (
   "id" INTEGER PRIMARY KEY,
   "concentrator" TEXT,
   "seq" INTEGER,
   "kind" TEXT,
   "severity" TEXT,
   "meter" TEXT,
   "detail" TEXT,
   "at" REAL
);
CREATE TABLE "quarantine" (
   "id" INTEGER PRIMARY KEY,
   "received_at" REAL,
   "topic" TEXT,
   "concentrator" TEXT,
   "seq" INTEGER,
   "reason" TEXT,
   "detail" TEXT,
   "payload" BLOB
);
CREATE TABLE "concentrators" (
   "concentrator" TEXT PRIMARY KEY,
   "last_seen" REAL,
   "max_seq" INTEGER
);
CREATE TABLE meters (meter TEXT PRIMARY KEY, area TEXT NOT NULL,
  role TEXT NOT NULL, account TEXT NOT NULL, "group" TEXT NOT NULL, multiplier TEXT NOT NULL);
CREATE INDEX meters_by_area ON meters (area);
CREATE TABLE command_counters (concentrator TEXT PRIMARY KEY,
  counter BIGINT NOT NULL);
CREATE TABLE commands (id TEXT PRIMARY KEY, concentrator TEXT NOT NULL,
  counter BIGINT NOT NULL, action TEXT NOT NULL, meters TEXT NOT NULL, params TEXT NOT NULL,
  not_before DOUBLE PRECISION NOT NULL, not_after DOUBLE PRECISION NOT NULL,
  issued_at DOUBLE PRECISION NOT NULL, issued_by TEXT NOT NULL, status TEXT NOT NULL,
  result TEXT, updated_at DOUBLE PRECISION NOT NULL, blob BLOB NOT NULL,
  UNIQUE (concentrator, counter));
CREATE INDEX commands_by_status ON commands (status, concentrator, counter);
CREATE TABLE command_log (id INTEGER PRIMARY KEY, command_id TEXT NOT NULL,
  at DOUBLE PRECISION NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX command_log_by_command ON command_log (command_id, id);
CREATE TABLE software_seen (concentrator TEXT PRIMARY KEY,
  software TEXT NOT NULL, wire_version INTEGER NOT NULL, seen_at DOUBLE PRECISION NOT NULL);
CREATE TABLE releases (version TEXT PRIMARY KEY, manifest BLOB NOT NULL,
  signature BLOB NOT NULL, payload BLOB NOT NULL, added_at DOUBLE PRECISION NOT NULL);
CREATE TABLE rollouts (id INTEGER PRIMARY KEY, version TEXT NOT NULL, stages TEXT NOT NULL,
  health_window_s DOUBLE PRECISION NOT NULL, stage INTEGER NOT NULL, state TEXT NOT NULL,
  reason TEXT, started_at DOUBLE PRECISION NOT NULL, updated_at DOUBLE PRECISION NOT NULL);
CREATE TABLE rollout_targets (rollout BIGINT NOT NULL, concentrator TEXT NOT NULL,
  stage INTEGER NOT NULL, state TEXT NOT NULL, reason TEXT, command_id TEXT,
  detail TEXT NOT NULL, updated_at DOUBLE PRECISION NOT NULL,
  PRIMARY KEY (rollout, concentrator));
CREATE TABLE accounts (account TEXT PRIMARY KEY, meter TEXT NOT NULL UNIQUE,
  concentrator TEXT NOT NULL, multiplier TEXT NOT NULL, tariff TEXT NOT NULL,
  balance_cents BIGINT NOT NULL, grace_cents BIGINT NOT NULL, low_cents BIGINT NOT NULL,
  billed_slot BIGINT, billed_kwh TEXT, billed_amount TEXT NOT NULL, state TEXT NOT NULL,
  low_warned INTEGER NOT NULL, command_id TEXT,
  command_at DOUBLE PRECISION, created_at DOUBLE PRECISION NOT NULL);
CREATE TABLE ledger (id INTEGER PRIMARY KEY, account TEXT NOT NULL,
  at DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, ref TEXT NOT NULL,
  amount_cents BIGINT NOT NULL, balance_cents BIGINT NOT NULL, detail TEXT NOT NULL,
  UNIQUE (account, ref));
CREATE TABLE dr_enrolment (meter TEXT PRIMARY KEY, "group" TEXT NOT NULL,
  concentrator TEXT NOT NULL);
CREATE TABLE dr_events (id TEXT PRIMARY KEY, "group" TEXT NOT NULL,
  start_at DOUBLE PRECISION NOT NULL, end_at DOUBLE PRECISION NOT NULL,
  limit_kw TEXT NOT NULL, detail TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL);
"""

PREVIOUS_POSTGRES_DDL = """
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

CREATE TABLE IF NOT EXISTS meters (meter TEXT PRIMARY KEY, area TEXT NOT NULL,
  role TEXT NOT NULL, account TEXT NOT NULL, "group" TEXT NOT NULL, multiplier TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS meters_by_area ON meters (area);

CREATE TABLE IF NOT EXISTS command_counters (concentrator TEXT PRIMARY KEY,
  counter BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS commands (id TEXT PRIMARY KEY, concentrator TEXT NOT NULL,
  counter BIGINT NOT NULL, action TEXT NOT NULL, meters TEXT NOT NULL, params TEXT NOT NULL,
  not_before DOUBLE PRECISION NOT NULL, not_after DOUBLE PRECISION NOT NULL,
  issued_at DOUBLE PRECISION NOT NULL, issued_by TEXT NOT NULL, status TEXT NOT NULL,
  result TEXT, updated_at DOUBLE PRECISION NOT NULL, blob BYTEA NOT NULL,
  UNIQUE (concentrator, counter));
CREATE INDEX IF NOT EXISTS commands_by_status ON commands (status, concentrator, counter);
CREATE TABLE IF NOT EXISTS command_log (id BIGSERIAL PRIMARY KEY, command_id TEXT NOT NULL,
  at DOUBLE PRECISION NOT NULL, status TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS command_log_by_command ON command_log (command_id, id);
CREATE TABLE IF NOT EXISTS software_seen (concentrator TEXT PRIMARY KEY,
  software TEXT NOT NULL, wire_version INTEGER NOT NULL, seen_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS releases (version TEXT PRIMARY KEY, manifest BYTEA NOT NULL,
  signature BYTEA NOT NULL, payload BYTEA NOT NULL, added_at DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS rollouts (id BIGSERIAL PRIMARY KEY, version TEXT NOT NULL,
  stages TEXT NOT NULL,
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
CREATE TABLE IF NOT EXISTS ledger (id BIGSERIAL PRIMARY KEY, account TEXT NOT NULL,
  at DOUBLE PRECISION NOT NULL, kind TEXT NOT NULL, ref TEXT NOT NULL,
  amount_cents BIGINT NOT NULL, balance_cents BIGINT NOT NULL, detail TEXT NOT NULL,
  UNIQUE (account, ref));
CREATE TABLE IF NOT EXISTS dr_enrolment (meter TEXT PRIMARY KEY, "group" TEXT NOT NULL,
  concentrator TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dr_events (id TEXT PRIMARY KEY, "group" TEXT NOT NULL,
  start_at DOUBLE PRECISION NOT NULL, end_at DOUBLE PRECISION NOT NULL,
  limit_kw TEXT NOT NULL, detail TEXT NOT NULL, created_at DOUBLE PRECISION NOT NULL);
"""

# The rows a receiver of the previous release had stored, in its own column order.
ROWS = [
    "INSERT INTO batches VALUES ('dc-1', 7, 1, 1795000100.5, 2, 1)",
    "INSERT INTO readings VALUES ('000000000001', 'energy_fwd_total', 1795000000, '123.45',"
    " 'kWh', 1795000002.5, 'poll', 'dc-1', 7)",
    "INSERT INTO readings VALUES ('000000000001', 'energy_fwd_total', 1795000900, '123.50',"
    " 'kWh', 1795000902.5, 'poll', 'dc-1', 7)",
    "INSERT INTO events (concentrator, seq, kind, severity, meter, detail, at) VALUES"
    " ('dc-1', 7, 'meter_state', 'warning', '000000000001', '{\"to\": \"offline\"}', 1795000001.0)",
    "INSERT INTO concentrators VALUES ('dc-1', 1795000100.5, 7)",
    "INSERT INTO meters VALUES ('000000000001', 'TA-1', 'total', '', '', '1')",
    "INSERT INTO command_counters VALUES ('dc-1', 3)",
]


def previous_sqlite(tmp_path: Path) -> str:
    path = tmp_path / "receiver.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(PREVIOUS_SQLITE_DDL)
    for row in ROWS:
        conn.execute(row)
    conn.close()
    return f"sqlite:///{path}"


def previous_postgres(url: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(PREVIOUS_POSTGRES_DDL)
        for row in ROWS:
            conn.execute(row)
    return url


@pytest.fixture(params=["sqlite", "postgres"])
def previous_release_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return previous_sqlite(tmp_path)
    return previous_postgres(request.getfixturevalue("pg_url"))


def revision(url: str) -> str | None:
    with backend_for(url)().engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_a_database_of_the_previous_release_opens_and_keeps_working(
    previous_release_db: str,
) -> None:
    url = previous_release_db
    assert revision(url) is None
    s = open_storage(url)
    try:
        # Its rows read back as they were written.
        assert [(r.slot, r.value, r.read_at, r.concentrator, r.seq) for r in s.readings()] == [
            (1795000000, "123.45", 1795000002.5, "dc-1", 7),
            (1795000900, "123.50", 1795000902.5, "dc-1", 7),
        ]
        assert s.events() == [
            (
                "dc-1",
                Event("meter_state", "warning", "000000000001", {"to": "offline"}, 1795000001.0),
            )
        ]
        [info] = s.concentrators()
        assert (info.concentrator, info.batches, info.readings, info.max_seq) == ("dc-1", 1, 2, 7)
        assert s.archive() == [MeterRecord("000000000001", "TA-1", "total", "", "", Decimal(1))]
        # ... and it keeps working: the old batch row still dedupes, new ones are stored,
        # ids and counters go on from where the previous release left them.
        old = [Reading("000000000001", "energy_fwd_total", 1795000000, "123.45", "kWh", 1.0)]
        assert s.ingest("dc-1", 7, 1, old, [], 2.0) == (IngestResult.DUPLICATE, 0)
        new = [Reading("000000000001", "energy_fwd_total", 1795001800, "123.60", "kWh", 3.0)]
        event = Event("meter_state", "info", "000000000001", {"to": "online"}, 1795001801.0)
        assert s.ingest("dc-1", 8, 1, [*old, *new], [event], 4.0) == (IngestResult.STORED, 1)
        assert [e for _, e in s.events()][-1] == event and len(s.events()) == 2
        key = wire_commands.new_key()
        assert commands.issue(s, key, concentrator="dc-1", action="time_sync").counter == 4
    finally:
        s.close()
    assert revision(url) == HEAD  # stamped as 0001, then migrated to the newest schema
    s = open_storage(url)
    try:
        assert len(s.readings()) == 3
    finally:
        s.close()


def test_an_older_database_gets_the_tables_it_lacks(tmp_path: Path) -> None:
    """A release before the archive and the commands added those tables when it opened
    a database; such a database, never opened by the previous release, gets them."""
    url = previous_sqlite(tmp_path)
    with sqlite3.connect(tmp_path / "receiver.db") as conn:
        for table in ("meters", "command_counters", "commands", "command_log", "accounts"):
            conn.execute(f"DROP TABLE {table}")
    s = open_storage(url)
    try:
        assert len(s.readings()) == 2 and s.archive() == [] and s.commands() == []
    finally:
        s.close()
    assert revision(url) == HEAD


def test_a_table_that_is_not_ours_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE readings (id INTEGER PRIMARY KEY, reading TEXT)")
    with pytest.raises(StorageError, match="table readings is not the receiver's"):
        open_storage(f"sqlite:///{path}")
    with sqlite3.connect(path) as conn:  # left as it was
        assert [r[0] for r in conn.execute("SELECT name FROM sqlite_master")] == ["readings"]


@pytest.fixture(params=["sqlite", "postgres"])
def new_db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'new.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


def test_the_migrations_build_exactly_the_schema(new_db: str) -> None:
    open_storage(new_db).close()
    engine = backend_for(new_db)().engine
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert compare_metadata(context, metadata) == []
        assert context.get_current_revision() == HEAD
        # Opening it again changes nothing (no second run of a revision).
        assert conn.execute(text("SELECT count(*) FROM alembic_version")).scalar() == 1
    engine.dispose()
