"""A mixed RS-485 bus of DL/T 645-2007, DL/T 645-1997 and DL/T 698.45 meters read end to
end: `hil-sim fleet --protocols` → `concentrator run` → a real Mosquitto with TLS →
`cloud-receiver run`; every reading arrives exactly once, with the value the simulated
meter told (its ground-truth log)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import cast

import pytest
from helpers import DaemonProcess, run_cli, wait_for
from mqtt_harness import Broker
from test_daemon_e2e import _assert_values_are_true
from test_uplink_e2e import Receiver, _backlog, _configure, delivered_as_committed

from cloud_receiver.storage import SqliteStorage
from concentrator.config import load_config
from concentrator.storage import Store
from hil_sim.process import SimProcess

pytestmark = pytest.mark.slow

MIX = ("dlt645", "dlt698", "dlt645-1997")
COMMON = ("energy_fwd_total", "voltage_a", "current_a", "power_total")

# One task over every meter of the bus: the names all three protocols share.
MIXED_TASK = """
[[task]]
name = "mixed-instant"
quantities = ["voltage_a", "current_a", "power_total"]
every = "5m"
groups = ["dlt645", "dlt698", "dlt645-1997"]
"""


def _arrived(db: Path) -> set[tuple[str, str]]:
    if not db.exists():
        return set()
    storage = SqliteStorage(db)
    try:
        return {(r.meter, r.quantity) for r in storage.readings()}
    finally:
        storage.close()


def test_mixed_bus_reaches_the_receiver_exactly_once_with_true_values(tmp_path: Path) -> None:
    cfg, store_db, rdb = tmp_path / "c.toml", tmp_path / "store.db", tmp_path / "receiver.db"
    (tmp_path / "links").mkdir()
    with Broker(tmp_path / "broker") as broker:
        sim = SimProcess(
            [
                "fleet",
                "--buses",
                "1",
                "--meters-per-bus",
                "9",
                "--protocols",
                ",".join(MIX),
                "--baud",
                "9600",
                "--time-scale",
                "30",
                "--cadence",
                "5m",
                "--link-dir",
                str(tmp_path / "links"),
                "--write-config",
                str(cfg),
                "--store",
                str(store_db),
            ]
        )
        sim.start()
        config = load_config(cfg)
        meters = {m.address: m.protocol for m in config.meters}
        # --write-config names each meter's protocol as the simulator built it.
        assert sorted(meters.values()) == sorted(MIX * 3)
        assert [meters[a] for a in sorted(meters)] == list(MIX * 3)
        cfg.write_text(cfg.read_text(encoding="utf-8") + MIXED_TASK, encoding="utf-8")
        _configure(tmp_path, broker, cfg)
        sock = Path(tempfile.mkdtemp(prefix="mixed-", dir="/tmp")) / "ctl.sock"
        text = cfg.read_text(encoding="utf-8")
        cfg.write_text(
            text.replace("[concentrator]\n", f'[concentrator]\ncontrol_socket = "{sock}"\n', 1),
            encoding="utf-8",
        )
        receiver = Receiver(broker, rdb, tmp_path / "receiver.log")
        receiver.start()
        daemon = DaemonProcess(cfg, "--time-scale", "30")
        wanted = {(m, q) for m in meters for q in COMMON}
        try:
            wait_for(lambda: wanted <= _arrived(rdb), 240, "every meter's readings upstream")
            # Through the running daemon, between its polls: arrays and blocks as parts.
            by_protocol = {p: next(a for a, q in meters.items() if q == p) for p in MIX}
            for protocol, names, parts in (
                ("dlt698", ["voltage", "clock"], ["voltage_a", "voltage_b", "voltage_c", "clock"]),
                ("dlt645-1997", ["energy_fwd_block"], ["energy_fwd_total", "energy_fwd_t1"]),
            ):
                got = run_cli(
                    "read", by_protocol[protocol], *names, "--json", "--socket", str(sock)
                )
                assert got.returncode == 0, got.stderr
                doc = json.loads(got.stdout)
                assert doc["protocol"] == protocol and "not_supported" not in doc
                assert [r["name"] for r in doc["readings"]][: len(parts)] == parts
            sim.stop()
            wait_for(lambda: _backlog(store_db) == (0, 0), 180, "the backlog to drain")
        finally:
            assert daemon.stop() == 0
            receiver.stop()
            sim.stop()

    with Store.open(store_db) as store:
        missing = store.missing()
    storage = SqliteStorage(rdb)
    try:
        rows = storage.readings()
    finally:
        storage.close()
    committed = cast(
        dict[tuple[str, str, int], tuple[str, str]],
        delivered_as_committed(store_db, rows, lambda r: (r.value, r.unit)),
    )  # nothing lost, none twice, equal values and units
    assert _assert_values_are_true(store_db, sim.truth) >= len(rows) - len(
        [k for k in committed if k[1] == "frozen_daily_time"]
    )
    # One unit per name whatever the meter speaks (698.45 power arrives in W: stored kW).
    units = {(meters[m], q): unit for (m, q, _), (_, unit) in committed.items() if q in COMMON}
    for protocol in MIX:
        assert units[(protocol, "power_total")] == "kW"
        assert units[(protocol, "energy_fwd_total")] == "kWh"
    # No read failed for want of a protocol: only the slot the daemon started in may miss.
    assert not [m for m in missing if "not supported" in m.reason], missing


def test_what_a_meter_lacks_is_recorded_missing_with_its_own_reason(tmp_path: Path) -> None:
    """Single-phase meters of each protocol asked for phase B: the refusal (645-2007
    "no data", 698.45 DAR 6, 645-1997 "identifier wrong") is a missing reading with the
    meter's words, and phase A is still read and stored."""
    cfg, store_db = tmp_path / "c.toml", tmp_path / "store.db"
    (tmp_path / "links").mkdir()
    sim = SimProcess(
        ["fleet", "--buses", "1", "--meters-per-bus", "3", "--protocols", ",".join(MIX),
         "--phases", "1", "--baud", "9600", "--time-scale", "30", "--cadence", "5m",
         "--link-dir", str(tmp_path / "links"), "--write-config", str(cfg),
         "--store", str(store_db)]
    )  # fmt: skip
    sim.start()
    cfg.write_text(
        cfg.read_text(encoding="utf-8")
        + MIXED_TASK.replace('"current_a", "power_total"', '"voltage_b"'),
        encoding="utf-8",
    )
    daemon = DaemonProcess(cfg, "--time-scale", "30")

    def missing_b() -> set[str]:
        if not store_db.exists():
            return set()
        with Store.open(store_db) as store:
            return {m.meter for m in store.missing(quantity="voltage_b")}

    try:
        wait_for(lambda: len(missing_b()) == 3, 120, "phase B missing for every meter")
    finally:
        assert daemon.stop() == 0
        sim.stop()
    with Store.open(store_db) as store:
        reasons = {m.meter: m.reason for m in store.missing(quantity="voltage_b")}
        read_a = {r.reading.meter for r in store.get_readings(quantity="voltage_a")}
    meters = sorted(reasons)
    assert read_a == set(meters)
    assert all("not supported by the meter" in r for r in reasons.values()), reasons
    assert "object does not exist" in reasons[meters[1]].lower()  # the 698.45 meter
    assert "identifier wrong" in reasons[meters[2]]  # the 645-1997 meter
