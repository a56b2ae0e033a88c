"""Meter ownership at the receiver (issue 19, item 1): the rule, the ingest's refusal of
readings for meters the sender does not own (quarantine and alert, never stored; the
true owner's value for the slot is stored when it arrives), a meter moving between
concentrators at an effective time, and the migration that infers ownership."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from click.testing import CliRunner, Result
from helpers import Operators
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from cloud_receiver.cli import main
from cloud_receiver.ingest.ingestor import Ingestor
from cloud_receiver.storage import SqliteStorage, Storage, migrate, open_storage
from cloud_receiver.storage import ownership as rule
from cloud_receiver.storage.backends import backend_for
from cloud_receiver.storage.ownership import Assignment
from contract import topics, wire
from contract.records import Reading

KEYS = {("dc-a", 1): bytes(range(32)), ("dc-b", 1): bytes(range(1, 33))}
METER = "000000000001"
OTHER = "000000000002"
T0 = 1_795_000_000


def lookup(cid: str, kid: int) -> bytes | None:
    return KEYS.get((cid, kid))


@pytest.fixture
def storage(receiver_storage: Storage) -> Storage:
    """A receiver database on each backend (SQLite, then PostgreSQL)."""
    return receiver_storage


def assign(storage: Storage, *rows: tuple[str, int, str]) -> None:
    with storage.transaction() as conn:
        rule.assign(conn, [Assignment(m, t, c, 1.0, "test") for m, t, c in rows])


def batch(cid: str, seq: int, *readings: tuple[str, int, str]) -> bytes:
    content = wire.BatchContent(
        tuple(Reading(m, "energy_fwd_total", s, v, "kWh", s + 2.5) for m, s, v in readings), ()
    )
    return wire.seal_batch(content, concentrator_id=cid, key_id=1, key=KEYS[(cid, 1)], seq=seq)


def stored(storage: Storage) -> dict[tuple[str, int], tuple[str, str]]:
    return {(r.meter, r.slot): (r.value, r.concentrator) for r in storage.readings()}


# ------------------------------------------------------------------ the rule
def test_the_rule_follows_the_history() -> None:
    h = [Assignment(METER, T0, "dc-a"), Assignment(METER, T0 + 9000, "dc-b")]
    assert rule.owner_at([], T0) is None  # unassigned
    assert rule.owner_at(h, T0 - 86400) == "dc-a"  # the first assignment reaches back
    assert rule.owner_at(h, T0) == "dc-a"
    assert rule.owner_at(h, T0 + 8999) == "dc-a"
    assert rule.owner_at(h, T0 + 9000) == "dc-b"  # from the effective time on
    assert rule.owned_by({METER: h}, "dc-b", T0 + 9000) == [METER]
    assert rule.owned_by({METER: h}, "dc-b", T0) == []


@given(
    st.lists(st.tuples(st.integers(0, 100), st.sampled_from("abc")), min_size=1, max_size=8),
    st.integers(-10, 110),
)
def test_the_rule_is_the_latest_assignment_not_after_the_slot(
    moves: list[tuple[int, str]], slot: int
) -> None:
    by_time = dict(moves)  # one assignment per effective time
    history = [Assignment(METER, t, c) for t, c in sorted(by_time.items())]
    before = [c for t, c in sorted(by_time.items()) if t <= slot]
    assert rule.owner_at(history, slot) == (before[-1] if before else history[0].concentrator)


def test_history_is_never_rewritten(storage: Storage) -> None:
    assign(storage, (METER, T0, "dc-a"))
    with pytest.raises(ValueError, match=f"meter {METER}: an assignment from {T0} exists"):
        assign(storage, (METER, T0, "dc-b"))
    assign(storage, (METER, T0 + 900, "dc-a"))  # no change: not added
    with storage.read() as conn:
        assert [a.concentrator for a in rule.histories(conn, [METER])[METER]] == ["dc-a"]
        assert rule.version(conn) == 1


# ------------------------------------------------------------------ the ingest
def test_a_spoofed_reading_is_quarantined_and_the_true_value_stored(storage: Storage) -> None:
    assign(storage, (METER, T0, "dc-a"), (OTHER, T0, "dc-b"))
    ingestor = Ingestor(storage, lookup)
    # The stolen concentrator sends a value for dc-a's meter, beside one of its own.
    spoof = batch("dc-b", 1, (METER, T0 + 900, "999999.99"), (OTHER, T0 + 900, "5.00"))
    out = ingestor.handle(wire_topic("dc-b"), spoof, T0 + 1000)
    assert out.status == "stored" and out.ack is not None  # acked: no resend forever
    assert out.new_readings == 1
    assert stored(storage) == {(OTHER, T0 + 900): ("5.00", "dc-b")}
    [q] = storage.quarantined()
    assert (q.reason, q.concentrator, q.seq) == ("not_owner", "dc-b", 1)
    assert METER in q.detail and "owner dc-a" in q.detail
    [(who, alert)] = storage.events()
    assert (who, alert.kind, alert.severity, alert.meter) == (
        "dc-b", "ownership_refused", "alert", METER,
    )  # fmt: skip
    assert alert.detail["owners"] == {METER: "dc-a"} and alert.detail["readings"] == 1
    assert ingestor.counters.by_reason == {"not_owner": 1}
    # A redelivery of the spoof is a duplicate: no second alert, still nothing stored.
    again = ingestor.handle(wire_topic("dc-b"), spoof, T0 + 1001)
    assert again.status == "duplicate" and len(storage.events()) == 1
    # The real concentrator's true value for that slot is stored.
    real = ingestor.handle(wire_topic("dc-a"), batch("dc-a", 1, (METER, T0 + 900, "123.45")))
    assert real.status == "stored" and real.new_readings == 1
    assert stored(storage)[(METER, T0 + 900)] == ("123.45", "dc-a")


class _Seen:
    """The applications' hook (`Reactions`), recording what the ingest hands on."""

    def __init__(self) -> None:
        self.readings: list[Reading] = []

    def stored(self, concentrator: str, readings: Any, events: Any, now: float) -> None:
        self.readings += readings

    def software(self, concentrator: str, software: str | None, wire: int, now: float) -> None:
        pass

    def chunk(self, concentrator: str, version: str, index: int) -> bytes | None:
        return None

    def tick(self, now: float, send_command: Any) -> None:
        pass


