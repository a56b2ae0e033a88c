"""Demand response end to end on a time-compressed fleet: an event curtails the group's
largest loads through signed relay commands held by the concentrator until the window
opens, and its report's baseline, actual use and reduction match the simulator's ground
truth."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from helpers import (
    DaemonProcess,
    Operators,
    read_status,
    receiver_cli,
    receiver_json,
    truth_of,
    wait_for,
)
from mqtt_harness import Broker
from test_uplink_e2e import Receiver

from cloud_receiver.applications.fleet import pki
from cloud_receiver.storage import SqliteStorage
from hil_sim.fleet import add_uplink
from hil_sim.process import SimProcess

pytestmark = pytest.mark.slow

CID = "dc-dr"
SCALE = 3600.0  # a simulated day in 24 real seconds
CST = dt.timezone(dt.timedelta(hours=8))


def test_a_demand_response_event_curtails_and_reports_the_true_reduction(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    # Simulated time starts on a Monday at 00:00 some weeks ahead (commands are only
    # sent while their window is still ahead of the receiver's real clock).
    now = time.time()
    monday = dt.datetime.fromtimestamp(now, CST).date() + dt.timedelta(days=21)
    monday -= dt.timedelta(days=monday.weekday())
    start_at = dt.datetime.combine(monday, dt.time(), CST).timestamp()
    origin = (now * SCALE - start_at) / (SCALE - 1)
    scaled = ["--time-scale", str(SCALE), "--time-origin", repr(origin)]
    event_from = start_at + 86400 + 18 * 3600  # Tuesday 18:00-20:00
    event_to = event_from + 2 * 3600

    cfg, db, rdb = tmp_path / "c.toml", tmp_path / "store.db", tmp_path / "receiver.db"
    url = f"sqlite:///{rdb}"
    broker = Broker(tmp_path / "broker")
    broker.start()
    sim = SimProcess(
        ["bus", "--link", str(tmp_path / "bus1"), "--meters", "4", "--baud", "0",
         "--cadence", "15m", "--write-config", str(cfg), "--store", str(db), *scaled]
    )  # fmt: skip
    sim.start()
    frag = pki.provision(broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port)
    add_uplink(cfg, frag, concentrator_id=CID, overrides={"ack_timeout_s": 5.0, "poll_s": 0.5})
    receiver = Receiver(broker, rdb, tmp_path / "receiver.log")
    receiver.start()
    daemon = DaemonProcess(cfg, *scaled)
    status = db.with_suffix(".status.json")
    meters = sim.meters
    try:
        olga = operators(url).login("olga", "operator")
        assert (
            receiver_cli(
                "dr", "enrol", "peak-shave", *meters, "--concentrator", CID, "--db", url,
                session=olga,
            ).returncode
            == 0
        )  # fmt: skip
        # Monday's window is the baseline; the event is set up on Tuesday morning.
        wait_for(
            lambda: (read_status(status) or {}).get("wall", 0) > event_from - 8 * 3600,
            120,
            "Tuesday morning",
        )
        wait_for(lambda: _has_reading_at(rdb, meters, event_from - 86400 + 2 * 3600), 60,
                 "Monday's window at the receiver")  # fmt: skip
        loads = _baseline_kw(rdb, meters, event_from - 86400, event_to - 86400)
        limit = sum(loads.values()) / 2
        event = receiver_json(
            "dr", "event", "--group", "peak-shave", "--from", str(int(event_from)),
            "--to", str(int(event_to)), "--limit-kw", str(limit), "--baseline-days", "1",
            "--db", url, "--json", session=olga,
        )  # fmt: skip
        chosen = event["curtailed"]
        assert chosen and len(chosen) < len(meters)
        # Largest loads first, until what is left fits under the limit.
        left = sum(kw for m, kw in loads.items() if m not in chosen)
        assert left <= limit
        assert min(loads[m] for m in chosen) >= max(loads[m] for m in meters if m not in chosen)
        wait_for(lambda: _has_reading_at(rdb, meters, event_to + 3600), 120, "the window and after")
        report = receiver_json("dr", "report", event["id"], "--db", url, "--json", session=olga)
    finally:
        assert daemon.stop() == 0
        receiver.stop()
        sim.stop()
        broker.stop()

    truth = [r for r in truth_of(sim.truth) if r.fault is None]
    told: dict[str, set[Decimal]] = {}
    for r in truth:
        if r.quantity == "energy_fwd_total":
            told.setdefault(r.meter, set()).add(Decimal(r.value))
    total_reduction = Decimal(0)
    for row in report["meters"]:
        m = row["meter"]
        [day] = row["baseline_days"]
        assert day["day"] == monday.isoformat()
        # Every register the report used is one the meter really reported.
        for value in (day["start_kwh"], day["end_kwh"], *row["actual_registers"].values()):
            assert Decimal(value) in told[m], (m, value)
        base = Decimal(day["end_kwh"]) - Decimal(day["start_kwh"])
        actual = Decimal(row["actual_registers"]["end_kwh"]) - Decimal(
            row["actual_registers"]["start_kwh"]
        )
        assert Decimal(row["baseline_kwh"]) == base.quantize(Decimal("0.001"))
        assert Decimal(row["actual_kwh"]) == actual.quantize(Decimal("0.001"))
        assert Decimal(row["reduction_kwh"]) == (base - actual).quantize(Decimal("0.001"))
        relay = [(r.t, r.value) for r in truth if r.meter == m and r.quantity == "relay"]
        if m in chosen:
            assert row["curtailed"]
            assert [v for _, v in relay] == ["open", "closed"]
            t_open, t_close = relay[0][0], relay[1][0]
            # Held by the concentrator until the window, then run (time runs 3,600
            # times faster here: half a real second of a busy machine is half an hour).
            assert event_from <= t_open <= event_from + 1800
            assert event_to <= t_close <= event_to + 1800
            # While the relay was open the meter's register did not move at all...
            during = {
                r.value for r in truth
                if r.meter == m and r.quantity == "energy_fwd_total" and t_open < r.t < t_close
            }  # fmt: skip
            assert len(during) <= 1, during
            # ... and the window's closing register is that frozen one (read while the
            # relay was open, or within moments of its closing): the window shows only
            # the minutes before switching.
            assert during, (m, "never read while its relay was open")
            assert (
                abs(Decimal(row["actual_registers"]["end_kwh"]) - max(map(Decimal, during)))
                <= base / 10
            )
            assert actual < base, (m, actual, base)
        else:
            assert not row["curtailed"] and actual > 0 and relay == []
        total_reduction += base - actual
    assert Decimal(report["reduction_kwh"]) == total_reduction.quantize(Decimal("0.001"))


def _has_reading_at(rdb: Path, meters: list[str], slot: float) -> bool:
    if not rdb.exists():
        return False
    s = SqliteStorage(rdb)
    try:
        rows = s.series(["energy_fwd_total"], meters, int(slot), int(slot) + 1)
    finally:
        s.close()
    return len(rows) == len(meters)


def _baseline_kw(rdb: Path, meters: list[str], start: float, end: float) -> dict[str, Decimal]:
    s = SqliteStorage(rdb)
    try:
        out = {}
        for m in meters:
            rows = {slot: Decimal(v) for _, _, slot, v in
                    s.series(["energy_fwd_total"], [m], int(start), int(end) + 1)}  # fmt: skip
            out[m] = (rows[int(end)] - rows[int(start)]) / Decimal(str((end - start) / 3600))
        return out
    finally:
        s.close()
