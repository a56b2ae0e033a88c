"""The figures a concentrator is judged by, computed from its store.

Read-success rate = readings stored ÷ (readings stored + slots recorded missing), per
local day, per bus and per meter; the backlog (undelivered readings and the age of the
oldest). Bus utilisation lives in the daemon's status file, as it is a live figure.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from concentrator.config import Config
from concentrator.storage import open_store_read_only


def _rate(read: int, missing: int) -> float | None:
    total = read + missing
    return round(read / total, 6) if total else None


def collect_metrics(cfg: Config, *, days: int = 1, now: float | None = None) -> dict[str, Any]:
    tz = cfg.concentrator.tzinfo
    now_dt = dt.datetime.fromtimestamp(
        now if now is not None else dt.datetime.now().timestamp(), tz
    )
    today = now_dt.replace(hour=0, minute=0, second=0, microsecond=0)
    bus_of = {m.address: m.bus for m in cfg.meters}
    per_day: dict[str, dict[str, Any]] = {}
    per_bus: dict[str, list[int]] = {b.name: [0, 0] for b in cfg.buses}
    per_meter: dict[str, list[int]] = {}
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
        backlog = store.backlog()
    oldest = backlog.oldest_slot
    status_path = cfg.storage.path.with_suffix(".status.json")
    try:
        status = json.loads(status_path.read_text())
    except (OSError, ValueError):
        status = None
    return {
        "days": per_day,
        "buses": {
            k: {"read": v[0], "missing": v[1], "rate": _rate(*v)} for k, v in per_bus.items()
        },
        "meters": {
            k: {"read": v[0], "missing": v[1], "rate": _rate(*v)}
            for k, v in sorted(per_meter.items())
        },
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
