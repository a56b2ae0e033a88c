"""The receiver's side of canonical quantities (issue 18, item 6): a database the
previous release wrote (revision 0002) migrates to canonical names with revision 0003,
on SQLite and PostgreSQL, keeping every reading; a concentrator still running the
previous release is stored under canonical names too."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from helpers import Operators, receiver_cli
from sqlalchemy import text

from cloud_receiver.ingest.ingestor import Ingestor
from cloud_receiver.storage import SqliteStorage, open_storage
from cloud_receiver.storage.backends import backend_for
from contract import wire
from contract.records import Reading
from contract.timezone import iso_time, parse_utc_offset
from drivers.quantity_map import shift_decimal


def _head() -> str | None:
    cfg = Config()
    cfg.set_main_option("script_location", "cloud_receiver.storage:migrations")
    return ScriptDirectory.from_config(cfg).get_current_head()


HEAD = _head()  # the newest revision: the migration of 0003 is followed by later ones

SLOT = 1_795_000_000
PAGED = 10_250
# (meter, quantity, unit, value) as the previous release stored them
OLD = [
    ("7", "energy_import", "kWh", "1234.56"),
    ("7", "energy_export", "kWh", "12.5"),
    ("7", "energy_total", "kWh", "1247.06"),
    ("7", "voltage_l2", "V", "230.4"),
    ("7", "current_l3", "A", "5.125"),
    ("7", "power_l1", "W", "1180.5"),
    ("7", "power_total", "W", "-20"),
    ("7", "reactive_energy_total", "kvarh", "3.25"),
    ("000000000001", "energy_fwd_total", "kWh", "100.01"),
    ("000000000001", "power_total", "kW", "1.2345"),
    ("8", "energy_import", "kWh", "5.00"),
    ("8", "energy_fwd_total", "kWh", "5.01"),  # the slot already holds the canonical name
]
NEW = {
    ("7", "energy_fwd_total", "kWh", "1234.56"),
    ("7", "energy_rev_total", "kWh", "12.5"),
    ("7", "energy_combined_total", "kWh", "1247.06"),
    ("7", "voltage_b", "V", "230.4"),
    ("7", "current_c", "A", "5.125"),
    ("7", "power_a", "kW", "1.1805"),
    ("7", "power_total", "kW", "-0.020"),
    ("7", "reactive_energy_total", "kvarh", "3.25"),
    ("000000000001", "energy_fwd_total", "kWh", "100.01"),
    ("000000000001", "power_total", "kW", "1.2345"),
    ("8", "energy_import", "kWh", "5.00"),  # kept, not lost
    ("8", "energy_fwd_total", "kWh", "5.01"),
}


@pytest.fixture(params=["sqlite", "postgres"])
def db_0002(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database at revision 0002 (the previous release's newest) with its readings."""
    url = (
        f"sqlite:///{tmp_path / 'r.db'}"
        if request.param == "sqlite"
        else str(request.getfixturevalue("pg_url"))
    )
    engine = backend_for(url)().engine
    with engine.begin() as conn:
        cfg = Config()
        cfg.set_main_option("script_location", "cloud_receiver.storage:migrations")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002")
        conn.execute(
            text("INSERT INTO batches VALUES ('dc-1', 7, 1, :at, :n, 0)"),
            {"at": SLOT + 60.0, "n": len(OLD)},
        )
        for k in range(2):
            conn.execute(
                text(
                    "INSERT INTO readings VALUES"
                    " (:meter, :quantity, :slot, :value, :unit, :read_at, 'poll', 'dc-1', 7)"
                ),
                [
                    {"meter": m, "quantity": q, "slot": SLOT + 900 * k, "value": v, "unit": u,
                     "read_at": SLOT + 900 * k + 2.5}
                    for m, q, u, v in OLD
                ],
            )  # fmt: skip
        # more W readings than one page of the migration (10,000), in one slot
        conn.execute(
            text(
                "INSERT INTO readings VALUES"
                " (:meter, 'power_total', :slot, :value, 'W', :slot, 'poll', 'dc-1', 7)"
            ),
            [{"meter": f"m{i:05d}", "slot": SLOT + 1800, "value": f"{i}.5"}
             for i in range(PAGED)],
        )  # fmt: skip
    engine.dispose()
    return url