def test_the_applications_never_see_a_refused_reading(storage: Storage) -> None:
    assign(storage, (METER, T0, "dc-a"))
    seen = _Seen()
    ingestor = Ingestor(storage, lookup, seen)
    ingestor.handle(topics.up("dc-b"), batch("dc-b", 1, (METER, T0, "9"), (OTHER, T0, "1")))
    assert [(r.meter, r.value) for r in seen.readings] == [(OTHER, "1")]


def test_the_quarantined_payload_holds_the_refused_readings(storage: Storage) -> None:
    assign(storage, (METER, T0, "dc-a"))
    Ingestor(storage, lookup).handle(wire_topic("dc-b"), batch("dc-b", 3, (METER, T0, "1.5")))
    with storage.read() as conn:
        payload = conn.execute(text("SELECT payload FROM quarantine")).scalar_one()
    assert json.loads(payload) == [[METER, "energy_fwd_total", T0, "1.5", "kWh", T0 + 2.5, "poll"]]


def test_a_meter_moves_at_its_effective_time(storage: Storage) -> None:
    move = T0 + 3600
    assign(storage, (METER, T0, "dc-a"), (METER, move, "dc-b"))
    ingestor = Ingestor(storage, lookup)
    slots = [move - 1800, move - 900, move, move + 900]
    for seq, cid in enumerate(("dc-a", "dc-b"), start=1):
        ingestor.handle(
            wire_topic(cid), batch(cid, seq, *((METER, s, f"{cid}-{s}") for s in slots))
        )
    assert stored(storage) == {
        (METER, move - 1800): (f"dc-a-{move - 1800}", "dc-a"),
        (METER, move - 900): (f"dc-a-{move - 900}", "dc-a"),
        (METER, move): (f"dc-b-{move}", "dc-b"),
        (METER, move + 900): (f"dc-b-{move + 900}", "dc-b"),
    }
    refusals = [(c, e.detail["owners"], e.detail["readings"]) for c, e in storage.events()]
    assert refusals == [("dc-a", {METER: "dc-b"}, 2), ("dc-b", {METER: "dc-a"}, 2)]


