"""Scale-out: two receivers on one MQTT v5 shared subscription, one PostgreSQL database.

A concentrator identity publishes a stream of sealed batches (and resends a part of it,
as after a lost ack). Both receivers take a share; together they store every batch
exactly once: no sequence number missing, none stored twice, every reading once.
"""

from __future__ import annotations

import re
from pathlib import Path

import psycopg
import pytest
from helpers import wait_for
from mqtt_harness import Broker, Peer
from test_uplink_e2e import Receiver

from cloud_receiver.applications.fleet import pki
from contract import wire
from contract.records import Reading

pytestmark = pytest.mark.slow

CID = "dc-share"
BATCHES = 240
PER_BATCH = 25
RESENT = 40  # the first batches are published a second time
WAIT_S = 180.0  # two receivers on a busy 2-core machine: generous


def _batch(seq: int) -> wire.BatchContent:
    slot = 1_750_000_000 + seq * 900
    return wire.BatchContent(
        readings=tuple(
            Reading(
                meter=f"{300000000000 + m:012d}",
                quantity="energy_fwd_total",
                slot=slot,
                value=f"{1000 + seq * 0.25 + m:.2f}",
                unit="kWh",
                read_at=slot + 1.5 + m * 0.1,
            )
            for m in range(PER_BATCH)
        )
    )


def test_two_receivers_split_a_stream_without_duplicate_or_gap(tmp_path: Path, pg_url: str) -> None:
    names = ("receiver-1", "receiver-2")
    with Broker(tmp_path / "broker", receivers=names) as broker:
        frag = pki.provision(broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port)
        key = bytes.fromhex((frag / "payload.key").read_text().strip())
        receivers = [Receiver(broker, pg_url, tmp_path / f"{n}.log", name=n) for n in names]
        for r in receivers:
            r.start()
        concentrator = Peer.connect(broker, CID)
        try:
            # Both receivers subscribed before the stream starts, or one would get all.
            wait_for(
                lambda: all("subscribed to $share/" in _text(r.log) for r in receivers),
                WAIT_S,
                "both receivers to subscribe",
            )
            assert concentrator.subscribe(f"mf/v1/{CID}/ack").value == 1  # granted QoS 1
            sealed = {
                seq: wire.seal_batch(_batch(seq), concentrator_id=CID, key_id=1, key=key, seq=seq)
                for seq in range(1, BATCHES + 1)
            }
            for seq in [*sealed, *range(1, RESENT + 1)]:
                assert concentrator.publish(f"mf/v1/{CID}/up", sealed[seq]).value == 0

            def acks() -> list[wire.Ack]:
                return [wire.open_ack(p, key) for p in concentrator.payloads(f"mf/v1/{CID}/ack")]

            concentrator.wait_for(
                lambda: len(acks()) >= BATCHES + RESENT, "an ack for every message", WAIT_S
            )
        finally:
            concentrator.close()
            for r in receivers:
                r.stop()

    got = acks()
    assert {a.seq for a in got} == set(sealed)
    assert sum(a.status == "stored" for a in got) == BATCHES
    assert sum(a.status == "duplicate" for a in got) == RESENT

    stored = [_stopped_counters(r.log) for r in receivers]
    assert all(s["stored"] > 0 for s in stored), stored  # both took a share
    assert sum(s["stored"] for s in stored) == BATCHES
    assert sum(s["readings"] for s in stored) == BATCHES * PER_BATCH

    with psycopg.connect(pg_url) as conn:
        seqs = [r[0] for r in conn.execute("SELECT seq FROM batches ORDER BY seq")]
        rows = conn.execute("SELECT meter, slot, value, seq FROM readings").fetchall()
        quarantined = conn.execute("SELECT count(*) FROM quarantine").fetchone()
    assert seqs == list(range(1, BATCHES + 1))  # no gap, no duplicate
    expected = {(r.meter, r.slot, r.value, seq) for seq in sealed for r in _batch(seq).readings}
    assert len(rows) == len(expected) and set(rows) == expected
    assert quarantined == (0,)


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""


def _stopped_counters(log: Path) -> dict[str, int]:
    m = re.search(
        r"stopped: (\d+) messages, (\d+) batches stored \((\d+) readings\), (\d+) duplicates",
        _text(log),
    )
    assert m is not None, _text(log)[-2000:]
    return {"messages": int(m[1]), "stored": int(m[2]), "readings": int(m[3])}


CODED = 40  # batches, each coded against the one before it


def test_coded_batches_decode_on_whichever_receiver_gets_them(tmp_path: Path, pg_url: str) -> None:
    """Each batch is coded against the readings of the batch before (wire version 3),
    sent once that one is acked: about half land on the receiver that did not store
    the references. Both resolve them from the database, so none asks for a resync
    and every value arrives exact."""
    names = ("receiver-1", "receiver-2")
    with Broker(tmp_path / "broker", receivers=names) as broker:
        frag = pki.provision(broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port)
        key = bytes.fromhex((frag / "payload.key").read_text().strip())
        receivers = [Receiver(broker, pg_url, tmp_path / f"{n}.log", name=n) for n in names]
        for r in receivers:
            r.start()
        concentrator = Peer.connect(broker, CID)
        book = wire.ReferenceBook()
        try:
            wait_for(
                lambda: all("subscribed to $share/" in _text(r.log) for r in receivers),
                WAIT_S,
                "both receivers to subscribe",
            )
            assert concentrator.subscribe(f"mf/v1/{CID}/ack").value == 1

            def acks() -> list[wire.Ack]:
                return [wire.open_ack(p, key) for p in concentrator.payloads(f"mf/v1/{CID}/ack")]

            for seq in range(1, CODED + 1):
                content = _batch(seq)
                payload = wire.seal_batch(
                    content, concentrator_id=CID, key_id=1, key=key, seq=seq,
                    references=book.usable(0),
                )  # fmt: skip
                assert concentrator.publish(f"mf/v1/{CID}/up", payload).value == 0
                concentrator.wait_for(lambda n=seq: len(acks()) >= n, f"the ack of {seq}", WAIT_S)
                assert acks()[-1] == wire.Ack(seq, "stored")
                book.learn(content.readings)
        finally:
            concentrator.close()
            for r in receivers:
                r.stop()

    stored = [_stopped_counters(r.log) for r in receivers]
    assert all(s["stored"] > 0 for s in stored), stored  # both decoded coded batches
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute("SELECT meter, slot, value, seq FROM readings").fetchall()
    expected = {(r.meter, r.slot, r.value, seq) for seq in range(1, CODED + 1)
                for r in _batch(seq).readings}  # fmt: skip
    assert len(rows) == len(expected) and set(rows) == expected
