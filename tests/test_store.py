"""Tests for concentrator.storage against real SQLite files.

Covers exactly-once storage (unique key, exact value strings), outbox order and batch
life cycle across reopen, counters that never repeat, retention, quota eviction with
explicit loss events, corruption and full-disk handling, and kill -9 at random moments.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Literal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from concentrator.storage import SCHEMA_VERSION, Store, StoreError, StoreFullError
from concentrator.storage.codec import DECIMAL as _DECIMAL
from concentrator.storage.codec import pack_value as _pack_value
from concentrator.storage.codec import unpack_value as _unpack_value
from concentrator.storage.schema import MIN_READER_KEY
from contract.records import Event, Reading

REPO = Path(__file__).resolve().parents[1]
SLOT0 = 1_700_000_100 - 1_700_000_100 % 900  # a 15-minute boundary
SLOT_S = 900
LINE_TIMEOUT_S = 20.0  # generous: a loaded CI box may take seconds to start Python


def reading(
    meter: str = "m1",
    slot_index: int = 0,
    value: str = "1.00",
    *,
    quantity: str = "energy_import",
    source: str = "poll",
) -> Reading:
    slot = SLOT0 + slot_index * SLOT_S
    return Reading(meter, quantity, slot, value, "kWh", slot + 2.5, source)


def series_readings(meters: int, quantities: int, slots: range) -> list[Reading]:
    return [
        reading(f"m{m:04d}", s, f"{s * 10 + m}.{q:02d}", quantity=f"q{q}")
        for s in slots
        for m in range(meters)
        for q in range(quantities)
    ]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "store.db"


@pytest.fixture
def store(db: Path) -> Iterator[Store]:
    with Store.open(db) as s:
        yield s


# ------------------------------------------------------------------ open / schema


def test_open_creates_wal_database_with_schema_version(db: Path) -> None:
    with Store.open(db) as s:
        assert s.integrity_check() == []
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental
    finally:
        raw.close()


def test_a_version_1_store_with_data_migrates_forward_intact(db: Path) -> None:
    # A store written by the first release: schema 1 (no `state` table), with readings,
    # an event and a missing record. Opening it migrates it and keeps every row.
    with Store.open(db) as s:
        s.add_readings([reading(f"m{m}", i) for m in range(3) for i in range(4)])
        s.add_event(Event("daemon_start", "info", None, {"version": "0.1"}, time.time()))
        s.record_missing(f"{9:012d}", "energy_fwd_total", SLOT0, "no reply")
    raw = sqlite3.connect(db)
    raw.execute("DROP TABLE state")
    raw.execute("DROP TABLE sealed")  # schema 4's
    raw.execute("PRAGMA user_version = 1")
    raw.commit()
    raw.close()
    with Store.open(db) as s:
        assert len(s.get_readings()) == 12
        assert [e.event.kind for e in s.events()] == ["daemon_start"]
        assert [m.reason for m in s.missing()] == ["no reply"]
        s.set_state("task:x:last_slot", str(SLOT0))  # the table schema 2 added works
        assert s.get_state("task:x:last_slot") == str(SLOT0)
        assert s.integrity_check() == []
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        raw.close()


def test_newer_schema_is_refused_and_left_in_place(db: Path) -> None:
    Store.open(db).close()
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    # The newer release declares that only its own schema can use the store now.
    raw.execute("UPDATE state SET value = ? WHERE key = ?", (str(SCHEMA_VERSION + 1),
                MIN_READER_KEY))  # fmt: skip
    raw.commit()
    raw.close()
    with pytest.raises(StoreError, match="needs software of schema"):
        Store.open(db)
    assert db.exists()
    assert not list(db.parent.glob("*.corrupt-*"))


def test_a_rolled_back_release_opens_a_store_a_newer_one_migrated_compatibly(db: Path) -> None:
    """A newer release added (say) a table and left the minimum reader alone: the
    release it rolls back to goes on using the store, readings and all."""
    with Store.open(db) as store:
        store.add_readings([reading()])
    raw = sqlite3.connect(db)
    raw.execute("CREATE TABLE added_by_a_newer_release (x INTEGER)")
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.commit()
    raw.close()
    with Store.open(db) as store:
        assert len(store.get_readings()) == 1
        store.add_readings([reading(slot_index=1)])


def test_use_after_close_raises_store_error(db: Path) -> None:
    s = Store.open(db)
    s.close()
    s.close()  # idempotent
    with pytest.raises(StoreError, match="closed"):
        s.add_readings([reading()])


def test_unopenable_path_is_an_error_not_corruption(tmp_path: Path) -> None:
    directory = tmp_path / "a-directory"
    directory.mkdir()
    with pytest.raises(StoreError):
        Store.open(directory)
    assert directory.is_dir()
    assert not list(tmp_path.glob("*.corrupt-*"))


# ------------------------------------------------------------- readings / dedupe


def test_add_readings_counts_new_and_ignores_duplicates(store: Store) -> None:
    first = [reading("m1", 0), reading("m2", 0), reading("m1", 1)]
    assert store.add_readings(first) == 3
    # A re-read of the same slot, even with another value, must not make a second row.
    again = [reading("m1", 0, "9.99"), reading("m2", 0), reading("m2", 1)]
    assert store.add_readings(again) == 1
    assert store.add_readings([reading("m3", 0), reading("m3", 0)]) == 1  # within one call
    rows = store.get_readings()
    assert len(rows) == 5
    by_key = {(r.reading.meter, r.reading.slot): r.reading for r in rows}
    assert by_key[("m1", SLOT0)].value == "1.00"  # the first value wins
    assert store.add_readings([]) == 0


def test_stored_reading_round_trips(store: Store) -> None:
    original = [
        reading("m1", 0, source="poll"),
        reading("m1", 1, source="backfill"),
        reading("m2", 0, source="ondemand", quantity="voltage"),
    ]
    store.add_readings(original)
    assert [r.reading for r in store.get_readings()] == sorted(
        original, key=lambda r: (r.slot, r.meter)
    )
    assert all(r.batch_id is None for r in store.get_readings())


def test_read_at_is_kept_to_the_millisecond(store: Store) -> None:
    late = Reading("m1", "e", SLOT0, "1", "kWh", SLOT0 + 86_400 * 3 + 0.1234)
    early = Reading("m2", "e", SLOT0, "1", "kWh", SLOT0 - 1.5)  # meter clock ahead
    store.add_readings([late, early])
    got = {r.reading.meter: r.reading.read_at for r in store.get_readings()}
    assert got == {"m1": SLOT0 + 86_400 * 3 + 0.123, "m2": SLOT0 - 1.5}


EXACT_VALUES = [
    "0.50",
    "-1.234",
    "12345.67",
    "0",
    "0.00",
    "-0.5",
    "99999999.9999",
    "-123456789012345.678",
    # Spellings the packed integer cannot restore: stored as the original text.
    "007",
    "+5",
    "-0",
    "-0.0",
    "1e3",
    ".5",
    "5.",
    "0.1234567890123456",  # 16 fraction digits
    "123456789012345678901234567890.5",  # wider than 64 bits
]


def test_values_come_back_as_exactly_the_stored_string(store: Store, db: Path) -> None:
    store.add_readings([reading(f"m{i}", 0, v) for i, v in enumerate(EXACT_VALUES)])
    got = {r.reading.meter: r.reading.value for r in store.get_readings()}
    assert got == {f"m{i}": v for i, v in enumerate(EXACT_VALUES)}
    # The common case really is the compact integer, not text.
    raw = sqlite3.connect(db)
    try:
        types = dict(
            raw.execute(
                "SELECT m.name, typeof(r.value) FROM readings r"
                " JOIN series s ON s.id = r.series_id JOIN meters m ON m.id = s.meter_id"
            ).fetchall()
        )
    finally:
        raw.close()
    assert types["m0"] == types["m2"] == types["m7"] == "integer"
    assert types["m8"] == types["m11"] == "text"


@pytest.mark.parametrize("bad", ["", "abc", "1,5", "NaN", "Infinity", " 1", "1.2.3", "٣"])
def test_non_decimal_value_is_rejected_before_anything_is_stored(store: Store, bad: str) -> None:
    with pytest.raises(ValueError, match="not a decimal"):
        store.add_readings([reading("m1", 0), reading("m2", 0, bad)])
    assert store.get_readings() == []


def test_unknown_source_is_rejected(store: Store) -> None:
    with pytest.raises(ValueError, match="source"):
        store.add_readings([reading(source="guess")])


@given(st.from_regex(_DECIMAL, fullmatch=True))
def test_value_codec_round_trips_any_decimal(value: str) -> None:
    assert _unpack_value(_pack_value(value)) == value


@given(st.decimals(allow_nan=False, allow_infinity=False))
def test_value_codec_round_trips_python_decimals(value: object) -> None:
    text = str(value)
    if _DECIMAL.fullmatch(text):
        assert _unpack_value(_pack_value(text)) == text


def test_get_readings_filters(store: Store) -> None:
    store.add_readings(series_readings(3, 2, range(4)))
    assert len(store.get_readings()) == 24
    assert len(store.get_readings(meter="m0001")) == 8
    assert len(store.get_readings(meter="m0001", quantity="q1")) == 4
    window = store.get_readings(since=SLOT0 + SLOT_S, until=SLOT0 + 3 * SLOT_S)
    assert {r.reading.slot for r in window} == {SLOT0 + SLOT_S, SLOT0 + 2 * SLOT_S}
    assert len(store.get_readings(limit=5)) == 5
    assert store.get_readings(meter="nobody") == []


def test_concurrent_threads_are_serialised(store: Store) -> None:
    chunks = [series_readings(5, 1, range(i * 10, i * 10 + 10)) for i in range(8)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        added = sum(pool.map(store.add_readings, chunks))
    assert added == 400
    assert store.integrity_check() == []


# --------------------------------------------------------------------- outbox


def test_outbox_order_events_first_then_oldest_slot_then_id(store: Store) -> None:
    store.add_readings([reading("b", 5), reading("a", 5)])
    store.add_readings([reading("c", 2)])  # backfill of an older slot, inserted later
    store.add_readings([reading("d", 9)])
    e1 = store.add_event(Event("clock_drift", "warning", "a", {"drift_s": 3}, SLOT0 + 1))
    e2 = store.add_event(Event("link_up", "info", None, {}, SLOT0 + 2))

    first = store.take_batch(max_readings=2, max_events=10)
    assert first is not None
    assert [e.id for e in first.events] == [e1, e2]
    assert [r.reading.meter for r in first.readings] == ["c", "b"]  # slot 2, then slot 5 by id
    assert all(r.batch_id == first.batch_id for r in first.readings)

    # An event recorded now goes ahead of the remaining backlog.
    e3 = store.add_event(Event("relay", "info", "d", {"state": "open"}, SLOT0 + 3))
    second = store.take_batch(max_readings=1, max_events=10)
    assert second is not None and second.batch_id > first.batch_id
    assert [e.id for e in second.events] == [e3]
    assert [r.reading.meter for r in second.readings] == ["a"]

    third = store.take_batch(max_readings=10, max_events=0)
    assert third is not None and [r.reading.meter for r in third.readings] == ["d"]
    assert store.take_batch(10, 10) is None


def test_batch_life_cycle_survives_reopen(db: Path) -> None:
    with Store.open(db) as s:
        s.add_readings(series_readings(2, 1, range(6)))
        s.add_event(Event("boot", "info", None, {"version": "0.1"}, SLOT0))
        b1 = s.take_batch(4, 10)
        b2 = s.take_batch(4, 10)
        assert b1 is not None and b2 is not None

    with Store.open(db) as s:
        # The uplink resends the same batches, unchanged, under the same ids.
        assert s.pending_batches() == [b1, b2]
        assert s.mark_delivered(b1.batch_id) is True
        assert s.mark_delivered(b1.batch_id) is False  # duplicate ack
        assert s.mark_delivered(9999) is False
        assert s.pending_batches() == [b2]
        assert s.requeue(b1.batch_id) == 0  # delivered batches stay delivered
        assert s.requeue(b2.batch_id) == 4
        assert s.pending_batches() == []
        b3 = s.take_batch(100, 10)
        assert b3 is not None and b3.batch_id > b2.batch_id
        assert [r.id for r in b3.readings[:4]] == [r.id for r in b2.readings]
        assert len(b3.readings) == 8
        backlog = s.backlog()
        assert (backlog.readings, backlog.events) == (8, 0)

    with Store.open(db) as s:
        # Start-up after a crash with b3 in flight: put it back and take it again.
        assert s.requeue_all_undelivered() == 8
        b4 = s.take_batch(100, 10)
        assert b4 is not None and b4.batch_id > b3.batch_id
        assert [r.id for r in b4.readings] == [r.id for r in b3.readings]
        s.mark_delivered(b4.batch_id)
        assert s.backlog().readings == 0
        delivered = [r for r in s.get_readings() if r.batch_id is not None]
        assert len(delivered) == 12


def test_take_batch_rejects_negative_sizes(store: Store) -> None:
    with pytest.raises(ValueError):
        store.take_batch(-1, 0)


def test_backlog_counts_outbox_and_in_flight(store: Store) -> None:
    assert store.backlog().oldest_slot is None
    store.add_readings([reading("m1", 3), reading("m1", 1), reading("m1", 2)])
    store.add_event(Event("boot", "info", None, {}, SLOT0))
    batch = store.take_batch(1, 0)
    assert batch is not None
    backlog = store.backlog()
    assert (backlog.readings, backlog.events) == (3, 1)
    assert backlog.oldest_slot == SLOT0 + SLOT_S  # in flight, but not yet acked
    assert backlog.oldest_read_at == SLOT0 + SLOT_S + 2.5
    store.mark_delivered(batch.batch_id)
    assert store.backlog().oldest_slot == SLOT0 + 2 * SLOT_S


# ------------------------------------------------------------------- counters


def test_counters_persist_and_never_repeat(db: Path) -> None:
    seen: list[int] = []
    modes: tuple[Literal["FULL", "NORMAL"], ...] = ("FULL", "NORMAL", "FULL")
    for synchronous in modes:
        with Store.open(db, synchronous=synchronous) as s:
            seen += [s.next_counter("nonce") for _ in range(5)]
            assert s.next_counter("other") >= 1
    assert seen == list(range(1, 16))


def test_batch_ids_never_repeat_after_requeue_and_reopen(db: Path) -> None:
    ids: list[int] = []
    for _ in range(3):
        with Store.open(db) as s:
            s.add_readings([reading("m", len(ids))])
            s.requeue_all_undelivered()
            batch = s.take_batch(10, 10)
            assert batch is not None
            ids.append(batch.batch_id)
    assert ids == sorted(set(ids))


# --------------------------------------------------------- events and missing


def test_events_round_trip_and_filter(store: Store) -> None:
    detail: dict[str, object] = {"drift_s": -4.5, "meters": ["a", "b"], "nested": {"x": 1}}
    first = store.add_event(Event("clock_drift", "warning", "a", detail, 100.0))
    store.add_event(Event("link_up", "info", None, {}, 200.0))
    all_events = store.events()
    assert all_events[0].id == first
    assert all_events[0].event == Event("clock_drift", "warning", "a", detail, 100.0)
    assert [e.event.kind for e in store.events(since=150.0)] == ["link_up"]
    assert [e.event.kind for e in store.events(kind="clock_drift")] == ["clock_drift"]
    with pytest.raises(TypeError):
        store.add_event(Event("bad", "info", None, {"x": object()}, 1.0))


def test_missing_slots_and_read_success(store: Store) -> None:
    day = SLOT0 - SLOT0 % 86_400
    store.add_readings([reading("m1", 0), reading("m1", 1), reading("m2", 0)])
    assert store.record_missing("m2", "energy_import", SLOT0 + SLOT_S, "timeout") is True
    assert store.record_missing("m2", "energy_import", SLOT0 + SLOT_S, "crc") is True
    assert store.record_missing("m1", "energy_import", SLOT0, "timeout") is False  # has reading
    store.record_missing("m3", "voltage", SLOT0, "no answer")
    assert [(m.meter, m.slot, m.reason) for m in store.missing()] == [
        ("m3", SLOT0, "no answer"),
        ("m2", SLOT0 + SLOT_S, "crc"),
    ]
    assert [m.meter for m in store.missing(meter="m2")] == ["m2"]

    by_meter = {
        r.key: (r.read, r.missing) for r in store.read_success(day, day + 86_400, by="meter")
    }
    assert by_meter == {"m1": (2, 0), "m2": (1, 1), "m3": (0, 1)}
    by_quantity = store.read_success(day, day + 86_400, by="quantity")
    assert {r.key: (r.read, r.missing) for r in by_quantity} == {
        "energy_import": (3, 1),
        "voltage": (0, 1),
    }
    (by_day,) = store.read_success(day, day + 86_400, by="day")
    assert (by_day.read, by_day.missing, by_day.rate) == (3, 2, 0.6)
    assert by_day.key == "2023-11-14"
    assert store.read_success(day + 86_400, day + 2 * 86_400, by="day") == []

    # Many at once, in one transaction: the one with a reading is skipped.
    assert store.record_missing_many([
        ("m4", "energy_import", SLOT0, "timeout"),
        ("m1", "energy_import", SLOT0 + SLOT_S, "timeout"),  # m1 was read then
        ("m4", "energy_import", SLOT0 + SLOT_S, "timeout"),
    ]) == 2  # fmt: skip
    assert [m.slot for m in store.missing(meter="m4")] == [SLOT0, SLOT0 + SLOT_S]
    store.add_readings([reading("m4", 0), reading("m4", 1)])  # both backfilled

    # A successful backfill fills the missing slot.
    store.add_readings([reading("m2", 1, source="backfill")])
    assert [m.meter for m in store.missing()] == ["m3"]


# ------------------------------------------------------------------ retention


def test_prune_deletes_only_rows_delivered_longer_than_retention_ago(db: Path) -> None:
    retention = 3600.0
    with Store.open(db, retention_s=retention) as s:
        s.add_readings([reading("m1", 0), reading("m1", 1), reading("m2", 0)])
        s.add_event(Event("boot", "info", None, {}, 1.0))
        batch = s.take_batch(2, 10)
        assert batch is not None
        delivered_at = SLOT0 + 10_000.0
        s.mark_delivered(batch.batch_id, now=delivered_at)
        s.record_missing("m3", "energy_import", SLOT0, "timeout")

        assert s.prune(delivered_at + retention - 1) == 0
        assert s.prune(delivered_at + retention + 1) == 3  # two readings and one event
        assert [r.reading.meter for r in s.get_readings()] == ["m1"]  # the undelivered one
        assert s.events() == []
        assert s.missing() == []
        assert s.stats().batches == 0
        assert s.integrity_check() == []


def test_prune_keeps_old_slots_delivered_recently(db: Path) -> None:
    with Store.open(db, retention_s=3600) as s:
        s.add_readings([reading("m1", 0, source="backfill")])
        batch = s.take_batch(10, 0)
        assert batch is not None
        now = SLOT0 + 30 * 86_400.0  # backfilled a month late
        s.mark_delivered(batch.batch_id, now=now)
        assert s.prune(now + 60) == 0
        assert s.prune(now + 3601) == 1


# ----------------------------------------------------------------------- quota


def _file_bytes(db: Path) -> int:
    return sum(Path(f"{db}{s}").stat().st_size for s in ("", "-wal") if Path(f"{db}{s}").exists())


LossRanges = list[tuple[str, str, int, int]]


def _loss_by_series(s: Store) -> tuple[Counter[tuple[str, str]], LossRanges]:
    """Sum loss events per (meter, quantity); also list each (meter, quantity, first, last)."""
    lost: Counter[tuple[str, str]] = Counter()
    ranges: LossRanges = []
    for e in s.events(kind="loss"):
        assert e.event.severity == "critical"
        detail = e.event.detail
        losses = detail["losses"]
        assert isinstance(losses, list)
        assert sum(x["count"] * len(x["meters"]) for x in losses) == detail["readings"]
        for x in losses:
            for meter in x["meters"]:
                lost[(meter, x["quantity"])] += x["count"]
                ranges.append((meter, x["quantity"], x["first_slot"], x["last_slot"]))
    return lost, ranges


def test_quota_evicts_delivered_then_oldest_undelivered_with_loss_events(db: Path) -> None:
    quota = 400 * 1024
    meters, quantities = 50, 4
    inserted: list[Reading] = []
    delivered: set[tuple[str, str, int]] = set()
    with Store.open(db, quota_bytes=quota) as s:
        for slot in range(60):
            batch = series_readings(meters, quantities, range(slot, slot + 1))
            s.add_readings(batch)
            inserted += batch
            # Every add_readings leaves the store within its quota.
            assert _file_bytes(db) <= quota
            if slot < 10:  # the link worked for the first ten slots
                taken = s.take_batch(10_000, 100)
                assert taken is not None
                s.mark_delivered(taken.batch_id)
                delivered |= {
                    (r.reading.meter, r.reading.quantity, r.reading.slot) for r in taken.readings
                }

        remaining = {
            (r.reading.meter, r.reading.quantity, r.reading.slot) for r in s.get_readings()
        }
        # Delivered readings went first and none of them was reported as lost.
        assert not delivered & remaining
        undelivered = {(r.meter, r.quantity, r.slot) for r in inserted} - delivered
        evicted = undelivered - remaining
        assert evicted, "the test must overflow the quota"
        lost, ranges = _loss_by_series(s)
        assert lost == Counter((m, q) for m, q, _ in evicted)
        # Oldest first: everything evicted is no newer than everything kept.
        assert max(slot for *_, slot in evicted) <= min(
            slot for *_, slot in undelivered & remaining
        )
        for meter, quantity, first, last in ranges:
            slots = {slot for m, q, slot in evicted if (m, q) == (meter, quantity)}
            assert first in slots and last in slots and first <= last
        assert s.integrity_check() == []


def test_enforce_quota_shrinks_an_oversized_file(db: Path) -> None:
    with Store.open(db) as s:
        s.add_readings(series_readings(100, 4, range(40)))  # 16,000 readings
    before = _file_bytes(db)
    quota = 256 * 1024
    assert before > 2 * quota
    with Store.open(db, quota_bytes=quota) as s:
        evicted = s.enforce_quota(SLOT0 + 86_400.0)
        assert evicted > 0
        after = _file_bytes(db)
        assert after <= quota < before
        lost, _ = _loss_by_series(s)
        assert sum(lost.values()) == evicted == 16_000 - s.stats().readings
        assert s.enforce_quota(SLOT0 + 86_400.0) == 0  # already within quota
        assert s.integrity_check() == []


def test_quota_evicts_the_rows_of_batches_in_flight_last_and_keeps_the_batches(db: Path) -> None:
    """A batch in flight may be at the receiver already: it stays in flight with its
    events, so they are sent once (in it), never again from the outbox."""
    with Store.open(db) as s:
        s.add_readings(series_readings(100, 4, range(40)))
        s.add_event(Event("boot", "info", None, {}, 1.0))
        taken = s.take_batch(2_000, 10)  # the oldest 2,000 readings and the event
        assert taken is not None and len(taken.events) == 1
        later = s.take_batch(2_000, 10)  # the next 2,000
        assert later is not None
    with Store.open(db, quota_bytes=120 * 1024) as s:
        s.enforce_quota(SLOT0 + 86_400.0)
        pending = s.pending_batches()
        assert [b.batch_id for b in pending] == [taken.batch_id, later.batch_id]
        assert pending[0].readings == () and pending[1].readings == ()
        assert [e.event.kind for e in pending[0].events] == ["boot"]  # still in its batch
        losses = [e.event.detail for e in s.events(kind="loss")]
        for batch in (taken, later):
            (detail,) = [d for d in losses if d.get("batch_id") == batch.batch_id]
            assert detail["readings"] == 2_000 and detail["in_flight"] is True
        assert sum(d["readings"] for d in losses) == 16_000 - s.stats().readings
        # Nothing of the batches went back into the outbox: a new batch holds neither
        # their readings nor their event, only the loss events.
        new = s.take_batch(100_000, 100)
        assert new is None or (
            {e.event.kind for e in new.events} <= {"loss"}
            and not {r.reading.slot for r in new.readings}
            & {r.reading.slot for r in (*taken.readings, *later.readings)}
        )
        assert s.mark_delivered(taken.batch_id) is True  # the receiver had it: its ack
        rest = [later.batch_id] + ([new.batch_id] if new is not None else [])
        assert [b.batch_id for b in s.pending_batches()] == rest
        assert [e.batch_id for e in s.events(kind="boot")] == [taken.batch_id]  # sent once
        assert s.integrity_check() == []


# ------------------------------------------------------------------- damage


def test_garbage_file_is_moved_aside_and_reported(db: Path) -> None:
    garbage = b"this is not an SQLite database\n" * 200
    db.write_bytes(garbage)
    with Store.open(db) as s:
        (event,) = s.events(kind="store_corrupt")
        assert event.event.severity == "critical"
        moved_to = Path(str(event.event.detail["moved_to"]))
        assert moved_to.name.startswith("store.db.corrupt-")
        assert moved_to.read_bytes() == garbage
        assert s.integrity_check() == []
        assert s.add_readings([reading()]) == 1


def test_wal_of_a_damaged_database_is_moved_with_it(tmp_path: Path, db: Path) -> None:
    # The state a crash leaves behind: committed frames still in the -wal file.
    live = tmp_path / "live.db"
    writer = sqlite3.connect(live, isolation_level=None)
    writer.execute("PRAGMA journal_mode = WAL")
    writer.execute("PRAGMA wal_autocheckpoint = 0")
    writer.execute("CREATE TABLE t (x)")
    writer.executemany("INSERT INTO t VALUES (?)", [(f"row {i}",) for i in range(5000)])
    writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    writer.execute("INSERT INTO t VALUES ('in the wal')")
    main = bytearray(live.read_bytes())
    main[4096:] = b"\xff" * (len(main) - 4096)  # everything but page 1 destroyed
    db.write_bytes(bytes(main))
    wal = Path(f"{live}-wal").read_bytes()
    assert wal
    Path(f"{db}-wal").write_bytes(wal)
    writer.close()

    with Store.open(db) as s:
        (event,) = s.events(kind="store_corrupt")
        moved_to = Path(str(event.event.detail["moved_to"]))
        # The last commit is kept for forensics: SQLite checkpoints it into the damaged
        # file when the checking connection closes, or the -wal is moved along.
        aside = moved_to.read_bytes()
        if Path(f"{moved_to}-wal").exists():
            aside += Path(f"{moved_to}-wal").read_bytes()
        assert b"in the wal" in aside
        # ...and none of it leaks into the fresh database.
        assert s.integrity_check() == []
        assert s.get_readings() == []
    raw = sqlite3.connect(db)
    try:
        assert raw.execute("SELECT count(*) FROM sqlite_schema WHERE name = 't'").fetchone()[0] == 0
    finally:
        raw.close()


def test_damaged_pages_are_detected_and_moved_aside(db: Path) -> None:
    with Store.open(db) as s:
        s.add_readings(series_readings(50, 4, range(20)))
    data = bytearray(db.read_bytes())
    page = 4096
    rng = random.Random(7)
    for offset in range(2 * page, len(data) - page, 3 * page):  # keep page 1 (header, schema)
        data[offset : offset + page] = rng.randbytes(page)
    db.write_bytes(bytes(data))

    with Store.open(db) as s:
        (event,) = s.events(kind="store_corrupt")
        assert Path(str(event.event.detail["moved_to"])).exists()
        assert event.event.detail["reason"]
        assert s.get_readings() == []
    # Reopening the fresh store reports nothing new.
    with Store.open(db) as s:
        assert len(s.events(kind="store_corrupt")) == 1
        assert len(list(db.parent.glob("store.db.corrupt-*"))) == 1


def test_empty_file_is_a_new_database_not_corruption(db: Path) -> None:
    db.write_bytes(b"")
    with Store.open(db) as s:
        assert s.events() == []


# ------------------------------------------------------------------ full disk


def test_full_disk_raises_store_full_error_and_keeps_committed_data(db: Path) -> None:
    with Store.open(db) as s:
        s.add_readings(series_readings(10, 1, range(10)))
        conn = s._conn
        assert conn is not None
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        # SQLite reports SQLITE_FULL when the file would grow past max_page_count,
        # exactly as it does on a full disk.
        conn.execute(f"PRAGMA max_page_count = {pages}")
        with pytest.raises(StoreFullError, match=str(db)):
            s.add_readings([reading("new-meter", 0), *series_readings(100, 4, range(100, 110))])
        assert len(s.get_readings()) == 100
        with pytest.raises(StoreFullError):
            s.add_event(Event("big", "info", None, {"blob": "x" * 100_000}, 1.0))

        # Once there is room again the store carries on (no stale dictionary ids).
        conn.execute("PRAGMA max_page_count = 1000000")
        assert s.add_readings([reading("new-meter", 0)]) == 1
        assert s.integrity_check() == []
    with Store.open(db) as s:
        assert len(s.get_readings()) == 101


# -------------------------------------------------------------------- size


def test_bytes_per_reading_is_well_under_60(db: Path) -> None:
    with Store.open(db, synchronous="NORMAL") as s:
        for slot in range(24):
            s.add_readings(series_readings(200, 4, range(slot, slot + 1)))
            while (batch := s.take_batch(1000, 10)) is not None:
                s.mark_delivered(batch.batch_id)
        stats = s.stats()
    assert stats.readings == 19_200
    assert stats.bytes_per_reading is not None and stats.bytes_per_reading < 56


# -------------------------------------------------------------------- kill -9

# The child adds one slot for every meter and quantity per add_readings call, and prints
# the slot's index once the call has returned. Calls are large (2,000 readings), so
# most kills land inside a transaction. On each restart the child first re-adds the
# last slot it finds, to exercise the unique key.
KILL_METERS, KILL_QUANTITIES = 500, 4
PER_CALL = KILL_METERS * KILL_QUANTITIES
CHILD = f"""
import sys
from pathlib import Path
from contract.records import Reading
from concentrator.storage import Store