def test_an_assignment_made_elsewhere_counts_from_the_next_batch(tmp_path: Path) -> None:
    """The ingest caches owners per version: an import through another connection (an
    operator, a second receiver) is seen at the very next batch."""
    here = SqliteStorage(tmp_path / "r.db")
    there = SqliteStorage(tmp_path / "r.db")
    try:
        ingestor = Ingestor(here, lookup)
        ingestor.handle(topics.up("dc-b"), batch("dc-b", 1, (METER, T0, "1")))
        assign(there, (METER, T0, "dc-a"))
        ingestor.handle(topics.up("dc-b"), batch("dc-b", 2, (METER, T0 + 900, "2")))
        assign(there, (METER, T0 + 1800, "dc-b"))
        ingestor.handle(topics.up("dc-b"), batch("dc-b", 3, (METER, T0 + 1800, "3")))
        assert stored(here) == {(METER, T0): ("1", "dc-b"), (METER, T0 + 1800): ("3", "dc-b")}
        assert [q.seq for q in here.quarantined()] == [2]
    finally:
        here.close()
        there.close()


def test_an_unassigned_meter_is_not_guarded(storage: Storage) -> None:
    out = Ingestor(storage, lookup).handle(wire_topic("dc-b"), batch("dc-b", 1, (METER, T0, "1")))
    assert out.status == "stored" and stored(storage) == {(METER, T0): ("1", "dc-b")}
    assert storage.quarantined() == [] and storage.events() == []


def wire_topic(cid: str) -> str:
    return topics.up(cid)


# ------------------------------------------------------------------ migration 0006
@pytest.fixture(params=["sqlite", "postgres"])
def db_at_0002(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'old.db'}"
    else:
        url = request.getfixturevalue("pg_url")
    engine = backend_for(url)().engine
    with engine.begin() as conn:
        command.upgrade(migrate._config(conn), "0002")
        conn.execute(
            text(
                "INSERT INTO meters VALUES"
                " ('000000000001', 'TA', 'customer', '', '', '1'),"
                " ('000000000002', 'TA', 'customer', '', '', '1'),"
                " ('000000000003', 'TA', 'customer', '', '', '1')"
            )
        )
        rows = [  # meter 1: dc-a only; meter 2: dc-a and dc-b; meter 3: nobody; 9: no archive
            ("000000000001", T0 + 900, "dc-a"), ("000000000001", T0, "dc-a"),
            ("000000000002", T0, "dc-a"), ("000000000002", T0 + 900, "dc-b"),
            ("000000000009", T0, "dc-b"),
        ]  # fmt: skip
        for meter, slot, cid in rows:
            conn.execute(
                text(
                    "INSERT INTO readings VALUES (:m, 'energy_fwd_total', :s, '1', 'kWh',"
                    " :s, 'poll', :c, 1)"
                ),
                {"m": meter, "s": slot, "c": cid},
            )
    engine.dispose()
    return url


def test_the_migration_infers_owners_from_the_deliveries(db_at_0002: str) -> None:
    s = open_storage(db_at_0002)
    try:
        with s.read() as conn:
            history = rule.all_histories(conn)
            assert {
                m: [(a.effective_from, a.concentrator) for a in h] for m, h in history.items()
            } == {"000000000001": [(T0, "dc-a")]}
            assert rule.unassigned(conn) == ["000000000002", "000000000003"]
        # From now on dc-b's value for meter 1 is refused.
        ingestor = Ingestor(s, lookup)
        ingestor.handle(wire_topic("dc-b"), batch("dc-b", 5, ("000000000001", T0 + 1800, "9")))
        assert [q.reason for q in s.quarantined()] == ["not_owner"]
    finally:
        s.close()


# ------------------------------------------------------------------ from the command line
def _cli(*args: str, session: Path) -> Result:
    return CliRunner().invoke(main, list(args), env={"MF_SESSION": str(session)})


