"""A restart with batches in flight (issue 22, item 1): the uplink resends the bytes it
sealed before, under their own ``seq``, so a receiver that stored a batch whose ack was
lost answers "duplicate" and holds each event once, even though the batch was coded
against references the new process no longer has. A store from before the sealed bytes
were kept falls back to putting the batches' rows back into the outbox.

In process: the real `Uplink` (no broker: batches are taken and acks handled by its own
methods), the real concentrator store on a file, and the receiver's ingestor on a
SQLite file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tomllib
from collections import Counter
from pathlib import Path

import pytest

from cloud_receiver.applications.fleet import pki
from cloud_receiver.ingest.ingestor import Ingestor
from cloud_receiver.storage import SqliteStorage
from concentrator.config import UplinkConfig
from concentrator.storage import Store, StoreWriter
from concentrator.uplink.mqtt import InFlight, Uplink
from contract import wire
from contract.records import Event, Reading

CID = "dc-restart"
SLOT = 1_795_000_000
METERS = [f"{300000000000 + m:012d}" for m in range(6)]


def _readings(k: int) -> list[Reading]:
    slot = SLOT + 900 * k
    return [
        Reading(meter, "energy_fwd_total", slot, f"{1000 + m + k * 0.25:.2f}", "kWh", slot + 1.0)
        for m, meter in enumerate(METERS)
    ]


@pytest.fixture
def cfg(tmp_path: Path) -> UplinkConfig:
    frag = pki.provision(tmp_path / "pki", CID, broker_host="127.0.0.1", broker_port=1883)
    table = dict(tomllib.loads((frag / "uplink.toml").read_text(encoding="utf-8"))["uplink"])
    for key, value in list(table.items()):
        if key.endswith("_file") and isinstance(value, str):
            table[key] = frag / value
    return UplinkConfig(**table)


class Concentrator:
    """One process's life: the store opened, a writer, an uplink with an empty book."""

    def __init__(self, cfg: UplinkConfig, path: Path) -> None:
        self.store = Store.open(path)
        self.writer = StoreWriter(self.store, now=lambda: 0.0)
        self.uplink = Uplink(cfg, CID, self.store, self.writer)

    async def take(self) -> InFlight:
        entry = await self.uplink._take()
        assert entry is not None
        return entry

    async def ack(self, raw: bytes | None) -> str:
        """Hand the receiver's ack to the uplink's own ack handling; wait until it has
        taken the batch out of flight (marked delivered in the store)."""
        assert raw is not None
        ack = wire.open_ack(raw, self.uplink.keys[wire.parse_header(raw).key_id])
        self.uplink._wake.clear()
        self.uplink._acks.put_nowait(raw)
        task = asyncio.create_task(self.uplink._ack_loop())
        try:
            async with asyncio.timeout(30):
                await self.uplink._wake.wait()  # set once the ack is handled
        finally:
            task.cancel()
        assert ack.seq not in self.uplink.in_flight
        return ack.status

    def close(self) -> None:
        self.writer.close()
        self.store.close()


def _receiver_readings(storage: SqliteStorage) -> Counter[tuple[str, int, str]]:
    return Counter((r.meter, r.slot, r.value) for r in storage.readings())


