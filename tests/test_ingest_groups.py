"""Batches stored a group per transaction (issue 22, item 5), SQLite and PostgreSQL alike:
each batch of a group keeps the fate it would have had alone (stored, duplicate, replay,
conflicts recorded), two receivers racing on the same groups store every batch and every
reading exactly once, and the ingest's group path gives the outcomes of handling the
messages one by one — malformed ones refused without storing anything, spoofed readings
quarantined, replays refused.

PostgreSQL: a schema of its own per test (conftest.py's ``pg_url``)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import wait_for

from cloud_receiver.ingest.ingestor import GROUP, SWITCH_INTERVAL_S, Ingestor, Outcome
from cloud_receiver.storage import REPLAY_WINDOW, Batch, IngestResult, Storage, open_storage
from cloud_receiver.storage import ownership as rule
from cloud_receiver.storage.ownership import Assignment
from contract import wire
from contract.records import Event, Reading

STORED, DUPLICATE, REPLAY = IngestResult.STORED, IngestResult.DUPLICATE, IngestResult.REPLAY
T0 = 1_795_000_000
KEYS = {("dc-a", 1): bytes(range(32)), ("dc-b", 1): bytes(range(1, 33))}


@pytest.fixture(params=["sqlite", "postgres"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'r.db'}"
    pg: str = request.getfixturevalue("pg_url")
    return pg


@pytest.fixture
def storage(url: str) -> Iterator[Storage]:
    s = open_storage(url)
    yield s
    s.close()


def readings(meter: str, slots: range, value: str = "{}.50") -> list[Reading]:
    return [
        Reading(meter, "energy_fwd_total", T0 + 900 * i, value.format(100 + i), "kWh", T0 + 900 * i)
        for i in slots
    ]


def batch(seq: int, rows: list[Reading], cid: str = "dc-1", at: float = 1.0) -> Batch:
    event = Event("meter_state", "warning", rows[0].meter if rows else None, {"seq": seq}, at)
    return Batch(cid, seq, 1, rows, [event], at)


def test_a_group_is_stored_as_if_its_batches_came_one_after_another(storage: Storage) -> None:
    assert storage.ingest_many([batch(1, readings("m", range(5)))]) == [(STORED, 5)]
    group = [
        batch(2, readings("m", range(5, 10)), at=2.0),
        batch(1, readings("m", range(5))),  # stored before: a duplicate
        batch(2, readings("m", range(5, 10))),  # earlier in this group: a duplicate
        batch(3, readings("m", range(8, 12)), at=3.0),  # 8 and 9 are batch 2's, same values
        batch(4, readings("m", range(11, 13), value="{}.75"), at=4.0),  # 11 differs: conflict
        batch(5, readings("n", range(3)), cid="dc-2", at=5.0),
    ]
    assert storage.ingest_many(group) == [
        (STORED, 5), (DUPLICATE, 0), (DUPLICATE, 0), (STORED, 2), (STORED, 1), (STORED, 3),
    ]  # fmt: skip
    stored = {(r.meter, r.slot): (r.value, r.seq) for r in storage.readings()}
    assert len(stored) == 16
    assert stored[("m", T0 + 900 * 9)] == ("109.50", 2)
    assert stored[("m", T0 + 900 * 11)] == ("111.50", 3)  # the earlier batch's value stands
    assert stored[("m", T0 + 900 * 12)] == ("112.75", 4)
    [c] = storage.conflicts()
    assert (c.slot, c.stored_value, c.stored_seq, c.value, c.seq) == (
        T0 + 900 * 11, "111.50", 3, "111.75", 4,
    )  # fmt: skip
    seqs = sorted(int(str(e.detail["seq"])) for _, e in storage.events() if e.kind == "meter_state")
    assert seqs == [1, 2, 3, 4, 5]  # a duplicate's events are not stored again
    info = {c.concentrator: c for c in storage.concentrators()}
    assert (info["dc-1"].max_seq, info["dc-1"].last_seen, info["dc-1"].batches) == (4, 4.0, 4)
    assert (info["dc-2"].max_seq, info["dc-2"].readings) == (5, 3)


def test_a_large_group_keeps_the_first_value_of_each_key(storage: Storage) -> None:
    """More rows than one SQLite INSERT takes (`backends.ROWS_PER_INSERT`), with keys
    stored before, keys given twice inside one statement, and conflicting values."""
    assert storage.ingest_many([batch(1, readings("m", range(10)))]) == [(STORED, 10)]
    group = [
        batch(2, readings("m", range(5, 2500))),  # 5..9 stored already, same values
        batch(3, readings("m", range(2400, 4100), value="{}.75")),  # 2400..2499 differ
    ]
    assert storage.ingest_many(group) == [(STORED, 2490), (STORED, 1600)]
    stored = {r.slot: (r.value, r.seq) for r in storage.readings()}
    assert len(stored) == 4100
    assert stored[T0 + 900 * 2450] == ("2550.50", 2) and stored[T0 + 900 * 2550] == ("2650.75", 3)
    found = storage.conflicts(limit=1000)
    assert sorted(c.slot for c in found) == [T0 + 900 * i for i in range(2400, 2500)]
    assert {(c.stored_seq, c.seq) for c in found} == {(2, 3)}


def test_a_replay_counts_from_the_groups_own_batches(storage: Storage) -> None:
    top = REPLAY_WINDOW + 50
    group = [
        batch(7, readings("m", range(1))),
        batch(top, readings("m", range(1, 2))),
        batch(10, readings("m", range(2, 3))),  # older than the window, never seen
        batch(7, readings("m", range(1))),  # older too, but stored: a duplicate
        batch(top - 40, readings("m", range(3, 4))),  # inside the window: late, accepted
    ]
    assert storage.ingest_many(group) == [
        (STORED, 1), (STORED, 1), (REPLAY, 0), (DUPLICATE, 0), (STORED, 1),
    ]  # fmt: skip
    assert {r.seq for r in storage.readings()} == {7, top, top - 40}
    assert storage.ingest_many([batch(11, readings("m", range(5, 6)))]) == [(REPLAY, 0)]


def test_a_failing_group_stores_nothing(storage: Storage) -> None:
    bad = Batch(
        "dc-1",
        2,
        1,
        readings("m", range(2, 4)),
        [Event("x", "info", None, {"o": object()}, 1.0)],
        1.0,
    )
    with pytest.raises(Exception, match="serializable"):
        storage.ingest_many([batch(1, readings("m", range(2))), bad])
    assert storage.readings() == [] and storage.concentrators() == []
    assert storage.ingest_many([batch(1, readings("m", range(2)))]) == [(STORED, 2)]


def test_two_receivers_racing_on_the_same_groups_store_each_batch_once(url: str) -> None:
    """Each receiver takes the same 48 batches, in groups, one in the order sent and one
    in reverse; neighbouring batches share reading keys (a re-batched resend), so the
    careful insert path and lock waits are exercised."""
    batches = [batch(seq, readings(f"m{seq % 6}", range(seq, seq + 30))) for seq in range(1, 49)]
    receivers = [open_storage(url), open_storage(url)]
    results: dict[int, list[tuple[int, IngestResult]]] = {0: [], 1: []}
    errors: list[BaseException] = []

    def run(k: int, order: list[Batch]) -> None:
        try:
            for i in range(0, len(order), GROUP):
                group = order[i : i + GROUP]
                for b, (result, _) in zip(group, receivers[k].ingest_many(group), strict=True):
                    results[k].append((b.seq, result))
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [
        threading.Thread(target=run, args=(0, batches)),
        threading.Thread(target=run, args=(1, batches[::-1])),
    ]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert not errors and not any(t.is_alive() for t in threads)
        stored = sorted(seq for k in (0, 1) for seq, r in results[k] if r == STORED)
        assert stored == list(range(1, 49))  # every batch stored, by one receiver only
        keys = {(r.meter, r.slot) for b in batches for r in b.readings}
        rows = receivers[0].readings()
        assert len(rows) == len(keys) == len({(r.meter, r.slot) for r in rows})
        [info] = receivers[0].concentrators()
        assert (info.batches, info.max_seq, info.missing_seqs) == (48, 48, 0)
        assert receivers[0].conflicts() == []  # shared keys carried the same values
    finally:
        for s in receivers:
            s.close()


# ------------------------------------------------------------------ the ingest's group path
def lookup(cid: str, kid: int) -> bytes | None:
    return KEYS.get((cid, kid))


def sealed(cid: str, seq: int, rows: list[Reading]) -> bytes:
    content = wire.BatchContent(tuple(rows), ())
    return wire.seal_batch(content, concentrator_id=cid, key_id=1, key=KEYS[(cid, 1)], seq=seq)


def traffic() -> list[tuple[str, bytes, float | None]]:
    """More messages than one group: new batches, resends, garbage, a tampered batch, a
    spoof for another concentrator's meter, a replay and a conflicting value."""
    a = "mf/v1/dc-a/up"
    b = "mf/v1/dc-b/up"
    top = REPLAY_WINDOW + 9
    msgs: list[tuple[str, bytes, float | None]] = []
    for seq in range(1, 9):
        msgs.append((a, sealed("dc-a", seq, readings("A1", range(seq * 3, seq * 3 + 3))), 10.0))
    good = sealed("dc-a", 20, readings("A2", range(4)))
    tampered = good[:-1] + bytes([good[-1] ^ 1])
    msgs += [
        (a, b"garbage, not a batch", 11.0),
        (a, tampered, 11.0),
        (a, good, 11.0),
        (a, msgs[2][1], 12.0),  # a resend after a lost ack
        (b, sealed("dc-b", 1, readings("A1", range(40, 42)) + readings("B1", range(2))), 12.0),
        (a, sealed("dc-a", top, readings("A2", range(10, 11))), 13.0),
        (a, sealed("dc-a", 5, readings("A2", range(11, 12))), 13.0),  # seq 5 stored: duplicate
        (a, sealed("dc-a", 3, readings("A2", range(12, 13))), 13.0),
        (a, sealed("dc-a", 7, readings("A3", range(1))), 13.0),
        (a, sealed("dc-a", 2, readings("A3", range(1))), 14.0),  # duplicate seq, stored
        (a, sealed("dc-a", 30, readings("A1", range(3, 4), value="{}.99")), 14.0),  # conflict
        (a, sealed("dc-a", 31, readings("A1", range(50, 52))), 15.0),
        (a, sealed("dc-a", 9, readings("A3", range(5))), 15.0),  # older than top - window
    ]
    return msgs


