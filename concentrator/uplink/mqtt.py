"""Secure uplink: store outbox → sealed batches → MQTT v5 QoS 1 → receiver's ack → delivered.

A batch leaves the outbox only when the *receiver's* authenticated ack for its sequence
number arrives (docs/architecture.md, "Delivery semantics"): PUBACK only says the broker
has it (MQTT 5.0 §4.3.2). The sequence number is the store's batch id, committed durably
with the sealed bytes before they are published, so a nonce is never reused; a batch
resent after a timeout, or after a restart, is published again with the same bytes. At most
``window`` batches are in flight. Events go first in every batch (the store orders
them), then the backlog oldest first.

Live batches (wire version 3) are coded against what the receiver committed: the
`wire.ReferenceBook` learns, from each ack, the newest value of every series the batch
carried, and the next batches code each series' first reading as a delta against it.
The book lives in memory only, so a batch coded against it could not be sealed again
identically after a restart. So the sealed bytes are kept in the store, in the
transaction that takes the batch (`Store.take_sealed_batch`), until the ack; at start-up
the batches in flight are resent as those bytes under their own ``seq``. The receiver
knows a ``seq`` it stored and acks it again, so a batch whose ack was lost before the
restart never stores its events twice (events have no natural key to deduplicate on).
Only a batch taken by a release that kept no bytes goes back into the outbox, to leave
under a new ``seq`` (a nonce never carries two plaintexts).

The receiver seals each ack with the key the batch was sealed with (its ``key_id``), so
after a payload key rotation (docs/receiver.md) the acks of batches sealed before it come
under the old key: a reloaded uplink keeps the keys of the one it replaces for them
(``earlier_keys``) and forgets each once no batch in flight uses it. A process started
without the key a kept batch was sealed with cannot check its ack: that batch's rows go
back into the outbox and leave under the current key and a new ``seq`` (the receiver
holds their readings once by their natural key; events of such a batch could be stored
twice if the receiver had stored it and its ack was lost). A batch with events is
never coded. When the receiver cannot resolve a reference
it stores nothing and answers "resync": the book is cleared and the batch's rows go
back into the outbox, to leave again as a key batch under a new ``seq``.

paho-mqtt runs its network loop in its own thread; callbacks hop into asyncio with
``call_soon_threadsafe``. Reconnects back off exponentially with jitter, so a fleet
that lost the broker at the same moment does not come back at the same moment.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt

from concentrator import __version__
from concentrator.config import UplinkConfig
from concentrator.storage import Batch, SealedBatch, Store, StoreError, StoreWriter
from contract import topics, wire
from contract.mqtt_session import connect_persistent, tls_client
from contract.records import Event, Reading
from contract.wire.references import latest as latest_readings

log = logging.getLogger(__name__)

_CODED_SINCE = 3  # the first wire version whose batches carry references


# A reference older than this (before the batch's first slot) is not used: the batch
# codes that series whole (a key value). A receiver's retention or a restore from an
# old backup are likelier to have lost what is that old.
REFERENCE_MAX_AGE_S = 2 * 86_400


@dataclass
class InFlight:
    batch_id: int
    payload: bytes
    sent_at: float  # monotonic
    readings: int
    # The newest reading of each series in the batch: what its ack teaches the book.
    latest: list[Reading] = field(default_factory=list)


@dataclass
class UplinkStats:
    connected: bool = False
    batches_sent: int = 0
    batches_resent: int = 0
    batches_acked: int = 0
    readings_acked: int = 0
    bytes_sent: int = 0
    last_ack_at: float | None = None
    rejected: int = 0
    resyncs: int = 0  # batches the receiver could not decode: sent again as key batches
    coded: int = 0  # batches sealed against references


def _content(batch: Batch) -> wire.BatchContent:
    readings: tuple[Reading, ...] = tuple(r.reading for r in batch.readings)
    events: tuple[Event, ...] = tuple(e.event for e in batch.events)
    return wire.BatchContent(readings, events)


class Uplink:
    def __init__(
        self,
        cfg: UplinkConfig,
        concentrator_id: str,
        store: Store,
        writer: StoreWriter,
        on_command: Callable[[bytes], None] | None = None,
        earlier_keys: Mapping[int, bytes] | None = None,
    ) -> None:
        self.cfg = cfg
        self.concentrator_id = concentrator_id
        self.store = store
        self.writer = writer
        self.key = cfg.payload_key()
        # Keys by id that acks are checked with: the current one, and those of the
        # uplink this one replaces while batches sealed with them are in flight.
        self.keys: dict[int, bytes] = {**(earlier_keys or {}), cfg.key_id: self.key}
        self.stats = UplinkStats()
        self.in_flight: dict[int, InFlight] = {}
        self.references = wire.ReferenceBook()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._acks: asyncio.Queue[bytes] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self.link_down = asyncio.Event()  # the opposite of ``connected``, to wait on
        self.link_down.set()
        self._closing = False  # set when we disconnect on purpose
        self._client = self._make_client()
        self.up_topic = topics.up(concentrator_id)
        self.ack_topic = topics.ack(concentrator_id)
        self.cmd_topic = topics.cmd(concentrator_id)
        self.pkg_topic = topics.pkg(concentrator_id)
        self.pkg_request_topic = topics.pkgreq(concentrator_id)
        # Software update chunks (`concentrator.update.updater`), when updates are configured.
        self.on_package: Callable[[bytes], None] | None = None
        # Commands are only listened to with the key that checks them.
        self.on_command = on_command if cfg.command_key_file is not None else None

    # ------------------------------------------------------------------ MQTT plumbing
    def _make_client(self) -> mqtt.Client:
        c = self.cfg
        client = tls_client(
            self.concentrator_id, ca_file=c.ca_file, cert_file=c.cert_file, key_file=c.key_file
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        self._jitter_backoff(client)
        return client

    def _jitter_backoff(self, client: mqtt.Client) -> None:
        # paho doubles the delay per failed attempt; a random start spreads a fleet.
        lo = self.cfg.reconnect_min_s * random.uniform(1.0, 2.0)
        client.reconnect_delay_set(max(1, round(lo)), max(1, round(self.cfg.reconnect_max_s)))

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason: Any, properties: object
    ) -> None:
        if getattr(reason, "is_failure", False):
            log.error("broker refused the connection: %s", reason)
            return
        client.subscribe(self.ack_topic, qos=1)
        if self.on_command is not None:
            client.subscribe(self.cmd_topic, qos=1)
        if self.on_package is not None:
            client.subscribe(self.pkg_topic, qos=0)
        log.info("uplink connected to %s:%d", self.cfg.broker_host, self.cfg.broker_port)
        self._call(self._set_connected, True)

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason: object,
        properties: object,
    ) -> None:
        self._jitter_backoff(client)
        self._call(self._set_connected, False)
        # Our own disconnect (the daemon stopping, a reload) is no news; any other one is.
        log.log(
            logging.INFO if self._closing else logging.WARNING, "uplink disconnected: %s", reason
        )

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == self.ack_topic:
            self._call(self._acks.put_nowait, bytes(msg.payload))
        elif msg.topic == self.cmd_topic and self.on_command is not None:
            self._call(self.on_command, bytes(msg.payload))
        elif msg.topic == self.pkg_topic and self.on_package is not None:
            self._call(self.on_package, bytes(msg.payload))

    def _call(self, fn: Any, *args: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(fn, *args)

    def _set_connected(self, up: bool) -> None:
        self.stats.connected = up
        if up:
            self._connected.set()
            self.link_down.clear()
            self._wake.set()
        else:
            self._connected.clear()
            self.link_down.set()

    # ------------------------------------------------------------------ run
    async def run(self) -> None:
        self._loop = asyncio.get_running_loop()
        connect_persistent(
            self._client,
            self.cfg.broker_host,
            self.cfg.broker_port,
            keepalive_s=self.cfg.keepalive_s,
        )
        acks = asyncio.create_task(self._ack_loop())
        try:
            await self._resume()
            await self._send_loop()
        finally:
            acks.cancel()
            self._closing = True
            self._client.disconnect()
            self._client.loop_stop()

    async def _resume(self) -> None:
        """Batches taken before a restart: resent as the bytes they were sealed to, or,
        taken by a release that kept none, put back into the outbox (module docstring)."""
        resend, moved = await self.writer.call(self.store.resume_in_flight)
        resealed = 0
        for sealed in resend:
            key_id = wire.parse_header(sealed.payload).key_id
            if key_id in self.keys:
                self._remember(sealed)
                continue
            # Its ack would come under a key this process does not hold.
            resealed += await self.writer.call(self.store.requeue, sealed.batch.batch_id)
            log.warning(
                "batch %d was sealed with payload key %d, which this uplink does not hold:"
                " its rows leave again under key %d",
                sealed.batch.batch_id,
                key_id,
                self.cfg.key_id,
            )
        in_use = {wire.parse_header(e.payload).key_id for e in self.in_flight.values()}
        self.keys = {k: v for k, v in self.keys.items() if k in in_use or k == self.cfg.key_id}
        if self.in_flight:
            log.info("resending %d batches sealed before the start", len(self.in_flight))
        if moved or resealed:
            log.info("put %d rows of batches in flight before the start back", moved + resealed)

    def _seal(self, batch: Batch, book: wire.ReferenceBook) -> bytes:
        """Seal ``batch``; runs in the store's thread, inside the transaction that takes
        it, against ``book``, a snapshot (the live book learns meanwhile)."""
        content = _content(batch)
        references = None
        if self.cfg.wire_version >= _CODED_SINCE and not content.events:
            first = min((r.slot for r in content.readings), default=0)
            references = book.usable(first - REFERENCE_MAX_AGE_S)
        payload = wire.seal_batch(
            content,
            concentrator_id=self.concentrator_id,
            key_id=self.cfg.key_id,
            key=self.key,
            seq=batch.batch_id,
            version=self.cfg.wire_version,
            software=__version__,
            references=references,
        )
        if references:
            self.stats.coded += 1
        return payload

    async def _take(self) -> InFlight | None:
        """The next batch out of the outbox, sealed and kept, now in flight; None when
        the outbox is empty."""
        sealed = await self.writer.call(
            self.store.take_sealed_batch,
            self.cfg.batch_readings,
            self.cfg.batch_events,
            functools.partial(self._seal, book=self.references.copy()),
        )
        return None if sealed is None else self._remember(sealed)

    def _remember(self, sealed: SealedBatch) -> InFlight:
        batch = sealed.batch
        entry = InFlight(
            batch.batch_id,
            sealed.payload,
            sent_at=-1e18,
            readings=len(batch.readings),
            latest=latest_readings(r.reading for r in batch.readings),
        )
        self.in_flight[batch.batch_id] = entry
        return entry

    async def _send_loop(self) -> None:
        while True:
            await self._connected.wait()
            now = time.monotonic()
            for entry in sorted(self.in_flight.values(), key=lambda e: e.batch_id):
                if now - entry.sent_at >= self.cfg.ack_timeout_s:
                    if entry.sent_at > 0:
                        self.stats.batches_resent += 1
                    self._publish(entry)
            while len(self.in_flight) < self.cfg.window and self._connected.is_set():
                try:
                    taken = await self._take()
                except StoreError as exc:
                    # A full disk: the batch's sequence number cannot be persisted, so
                    # nothing new is sealed (a nonce is never used unrecorded); batches
                    # already in flight go on, and the next tick tries again.
                    log.warning("cannot take a new batch: %s", exc)
                    break
                if taken is None:
                    break
                self._publish(taken)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.cfg.poll_s):
                    await self._wake.wait()

    @property
    def connected(self) -> asyncio.Event:
        return self._connected

    def request_package_chunk(self, payload: bytes) -> bool:
        """Ask the receiver for a package chunk (QoS 0: the updater asks again when no
        answer comes); False when the link is down."""
        if not self._connected.is_set():
            return False
        info = self._client.publish(self.pkg_request_topic, payload, qos=0)
        return info.rc == mqtt.MQTT_ERR_SUCCESS

    def _publish(self, entry: InFlight) -> None:
        info = self._client.publish(self.up_topic, entry.payload, qos=1)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            return  # not connected any more: resent after the reconnect
        entry.sent_at = time.monotonic()
        self.stats.batches_sent += 1
        self.stats.bytes_sent += len(entry.payload)

    async def _ack_loop(self) -> None:
        while True:
            payload = await self._acks.get()
            try:
                key_id = wire.parse_header(payload).key_id
                key = self.keys.get(key_id)
                if key is None:
                    log.warning("ignored an ack under payload key %d, not held here", key_id)
                    continue
                ack = wire.open_ack(payload, key)
            except wire.WireError as exc:
                log.warning("ignored an ack that failed verification: %s", exc)
                continue
            entry = self.in_flight.get(ack.seq)
            if ack.status == "rejected":
                self.stats.rejected += 1
                log.error("receiver rejected batch %d: %s", ack.seq, ack.reason)
                continue  # kept in flight: resent after the timeout
            if ack.status == "resync":
                await self._resync(ack)
                continue
            try:
                await self.writer.call(self.store.mark_delivered, ack.seq)
            except StoreError as exc:
                # Not recorded: the batch stays in flight, is resent after the timeout
                # (the receiver stores it once and acks again) and marked then.
                log.warning("cannot mark batch %d delivered: %s", ack.seq, exc)
                continue
            if entry is not None:
                del self.in_flight[ack.seq]
                self.stats.batches_acked += 1
                self.stats.readings_acked += entry.readings
                self.references.learn(entry.latest)
            self.stats.last_ack_at = time.time()
            self._wake.set()

    async def _resync(self, ack: wire.Ack) -> None:
        """The receiver stored nothing of batch ``ack.seq``: it could not resolve a
        reference. Trust no reference any more, and put the batch's rows back into the
        outbox: they leave again as a key batch under a new ``seq`` (never the old one
        with other bytes)."""
        entry = self.in_flight.get(ack.seq)
        self.references.forget()
        if entry is None:
            return  # already requeued (a second resync for the same batch)
        try:
            await self.writer.call(self.store.requeue, ack.seq)
        except StoreError as exc:
            log.warning("cannot put batch %d back for a resync: %s", ack.seq, exc)
            return  # still in flight: resent after the timeout, refused again, retried
        del self.in_flight[ack.seq]
        self.stats.resyncs += 1
        log.info("receiver asked for a key batch instead of batch %d: %s", ack.seq, ack.reason)
        self._wake.set()

    def flush(self) -> None:
        """Look for readings to send now rather than at the next ``poll_s`` tick."""
        self._wake.set()

    def status(self) -> dict[str, object]:
        s = self.stats
        return {
            "connected": s.connected,
            "in_flight": len(self.in_flight),
            "batches_sent": s.batches_sent,
            "batches_resent": s.batches_resent,
            "batches_acked": s.batches_acked,
            "readings_acked": s.readings_acked,
            "bytes_sent": s.bytes_sent,
            "last_ack_at": s.last_ack_at,
            "rejected": s.rejected,
            "resyncs": s.resyncs,
            "coded": s.coded,
        }