def test_batches_in_flight_are_resent_as_the_same_bytes_after_a_restart(
    cfg: UplinkConfig, tmp_path: Path
) -> None:
    receiver = SqliteStorage(tmp_path / "receiver.db")
    ingestor = Ingestor(receiver, lambda cid, kid: cfg.payload_key() if cid == CID else None)
    topic = f"mf/v1/{CID}/up"
    store_path = tmp_path / "store.db"

    async def before_the_restart() -> list[InFlight]:
        c = Concentrator(cfg, store_path)
        try:
            c.store.add_readings(_readings(0))
            first = await c.take()  # a key batch: the book is empty
            assert await c.ack(ingestor.handle(topic, first.payload).ack) == "stored"
            c.store.add_readings(_readings(1))
            coded = await c.take()  # coded against slot 0, which the receiver acked
            assert c.uplink.stats.coded == 1
            c.store.add_event(Event("config_reloaded", "info", None, {"n": 1}, at=SLOT + 901.0))
            c.store.add_readings(_readings(2))
            with_event = await c.take()
            # The receiver stores both; their acks are lost as the concentrator stops.
            for entry in (coded, with_event):
                outcome = ingestor.handle(topic, entry.payload)
                assert wire.open_ack(outcome.ack or b"", c.uplink.key).status == "stored"
            return [coded, with_event]
        finally:
            c.close()

    async def after_the_restart(sent: list[InFlight]) -> None:
        c = Concentrator(cfg, store_path)  # a new process: an empty reference book
        try:
            await c.uplink._resume()
            resumed = sorted(c.uplink.in_flight.values(), key=lambda e: e.batch_id)
            assert [(e.batch_id, e.payload) for e in resumed] == [
                (e.batch_id, e.payload) for e in sent
            ]
            assert c.store.backlog().readings == 12  # still in flight, none requeued
            for entry in resumed:
                assert await c.ack(ingestor.handle(topic, entry.payload).ack) == "duplicate"
            assert c.uplink.in_flight == {}
            assert c.store.backlog().readings == 0
            # The book learnt from the resent batches' acks: the next one is coded again.
            c.store.add_readings(_readings(3))
            nxt = await c.take()
            assert nxt.batch_id == sent[-1].batch_id + 1
            assert await c.ack(ingestor.handle(topic, nxt.payload).ack) == "stored"
            assert c.uplink.stats.coded == 1
        finally:
            c.close()

    try:
        sent = asyncio.run(before_the_restart())
        asyncio.run(after_the_restart(sent))
        kinds = [e.kind for _, e in receiver.events(CID)]
        assert kinds.count("config_reloaded") == 1
        want = Counter((r.meter, r.slot, r.value) for k in range(4) for r in _readings(k))
        assert _receiver_readings(receiver) == want
    finally:
        receiver.close()


def test_batches_taken_without_sealed_bytes_go_back_into_the_outbox(
    cfg: UplinkConfig, tmp_path: Path
) -> None:
    """A store a release before this one left: its batch in flight has no bytes kept,
    so its rows leave again under a new ``seq``."""
    store_path = tmp_path / "store.db"
    with Store.open(store_path) as store:
        store.add_readings(_readings(0))
        old = store.take_batch(100, 10)  # as that release took it: no bytes kept
        assert old is not None

    async def restart() -> None:
        c = Concentrator(cfg, store_path)
        try:
            await c.uplink._resume()
            assert c.uplink.in_flight == {}
            again = await c.take()
            assert again.batch_id == old.batch_id + 1
            pending = c.store.pending_batches()
            assert [b.batch_id for b in pending] == [again.batch_id]
            assert [r.reading for r in pending[0].readings] == [r.reading for r in old.readings]
        finally:
            c.close()

    asyncio.run(restart())


def test_batches_in_flight_across_a_payload_key_rotation_are_delivered(
    cfg: UplinkConfig, tmp_path: Path
) -> None:
    """A key rotation (docs/receiver.md) while batches sealed with key 1 are in flight:
    the receiver acks them under key 1. The reloaded uplink checks those acks with the
    key of the uplink it replaced; a process started without key 1 puts such a batch's
    rows back into the outbox, to leave under key 2. Seen as a backlog that never
    drained: every ack ignored as "ack MAC does not match for this key"."""
    pki_dir = tmp_path / "pki"
    key1_file = tmp_path / "payload-1.key"
    key1_file.write_bytes(cfg.payload_key_file.read_bytes())  # the rotation overwrites it
    cfg1 = dataclasses.replace(cfg, payload_key_file=key1_file)
    rotated = pki.provision_details(
        pki_dir, CID, broker_host="127.0.0.1", broker_port=1883, rotate_key=True
    )
    cfg2 = dataclasses.replace(
        cfg, key_id=rotated.key_id, payload_key_file=rotated.payload_key_file
    )
    assert cfg2.key_id == 2 and cfg2.payload_key() != cfg1.payload_key()
    registry = pki.load_key_registry(pki_dir)
    receiver = SqliteStorage(tmp_path / "receiver.db")
    ingestor = Ingestor(receiver, lambda cid, kid: registry.get(cid, {}).get(kid))
    topic = f"mf/v1/{CID}/up"
    store_path = tmp_path / "store.db"

    def key_id(entry: InFlight) -> int:
        return wire.parse_header(entry.payload).key_id

    async def reload_then_restart() -> None:
        c = Concentrator(cfg1, store_path)
        try:
            c.store.add_readings(_readings(0))
            first = await c.take()
            c.store.add_event(Event("config_reloaded", "info", None, {"n": 1}, at=SLOT + 1.0))
            c.store.add_readings(_readings(1))
            second = await c.take()
            assert key_id(first) == key_id(second) == 1
            # SIGHUP with key_id = 2: the daemon replaces the uplink, handing it the keys.
            c.uplink = Uplink(cfg2, CID, c.store, c.writer, earlier_keys=c.uplink.keys)
            await c.uplink._resume()
            assert sorted(c.uplink.in_flight) == [first.batch_id, second.batch_id]
            for entry in (first, second):
                assert await c.ack(ingestor.handle(topic, entry.payload).ack) == "stored"
            c.store.add_readings(_readings(2))
            third = await c.take()
            assert key_id(third) == 2
            # In flight, under key 2, as the process stops; and one more under key 1
            # that the new process cannot check the ack of.
            old = Uplink(cfg1, CID, c.store, c.writer)
            c.store.add_readings(_readings(3))
            stale = await old._take()
            assert stale is not None and key_id(stale) == 1
            # The receiver stored it; its ack is lost.
            assert ingestor.handle(topic, stale.payload).ack is not None
        finally:
            c.close()
        c = Concentrator(cfg2, store_path)  # started with key 2 only
        try:
            await c.uplink._resume()
            assert sorted(c.uplink.in_flight) == [third.batch_id]
            assert set(c.uplink.keys) == {2}
            assert await c.ack(ingestor.handle(topic, third.payload).ack) == "stored"
            again = await c.take()  # the stale batch's rows, under key 2 and a new seq
            assert key_id(again) == 2 and again.batch_id > stale.batch_id
            assert await c.ack(ingestor.handle(topic, again.payload).ack) == "stored"
            assert c.store.backlog().readings == 0
        finally:
            c.close()

    try:
        asyncio.run(reload_then_restart())
        want = Counter((r.meter, r.slot, r.value) for k in range(4) for r in _readings(k))
        assert _receiver_readings(receiver) == want  # each once
        assert receiver.quarantined() == []
    finally:
        receiver.close()


