"""Outage recovery end to end (issue 20, item 3): `hil-sim fleet` meters on an RS-485
PTY and `hil-sim plc` meters behind a carrier module → `concentrator run` → a real
Mosquitto with TLS → `cloud-receiver run`, on a clock 600 times real time. The daemon is
down for six simulated hours, then the RS-485 bus is cut for two hours, then the carrier
network is down for three (the issue's acceptance); afterwards every 15-minute interval
of every meter is at the receiver exactly once, the missed ones marked recovered
("backfill") with the value the meter recorded for that interval (the simulator's
ground truth), the others live ("poll")."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import pytest
from helpers import DaemonProcess, read_status, truth_values, wait_for
from mqtt_harness import Broker
from test_uplink_e2e import Receiver, _backlog, _configure

from cloud_receiver.storage import SqliteStorage
from concentrator.config import load_config
from concentrator.storage import Store
from hil_sim.process import SimProcess
from hil_sim.truth import read_truth

pytestmark = pytest.mark.slow

SCALE = 600.0  # a 15-minute slot is 1.5 real seconds
SLOT = 900
HOUR = 3600
DAEMON_DOWN = (1 * HOUR, 7 * HOUR)  # simulated seconds after the simulator started
BUS_DOWN = (7.5 * HOUR, 9.5 * HOUR)  # the RS-485 bus
CARRIER_DOWN = (10 * HOUR, 13 * HOUR)  # the carrier network (the module answers)
END = 13.5 * HOUR
QUANTITY = "energy_fwd_total"


def _arrived(db: Path) -> list[tuple[str, int, str, str]]:
    if not db.exists():
        return []
    storage = SqliteStorage(db)
    try:
        return [
            (r.meter, r.slot, r.value, r.source)
            for r in storage.readings()
            if r.quantity == QUANTITY
        ]
    finally:
        storage.close()


def _merge(cfg: Path, plc_cfg: Path) -> None:
    """Put the carrier bus and its meters into the RS-485 config; its tasks read them."""
    plc = plc_cfg.read_text(encoding="utf-8")
    blocks = plc[plc.index("[[bus]]") : plc.index("[[task]]")]
    text = cfg.read_text(encoding="utf-8")
    at = text.index("[[task]]")
    text = text[:at] + blocks + text[at:]
    text = text.replace('groups = ["dlt645"]', 'groups = ["dlt645", "plc"]')
    text = text.replace('groups = ["dlt698"]', 'groups = ["dlt698", "plc-dlt698"]')
    cfg.write_text(text, encoding="utf-8")


def test_every_interval_arrives_once_after_daemon_bus_and_carrier_outages(
    tmp_path: Path,
) -> None:
    cfg, store_db, rdb = tmp_path / "c.toml", tmp_path / "store.db", tmp_path / "receiver.db"
    (tmp_path / "links").mkdir()
    origin = time.time()

    def sim_now() -> float:
        return origin + (time.time() - origin) * SCALE

    with Broker(tmp_path / "broker") as broker:
        sim = SimProcess(
            ["fleet", "--buses", "1", "--meters-per-bus", "4", "--protocols", "dlt645,dlt698",
             "--baud", "9600", "--time-scale", str(SCALE), "--time-origin", repr(origin),
             "--cadence", "15m", "--offline", f"*@{BUS_DOWN[0]:.0f}-{BUS_DOWN[1]:.0f}",
             "--link-dir", str(tmp_path / "links"), "--write-config", str(cfg),
             "--store", str(store_db)]
        )  # fmt: skip
        plc_cfg = tmp_path / "plc.toml"
        plc = SimProcess(
            ["plc", "--meters", "2", "--protocols", "dlt645,dlt698",
             "--address-base", "000000000101", "--link", str(tmp_path / "plc"),
             "--baud", "0", "--time-scale", str(SCALE), "--time-origin", repr(origin),
             "--network-down", f"{CARRIER_DOWN[0]:.0f}-{CARRIER_DOWN[1]:.0f}",
             "--write-config", str(plc_cfg), "--store", str(store_db)]
        )  # fmt: skip
        sim.start()
        plc.start()
        # Each simulator's outages count from its own start (its ready line says when).
        fleet, module = (float(p.ready["clock_start"]) for p in (sim, plc))
        rs485 = [m.address for m in load_config(cfg).meters]
        carrier = [m.address for m in load_config(plc_cfg).meters]
        _merge(cfg, plc_cfg)
        meters = rs485 + carrier
        assert [m.address for m in load_config(cfg).meters] == meters
        _configure(tmp_path, broker, cfg)
        sock = Path(tempfile.mkdtemp(prefix="outage-", dir="/tmp")) / "ctl.sock"
        text = cfg.read_text(encoding="utf-8")
        cfg.write_text(
            text.replace("[concentrator]\n", f'[concentrator]\ncontrol_socket = "{sock}"\n', 1),
            encoding="utf-8",
        )
        receiver = Receiver(broker, rdb, tmp_path / "receiver.log")
        receiver.start()
        args = ("--time-scale", str(SCALE), "--time-origin", repr(origin))
        daemon = DaemonProcess(cfg, *args)
        status = store_db.with_suffix(".status.json")
        try:
            began = wait_for(lambda: read_status(status), 120, "the daemon's status file")
            # The first whole slot after the daemon's first start: earlier ones it never
            # knew of (a slow start on a busy machine takes more than a slot).
            first = (int(began["started"]) // SLOT + 1) * SLOT
            wait_for(lambda: sim_now() >= fleet + DAEMON_DOWN[0], 120, "the first live hour")
            assert daemon.stop() == 0
            stopped = sim_now()
            wait_for(lambda: sim_now() >= fleet + DAEMON_DOWN[1], 120, "six hours down")
            restarted = sim_now()
            daemon = DaemonProcess(cfg, *args)
            wait_for(lambda: sim_now() >= max(fleet, module) + END, 120, "the other outages")
            # Every slot from the first whole one polled to the last ended.
            last = (int(sim_now()) // SLOT - 1) * SLOT
            wanted = {(m, s) for m in meters for s in range(first, last + SLOT, SLOT)}

            def complete() -> bool:
                return wanted <= {(m, s) for m, s, _, _ in _arrived(rdb)}

            try:
                wait_for(complete, 240, "every interval at the receiver")
            except AssertionError:
                lacking = sorted(wanted - {(m, s) for m, s, _, _ in _arrived(rdb)})
                with Store.open_read_only(store_db) as store:
                    why = {(x.meter, x.slot): x.reason for x in store.missing(quantity=QUANTITY)}
                raise AssertionError([(k, why.get(k)) for k in lacking[:20]]) from None
            wait_for(lambda: _backlog(store_db) == (0, 0), 180, "the backlog to drain")
        finally:
            assert daemon.stop() == 0
            receiver.stop()
            sim.stop()
            plc.stop()

    rows = _arrived(rdb)
    keys = [(m, s) for m, s, _, _ in rows]
    assert len(keys) == len(set(keys))  # exactly once
    by_key = {(m, s): (v, src) for m, s, v, src in rows}
    recorded = {
        (t.meter, int(t.t)): t.value
        for path in (sim.truth, tmp_path / "plc.truth.jsonl")
        for t in read_truth(path)
        if t.quantity == QUANTITY and t.t % SLOT == 0 and t.fault is None
    }
    outages = (
        ((stopped - SLOT, restarted), meters),  # the first slot after the stop is whole
        ((fleet + BUS_DOWN[0], fleet + BUS_DOWN[1]), rs485),
        ((module + CARRIER_DOWN[0], module + CARRIER_DOWN[1]), carrier),
    )
    for (down_from, down_to), down in outages:
        # Slots wholly inside the outage, with a slot of margin for the daemon's stop
        # and start and for a poll that was just finishing.
        lo = (int(down_from) // SLOT + 2) * SLOT
        hi = (int(down_to) // SLOT - 1) * SLOT
        assert hi > lo
        for m in down:
            for s in range(lo, hi + SLOT, SLOT):
                value, source = by_key[(m, s)]
                assert source == "backfill", (m, s, source)
                assert value == recorded[(m, s)], (m, s)
    # Every recovered value is the meter's record; every live one a value it told.
    for (m, s), (value, source) in by_key.items():
        if source == "backfill":
            assert value == recorded[(m, s)], (m, s)
        else:
            assert source == "poll"
    # And every value the concentrator stored (freezes too) is one a meter told.
    told: dict[tuple[str, str], set[str]] = {}
    for path in (sim.truth, tmp_path / "plc.truth.jsonl"):
        for key, values in truth_values(path).items():
            told.setdefault(key, set()).update(values)
    with Store.open_read_only(store_db) as store:
        stored = [r.reading for r in store.get_readings()]
    assert stored
    for r in stored:
        if r.quantity != "frozen_daily_time":  # a freeze stamp, checked through its energy
            assert r.value in told[(r.meter, r.quantity)], r
