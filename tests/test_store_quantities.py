"""A store the previous release wrote migrates to canonical quantity names in place
(schema 3, `concentrator.storage.schema._schema_v3`; issue 18, item 6): every reading,
delivered or still in the outbox, survives under its canonical name and unit."""

from __future__ import annotations

import sqlite3
from decimal import Decimal
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from concentrator.storage import SCHEMA_VERSION, Store
from concentrator.storage.codec import pack_value, unpack_value
from concentrator.storage.schema import MIGRATIONS
from drivers.quantity_map import shift_decimal

SLOT0 = 1_767_225_600  # 2026-01-01 00:00 UTC
SLOT_S = 900

# (meter, quantity, unit, value) as the previous release stored them: the SDM meter
# "7" under the register map's names, powers in W; DL/T 645 meters as they are now.
OLD_ROWS = [
    ("7", "energy_import", "kWh", "1234.56"),
    ("7", "energy_export", "kWh", "12.5"),
    ("7", "energy_total", "kWh", "1247.06"),
    ("7", "voltage_l1", "V", "230.4"),
    ("7", "current_l1", "A", "5.125"),
    ("7", "power_l1", "W", "1180.5"),
    ("7", "power_l2", "W", "007"),  # kept as text by the packing
    ("7", "power_l3", "W", "0.1234567890123"),  # 13 decimals: 16 after, too many to pack
    ("7", "power_total", "W", "-20"),
    ("7", "frequency", "Hz", "50.01"),
    ("7", "reactive_energy_total", "kvarh", "3.25"),
    ("000000000001", "energy_fwd_total", "kWh", "100.01"),
    ("000000000001", "power_total", "kW", "1.2345"),
    ("000000000001", "voltage_a", "V", "229.9"),
]
CANONICAL = {
    ("7", "energy_fwd_total", "kWh", "1234.56"),
    ("7", "energy_rev_total", "kWh", "12.5"),
    ("7", "energy_combined_total", "kWh", "1247.06"),
    ("7", "voltage_a", "V", "230.4"),
    ("7", "current_a", "A", "5.125"),
    ("7", "power_a", "kW", "1.1805"),
    ("7", "power_b", "kW", "0.007"),
    ("7", "power_c", "kW", "0.0001234567890123"),
    ("7", "power_total", "kW", "-0.020"),
    ("7", "frequency", "Hz", "50.01"),
    ("7", "reactive_energy_total", "kvarh", "3.25"),
    ("000000000001", "energy_fwd_total", "kWh", "100.01"),
    ("000000000001", "power_total", "kW", "1.2345"),
    ("000000000001", "voltage_a", "V", "229.9"),
}


