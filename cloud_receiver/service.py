"""The receiver service: MQTT in, verify, decrypt, store exactly once, then ack.

Any number of receivers subscribe to one MQTT v5 shared subscription
(``$share/<group>/mf/v1/+/up``), so the broker splits the concentrators' batches among
them; every receiver writes to the same database and keeps nothing another receiver
would need. Per message, in order: the topic names the concentrator; the clear header
must name the same one; the payload must decrypt and authenticate under that
concentrator's key; the batch is stored (unique keys make a redelivery a duplicate);
only after the commit is the ack published. Anything that fails is quarantined with its
reason — the receiver never crashes on input.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_receiver import commands, prepay, rollout
from cloud_receiver.storage import IngestResult, Storage
from contract import package, topics, wire
from contract.mqtt_session import connect_persistent, tls_client
from contract.records import Event, Reading

log = logging.getLogger(__name__)

COMMAND_POLL_S = 1.0  # how soon an issued command goes out


class KeyRegistry:
    """Payload keys per concentrator and key id, from the provisioning ``keys.json``.

    The file is re-read when it changes, so a concentrator provisioned (or a key rotated)
    while the receiver runs is accepted without a restart.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._keys: dict[str, dict[int, bytes]] = {}
        self._lock = threading.Lock()

    def lookup(self, concentrator_id: str, key_id: int) -> bytes | None:
        with self._lock:
            self._refresh()
            return self._keys.get(concentrator_id, {}).get(key_id)

    def _refresh(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._mtime:
            return
        doc = json.loads(self.path.read_text())
        self._keys = {
            cid: {int(kid): bytes.fromhex(hexkey) for kid, hexkey in keys.items()}
            for cid, keys in doc.items()
        }
        self._mtime = mtime


@dataclass(frozen=True)
class Outcome:
    """What became of one message; ``ack`` is the payload to publish, if any."""

    status: str  # stored | duplicate | quarantined
    reason: str = ""
    concentrator: str | None = None
    seq: int | None = None
    new_readings: int = 0
    ack: bytes | None = None


@dataclass
class Counters:
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0
    readings: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class Ingestor:
    """The per-message pipeline, free of MQTT so it can be tested and fuzzed directly."""

    def __init__(self, storage: Storage, keys: Callable[[str, int], bytes | None]) -> None:
        self.storage = storage
        self.keys = keys
        self.counters = Counters()
        self._software: dict[str, tuple[str | None, int]] = {}

    def handle(self, topic: str, payload: bytes, received_at: float | None = None) -> Outcome:
        now = time.time() if received_at is None else received_at
        self.counters.messages += 1
        try:
            outcome = self._handle(topic, payload, now)
        except Exception as exc:  # a storage failure or a bug: quarantine, never crash
            log.exception("failed to ingest a message on %s", topic)
            outcome = self._quarantine(topic, payload, now, None, None, "internal_error", repr(exc))
        if outcome.status == "stored":
            self.counters.stored += 1
            self.counters.readings += outcome.new_readings
        elif outcome.status == "duplicate":
            self.counters.duplicates += 1
        return outcome

    def _handle(self, topic: str, payload: bytes, now: float) -> Outcome:
        topic_id = topics.up_sender(topic)
        if topic_id is None:
            return self._quarantine(
                topic,
                payload,
                now,
                None,
                None,
                "bad_topic",
                f"topic {topic!r} is not {topics.up('<concentrator>')}",
            )
        try:
            header = wire.parse_header(payload)
        except wire.WireError as exc:
            return self._quarantine(topic, payload, now, topic_id, None, exc.reason, str(exc))
        if header.concentrator_id != topic_id:
            return self._quarantine(
                topic,
                payload,
                now,
                topic_id,
                header.seq,
                "concentrator_mismatch",
                f"header names {header.concentrator_id!r} on the topic of {topic_id!r}",
            )
        try:
            _, content = wire.open_batch(payload, self.keys)
        except wire.WireError as exc:
            return self._quarantine(topic, payload, now, topic_id, header.seq, exc.reason, str(exc))
        result, new = self.storage.ingest(
            topic_id, header.seq, header.key_id, content.readings, content.events, now
        )
        if result == IngestResult.REPLAY:
            return self._quarantine(
                topic,
                payload,
                now,
                topic_id,
                header.seq,
                "replay",
                f"sequence {header.seq} is older than the replay window",
            )
        if result == IngestResult.STORED:
            self._after_store(topic_id, content.readings, content.events, now)
            self._note_software(topic_id, header, content.events, now)
        key = self.keys(topic_id, header.key_id)
        assert key is not None  # open_batch just used it
        status: Literal["stored", "duplicate"] = (
            "stored" if result == IngestResult.STORED else "duplicate"
        )
        ack = wire.seal_ack(
            wire.Ack(seq=header.seq, status=status),
            concentrator_id=topic_id,
            key_id=header.key_id,
            key=key,
            version=header.version,
        )
        return Outcome(status, "", topic_id, header.seq, new, ack)

    def _note_software(
        self, concentrator: str, header: wire.Header, events: Sequence[Event], now: float
    ) -> None:
        """Which release and wire format each concentrator runs, from its authenticated
        header (version 2) or, for version 1, its ``daemon_start`` events; written when
        it changes (and once per process), not per batch."""
        software = header.software or None
        for e in events:
            if header.software is None and e.kind == "daemon_start":
                software = str(e.detail.get("version")) or None
        seen = (software, header.version)
        if self._software.get(concentrator) == seen:
            return
        try:
            rollout.note_software(self.storage, concentrator, seen[0], seen[1], now)
        except Exception:
            log.exception("could not record the software of %s", concentrator)
            return
        self._software[concentrator] = seen

    def _after_store(
        self, concentrator: str, readings: Sequence[Reading], events: Sequence[Event], now: float
    ) -> None:
        """What a newly stored batch means beyond its rows: command outcomes, prepaid
        charges. Each is idempotent and retried by the next batch's data, so a failure
        here is logged, never a reason to refuse the batch."""
        if events:
            try:
                commands.apply_results(self.storage, concentrator, events)
            except Exception:
                log.exception("could not record command results from %s", concentrator)
            try:
                rollout.apply_events(self.storage, concentrator, events, now)
            except Exception:
                log.exception("could not record upgrade progress from %s", concentrator)
        try:
            prepay.charge(
                self.storage,
                ((r.meter, r.quantity, r.slot, r.value) for r in readings),
                now,
                concentrator,
            )
        except Exception:
            log.exception("prepayment charging failed for a batch of %s", concentrator)

    def _quarantine(
        self,
        topic: str,
        payload: bytes,
        now: float,
        concentrator: str | None,
        seq: int | None,
        reason: str,
        detail: str,
    ) -> Outcome:
        self.counters.quarantined += 1
        self.counters.by_reason[reason] = self.counters.by_reason.get(reason, 0) + 1
        log.warning("quarantined a message on %s: %s (%s)", topic, reason, detail)
        self.storage.quarantine(
            topic=topic,
            concentrator=concentrator,
            seq=seq,
            reason=reason,
            detail=detail,
            payload=payload,
            received_at=now,
        )
        return Outcome("quarantined", reason, concentrator, seq)


@dataclass(frozen=True)
class BrokerSettings:
    host: str
    port: int
    ca_file: Path
    cert_file: Path
    key_file: Path
    client_id: str = "receiver-1"
    share_group: str = "receivers"
    keepalive_s: int = 60


class ReceiverService:
    """Runs an ``Ingestor`` behind a persistent MQTT v5 session until stopped."""

    def __init__(
        self,
        ingestor: Ingestor,
        broker: BrokerSettings,
        *,
        command_key: Ed25519PrivateKey | None = None,
        prepay_policy: prepay.Policy | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.broker = broker
        self.command_key = command_key
        self.prepay_policy = prepay_policy or prepay.Policy()
        self._queue: asyncio.Queue[mqtt.MQTTMessage] = asyncio.Queue(maxsize=1000)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self.connected = asyncio.Event()
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        b = self.broker
        client = tls_client(
            b.client_id, ca_file=b.ca_file, cert_file=b.cert_file, key_file=b.key_file
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.reconnect_delay_set(1, 60)
        # Acks are the concentrator's proof of storage: wait for them to reach the broker.
        client.max_inflight_messages_set(100)
        return client

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason: object,
        properties: object,
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.error("broker refused the connection: %s", reason)
            return
        share = self.broker.share_group
        topic = topics.shared(share, topics.up(topics.ANY))
        client.subscribe(topic, qos=1)
        client.subscribe(topics.shared(share, topics.pkgreq(topics.ANY)), qos=0)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.connected.set)
        log.info("connected to %s:%d, subscribed to %s", self.broker.host, self.broker.port, topic)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason: object,
        properties: object,
    ) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self.connected.clear)
        log.warning("disconnected from the broker: %s", reason)

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        loop = self._loop
        if loop is None:
            return
        # Blocks paho's thread when the queue is full: back-pressure to the broker.
        asyncio.run_coroutine_threadsafe(self._queue.put(msg), loop).result()

    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        connect_persistent(
            self._client, self.broker.host, self.broker.port, keepalive_s=self.broker.keepalive_s
        )
        worker = asyncio.create_task(self._work())
        publisher = asyncio.create_task(self._publish_commands())
        try:
            await self._stop.wait()
        finally:
            worker.cancel()
            publisher.cancel()
            self._client.disconnect()
            self._client.loop_stop()
            c = self.ingestor.counters
            log.info(
                "stopped: %d messages, %d batches stored (%d readings), %d duplicates,"
                " %d quarantined",
                c.messages,
                c.stored,
                c.readings,
                c.duplicates,
                c.quarantined,
            )

    def stop(self) -> None:
        self._stop.set()

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            msg = await self._queue.get()
            requester = topics.pkgreq_sender(msg.topic)
            if requester is not None:
                await loop.run_in_executor(None, self._serve_chunk, requester, bytes(msg.payload))
                continue
            outcome = await loop.run_in_executor(
                None, self.ingestor.handle, msg.topic, bytes(msg.payload)
            )
            if outcome.ack is not None and outcome.concentrator is not None:
                self._client.publish(topics.ack(outcome.concentrator), outcome.ack, qos=1)

    def _serve_chunk(self, concentrator: str, payload: bytes) -> None:
        """Answer a chunk request (QoS 0 both ways: the concentrator asks again)."""
        try:
            version, index = package.decode_request(payload)
            data = rollout.chunk(self.ingestor.storage, concentrator, version, index)
        except package.PackageError as exc:
            log.warning("chunk request from %s refused: %s", concentrator, exc)
            return
        except Exception:
            log.exception("chunk request from %s failed", concentrator)
            return
        if data is None:
            log.warning(
                "%s asked for %s, which is not being rolled out to it", concentrator, version
            )
            return
        log.debug("chunk %d of %s to %s", index, version, concentrator)
        self._client.publish(
            topics.pkg(concentrator),
            package.encode_chunk(version, index, data),
            qos=0,
        )

    async def _publish_commands(self) -> None:
        """Send issued commands to their concentrators (QoS 1: the broker keeps them for
        a concentrator that is away), and expire those whose window passed unsent."""
        loop = asyncio.get_running_loop()
        storage = self.ingestor.storage
        while True:
            await asyncio.sleep(COMMAND_POLL_S)
            if not self.connected.is_set():
                continue
            try:
                await loop.run_in_executor(None, self._publish_due, storage)
            except Exception:  # a database hiccup: try again at the next tick
                log.exception("publishing commands failed")

    def _publish_due(self, storage: Storage) -> None:
        now = time.time()
        if self.command_key is not None:
            for line in prepay.enforce(storage, self.command_key, self.prepay_policy, now):
                log.info("prepayment: %s", line)
            for line in rollout.advance(storage, self.command_key, now):
                log.info("%s", line)
        for c in commands.sweep(storage, now):
            log.warning("command %s (%s) to %s: no outcome, closed", c.id, c.action, c.concentrator)
        ready, expired = commands.due(storage, now)
        for c in expired:
            storage.set_command_status(c.id, "expired", {"reason": "not sent in time"}, now)
        for c in ready:
            if not storage.claim_command(c.id, now):
                continue  # another receiver sends it
            # paho keeps a QoS 1 message it could not send yet and sends it on reconnect:
            # marking it issued again would send it twice.
            self._client.publish(topics.cmd(c.concentrator), c.blob, qos=1)
            log.info("command %s (%s) sent to %s", c.id, c.action, c.concentrator)
