"""A real Mosquitto for tests (``LocalBroker``: its own PKI, the production config).

    with Broker(tmp_path) as broker:
        pki.provision(broker.pki_dir, "A", broker_host="localhost", broker_port=broker.port)
        client = mqtt_client(broker, "A", "A")

Every process the harness starts is stopped by it (SIGTERM, then SIGKILL); waits poll a
condition against a deadline, never a fixed sleep.
"""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from cloud_receiver.applications.fleet.broker import BrokerLimits
from cloud_receiver.applications.fleet.local_broker import LocalBroker

# One MQTT round trip on loopback takes milliseconds; this only bounds a broken test.
WAIT_S = 10.0


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    delay = 0.01
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


class Broker(LocalBroker):
    """Mosquitto on a free loopback port with a fresh deployment PKI in ``root``."""

    def __init__(
        self,
        root: Path,
        *,
        receivers: tuple[str, ...] = ("receiver",),
        limits: BrokerLimits | None = None,
    ) -> None:
        super().__init__(root, receivers=receivers, limits=limits)

    def client_tls(self, name: str) -> dict[str, str]:
        """``tls_set`` arguments for identity ``name`` (a receiver or a provisioned id)."""
        directory = self.pki_dir
        if not (directory / f"{name}.crt").exists():
            directory = self.pki_dir / "concentrators" / name
        return {
            "ca_certs": str(self.pki_dir / "ca.crt"),
            "certfile": str(directory / f"{name}.crt"),
            "keyfile": str(directory / f"{name}.key"),
        }


def mqtt_client(
    broker: Broker,
    name: str | None,
    client_id: str,
    *,
    tls: dict[str, str] | None = None,
) -> mqtt.Client:
    """An MQTT v5 paho client with TLS as identity ``name`` (``None``: no certificate)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if tls is None and name is not None:
        tls = broker.client_tls(name)
    elif tls is None:
        tls = {"ca_certs": str(broker.pki_dir / "ca.crt")}
    client.tls_set(
        ca_certs=tls["ca_certs"],
        certfile=tls.get("certfile"),
        keyfile=tls.get("keyfile"),
        cert_reqs=ssl.CERT_REQUIRED,
    )
    return client


class ConnectResult:
    def __init__(self) -> None:
        self.done = threading.Event()
        self.reason: ReasonCode | None = None
        self.error: str | None = None

    @property
    def is_success(self) -> bool:
        return self.reason is not None and not self.reason.is_failure


def connect_and_wait(
    client: mqtt.Client,
    port: int,
    *,
    timeout: float = WAIT_S,
    properties: Properties | None = None,
    clean_start: bool = True,
) -> ConnectResult:
    """Connect, start the network loop and wait for CONNACK or the connection's end.

    With TLS 1.3 the client's certificate is checked after the client already considers
    the handshake done, so a refused certificate shows up as a closed connection (or a
    failed CONNACK), not as an error from ``connect()``.
    """
    result = ConnectResult()

    def on_connect(c: mqtt.Client, u: Any, flags: Any, reason: ReasonCode, p: Any) -> None:
        result.reason = reason
        result.done.set()

    def on_disconnect(c: mqtt.Client, u: Any, flags: Any, reason: ReasonCode, p: Any) -> None:
        if result.reason is None:
            result.error = f"disconnected before CONNACK: {reason}"
        result.done.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    try:
        client.connect(
            "localhost", port, keepalive=60, clean_start=clean_start, properties=properties
        )
    except (ssl.SSLError, ConnectionError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.done.set()
        return result
    client.loop_start()
    if not result.done.wait(timeout):
        result.error = "no CONNACK"
    return result


class Peer:
    """A connected client that records what it gets, for waiting on events in tests."""

    def __init__(self, client: mqtt.Client) -> None:
        self.client = client
        self.messages: list[mqtt.MQTTMessage] = []
        self.pubacks: dict[int, ReasonCode] = {}
        self.subacks: dict[int, list[ReasonCode]] = {}
        self._cond = threading.Condition()
        client.on_message = self._on_message
        client.on_publish = self._on_publish
        client.on_subscribe = self._on_subscribe

    @classmethod
    def connect(
        cls,
        broker: Broker,
        name: str,
        client_id: str | None = None,
        *,
        clean_start: bool = True,
        session_expiry_s: int = 0,
    ) -> Peer:
        client = mqtt_client(broker, name, client_id or name)
        peer = cls(client)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        if session_expiry_s:
            props.SessionExpiryInterval = session_expiry_s
        result = connect_and_wait(client, broker.port, clean_start=clean_start, properties=props)
        if not result.is_success:
            client.loop_stop()
            raise ConnectionError(f"{name}: {result.error or result.reason}")
        return peer

    def _on_message(self, c: mqtt.Client, u: Any, message: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(message)
            self._cond.notify_all()

    def _on_publish(self, c: mqtt.Client, u: Any, mid: int, reason: ReasonCode, p: Any) -> None:
        with self._cond:
            self.pubacks[mid] = reason
            self._cond.notify_all()

    def _on_subscribe(
        self, c: mqtt.Client, u: Any, mid: int, reasons: list[ReasonCode], p: Any
    ) -> None:
        with self._cond:
            self.subacks[mid] = reasons
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = WAIT_S) -> None:
        with self._cond:
            if not self._cond.wait_for(predicate, timeout=timeout):
                raise TimeoutError(f"timed out after {timeout} s waiting for {what}")

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> ReasonCode:
        """Publish and return the PUBACK's reason code (MQTT v5 carries one)."""
        info = self.client.publish(topic, payload, qos=qos)
        self.wait_for(lambda: info.mid in self.pubacks, f"PUBACK for {topic}")
        return self.pubacks[info.mid]

    def subscribe(self, topic: str, qos: int = 1) -> ReasonCode:
        _, mid = self.client.subscribe(topic, qos=qos)
        assert mid is not None, f"SUBSCRIBE {topic} was not sent"
        self.wait_for(lambda: mid in self.subacks, f"SUBACK for {topic}")
        return self.subacks[mid][0]

    def payloads(self, topic: str | None = None) -> list[bytes]:
        with self._cond:
            return [bytes(m.payload) for m in self.messages if topic is None or m.topic == topic]

    def wait_payload(self, payload: bytes) -> None:
        self.wait_for(lambda: any(m.payload == payload for m in self.messages), repr(payload))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
