"""The receiver's side of coded batches (wire version 3), on SQLite and PostgreSQL.

References resolve from the readings table: a second receiver with its own connection
(a shared subscription) decodes what the first one's commit made resolvable; a receiver
restored from a backup, or one holding another value, refuses the batch, stores nothing
and answers "resync"; the key batch that follows stores every reading.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import pytest

from cloud_receiver.ingest.ingestor import Ingestor
from cloud_receiver.storage import SqliteStorage, Storage, open_storage
from contract import wire
from contract.records import Reading

CID = "dc-ref"
KEY = bytes(range(7, 39))
SLOT = 1_795_000_000
METERS = [f"{200000000000 + m:012d}" for m in range(30)]


def lookup(cid: str, kid: int) -> bytes | None:
    return KEY if cid == CID else None


def slot_readings(k: int) -> tuple[Reading, ...]:
    """Slot k of a small bus: energy grows, voltage wanders, one value changes scale."""
    slot = SLOT + 900 * k
    out = []
    for m, meter in enumerate(METERS):
        energy = f"{1000 + m * 37 + k * 0.25 * (m % 5 + 1):.2f}"
        volts = f"{220 + ((m * 7 + k * 3) % 11 - 5) / 10:.1f}"
        if m == 3 and k % 2:
            energy = f"{1000 + m * 37 + k * 0.25 * 4:.3f}"  # a firmware with 3 decimals
        out.append(Reading(meter, "energy_fwd_total", slot, energy, "kWh", slot + 1 + m * 0.2))
        out.append(Reading(meter, "voltage_a", slot, volts, "V", slot + 1.1 + m * 0.2))
    return tuple(out)


class Sender:
    """A concentrator's uplink reduced to what coding needs: a book and a seq."""

    def __init__(self) -> None:
        self.book = wire.ReferenceBook()
        self.seq = 0

    def seal(self, readings: tuple[Reading, ...], *, coded: bool = True) -> bytes:
        self.seq += 1
        return wire.seal_batch(
            wire.BatchContent(readings),
            concentrator_id=CID,
            key_id=1,
            key=KEY,
            seq=self.seq,
            references=self.book.usable(0) if coded else None,
        )

    def answer(self, outcome_ack: bytes | None, readings: tuple[Reading, ...]) -> str:
        assert outcome_ack is not None
        ack = wire.open_ack(outcome_ack, KEY)
        assert ack.seq == self.seq
        if ack.status in ("stored", "duplicate"):
            self.book.learn(readings)
        elif ack.status == "resync":
            self.book.forget()
        return ack.status


def stored(storage: Storage) -> Counter[Reading]:
    return Counter(
        Reading(r.meter, r.quantity, r.slot, r.value, r.unit, r.read_at) for r in storage.readings()
    )


def expected(*batches: tuple[Reading, ...]) -> Counter[Reading]:
    """What the receiver holds: read_at to the millisecond, as the wire carries it."""
    return Counter(
        Reading(r.meter, r.quantity, r.slot, r.value, r.unit, round(r.read_at * 1000) / 1000)
        for b in batches
        for r in b
    )


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'r.db'}"
    return str(request.getfixturevalue("pg_url"))


def test_coded_batches_decode_on_another_receiver_of_the_same_database(db_url: str) -> None:
    # Two receivers: their own storage objects (connections) on one database, as two
    # processes on a shared subscription; the batches alternate between them, so each
    # batch is coded against what the *other* one committed.
    receiver_storage, other = open_storage(db_url), open_storage(db_url)
    receivers = [Ingestor(receiver_storage, lookup), Ingestor(other, lookup)]
    sender = Sender()
    sent = []
    try:
        for k in range(6):
            readings = slot_readings(k)
            outcome = receivers[k % 2].handle(f"mf/v1/{CID}/up", sender.seal(readings))
            assert outcome.status == "stored", outcome
            assert sender.answer(outcome.ack, readings) == "stored"
            sent.append(readings)
        assert stored(receiver_storage) == expected(*sent)
        assert all(i.counters.resyncs == 0 for i in receivers)
    finally:
        other.close()
        receiver_storage.close()


def test_an_unknown_reference_stores_nothing_and_the_key_batch_stores_all(
    receiver_storage: Storage,
) -> None:
    ingestor = Ingestor(receiver_storage, lookup)
    sender = Sender()
    # The sender believes the receiver holds slot 0 (say, an ack it got from a receiver
    # whose database was then lost); this receiver never saw it.
    sender.book.learn(slot_readings(0))
    batch = slot_readings(1)
    outcome = ingestor.handle(f"mf/v1/{CID}/up", sender.seal(batch))
    assert (outcome.status, outcome.reason) == ("resync", "unresolved_reference")
    assert sender.answer(outcome.ack, batch) == "resync"
    assert stored(receiver_storage) == Counter()
    assert receiver_storage.quarantined() == []  # the sender did no wrong
    assert ingestor.counters.by_reason["unresolved_reference"] == 1
    # The concentrator sends the same readings again, as a key batch under a new seq.
    outcome = ingestor.handle(f"mf/v1/{CID}/up", sender.seal(batch))
    assert outcome.status == "stored" and outcome.new_readings == len(batch)
    assert sender.answer(outcome.ack, batch) == "stored"
    assert stored(receiver_storage) == expected(batch)


