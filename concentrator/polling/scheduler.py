"""The polling side of the daemon: one worker per bus, one scheduler per reading task.

`Polling` runs one configuration at a time: `start` builds the workers and the slot
schedulers, `stop` drains them, and a reload or a meter changed by command is a stop
and a start with the new configuration (meter health is kept across). It owns the
buses: commands get a turn on one through it (`read_now`, `run_on_bus`), ahead of the
polls and between two transactions, so a command never collides with a poll on the
half-duplex line.

Time: a slot is a wall-clock boundary in the configured timezone. The schedulers look
at the wall clock at least once a (real) second, so a stepped clock is noticed at once:
a forward step records the slots it skipped as missing (daily freezes are backfilled),
a backward step does not re-read slots that are already stored, and neither stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Sequence

from concentrator.clock import Clock
from concentrator.config import Config, MeterConfig, TaskConfig
from concentrator.polling.archive_guard import ArchiveGuard, Word
from concentrator.polling.backfill import DayPlan, FreezeBackfill, is_freeze_task
from concentrator.polling.bus_worker import BusAction, BusWorker, Job, Priority, stored_names
from concentrator.polling.health import Health, HealthTracker
from concentrator.polling.loadprofile import LoadBackfill
from concentrator.polling.roster import Roster
from concentrator.storage import StoreWriter
from contract.records import Event
from drivers.readers import QuantityValue

log = logging.getLogger(__name__)

NAP_REAL_S = 1.0  # how often (real seconds) a scheduler re-reads the wall clock
MAX_SKIPPED_SLOTS = 96 * 7  # slots recorded missing after an outage, at most
LOOKBACK_SLOTS = 12  # at a restart, earlier slots checked for meters left unaccounted
JOB_ANSWER_GRACE_S = 120.0  # an on-demand job may run this long after it started


class Polling:
    def __init__(self, config: Config, *, clock: Clock, writer: StoreWriter) -> None:
        self.config = config  # in force: the file's, with the meters commands changed
        self.clock = clock
        self.writer = writer
        self.health = HealthTracker(self._health_changed)
        self.backfill = FreezeBackfill(self)
        self.load = LoadBackfill(self)  # missed interval slots, from the meters' curves
        self._sweeps: set[asyncio.Task[int]] = set()
        self.roster = Roster(writer)
        self.guard = ArchiveGuard(writer)  # the archive: which meters may be polled
        self._refused_noted: list[str] = []
        self.workers: dict[str, BusWorker] = {}
        self.tasks: list[asyncio.Task[None]] = []  # the bus workers and the schedulers
        self.slots_started = 0
        self._meter_bus: dict[str, str] = {}

    # ------------------------------------------------------------------ lifecycle
    async def apply(self, config: Config) -> None:
        """Make ``config``, with the meters commands added or removed, the one in force
        (the workers and schedulers running are not touched: `stop` and `start`)."""
        self.config = await self.roster.overlay(config)
        await self.guard.load(self.config)

    def start(self) -> None:
        cfg = self.config
        tz = cfg.concentrator.tzinfo
        self.workers = {}
        for b in cfg.buses:
            if b.type == "plc":
                # Imported by a carrier bus only: a daemon with none does not load the
                # Q/GDW 1376.2 and carrier drivers.
                from concentrator.polling.plc_worker import PlcWorker

                self.workers[b.name] = PlcWorker(
                    b,
                    meters=[
                        m for m in cfg.meters if m.bus == b.name and self.guard.allows(m.address)
                    ],
                    clock=self.clock,
                    writer=self.writer,
                    health=self.health,
                    tz=tz,
                    on_missing=self._missing,
                    on_event=self.writer.event,
                )
            else:
                self.workers[b.name] = BusWorker(
                    b,
                    clock=self.clock,
                    writer=self.writer,
                    health=self.health,
                    tz=tz,
                    on_missing=self._missing,
                )
        self._meter_bus = {m.address: m.bus for m in cfg.meters}
        self.health.forget(set(self._meter_bus))
        self._note_refused()
        self.tasks = [
            asyncio.create_task(w.run(), name=f"bus-{name}") for name, w in self.workers.items()
        ]
        self.tasks += [
            asyncio.create_task(self._schedule(task), name=f"task-{task.name}")
            for task in cfg.tasks
        ]

    async def stop(self) -> None:
        for w in self.workers.values():
            w.drain("daemon stopping")
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self.tasks = []

    async def reload(self, config: Config) -> None:
        await self.stop()
        await self.apply(config)
        self.start()

    # ------------------------------------------------------------------ meters by command
    async def add_meter(self, address: str, bus: str, group: str, area: str | None) -> None:
        """Add a DL/T 645 meter to a bus (a signed command); it is polled from the current
        slot on and kept across restarts. Raises ValueError with the reason."""
        await self.roster.add(self.config, address, bus, group, area)
        await self._meters_changed()

    async def remove_meter(self, address: str) -> None:
        await self.roster.remove(self.config, address)
        await self._meters_changed()

    async def _meters_changed(self) -> None:
        await self.reload(self.config)
        log.info("meters changed by command: %d configured", len(self.config.meters))

    # ------------------------------------------------------------------ the archive
    async def apply_archive(
        self, version: int, meters: list[str], command: str
    ) -> dict[str, object]:
        """Keep the archive the receiver downloaded (a signed ``archive`` command) and
        poll by it from now on; ValueError when it is older than the one in force."""
        result = await self.guard.apply(version, meters, command, self.clock.wall(), self.config)
        await self.reload(self.config)
        return result

    async def set_commissioning(self, word: Word, by: object) -> dict[str, object]:
        """Commissioning on, off, or as the config file says: an event, then polling
        follows (a stop and a start)."""
        before = self.guard.commissioning
        await self.guard.set_word(word)
        after = self.guard.commissioning
        self.writer.event(
            Event(
                "commissioning",
                "warning" if after else "info",
                None,
                {"word": word, "from": before, "to": after, "by": by},
                self.clock.wall(),
            )
        )
        log.warning("commissioning %s (%s)", "on" if after else "off", word)
        self._refused_noted = []  # say again what the new mode refuses
        await self.reload(self.config)
        return self.guard.status(self.config)

    def archive_status(self) -> dict[str, object]:
        return self.guard.status(self.config)

    def _note_refused(self) -> None:
        """An ``archive_refused`` event naming the configured meters the archive leaves
        out (not polled), whenever that list changes."""
        refused = self.guard.refused(self.config)
        if refused == self._refused_noted:
            return
        self._refused_noted = refused
        if not refused:
            return
        archive = self.guard.archive
        log.warning(
            "not polling %d configured meter(s) outside the archive: %s",
            len(refused), ", ".join(refused[:10]) + (" ..." if len(refused) > 10 else ""),
        )  # fmt: skip
        self.writer.event(
            Event(
                "archive_refused",
                "warning",
                refused[0] if len(refused) == 1 else None,
                {
                    "meters": refused,
                    "archive_version": None if archive is None else archive.version,
                    "reason": "not in the archive the receiver downloaded (commissioning off)",
                },
                self.clock.wall(),
            )
        )

    # ------------------------------------------------------------------ scheduling
    async def _schedule(self, task: TaskConfig) -> None:
        tz = self.config.concentrator.tzinfo
        period = task.every.period_s
        key = f"task:{task.name}:last_slot"
        saved = await self.writer.read_state(key)
        last: int | None = int(saved) if saved is not None else None
        if last is not None:
            current = task.every.slot_start(self.clock.wall(), tz)
            # Earlier slots may have unread meters too, their late reads cut off by the
            # kill: the slot before `last` (killed after the new slot's state was
            # written) and, after a wall-clock step, slots further back than `last`.
            # A slot that was polled at all (something stored or missing) is completed
            # with missing records; one never polled is left alone.
            for slot in range(min(last, current) - LOOKBACK_SLOTS * period, current, period):
                if slot != last:
                    await self._unfinished(task, slot, only_if_polled=True)
            if current > last:
                await self._unfinished(task, last)
            elif current == last:
                # Restarted inside the slot it was polling: read what is not stored yet.
                await self._start_slot(task, last)
            # current < last: the clock was stepped back; `last` comes round again.
        while True:
            now = self.clock.wall()
            slot = task.every.slot_start(now, tz)
            if slot != last:
                if last is not None and slot > last + period:
                    self._skipped(
                        task,
                        last + period,
                        slot,
                        "no poll in this slot (daemon down or wall clock stepped forward)",
                    )
                await self._start_slot(task, slot)
                # Through the writer, in its order: on disk only after the records queued
                # before it (the skipped slots' missing records), also on a full disk.
                self.writer.set_state(key, str(slot))
                last = slot
            remaining = slot + period - self.clock.wall()
            await self.clock.sleep_wall(min(max(remaining, 0.0), NAP_REAL_S * self.clock.scale))

    async def _unfinished(
        self, task: TaskConfig, slot: int, *, only_if_polled: bool = False
    ) -> None:
        """The slot the daemon was polling when it stopped (a crash, a kill, a power cut)
        has ended meanwhile: whatever it had not read yet is recorded missing, so that
        every scheduled reading is either stored or accounted for. With
        ``only_if_polled``, a slot with nothing stored or missing was never polled (the
        first start came later) and is left alone."""
        have = await self.stored_at(slot)
        known = await self.writer.query(lambda store: store.missing(None, None, slot, slot + 1))
        have |= {(m.meter, m.quantity) for m in known}  # a failure already has its reason
        if only_if_polled and not have:
            return
        reason = "daemon stopped during this slot"
        for meter in self._meters_for(task):
            names = [n for q in task.quantities for n in stored_names(meter, q)]
            if all((meter.address, n) in have for n in names):
                continue
            if is_freeze_task(task, meter) and task.backfill:
                self.backfill.note(meter.address, task.name, slot)
            for name in names:
                if (meter.address, name) not in have:
                    self.writer.missing(meter.address, name, slot, reason)
                    self.load.note()

    def _skipped(self, task: TaskConfig, first: int, end: int, reason: str) -> None:
        self.load.note()
        period = task.every.period_s
        first = max(first, end - MAX_SKIPPED_SLOTS * period)
        for slot in range(first, end, period):
            for meter in self._meters_for(task):
                for q in task.quantities:
                    for name in stored_names(meter, q):
                        self.writer.missing(meter.address, name, slot, reason)
                if is_freeze_task(task, meter) and task.backfill:
                    self.backfill.note(meter.address, task.name, slot)

    def _meters_for(self, task: TaskConfig) -> list[MeterConfig]:
        return [
            m for m in self.config.meters if task.applies_to(m) and self.guard.allows(m.address)
        ]

    async def _start_slot(self, task: TaskConfig, slot: int) -> None:
        self.slots_started += 1
        end = slot + task.every.period_s
        deadline = self.clock.monotonic() + (end - self.clock.wall()) / self.clock.scale
        have = await self.stored_at(slot)
        for meter in self._meters_for(task):
            todo = [
                q
                for q in task.quantities
                if any((meter.address, n) not in have for n in stored_names(meter, q))
            ]
            if todo:
                self.submit_read(task, meter, todo, slot, deadline)

    async def stored_at(self, slot: int) -> set[tuple[str, str]]:
        """(meter, quantity) of every reading stored for ``slot``."""
        return await self.writer.query(
            lambda store: {
                (r.reading.meter, r.reading.quantity)
                for r in store.get_readings(since=slot, until=slot + 1)
            }
        )

    def submit_read(
        self,
        task: TaskConfig,
        meter: MeterConfig,
        quantities: Sequence[str],
        slot: int,
        deadline: float,
        *,
        priority: Priority = Priority.POLL,
        source: str = "poll",
        future: asyncio.Future[list[QuantityValue]] | None = None,
    ) -> None:
        worker = self.workers.get(meter.bus)
        if worker is None:
            return
        freeze_day = None
        if is_freeze_task(task, meter):
            freeze_day = dt.datetime.fromtimestamp(slot, self.config.concentrator.tzinfo).date()
        if priority == Priority.POLL and freeze_day is not None:
            priority = Priority.FREEZE
        offline = self.health.get(meter.address).state == Health.OFFLINE
        # A carrier channel has its own retry budget: its links fail often and briefly.
        retries = worker.config.retries if worker.config.type == "plc" else task.retries
        worker.submit(
            Job(
                priority=priority,
                deadline=deadline,
                seq=0,
                meter=meter,
                quantities=list(quantities),
                slot=slot,
                retries_left=0 if offline else retries,
                backoff=task.retry_backoff_s,
                source=source,
                freeze_day=freeze_day,
                future=future,
            )
        )

    def _missing(self, job: Job, reason: str) -> None:
        if job.slot is None:
            return
        self.load.note()
        for q in job.quantities:
            for name in stored_names(job.meter, q):
                self.writer.missing(job.meter.address, name, job.slot, reason)
        if job.freeze_day is not None and job.source != "backfill":
            task = next(
                (
                    t
                    for t in self.config.tasks
                    if set(job.quantities) <= set(t.quantities)
                    and t.applies_to(job.meter)
                    and t.backfill
                    and is_freeze_task(t, job.meter)
                ),
                None,
            )
            if task is not None:
                self.backfill.note(job.meter.address, task.name, job.slot)

    def _health_changed(self, meter: str, old: Health, new: Health, reason: str | None) -> None:
        log.log(
            logging.WARNING if new == Health.OFFLINE else logging.INFO,
            "meter %s: %s -> %s%s",
            meter,
            old.value,
            new.value,
            f" ({reason})" if reason else "",
            extra={"meter": meter, "bus": self._meter_bus.get(meter), "event": "meter_state"},
        )
        severity = "warning" if new != Health.ONLINE else "info"
        self.writer.event(
            Event(
                "meter_state",
                severity,
                meter,
                {"from": old.value, "to": new.value, "reason": reason},
                self.clock.wall(),
            )
        )
        if new == Health.ONLINE:
            self.backfill.start(meter)
            sweep = asyncio.get_running_loop().create_task(self.load.sweep(meter))
            self._sweeps.add(sweep)
            sweep.add_done_callback(self._sweeps.discard)

    # ------------------------------------------------------------------ on demand
    async def read_now(
        self, address: str, quantities: Sequence[str], within_s: float = 60.0
    ) -> list[QuantityValue]:
        """Read a meter ahead of every scheduled poll on its bus (not stored)."""
        meter = next((m for m in self.config.meters if m.address == address), None)
        if meter is None:
            raise KeyError(f"meter {address} is not in the configuration")
        fut: asyncio.Future[list[QuantityValue]] = asyncio.get_running_loop().create_future()
        self.workers[meter.bus].submit(
            Job(
                priority=Priority.ONDEMAND,
                deadline=self.clock.monotonic() + within_s,
                seq=0,
                meter=meter,
                quantities=list(quantities),
                slot=None,
                retries_left=1,
                source="ondemand",
                future=fut,
            )
        )
        # A job cancelled in flight (a reload) never answers: the caller must not hang.
        async with asyncio.timeout(within_s + JOB_ANSWER_GRACE_S):
            return await fut

    async def run_on_bus(
        self, target: MeterConfig, action: BusAction, within_s: float = 60.0
    ) -> list[QuantityValue]:
        """Run a command (relay, broadcast time) on ``target``'s bus ahead of every
        scheduled poll, between two transactions; ``target`` may be the broadcast address."""
        fut: asyncio.Future[list[QuantityValue]] = asyncio.get_running_loop().create_future()
        self.workers[target.bus].submit(
            Job(
                priority=Priority.ONDEMAND,
                deadline=self.clock.monotonic() + within_s,
                seq=0,
                meter=target,
                quantities=[],
                slot=None,
                source="ondemand",
                future=fut,
                action=action,
            )
        )
        # A job cancelled in flight (a reload) never answers: the caller must not hang.
        async with asyncio.timeout(within_s + JOB_ANSWER_GRACE_S):
            return await fut

    async def backfill_freezes(self, address: str, days: Sequence[dt.date]) -> DayPlan:
        """Read the daily freezes of ``days`` back from the meter (`FreezeBackfill.days`)."""
        return await self.backfill.days(address, days)

    # ------------------------------------------------------------------ status
    def busy(self, bus: str) -> bool:
        """Whether ``bus`` has a job on the line right now."""
        worker = self.workers.get(bus)
        return worker is not None and worker.in_flight is not None

    def bus_status(self) -> dict[str, dict[str, object]]:
        return {name: w.status() for name, w in self.workers.items()}
