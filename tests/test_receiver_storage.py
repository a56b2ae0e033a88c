"""The receiver's storage, SQLite and PostgreSQL alike: exactly once, replays, quarantine.

PostgreSQL: the ``pg_url`` fixture (conftest.py), a schema of its own per test.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloud_receiver.storage import REPLAY_WINDOW, IngestResult, Storage, open_storage
from contract.records import Event, Reading


@pytest.fixture(params=["sqlite", "postgres"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'receiver.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def storage(storage_url: str) -> Iterator[Storage]:
    s = open_storage(storage_url)
    yield s
    s.close()


def readings(meter: str, slots: range, base: int = 1000) -> list[Reading]:
    return [
        Reading(
            meter,
            "energy_fwd_total",
            1_795_000_000 + i * 900,
            f"{base + i / 100:.2f}",
            "kWh",
            1_795_000_000 + i * 900 + 3.25,
        )
        for i in slots
    ]


def test_batch_stored_once_and_redelivery_is_a_duplicate(storage: Storage) -> None:
    batch = readings("000000000001", range(10))
    event = Event("meter_state", "warning", "000000000001", {"to": "offline"}, 1.0)
    assert storage.ingest("dc-1", 1, 1, batch, [event], 10.0) == (IngestResult.STORED, 10)
    assert storage.ingest("dc-1", 1, 1, batch, [event], 11.0) == (IngestResult.DUPLICATE, 0)
    rows = storage.readings(meter="000000000001")
    assert [(r.slot, r.value) for r in rows] == [(b.slot, b.value) for b in batch]
    assert rows[0].read_at == batch[0].read_at and rows[0].concentrator == "dc-1"
    assert [e for _, e in storage.events()] == [event]


def test_same_reading_in_two_batches_is_stored_once(storage: Storage) -> None:
    # A concentrator re-batched readings after a crash: the reading keys still dedupe.
    assert storage.ingest("dc-1", 1, 1, readings("m", range(5)), [], 1.0)[1] == 5
    assert storage.ingest("dc-1", 2, 1, readings("m", range(3, 8)), [], 2.0)[1] == 3
    assert len(storage.readings(meter="m")) == 8


def test_old_unknown_sequence_is_refused_as_replay(storage: Storage) -> None:
    storage.ingest("dc-1", REPLAY_WINDOW + 50, 1, readings("m", range(1)), [], 1.0)
    result = storage.ingest("dc-1", 10, 1, readings("m", range(1, 2)), [], 2.0)
    assert result == (IngestResult.REPLAY, 0)
    # Inside the window, a late batch is still accepted (resent after an outage).
    assert (
        storage.ingest("dc-1", REPLAY_WINDOW + 40, 1, readings("m", range(2, 3)), [], 3.0)[0]
        == IngestResult.STORED
    )


def test_concentrators_report_gaps_and_last_seen(storage: Storage) -> None:
    storage.ingest("dc-1", 1, 1, readings("a", range(2)), [], 5.0)
    storage.ingest("dc-1", 4, 1, readings("a", range(2, 4)), [], 9.0)
    storage.ingest("dc-2", 1, 1, readings("b", range(1)), [], 7.0)
    info = {c.concentrator: c for c in storage.concentrators()}
    assert info["dc-1"].last_seen == 9.0 and info["dc-1"].max_seq == 4
    assert info["dc-1"].batches == 2 and info["dc-1"].readings == 4
    assert info["dc-1"].missing_seqs == 2  # 2 and 3 never arrived
    assert info["dc-2"].missing_seqs == 0


def test_quarantine_keeps_reason_and_payload(storage: Storage) -> None:
    storage.quarantine(
        topic="mf/v1/dc-1/up",
        concentrator="dc-1",
        seq=7,
        reason="auth_failed",
        detail="tag mismatch",
        payload=b"\x00" * 33,
        received_at=3.0,
    )
    [q] = storage.quarantined()
    assert (q.reason, q.seq, q.size, q.topic) == ("auth_failed", 7, 33, "mf/v1/dc-1/up")


def test_readings_query_by_time(storage: Storage) -> None:
    storage.ingest("dc-1", 1, 1, readings("m", range(10)), [], 1.0)
    rows = storage.readings(meter="m", since=1_795_000_000 + 900 * 2, until=1_795_000_000 + 900 * 5)
    assert [r.slot for r in rows] == [1_795_000_000 + 900 * i for i in (2, 3, 4)]


def test_two_receivers_racing_on_one_batch_store_it_once(storage_url: str) -> None:
    a, b = open_storage(storage_url), open_storage(storage_url)
    try:
        results: list[tuple[IngestResult, int]] = []
        batch = readings("m", range(200))

        def go(s: Storage) -> None:
            results.append(s.ingest("dc-1", 1, 1, batch, [], 1.0))

        threads = [threading.Thread(target=go, args=(s,)) for s in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(r[0] for r in results) == [IngestResult.DUPLICATE, IngestResult.STORED]
        assert len(a.readings()) == 200
    finally:
        a.close()
        b.close()


def test_bad_url_is_named() -> None:
    with pytest.raises(ValueError, match="expected sqlite:///PATH"):
        open_storage("sqlite:///")


def test_sqlite_set_up_waits_for_another_process_holding_the_file(tmp_path: Path) -> None:
    """A query (or a second receiver) holding the file must not make a receiver fail to
    start with "database is locked"."""
    import sqlite3

    from cloud_receiver.storage import SqliteStorage

    path = tmp_path / "r.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    opened = threading.Event()

    def open_it() -> None:
        SqliteStorage(path).close()
        opened.set()

    t = threading.Thread(target=open_it)
    t.start()
    assert not opened.wait(0.3)  # it waits for the lock ...
    holder.execute("COMMIT")
    holder.close()
    t.join(60)
    assert opened.is_set()  # ... and then sets up the schema
    s = SqliteStorage(path)
    try:
        assert s.readings() == []
    finally:
        s.close()


# --- downlink commands ----------------------------------------------------------------


def test_commands_are_numbered_signed_claimed_once_and_keep_their_outcome(
    storage: Storage,
) -> None:
    from cloud_receiver.applications.fleet import commands
    from contract import commands as wire_commands
    from contract.records import Event

    key = wire_commands.new_key()
    first = commands.issue(
        storage, key, concentrator="dc-1", action="relay_open", meters=["000000000001"], now=100.0
    )
    second = commands.issue(storage, key, concentrator="dc-1", action="time_sync", now=101.0)
    other = commands.issue(storage, key, concentrator="dc-2", action="time_sync", now=102.0)
    assert (first.counter, second.counter, other.counter) == (1, 2, 1)
    # What is stored is what the concentrator will verify.
    got = wire_commands.accept(
        first.blob,
        key.public_key(),
        concentrator_id="dc-1",
        now=150.0,
        window=wire_commands.CounterWindow(),
    )
    assert got.id == first.id and got.counter == 1
    ready, expired = commands.due(storage, now=150.0)
    assert [(c.concentrator, c.counter) for c in ready] == [("dc-1", 1), ("dc-1", 2), ("dc-2", 1)]
    assert expired == []
    assert storage.claim_command(first.id, 151.0)
    assert not storage.claim_command(first.id, 152.0)  # a second receiver does not resend it
    done = Event("command", "info", None, {"id": first.id, "result": "done", "results": []}, 160.0)
    replayed = Event(
        "command",
        "warning",
        None,
        {"id": first.id, "result": "refused", "reason": "duplicate", "duplicate": True},
        170,
    )
    assert commands.apply_results(storage, "dc-1", [done]) == 1
    assert commands.apply_results(storage, "dc-1", [replayed]) == 0  # a copy: skipped
    late = Event("command", "warning", None, {"id": first.id, "result": "refused"}, 171)
    assert commands.apply_results(storage, "dc-1", [late]) == 0  # done stays done
    assert commands.apply_results(storage, "dc-2", [done]) == 0  # not dc-2's command
    [row] = storage.commands(command_id=first.id)
    assert row.status == "done" and row.result is not None and row.result["result"] == "done"
    log = [status for _, status, _ in storage.command_log(first.id)]
    assert log == ["issued", "published", "done", "refused (ignored)"]
    # An unsent command whose window passed is expired, not sent late.
    _, expired = commands.due(storage, now=second.not_after + 1)
    assert [c.id for c in expired] == [second.id, other.id]


def test_a_bad_command_is_refused_before_anything_is_stored(storage: Storage) -> None:
    from cloud_receiver.applications.fleet import commands
    from contract import commands as wire_commands

    key = wire_commands.new_key()
    with pytest.raises(wire_commands.CommandError, match="12-digit"):
        commands.issue(storage, key, concentrator="dc-1", action="relay_open", meters=["1"])
    assert storage.commands() == []
    ok = commands.issue(storage, key, concentrator="dc-1", action="time_sync")
    assert ok.counter == 1  # the refused one spent no counter
