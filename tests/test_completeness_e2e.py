"""Collection completeness end to end (issue 20, item 6), through a real Mosquitto: a
concentrator polling simulated meters across local midnight sends its ``collection_day``
event up with the readings; the receiver stores it, and its own ``completeness`` report
of that day counts the same live readings per meter as the concentrator held."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import DaemonProcess, receiver_cli, wait_for
from mqtt_harness import Broker
from test_uplink_e2e import CID, Receiver, _configure

from cloud_receiver.storage import MeterRecord, SqliteStorage
from concentrator.config import load_config
from hil_sim.process import SimProcess

pytestmark = pytest.mark.slow

SCALE = 60.0  # a simulated minute per real second
CST = dt.timezone(dt.timedelta(hours=8))  # the simulator's config keeps the default zone


def _origin_for(scaled_now: float) -> float:
    """The --time-origin at which scaled time reads ``scaled_now`` at this moment."""
    return (time.time() * SCALE - scaled_now) / (SCALE - 1)


def _day_events(db: Path) -> list[dict[str, Any]]:
    if not db.exists():
        return []
    s = SqliteStorage(db)
    try:
        return [e.detail for _, e in s.events(CID) if e.kind == "collection_day"]
    finally:
        s.close()


def _live_per_meter(db: Path, day: dt.date) -> dict[str, int]:
    start = int(dt.datetime.combine(day, dt.time(), CST).timestamp())
    s = SqliteStorage(db)
    try:
        rows = s.readings(since=start, until=start + 86_400, quantities=["energy_fwd_total"])
    finally:
        s.close()
    out: dict[str, int] = {}
    for r in rows:
        if r.source == "poll":
            out[r.meter] = out.get(r.meter, 0) + 1
    return out


def test_the_day_event_reaches_the_receiver_and_agrees_with_its_report(
    tmp_path: Path, operators: Any
) -> None:
    # Yesterday 23:45 (simulated): up to fifteen minute slots before midnight (a slow
    # start on a busy machine costs a few), then the event a quarter of an hour after it.
    day = dt.datetime.now(CST).date() - dt.timedelta(days=1)
    origin = repr(_origin_for(dt.datetime.combine(day, dt.time(23, 45), CST).timestamp()))
    cfg, store_db, rdb = tmp_path / "c.toml", tmp_path / "store.db", tmp_path / "receiver.db"
    (tmp_path / "links").mkdir()
    with Broker(tmp_path / "broker") as broker:
        sim = SimProcess(
            ["fleet", "--buses", "1", "--meters-per-bus", "4", "--baud", "0",
             "--time-scale", str(SCALE), "--time-origin", origin, "--cadence", "1m",
             "--link-dir", str(tmp_path / "links"), "--write-config", str(cfg),
             "--store", str(store_db)]
        )  # fmt: skip
        sim.start()
        _configure(tmp_path, broker, cfg)
        meters = [m.address for m in load_config(cfg).meters]
        receiver = Receiver(broker, rdb, tmp_path / "receiver.log")
        receiver.start()
        daemon = DaemonProcess(cfg, "--time-scale", str(SCALE), "--time-origin", origin)
        try:
            (event,) = wait_for(lambda: _day_events(rdb), 240, "the collection_day event upstream")
            # The day's live readings travel in the same outbox: wait until they are all in.
            wait_for(
                lambda: (
                    {m["meter"]: m["live"] for m in event["incomplete"]}
                    == _live_per_meter(rdb, day)
                ),
                120,
                "the receiver to hold every live reading the concentrator held",
            )
        finally:
            assert daemon.stop() == 0
            receiver.stop()
            sim.stop()

    # Exactly one event: the day the concentrator started in (a new store sends none for
    # the days before). Started at 23:45 it holds a few minutes of it: every meter short.
    assert _day_events(rdb) == [event]
    assert event["day"] == day.isoformat()
    assert (event["meters"], event["complete"], event["expected"]) == (4, 0, 4 * 1440)
    assert sorted(m["meter"] for m in event["incomplete"]) == sorted(meters)
    assert 4 <= event["live"] <= 4 * 15
    assert all(m["expected"] == 1440 for m in event["incomplete"])

    # The receiver's report of that day, on the same 1-minute plan, counts the same.
    s = SqliteStorage(rdb)
    try:
        s.replace_archive([MeterRecord(m, "TA-1", "customer") for m in meters])
    finally:
        s.close()
    session = operators(f"sqlite:///{rdb}").login("vera", "viewer")
    done = receiver_cli(
        "completeness", "--db", f"sqlite:///{rdb}", "--day", day.isoformat(),
        "--interval", "1m", "--json", session=session, env={"MF_TZ": "+08:00"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    held = {m["meter"]: m["live"] for m in event["incomplete"]}
    assert {m["meter"]: m["live"] for m in report["meters"]} == held
    assert {m["meter"]: m["expected"] for m in report["meters"]} == dict.fromkeys(meters, 1440)
    assert report["overall"]["live"] == event["live"]
    assert report["overall"]["success_rate"] == 0.0
    # ...and carries the concentrator's own figures beside its own.
    told = {k: event[k] for k in ("meters", "complete", "expected", "live", "recovered")}
    assert report["reported"] == [{"concentrator": CID, "day": day.isoformat(), **told}]
