"""The receiver's per-message pipeline against hostile input (no broker needed):
wrong keys, tampering, replays, garbage and impostors are quarantined with a reason,
valid batches are stored exactly once and acknowledged with an authenticated ack."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud_receiver.ingest.ingestor import Ingestor
from cloud_receiver.storage import REPLAY_WINDOW, SqliteStorage
from contract import wire
from contract.records import Event, Reading

KEY_A = bytes(range(32))
KEY_B = bytes(range(1, 33))
KEYS = {("dc-a", 1): KEY_A, ("dc-b", 1): KEY_B}


def lookup(cid: str, kid: int) -> bytes | None:
    return KEYS.get((cid, kid))


@pytest.fixture
def ingestor(tmp_path: Path) -> Iterator[Ingestor]:
    storage = SqliteStorage(tmp_path / "r.db")
    yield Ingestor(storage, lookup)
    storage.close()


def content(meter: str = "000000000001", n: int = 4) -> wire.BatchContent:
    readings = tuple(
        Reading(
            meter,
            "energy_fwd_total",
            1_795_000_000 + 900 * i,
            f"{100 + i}.25",
            "kWh",
            1_795_000_000 + 900 * i + 2.5,
        )
        for i in range(n)
    )
    events = (Event("meter_state", "warning", meter, {"to": "offline"}, 1_795_000_001.0),)
    return wire.BatchContent(readings, events)


def sealed(
    seq: int, *, cid: str = "dc-a", key: bytes = KEY_A, c: wire.BatchContent | None = None
) -> bytes:
    return wire.seal_batch(c or content(), concentrator_id=cid, key_id=1, key=key, seq=seq)


def test_valid_batch_is_stored_once_and_acked_each_time(ingestor: Ingestor) -> None:
    first = ingestor.handle("mf/v1/dc-a/up", sealed(1))
    assert first.status == "stored" and first.new_readings == 4 and first.ack is not None
    ack = wire.open_ack(first.ack, KEY_A)
    assert (ack.seq, ack.status) == (1, "stored")
    again = ingestor.handle("mf/v1/dc-a/up", sealed(1))
    assert again.status == "duplicate" and again.ack is not None
    assert wire.open_ack(again.ack, KEY_A).status == "duplicate"
    assert len(ingestor.storage.readings()) == 4
    assert len(ingestor.storage.events()) == 1


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("mf/v1/dc-a/up", sealed(1, key=KEY_B), "auth_failed"),  # wrong key
        ("mf/v1/dc-b/up", sealed(1, cid="dc-a"), "concentrator_mismatch"),  # impostor
        ("mf/v1/dc-a/up", b"MF", "truncated"),
        ("mf/v1/dc-a/up", b"not an envelope at all", "bad_magic"),
        ("mf/v1/dc-z/up", sealed(1, cid="dc-z"), "unknown_key"),
        ("mf/v1/dc-a/cmd", sealed(1), "bad_topic"),
    ],
)
def test_bad_messages_are_quarantined_with_their_reason(
    ingestor: Ingestor, topic: str, payload: bytes, reason: str
) -> None:
    outcome = ingestor.handle(topic, payload)
    assert (outcome.status, outcome.reason, outcome.ack) == ("quarantined", reason, None)
    [q] = ingestor.storage.quarantined()
    assert q.reason == reason and q.size == len(payload)
    assert ingestor.storage.readings() == []


def test_tampered_ciphertext_and_header_fail_authentication(ingestor: Ingestor) -> None:
    good = sealed(5)
    header_len = wire.parse_header(good).header_len
    body = bytearray(good)
    body[header_len + 3] ^= 0x01
    assert ingestor.handle("mf/v1/dc-a/up", bytes(body)).reason == "auth_failed"
    seq_changed = bytearray(good)
    seq_changed[header_len - 1] ^= 0x01  # the last byte of the clear sequence number
    assert ingestor.handle("mf/v1/dc-a/up", bytes(seq_changed)).reason == "auth_failed"
    assert ingestor.storage.readings() == []


def test_replay_older_than_the_window_is_refused(ingestor: Ingestor) -> None:
    assert ingestor.handle("mf/v1/dc-a/up", sealed(REPLAY_WINDOW + 10)).status == "stored"
    old = sealed(3, c=content(meter="000000000002"))
    outcome = ingestor.handle("mf/v1/dc-a/up", old)
    assert (outcome.status, outcome.reason) == ("quarantined", "replay")
    assert {r.meter for r in ingestor.storage.readings()} == {"000000000001"}


@settings(max_examples=10_000, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    payload=st.one_of(
        st.binary(max_size=300),
        st.binary(max_size=200).map(lambda b: b"MF\x01\x00\x04dc-a\x00\x00\x00\x01" + b),
    )
)
def test_receiver_survives_random_payloads(
    tmp_path_factory: pytest.TempPathFactory, payload: bytes
) -> None:
    storage = _fuzz_storage(tmp_path_factory)
    outcome = Ingestor(storage, lookup).handle("mf/v1/dc-a/up", payload)
    assert outcome.status == "quarantined" and outcome.reason != "internal_error"


_FUZZ: dict[str, SqliteStorage] = {}


def _fuzz_storage(factory: pytest.TempPathFactory) -> SqliteStorage:
    if "s" not in _FUZZ:
        _FUZZ["s"] = SqliteStorage(factory.mktemp("fuzz") / "r.db")
    return _FUZZ["s"]


def test_valid_batches_still_ingest_after_the_fuzzing(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    storage = _fuzz_storage(tmp_path_factory)
    ingestor = Ingestor(storage, lookup)
    assert ingestor.handle("mf/v1/dc-a/up", sealed(77)).status == "stored"
    assert len(storage.quarantined(limit=20_000)) >= 1
