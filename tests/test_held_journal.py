"""Honest accounting around a full disk (issue 19, item 10): the writer tries again as
soon as space returns, and what it held when killed is recorded lost, with its reason,
by the next start — never called "daemon down"."""

from __future__ import annotations

import asyncio
import json
import random
import struct
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from concentrator.config.model import read_store_key
from concentrator.storage import HeldJournal, HeldJournalError, Store, StoreWriter
from concentrator.storage.held import HELD_REASON, MAGIC, OVERFLOW_REASON, Held
from contract.records import Event, Reading
from hil_sim.chaos_rig import SmallDisk

M1, M2, Q = "000000000001", "000000000002", "energy_fwd_total"


def reading(meter: str, slot: int, value: str = "1.00") -> Reading:
    return Reading(meter, Q, slot, value, "kWh", slot + 1.0, "poll")


def held(episode: str = "e1") -> Held:
    return Held.of(
        episode,
        HELD_REASON,
        [reading(M1, 900), reading(M1, 1800), reading(M2, 900)],
        [(M2, Q, 1800, "meter did not answer (3 tries)")],
        [Event("meter_state", "warning", M2, {"state": "degraded"}, 1801.0)],
        {"task:t:last_slot": "1800"},
        [{"meter": M1, "quantity": Q, "count": 2, "first_slot": 0, "last_slot": 0}],
    )


def test_journal_round_trip_and_empty(tmp_path: Path) -> None:
    journal = HeldJournal(tmp_path / "s.db", max_pending=100)
    assert journal.read() is None  # no file: nothing held
    journal.allocate()
    assert journal.path.stat().st_size == journal.size and journal.read() is None
    assert journal.path.stat().st_mode & 0o777 == 0o600
    assert journal.write(held())
    got = journal.read()
    assert got == held()
    journal.clear()
    assert journal.read() is None
    assert journal.path.stat().st_size == journal.size  # the blocks stay allocated


def test_a_damaged_journal_is_reported_never_half_applied(tmp_path: Path) -> None:
    journal = HeldJournal(tmp_path / "s.db", max_pending=100)
    journal.allocate()
    journal.write(held())
    with journal.path.open("r+b") as fh:
        fh.seek(20)
        fh.write(b"\xff\xff")
    with pytest.raises(HeldJournalError, match="CRC-32"):
        journal.read()
    with journal.path.open("r+b") as fh:
        fh.write(struct.pack(">8s", b"NOTMAGIC"))
    with pytest.raises(HeldJournalError, match="bytes 0-7"):
        journal.read()


def test_a_journal_too_big_for_its_file_keeps_counts_and_ranges(tmp_path: Path) -> None:
    journal = HeldJournal(tmp_path / "s.db", max_pending=0)
    journal.size = 2048
    journal.allocate()
    rng = random.Random(1)  # keys that do not compress into 2 KiB
    many = [
        reading(f"{rng.randrange(10**12):012d}", rng.randrange(10**6) * 900) for _ in range(3000)
    ]
    assert journal.write(Held.of("e", HELD_REASON, many, [], [], {}, []))
    got = journal.read()
    assert got is not None and not got.readings
    assert sum(d["count"] for d in got.dropped) == 3000


def test_record_held_records_only_what_is_not_stored_once_per_episode(tmp_path: Path) -> None:
    with Store.open(tmp_path / "s.db") as store:
        store.add_readings([reading(M1, 900)])  # committed just before the kill
        store.set_state("task:t:last_slot", "900")
        assert store.record_held(held(), at=2000.0) == 2
        missing = {(m.meter, m.slot): m.reason for m in store.missing()}
        assert missing == {
            (M1, 1800): HELD_REASON,
            (M2, 900): HELD_REASON,
            (M2, 1800): "meter did not answer (3 tries)",
        }
        losses = store.events(kind="loss")
        reasons = sorted(str(e.event.detail["reason"]) for e in losses)
        assert reasons == sorted([HELD_REASON, OVERFLOW_REASON])
        assert [e.event.kind for e in store.events(kind="meter_state")] == ["meter_state"]
        assert store.get_state("task:t:last_slot") == "1800"
        # Killed before the journal was cleared: the same journal again changes nothing.
        assert store.record_held(held(), at=2100.0) == 0
        assert len(store.events(kind="loss")) == 2
        # A state is never moved back by an older journal.
        store.set_state("task:t:last_slot", "2700")
        assert store.record_held(held("e2"), at=2200.0) == 2
        assert store.get_state("task:t:last_slot") == "2700"
        assert len(store.events(kind="meter_state")) == 1  # same event, once


