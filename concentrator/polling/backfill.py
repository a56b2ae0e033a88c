"""Daily freezes recovered from the meters' own history (the last 62 days).

A DL/T 645-2007 or DL/T 698.45 meter freezes its energy registers at midnight and keeps
62 of those freezes (645: 0506xxxx; 698.45: record 5004, read by day), so a
daily-freeze slot that was missed (the meter silent, its bus too busy, the daemon down
over 00:05) is not lost: it is noted here and read back later at
backfill priority, when the meter is online again, or when a field engineer asks for
a range of days (``concentrator backfill``).
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Protocol

from concentrator.clock import Clock
from concentrator.config import Config, MeterConfig, TaskConfig
from concentrator.polling.bus_worker import FREEZE_QUANTITIES, Priority, stored_names
from concentrator.polling.health import Health, HealthTracker
from drivers.readers import QuantityValue

BACKFILL_WINDOW_S = 62 * 86400  # DL/T 645 meters hold 62 daily freezes

DayPlan = list[tuple[dt.date, "asyncio.Future[list[QuantityValue]] | str"]]


FREEZE_PROTOCOLS = ("dlt645", "dlt698")  # 645-2007: 0506xxxx; 698.45: record 5004


def is_freeze_task(task: TaskConfig, meter: MeterConfig) -> bool:
    """A task that reads a meter's daily freeze (which the meter keeps): DL/T 645-2007
    or DL/T 698.45."""
    return meter.protocol in FREEZE_PROTOCOLS and set(task.quantities) <= set(FREEZE_QUANTITIES)


class Reads(Protocol):
    """What the backfill needs of the schedulers (`Polling`)."""

    @property
    def config(self) -> Config: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def health(self) -> HealthTracker: ...

    async def stored_at(self, slot: int) -> set[tuple[str, str]]: ...

    def submit_read(
        self,
        task: TaskConfig,
        meter: MeterConfig,
        quantities: Sequence[str],
        slot: int,
        deadline: float,
        *,
        priority: Priority = ...,
        source: str = ...,
        future: asyncio.Future[list[QuantityValue]] | None = ...,
    ) -> None: ...


class FreezeBackfill:
    def __init__(self, reads: Reads) -> None:
        self.reads = reads
        self.pending: dict[str, set[tuple[str, int]]] = {}  # meter -> {(task, slot)}

    def note(self, meter: str, task: str, slot: int) -> None:
        """A freeze slot of ``meter`` went unread: recover it later."""
        self.pending.setdefault(meter, set()).add((task, slot))

    def start(self, address: str) -> None:
        """Recover missed daily freezes from the meter's own history, at low priority."""
        r = self.reads
        pending = self.pending.pop(address, set())
        meter = next((m for m in r.config.meters if m.address == address), None)
        if not pending or meter is None:
            return
        tasks = {t.name: t for t in r.config.tasks}
        horizon = r.clock.wall() - BACKFILL_WINDOW_S
        for task_name, slot in sorted(pending):
            task = tasks.get(task_name)
            if task is None or slot < horizon:
                continue
            deadline = r.clock.monotonic() + 86400 / r.clock.scale
            r.submit_read(
                task,
                meter,
                task.quantities,
                slot,
                deadline,
                priority=Priority.BACKFILL,
                source="backfill",
            )

    def sweep(self) -> None:
        """Freezes missed while the meter answers (its bus too busy for the slot, the
        daemon down over 00:05) get no health change to trigger their backfill: start it
        here. A meter that is failing waits for its return to online instead."""
        for address in list(self.pending):
            if self.reads.health.get(address).state == Health.ONLINE:
                self.start(address)

    async def days(self, address: str, days: Sequence[dt.date]) -> DayPlan:
        """Recover the daily freezes of ``days`` from the meter's history, as the automatic
        backfill does (backfill priority, stored with source "backfill"). Each day gets
        its job's future (values once stored), or why it is not read."""
        r = self.reads
        meter = next((m for m in r.config.meters if m.address == address), None)
        if meter is None:
            raise KeyError(f"meter {address} is not in the configuration")
        task = next(
            (t for t in r.config.tasks if t.applies_to(meter) and is_freeze_task(t, meter)),
            None,
        )
        if task is None:
            raise ValueError(f"no daily-freeze task applies to meter {address}")
        tz = r.config.concentrator.tzinfo
        now = r.clock.wall()
        today = dt.datetime.fromtimestamp(now, tz).date()
        deadline = r.clock.monotonic() + 86400 / r.clock.scale
        loop = asyncio.get_running_loop()
        names = {n for q in task.quantities for n in stored_names(meter, q)}
        out: DayPlan = []
        for day in days:
            midnight = dt.datetime.combine(day, dt.time(), tz).timestamp()
            slot = task.every.slot_start(midnight + task.every.offset_s, tz)
            if day > today:
                out.append((day, "not frozen yet"))
                continue
            if slot < now - BACKFILL_WINDOW_S:
                out.append((day, "older than the 62 daily freezes a meter keeps"))
                continue
            have = {q for m, q in await r.stored_at(slot) if m == address}
            if names <= have:
                out.append((day, "already stored"))
                continue
            fut: asyncio.Future[list[QuantityValue]] = loop.create_future()
            self.pending.get(address, set()).discard((task.name, slot))
            r.submit_read(
                task,
                meter,
                task.quantities,
                slot,
                deadline,
                priority=Priority.BACKFILL,
                source="backfill",
                future=fut,
            )
            out.append((day, fut))
        return out
