"""The deployment PKI and the broker's ACL, against a real Mosquitto (tests/mqtt_harness.py).

Refusals are proved with a sentinel: after the message that must not arrive, a permitted
one is sent on the same path; once the sentinel is in, the refused message would have
been too (one connection, one order), so no fixed sleep is needed.
"""

from __future__ import annotations

import json
import stat
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from mqtt_harness import Broker, Peer, connect_and_wait, mqtt_client

from cloud_receiver.applications.fleet import pki
from cloud_receiver.cli import main as cli

NOT_AUTHORIZED = 0x87


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    with Broker(tmp_path_factory.mktemp("broker")) as b:
        for cid in ("A", "B"):
            pki.provision(b.pki_dir, cid, broker_host="localhost", broker_port=b.port)
        yield b


@pytest.fixture
def peers(broker: Broker) -> Iterator[list[Peer]]:
    opened: list[Peer] = []
    yield opened
    for peer in opened:
        peer.close()


def connect(peers: list[Peer], broker: Broker, name: str, client_id: str | None = None) -> Peer:
    peer = Peer.connect(broker, name, client_id)
    peers.append(peer)
    return peer


def test_receiver_gets_own_topic_via_shared_subscription_foreign_topic_refused(
    broker: Broker, peers: list[Peer]
) -> None:
    receiver = connect(peers, broker, "receiver", "receiver-1")
    assert not receiver.subscribe("$share/r/mf/v1/+/up").is_failure
    a = connect(peers, broker, "A")

    assert a.publish("mf/v1/A/up", b"batch-1").value == 0
    receiver.wait_payload(b"batch-1")

    # A posing as B: refused with a v5 reason code, and never delivered.
    assert a.publish("mf/v1/B/up", b"forged").value == NOT_AUTHORIZED
    assert a.publish("mf/v1/A/up", b"sentinel-1").value == 0
    receiver.wait_payload(b"sentinel-1")
    assert b"forged" not in receiver.payloads()


@pytest.mark.parametrize("topic", ["mf/v1/A/ack", "mf/v1/A/cmd", "mf/v1/B/ack", "other"])
def test_concentrator_publishes_only_its_up_topic(
    broker: Broker, peers: list[Peer], topic: str
) -> None:
    a = connect(peers, broker, "A")
    assert a.publish(topic, b"x").value == NOT_AUTHORIZED


def test_concentrator_cannot_read_another_ack(broker: Broker, peers: list[Peer]) -> None:
    receiver = connect(peers, broker, "receiver", "receiver-1")
    a = connect(peers, broker, "A")
    foreign = a.subscribe("mf/v1/B/ack")
    assert not a.subscribe("mf/v1/A/ack").is_failure
    assert not a.subscribe("mf/v1/A/cmd").is_failure

    # Mosquitto 2.0's acl_file grants every SUBSCRIBE and enforces "read" when it
    # delivers; a broker that refuses at SUBACK is stricter, and fine too.
    assert receiver.publish("mf/v1/B/ack", b"ack-for-B").value == 0
    assert receiver.publish("mf/v1/A/cmd", b"cmd-for-A").value == 0
    assert receiver.publish("mf/v1/A/ack", b"ack-for-A").value == 0
    a.wait_payload(b"ack-for-A")
    a.wait_payload(b"cmd-for-A")
    assert b"ack-for-B" not in a.payloads(), f"SUBACK was {foreign}"


def test_client_id_of_another_identity_does_not_take_over_its_session(
    broker: Broker, peers: list[Peer]
) -> None:
    receiver = connect(peers, broker, "receiver", "receiver")
    assert not receiver.subscribe("$share/r/mf/v1/+/up").is_failure
    # The broker replaces the client id by the certificate's CN, so this is "A" and the
    # receiver's connection stays.
    a = connect(peers, broker, "A", "receiver")
    assert a.publish("mf/v1/A/up", b"still-there").value == 0
    receiver.wait_payload(b"still-there")
    assert receiver.client.is_connected()


def test_client_without_certificate_is_refused(broker: Broker) -> None:
    client = mqtt_client(broker, None, "anonymous")
    try:
        result = connect_and_wait(client, broker.port)
    finally:
        client.disconnect()
        client.loop_stop()
    assert not result.is_success, result.reason


@pytest.mark.parametrize("identity", ["A", "receiver"])
def test_certificate_from_another_ca_is_refused(
    broker: Broker, tmp_path: Path, identity: str
) -> None:
    rogue = tmp_path / "rogue-pki"
    pki.init_pki(rogue)
    crt, key = pki.issue_client_cert(rogue, identity)
    tls = {"ca_certs": str(broker.pki_dir / "ca.crt"), "certfile": str(crt), "keyfile": str(key)}
    client = mqtt_client(broker, identity, f"rogue-{identity}", tls=tls)
    try:
        result = connect_and_wait(client, broker.port)
    finally:
        client.disconnect()
        client.loop_stop()
    assert not result.is_success, result.reason


def test_persistent_session_backlog_survives_broker_restart(tmp_path: Path) -> None:
    with Broker(tmp_path) as b:
        pki.provision(b.pki_dir, "A", broker_host="localhost", broker_port=b.port)
        receiver = Peer.connect(b, "receiver", clean_start=False, session_expiry_s=3600)
        assert not receiver.subscribe("$share/r/mf/v1/+/up").is_failure
        receiver.close()

        a = Peer.connect(b, "A")
        assert a.publish("mf/v1/A/up", b"while-receiver-away").value == 0
        a.close()
        b.restart()

        receiver = Peer.connect(b, "receiver", clean_start=False, session_expiry_s=3600)
        try:
            receiver.wait_payload(b"while-receiver-away")
        finally:
            receiver.close()