async def until(predicate: Callable[[], object], within: float = 60.0) -> None:
    async with asyncio.timeout(within):
        while not predicate():  # noqa: ASYNC110 - the state is in the writer and a file
            await asyncio.sleep(0.01)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[SmallDisk]:
    disk = SmallDisk(tmp_path / "disk", size_mb=4)
    why = disk.mount()
    if why is not None:
        pytest.skip(f"cannot mount a tmpfs to fill: {why}")
    try:
        yield disk
    finally:
        disk.unmount()


async def test_writer_journals_what_it_holds_and_commits_as_soon_as_space_returns(
    small_disk: SmallDisk,
) -> None:
    path = small_disk.path / "s.db"
    with Store.open(path) as store:
        journal = HeldJournal(path, max_pending=1000)
        journal.allocate()
        # retry_s far beyond the test's patience: only the free-space watch can be quick.
        writer = StoreWriter(store, retry_s=60.0, gather_s=0.0, now=time.time, journal=journal)
        task = asyncio.create_task(writer.run())
        try:
            writer.add([reading(M1, 0)])
            await writer.flush()
            small_disk.fill()
            big = "9" * 9  # readings large enough to need new pages
            batch = [reading(f"{m:012d}", s * 900, big) for m in range(50) for s in range(1, 40)]
            writer.add(batch)
            writer.set_state("task:t:last_slot", str(39 * 900))
            await until(lambda: writer.disk_full)
            state = {"task:t:last_slot": str(39 * 900)}
            await until(lambda: (got := journal.read()) is not None and got.states == state)
            got = journal.read()
            assert got is not None
            assert sum(len(s) for s in got.readings.values()) == writer.pending == len(batch)
            small_disk.free()
            freed = time.monotonic()
            await until(lambda: not (writer.pending or writer.disk_full), within=30)
            assert time.monotonic() - freed < 2.0  # not a fixed 5 s (nor 60 s) timer
            await until(lambda: journal.read() is None, within=30)
        finally:
            task.cancel()
            writer.close()
        assert len(store.get_readings()) == 1 + len(batch)


# --- parsers: whatever bytes are on disk, a clear answer ----------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_any_journal_bytes_read_as_nothing_held_or_a_clear_error(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as d:
        journal = HeldJournal(Path(d) / "s.db", max_pending=0)
        for blob in (raw, MAGIC + raw, _framed(raw), _framed(zlib.compress(raw))):
            journal.path.write_bytes(blob)
            try:
                got = journal.read()
            except HeldJournalError as exc:
                assert str(journal.path) in str(exc)
            else:
                assert got is None or isinstance(got, Held)


def _framed(body: bytes) -> bytes:
    return struct.pack(">8sII", MAGIC, len(body), zlib.crc32(body)) + body


_scalars = st.none() | st.integers() | st.text(max_size=5)
_json = st.recursive(
    _scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["episode", "reason", "readings", "missing", "events",
                                        "states", "dropped"]), _json))  # fmt: skip
def test_a_well_framed_body_of_the_wrong_shape_is_a_clear_error(doc: dict[str, object]) -> None:
    with tempfile.TemporaryDirectory() as d:
        journal = HeldJournal(Path(d) / "s.db", max_pending=0)
        journal.path.write_bytes(_framed(zlib.compress(json.dumps(doc).encode())))
        try:
            got = journal.read()
        except HeldJournalError as exc:
            assert "does not decode" in str(exc)
        else:
            assert isinstance(got, Held)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80), st.sampled_from([0o600, 0o400, 0o640, 0o604]))
def test_any_store_key_file_is_a_key_or_says_what_is_wrong(text: str, mode: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "store.key"
        path.write_bytes(text.encode("utf-8"))
        path.chmod(mode)
        try:
            key = read_store_key(path)
        except ValueError as exc:
            assert str(path) in str(exc)
        else:
            assert len(key) == 32 and mode & 0o077 == 0
