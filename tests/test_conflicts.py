"""Conflicting readings are never silent (issue 19, item 2), on SQLite and PostgreSQL:
a different value for a stored (meter, quantity, slot) is recorded with both values,
sources and times and raised as an event, while the stored value stands; an identical
resend (even in another batch, even written differently: ``1.5`` for ``1.50``) stays an
idempotent duplicate; ``cloud-receiver conflicts`` shows them."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import Operators
from hypothesis import given
from hypothesis import strategies as st

from cloud_receiver.cli import main
from cloud_receiver.storage import IngestResult, Storage, open_storage
from cloud_receiver.storage.conflicts import EVENT_KIND, same_value
from contract.records import Reading

M = "000000000001"
SLOT = 1_795_000_000


def reading(value: str, *, meter: str = M, slot: int = SLOT, unit: str = "kWh") -> Reading:
    return Reading(meter, "energy_fwd_total", slot, value, unit, slot + 2.0, "poll")


@pytest.fixture(params=["sqlite", "postgres"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'r.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def storage(db_url: str) -> Iterator[Storage]:
    s = open_storage(db_url)
    yield s
    s.close()


def test_a_different_value_is_recorded_and_the_stored_one_stands(storage: Storage) -> None:
    assert storage.ingest("dc-1", 1, 1, [reading("100.00")], [], 10.0) == (IngestResult.STORED, 1)
    # The spoof (or a faulty re-read) arrives later from another concentrator.
    assert storage.ingest("dc-2", 7, 1, [reading("999999.99")], [], 20.0) == (
        IngestResult.STORED,
        0,
    )
    [row] = storage.readings(meter=M)
    assert (row.value, row.concentrator, row.seq) == ("100.00", "dc-1", 1)
    [c] = storage.conflicts()
    assert (c.meter, c.quantity, c.slot) == (M, "energy_fwd_total", SLOT)
    assert (c.stored_value, c.stored_concentrator, c.stored_seq, c.stored_received_at) == (
        "100.00", "dc-1", 1, 10.0,
    )  # fmt: skip
    assert (c.value, c.concentrator, c.seq, c.received_at, c.read_at) == (
        "999999.99", "dc-2", 7, 20.0, SLOT + 2.0,
    )  # fmt: skip
    [(by, event)] = [(cid, e) for cid, e in storage.events() if e.kind == EVENT_KIND]
    assert by == "dc-2" and event.meter == M and event.severity == "warning"
    assert event.detail["stored"]["value"] == "100.00"
    assert event.detail["received"]["value"] == "999999.99"


def test_an_identical_resend_is_a_duplicate_not_a_conflict(storage: Storage) -> None:
    storage.ingest("dc-1", 1, 1, [reading("100.50"), reading("7", slot=SLOT + 900)], [], 1.0)
    # The same batch again (a lost ack) and the same values in a new batch.
    assert storage.ingest("dc-1", 1, 1, [reading("100.50")], [], 2.0) == (
        IngestResult.DUPLICATE,
        0,
    )
    assert storage.ingest("dc-1", 2, 1, [reading("100.5"), reading("7.000", slot=SLOT + 900)],
                          [], 3.0) == (IngestResult.STORED, 0)  # fmt: skip
    assert storage.conflicts() == []
    assert [e for _, e in storage.events() if e.kind == EVENT_KIND] == []


def test_a_different_unit_is_a_conflict(storage: Storage) -> None:
    storage.ingest("dc-1", 1, 1, [reading("5")], [], 1.0)
    storage.ingest("dc-1", 2, 1, [reading("5", unit="Wh")], [], 2.0)
    [c] = storage.conflicts()
    assert (c.stored_unit, c.unit) == ("kWh", "Wh")


def test_two_values_for_one_key_in_one_batch_are_a_conflict(storage: Storage) -> None:
    storage.ingest("dc-1", 1, 1, [reading("1.00"), reading("2.00")], [], 1.0)
    [row] = storage.readings(meter=M)
    [c] = storage.conflicts()
    assert {c.stored_value, c.value} == {"1.00", "2.00"} and row.value == c.stored_value
    assert (c.concentrator, c.seq, c.stored_concentrator, c.stored_seq) == ("dc-1", 1, "dc-1", 1)


def test_only_the_differing_readings_of_a_mixed_batch_conflict(storage: Storage) -> None:
    storage.ingest("dc-1", 1, 1, [reading(str(i), slot=SLOT + 900 * i) for i in range(600)],
                   [], 1.0)  # fmt: skip
    changed = {5, 250, 599}  # beyond one query's keys: the chunks are all read
    again = [reading(str(i + 1 if i in changed else i), slot=SLOT + 900 * i) for i in range(600)]
    new = [reading("1", slot=SLOT + 900 * 1000)]
    assert storage.ingest("dc-1", 2, 1, again + new, [], 2.0) == (IngestResult.STORED, 1)
    found = storage.conflicts(limit=10)
    assert sorted((c.slot - SLOT) // 900 for c in found) == sorted(changed)
    assert len(storage.readings(meter=M)) == 601


def test_conflicts_by_time_meter_and_limit(storage: Storage) -> None:
    for i, t in enumerate((10.0, 20.0, 30.0)):
        storage.ingest("dc-1", 2 * i + 1, 1, [reading("1", slot=SLOT + i)], [], t)
        storage.ingest("dc-2", 2 * i + 2, 1, [reading("2", slot=SLOT + i)], [], t + 1)
    storage.ingest("dc-1", 50, 1, [reading("1", meter="m2")], [], 40.0)
    storage.ingest("dc-2", 51, 1, [reading("3", meter="m2")], [], 41.0)
    assert [c.received_at for c in storage.conflicts()] == [41.0, 31.0, 21.0, 11.0]
    assert [c.received_at for c in storage.conflicts(since=21.0, until=41.0)] == [31.0, 21.0]
    assert [c.meter for c in storage.conflicts(meter="m2")] == ["m2"]
    assert len(storage.conflicts(limit=2)) == 2


def test_same_value_is_exact_decimal_equality() -> None:
    assert same_value("1.50", "1.5") and same_value("0", "0.000")
    assert not same_value("1.50", "1.51") and not same_value("1e3", "1000.1")
    assert not same_value("abc", "abd") and same_value("abc", "abc")


def test_the_command_lists_conflicts_as_json_and_as_a_table(
    db_url: str, operators: Callable[[str], Operators]
) -> None:
    s = open_storage(db_url)
    try:
        s.ingest("dc-1", 1, 1, [reading("100.00")], [], 1_800_000_000.0)
        s.ingest("dc-2", 1, 1, [reading("999999.99")], [], 1_800_000_100.0)
    finally:
        s.close()
    session = operators(db_url).login("vera", "viewer")
    env = {"MF_SESSION": str(session), "COLUMNS": "200"}
    done = CliRunner().invoke(main, ["conflicts", "--db", db_url, "--json"], env=env)
    assert done.exit_code == 0, done.output
    [doc] = json.loads(done.output)
    assert (doc["stored_value"], doc["value"], doc["concentrator"]) == ("100.00", "999999.99",
                                                                        "dc-2")  # fmt: skip
    args = ["conflicts", "--db", db_url, "--since", "1800000050", "--limit", "5"]
    table = CliRunner().invoke(main, args, env=env)
    assert table.exit_code == 0 and "999999.99" in table.output and "dc-1#1" in table.output
    none = CliRunner().invoke(main, ["conflicts", "--db", db_url, "--json",
                                     "--since", "1800000200"], env=env)  # fmt: skip
    assert none.exit_code == 0 and json.loads(none.output) == []
    bad = CliRunner().invoke(main, ["conflicts", "--db", db_url, "--since", "20",
                                    "--until", "10"], env=env)  # fmt: skip
    assert bad.exit_code == 2 and "--until 10 is not after --since 20" in bad.output
    bad_time = CliRunner().invoke(main, ["conflicts", "--db", db_url, "--since", "yesterday"],
                                  env=env)  # fmt: skip
    assert bad_time.exit_code == 2 and "expected unix seconds or an ISO" in bad_time.output


@given(st.decimals(min_value=-(10**12), max_value=10**12, places=4))  # a meter value
def test_a_value_written_differently_is_the_same_value(d: object) -> None:
    from decimal import Decimal

    from cloud_receiver.storage.conflicts import same_value

    assert isinstance(d, Decimal)
    assert same_value(str(d), f"{d:.6f}") and same_value(str(d), str(d.normalize()))
    assert not same_value(str(d), str(d + Decimal("0.0001")))
