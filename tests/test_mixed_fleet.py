"""Billing and demand response over DL/T 645 and Modbus meters together (issue 18, item
6): sealed batches go through the real ingest and the receiver's applications, on both
storage backends. Before canonical quantities a Modbus meter's energy was stored as
``energy_import`` and none of this saw it."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import tempfile
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers import (
    DaemonProcess,
    Operators,
    receiver_cli,
    receiver_json,
    run_cli,
    truth_of,
    truth_values,
    wait_for,
)
from mqtt_harness import Broker
from test_uplink_e2e import Receiver

from cloud_receiver.applications import dr, prepay
from cloud_receiver.applications.fleet import commands, pki
from cloud_receiver.applications.reactions import Applications
from cloud_receiver.ingest.ingestor import Ingestor
from cloud_receiver.storage import SqliteStorage, Storage
from concentrator.storage import Store
from contract import wire
from contract.records import Reading
from hil_sim.fleet import add_uplink
from hil_sim.process import SimProcess

CST = dt.timezone(dt.timedelta(hours=8))
MONDAY = int(dt.datetime(2026, 11, 2, tzinfo=CST).timestamp())
TUESDAY = MONDAY + 86400
SLOT_S = 900
KEY = bytes(range(32))
DLT_A, DLT_B = "000000000001", "000000000002"
CID = "dc-mixed"
SDM = "7"  # a Modbus SDM630 on the same concentrator, its readings canonical
OLD_SDM = "8"  # a Modbus meter behind a concentrator still on the previous release
# kW each meter draws: the Modbus meter is the largest load
LOAD_KW = {DLT_A: Decimal("2"), DLT_B: Decimal("1"), SDM: Decimal("4"), OLD_SDM: Decimal("1"),
           "000000000003": Decimal("3"), "9": Decimal("3")}  # fmt: skip


def register(meter: str, t: int, off: tuple[int, int] | None = None) -> Decimal:
    """The meter's forward energy register at ``t``: its load since Monday 00:00, with
    nothing used while its relay was open between ``off``."""
    used = Decimal(t - MONDAY) / 3600 * LOAD_KW[meter]
    if off is not None and t > off[0]:
        used -= Decimal(min(t, off[1]) - off[0]) / 3600 * LOAD_KW[meter]
    return (Decimal(100) + used).quantize(Decimal("0.01"))


class Fleet:
    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.key = Ed25519PrivateKey.generate()
        self.ingestor = Ingestor(
            storage, lambda cid, kid: KEY, Applications(storage, command_key=self.key)
        )
        self.seq = {"dc-1": 0, "dc-old": 0}
        self.off: dict[str, tuple[int, int]] = {}

    def deliver(self, since: int, until: int) -> None:
        """What the two concentrators send for the slots ``since <= slot < until``."""
        for cid, meters in (("dc-1", (DLT_A, DLT_B, SDM)), ("dc-old", (OLD_SDM,))):
            # the previous release named a Modbus meter's forward energy energy_import
            name = "energy_import" if cid == "dc-old" else "energy_fwd_total"
            readings = tuple(
                Reading(m, name, s, str(register(m, s, self.off.get(m))), "kWh", s + 3.0)
                for s in range(since, until, SLOT_S)
                for m in meters
            )
            self.seq[cid] += 1
            payload = wire.seal_batch(
                wire.BatchContent(readings, ()), concentrator_id=cid, key_id=1, key=KEY,
                seq=self.seq[cid],
            )  # fmt: skip
            outcome = self.ingestor.handle(f"mf/v1/{cid}/up", payload, received_at=until + 60.0)
            assert outcome.status == "stored", outcome.reason


def test_prepaid_charging_bills_dlt645_and_modbus_meters_alike(
    receiver_storage: Storage,
) -> None:
    fleet = Fleet(receiver_storage)
    tariff = prepay.Tariff.parse(["flat=0.50"])
    for account, meter, cid in (("A-dlt", DLT_A, "dc-1"), ("A-sdm", SDM, "dc-1"),
                                ("A-old", OLD_SDM, "dc-old")):  # fmt: skip
        prepay.open_account(receiver_storage, account, meter, tariff, concentrator=cid, now=0)
        prepay.topup(receiver_storage, account, Decimal("100.00"), now=0, by="t")
    fleet.deliver(MONDAY, MONDAY + 4 * 3600)
    for account, meter in (("A-dlt", DLT_A), ("A-sdm", SDM), ("A-old", OLD_SDM)):
        charges = [e for e in prepay.ledger(receiver_storage, account) if e[1] == "charge"]
        assert len(charges) == 15  # every quarter after the first reading
        kwh = register(meter, MONDAY + 4 * 3600 - SLOT_S) - register(meter, MONDAY)
        assert sum(Decimal(e[5]["kwh"]) for e in charges) == kwh
        acc = prepay.get_account(receiver_storage, account)
        assert acc.balance_cents == 10000 - prepay.cents(kwh * Decimal("0.50"))
    # a prepaid Modbus meter in debt is warned, but no relay command is sent to a meter
    # that has none; the DL/T 645 one is cut off
    owed = prepay.Tariff.parse(["flat=50.00"])
    prepay.open_account(receiver_storage, "B-sdm", "9", owed, concentrator="dc-1", now=0)
    prepay.open_account(receiver_storage, "B-dlt", "000000000003", owed, concentrator="dc-1",
                        now=0)  # fmt: skip
    readings = tuple(
        Reading(m, "energy_fwd_total", s, str(register(m, s)), "kWh", s + 3.0)
        for s in range(MONDAY, MONDAY + 2 * 3600, SLOT_S)
        for m in ("9", "000000000003")
    )
    fleet.seq["dc-1"] += 1
    payload = wire.seal_batch(wire.BatchContent(readings, ()), concentrator_id="dc-1",
                              key_id=1, key=KEY, seq=fleet.seq["dc-1"])  # fmt: skip
    assert fleet.ingestor.handle("mf/v1/dc-1/up", payload).status == "stored"
    for account in ("B-sdm", "B-dlt"):
        kinds = [e[1] for e in prepay.ledger(receiver_storage, account)]
        assert "low_balance" in kinds
        assert prepay.get_account(receiver_storage, account).balance_cents < 0
    always = prepay.Policy.parse("00:00-24:00")
    done = prepay.enforce(receiver_storage, fleet.key, always, MONDAY + 3 * 3600)
    assert [line.split(":")[0] for line in done] == ["B-dlt"]
    assert prepay.get_account(receiver_storage, "B-sdm").state == "connected"


def test_a_demand_response_event_counts_modbus_load_and_curtails_meters_with_a_relay(
    receiver_storage: Storage,
) -> None:
    fleet = Fleet(receiver_storage)
    dr.enrol(receiver_storage, "peak", [DLT_A, DLT_B, SDM], "dc-1")
    dr.enrol(receiver_storage, "peak", [OLD_SDM], "dc-old")
    start, end = TUESDAY + 18 * 3600, TUESDAY + 20 * 3600
    fleet.deliver(MONDAY, start - 6 * 3600)  # Monday is the baseline day
    # 8 kW of baseline load in all; at most 5 kW: the Modbus meter's 4 kW cannot be
    # switched, so DLT_A (2 kW) and DLT_B (1 kW) are curtailed
    event = dr.create_event(receiver_storage, fleet.key, group="peak", start=start,
                            end=end, limit_kw=Decimal("5"), baseline_days=1,
                            now=start - 6 * 3600)  # fmt: skip
    baseline = {m: Decimal(kw) for m, kw in event["baseline_kw"].items()}
    assert baseline == {m: LOAD_KW[m] for m in (DLT_A, DLT_B, SDM, OLD_SDM)}
    assert event["curtailed"] == [DLT_A, DLT_B]
    sent = commands.due(receiver_storage, start + 1)[0]
    assert {(c.action, tuple(c.meters)) for c in sent} >= {("relay_open", (DLT_A,)),
                                                           ("relay_open", (DLT_B,))}  # fmt: skip
    # the relays open for the window; every meter's readings go on arriving
    fleet.off = {DLT_A: (start, end), DLT_B: (start, end)}
    fleet.deliver(start - 6 * 3600, end + 2 * 3600)
    report = dr.report(receiver_storage, event["id"])
    rows = {r.meter: r for r in report.meters}
    assert set(rows) == {DLT_A, DLT_B, SDM, OLD_SDM}
    for meter, row in rows.items():
        assert row.baseline_kwh == LOAD_KW[meter] * 2  # every meter seen, Modbus too
        assert row.actual_kwh == (0 if meter in (DLT_A, DLT_B) else LOAD_KW[meter] * 2)
        assert row.curtailed == (meter in (DLT_A, DLT_B))
    assert report.total("reduction_kwh") == Decimal(6)


def _start_sims(tmp_path: Path) -> dict[str, SimProcess]:
    """A simulated DL/T 645 bus and a Modbus bus, two meters each (all stopped if one
    does not start)."""
    sims: dict[str, SimProcess] = {}
    for proto in ("dlt645", "modbus"):
        args = ["--meters", "2", "--protocol", proto, "--baud", "9600"]
        sims[proto] = SimProcess(["bus", "--link", str(tmp_path / proto), *args])
    started: list[SimProcess] = []
    try:
        for sim in sims.values():
            sim.start()
            started.append(sim)
    except BaseException:
        for sim in started:
            sim.stop()
        raise
    return sims


def _write_site(cfg: Path, db: Path, sock: Path, sims: dict[str, SimProcess]) -> None:
    """A concentrator config reading both buses every 5 s."""
    lines = ["[concentrator]", 'id = "dc-mixed"', f'control_socket = "{sock}"', "",
             "[storage]", f'path = "{db}"', ""]  # fmt: skip
    for proto, parity in (("dlt645", "E"), ("modbus", "N")):
        lines += [
            "[[bus]]",
            f'name = "{proto}"',
            'type = "rs485"',
            f'port = "{sims[proto].links[0]}"',
            "baud = 9600",
            f'parity = "{parity}"',
            "",
        ]
        for meter in sims[proto].meters:
            lines += ["[[meter]]", f'address = "{meter}"', f'protocol = "{proto}"',
                      f'bus = "{proto}"', f'group = "{proto}"', ""]  # fmt: skip
    lines += ["[[task]]", 'name = "energy"', 'every = "5s"', 'groups = ["dlt645", "modbus"]',
              'quantities = ["energy_fwd_total", "voltage_a", "power_total"]', ""]  # fmt: skip
    cfg.write_text("\n".join(lines), encoding="utf-8")


@pytest.mark.slow
def test_a_daemon_polling_dlt645_and_modbus_buses_stores_canonical_names(
    tmp_path: Path,
) -> None:
    """The concentrator itself, against a simulated DL/T 645 bus and a Modbus bus: both
    kinds of meter are stored under the same names, in the same units, with the values
    the meters really sent (hil-sim's truth, converted by the same mapping)."""
    sims = _start_sims(tmp_path)
    cfg, db = tmp_path / "site.toml", tmp_path / "store.db"
    sock = Path(tempfile.mkdtemp(prefix="mf-mixed-", dir="/tmp")) / "ctl.sock"  # <108 bytes
    _write_site(cfg, db, sock, sims)
    daemon = DaemonProcess(cfg)
    meters = [m for sim in sims.values() for m in sim.meters]
    try:

        def every_meter_read() -> bool:
            if not db.exists():
                return False
            with Store.open(db) as store:
                got = {r.reading.meter for r in store.get_readings(quantity="power_total")}
            return set(meters) <= got

        wait_for(every_meter_read, 120, "a reading of every meter")
        # on demand through the daemon: a Modbus meter by canonical names, in kW
        slave = sims["modbus"].meters[0]
        done = run_cli("read", slave, "energy_fwd_total", "power_total", "--socket", str(sock),
                       "--json")  # fmt: skip
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert [(r["name"], r["unit"]) for r in doc["readings"]] == [
            ("energy_fwd_total", "kWh"), ("power_total", "kW")
        ]  # fmt: skip
        typo = run_cli("read", slave, "energy_import", "--socket", str(sock))
        assert typo.returncode == 2
        assert 'unknown quantity "energy_import" for Modbus' in typo.stderr
        assert "expected one of voltage_a" in typo.stderr
    finally:
        assert daemon.stop() == 0
        for sim in sims.values():
            sim.stop()
        shutil.rmtree(sock.parent, ignore_errors=True)
    with Store.open(db) as store:
        readings = [r.reading for r in store.get_readings()]
    assert {r.quantity for r in readings} == {"energy_fwd_total", "voltage_a", "power_total"}
    assert {(r.quantity, r.unit) for r in readings} == {
        ("energy_fwd_total", "kWh"), ("voltage_a", "V"), ("power_total", "kW")
    }  # fmt: skip
    by_meter = {r.meter for r in readings if r.quantity == "energy_fwd_total"}
    assert by_meter == set(meters)  # "1" and "2" are the Modbus slaves
    told: dict[tuple[str, str], set[str]] = {}
    for sim in sims.values():
        for (meter, quantity), values in truth_values(sim.truth).items():
            told.setdefault((meter, quantity), set()).update(values)
    for r in readings:
        assert r.value in told[(r.meter, r.quantity)], r


@pytest.mark.slow
def test_a_downlink_read_reaches_a_modbus_meter_by_canonical_names(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    """`cloud-receiver command read` through the broker to a Modbus meter: the command
    takes its slave id, the concentrator reads canonical names; a relay command for it
    is refused before it is signed (it has no relay)."""
    sims = _start_sims(tmp_path)
    cfg, db, rdb = tmp_path / "site.toml", tmp_path / "store.db", tmp_path / "receiver.db"
    url = f"sqlite:///{rdb}"
    sock = Path(tempfile.mkdtemp(prefix="mf-mixed-", dir="/tmp")) / "ctl.sock"
    _write_site(cfg, db, sock, sims)
    broker = Broker(tmp_path / "broker")
    broker.start()
    frag = pki.provision(broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port)
    add_uplink(cfg, frag, concentrator_id=CID, overrides={"ack_timeout_s": 5.0, "poll_s": 0.5})
    receiver = Receiver(broker, rdb, tmp_path / "receiver.log")
    receiver.start()
    daemon = DaemonProcess(cfg)
    slave = sims["modbus"].meters[0]
    try:

        def heard() -> bool:
            if not rdb.exists():
                return False
            s = SqliteStorage(rdb)
            try:
                return any(r.meter == slave for r in s.readings())
            finally:
                s.close()

        wait_for(heard, 120, "the Modbus meter's readings at the receiver")
        olga = operators(url).login("olga", "operator")
        asked = receiver_json("command", "read", "--meter", slave, "--quantity", "power_total",
                              "--quantity", "energy_fwd_total", "--concentrator", CID,
                              "--db", url, "--json", session=olga)  # fmt: skip

        def outcome() -> dict[str, Any] | None:
            s = SqliteStorage(rdb)
            try:
                rows = s.commands(command_id=asked["id"])
            finally:
                s.close()
            return rows[0].result if rows and rows[0].status == "done" else None

        result = wait_for(outcome, 90, "the read's result")
        [row] = result["results"]
        assert row["meter"] == slave and row["result"] == "ok"
        assert {q: unit for q, (_, unit) in row["values"].items()} == {
            "power_total": "kW", "energy_fwd_total": "kWh"
        }  # fmt: skip
        relay = receiver_cli("command", "relay-open", "--meter", slave, "--concentrator", CID,
                             "--db", url, session=olga)  # fmt: skip
        assert relay.returncode != 0
        assert "12-digit address" in relay.stderr + relay.stdout
    finally:
        assert daemon.stop() == 0
        receiver.stop()
        for sim in sims.values():
            sim.stop()
        broker.stop()
        shutil.rmtree(sock.parent, ignore_errors=True)
    told = {r.value for r in truth_of(sims["modbus"].truth)
            if r.meter == slave and r.quantity == "power_total"}  # fmt: skip
    assert row["values"]["power_total"][0] in told