# --- provisioning ---------------------------------------------------------------------


def test_provision_writes_device_files_with_private_modes(tmp_path: Path) -> None:
    out = pki.provision(tmp_path, "conc-01", broker_host="mqtt.example", broker_port=8883)
    assert out == tmp_path / "concentrators" / "conc-01"
    for secret in ("conc-01.key", "payload.key"):
        assert mode(out / secret) == 0o600, secret
    for secret in ("ca.key", "keys.json"):
        assert mode(tmp_path / secret) == 0o600, secret

    uplink = tomllib.loads((out / "uplink.toml").read_text())["uplink"]
    assert uplink == {
        "broker_host": "mqtt.example",
        "broker_port": 8883,
        "ca_file": "ca.crt",
        "cert_file": "conc-01.crt",
        "key_file": "conc-01.key",
        "payload_key_file": "payload.key",
        "command_key_file": "command.pub",
        "key_id": 1,
        "keepalive_s": 300,
    }
    for name in ("ca.crt", "conc-01.crt", "conc-01.key", "payload.key", "command.pub"):
        assert (out / name).exists()
    # The command signing key stays on the receiver side; the device gets its public half.
    assert mode(tmp_path / "command.key") == 0o600
    assert b"PRIVATE" not in (out / "command.pub").read_bytes()
    key = bytes.fromhex((out / "payload.key").read_text().strip())
    assert len(key) == 32
    assert pki.load_key_registry(tmp_path) == {"conc-01": {1: key}}


def test_provision_is_idempotent_and_rotation_keeps_old_keys(tmp_path: Path) -> None:
    out = pki.provision(tmp_path, "C1", broker_host="h", broker_port=1)
    cert = (out / "C1.crt").read_bytes()
    key1 = (out / "payload.key").read_text()
    pki.provision(tmp_path, "C1", broker_host="h", broker_port=1)
    assert (out / "payload.key").read_text() == key1
    assert (out / "C1.crt").read_bytes() == cert

    pki.provision(tmp_path, "C1", broker_host="h", broker_port=1, rotate_key=True)
    key2 = (out / "payload.key").read_text()
    assert key2 != key1
    registry = json.loads((tmp_path / "keys.json").read_text())
    assert registry == {"C1": {"1": key1.strip(), "2": key2.strip()}}
    assert tomllib.loads((out / "uplink.toml").read_text())["uplink"]["key_id"] == 2
    assert pki.new_payload_key() != pki.new_payload_key()


def test_init_pki_is_idempotent(tmp_path: Path) -> None:
    ca = pki.init_pki(tmp_path)
    first = ca.read_bytes()
    assert pki.init_pki(tmp_path).read_bytes() == first


def test_cli_provision_prints_paths_and_rotates(tmp_path: Path) -> None:
    runner = CliRunner()
    args = ["provision", "C7", "--pki-dir", str(tmp_path), "--broker-host", "h"]
    result = runner.invoke(cli, [*args, "--broker-port", "8883"])
    assert result.exit_code == 0, result.output
    printed = [Path(line) for line in result.stdout.splitlines()]
    assert tmp_path / "concentrators" / "C7" / "uplink.toml" in printed
    assert all(p.exists() for p in printed)

    result = runner.invoke(cli, [*args, "--broker-port", "8883", "--rotate-key"])
    assert result.exit_code == 0, result.output
    assert set(pki.load_key_registry(tmp_path)["C7"]) == {1, 2}


@pytest.mark.parametrize("bad_id", ["", "a/b", "x" * 65, "..", "receiver", "sp ace", "a+b"])
def test_cli_provision_rejects_bad_concentrator_id(tmp_path: Path, bad_id: str) -> None:
    result = CliRunner().invoke(
        cli,
        [
            *("provision", bad_id, "--pki-dir", str(tmp_path)),
            *("--broker-host", "h", "--broker-port", "8883"),
        ],
    )
    assert result.exit_code == 2
    assert "concentrator id" in result.output
    assert not (tmp_path / "keys.json").exists()


def test_cli_broker_config_is_idempotent(tmp_path: Path) -> None:
    args = ["broker-config", "--pki-dir", str(tmp_path / "pki"), "--port", "8883"]
    args += ["--out", str(tmp_path / "m.conf"), "--run-as", "nobody-in-particular"]
    runner = CliRunner()
    assert runner.invoke(cli, args).exit_code == 0
    server = (tmp_path / "pki" / "server.crt").read_bytes()
    receiver = (tmp_path / "pki" / "receiver.crt").read_bytes()
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "pki" / "server.crt").read_bytes() == server
    assert (tmp_path / "pki" / "receiver.crt").read_bytes() == receiver
    conf = (tmp_path / "m.conf").read_text()
    assert "require_certificate true" in conf
    assert "use_identity_as_username true" in conf
    assert "pattern write mf/v1/%u/up" in (tmp_path / "m.acl").read_text()


def test_cli_broker_config_bad_pki_fails_clearly(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "ca.key").write_text("garbage")
    result = CliRunner().invoke(
        cli,
        [
            *("broker-config", "--pki-dir", str(tmp_path / "pki"), "--port", "8883"),
            *("--out", str(tmp_path / "m.conf")),
        ],
    )
    assert result.exit_code == 1
    assert "ca.key exists without its pair" in result.output
