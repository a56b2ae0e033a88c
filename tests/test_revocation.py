"""Certificate revocation and renewal against a real Mosquitto (tests/mqtt_harness.py):
the CRL the broker config names, SIGHUP to re-read it, and the ledger the receivers read.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from helpers import Operators, receiver_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mqtt_harness import WAIT_S, Broker, Peer, connect_and_wait, mqtt_client, wait_until
from test_uplink_e2e import Receiver

from cloud_receiver.applications.fleet import pki, revocation
from cloud_receiver.applications.fleet.pki import PkiError
from cloud_receiver.ingest.ingestor import Ingestor
from cloud_receiver.ingest.keys import REVOCATIONS, KeyRegistry, Revocations
from cloud_receiver.storage import audit as chain
from cloud_receiver.storage import open_storage
from contract import wire
from contract.records import Reading


def connects(broker: Broker, name: str) -> bool:
    client = mqtt_client(broker, name, name)
    try:
        return connect_and_wait(client, broker.port).is_success
    finally:
        client.disconnect()
        client.loop_stop()


def serial_of(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def crl_of(pki_dir: Path) -> x509.CertificateRevocationList:
    return x509.load_pem_x509_crl((pki_dir / revocation.CRL_FILE).read_bytes())


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    with Broker(tmp_path / "broker") as b:
        for cid in ("A", "B"):
            pki.provision(b.pki_dir, cid, broker_host="localhost", broker_port=b.port)
        yield b


def test_the_broker_config_names_a_crl_signed_by_the_ca(broker: Broker) -> None:
    conf = broker.conf.read_text()
    assert f"crlfile {broker.pki_dir / revocation.CRL_FILE}" in conf
    crl = crl_of(broker.pki_dir)
    ca = x509.load_pem_x509_certificate((broker.pki_dir / "ca.crt").read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca.subject
    assert len(crl) == 0
    assert crl.next_update_utc is not None
    assert crl.next_update_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=29)


def test_a_revoked_concentrator_cannot_connect_others_still_can(broker: Broker) -> None:
    cert = broker.pki_dir / "concentrators" / "A" / "A.crt"
    assert connects(broker, "A") and connects(broker, "B")

    newly = revocation.revoke_concentrator(broker.pki_dir, "A")
    assert newly == [serial_of(cert)]
    entry = crl_of(broker.pki_dir).get_revoked_certificate_by_serial_number(serial_of(cert))
    assert entry is not None
    reason = entry.extensions.get_extension_for_class(x509.CRLReason).value
    assert reason.reason is x509.ReasonFlags.key_compromise
    # The receivers' view: A is revoked, B is not.
    ledger = Revocations(broker.pki_dir / "revoked.json")
    assert ledger.is_revoked("A") and not ledger.is_revoked("B")

    broker.reload()  # SIGHUP: Mosquitto re-reads the CRL
    wait_until(lambda: not connects(broker, "A"), WAIT_S * 3, "A to be refused")
    assert "certificate verify failed" in broker.log_text()
    assert connects(broker, "B")
    assert connects(broker, "receiver")
    # Still refused after a restart (the CRL is read at start-up too).
    broker.restart()
    assert not connects(broker, "A")
    assert connects(broker, "B")
    # Revoking again changes nothing and says so.
    assert revocation.revoke_concentrator(broker.pki_dir, "A") == []


def test_renewal_keeps_the_old_certificate_for_its_grace_then_revokes_it(broker: Broker) -> None:
    directory = broker.pki_dir / "concentrators" / "B"
    old_cert = directory / "B.crt"
    kept = broker.root / "old"
    kept.mkdir()
    (kept / "B.crt").write_bytes(old_cert.read_bytes())
    (kept / "B.key").write_bytes((directory / "B.key").read_bytes())
    old_serial = serial_of(old_cert)

    renewal = revocation.renew_certificate(broker.pki_dir, "B", grace=dt.timedelta(hours=1))
    assert renewal.old_serial == old_serial
    assert renewal.new_serial == serial_of(old_cert) != old_serial
    new = x509.load_pem_x509_certificate(old_cert.read_bytes())
    assert new.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "B"
    assert [e.serial for e in revocation.pending(broker.pki_dir)] == [old_serial]
    assert len(crl_of(broker.pki_dir)) == 0  # inside the grace period

    old_tls = {
        "ca_certs": str(broker.pki_dir / "ca.crt"),
        "certfile": str(kept / "B.crt"),
        "keyfile": str(kept / "B.key"),
    }

    def old_connects() -> bool:
        client = mqtt_client(broker, "B", "B", tls=old_tls)
        try:
            return connect_and_wait(client, broker.port).is_success
        finally:
            client.disconnect()
            client.loop_stop()

    broker.reload()
    assert connects(broker, "B") and old_connects()  # both work during the grace period

    # A CRL written after the grace period holds the old certificate, not the new one.
    later = renewal.old_revoked_at + 1
    revocation.write_crl(broker.pki_dir, now=later)
    crl = crl_of(broker.pki_dir)
    assert crl.get_revoked_certificate_by_serial_number(old_serial) is not None
    assert crl.get_revoked_certificate_by_serial_number(renewal.new_serial) is None

    # On demand: revoke --superseded, now; B itself is not revoked.
    revocation.write_crl(broker.pki_dir)
    assert revocation.revoke_superseded(broker.pki_dir, "B") == [old_serial]
    assert not Revocations(broker.pki_dir / "revoked.json").is_revoked("B")
    broker.reload()
    wait_until(lambda: not old_connects(), WAIT_S * 3, "the old certificate to be refused")
    assert connects(broker, "B")


def test_refusals_name_what_is_wrong(broker: Broker, tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="'nobody' has no certificate"):
        revocation.revoke_concentrator(broker.pki_dir, "nobody")
    with pytest.raises(PkiError, match="reason 'stolen' is not one of"):
        revocation.revoke_concentrator(broker.pki_dir, "A", reason="stolen")
    with pytest.raises(PkiError, match="invalid"):
        revocation.renew_certificate(broker.pki_dir, "../A")
    with pytest.raises(PkiError, match="negative"):
        revocation.renew_certificate(broker.pki_dir, "A", grace=dt.timedelta(seconds=-1))
    revocation.revoke_concentrator(broker.pki_dir, "A", reason="cessation_of_operation")
    with pytest.raises(PkiError, match="'A' is revoked; a revoked concentrator gets no new"):
        revocation.renew_certificate(broker.pki_dir, "A")

    # A damaged ledger is refused by the writer, and ignored (last good state kept) by
    # the receivers' reader, which never reads it as "nobody revoked".
    ledger_path = broker.pki_dir / "revoked.json"
    reader = Revocations(ledger_path)
    assert reader.is_revoked("A")
    ledger_path.write_text("{not json")
    with pytest.raises(PkiError, match=r"revoked\.json: not a revocation ledger"):
        revocation.load_ledger(broker.pki_dir)
    assert reader.is_revoked("A")
    ledger_path.write_text(json.dumps({"concentrators": {}, "certificates": []}))
    assert not reader.is_revoked("A")


# ------------------------------------------------------------------ command line, receiver
def test_revoke_from_the_command_line_is_audited_and_the_receiver_quarantines(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    pki_dir = tmp_path / "pki"
    for cid in ("dc-a", "dc-b"):
        pki.provision(pki_dir, cid, broker_host="localhost", broker_port=8883)
    db = f"sqlite:///{tmp_path / 'r.db'}"
    ops = operators(db)
    ada, olga = ops.login("ada", "administrator"), ops.login("olga", "operator")

    # An operator may not revoke; the refusal is audited and nothing is written.
    done = receiver_cli("revoke", "dc-a", "--pki-dir", str(pki_dir), "--db", db, session=olga)
    assert done.returncode == 4, done.stderr
    assert "operator:olga (operator) may not key.revoke" in done.stderr
    assert not (pki_dir / "revoked.json").exists()

    done = receiver_cli(
        "revoke", "dc-a", "--pki-dir", str(pki_dir), "--db", db, "--json", session=ada
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    serial = serial_of(pki_dir / "concentrators" / "dc-a" / "dc-a.crt")
    assert doc["revoked"] == [f"{serial:x}"] and doc["concentrator_revoked"]
    assert crl_of(pki_dir).get_revoked_certificate_by_serial_number(serial) is not None

    storage = open_storage(db)
    try:
        with storage.transaction() as tx:
            entries = chain.entries(tx, kinds=("revoke", "denied"))
            assert chain.verify(tx).intact
        assert [(e.principal, e.kind, e.outcome, e.target) for e in entries] == [
            ("operator:olga", "denied", "denied", "concentrator:dc-a"),
            ("operator:ada", "revoke", "ok", "concentrator:dc-a"),
        ]
        assert json.loads(entries[1].detail)["serials"] == [f"{serial:x}"]

        # The receiver refuses dc-a's batches (quarantine, reason `revoked`), takes dc-b's.
        keys = KeyRegistry(pki_dir / pki.KEY_REGISTRY).lookup
        ingestor = Ingestor(storage, keys, revoked=Revocations(pki_dir / REVOCATIONS).is_revoked)
        reading = Reading("000000000001", "energy_fwd_total", 1_795_000_000, "1.00", "kWh", 1.0)
        for cid in ("dc-a", "dc-b"):
            payload = wire.seal_batch(
                wire.BatchContent((reading,), ()),
                concentrator_id=cid,
                key_id=1,
                key=keys(cid, 1) or b"",
                seq=1,
            )
            outcome = ingestor.handle(f"mf/v1/{cid}/up", payload)
            assert outcome.status == ("quarantined" if cid == "dc-a" else "stored"), outcome
        quarantined = storage.quarantined()
        assert [(q.concentrator, q.reason) for q in quarantined] == [("dc-a", "revoked")]
        assert [r.concentrator for r in storage.readings()] == ["dc-b"]
    finally:
        storage.close()

    # Renewing a revoked concentrator is refused, and nothing changes.
    before = (pki_dir / "concentrators" / "dc-a" / "dc-a.crt").read_bytes()
    done = receiver_cli(
        "provision", "dc-a", "--pki-dir", str(pki_dir), "--broker-host", "localhost",
        "--broker-port", "8883", "--renew-cert",
    )  # fmt: skip
    assert done.returncode == 1
    assert "'dc-a' is revoked; a revoked concentrator gets no new certificate" in done.stderr
    assert (pki_dir / "concentrators" / "dc-a" / "dc-a.crt").read_bytes() == before


def test_renew_cert_and_crl_from_the_command_line(tmp_path: Path) -> None:
    pki_dir = tmp_path / "pki"
    args = ["--pki-dir", str(pki_dir), "--broker-host", "localhost", "--broker-port", "8883"]
    assert receiver_cli("provision", "dc-a", *args).returncode == 0
    cert = pki_dir / "concentrators" / "dc-a" / "dc-a.crt"
    old = serial_of(cert)
    done = receiver_cli("provision", "dc-a", *args, "--renew-cert", "--grace", "2h")
    assert done.returncode == 0, done.stderr
    assert serial_of(cert) != old
    assert f"the old one ({old:x}) enters the CRL at" in done.stderr
    done = receiver_cli("crl", "--pki-dir", str(pki_dir), "--days", "2")
    assert done.returncode == 0, done.stderr
    assert "0 revoked certificate(s)" in done.stdout
    assert f"pending: dc-a certificate {old:x} (superseded)" in done.stdout
    next_update = crl_of(pki_dir).next_update_utc
    assert next_update is not None
    assert next_update < dt.datetime.now(dt.UTC) + dt.timedelta(days=2, minutes=1)
    done = receiver_cli("provision", "dc-a", *args, "--renew-cert", "--grace", "0s")
    assert done.returncode == 2 and "--grace" in done.stderr


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=10,
)
_ENTRY = st.fixed_dictionaries(
    {},
    optional={
        "serial": st.sampled_from(["1f", "zz", ""]) | _JSON,
        "concentrator": st.just("A") | _JSON,
        "revoke_at": st.floats() | _JSON,
        "reason": st.sampled_from(["superseded", "nope"]) | _JSON,
    },
)
_LEDGER = st.fixed_dictionaries(
    {},
    optional={
        "concentrators": st.dictionaries(st.sampled_from(["A", "B"]), _JSON) | _JSON,
        "certificates": st.lists(_ENTRY, max_size=3) | _JSON,
    },
)


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(doc=_LEDGER | _JSON)
def test_any_ledger_is_read_or_refused_by_name(tmp_path: Path, doc: object) -> None:
    """Whatever the ledger holds, the writer either reads it or says it is not a ledger,
    and the receivers' reader never raises (it keeps the last good state)."""
    path = tmp_path / REVOCATIONS
    path.write_text(json.dumps(doc))
    try:
        revocation.load_ledger(tmp_path)
    except PkiError as exc:
        assert "not a revocation ledger" in str(exc)
    reader = Revocations(path)
    assert reader.is_revoked("A") in (True, False)


