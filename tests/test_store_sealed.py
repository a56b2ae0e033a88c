"""The sealed bytes of batches in flight (schema 4, issue 22 item 1): kept in the
transaction that takes the batch, gone once the batch is acked, requeued or evicted,
carried by a backup, and absent from a store an older release left, whose batches in
flight then go back into the outbox."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from concentrator.config.model import StorageSection
from concentrator.storage import SCHEMA_VERSION, Batch, Store
from concentrator.storage.backup import backup_store
from contract.records import Event, Reading

SLOT0 = 1_700_000_100 - 1_700_000_100 % 900


def _readings(k: int, meters: int = 3) -> list[Reading]:
    slot = SLOT0 + 900 * k
    return [
        Reading(f"m{m}", "energy_fwd_total", slot, f"{k}.{m}0", "kWh", slot + 1.0)
        for m in range(meters)
    ]


def _seal(batch: Batch) -> bytes:
    """Stands in for the uplink's sealing: bytes that name the batch and its rows."""
    ids = ",".join(str(r.id) for r in batch.readings)
    return f"sealed {batch.batch_id}: {ids} +{len(batch.events)}".encode()


def _sealed_rows(path: Path) -> list[tuple[int, bytes]]:
    raw = sqlite3.connect(path)
    try:
        return [(int(i), bytes(p)) for i, p in raw.execute("SELECT * FROM sealed ORDER BY 1")]
    finally:
        raw.close()


def test_sealed_bytes_live_until_the_ack_and_are_resumed_before_it(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    with Store.open(db) as s:
        s.add_readings(_readings(0))
        s.add_event(Event("daemon_start", "info", None, {}, time.time()))
        first = s.take_sealed_batch(100, 10, _seal)
        s.add_readings(_readings(1))
        second = s.take_sealed_batch(100, 10, _seal)
        assert first is not None and second is not None
        assert s.take_sealed_batch(100, 10, _seal) is None  # the outbox is empty
    with Store.open(db) as s:  # a restart
        resend, moved = s.resume_in_flight()
        assert moved == 0
        assert resend == [first, second]  # the same rows and the same bytes, oldest first
        assert s.mark_delivered(first.batch.batch_id)
    assert _sealed_rows(db) == [(second.batch.batch_id, second.payload)]


def test_a_failed_seal_takes_nothing_and_uses_no_seq(store_path: Path) -> None:
    def broken(batch: Batch) -> bytes:
        raise ValueError("no key")

    with Store.open(store_path) as s:
        s.add_readings(_readings(0))
        with pytest.raises(ValueError, match="no key"):
            s.take_sealed_batch(100, 10, broken)
        assert s.pending_batches() == []
        taken = s.take_sealed_batch(100, 10, _seal)
        assert taken is not None and taken.batch.batch_id == 1  # seq 1 was never used
    assert _sealed_rows(store_path) == [(1, taken.payload)]


def test_requeue_drops_the_bytes_and_eviction_keeps_them(store_path: Path) -> None:
    with Store.open(store_path) as s:
        sealed = []
        for k in range(2):
            s.add_readings(_readings(k))
            taken = s.take_sealed_batch(3, 10, _seal)
            assert taken is not None
            sealed.append(taken.payload)
        assert s.requeue(1) == 3  # a resync: these rows leave again under a new seq
        assert s._evict_in_flight(time.time(), 0) == 3  # the quota's last resort: batch 2's rows
        assert s._evict_in_flight(time.time(), 0) == 0  # no batch in flight has rows left
        resend, moved = s.resume_in_flight()  # batch 2 is still resent as it was sealed
        assert [(b.batch.batch_id, b.batch.readings, b.payload) for b in resend] == [
            (2, (), sealed[1])
        ] and moved == 0
        assert [e.event.kind for e in s.events()] == ["loss"]
    assert _sealed_rows(store_path) == [(2, sealed[1])]


def test_a_store_from_before_schema_4_requeues_its_batches_in_flight(store_path: Path) -> None:
    with Store.open(store_path) as s:
        s.add_readings(_readings(0))
        s.add_readings(_readings(1))
        assert s.take_batch(3, 10) is not None  # batch 1 delivered, batch 2 in flight
        assert s.mark_delivered(1)
        assert s.take_batch(3, 10) is not None
    raw = sqlite3.connect(store_path)
    raw.execute("DROP TABLE sealed")
    raw.execute("PRAGMA user_version = 3")
    raw.commit()
    raw.close()
    with Store.open(store_path) as s:  # migrates to 4
        resend, moved = s.resume_in_flight()
        assert (resend, moved) == ([], 3)
        assert s.backlog().readings == 3
        again = s.take_sealed_batch(100, 10, _seal)
        assert again is not None and again.batch.batch_id == 3  # a new seq
    raw = sqlite3.connect(store_path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    finally:
        raw.close()


def test_bytes_an_older_release_left_behind_are_dropped(store_path: Path) -> None:
    """A rolled-back release acks or requeues without knowing the table: its rows for
    batches no longer in flight are never resent."""
    with Store.open(store_path) as s:
        s.add_readings(_readings(0))
        assert s.take_sealed_batch(100, 10, _seal) is not None
    raw = sqlite3.connect(store_path)  # what that release's mark_delivered does
    raw.execute("UPDATE batches SET delivered_at = 1 WHERE id = 1")
    raw.execute("UPDATE readings SET delivered = 1 WHERE uplink_seq = 1")
    raw.commit()
    raw.close()
    with Store.open(store_path) as s:
        assert s.resume_in_flight() == ([], 0)
    assert _sealed_rows(store_path) == []


def test_a_backup_carries_the_bytes_and_its_restore_resends_them(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    with Store.open(db) as s:
        s.add_readings(_readings(0))
        taken = s.take_sealed_batch(100, 10, _seal)
        assert taken is not None
    backup_store(StorageSection(path=db), tmp_path / "backup.db")
    with Store.open(tmp_path / "backup.db") as s:
        assert s.resume_in_flight() == ([taken], 0)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "store.db"
