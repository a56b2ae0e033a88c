"""The whole chain through a real Mosquitto with TLS: simulated meters → concentrator →
broker → receiver, with the broker down, the receiver down and the concentrator killed
on the way; at the end every reading the concentrator committed is in the receiver's
database exactly once, with its true value."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from helpers import DaemonProcess, read_status, wait_for
from mqtt_harness import Broker
from test_daemon_e2e import _assert_values_are_true

from cloud_receiver.applications.fleet import pki
from cloud_receiver.storage import SqliteStorage
from concentrator.storage import Store
from hil_sim.fleet import add_uplink
from hil_sim.process import SimProcess

pytestmark = pytest.mark.slow

CID = "dc-e2e"


def _configure(tmp: Path, broker: Broker, cfg: Path) -> None:
    """Give the simulator's config our concentrator id and the provisioned [uplink]."""
    frag_dir = pki.provision(broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port)
    overrides = {"ack_timeout_s": 5.0, "poll_s": 0.5, "batch_readings": 40, "window": 3}
    add_uplink(cfg, frag_dir, concentrator_id=CID, overrides=overrides)


class Receiver:
    """``cloud-receiver run`` as its own process; ``db`` is a path (SQLite) or a URL."""

    def __init__(self, broker: Broker, db: Path | str, log: Path, name: str = "receiver") -> None:
        url = db if isinstance(db, str) else f"sqlite:///{db}"
        self.args = [
            sys.executable,
            "-m",
            "cloud_receiver",
            "run",
            "--broker",
            f"127.0.0.1:{broker.port}",
            "--pki-dir",
            str(broker.pki_dir),
            "--db",
            url,
            "--receiver",
            name,
            "-v",
        ]
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as fh:
            self.proc = subprocess.Popen(self.args, stdout=fh, stderr=subprocess.STDOUT)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _receiver_count(db: Path) -> int:
    if not db.exists():
        return 0
    s = SqliteStorage(db)
    try:
        return len(s.readings())
    finally:
        s.close()


def _uplink(status: Path) -> dict[str, int]:
    doc = read_status(status) or {}
    return doc.get("uplink") or {}


def _sent(status: Path) -> int:
    return int(_uplink(status).get("batches_sent", 0))


def _acked(status: Path) -> int:
    return int(_uplink(status).get("batches_acked", 0))


Key = tuple[str, str, int]  # meter, quantity, slot


def _key(r: Any) -> Key:
    return (r.meter, r.quantity, r.slot)


def _value(r: Any) -> object:
    return r.value


def delivered_as_committed(
    store_db: Path, rows: Sequence[Any], project: Callable[[Any], object] = _value
) -> dict[Key, object]:
    """The concentrator's committed readings (key -> ``project(reading)``), once the
    receiver's ``rows`` are checked against them: each arrived once and as committed,
    and a committed one that did not arrive was never taken into a batch. That is a read
    that was on the line as the meters were stopped: the writer commits it with its next
    group, after the drained outbox was seen, and it waits there for the next start."""
    with Store.open(store_db) as store:
        stored = store.get_readings()
    committed = {_key(r.reading): project(r.reading) for r in stored}
    waiting = {_key(r.reading) for r in stored if r.batch_id is None}
    arrived = {_key(r): project(r) for r in rows}
    assert len(arrived) == len(rows)  # exactly once
    assert {k: committed.get(k) for k in arrived} == arrived  # as committed
    assert set(committed) - set(arrived) <= waiting  # nothing else missing
    return committed


def _backlog(db: Path) -> tuple[int, int]:
    with Store.open(db) as store:
        b = store.backlog()
    return b.readings, b.events


def test_exactly_once_through_broker_receiver_and_concentrator_outages(tmp_path: Path) -> None:
    cfg, store_db, rdb = tmp_path / "c.toml", tmp_path / "store.db", tmp_path / "receiver.db"
    status = store_db.with_suffix(".status.json")
    (tmp_path / "links").mkdir()
    with Broker(tmp_path / "broker") as broker:
        sim = SimProcess(
            [
                "fleet",
                "--buses",
                "1",
                "--meters-per-bus",
                "8",
                "--baud",
                "0",
                "--time-scale",
                "30",
                "--cadence",
                "1m",
                "--link-dir",
                str(tmp_path / "links"),
                "--write-config",
                str(cfg),
                "--store",
                str(store_db),
            ]
        )
        sim.start()
        _configure(tmp_path, broker, cfg)
        receiver = Receiver(broker, rdb, tmp_path / "receiver.log")
        receiver.start()
        daemon = DaemonProcess(cfg, "--time-scale", "30")
        try:
            wait_for(lambda: _receiver_count(rdb) >= 40, 120, "the first readings upstream")

            # 1. The broker goes away; polling goes on into the store.
            broker.stop()
            wait_for(
                lambda: (
                    not ((read_status(status) or {}).get("uplink") or {}).get("connected", True)
                ),
                60,
                "the uplink to notice",
            )
            held = _backlog(store_db)[0]
            wait_for(lambda: _backlog(store_db)[0] >= held + 16, 60, "a backlog to build up")
            broker.start()

            # 2. The receiver goes away; the broker keeps its persistent session's queue.
            receiver.stop()
            before = _receiver_count(rdb)
            acked = _acked(status)
            # Batches go out to the broker but no ack comes back while it is down.
            wait_for(lambda: _sent(status) >= acked + 2, 120, "batches sent to no receiver")
            assert _acked(status) == acked
            receiver.start()
            wait_for(lambda: _receiver_count(rdb) > before, 120, "the receiver to catch up")

            # 3. kill -9 of the concentrator in the middle of its work, then a restart.
            daemon.kill()
            daemon = DaemonProcess(cfg, "--time-scale", "30")
            now = _receiver_count(rdb)
            wait_for(lambda: _receiver_count(rdb) >= now + 16, 120, "ingest after the restart")

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
        info = storage.concentrators()
    finally:
        storage.close()
    committed = delivered_as_committed(store_db, rows)  # nothing lost, none twice
    assert quarantined == []
    assert [i.concentrator for i in info] == [CID]
    assert _assert_values_are_true(store_db, sim.truth) >= len(rows) - len(
        [k for k in committed if k[1] == "frozen_daily_time"]
    )