def test_a_reference_held_with_another_value_is_refused(receiver_storage: Storage) -> None:
    ingestor = Ingestor(receiver_storage, lookup)
    sender = Sender()
    first = slot_readings(0)
    assert ingestor.handle(f"mf/v1/{CID}/up", sender.seal(first)).status == "stored"
    # The concentrator's store has another value for one of them (the receiver kept
    # the first value of a conflict): that reference must not decode.
    changed = first[0]
    wrong = (
        Reading(changed.meter, changed.quantity, changed.slot, "999.99", changed.unit,
                changed.read_at),
        *first[1:],
    )  # fmt: skip
    sender.book.learn(wrong)
    outcome = ingestor.handle(f"mf/v1/{CID}/up", sender.seal(slot_readings(1)))
    assert outcome.status == "resync"
    assert stored(receiver_storage) == expected(first)


def test_a_receiver_restored_from_a_backup_asks_for_a_key_batch(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    storage = SqliteStorage(db)
    ingestor = Ingestor(storage, lookup)
    sender = Sender()
    sent = []
    for k in range(2):
        readings = slot_readings(k)
        sender.answer(ingestor.handle(f"mf/v1/{CID}/up", sender.seal(readings)).ack, readings)
        sent.append(readings)
        if k == 0:
            storage.close()
            shutil.copy(db, tmp_path / "backup.db")  # the nightly backup
            storage = SqliteStorage(db)
            ingestor = Ingestor(storage, lookup)
    storage.close()
    shutil.copy(tmp_path / "backup.db", db)  # the database is lost; the backup comes back
    restored = SqliteStorage(db)
    try:
        ingestor = Ingestor(restored, lookup)
        batch = slot_readings(2)  # coded against slot 1, which the backup lacks
        outcome = ingestor.handle(f"mf/v1/{CID}/up", sender.seal(batch))
        assert sender.answer(outcome.ack, batch) == "resync"
        assert stored(restored) == expected(sent[0])
        outcome = ingestor.handle(f"mf/v1/{CID}/up", sender.seal(batch))
        assert sender.answer(outcome.ack, batch) == "stored"
        # ... and the next one is coded again, against what the restored one holds.
        nxt = slot_readings(3)
        outcome = ingestor.handle(f"mf/v1/{CID}/up", sender.seal(nxt))
        assert sender.answer(outcome.ack, nxt) == "stored"
        assert stored(restored) == expected(sent[0], batch, nxt)
    finally:
        restored.close()


def test_a_meter_the_sender_does_not_own_is_coded_against_its_refused_reading(
    db_url: str,
) -> None:
    """A concentrator still reads a meter that moved to another one: its readings are
    refused (quarantined, never stored) but acked with the batch, so the sender codes
    the next one against them. The receiver resolves that reference from the refused
    reading it kept (`refused_latest`), for that sender only: no "resync" every other
    batch while the meter stays with its owner."""
    from cloud_receiver.storage import ownership as rule
    from cloud_receiver.storage.ownership import Assignment

    storage = open_storage(db_url)
    moved = METERS[5]
    try:
        with storage.transaction() as conn:
            rule.assign(conn, [Assignment(m, 0, CID, 1.0, "test") for m in METERS if m != moved])
            rule.assign(conn, [Assignment(moved, 0, "dc-other", 1.0, "test")])
        ingestor = Ingestor(storage, lookup)
        sender = Sender()
        sent = []
        for k in range(4):
            readings = slot_readings(k)
            outcome = ingestor.handle(f"mf/v1/{CID}/up", sender.seal(readings))
            assert outcome.status == "stored", outcome
            assert sender.answer(outcome.ack, readings) == "stored"
            sent.append(tuple(r for r in readings if r.meter != moved))
        assert ingestor.counters.resyncs == 0
        assert stored(storage) == expected(*sent)  # the moved meter's never stored
        assert ingestor.counters.by_reason["not_owner"] == 4
        # Another concentrator coding against those readings finds no reference.
        thief = wire.seal_batch(
            wire.BatchContent(slot_readings(4)[10:12]),
            concentrator_id="dc-other",
            key_id=1,
            key=KEY,
            seq=1,
            references=sender.book.usable(0),
        )
        other = Ingestor(storage, lambda cid, kid: KEY)
        assert other.handle("mf/v1/dc-other/up", thief).status == "resync"
    finally:
        storage.close()
