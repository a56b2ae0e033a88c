"""The concentrator's metrics from a real daemon process: simulated meters on two buses,
a simulated GPRS module, an uplink through a real Mosquitto to ``cloud-receiver run``.
Scraped over HTTP, the figures agree with the store and the receiver; without
``[metrics]`` (or ``--metrics``) neither process opens a port."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from helpers import DaemonProcess, wait_for
from mqtt_harness import Broker
from scrape import Scrape, example_metric_names, listening_ports, try_scrape
from test_uplink_e2e import Receiver

from cloud_receiver.applications.fleet import pki
from cloud_receiver.applications.fleet.broker import free_port
from cloud_receiver.storage import SqliteStorage
from concentrator.storage import Store
from hil_sim.fleet import add_uplink
from hil_sim.process import SimProcess

pytestmark = pytest.mark.slow

NS = "meterflow_concentrator"
CID = "dc-metrics-e2e"
MODEM = """
[modem]
port = "{port}"
poll_s = 0.5
dead_link_s = 30.0
"""


def _stored(db: Path) -> int:
    with Store.open(db) as store:
        return len(store.get_readings())


def _received(db: Path) -> int:
    if not db.exists():
        return 0
    s = SqliteStorage(db)
    try:
        return len(s.readings())
    finally:
        s.close()


def _when(url: str, check: Callable[[Scrape], bool]) -> Callable[[], Scrape | None]:
    def probe() -> Scrape | None:
        got = try_scrape(url)
        return got if got is not None and check(got) else None

    return probe


def test_daemon_metrics_agree_with_the_store_uplink_and_modem(tmp_path: Path) -> None:
    cfg, db, rdb = tmp_path / "c.toml", tmp_path / "store.db", tmp_path / "receiver.db"
    port = free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    (tmp_path / "links").mkdir()
    with Broker(tmp_path / "broker") as broker:
        sim = SimProcess(
            ["fleet", "--buses", "2", "--meters-per-bus", "3", "--baud", "0", "--time-scale",
             "30", "--cadence", "1m", "--link-dir", str(tmp_path / "links"), "--write-config",
             str(cfg), "--store", str(db)]
        )  # fmt: skip
        modem = SimProcess(["modem", "--link", str(tmp_path / "modem"), "--rssi", "22"])
        receiver = Receiver(broker, rdb, tmp_path / "receiver.log")  # no --metrics
        daemon: DaemonProcess | None = None
        try:
            sim.start()
            modem.start()
            frag = pki.provision(
                broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port
            )
            add_uplink(
                cfg, frag, concentrator_id=CID,
                overrides={"ack_timeout_s": 5.0, "poll_s": 0.5, "batch_readings": 20},
            )  # fmt: skip
            with cfg.open("a") as fh:
                fh.write(MODEM.format(port=tmp_path / "modem"))
                fh.write(f"\n[metrics]\nport = {port}\n")
            receiver.start()
            daemon = DaemonProcess(cfg, "--time-scale", "30")

            got = wait_for(
                _when(url, lambda s: s.get(f"{NS}_uplink_batches_acked_total") >= 2), 120,
                "two batches acked, seen in the metrics",
            )  # fmt: skip
            assert listening_ports(daemon.proc.pid) == {port}
            assert receiver.proc is not None
            assert listening_ports(receiver.proc.pid) == set()  # metrics off by default
            assert got.get(f"{NS}_info", concentrator=CID, version=_version(got)) == 1
            assert got.get(f"{NS}_uplink_connected") == 1
            assert got.get(f"{NS}_uplink_bytes_sent_total") > 0
            assert got.get(f"{NS}_uplink_last_ack_timestamp_seconds") > 0
            acked = got.get(f"{NS}_uplink_readings_acked_total")
            assert 0 < acked <= _received(rdb)  # an ack follows the receiver's commit

            got = wait_for(
                _when(url, lambda s: s.value(f"{NS}_modem_signal_dbm") is not None), 60,
                "the modem's first poll",
            )  # fmt: skip
            # CSQ 22 (-69 dBm), which the simulated module reports give or take one step.
            assert got.get(f"{NS}_modem_signal_dbm") in (-71, -69, -67)
            assert got.get(f"{NS}_modem_link_up") == 1
            assert got.get(f"{NS}_modem_polls_total") >= 1

            # The reads counter equals the readings stored, bus by bus summed.
            def agrees(s: Scrape) -> bool:
                return s.total(f"{NS}_bus_readings_total") == _stored(db) > 12

            got = wait_for(_when(url, agrees), 120, "the bus counters to match the store")
            buses = got.labels(f"{NS}_bus_readings_total", "bus")
            assert set(buses) == {"bus1", "bus2"} and min(buses.values()) > 0
            assert got.get(f"{NS}_meters", state="online") == 6
            assert got.get(f"{NS}_store_disk_full") == 0
            # The example alerting rules name metrics that exist.
            assert example_metric_names(NS) <= set(got.names())
        finally:
            if daemon is not None:
                assert daemon.stop() == 0
            receiver.stop()
            modem.stop()
            sim.stop()


def _version(s: Scrape) -> str:
    [labels] = [dict(k[1]) for k in s.samples if k[0] == f"{NS}_info"]
    return labels["version"]


# The daemon as `concentrator run` runs it, reporting at exit which prometheus_client
# modules it had imported.
_RUN_AND_REPORT = """
import atexit, runpy, sys
out, config = sys.argv[1], sys.argv[2]
atexit.register(lambda: open(out, "w").write(
    ",".join(sorted(m for m in sys.modules if m.startswith("prometheus_client")))))
sys.argv = ["concentrator", "run", "--config", config]
runpy.run_module("concentrator", run_name="__main__")
"""


def test_without_metrics_no_port_and_no_prometheus_client(tmp_path: Path) -> None:
    cfg, db, imported = tmp_path / "c.toml", tmp_path / "store.db", tmp_path / "imported"
    (tmp_path / "links").mkdir()
    sim = SimProcess(
        ["fleet", "--buses", "1", "--meters-per-bus", "2", "--baud", "0", "--cadence", "1m",
         "--link-dir", str(tmp_path / "links"), "--write-config", str(cfg), "--store", str(db)]
    )  # fmt: skip
    sim.start()
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN_AND_REPORT, str(imported), str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: _stored(db) > 0 if db.exists() else False, 120, "readings stored")
        assert listening_ports(proc.pid) == set()
    finally:
        proc.terminate()
        try:
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
            sim.stop()
    assert imported.read_text() == ""