def test_a_revoked_concentrator_already_connected_is_quarantined_by_the_running_receiver(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    """The broker checks the CRL only at the handshake: a connection opened before the
    revocation stays open, and `cloud-receiver run` refuses what comes through it."""
    rdb = tmp_path / "r.db"
    db = f"sqlite:///{rdb}"
    ada = operators(db).login("ada", "administrator")
    with Broker(tmp_path / "broker") as broker:
        for cid in ("A", "B"):
            pki.provision(broker.pki_dir, cid, broker_host="localhost", broker_port=broker.port)
        keys = KeyRegistry(broker.pki_dir / pki.KEY_REGISTRY).lookup
        receiver = Receiver(broker, db, tmp_path / "receiver.log")
        receiver.start()
        peers: list[Peer] = []
        try:
            for cid in ("A", "B"):
                peers.append(Peer.connect(broker, cid))
                assert not peers[-1].subscribe(f"mf/v1/{cid}/ack").is_failure
            a, b = peers

            def batch(cid: str, seq: int) -> bytes:
                reading = Reading(
                    f"00000000000{seq}", "energy_fwd_total", 1_795_000_000, "1.00", "kWh", 1.0
                )
                return wire.seal_batch(
                    wire.BatchContent((reading,), ()),
                    concentrator_id=cid,
                    key_id=1,
                    key=keys(cid, 1) or b"",
                    seq=seq,
                )

            # Until the receiver has subscribed the broker answers "no matching
            # subscribers" and drops the batch: resend it until one is delivered.
            wait_until(
                lambda: a.publish("mf/v1/A/up", batch("A", 1)).value == 0,
                60,
                "the receiver's subscription",
            )
            a.wait_for(lambda: bool(a.payloads("mf/v1/A/ack")), "A's first ack", timeout=60)

            done = receiver_cli(
                "revoke", "A", "--pki-dir", str(broker.pki_dir), "--db", db, session=ada
            )
            assert done.returncode == 0, done.stderr
            assert "reload the broker" in done.stdout

            # A's open connection still publishes; the receiver quarantines, never acks.
            assert a.publish("mf/v1/A/up", batch("A", 2)).value == 0
            assert b.publish("mf/v1/B/up", batch("B", 3)).value == 0
            b.wait_for(lambda: bool(b.payloads("mf/v1/B/ack")), "B's ack", timeout=60)

            def quarantined() -> list[tuple[str | None, str]]:
                s = open_storage(db)
                try:
                    return [(q.concentrator, q.reason) for q in s.quarantined()]
                finally:
                    s.close()

            wait_until(lambda: bool(quarantined()), 60, "A's batch in quarantine")
            assert quarantined() == [("A", "revoked")]
            assert len(a.payloads("mf/v1/A/ack")) == 1

            # After the reload a new connection of A is refused; B and the receiver go on.
            broker.reload()
            wait_until(lambda: not connects(broker, "A"), WAIT_S * 3, "A to be refused")
            assert b.publish("mf/v1/B/up", batch("B", 4)).value == 0
            b.wait_for(lambda: len(b.payloads("mf/v1/B/ack")) == 2, "B's second ack", timeout=60)
        finally:
            for peer in peers:
                peer.close()
            receiver.stop()
    s = open_storage(db)
    try:
        assert sorted((r.concentrator, r.meter) for r in s.readings()) == [
            ("A", "000000000001"),
            ("B", "000000000003"),
            ("B", "000000000004"),
        ]
    finally:
        s.close()


def test_a_ledger_or_key_registry_replaced_within_one_mtime_tick_is_read_again(
    tmp_path: Path,
) -> None:
    """Files the PKI tools replace (a new inode) are re-read even when the file system's
    timestamps cannot tell the versions apart."""
    ledger = tmp_path / REVOCATIONS
    ledger.write_text(json.dumps({"concentrators": {}}))
    os.utime(ledger, ns=(1_000_000_000, 1_000_000_000))
    reader = Revocations(ledger)
    assert not reader.is_revoked("A")
    replacement = tmp_path / "new.json"
    replacement.write_text(json.dumps({"concentrators": {"A": {}}}))
    os.utime(replacement, ns=(1_000_000_000, 1_000_000_000))
    os.replace(replacement, ledger)
    assert reader.is_revoked("A")

    pki.provision(tmp_path / "pki", "A", broker_host="localhost", broker_port=8883)
    registry_path = tmp_path / "pki" / pki.KEY_REGISTRY
    os.utime(registry_path, ns=(1_000_000_000, 1_000_000_000))
    registry = KeyRegistry(registry_path)
    assert registry.lookup("A", 1) is not None and registry.lookup("A", 2) is None
    pki.provision(tmp_path / "pki", "A", broker_host="localhost", broker_port=8883, rotate_key=True)
    os.utime(registry_path, ns=(1_000_000_000, 1_000_000_000))
    assert registry.lookup("A", 2) is not None
