"""The store's schema and its migrations: what is in the SQLite file, and why so small.

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

The state table (schema version 2) keeps small named values across restarts. Schema
version 3 renames the previous release's Modbus quantity names to the canonical ones.
Schema version 4 keeps the sealed bytes of every batch in flight (``sealed``), so a
batch coded against references lost at a restart is resent as the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from concentrator.storage.codec import SCALE_MASK, pack_value, unpack_value
from contract.quantities import LEGACY_RENAMES
from drivers.quantity_map import shift_decimal

if TYPE_CHECKING:
    import sqlite3  # the annotations' type; the driver is `engine`'s to load


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


def _schema_v3(conn: sqlite3.Connection) -> None:
    """Canonical quantity names (`contract.quantities`, docs/quantities.md): readings of
    Modbus meters stored under the register map's names (``energy_import``, ``power_l1``
    in W, ...) are renamed and rescaled in place by `LEGACY_RENAMES`, so the receiver's
    applications see them. No reading is dropped: one whose slot the meter already has
    under the new name (only if a meter changed protocol) keeps its old name."""

    def ident(table: str, name: str, create: bool) -> int | None:
        if create:
            conn.execute(f"INSERT OR IGNORE INTO {table} (name) VALUES (?)", (name,))
        row = conn.execute(f"SELECT id FROM {table} WHERE name = ?", (name,)).fetchone()
        return None if row is None else int(row[0])

    for r in LEGACY_RENAMES:
        old_q, old_u = ident("quantities", r.old, False), ident("units", r.old_unit, False)
        if old_q is None or old_u is None:
            continue
        new_q, new_u = ident("quantities", r.new, True), ident("units", r.new_unit, True)
        series = conn.execute(
            "SELECT id, meter_id FROM series WHERE quantity_id = ?", (old_q,)
        ).fetchall()
        for series_id, meter_id in series:
            target = series_id
            if new_q != old_q:
                row = conn.execute(
                    "SELECT id FROM series WHERE meter_id = ? AND quantity_id = ?",
                    (meter_id, new_q),
                ).fetchone()
                if row is None:
                    conn.execute("UPDATE series SET quantity_id = ? WHERE id = ?", (new_q, target))
                else:
                    target = int(row[0])
                    for table in ("readings", "missing"):  # a taken slot stays where it is
                        conn.execute(
                            f"UPDATE OR IGNORE {table} SET series_id = ? WHERE series_id = ?",
                            (target, series_id),
                        )
        if old_u == new_u and r.shift == 0:
            continue
        # One pass over the readings per rename, whatever the number of meters.
        where = "series_id IN (SELECT id FROM series WHERE quantity_id = ?) AND unit_id = ?"
        if r.shift < 0:
            # A packed value is mantissa * 16 + decimals (codec.py): times 10**shift is
            # the same digits with -shift more decimals, while they fit in 4 bits.
            conn.execute(
                f"UPDATE readings SET value = value - ?, unit_id = ? WHERE {where}"
                " AND typeof(value) = 'integer' AND (value & ?) <= ?",
                (r.shift, new_u, new_q, old_u, SCALE_MASK, SCALE_MASK + r.shift),
            )
        # What is left (text values, too many decimals): decoded, shifted, packed again.
        rest = conn.execute(f"SELECT id, value FROM readings WHERE {where}", (new_q, old_u))
        conn.executemany(
            "UPDATE readings SET value = ?, unit_id = ? WHERE id = ?",
            [(pack_value(shift_decimal(unpack_value(v), r.shift)), new_u, i) for i, v in rest],
        )


def _schema_v4(conn: sqlite3.Connection) -> None:
    """The sealed payload of each batch in flight, written in the transaction that takes
    the batch and deleted when it is acked or requeued: after a restart the uplink
    resends these bytes under their own ``seq`` (a coded batch cannot be sealed again
    identically, its references were in memory). Additive: an older reader ignores it."""
    conn.execute("CREATE TABLE sealed (batch_id INTEGER PRIMARY KEY, payload BLOB NOT NULL)")


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _schema_v1,
    _schema_v2,
    _schema_v3,
    _schema_v4,
)
SCHEMA_VERSION = len(MIGRATIONS)
# The oldest software schema that can still use a store at SCHEMA_VERSION. Additive
# migrations (a new table or index) keep it; one that older code would misread raises
# it. It is written into the store, so that older software — a rolled-back release —
# can tell whether it may open a store a newer release has migrated.
STORE_MIN_READER = 2
MIN_READER_KEY = "store:min_reader_schema"