def test_batches_in_flight_evicted_by_the_quota_send_their_events_once(
    cfg: UplinkConfig, tmp_path: Path
) -> None:
    """The quota's last resort takes the reading rows of batches in flight, and those
    batches stay in flight: one the receiver stored (its ack lost) and one it never
    saw are both resent as sealed, and a new batch carries the loss events, never
    their events again. Before, their events went back into the outbox and the
    receiver stored the first batch's event twice."""
    receiver = SqliteStorage(tmp_path / "receiver.db")
    ingestor = Ingestor(receiver, lambda cid, kid: cfg.payload_key() if cid == CID else None)
    topic = f"mf/v1/{CID}/up"

    async def evicted_in_flight() -> None:
        c = Concentrator(cfg, tmp_path / "store.db")
        try:
            c.store.add_event(Event("config_reloaded", "info", None, {"n": 1}, at=SLOT + 1.0))
            c.store.add_readings(_readings(0))
            stored = await c.take()
            assert ingestor.handle(topic, stored.payload).ack is not None  # ack lost
            c.store.add_event(Event("config_reloaded", "info", None, {"n": 2}, at=SLOT + 901.0))
            c.store.add_readings(_readings(1))
            unseen = await c.take()  # lost on the way
            c.store.quota_bytes = 1  # a disk far too small: everything that can go, goes
            c.store.enforce_quota(SLOT + 1800.0)
            pending = c.store.pending_batches()
            assert [(b.batch_id, b.readings) for b in pending] == [
                (stored.batch_id, ()),
                (unseen.batch_id, ()),
            ]
            for entry, status in ((stored, "duplicate"), (unseen, "stored")):
                assert await c.ack(ingestor.handle(topic, entry.payload).ack) == status
            losses = await c.take()  # the outbox now holds the loss events alone
            assert await c.ack(ingestor.handle(topic, losses.payload).ack) == "stored"
            assert await c.uplink._take() is None
            assert c.store.backlog().readings == c.store.backlog().events == 0
        finally:
            c.close()

    try:
        asyncio.run(evicted_in_flight())
        events = [(e.kind, e.detail) for _, e in receiver.events(CID)]
        assert [d for k, d in events if k == "config_reloaded"] == [{"n": 1}, {"n": 2}]
        lost = {d["batch_id"]: d["readings"] for k, d in events if k == "loss"}
        assert lost == {1: 6, 2: 6}  # evicted here; delivered in the sealed batches
        want = Counter((r.meter, r.slot, r.value) for k in range(2) for r in _readings(k))
        assert _receiver_readings(receiver) == want
    finally:
        receiver.close()
