"""DL/T 698.45 and DL/T 645-1997 meters behind a simulated Q/GDW 1376.2 carrier module
(13 F1 forwards each frame with its protocol type), read end to end: `hil-sim plc
--protocols` → `concentrator run` → a real Mosquitto with TLS → `cloud-receiver run`;
every reading arrives exactly once, with the value the meter told."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import DaemonProcess, wait_for
from mqtt_harness import Broker
from test_daemon_e2e import _assert_values_are_true
from test_uplink_e2e import Receiver, _backlog, _configure, delivered_as_committed

from cloud_receiver.storage import SqliteStorage
from concentrator.config import load_config
from concentrator.storage import Store
from hil_sim.process import SimProcess

pytestmark = pytest.mark.slow

MIX = ("dlt698", "dlt645", "dlt645-1997")


def _rows(db: Path) -> list:  # type: ignore[type-arg]
    if not db.exists():
        return []
    storage = SqliteStorage(db)
    try:
        return storage.readings()
    finally:
        storage.close()


def test_698_and_1997_meters_through_the_carrier_module(tmp_path: Path) -> None:
    cfg, store_db, rdb = tmp_path / "c.toml", tmp_path / "store.db", tmp_path / "receiver.db"
    truth = tmp_path / "plc.truth.jsonl"
    with Broker(tmp_path / "broker") as broker:
        sim = SimProcess(
            ["plc", "--meters", "6", "--protocols", ",".join(MIX), "--link",
             str(tmp_path / "plc"), "--routed", "0", "--latency", "1", "--baud", "0",
             "--time-scale", "30", "--cadence", "5m", "--write-config", str(cfg),
             "--store", str(store_db), "--truth", str(truth)]
        )  # fmt: skip
        sim.start()
        meters = {m.address: m.protocol for m in load_config(cfg).meters}
        assert [meters[a] for a in sorted(meters)] == list(MIX * 2)
        _configure(tmp_path, broker, cfg)
        receiver = Receiver(broker, rdb, tmp_path / "receiver.log")
        receiver.start()
        daemon = DaemonProcess(cfg, "--time-scale", "30")
        wanted = {(m, "energy_fwd_total") for m in meters}
        try:
            wait_for(
                lambda: wanted <= {(r.meter, r.quantity) for r in _rows(rdb)},
                240,
                "every meter's energy upstream",
            )
            sim.stop()
            wait_for(lambda: _backlog(store_db) == (0, 0), 180, "the backlog to drain")
        finally:
            assert daemon.stop() == 0
            receiver.stop()
            sim.stop()

    with Store.open(store_db) as store:
        events = store.events()
    committed = delivered_as_committed(store_db, _rows(rdb))  # nothing lost, none twice
    assert _assert_values_are_true(store_db, truth) >= len(
        [k for k in committed if k[1] == "energy_fwd_total"]
    )
    # The module was told each meter's protocol type (11 F1) and forwarded by it (13 F1):
    # a 698.45 meter answers only 698.45 frames, so its readings prove the type was used.
    got = {meters[m] for m, q, _ in committed if q == "energy_fwd_total"}
    assert got == set(MIX)
    synced = [e for e in events if e.event.kind == "plc_routes_synced"]
    assert synced and len(synced[0].event.detail["added"]) == 6  # type: ignore[arg-type]
    assert not [e for e in events if e.event.kind == "plc_unknown_meter"]