def test_a_meter_moves_by_archive_import_with_an_effective_time(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    ops = operators(db)
    olga, ivan = ops.login("olga", "operator"), ops.login("ivan", "operator")

    def imported(text: str, *extra: str) -> dict[str, Any]:
        path = tmp_path / "archive.csv"
        path.write_text(text, encoding="utf-8")
        asked = _cli("archive", "import", str(path), "--db", db, "--json", *extra, session=olga)
        assert asked.exit_code == 0, asked.output
        request = json.loads(asked.stdout)
        assert request["status"] == "awaiting_approval"  # an archive change: a second operator
        done = _cli("approve", str(request["request"]), "--db", db, "--json", session=ivan)
        assert done.exit_code == 0, done.output
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    header = "meter,area,role,concentrator\n"
    first = imported(f"{header}{METER},TA,total,dc-a\n{OTHER},TA,customer,\n", "--effective",
                     str(T0))  # fmt: skip
    assert first["assigned"] == 1
    moved = imported(f"{header}{METER},TA,total,dc-b\n", "--effective", str(T0 + 3600))
    assert moved["assigned"] == 1
    same = imported(f"{header}{METER},TA,total,dc-b\n", "--effective", str(T0 + 7200))
    assert same["assigned"] == 0  # dc-b owns it already: nothing to add
    listed = _cli("archive", "owners", "--db", db, "--json", session=olga)
    assert [(o["effective_from"], o["concentrator"]) for o in json.loads(listed.stdout)] == [
        (T0, "dc-a"), (T0 + 3600, "dc-b")
    ]  # fmt: skip
    # --limit keeps the first assignments, --since/--until their effective time.
    cut = _cli("archive", "owners", "--db", db, "--limit", "1", "--json", session=olga)
    assert [o["concentrator"] for o in json.loads(cut.stdout)] == ["dc-a"]
    assert cut.stderr.strip() == "1 more row; use --limit/--since"
    later = _cli("archive", "owners", "--db", db, "--since", str(T0 + 1), "--json", session=olga)
    [moved] = json.loads(later.stdout)
    assert moved["concentrator"] == "dc-b" and moved["effective_from_iso"].endswith("+08:00")
    earlier = _cli("archive", "owners", "--db", db, "--until", str(T0 + 3600), "--csv",
                   session=olga)  # fmt: skip
    assert [r.split(",")[2] for r in earlier.stdout.splitlines()[1:]] == ["dc-a"]
    assert "+08:00" in earlier.stdout  # the site's zone, with its offset
    backwards = _cli("archive", "owners", "--db", db, "--since", str(T0 + 1), "--until", str(T0),
                     session=olga)  # fmt: skip
    assert backwards.exit_code == 2 and "is after --until" in backwards.stderr
    none_loose = _cli("archive", "owners", "--unassigned", "--limit", "1", "--db", db,
                      session=olga)  # fmt: skip
    assert OTHER in none_loose.stdout and none_loose.stderr == ""
    loose = _cli("archive", "owners", "--unassigned", "--db", db, "--json", session=olga)
    assert json.loads(loose.stdout) == {"unassigned": [OTHER], "more": 0}
    table = _cli("archive", "owners", "--meter", METER, "--db", db, "--csv", session=olga)
    assert table.stdout.splitlines()[1].startswith(f"{METER},")
    # The ingest follows the move.
    s = open_storage(db)
    try:
        ingestor = Ingestor(s, lookup)
        ingestor.handle(topics.up("dc-a"), batch("dc-a", 1, (METER, T0 + 3600, "1")))
        ingestor.handle(topics.up("dc-b"), batch("dc-b", 1, (METER, T0 + 3600, "2")))
        assert stored(s) == {(METER, T0 + 3600): ("2", "dc-b")}
    finally:
        s.close()


def test_a_bad_concentrator_column_is_named_and_nothing_is_asked(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    olga = operators(db).login("olga", "operator")
    path = tmp_path / "archive.csv"
    path.write_text(f"meter,area,role,concentrator\n{METER},TA,total,dc a\n", encoding="utf-8")
    done = _cli("archive", "import", str(path), "--db", db, session=olga)
    assert done.exit_code == 7
    assert "line 2, column concentrator: 'dc a' is not a concentrator id" in done.output
    push = _cli("archive", "push", "--concentrator", "dc-a", "--db", db, session=olga)
    assert push.exit_code == 2 and "no meter is assigned to a concentrator yet" in push.output
    s = open_storage(db)
    try:
        assert s.archive() == []
        with s.read() as conn:
            assert rule.all_histories(conn) == {}
            assert conn.execute(text("SELECT count(*) FROM requests")).scalar() == 0
    finally:
        s.close()
