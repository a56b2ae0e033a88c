"""Meter ownership end to end through a real Mosquitto with TLS (issue 19, item 1).

The archive, imported with a ``concentrator`` column and approved by a second operator,
makes the receiver the authority on which meters sit behind which concentrator:

- a second, stolen concentrator (a valid certificate and payload key of its own) sends
  a value for a meter of the first: acked, refused into quarantine with an alert, never
  stored; the real concentrator's true value for that slot is stored when it comes;
- the real concentrator's readings of a meter the archive gives to another are refused
  the same way;
- the archive download: ``archive push`` (approved by a second operator) → the service
  signs an ``archive`` command → the concentrator keeps it and stops polling the meter
  outside it (an ``archive_refused`` event naming it); commissioning mode on polls it
  again, off stops it again, each toggle an event and shown by ``concentrator status``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    DaemonProcess,
    Operators,
    receiver_json,
    run_cli,
    truth_values,
    wait_for,
)
from mqtt_harness import Broker, Peer
from test_uplink_e2e import Receiver

from cloud_receiver.applications.fleet import pki
from cloud_receiver.storage import SqliteStorage
from concentrator.storage import Store
from contract import topics, wire
from contract.records import Reading
from hil_sim.fleet import add_uplink
from hil_sim.process import SimProcess

pytestmark = pytest.mark.slow

CID, STOLEN, ELSEWHERE = "dc-own", "dc-stolen", "dc-elsewhere"
CADENCE_S = 5
QUANTITY = "energy_fwd_total"


def _receiver(rdb: Path) -> SqliteStorage:
    return SqliteStorage(rdb)


def _stored(rdb: Path, meter: str, slot: int) -> tuple[str, str] | None:
    s = _receiver(rdb)
    try:
        rows = [r for r in s.readings(meter, slot, slot + 1) if r.quantity == QUANTITY]
    finally:
        s.close()
    return (rows[0].value, rows[0].concentrator) if rows else None


def _refusals(rdb: Path) -> list[tuple[str, dict[str, Any]]]:
    s = _receiver(rdb)
    try:
        return [(c, e.detail) for c, e in s.events() if e.kind == "ownership_refused"]
    finally:
        s.close()


def _command_done(rdb: Path, command_id: str) -> dict[str, Any] | None:
    s = _receiver(rdb)
    try:
        rows = s.commands(command_id=command_id)
    finally:
        s.close()
    if not rows or rows[0].status != "done":
        return None
    return rows[0].result


def _events(db: Path, kind: str) -> list[Any]:
    with Store.open(db) as store:
        return [e.event for e in store.events(kind=kind)]


def _polled_after(db: Path, meter: str, slot: int) -> bool:
    with Store.open(db) as store:
        return any(r.reading.slot > slot for r in store.get_readings(meter=meter))


def _status(socket: Path) -> dict[str, Any]:
    done = run_cli("status", "--socket", str(socket), "--json")
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


@pytest.mark.long  # 76 s; tests/test_ownership.py holds the rules
def test_ownership_the_stolen_concentrator_and_the_archive_download(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    cfg, db, rdb = tmp_path / "c.toml", tmp_path / "store.db", tmp_path / "receiver.db"
    url = f"sqlite:///{rdb}"
    sock_dir = Path(tempfile.mkdtemp(prefix="mfo", dir="/tmp"))
    socket = sock_dir / "ctl.sock"
    broker = Broker(tmp_path / "broker")
    broker.start()
    sim = SimProcess(
        ["bus", "--link", str(tmp_path / "bus1"), "--meters", "3", "--baud", "9600",
         "--cadence", f"{CADENCE_S}s", "--write-config", str(cfg), "--store", str(db)]
    )  # fmt: skip
    sim.start()
    frag = pki.provision(broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port)
    stolen = pki.provision(broker.pki_dir, STOLEN, broker_host="127.0.0.1", broker_port=broker.port)
    stolen_key = bytes.fromhex((stolen / "payload.key").read_text().strip())
    add_uplink(cfg, frag, concentrator_id=CID, overrides={"ack_timeout_s": 5.0, "poll_s": 0.5})
    receiver = Receiver(broker, rdb, tmp_path / "receiver.log")
    receiver.start()
    daemon = DaemonProcess(cfg, "--control-socket", str(socket))
    m1, m2, m3 = sim.meters
    try:
        wait_for(lambda: rdb.exists() and _stored_any(rdb), 120, "the first batch")
        ops = operators(url)
        olga, ivan = ops.login("olga", "operator"), ops.login("ivan", "operator")

        # The archive says m1 and m2 sit behind CID, m3 behind another concentrator.
        csv = tmp_path / "archive.csv"
        csv.write_text(
            "meter,area,role,concentrator\n"
            f"{m1},TA-1,total,{CID}\n{m2},TA-1,customer,{CID}\n{m3},TA-1,customer,{ELSEWHERE}\n",
            encoding="utf-8",
        )
        asked = receiver_json("archive", "import", str(csv), "--db", url, "--json", session=olga)
        assert asked["status"] == "awaiting_approval"
        done = receiver_json("approve", str(asked["request"]), "--db", url, "--json",
                             session=ivan)  # fmt: skip
        assert done["assigned"] == 3, done
        owners = receiver_json("archive", "owners", "--db", url, "--json", session=olga)
        assert {(o["meter"], o["concentrator"]) for o in owners} == {
            (m1, CID), (m2, CID), (m3, ELSEWHERE)
        }  # fmt: skip

        # --- the stolen concentrator ---------------------------------------------------
        slot = (int(time.time()) // CADENCE_S + 6) * CADENCE_S  # ahead of the real poll
        spoof = wire.seal_batch(
            wire.BatchContent(
                (Reading(m1, QUANTITY, slot, "999999.99", "kWh", slot + 1.0),), ()
            ),
            concentrator_id=STOLEN, key_id=1, key=stolen_key, seq=1,
        )  # fmt: skip
        thief = Peer.connect(broker, STOLEN)
        try:
            assert thief.subscribe(topics.ack(STOLEN)).value == 1
            assert thief.publish(topics.up(STOLEN), spoof).value == 0
            # Acked (so it is not resent forever), as stored: it learns nothing.
            thief.wait_for(lambda: bool(thief.payloads(topics.ack(STOLEN))), "the ack", 60)
            [ack] = [wire.open_ack(p, stolen_key) for p in thief.payloads(topics.ack(STOLEN))]
            assert ack.seq == 1
        finally:
            thief.close()
        wait_for(lambda: any(c == STOLEN for c, _ in _refusals(rdb)), 60, "the alert")
        [(_, alert)] = [(c, d) for c, d in _refusals(rdb) if c == STOLEN]
        assert alert["meters"] == [m1] and alert["owners"] == {m1: CID}
        s = _receiver(rdb)
        try:
            assert any(q.reason == "not_owner" and q.concentrator == STOLEN
                       for q in s.quarantined())  # fmt: skip
        finally:
            s.close()
        # The real concentrator's true value for that slot arrives and is stored.
        value = wait_for(lambda: _stored(rdb, m1, slot), 120, "the true value of the slot")
        assert value[1] == CID and value[0] != "999999.99"
        assert value[0] in truth_values(sim.truth)[(m1, QUANTITY)]

        # CID's own readings of m3 (the archive gives it to another) are refused too.
        wait_for(
            lambda: any(c == CID and m3 in d["meters"] for c, d in _refusals(rdb)),
            60,
            "CID's readings of m3 refused",
        )

        # --- the archive download ------------------------------------------------------
        asked = receiver_json("archive", "push", "--concentrator", CID, "--db", url, "--json",
                              "--wait", "0", session=olga)  # fmt: skip
        assert asked["status"] == "awaiting_approval"
        s = _receiver(rdb)
        try:  # nothing is signed before the approval
            assert not [c for c in s.commands(CID) if c.action == "archive"]
        finally:
            s.close()
        receiver_json("approve", str(asked["request"]), "--db", url, "--json", "--wait", "0",
                      session=ivan)  # fmt: skip

        def archive_commands() -> list[Any]:
            s = _receiver(rdb)
            try:
                return [c for c in s.commands(CID) if c.action == "archive"]
            finally:
                s.close()

        [pushed] = wait_for(archive_commands, 60, "the service to sign the archive command")
        assert sorted(pushed.params["meters"]) == sorted([m1, m2])
        result = wait_for(lambda: _command_done(rdb, pushed.id), 90, "the archive applied")
        [applied] = result["results"]
        assert applied["result"] == "ok" and applied["not_in_archive"] == [m3]
        version = pushed.params["version"]

        # The concentrator stops polling m3, says so, and shows it in its status.
        refused = wait_for(lambda: _events(db, "archive_refused"), 30, "archive_refused")
        assert refused[-1].detail["meters"] == [m3]
        assert refused[-1].detail["archive_version"] == version
        cut = int(refused[-1].at) + CADENCE_S
        wait_for(lambda: _polled_after(db, m1, cut + 2 * CADENCE_S), 60, "m1 still polled")
        assert not _polled_after(db, m3, cut)
        archive = _status(socket)["archive"]
        assert archive["archive_version"] == version and archive["refused"] == [m3]
        assert archive["commissioning"] is False
        text = run_cli("status", "--socket", str(socket))
        assert f"archive  version {version}, 2 meters; commissioning off (config)" in text.stdout

        # Commissioning on: m3 is polled again; off: it stops again. Each is an event.
        on = run_cli("commissioning", "on", "--socket", str(socket), "--json")
        assert on.returncode == 0, on.stderr
        assert json.loads(on.stdout)["commissioning"] is True
        [toggled] = wait_for(lambda: _events(db, "commissioning"), 30, "the toggle's event")
        assert toggled.detail["to"] is True and toggled.detail["word"] == "on"
        wait_for(lambda: _polled_after(db, m3, int(toggled.at)), 60, "m3 polled again")
        assert _status(socket)["archive"]["commissioning_source"] == "command"
        off = run_cli("commissioning", "off", "--socket", str(socket))
        assert off.returncode == 0, off.stderr
        assert "commissioning off (command)" in off.stdout
        again = wait_for(lambda: _events(db, "archive_refused")[len(refused) :], 30, "refused")
        cut = int(again[-1].at) + CADENCE_S
        wait_for(lambda: _polled_after(db, m1, cut + 2 * CADENCE_S), 60, "m1 still polled")
        assert not _polled_after(db, m3, cut)
        # ... and the toggles went up to the receiver with the readings.
        wait_for(
            lambda: _receiver_kinds(rdb).count("commissioning") == 2, 60, "the toggles upstream"
        )
    finally:
        assert daemon.stop() == 0
        receiver.stop()
        sim.stop()
        broker.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)


def _stored_any(rdb: Path) -> bool:
    s = _receiver(rdb)
    try:
        return any(c.concentrator == CID for c in s.concentrators())
    finally:
        s.close()


def _receiver_kinds(rdb: Path) -> list[str]:
    s = _receiver(rdb)
    try:
        return [e.kind for _, e in s.events(CID)]
    finally:
        s.close()