def summary(outcomes: list[Outcome]) -> list[tuple[str, str, int, bool]]:
    return [(o.status, o.reason, o.new_readings, o.ack is not None) for o in outcomes]


def test_the_group_path_gives_the_outcomes_of_one_message_at_a_time(
    url: str, tmp_path: Path
) -> None:
    msgs = traffic()
    assert len(msgs) > 2 * GROUP  # a group stored while the next is decoded
    seen: dict[str, tuple[Any, ...]] = {}
    for how in ("one by one", "grouped"):
        s = open_storage(url if how == "grouped" else f"sqlite:///{tmp_path / 'alone.db'}")
        try:
            with s.transaction() as conn:
                rule.assign(conn, [Assignment("A1", T0, "dc-a", 1.0, "test")])
            ingestor = Ingestor(s, lookup)
            if how == "grouped":
                outcomes = ingestor.handle_many(msgs)
            else:
                outcomes = [ingestor.handle(*m) for m in msgs]
            c = ingestor.counters
            seen[how] = (
                summary(outcomes),
                sorted((r.meter, r.slot, r.value, r.concentrator, r.seq) for r in s.readings()),
                sorted((q.reason, q.concentrator, q.seq) for q in s.quarantined()),
                sorted((cid, e.kind) for cid, e in s.events()),
                [(x.meter, x.slot, x.value, x.seq) for x in s.conflicts()],
                (c.messages, c.stored, c.duplicates, c.quarantined, c.readings, c.by_reason),
            )
        finally:
            s.close()
    assert seen["grouped"] == seen["one by one"]
    outcomes, rows, quarantined, events, conflicts, _ = seen["grouped"]
    assert [o[0] for o in outcomes][8:12] == ["quarantined", "quarantined", "stored", "duplicate"]
    assert ("not_owner", "dc-b", 1) in quarantined and ("replay", "dc-a", 9) in quarantined
    assert not any(r[0] == "A1" and r[3] == "dc-b" for r in rows)  # the spoof never stored
    assert len(conflicts) == 1 and ("dc-b", "ownership_refused") in events


