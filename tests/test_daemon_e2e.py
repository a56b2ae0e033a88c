"""The daemon as a real process against `hil-sim fleet`: read-success rate, ground truth,
the real-time path, kill -9 safety and refusing a bad config."""

from __future__ import annotations

import datetime as dt
import json
import math
import random
import sqlite3
import time
from pathlib import Path

import pytest
from helpers import DaemonProcess, read_status, run_cli, sized, truth_values, wait_for

from concentrator.storage import Store
from hil_sim.process import SimProcess

pytestmark = pytest.mark.slow


def _assert_values_are_true(db: Path, truth: Path) -> int:
    told = truth_values(truth)
    with Store.open(db) as store:
        readings = store.get_readings()
    checked = 0
    for r in readings:
        q = r.reading.quantity
        if q == "frozen_daily_time":
            continue  # a freeze stamp, checked through its energy values
        assert r.reading.value in told[(r.reading.meter, q)], r
        checked += 1
    return checked


def _fleet(tmp_path: Path, *args: str) -> tuple[SimProcess, Path, Path]:
    links = tmp_path / "links"
    links.mkdir(exist_ok=True)
    cfg = tmp_path / "concentrator.toml"
    db = tmp_path / "store.db"
    sim = SimProcess(
        ["fleet", "--link-dir", str(links), "--write-config", str(cfg), "--store", str(db), *args]
    )
    sim.start()
    return sim, cfg, db


def _origin_for(scaled_now: float, scale: float) -> float:
    """The --time-origin at which scaled time reads ``scaled_now`` at this moment."""
    now = time.time()
    return (now * scale - scaled_now) / (scale - 1)


def test_256_meters_on_4_buses_at_2400_baud_with_faults(tmp_path: Path) -> None:
    scale = 40.0  # a 15-minute slot lasts 22.5 s; a 64-meter bus needs about 16 s of it
    # Two full slots (23:45 and the midnight one, with the 00:05 freeze) in `make test`,
    # four under `make test-long`.
    slots = sized(2, 4)
    period = 900
    # Start at 23:35 (UTC+8, the config's zone), so that the full slots span midnight
    # and the daily freeze at 00:05: the busiest time of a concentrator's day, and the
    # one that once starved the 00:00 slot (this test failed only when run near 16:00 UTC).
    cst = dt.timezone(dt.timedelta(hours=8))
    today = dt.datetime.now(cst).date()
    start = dt.datetime.combine(today, dt.time(23, 35), cst).timestamp() - 86400
    origin = repr(_origin_for(start, scale))
    sim, cfg, db = _fleet(
        tmp_path,
        "--buses",
        "4",
        "--meters-per-bus",
        "64",
        "--baud",
        "2400",
        "--fault-rate",
        "0.02",
        "--time-scale",
        str(scale),
        "--seed",
        "1",
        "--time-origin",
        origin,
    )
    daemon = DaemonProcess(cfg, "--time-scale", str(scale), "--time-origin", origin)
    status_path = db.with_suffix(".status.json")
    try:
        first = wait_for(lambda: read_status(status_path), 120, "the daemon's status file")
        first_full = math.ceil(first["started"] / period) * period
        end = first_full + slots * period
        wait_for(
            lambda: (read_status(status_path) or {}).get("wall", 0) > end + 20,
            400,
            f"{slots} full 15-minute slots",
        )
    finally:
        assert daemon.stop() == 0
        sim.stop()
    with Store.open(db) as store:
        assert store.integrity_check() == []
        got = [
            r for r in store.get_readings(quantity="energy_fwd_total", since=first_full, until=end)
        ]
        missing = store.missing(quantity="energy_fwd_total", since=first_full, until=end)
    scheduled = 256 * slots
    assert len(got) + len(missing) == scheduled  # every scheduled reading is accounted for
    assert len(got) / scheduled >= 0.999, [m.reason for m in missing]
    assert sum(sim.summary["faults"][i].get("bad_checksum", 0) for i in range(4)) > 0
    assert _assert_values_are_true(db, sim.truth) >= len(got)


def test_real_time_path_without_time_scale(tmp_path: Path) -> None:
    sim, cfg, db = _fleet(
        tmp_path, "--buses", "1", "--meters-per-bus", "8", "--baud", "9600", "--cadence", "5s"
    )
    daemon = DaemonProcess(cfg)
    status_path = db.with_suffix(".status.json")
    try:
        first = wait_for(lambda: read_status(status_path), 120, "the daemon's status file")
        first_full = math.ceil(first["started"] / 5) * 5
        wait_for(lambda: time.time() > first_full + 15 + 3, 120, "three 5-second slots")
    finally:
        assert daemon.stop() == 0
        sim.stop()
    with Store.open(db) as store:
        got = store.get_readings(
            quantity="energy_fwd_total", since=first_full, until=first_full + 15
        )
        # Stamped with the slot it belongs to and read inside it.
        assert all(r.reading.slot <= r.reading.read_at < r.reading.slot + 5 for r in got)
        assert {r.reading.slot for r in got} == {first_full, first_full + 5, first_full + 10}
        assert len(got) == 8 * 3
        daily = store.get_readings(quantity="frozen_daily_energy_fwd_total")
        assert len(daily) == 8  # today's freeze of every meter
        # Only the slot the daemon started in may miss reads: it may have started a
        # moment before that slot's end, and a read past its slot is not made.
        missed = store.missing()
        assert all(m.slot < first_full and "slot ended" in m.reason for m in missed), missed
    _assert_values_are_true(db, sim.truth)
    stats = run_cli("stats", "--config", str(cfg), "--json")
    assert stats.returncode == 0, stats.stderr
    report = json.loads(stats.stdout)
    [today] = report["days"].values()
    assert today["missing"] == len(missed) and today["read"] >= 8 * 3 + 8 * 6
    if not missed:
        assert report["buses"]["bus1"]["rate"] == 1.0
    assert len(report["meters"]) == 8
    assert report["backlog"]["readings"] == today["read"]  # nothing delivered yet
    assert report["status"]["buses"]["bus1"]["utilisation"] > 0


def test_kill_9_never_loses_or_duplicates_a_committed_reading(tmp_path: Path) -> None:
    sim, cfg, db = _fleet(
        tmp_path, "--buses", "2", "--meters-per-bus", "16", "--baud", "0", "--cadence", "1s"
    )
    rng = random.Random(7)
    seen: set[tuple[str, str, int]] = set()
    kills = 0
    try:
        for _ in range(50):
            daemon = DaemonProcess(cfg)
            # Kill at a random moment: during start-up, polling or a commit.
            time.sleep(rng.uniform(0.3, 2.0))
            daemon.kill()
            kills += 1
            with Store.open(db) as store:
                assert store.integrity_check() == []
                rows = store.get_readings()
            keys = {(r.reading.meter, r.reading.quantity, r.reading.slot) for r in rows}
            assert len(keys) == len(rows)  # never stored twice
            assert seen <= keys, f"lost after kill {kills}: {sorted(seen - keys)[:5]}"
            seen = keys
    finally:
        sim.stop()
    assert kills == 50 and len(seen) > 100
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    con.close()
    _assert_values_are_true(db, sim.truth)


def test_daemon_refuses_to_start_on_an_invalid_config(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[concentrator]\nid = "dc"\nsurprise = 1\n[storage]\npath = "x.db"\n')
    result = run_cli("run", "--config", str(cfg))
    assert result.returncode == 7
    assert "not starting" in result.stderr and "surprise" in result.stderr
    assert not (tmp_path / "x.db").exists()
