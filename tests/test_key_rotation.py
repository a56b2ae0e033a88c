"""Rotating a concentrator's payload key and renewing its certificate mid-stream, by the
documented operator path (docs/receiver.md, "Rotating a concentrator's payload key and
certificate"): simulated meters → `concentrator run` → a real Mosquitto with the CRL →
`cloud-receiver run`. New files are copied over the device's, ``key_id`` is changed in
its config, SIGHUP; then the old certificate is revoked and the broker restarted, so the
uplink can only come back with the new one. At the end every reading the concentrator
committed (and the simulator's ground truth confirms) is in the receiver exactly once,
nothing quarantined."""

from __future__ import annotations

import datetime as dt
import shutil
import signal
from pathlib import Path

import pytest
from helpers import DaemonProcess, wait_for
from mqtt_harness import Broker
from sqlalchemy import select
from test_daemon_e2e import _assert_values_are_true
from test_uplink_e2e import Receiver, _backlog, _receiver_count, delivered_as_committed

from cloud_receiver.applications.fleet import pki, revocation
from cloud_receiver.storage import SqliteStorage
from cloud_receiver.storage.schema import batches
from hil_sim.fleet import add_uplink
from hil_sim.process import SimProcess

pytestmark = pytest.mark.slow

CID = "dc-rotate"
DEVICE_FILES = (f"{CID}.crt", f"{CID}.key", "payload.key", "ca.crt", "command.pub")


def _key_ids(db: Path) -> set[int]:
    """The key ids of the batches the receiver stored."""
    if not db.exists():
        return set()
    s = SqliteStorage(db)
    try:
        with s.transaction() as tx:
            return {int(k) for (k,) in tx.execute(select(batches.c.key_id).distinct())}
    finally:
        s.close()


def _reloaded_uplink(db: Path) -> int:
    """How many of the daemon's ``config_reloaded`` events that applied the uplink the
    receiver has."""
    if not db.exists():
        return 0
    s = SqliteStorage(db)
    try:
        events = s.events(CID)
    finally:
        s.close()
    return sum(1 for _, e in events if e.kind == "config_reloaded" and e.detail.get("applied"))


def test_key_rotation_and_certificate_renewal_mid_stream_lose_nothing(tmp_path: Path) -> None:
    cfg, store_db, rdb = tmp_path / "c.toml", tmp_path / "store.db", tmp_path / "receiver.db"
    device = tmp_path / "device"  # the concentrator's copy of its provisioning
    (tmp_path / "links").mkdir()
    with Broker(tmp_path / "broker") as broker:
        sim = SimProcess(
            [
                "fleet", "--buses", "1", "--meters-per-bus", "8", "--baud", "0",
                "--time-scale", "30", "--cadence", "1m",
                "--link-dir", str(tmp_path / "links"),
                "--write-config", str(cfg), "--store", str(store_db),
            ]
        )  # fmt: skip
        sim.start()
        frag = pki.provision(broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port)
        shutil.copytree(frag, device)
        overrides = {"ack_timeout_s": 5.0, "poll_s": 0.5, "batch_readings": 40, "window": 3}
        add_uplink(cfg, device, concentrator_id=CID, overrides=overrides)
        assert "key_id = 1\n" in cfg.read_text()
        receiver = Receiver(broker, rdb, tmp_path / "receiver.log")
        receiver.start()
        daemon = DaemonProcess(cfg, "--time-scale", "30")
        try:
            wait_for(lambda: _receiver_count(rdb) >= 40, 120, "the first readings upstream")
            # Mid-stream: the meters go on being polled and batches go on going up.
            # 1. The utility side: a new payload key (id 2, receivers first) and a new
            #    certificate for the same CN, the old one valid for an hour.
            rotated = pki.provision_details(
                broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port,
                rotate_key=True,
            )  # fmt: skip
            assert rotated.key_id == 2 and rotated.new_key
            renewal = revocation.renew_certificate(broker.pki_dir, CID, grace=dt.timedelta(hours=1))
            # 2. The device side: copy the files over its own, set key_id, SIGHUP.
            for name in DEVICE_FILES:
                shutil.copyfile(frag / name, device / name)
            cfg.write_text(cfg.read_text().replace("key_id = 1\n", "key_id = 2\n"))
            daemon.proc.send_signal(signal.SIGHUP)
            wait_for(lambda: _reloaded_uplink(rdb) >= 1, 120, "the reload to reach the receiver")
            wait_for(lambda: 2 in _key_ids(rdb), 120, "batches under the new key")
            before = _receiver_count(rdb)
            wait_for(lambda: _receiver_count(rdb) >= before + 16, 120, "ingest after the switch")

            # 3. The old certificate is revoked now and the broker restarted: the uplink
            #    reconnects, which it can only do with the renewed certificate.
            assert revocation.revoke_superseded(broker.pki_dir, CID) == [renewal.old_serial]
            broker.restart()
            before = _receiver_count(rdb)
            wait_for(lambda: _receiver_count(rdb) >= before + 16, 120, "ingest after the CRL")

            # Silence the meters, then let the uplink drain everything committed.
            sim.stop()
            wait_for(lambda: _backlog(store_db) == (0, 0), 180, "the backlog to drain")
        finally:
            assert daemon.stop() == 0
            receiver.stop()
            sim.stop()

    storage = SqliteStorage(rdb)
    try:
        rows = storage.readings()
        quarantined = storage.quarantined()
    finally:
        storage.close()
    committed = delivered_as_committed(store_db, rows)  # nothing lost, none twice
    assert quarantined == []  # nothing refused, before, during or after the switch
    assert _key_ids(rdb) == {1, 2}
    assert _assert_values_are_true(store_db, sim.truth) >= len(rows) - len(
        [k for k in committed if k[1] == "frozen_daily_time"]
    )