def test_a_postgresql_deadlock_is_broken_and_the_group_run_again(pg_url: str) -> None:
    """Another writer holds one of the group's reading keys and then asks for another
    the group holds: PostgreSQL aborts the group's transaction (its own deadlock check
    fires first) and the group is run again, with the other writer's rows as duplicates."""
    storage = open_storage(pg_url)
    other = psycopg.connect(pg_url)
    done: list[list[tuple[IngestResult, int]]] = []
    try:
        with storage.read() as conn:
            pid = int(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        other.execute("SET deadlock_timeout = '60s'")  # the group's check fires first
        k1, k2, k3 = readings("m", range(3))

        def insert(r: Reading) -> None:
            other.execute(
                "INSERT INTO readings VALUES (%s, %s, %s, %s, %s, %s, %s, 'dc-x', 1)",
                (r.meter, r.quantity, r.slot, r.value, r.unit, r.read_at, r.source),
            )

        insert(k2)
        group = threading.Thread(
            target=lambda: done.append(storage.ingest_many([batch(1, [k1, k2, k3])]))
        )
        group.start()
        wait_for(lambda: _waits_for_a_lock(other, pid), timeout=60, what="the group to wait")
        insert(k1)  # waits for the group, which is aborted and waits for us in turn
        other.commit()
        group.join(60)
        assert done == [[(STORED, 1)]]
        rows = {r.slot: r.concentrator for r in storage.readings()}
        assert rows == {k1.slot: "dc-x", k2.slot: "dc-x", k3.slot: "dc-1"}
        assert storage.conflicts() == []
    finally:
        other.close()
        storage.close()


def _waits_for_a_lock(conn: psycopg.Connection[Any], pid: int) -> bool:
    with psycopg.connect(conn.info.dsn) as probe:
        row = probe.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)
        ).fetchone()
    return row is not None and row[0] == "Lock"


def test_the_storing_thread_gets_the_interpreter_lock_back_within_half_a_millisecond(
    tmp_path: Path,
) -> None:
    """Once a group is stored beside the next one's decoding, the switch interval is
    `SWITCH_INTERVAL_S`: at the interpreter's default the storing thread waited 5 ms for
    the lock after each SQLite step (bench/receiver.py measures the difference)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    s = open_storage(f"sqlite:///{tmp_path / 'r.db'}")
    try:
        with s.transaction() as conn:
            rule.assign(conn, [Assignment("A1", T0, "dc-a", 1.0, "test")])
        Ingestor(s, lookup).handle(*traffic()[0])
        assert sys.getswitchinterval() == pytest.approx(0.005)  # one message: no second thread
        Ingestor(s, lookup).handle_many(traffic())
        assert sys.getswitchinterval() == pytest.approx(SWITCH_INTERVAL_S, rel=0.01)
        sys.setswitchinterval(0.0001)
        Ingestor(s, lookup).handle_many(traffic())
        assert sys.getswitchinterval() == pytest.approx(0.0001, rel=0.02)  # only ever lowered
    finally:
        s.close()
        sys.setswitchinterval(before)
