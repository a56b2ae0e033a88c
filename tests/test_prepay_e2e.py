"""Prepayment end to end: a prepaid meter runs out, the receiver cuts it off through a
signed relay command, the simulated load stops accumulating energy, a top-up restores
it, and the ledger balances to the cent against the energy in the simulator's ground
truth."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import pytest
from helpers import DaemonProcess, Operators, receiver_cli, receiver_json, truth_of, wait_for
from mqtt_harness import Broker

from cloud_receiver.applications.fleet import pki
from cloud_receiver.storage import SqliteStorage
from hil_sim.fleet import add_uplink
from hil_sim.process import SimProcess, cli_command

pytestmark = pytest.mark.slow

CID = "dc-prepay"
PRICE = Decimal("40.00")  # yuan per kWh: a 70 kW load spends a yuan in a few seconds


def _ok(session: Path, *args: str) -> None:
    done = receiver_cli(*args, session=session)
    assert done.returncode == 0, done.stderr


def _balance(rdb: Path, session: Path) -> dict[str, Any]:
    doc: dict[str, Any] = receiver_json(
        "balance", "A1", "--json", "--db", f"sqlite:///{rdb}", session=session
    )
    return doc


def _energy(rdb: Path, meter: str, read_after: float = 0.0) -> list[tuple[int, Decimal]]:
    s = SqliteStorage(rdb)
    try:
        return [
            (r.slot, Decimal(r.value))
            for r in s.readings(meter=meter)
            if r.quantity == "energy_fwd_total" and r.read_at > read_after
        ]
    finally:
        s.close()


def _relay_at(sim: SimProcess, meter: str, state: str) -> float:
    """When the simulated relay really switched (the simulator's clock runs at x1)."""
    return next(
        r.t for r in truth_of(sim.truth) if r.meter == meter and r.quantity == "relay"
        and r.value == state
    )  # fmt: skip


def test_a_prepaid_meter_runs_out_is_cut_off_and_restored_on_top_up(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    cfg, db, rdb = tmp_path / "c.toml", tmp_path / "store.db", tmp_path / "receiver.db"
    url = f"sqlite:///{rdb}"
    broker = Broker(tmp_path / "broker")
    broker.start()
    sim = SimProcess(
        ["bus", "--link", str(tmp_path / "bus1"), "--meters", "2", "--baud", "9600",
         "--peak-kw", "70", "--cadence", "5s", "--write-config", str(cfg), "--store", str(db)]
    )  # fmt: skip
    sim.start()
    frag = pki.provision(broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port)
    add_uplink(cfg, frag, concentrator_id=CID, overrides={"ack_timeout_s": 5.0, "poll_s": 0.5})
    receiver = subprocess.Popen(
        [*cli_command("cloud-receiver"), "run", "--broker", broker.address,
         "--pki-dir", str(broker.pki_dir), "--db", url, "--cutoff-hours", "00:00-24:00", "-v"],
        stdout=(tmp_path / "receiver.log").open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    daemon = DaemonProcess(cfg)
    m1, m2 = sim.meters
    try:
        wait_for(lambda: rdb.exists() and len(_energy(rdb, m1)) >= 1, 120, "first readings")
        bea = operators(url).login("bea", "billing-clerk")
        _ok(bea, "account", "open", "A1", "--meter", m1, "--concentrator", CID,
            "--price", f"flat={PRICE}", "--low", "0.50", "--opening", "credit=1.00",
            "--db", url)  # fmt: skip

        wait_for(lambda: _balance(rdb, bea)["state"] == "disconnected", 180, "the cut-off")
        cut = _balance(rdb, bea)
        assert cut["balance_cents"] < 0
        # The load stopped: the register stays where the relay opened it.
        t_open = _relay_at(sim, m1, "open")
        wait_for(lambda: len(_energy(rdb, m1, t_open)) >= 2, 60, "readings with the relay open")
        after = [v for _, v in _energy(rdb, m1, t_open)]
        assert len(set(after)) == 1, after

        _ok(bea, "topup", "A1", "100.00", "--db", url)
        wait_for(lambda: _balance(rdb, bea)["state"] == "connected", 120, "the reconnection")
        t_close = _relay_at(sim, m1, "closed")
        wait_for(
            lambda: any(v > after[0] for _, v in _energy(rdb, m1, t_close)),
            60,
            "energy flowing again",
        )
        # Let the last readings be billed before stopping.
        wait_for(
            lambda: _balance(rdb, bea)["billed_slot"] == max(s for s, _ in _energy(rdb, m1)),
            60,
            "the last reading billed",
        )
    finally:
        assert daemon.stop() == 0
        receiver.terminate()
        receiver.wait(60)
        sim.stop()
        broker.stop()

    doc = _balance(rdb, bea)
    ledger = doc["ledger"]
    kinds = [e["kind"] for e in ledger]
    for expected in ("open", "opening_credit", "topup", "baseline", "charge", "low_balance",
                     "command", "disconnected", "connected"):  # fmt: skip
        assert expected in kinds, kinds
    # Ground truth: what the meter really reported, and what its relay really did.
    truth = [r for r in truth_of(sim.truth) if r.meter == m1 and r.fault is None]
    told = {Decimal(r.value) for r in truth if r.quantity == "energy_fwd_total"}
    relay = [r.value for r in truth if r.quantity == "relay"]
    assert relay == ["open", "closed"]
    first = Decimal(next(e for e in ledger if e["kind"] == "baseline")["detail"]["kwh"])
    last = Decimal(doc["billed_kwh"])
    assert first in told and last in told
    energy = last - first
    cost = (energy * PRICE * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)
    charged = -sum(e["amount_cents"] for e in ledger if e["kind"] == "charge")
    topped = sum(e["amount_cents"] for e in ledger if e["kind"] in ("topup", "opening_credit"))
    assert charged == int(cost)  # to the cent against the true energy
    assert doc["balance_cents"] == topped - charged
    # While the relay was open the meter's register did not move.
    t_open = next(r.t for r in truth if r.quantity == "relay" and r.value == "open")
    t_close = next(r.t for r in truth if r.quantity == "relay" and r.value == "closed")
    during = {r.value for r in truth if r.quantity == "energy_fwd_total" and t_open < r.t < t_close}
    assert len(during) <= 1, during
    # The other meter, without an account, was never touched.
    assert not [r for r in truth_of(sim.truth) if r.meter == m2 and r.quantity == "relay"]
