"""Load-profile recovery (补抄): every missed 15-minute slot read back from the meter.

A DL/T 645-2007 or 698.45 meter records its own load curve every 15 minutes and keeps
days of it (`load_read`), so an interval slot missed for any reason (the meter silent,
the bus or the carrier network down, the daemon down) is not lost. The store's
``missing`` table is the list of what to recover: every slot a poll gave up on, every
slot skipped while the daemon was down, is there with its reason, across restarts. A
sweep turns the recoverable ones (a quantity the meter's curve carries, of a task with
``backfill`` on and a 15-minute cadence) into read jobs at backfill priority, oldest
first, so live polls keep their slots; a recovered value is stored with source
"backfill" and fills its missing row. The store's unique (slot, series) key keeps each
slot once whichever of a live read and a recovery lands first.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from concentrator.clock import Clock
from concentrator.config import Config, MeterConfig
from concentrator.polling.bus_worker import BusWorker, Job, Priority, stored_names
from concentrator.polling.health import Health, HealthTracker
from concentrator.polling.load_read import BLOCKS, CARRIED, LOAD_PERIOD_S, NOT_HELD
from concentrator.storage import StoreWriter
from drivers.errors import MeterError
from drivers.readers import QuantityValue

log = logging.getLogger(__name__)

HOLD_S = 10 * 86400  # slots older than this are not asked for (meters keep days)
SWEEP_EVERY_REAL_S = 30.0  # a sweep with nothing new noted, at most this often
FAILED_PAUSE_S = 300.0  # a meter whose recovery read failed waits (wall seconds)


class Polls(Protocol):
    """What the recovery needs of the schedulers (`Polling`)."""

    @property
    def config(self) -> Config: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def health(self) -> HealthTracker: ...

    @property
    def writer(self) -> StoreWriter: ...

    @property
    def workers(self) -> dict[str, BusWorker]: ...


def recoverable_names(config: Config, meter: MeterConfig) -> frozenset[str]:
    """The stored names of ``meter`` a recovery may fill: carried by its protocol's load
    curve and read by a task with backfill on whose slots are 15-minute boundaries."""
    carried = CARRIED.get(meter.protocol, frozenset())
    names: set[str] = set()
    for task in config.tasks:
        every = task.every
        if (
            task.backfill
            and task.applies_to(meter)
            and every.period_s % LOAD_PERIOD_S == 0
            and every.offset_s % LOAD_PERIOD_S == 0
        ):
            names |= {n for q in task.quantities for n in stored_names(meter, q)}
    return frozenset(names & carried)


class LoadBackfill:
    def __init__(self, polls: Polls) -> None:
        self.polls = polls
        self.queued: set[tuple[str, int]] = set()  # (meter, slot) in a job now
        self.dirty = True  # something was noted missing since the last sweep
        self._last_sweep = float("-inf")
        self._paused: dict[str, float] = {}  # meter -> monotonic time it may be tried
        self.jobs = 0
        self.recovered = 0  # readings stored from meters' memories

    def note(self) -> None:
        """A slot was recorded missing: the next sweep looks."""
        self.dirty = True

    def due(self) -> bool:
        now = self.polls.clock.monotonic()
        return self.dirty or now - self._last_sweep >= SWEEP_EVERY_REAL_S

    async def sweep(self, only: str | None = None) -> int:
        """Queue a recovery job for every run of missed, recoverable slots of the meters
        that answer now (or of ``only``); returns how many jobs were queued."""
        p = self.polls
        self.dirty = False
        self._last_sweep = p.clock.monotonic()
        cfg = p.config
        meters = {m.address: m for m in cfg.meters if only is None or m.address == only}
        names = {a: recoverable_names(cfg, m) for a, m in meters.items()}
        names = {a: n for a, n in names.items() if n}
        if not names:
            return 0
        now = p.clock.wall()
        rows = await p.writer.query(
            lambda store: store.missing(only, None, int(now - HOLD_S), None)
        )
        wanted: dict[str, dict[int, set[str]]] = {}
        for row in rows:
            if row.reason.startswith(NOT_HELD) or row.quantity not in names.get(row.meter, ()):
                continue
            if (row.meter, row.slot) in self.queued:
                continue
            wanted.setdefault(row.meter, {}).setdefault(row.slot, set()).add(row.quantity)
        queued = 0
        mono = p.clock.monotonic()
        for address, slots in wanted.items():
            meter = meters[address]
            worker = p.workers.get(meter.bus)
            if worker is None or not worker.usable():
                continue
            if p.health.get(address).state != Health.ONLINE:
                continue  # back online, the health change sweeps it (`Polling`)
            if only is None and self._paused.get(address, 0.0) > mono:
                continue
            for run in _runs(sorted(slots), BLOCKS[meter.protocol]):
                self._submit(worker, meter, {s: frozenset(slots[s]) for s in run})
                queued += 1
        return queued

    def _submit(
        self, worker: BusWorker, meter: MeterConfig, load: dict[int, frozenset[str]]
    ) -> None:
        p = self.polls
        self.queued |= {(meter.address, s) for s in load}
        fut: asyncio.Future[list[QuantityValue]] = asyncio.get_running_loop().create_future()
        fut.add_done_callback(lambda f: self._done(meter.address, load, f))
        self.jobs += 1
        worker.submit(
            Job(
                priority=Priority.BACKFILL,
                deadline=p.clock.monotonic() + 86400 / p.clock.scale,
                seq=0,
                meter=meter,
                quantities=sorted(frozenset().union(*load.values())),
                slot=min(load),
                retries_left=2,
                source="backfill",
                future=fut,
                load=load,
            )
        )

    def _done(
        self,
        address: str,
        load: dict[int, frozenset[str]],
        fut: asyncio.Future[list[QuantityValue]],
    ) -> None:
        self.queued -= {(address, s) for s in load}
        if fut.cancelled():
            return
        exc = fut.exception()
        if exc is None:
            self.recovered += len(fut.result())
            self.dirty = True  # a run longer than one job goes on at once
            return
        if isinstance(exc, MeterError):
            # The meter refused the read: it has no load curve to give (a meter that
            # does not record one); recorded, so it is not asked again and again.
            for slot, names in sorted(load.items()):
                for name in sorted(names):
                    self.polls.writer.missing(address, name, slot, f"{NOT_HELD}: {exc.description}")
        clock = self.polls.clock
        self._paused[address] = clock.monotonic() + FAILED_PAUSE_S / clock.scale
        log.info("meter %s: load-profile recovery failed: %s", address, exc)


def _runs(slots: Sequence[int], size: int) -> list[list[int]]:
    """Consecutive slots, oldest first, cut into runs of at most ``size``."""
    runs: list[list[int]] = []
    for s in slots:
        if runs and s - runs[-1][-1] == LOAD_PERIOD_S and len(runs[-1]) < size:
            runs[-1].append(s)
        else:
            runs.append([s])
    return runs