def _previous_release_store(path: Path, slots: int) -> None:
    """The file as the previous release left it: schema 2, built by its migrations, its
    rows written with its own SQL (dictionary ids, packed values)."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    for migrate in MIGRATIONS[:2]:
        migrate(conn)
    conn.execute("PRAGMA user_version = 2")

    def ident(table: str, name: str) -> int:
        conn.execute(f"INSERT OR IGNORE INTO {table} (name) VALUES (?)", (name,))
        return int(conn.execute(f"SELECT id FROM {table} WHERE name = ?", (name,)).fetchone()[0])

    conn.execute("INSERT INTO batches VALUES (1, ?, ?)", (SLOT0 + 60.0, SLOT0 + 61.0))
    conn.execute("INSERT INTO counters VALUES ('batch', 1)")
    for meter, quantity, unit, value in OLD_ROWS:
        conn.execute(
            "INSERT OR IGNORE INTO series (meter_id, quantity_id) VALUES (?, ?)",
            (ident("meters", meter), ident("quantities", quantity)),
        )
        series = conn.execute(
            "SELECT id FROM series WHERE meter_id = ? AND quantity_id = ?",
            (ident("meters", meter), ident("quantities", quantity)),
        ).fetchone()[0]
        for k in range(slots):
            delivered = k == 0  # the first slot went up already; the rest is in the outbox
            conn.execute(
                "INSERT INTO readings (series_id, slot, value, unit_id, read_lag_ms, source,"
                " uplink_seq, delivered) VALUES (?, ?, ?, ?, 2500, 0, ?, ?)",
                (series, SLOT0 + k * SLOT_S, pack_value(value), ident("units", unit),
                 1 if delivered else None, int(delivered)),
            )  # fmt: skip
    missing_series = conn.execute(
        "SELECT s.id FROM series s JOIN quantities q ON q.id = s.quantity_id"
        " WHERE q.name = 'energy_import'"
    ).fetchone()[0]
    conn.execute(
        "INSERT INTO missing VALUES (?, ?, 'no reply')", (SLOT0 + slots * SLOT_S, missing_series)
    )
    conn.execute("COMMIT")
    conn.close()


def test_a_store_of_the_previous_release_keeps_every_reading_under_canonical_names(
    tmp_path: Path,
) -> None:
    db = tmp_path / "store.db"
    _previous_release_store(db, slots=3)
    with Store.open(db) as s:
        rows = s.get_readings()
        assert len(rows) == len(OLD_ROWS) * 3  # nothing lost
        for k in range(3):
            at_slot = {
                (r.reading.meter, r.reading.quantity, r.reading.unit, r.reading.value)
                for r in rows
                if r.reading.slot == SLOT0 + k * SLOT_S
            }
            assert at_slot == CANONICAL
        assert all(r.reading.read_at == r.reading.slot + 2.5 for r in rows)
        # delivery state is the row's, untouched: the first slot delivered, the rest queued
        assert {r.batch_id for r in rows if r.reading.slot == SLOT0} == {1}
        assert {r.batch_id for r in rows if r.reading.slot != SLOT0} == {None}
        assert [(m.meter, m.quantity, m.reason) for m in s.missing()] == [
            ("7", "energy_fwd_total", "no reply")
        ]
        # the outbox now sends canonical names
        batch = s.take_batch(1000, 10)
        assert batch is not None
        assert {r.reading.quantity for r in batch.readings if r.reading.meter == "7"} == {
            q for m, q, _, _ in CANONICAL if m == "7"
        }
        assert s.integrity_check() == []
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        in_use = {
            n
            for (n,) in raw.execute(
                "SELECT DISTINCT q.name FROM series s JOIN quantities q ON q.id = s.quantity_id"
            )
        }
        assert not in_use & {"energy_import", "energy_export", "energy_total", "power_l1"}
    finally:
        raw.close()


def test_a_slot_already_held_under_the_canonical_name_keeps_its_old_name(tmp_path: Path) -> None:
    # A meter that was read as Modbus (power_l1, W) and, after a change of protocol
    # setting, as DL/T 645 (power_a, kW) in the same slot: both readings stay.
    db = tmp_path / "store.db"
    _previous_release_store(db, slots=2)
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO quantities (name) VALUES ('power_a')")
    conn.execute("INSERT OR IGNORE INTO units (name) VALUES ('kW')")
    conn.execute(
        "INSERT INTO series (meter_id, quantity_id) SELECT m.id, q.id FROM meters m, quantities q"
        " WHERE m.name = '7' AND q.name = 'power_a'"
    )
    conn.execute(
        "INSERT INTO readings (series_id, slot, value, unit_id, read_lag_ms, source, delivered)"
        " SELECT s.id, ?, ?, u.id, 0, 0, 0 FROM series s, units u"
        " JOIN quantities q ON q.id = s.quantity_id JOIN meters m ON m.id = s.meter_id"
        " WHERE m.name = '7' AND q.name = 'power_a' AND u.name = 'kW'",
        (SLOT0, pack_value("1.1")),
    )
    conn.commit()
    conn.close()
    with Store.open(db) as s:
        rows = [r.reading for r in s.get_readings(meter="7")]
        assert len(rows) == 11 * 2 + 1
        kept = [(r.quantity, r.unit, r.value, r.slot) for r in rows if "power_" in r.quantity]
        assert ("power_a", "kW", "1.1", SLOT0) in kept
        assert ("power_l1", "W", "1180.5", SLOT0) in kept  # the slot was taken: kept as it was
        assert ("power_a", "kW", "1.1805", SLOT0 + SLOT_S) in kept  # the free slot moved


@given(st.decimals(allow_nan=False, allow_infinity=False, places=4, max_value=10**12,
                   min_value=-(10**12)))  # fmt: skip
def test_the_sql_rescale_of_a_packed_value_equals_decoding_and_packing_again(
    value: Decimal,
) -> None:
    packed = pack_value(format(value, "f"))
    assert isinstance(packed, int)
    with sqlite3.connect(":memory:") as conn:
        (sql,) = conn.execute("SELECT ? + 3 WHERE (? & 15) <= 12", (packed, packed)).fetchone()
    assert unpack_value(sql) == shift_decimal(unpack_value(packed), -3)
