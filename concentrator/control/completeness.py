"""Collection completeness as the concentrator sees it (issue 20, item 6): per meter, the
interval slots its own tasks expected and the ones its store holds, live or recovered.

- expected: for each interval task (a cadence shorter than a day; daily freezes are
  not interval readings) that applies to the meter, its slots in the window that are
  over (``slot + period <= now``), from local midnight in the concentrator's zone;
- held: those slots with a reading of one of the task's quantities in the store, *live*
  when one was polled (or read on demand), *recovered* when all were backfilled from
  the meter's memory;
- the window is the store's: readings pruned after ``retention_days`` are not held.

The receiver's ``completeness`` report is the utility's figure (its plan, the archive,
commissioning times, what arrived and when); this one says what the box itself holds,
in ``concentrator stats`` and in the daily ``collection_day`` event it sends up
(`day_event`), so the two can be compared.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from dataclasses import dataclass

from concentrator.config import Config
from concentrator.config.model import DAY_S, TaskConfig
from concentrator.storage import Store
from contract.records import Event

EVENT_METERS = 50  # incomplete meters named in the event; the rest are counted
# The day's event is drawn this long after local midnight: the last slots of the day
# have been polled (or recorded missing) and their backfill has had a first go.
EVENT_AFTER_S = 900
STATE_KEY = "collection_day:last"


@dataclass(frozen=True)
class MeterHeld:
    meter: str
    expected: int
    live: int
    recovered: int

    @property
    def held(self) -> int:
        return self.live + self.recovered

    @property
    def missing(self) -> int:
        return self.expected - self.held

    @property
    def ratio(self) -> float | None:
        return round(self.held / self.expected, 6) if self.expected else None


def interval_tasks(cfg: Config) -> list[TaskConfig]:
    return [t for t in cfg.tasks if t.every.period_s < DAY_S and not t.relay]


def _due_slots(task: TaskConfig, since: int, until: int, now: float, tz: dt.tzinfo) -> range:
    """The task's slots in ``[since, until)`` that are over at ``now``."""
    period = task.every.period_s
    first = task.every.slot_start(since, tz)
    if first < since:
        first += period
    end = min(until, int(now) - period + 1)
    return range(first, max(first, end), period)


def held(cfg: Config, store: Store, since: int, until: int, now: float) -> list[MeterHeld]:
    """Per configured meter, its interval slots expected and held in ``[since, until)``."""
    tz = cfg.concentrator.tzinfo
    expected: dict[str, int] = defaultdict(int)
    live: dict[str, int] = defaultdict(int)
    recovered: dict[str, int] = defaultdict(int)
    for task in interval_tasks(cfg):
        due = _due_slots(task, since, until, now, tz)
        meters = {m.address for m in cfg.meters if task.applies_to(m)}
        for m in meters:
            expected[m] += len(due)
        if not due:
            continue
        for meter, slot, backfilled in store.held_slots(due.start, due.stop, task.quantities):
            if meter in meters and slot in due:
                (recovered if backfilled else live)[meter] += 1
    return [
        MeterHeld(m.address, expected[m.address], live[m.address], recovered[m.address])
        for m in sorted(cfg.meters, key=lambda m: m.address)
    ]


def day_bounds(day: dt.date, tz: dt.tzinfo) -> tuple[int, int]:
    start = dt.datetime.combine(day, dt.time(), tz)
    return int(start.timestamp()), int((start + dt.timedelta(days=1)).timestamp())


def day_event(cfg: Config, store: Store, day: dt.date, now: float) -> Event:
    """The ``collection_day`` event of a local day: the totals, and the meters that fell
    short (the first `EVENT_METERS` by address, the rest counted)."""
    since, until = day_bounds(day, cfg.concentrator.tzinfo)
    rows = [r for r in held(cfg, store, since, until, now) if r.expected]
    short = [r for r in rows if r.missing > 0]
    detail = {
        "day": day.isoformat(),
        "meters": len(rows),
        "complete": len(rows) - len(short),
        "expected": sum(r.expected for r in rows),
        "live": sum(r.live for r in rows),
        "recovered": sum(r.recovered for r in rows),
        "incomplete": [
            {"meter": r.meter, "expected": r.expected, "live": r.live, "recovered": r.recovered}
            for r in short[:EVENT_METERS]
        ],
        "incomplete_more": max(0, len(short) - EVENT_METERS),
    }
    return Event("collection_day", "warning" if short else "info", None, detail, now)


def due_day(cfg: Config, now: float, last: str | None) -> dt.date | None:
    """The day whose event is due at ``now`` (yesterday, once `EVENT_AFTER_S` past
    midnight), or None when it was sent already (``last``: the day last sent)."""
    tz = cfg.concentrator.tzinfo
    yesterday = dt.datetime.fromtimestamp(now - EVENT_AFTER_S, tz).date() - dt.timedelta(days=1)
    if last is not None and last >= yesterday.isoformat():
        return None
    return yesterday
