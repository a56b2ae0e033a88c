"""How both ends open their MQTT connection: v5, TLS with a client certificate, and a
persistent session, so the broker keeps QoS 1 messages for a peer that is away.

One place for it, so the concentrator's uplink and the receiver cannot drift apart on
the session rules that exactly-once delivery depends on.
"""

from __future__ import annotations

from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

SESSION_EXPIRY_S = 7 * 86400  # the broker keeps a peer's queue for a week away


def tls_client(client_id: str, *, ca_file: Path, cert_file: Path, key_file: Path) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(ca_file), certfile=str(cert_file), keyfile=str(key_file))
    return client


def connect_persistent(client: mqtt.Client, host: str, port: int, *, keepalive_s: int) -> None:
    """Connect in paho's own thread with ``clean_start=False`` and a long session expiry."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = SESSION_EXPIRY_S
    client.connect_async(host, port, keepalive=keepalive_s, clean_start=False, properties=props)
    client.loop_start()
