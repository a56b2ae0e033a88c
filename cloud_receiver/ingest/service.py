"""The receiver service: an `Ingestor` behind a persistent MQTT v5 session.

Any number of receivers subscribe to one MQTT v5 shared subscription
(``$share/<group>/mf/v1/+/up``), so the broker splits the concentrators' batches among
them; every receiver writes to the same database and keeps nothing another receiver
would need. The ack of a batch is published only after its commit (`.ingestor`).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from cloud_receiver.ingest.ingestor import TAKE, Ingestor
from contract import package, topics
from contract.mqtt_session import connect_persistent, tls_client

log = logging.getLogger(__name__)


def _seconds(value: float) -> str:
    return f"{value:g}"


COMMAND_POLL_S = 1.0  # how soon an issued command goes out
RECONNECT_MIN_S, RECONNECT_MAX_S = 1, 60  # paho's reconnect backoff, doubling in between


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
        observe_latency: Callable[[float], None] | None = None,
    ) -> None:
        self.ingestor = ingestor
        self.broker = broker
        # Seconds from a batch's arrival to its ack handed to paho (the metrics' histogram).
        self.observe_latency = observe_latency
        # Each message with the monotonic time it arrived.
        self._queue: asyncio.Queue[tuple[mqtt.MQTTMessage, float]] = asyncio.Queue(maxsize=1000)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = asyncio.Event()
        self._closing = False  # set when we disconnect on purpose
        self._retry_s: float | None = None  # the backoff paho waits next (None: connected)
        self.connected = asyncio.Event()
        self._client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        b = self.broker
        client = tls_client(
            b.client_id, ca_file=b.ca_file, cert_file=b.cert_file, key_file=b.key_file
        )
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        client.on_message = self._on_message
        client.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
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
            log.error("broker %s refused the connection: %s", self._where(), reason)
            return
        self._retry_s = None  # paho starts its backoff afresh after a connection
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
        # Our own disconnect at a normal stop is no news; any other one is.
        if self._closing:
            log.info("disconnected from the broker: %s", reason)
        else:
            log.warning(
                "disconnected from the broker %s: %s; reconnecting in %s s",
                self._where(), reason, _seconds(self._next_retry()),
            )  # fmt: skip

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        """paho could not connect (TCP or TLS): called inside its ``except OSError``, so
        the exception in flight is the reason. Logged every time, with the backoff
        paho waits before the next attempt (docs/receiver.md, "cloud-receiver run")."""
        error = sys.exc_info()[1]
        if self._closing:
            return
        reason = f"{type(error).__name__}: {error}" if error is not None else "unknown reason"
        log.warning(
            "cannot connect to the broker %s: %s; retrying in %s s",
            self._where(), reason, _seconds(self._next_retry()),
        )  # fmt: skip

    def _where(self) -> str:
        return f"{self.broker.host}:{self.broker.port}"

    def _next_retry(self) -> float:
        """The delay paho's reconnect loop waits next: its minimum after a connection,
        then doubled up to its maximum (paho's ``reconnect_delay_set``)."""
        if self._retry_s is None:
            self._retry_s = RECONNECT_MIN_S
        else:
            self._retry_s = min(self._retry_s * 2, RECONNECT_MAX_S)
        return self._retry_s

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        loop = self._loop
        if loop is None:
            return
        # Blocks paho's thread when the queue is full: back-pressure to the broker.
        arrived = time.monotonic()
        asyncio.run_coroutine_threadsafe(self._queue.put((msg, arrived)), loop).result()

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
            self._closing = True
            self._client.disconnect()
            self._client.loop_stop()

    def summary(self) -> str:
        """The counters, for the line ``cloud-receiver run`` prints when it stops."""
        c = self.ingestor.counters
        return (
            f"stopped: {c.messages} messages, {c.stored} batches stored ({c.readings} readings),"
            f" {c.duplicates} duplicates, {c.quarantined} quarantined,"
            f" {c.rate_limited} over the rate limit, {c.evicted} evicted from the quarantine"
        )

    def stop(self) -> None:
        self._stop.set()

    async def _work(self) -> None:
        """Take what waits in the queue (up to `TAKE` messages, at least one) and hand
        the batches to the ingest together: when batches arrive faster than one
        commit each, they are stored a group per transaction (`Ingestor.handle_many`);
        when they trickle in, each goes alone, as soon as it arrives."""
        loop = asyncio.get_running_loop()
        while True:
            taken = [await self._queue.get()]
            while len(taken) < TAKE and not self._queue.empty():
                taken.append(self._queue.get_nowait())
            batches: list[tuple[mqtt.MQTTMessage, float]] = []
            for msg, arrived in taken:
                requester = topics.pkgreq_sender(msg.topic)
                if requester is None:
                    batches.append((msg, arrived))
                else:
                    payload = bytes(msg.payload)
                    await loop.run_in_executor(None, self._serve_chunk, requester, payload)
            if not batches:
                continue
            messages = [(msg.topic, bytes(msg.payload), None) for msg, _ in batches]
            outcomes = await loop.run_in_executor(None, self.ingestor.handle_many, messages)
            for (_, arrived), outcome in zip(batches, outcomes, strict=True):
                if outcome.ack is not None and outcome.concentrator is not None:
                    self._client.publish(topics.ack(outcome.concentrator), outcome.ack, qos=1)
                if self.observe_latency is not None:
                    self.observe_latency(time.monotonic() - arrived)

    def _serve_chunk(self, concentrator: str, payload: bytes) -> None:
        """Answer a chunk request (QoS 0 both ways: the concentrator asks again); without
        applications to ask, no release is served."""
        reactions = self.ingestor.reactions
        if reactions is None:
            return
        try:
            version, index = package.decode_request(payload)
            data = reactions.chunk(concentrator, version, index)
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
        """Let the applications send their due commands (`Reactions.tick`) each tick."""
        loop = asyncio.get_running_loop()
        reactions = self.ingestor.reactions
        while reactions is not None:
            await asyncio.sleep(COMMAND_POLL_S)
            if not self.connected.is_set():
                continue
            try:
                await loop.run_in_executor(None, reactions.tick, time.time(), self._send_command)
            except Exception:  # a database hiccup: try again at the next tick
                log.exception("publishing commands failed")

    def _send_command(self, concentrator: str, blob: bytes) -> None:
        """QoS 1: the broker keeps a command for a concentrator that is away. paho keeps
        one it could not send yet and sends it on reconnect."""
        self._client.publish(topics.cmd(concentrator), blob, qos=1)
