"""The quarantine is bounded (issue 19, item 4), on SQLite and PostgreSQL: payloads cut to
a prefix, per-sender and total caps in rows and bytes with the oldest evicted first, a
rate limit per sender, and counters that add up; 10,000 oversized or garbage payloads
through the real ingest path leave the database within its quarantine budget."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import sized
from hypothesis import given, settings
from hypothesis import strategies as st

from cloud_receiver.ingest.ingestor import Ingestor
from cloud_receiver.ingest.ratelimit import RateLimiter, SenderRate
from cloud_receiver.storage import Storage, open_storage
from cloud_receiver.storage.quarantine import DETAIL_CHARS, TOPIC_CHARS, Budget

TINY = Budget(total_bytes=40_000, total_rows=12, sender_bytes=20_000, sender_rows=5,
              prefix_bytes=1_000)  # fmt: skip


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


def put(storage: Storage, sender: str | None, payload: bytes, at: float,
        budget: Budget = TINY) -> int:  # fmt: skip
    return storage.quarantine(
        topic=f"mf/v1/{sender or 'x/y'}/up", concentrator=sender, seq=None, reason="bad_magic",
        detail="not an envelope", payload=payload, received_at=at, budget=budget,
    )  # fmt: skip


def test_a_payload_beyond_the_prefix_is_cut_and_its_size_kept(storage: Storage) -> None:
    put(storage, "dc-1", b"x" * 50_000, 1.0)
    put(storage, "dc-1", b"y" * 10, 2.0)
    small, big = storage.quarantined()
    assert (big.size, big.kept) == (50_000, 1_000)
    assert (small.size, small.kept) == (10, 10)
    [stats] = storage.quarantine_senders()
    assert (stats.sender, stats.kept, stats.truncated, stats.rows) == ("dc-1", 2, 1, 2)


def test_a_sender_over_its_row_cap_loses_its_own_oldest_only(storage: Storage) -> None:
    put(storage, "dc-other", b"keep me", 0.5)
    for i in range(8):
        evicted = put(storage, "dc-1", b"%d" % i, 1.0 + i)
        assert evicted == (1 if i >= 5 else 0)
    rows = storage.quarantined()
    assert sorted(q.received_at for q in rows if q.concentrator == "dc-1") == [
        4.0,
        5.0,
        6.0,
        7.0,
        8.0,
    ]
    assert any(q.concentrator == "dc-other" for q in rows)
    by = {s.sender: s for s in storage.quarantine_senders()}
    assert (by["dc-1"].kept, by["dc-1"].evicted, by["dc-1"].rows) == (8, 3, 5)
    assert by["dc-other"].evicted == 0


def test_a_sender_over_its_byte_cap_loses_its_oldest(storage: Storage) -> None:
    for i in range(30):  # about 1,050 bytes charged each: 19 fit in 20,000
        put(storage, "dc-1", bytes([i]) * 1_000, float(i), Budget(
            total_bytes=60_000, total_rows=100, sender_bytes=20_000, sender_rows=100,
            prefix_bytes=1_000))  # fmt: skip
    rows, held = storage.quarantine_held()
    assert held <= 20_000 and rows == 19
    assert min(q.received_at for q in storage.quarantined()) == 11.0  # the oldest went


def test_the_total_caps_evict_the_oldest_of_anyone(storage: Storage) -> None:
    at = 0.0
    for round_ in range(4):
        for sender in ("dc-1", "dc-2", "dc-3", None):
            at += 1.0
            put(storage, sender, b"z" * (100 * round_ + 1), at)
    rows, held = storage.quarantine_held()
    assert rows == 12 and held <= 40_000
    assert min(q.received_at for q in storage.quarantined()) == 5.0  # 16 - 12 + 1
    stats = storage.quarantine_senders()
    assert sum(s.kept for s in stats) == 16 and sum(s.evicted for s in stats) == 4
    assert {s.sender for s in stats} == {"", "dc-1", "dc-2", "dc-3"}
    assert sum(s.rows for s in stats) == rows and sum(s.bytes for s in stats) == held


def test_a_long_topic_and_detail_are_cut_too(storage: Storage) -> None:
    storage.quarantine(topic="t" * 70_000, concentrator=None, seq=None, reason="bad_topic",
                       detail="d" * 70_000, payload=b"", received_at=1.0, budget=TINY)  # fmt: skip
    [q] = storage.quarantined()
    assert len(q.topic) == TOPIC_CHARS and len(q.detail) == DETAIL_CHARS
    assert storage.quarantine_held() == (1, TOPIC_CHARS + DETAIL_CHARS + 2 * 2)  # "…" is 3


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"total_rows": 0}, "total rows must be at least 1"),
        ({"sender_bytes": 100}, "cannot hold one message"),
        ({"total_bytes": 1 << 20, "sender_bytes": 2 << 20}, "below the sender bytes"),
        ({"total_rows": 10, "sender_rows": 20}, "below the sender rows"),
    ],
)
def test_a_budget_that_cannot_work_is_refused(fields: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Budget(**fields)


def test_the_rate_limit_allows_a_burst_then_the_rate() -> None:
    limiter = RateLimiter(SenderRate(per_minute=60, burst=3))
    assert [limiter.allow("a", 100.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.allow("b", 100.0)  # per sender
    assert not limiter.allow("a", 100.5)
    assert limiter.allow("a", 101.0) and not limiter.allow("a", 101.0)  # one per second
    assert [limiter.allow("a", 1000.0) for _ in range(4)] == [True, True, True, False]


@pytest.mark.slow
def test_thousands_of_bad_payloads_stay_within_the_budget(db_url: str) -> None:
    """Garbage and oversized payloads from five senders and unnamed topics, one sender
    flooding: the quarantine never passes its budget, and every message is accounted
    for: kept (and perhaps evicted since) or dropped over the rate limit."""
    budget = Budget(total_bytes=200_000, total_rows=150, sender_bytes=50_000, sender_rows=40,
                    prefix_bytes=2_048)  # fmt: skip
    storage = open_storage(db_url)
    try:
        ingestor = Ingestor(storage, lambda cid, key_id: None, budget=budget,
                            rate=SenderRate(per_minute=6_000, burst=30))  # fmt: skip
        rng = random.Random(19)
        senders = ["dc-1", "dc-2", "dc-3", "dc-4", "dc-flood"]
        at = 1_800_000_000.0
        outcomes: dict[str, int] = {}
        n = sized(2_000, 10_000)  # 10,000 under `make test-long`
        for i in range(n):
            at += 0.004
            sender = "dc-flood" if i % 2 else rng.choice(senders)
            if i % 10 == 0:
                payload = b"MF" + rng.randbytes(60) * (4_000 + rng.randrange(4_000))  # 240-480 KB
            else:
                payload = rng.randbytes(rng.randrange(1, 3_000))
            topic = f"mf/v1/{sender}/up" if i % 17 else f"mf/v1/{sender}/sideways"
            outcome = ingestor.handle(topic, payload, at)
            outcomes[outcome.status] = outcomes.get(outcome.status, 0) + 1
            if i % 500 == 499:
                rows, held = storage.quarantine_held()
                assert rows <= budget.total_rows and held <= budget.total_bytes
        c = ingestor.counters
        assert set(outcomes) == {"quarantined", "dropped"}
        assert c.messages == n == c.quarantined + c.rate_limited
        assert c.rate_limited > n // 10  # the flood was limited ...
        assert outcomes["quarantined"] == c.quarantined > n * 3 // 10  # ... the others were not
        rows, held = storage.quarantine_held()
        assert rows <= budget.total_rows and held <= budget.total_bytes
        stats = storage.quarantine_senders()
        assert sum(s.kept for s in stats) == c.quarantined
        assert sum(s.kept - s.evicted for s in stats) == rows
        assert sum(s.evicted for s in stats) == c.evicted
        assert sum(s.bytes for s in stats) == held
        for s in stats:
            assert s.rows <= budget.sender_rows and s.bytes <= budget.sender_bytes
        kept = storage.quarantined(limit=1_000)
        assert len(kept) == rows and all(q.kept <= budget.prefix_bytes for q in kept)
        assert sum(s.truncated for s in stats) >= n // 20
    finally:
        storage.close()
    if db_url.startswith("sqlite:///"):
        # The file holds the budget plus SQLite's own pages, not the 250 MB that came in.
        assert Path(db_url.removeprefix("sqlite:///")).stat().st_size < 4 * budget.total_bytes


def test_an_upgraded_database_counts_its_quarantine_and_trims_it(db_url: str) -> None:
    """A database at revision 0002 with a large quarantine: revision 0005 counts what it
    holds, and the first refusal afterwards evicts the oldest until within budget."""
    from alembic import command
    from sqlalchemy import text

    from cloud_receiver.storage import migrate
    from cloud_receiver.storage.backends import backend_for

    backend = backend_for(db_url)()
    with backend.engine.connect() as conn:
        command.upgrade(migrate._config(conn), "0002")
        for i, (who, size) in enumerate([("dc-1", 50_000), (None, 10), ("dc-1", 30)]):
            conn.execute(
                text("INSERT INTO quarantine (received_at, topic, concentrator, seq, reason,"
                     " detail, payload) VALUES (:at, 'mf/v1/x/up', :who, NULL, 'bad_magic',"
                     " 'd', :payload)"),
                {"at": float(i), "who": who, "payload": b"p" * size},
            )  # fmt: skip
        conn.commit()
    backend.engine.dispose()
    storage = open_storage(db_url)
    try:
        assert storage.quarantine_held() == (3, 50_000 + 10 + 30 + 3 * 11)
        by = {s.sender: (s.rows, s.kept) for s in storage.quarantine_senders()}
        assert by == {"dc-1": (2, 2), "": (1, 1)}
        assert [q.size for q in storage.quarantined()] == [30, 10, 50_000]
        assert put(storage, "dc-2", b"new", 9.0) == 1  # the 50 KB row goes
        rows, held = storage.quarantine_held()
        assert rows == 3 and held <= TINY.total_bytes
    finally:
        storage.close()


@settings(max_examples=500, deadline=None)
@given(text=st.one_of(st.text(max_size=12), st.sampled_from(["²", "٣K", "0", "-1", "1.5M", "K"])))
def test_a_size_flag_is_a_positive_byte_count_or_a_clear_error(text: str) -> None:
    import click

    from cloud_receiver.cli.common import size_arg

    try:
        value = size_arg(None, None, text)  # type: ignore[arg-type]
    except click.BadParameter as exc:
        assert "expected a size such as 4096, 512K, 64M or 1G" in str(exc)
    else:
        assert value >= 1


@pytest.mark.parametrize(
    ("text", "value"),
    [("4096", 4096), ("4K", 4096), ("64M", 64 << 20), ("1G", 1 << 30), ("512KiB", 512 << 10),
     (" 2m ", 2 << 20)],
)  # fmt: skip
def test_size_flags(text: str, value: int) -> None:
    from cloud_receiver.cli.common import size_arg

    assert size_arg(None, None, text) == value  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--quarantine-sender-bytes", "1K"], "cannot hold one message"),
        (["--quarantine-rows", "10", "--quarantine-sender-rows", "20"], "below the sender rows"),
        (["--quarantine-bytes", "lots"], "expected a size such as 4096, 512K, 64M or 1G"),
        (["--quarantine-rate", "0"], "--quarantine-rate"),
    ],
)
def test_run_refuses_a_quarantine_budget_that_cannot_work(
    tmp_path: Path, flags: list[str], message: str
) -> None:
    from click.testing import CliRunner

    from cloud_receiver.cli import main

    db = tmp_path / "r.db"
    args = ["run", "--broker", "127.0.0.1:1", "--pki-dir", str(tmp_path / "pki"),
            "--db", f"sqlite:///{db}", *flags]  # fmt: skip
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 2 and message in done.output, done.output
    assert not db.exists()  # refused before anything was opened
