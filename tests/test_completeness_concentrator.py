"""The concentrator's side of collection completeness (issue 20, item 6): the interval
slots its own tasks expected and those its store holds, live or recovered, in exact
figures: in ``concentrator stats`` and in the daily ``collection_day`` event."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from click.testing import CliRunner

from concentrator.cli import main
from concentrator.config import load_config
from concentrator.control import completeness
from concentrator.storage import Store
from contract.records import Reading

NPT = dt.timezone(dt.timedelta(hours=5, minutes=45))  # a fixed offset off the hour grid
DAY = dt.date(2025, 3, 10)
MIDNIGHT = int(dt.datetime.combine(DAY, dt.time(), NPT).timestamp())
A, B, C = "000000000001", "000000000002", "000000000003"

CONFIG = f"""
[concentrator]
id = "dc-complete"
timezone = "+05:45"
[storage]
path = "s.db"
[[bus]]
name = "bus1"
type = "rs485"
port = "/dev/null"
baud = 2400
parity = "E"
[[meter]]
address = "{A}"
protocol = "dlt645"
bus = "bus1"
[[meter]]
address = "{B}"
protocol = "dlt645"
bus = "bus1"
[[meter]]
address = "{C}"
protocol = "dlt645"
bus = "bus1"
group = "hourly"
[[task]]
name = "energy-15m"
quantities = ["energy_fwd_total", "voltage_a"]
every = "15m"
groups = ["default"]
[[task]]
name = "energy-1h"
quantities = ["energy_fwd_total"]
every = "1h"
groups = ["hourly"]
[[task]]
name = "daily-freeze"
quantities = ["frozen_daily_energy_fwd"]
every = "daily@00:05"
"""


def r(meter: str, slot: int, source: str = "poll", quantity: str = "energy_fwd_total") -> Reading:
    return Reading(meter, quantity, slot, "1.00", "kWh", slot + 5.0, source)


def site(tmp_path: Path, midnight: int = MIDNIGHT) -> Path:
    """A config and a store: A every slot live; B half live, 10 slots only as voltage
    (still held: any of the task's quantities), 20 recovered, the rest missing; C hourly,
    12 hours live and one reading off its hour grid; a freeze that is not an interval."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    q = [midnight + 900 * i for i in range(96)]
    readings = [r(A, s) for s in q]
    readings += [r(B, s) for s in q[:38]] + [r(B, s, quantity="voltage_a") for s in q[38:48]]
    readings += [r(B, s, "backfill") for s in q[48:68]]
    readings += [r(B, q[0], "backfill", "voltage_a")]  # live and recovered: live
    readings += [r(C, midnight + 3600 * h) for h in range(12)] + [r(C, midnight + 1800)]
    readings += [r(A, midnight + 300, quantity="frozen_daily_energy_fwd")]
    readings += [r(A, midnight - 900), r(A, midnight + 86_400)]  # the days around
    with Store.open(tmp_path / "s.db") as store:
        store.add_readings(readings)
    return cfg


def test_held_per_meter_and_the_day_event(tmp_path: Path) -> None:
    cfg = load_config(site(tmp_path))
    with Store.open(tmp_path / "s.db") as store:
        day = completeness.held(cfg, store, MIDNIGHT, MIDNIGHT + 86_400, MIDNIGHT + 2 * 86_400)
        assert [(h.meter, h.expected, h.live, h.recovered, h.missing) for h in day] == [
            (A, 96, 96, 0, 0), (B, 96, 48, 20, 28), (C, 24, 12, 0, 12),
        ]  # fmt: skip
        # The day so far at 10:20 local: 41 quarter hours and 10 hours are over.
        morning = completeness.held(cfg, store, MIDNIGHT, MIDNIGHT + 86_400, MIDNIGHT + 37_200)
        assert [(h.meter, h.expected, h.held) for h in morning] == [
            (A, 41, 41), (B, 41, 41), (C, 10, 10),
        ]  # fmt: skip
        event = completeness.day_event(cfg, store, DAY, MIDNIGHT + 86_400 + 1200)
    assert (event.kind, event.severity, event.meter) == ("collection_day", "warning", None)
    assert event.detail == {
        "day": "2025-03-10", "meters": 3, "complete": 1, "expected": 216, "live": 156,
        "recovered": 20,
        "incomplete": [
            {"meter": B, "expected": 96, "live": 48, "recovered": 20},
            {"meter": C, "expected": 24, "live": 12, "recovered": 0},
        ],
        "incomplete_more": 0,
    }  # fmt: skip


def test_the_event_is_due_once_a_quarter_hour_after_midnight(tmp_path: Path) -> None:
    cfg = load_config(site(tmp_path))
    next_midnight = MIDNIGHT + 86_400
    assert completeness.due_day(cfg, next_midnight + 899, None) == DAY - dt.timedelta(days=1)
    assert completeness.due_day(cfg, next_midnight + 900, None) == DAY
    assert completeness.due_day(cfg, next_midnight + 900, "2025-03-09") == DAY
    assert completeness.due_day(cfg, next_midnight + 900, "2025-03-10") is None


def test_stats_shows_the_completeness_columns(tmp_path: Path) -> None:
    yesterday = dt.datetime.now(NPT).date() - dt.timedelta(days=1)
    cfg = site(tmp_path, int(dt.datetime.combine(yesterday, dt.time(), NPT).timestamp()))
    done = CliRunner().invoke(main, ["stats", "--config", str(cfg), "--days", "2", "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["days"][yesterday.isoformat()]["completeness"] == {
        "expected": 216, "live": 156, "recovered": 20, "held_rate": round(176 / 216, 6),
    }  # fmt: skip
    assert report["meters"][B]["completeness"]["recovered"] == 20
    table = CliRunner().invoke(main, ["stats", "--config", str(cfg), "--days", "2"],
                               env={"COLUMNS": "200"})  # fmt: skip
    assert table.exit_code == 0, table.output
    assert "recovered" in table.stdout and f"day {yesterday.isoformat()}" in table.stdout