store = Store.open(Path(sys.argv[1]))
index = max(store.stats().readings // {PER_CALL} - 1, 0)
print("ready", flush=True)
for index in range(index, index + 100_000):
    slot = {SLOT0} + index * {SLOT_S}
    store.add_readings([
        Reading(f"m{{m}}", f"q{{q}}", slot, f"{{index}}.{{m:03d}}{{q}}", "kWh", slot + 1.5)
        for m in range({KILL_METERS})
        for q in range({KILL_QUANTITIES})
    ])
    print(index, flush=True)
"""


def _line_queue(stream: object) -> queue.Queue[str | None]:
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _next_line(lines: queue.Queue[str | None], proc: subprocess.Popen[str]) -> str | None:
    try:
        return lines.get(timeout=LINE_TIMEOUT_S)
    except queue.Empty:
        proc.kill()
        pytest.fail(f"child printed nothing for {LINE_TIMEOUT_S}s: {proc.stderr!r}")


def test_kill_9_at_random_moments_loses_nothing_committed(db: Path) -> None:
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    committed = -1  # highest slot index the child reported as committed
    period = 0.01  # seconds per add_readings call in the child, measured below
    for round_ in range(10):
        where = f"round {round_}, seed {seed}"
        proc = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(db)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        try:
            lines = _line_queue(proc.stdout)
            assert _next_line(lines, proc) == "ready", where
            wanted = rng.randint(0, 8)
            started = time.monotonic()
            for _ in range(wanted):
                line = _next_line(lines, proc)
                assert line is not None, f"child died early ({where})"
                committed = max(committed, int(line))
            if wanted:
                period = (time.monotonic() - started) / wanted
            # Killing as soon as a line arrives would always hit the child at the same
            # point of its loop (just after print). Waiting a random part of one
            # add_readings period spreads the kills over the whole loop: building the
            # readings, inside the transaction, and during the commit.
            time.sleep(rng.uniform(0, period))
            proc.send_signal(signal.SIGKILL)
        finally:
            proc.kill()
            proc.wait(timeout=LINE_TIMEOUT_S)
        # Lines printed before the kill that we had not read yet count too.
        while (line := _next_line(lines, proc)) is not None:
            committed = max(committed, int(line))

        with Store.open(db) as s:
            assert s.integrity_check() == [], where
            assert s.events(kind="store_corrupt") == [], where
            rows = s.get_readings()
        keys = Counter((r.reading.meter, r.reading.quantity, r.reading.slot) for r in rows)
        assert max(keys.values(), default=1) == 1, where
        assert len(rows) % PER_CALL == 0, f"an add_readings call was half committed ({where})"
        assert len(rows) >= (committed + 1) * PER_CALL, where
        values = {
            (r.reading.meter, r.reading.quantity, r.reading.slot): r.reading.value for r in rows
        }
        for index in range(committed + 1):
            slot = SLOT0 + index * SLOT_S
            for m in range(KILL_METERS):
                for q in range(KILL_QUANTITIES):
                    assert values[(f"m{m}", f"q{q}", slot)] == f"{index}.{m:03d}{q}", where
    assert committed >= 0
