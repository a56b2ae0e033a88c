"""Issue 19, items 2 and 4, end to end: a real Mosquitto with TLS, ``cloud-receiver run``
as its own process with the quarantine flags, concentrator identities publishing.

- garbage and oversized payloads from one concentrator leave the quarantine within the
  ``--quarantine-*`` budget, cut to the prefix, while its valid batches are stored;
- a batch that carries a different value for a stored reading is acked, the stored
  value stands, and the conflict is recorded with both sources.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import wait_for
from mqtt_harness import Broker, Peer
from test_uplink_e2e import Receiver

from cloud_receiver.applications.fleet import pki
from cloud_receiver.storage import SqliteStorage
from contract import wire
from contract.records import Reading

pytestmark = pytest.mark.slow

WAIT_S = 60.0
M = "000000000001"
SLOT = 1_795_000_000


def _key(broker: Broker, cid: str) -> bytes:
    frag = pki.provision(broker.pki_dir, cid, broker_host="127.0.0.1", broker_port=broker.port)
    return bytes.fromhex((frag / "payload.key").read_text().strip())


def _sealed(cid: str, key: bytes, seq: int, value: str) -> bytes:
    content = wire.BatchContent(
        readings=(Reading(M, "energy_fwd_total", SLOT, value, "kWh", SLOT + 2.0),)
    )
    return wire.seal_batch(content, concentrator_id=cid, key_id=1, key=key, seq=seq)


def _acks(peer: Peer, cid: str, key: bytes) -> list[wire.Ack]:
    return [wire.open_ack(p, key) for p in peer.payloads(f"mf/v1/{cid}/ack")]


def test_garbage_stays_in_budget_and_a_differing_value_is_a_conflict(tmp_path: Path) -> None:
    db = tmp_path / "r.db"
    with Broker(tmp_path / "broker") as broker:
        keys = {cid: _key(broker, cid) for cid in ("dc-a", "dc-b")}
        receiver = Receiver(broker, db, tmp_path / "receiver.log")
        receiver.args += [
            "--quarantine-rows", "30", "--quarantine-sender-rows", "12",
            "--quarantine-bytes", "256K", "--quarantine-sender-bytes", "64K",
            "--quarantine-prefix", "1K", "--quarantine-rate", "60000",
            "--quarantine-burst", "1000",
        ]  # fmt: skip
        receiver.start()
        log = tmp_path / "receiver.log"
        wait_for(lambda: "subscribed to $share/" in log.read_text(errors="replace"), WAIT_S,
                 "the receiver to subscribe")  # fmt: skip
        peers = {cid: Peer.connect(broker, cid) for cid in keys}
        try:
            for cid, peer in peers.items():
                assert peer.subscribe(f"mf/v1/{cid}/ack").value == 1
            a, b = peers["dc-a"], peers["dc-b"]
            assert a.publish("mf/v1/dc-a/up", _sealed("dc-a", keys["dc-a"], 1, "100.00")).value == 0
            a.wait_for(lambda: len(_acks(a, "dc-a", keys["dc-a"])) == 1, "the first ack", WAIT_S)
            for i in range(200):
                garbage = b"G" * (50_000 if i % 20 == 0 else 1 + i)
                assert b.publish("mf/v1/dc-b/up", garbage).value == 0
            # The same reading with another value, from another concentrator; then a batch
            # from it that is fine. Both are acked: the receiver handled all before them.
            assert (
                b.publish("mf/v1/dc-b/up", _sealed("dc-b", keys["dc-b"], 1, "999999.99")).value == 0
            )
            b.wait_for(lambda: len(_acks(b, "dc-b", keys["dc-b"])) == 1, "dc-b's ack", WAIT_S)
        finally:
            for peer in peers.values():
                peer.close()
            receiver.stop()
    assert [(x.seq, x.status) for x in _acks(b, "dc-b", keys["dc-b"])] == [(1, "stored")]
    s = SqliteStorage(db)
    try:
        [row] = s.readings(meter=M)
        assert (row.value, row.concentrator) == ("100.00", "dc-a")  # the stored value stands
        [c] = s.conflicts()
        assert (c.stored_value, c.stored_concentrator, c.value, c.concentrator) == (
            "100.00", "dc-a", "999999.99", "dc-b",
        )  # fmt: skip
        rows, held = s.quarantine_held()
        assert rows == 12 and held <= 64 * 1024
        [stats] = s.quarantine_senders()
        assert (stats.sender, stats.kept, stats.evicted, stats.truncated) == ("dc-b", 200, 188, 10)
        assert all(q.kept <= 1024 and q.concentrator == "dc-b" for q in s.quarantined())
    finally:
        s.close()
    assert (
        "200 quarantined, 0 over the rate limit, 188 evicted from the quarantine" in log.read_text()
    )