def test_a_database_at_0002_keeps_every_reading_under_canonical_names(db_0002: str) -> None:
    s = open_storage(db_0002)
    try:
        paged = s.readings(since=SLOT + 1800)
        assert len(paged) == PAGED
        assert {(r.meter, r.quantity, r.unit, r.value) for r in paged} == {
            (f"m{i:05d}", "power_total", "kW", shift_decimal(f"{i}.5", -3)) for i in range(PAGED)
        }
        rows = s.readings(until=SLOT + 1800)
        assert len(rows) == 2 * len(OLD)
        for k in range(2):
            at = {(r.meter, r.quantity, r.unit, r.value) for r in rows if r.slot == SLOT + 900 * k}
            assert at == NEW
        assert {(r.read_at - r.slot, r.concentrator, r.seq) for r in rows} == {(2.5, "dc-1", 7)}
        # what the applications read: Modbus meter 7 is there now
        only = s.readings(until=SLOT + 1800, quantities=["power_a", "power_total"])
        assert {(r.meter, r.quantity) for r in only} == {
            ("7", "power_a"), ("7", "power_total"), ("000000000001", "power_total")
        }  # fmt: skip
        fwd = s.series(["energy_fwd_total"], ["7", "000000000001", "8"], SLOT, SLOT + 1800)
        assert {meter for meter, _, _, _ in fwd} == {"7", "000000000001", "8"}
    finally:
        s.close()
    engine = backend_for(db_0002)().engine
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == HEAD
    engine.dispose()


@pytest.fixture
def ingestor(tmp_path: Path) -> Iterator[Ingestor]:
    storage = SqliteStorage(tmp_path / "r.db")
    yield Ingestor(storage, lambda cid, kid: bytes(32) if cid == "dc-old" else None)
    storage.close()


def test_a_concentrator_of_the_previous_release_is_stored_under_canonical_names(
    ingestor: Ingestor,
) -> None:
    readings = tuple(
        Reading("7", q, SLOT, v, u, SLOT + 2.0)
        for q, u, v in (("energy_import", "kWh", "7.5"), ("power_l2", "W", "999"))
    )
    payload = wire.seal_batch(
        wire.BatchContent(readings, ()), concentrator_id="dc-old", key_id=1, key=bytes(32), seq=1
    )
    assert ingestor.handle("mf/v1/dc-old/up", payload).status == "stored"
    stored = {(r.quantity, r.unit, r.value) for r in ingestor.storage.readings()}
    assert stored == {("energy_fwd_total", "kWh", "7.5"), ("power_b", "kW", "0.999")}


def test_quantity_options_take_canonical_names_and_list_them_on_a_typo(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    s = open_storage(url)
    try:
        readings = [
            Reading(m, q, SLOT, v, u, SLOT + 1.0)
            for m, q, v, u in (("7", "energy_fwd_total", "1.5", "kWh"),
                               ("7", "voltage_a", "230.1", "V"))
        ]  # fmt: skip
        s.ingest("dc-1", 1, 1, readings, [], SLOT + 60.0)
    finally:
        s.close()
    session = operators(url).login("olga", "operator")
    done = receiver_cli("readings", "--db", url, "--quantity", "voltage_a", "--csv",
                        session=session)  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = [line.split(",")[:4] for line in done.stdout.splitlines()[1:]]
    # Slots in ISO 8601 in the site's zone (the default --tz, +08:00), as every table.
    assert rows == [
        ["7", "voltage_a", iso_time(SLOT, parse_utc_offset("+08:00") or dt.UTC), "230.1"]
    ]
    for args in (["readings", "--db", url], ["command", "read", "--concentrator", "dc-1",
                                              "--meter", "7", "--db", url]):  # fmt: skip
        bad = receiver_cli(*args, "--quantity", "energy_import", session=session)
        assert bad.returncode == 2
        assert "unknown quantity 'energy_import' (renamed energy_fwd_total" in bad.stderr
        assert "expected one of: energy_combined_total," in bad.stderr
