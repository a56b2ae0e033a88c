"""Coded live batches through the whole chain when the receiver loses what they refer to.

Simulated meters → concentrator (wire version 3, coding each batch against what the
receiver acked) → real Mosquitto → receiver on SQLite. The receiver's database is then
replaced by an older backup: the batches in flight refer to readings it no longer
holds. It stores nothing of them and asks for key batches; the concentrator sends the
same readings again, and coding resumes. Then the concentrator is killed (its book of
references with it) and restarted. At the end no reading is misdecoded, and the
only readings missing are those the restore itself took away.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from helpers import DaemonProcess, wait_for
from mqtt_harness import Broker
from test_daemon_e2e import _assert_values_are_true
from test_uplink_e2e import Receiver, _backlog, _configure, _receiver_count, _uplink

from cloud_receiver.storage import SqliteStorage
from concentrator.storage import Store
from hil_sim.process import SimProcess

pytestmark = pytest.mark.slow


def _keys(db: Path) -> dict[tuple[str, str, int], str]:
    storage = SqliteStorage(db)
    try:
        return {(r.meter, r.quantity, r.slot): r.value for r in storage.readings()}
    finally:
        storage.close()


def _backup(src: Path, dst: Path) -> None:
    """A consistent copy of a live SQLite database (its online backup API)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    a.close()
    b.close()


def test_restored_receiver_resyncs_and_nothing_is_misdecoded(tmp_path: Path) -> None:
    cfg, store_db, rdb = tmp_path / "c.toml", tmp_path / "store.db", tmp_path / "receiver.db"
    status = store_db.with_suffix(".status.json")
    (tmp_path / "links").mkdir()
    with Broker(tmp_path / "broker") as broker:
        sim = SimProcess(
            ["fleet", "--buses", "1", "--meters-per-bus", "8", "--baud", "0",
             "--time-scale", "30", "--cadence", "1m", "--link-dir", str(tmp_path / "links"),
             "--write-config", str(cfg), "--store", str(store_db)]
        )  # fmt: skip
        sim.start()
        _configure(tmp_path, broker, cfg)
        receiver = Receiver(broker, rdb, tmp_path / "receiver.log")
        receiver.start()
        daemon = DaemonProcess(cfg, "--time-scale", "30")
        try:
            wait_for(lambda: _receiver_count(rdb) >= 40, 120, "the first readings upstream")
            _backup(rdb, tmp_path / "backup.db")
            backed_up = _receiver_count(tmp_path / "backup.db")
            wait_for(
                lambda: (
                    int(_uplink(status).get("coded", 0)) >= 3
                    and _receiver_count(rdb) >= backed_up + 40
                ),
                120,
                "coded batches acked after the backup",
            )
            receiver.stop()
            held = set(_keys(rdb))
            for suffix in ("", "-wal", "-shm"):
                Path(f"{rdb}{suffix}").unlink(missing_ok=True)
            _backup(tmp_path / "backup.db", rdb)
            receiver.start()
            wait_for(lambda: int(_uplink(status).get("resyncs", 0)) >= 1, 120, "a resync request")
            after = _receiver_count(rdb)
            wait_for(lambda: _receiver_count(rdb) >= after + 40, 120, "ingest after the resync")
            coded = int(_uplink(status).get("coded", 0))
            wait_for(lambda: int(_uplink(status).get("coded", 0)) > coded, 120, "coding to resume")
            # kill -9 of the concentrator: its book of references is gone with it, the
            # batches it had in flight go back into the outbox, the next go as key
            # batches, and coding starts again from their acks.
            daemon.kill()
            daemon = DaemonProcess(cfg, "--time-scale", "30")
            now = _receiver_count(rdb)
            wait_for(lambda: _receiver_count(rdb) >= now + 40, 120, "ingest after the restart")
            sim.stop()
            wait_for(lambda: _backlog(store_db) == (0, 0), 180, "the backlog to drain")
        finally:
            assert daemon.stop() == 0
            receiver.stop()
            sim.stop()

    with Store.open(store_db) as store:
        stored = store.get_readings()
    committed = {(r.reading.meter, r.reading.quantity, r.reading.slot): r.reading.value
                 for r in stored}  # fmt: skip
    # Committed after the drained outbox was seen (`delivered_as_committed`): waiting.
    waiting = {(r.reading.meter, r.reading.quantity, r.reading.slot)
               for r in stored if r.batch_id is None}  # fmt: skip
    arrived = _keys(rdb)
    storage = SqliteStorage(rdb)
    try:
        assert storage.quarantined() == []
    finally:
        storage.close()
    assert {k: committed[k] for k in arrived} == arrived  # nothing misdecoded or invented
    lost_by_restore = held - set(_keys(tmp_path / "backup.db"))
    assert set(committed) - set(arrived) <= lost_by_restore | waiting
    assert _assert_values_are_true(store_db, sim.truth) > 0
