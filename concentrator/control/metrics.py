"""The figures a concentrator is judged by, computed from its store.

Read-success rate = readings stored ÷ (readings stored + slots recorded missing), per
local day, per bus and per meter; beside it the collection completeness of the same
scopes (`concentrator.control.completeness`: interval slots expected by the tasks, held
live or recovered); the backlog (undelivered readings and the age of the oldest). Bus
utilisation lives in the daemon's status file, as it is a live figure.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from concentrator.config import Config
from concentrator.control import completeness
from concentrator.storage import open_store_read_only


def _rate(read: int, missing: int) -> float | None:
    total = read + missing
    return round(read / total, 6) if total else None


def _completeness(expected: int, live: int, recovered: int) -> dict[str, Any]:
    held = live + recovered
    return {"expected": expected, "live": live, "recovered": recovered,
            "held_rate": round(held / expected, 6) if expected else None}  # fmt: skip


def collect_metrics(cfg: Config, *, days: int = 1, now: float | None = None) -> dict[str, Any]:
    tz = cfg.concentrator.tzinfo
    now_ts = now if now is not None else dt.datetime.now().timestamp()
    now_dt = dt.datetime.fromtimestamp(now_ts, tz)
    today = now_dt.replace(hour=0, minute=0, second=0, microsecond=0)
    bus_of = {m.address: m.bus for m in cfg.meters}
    per_day: dict[str, dict[str, Any]] = {}
    per_bus: dict[str, list[int]] = {b.name: [0, 0] for b in cfg.buses}
    per_meter: dict[str, list[int]] = {}
    # expected, live, recovered interval slots, per scope
    held: dict[tuple[str, str], list[int]] = {}

    def count(scope: str, key: str, r: completeness.MeterHeld) -> None:
        c = held.setdefault((scope, key), [0, 0, 0])
        c[0] += r.expected
        c[1] += r.live
        c[2] += r.recovered

    with open_store_read_only(cfg.storage) as store:
        for back in range(days - 1, -1, -1):
            start = today - dt.timedelta(days=back)
            end = start + dt.timedelta(days=1)
            rows = store.read_success(int(start.timestamp()), int(end.timestamp()), by="meter")
            read = sum(r.read for r in rows)
            missing = sum(r.missing for r in rows)
            per_day[start.date().isoformat()] = {
                "read": read,
                "missing": missing,
                "rate": _rate(read, missing),
            }
            for r in rows:
                bus = per_bus.setdefault(bus_of.get(r.key, "?"), [0, 0])
                bus[0] += r.read
                bus[1] += r.missing
                m = per_meter.setdefault(r.key, [0, 0])
                m[0] += r.read
                m[1] += r.missing
            day = start.date().isoformat()
            for h in completeness.held(cfg, store, int(start.timestamp()),
                                       int(end.timestamp()), now_ts):  # fmt: skip
                count("days", day, h)
                count("buses", bus_of.get(h.meter, "?"), h)
                count("meters", h.meter, h)
        backlog = store.backlog()
    oldest = backlog.oldest_slot
    status_path = cfg.storage.path.with_suffix(".status.json")
    try:
        status = json.loads(status_path.read_text())
    except (OSError, ValueError):
        status = None
    for scope, key in held:  # meters without a reading or missing slot too
        if scope == "meters":
            per_meter.setdefault(key, [0, 0])

    def row(scope: str, key: str, read: int, missing: int) -> dict[str, Any]:
        return {"read": read, "missing": missing, "rate": _rate(read, missing),
                "completeness": _completeness(*held.get((scope, key), [0, 0, 0]))}  # fmt: skip

    return {
        "days": {k: row("days", k, v["read"], v["missing"]) for k, v in per_day.items()},
        "buses": {k: row("buses", k, *v) for k, v in per_bus.items()},
        "meters": {k: row("meters", k, *v) for k, v in sorted(per_meter.items())},
        "backlog": {
            "readings": backlog.readings,
            "events": backlog.events,
            "oldest_slot": oldest,
            "oldest_slot_iso": dt.datetime.fromtimestamp(oldest, tz).isoformat()
            if oldest
            else None,
        },
        "status": status,
    }
