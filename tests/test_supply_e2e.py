"""The supply state end to end (issue 18: "Demand-response reconnection can restore a
supply that prepayment cut"): a DR event curtails two simulated meters; one of them is
prepaid, owed, and cut off by the receiver before the window opens. The DR
reconnection of that meter is withdrawn before it is published, so when the window
ends the other meter's relay closes and the prepaid one's never does — through signed
commands, MQTT, the concentrator and the simulated meters' relays."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import DaemonProcess, Operators, receiver_cli, receiver_json, truth_of, wait_for
from mqtt_harness import Broker
from test_uplink_e2e import Receiver

from cloud_receiver.applications.fleet import pki
from cloud_receiver.storage import SqliteStorage
from hil_sim.fleet import add_uplink
from hil_sim.process import SimProcess

pytestmark = pytest.mark.slow

CID = "dc-supply"
CST = dt.timezone(dt.timedelta(hours=8))


def _ok(session: Path, *args: str) -> None:
    done = receiver_cli(*args, session=session)
    assert done.returncode == 0, done.stderr


def _balance(url: str, session: Path) -> dict[str, Any]:
    doc: dict[str, Any] = receiver_json("balance", "A1", "--json", "--db", url, session=session)
    return doc


def _relay(sim: SimProcess, meter: str) -> list[tuple[float, str]]:
    """What the simulated relay really did (the simulator's clock runs at x1)."""
    return [(r.t, r.value) for r in truth_of(sim.truth)
            if r.meter == meter and r.quantity == "relay"]  # fmt: skip


def _no_cutoff_now() -> str:
    """Cut-off hours that exclude the next hours: the account runs into debt uncut."""
    hour = (dt.datetime.now(CST) + dt.timedelta(hours=12)).hour
    return f"{hour:02d}:00-{hour:02d}:01"


def test_a_dr_restoration_leaves_a_prepaid_cut_meter_off(
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
    uncut = Receiver(broker, rdb, tmp_path / "receiver.log")
    uncut.args += ["--cutoff-hours", _no_cutoff_now()]
    uncut.start()
    daemon = DaemonProcess(cfg)
    m1, m2 = sim.meters
    receiver = Receiver(broker, rdb, tmp_path / "receiver.log")
    receiver.args += ["--cutoff-hours", "00:00-24:00"]
    try:
        wait_for(lambda: rdb.exists() and _readings(rdb, m1) >= 1, 120, "first readings")
        ops = operators(url)
        bea, olga = ops.login("bea", "billing-clerk"), ops.login("olga", "operator")
        _ok(bea, "account", "open", "A1", "--meter", m1, "--concentrator", CID, "--price",
            "flat=40", "--low", "0", "--opening", "credit=0.01", "--db", url)  # fmt: skip
        _ok(olga, "dr", "enrol", "g", m1, m2, "--concentrator", CID, "--db", url)
        # A1 runs into debt outside its cut-off hours: owed, still connected.
        wait_for(lambda: _balance(url, bea)["balance_cents"] < 0, 120, "A1 in debt")
        assert _balance(url, bea)["state"] == "connected"
        uncut.stop()
        # The event is asked for while no service runs; the next one carries it out and,
        # in the same tick, cuts A1 off: the reconnection of m1 is never published.
        start = int(time.time()) + 40
        end = start + 20
        asked = receiver_json("dr", "event", "--group", "g", "--from", str(start), "--to",
                              str(end), "--limit-kw", "0", "--wait", "0", "--json", "--db", url,
                              session=olga)  # fmt: skip
        assert asked["status"] == "ready"
        receiver.start()
        wait_for(lambda: _balance(url, bea)["state"] == "disconnected", 120, "the cut-off")
        assert time.time() < start, "the cut-off must come before the window (slow machine?)"
        wait_for(lambda: [v for _, v in _relay(sim, m2)] == ["open", "closed"], 120,
                 "m2 curtailed and restored")  # fmt: skip
        wait_for(lambda: _readings(rdb, m1, after=end + 10) >= 1, 60, "readings after the window")
        shown = receiver_json("supply", "show", m1, "--json", "--db", url, session=olga)
        other = receiver_json("supply", "show", m2, "--json", "--db", url, session=olga)
        commands = receiver_json("commands", "--json", "--db", url, session=olga)
        account = _balance(url, bea)
    finally:
        assert daemon.stop() == 0
        uncut.stop()
        receiver.stop()
        sim.stop()
        broker.stop()

    # Ground truth: m1 opened (the cut-off), opened again at the window's start, and was
    # never reconnected; m2 was curtailed for the window.
    relay1, relay2 = _relay(sim, m1), _relay(sim, m2)
    assert [v for _, v in relay1] == ["open", "open"], relay1
    assert relay1[0][0] < start <= relay1[1][0]
    assert start <= relay2[0][0] < end <= relay2[1][0]
    # The receiver says why: the DR reason ended with its window, prepayment remains.
    assert (shown["relay"], shown["cause"]) == ("open", "prepayment")
    assert [r["reason"] for r in shown["reasons"]] == ["prepayment"]
    changes = [(h["change"], h["reason"]) for h in shown["history"]]
    assert ("withdraw", "demand_response") in changes
    assert ("clear", "demand_response") in changes
    assert (other["relay"], other["reasons"]) == ("closed", [])
    assert (account["state"], account["supply_reasons"]) == ("disconnected", ["prepayment"])
    [withdrawn] = [c for c in commands if c["action"] == "relay_close" and c["meters"] == [m1]]
    assert withdrawn["status"] == "expired"
    assert withdrawn["result"] == {"reason": "withdrawn: supply held open by prepayment"}


def _readings(rdb: Path, meter: str, after: float = 0.0) -> int:
    s = SqliteStorage(rdb)
    try:
        return sum(1 for r in s.readings(meter=meter) if r.slot > after)
    finally:
        s.close()
