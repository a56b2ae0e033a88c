"""The concentrator daemon: schedule reading tasks on wall-clock slots, poll every bus in
parallel, and keep every reading in the store.

Shape (style.md, "The daemon is small supervised tasks"): one scheduler task per reading
task, one worker per bus, one store writer, one housekeeping task; the ``Daemon`` object
starts them, restarts them on SIGHUP with the new config, and stops them on SIGTERM
after the readings already taken are committed.

Time: a slot is a wall-clock boundary in the configured timezone. The schedulers look
at the wall clock at least once a (real) second, so a stepped clock is noticed at once:
a forward step records the slots it skipped as missing (daily freezes are backfilled),
a backward step does not re-read slots that are already stored, and neither stalls.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import os
import signal
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from concentrator import __version__
from concentrator.clock import Clock, SystemClock
from concentrator.command_runner import CommandRunner
from concentrator.config import Config, ConfigError, MeterConfig, TaskConfig, load_config
from concentrator.control import ControlServer
from concentrator.health import Health, HealthTracker
from concentrator.plc_worker import PlcWorker
from concentrator.poller import (
    FREEZE_QUANTITIES,
    BusAction,
    BusWorker,
    Job,
    Priority,
    stored_names,
)
from concentrator.sdnotify import SdNotifier
from concentrator.storage import Store, StoreError, StoreFullError, StoreWriter
from concentrator.update.updater import Updater
from concentrator.uplink.modem import ModemSupervisor
from concentrator.uplink.mqtt import Uplink
from contract.records import Event
from drivers.readers import QuantityValue

log = logging.getLogger(__name__)

NAP_REAL_S = 1.0  # how often (real seconds) a scheduler re-reads the wall clock
# Every bus transaction has a timeout far below these; only a wedged task gets there.
HUNG_JOB_S = 300.0  # real seconds one job may run on a bus
HUNG_STORE_S = 120.0  # real seconds a store call may wait (SQLite's busy timeout is 5 s)
MAX_SKIPPED_SLOTS = 96 * 7  # slots recorded missing after an outage, at most
STATUS_EVERY_REAL_S = 2.0
BACKFILL_WINDOW_S = 62 * 86400  # DL/T 645 meters hold 62 daily freezes
FLUSH_TIMEOUT_S = 30.0  # at shutdown, how long to wait for the last commits
LOOKBACK_SLOTS = 12  # at a restart, earlier slots checked for meters left unaccounted
JOB_ANSWER_GRACE_S = 120.0  # an on-demand job may run this long after it started
# Meters added or removed by the utility's signed commands, kept in the store and laid
# over the config file at every start and reload: {"added": [{...}], "removed": [...]}.
REMOTE_METERS_KEY = "commands:meters"


@dataclass
class SlotPlan:
    task: TaskConfig
    slot: int
    deadline: float  # monotonic


class Daemon:
    def __init__(
        self,
        config_path: Path,
        *,
        clock: Clock | None = None,
        status_path: Path | None = None,
        control_socket: Path | None = None,
    ) -> None:
        self.config_path = config_path
        self.clock = clock or SystemClock()
        self.config: Config = load_config(config_path)
        self.control = ControlServer(
            self, control_socket or self.config.concentrator.control_socket
        )
        self.updater: Updater | None = None
        self.exit_code = 0  # EXIT_SWITCH: the updater installed a release to switch to
        self.modem: ModemSupervisor | None = None
        self.notifier = SdNotifier()
        self.uplink: Uplink | None = None
        self.commands: CommandRunner | None = None
        self.status_path = status_path or self.config.storage.path.with_suffix(".status.json")
        self.store: Store | None = None
        self.writer: StoreWriter | None = None
        self.health = HealthTracker(self._health_changed)
        self.workers: dict[str, BusWorker] = {}
        self._meter_bus: dict[str, str] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._core: list[asyncio.Task[None]] = []
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self._backfill: dict[str, set[tuple[str, int]]] = {}  # meter -> {(task, slot)}
        self.started_wall = self.clock.wall()
        self.started_mono = self.clock.monotonic()
        self.slots_started = 0
        self.failure: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle
    async def run(self, *, install_signals: bool = True) -> None:
        """Run until SIGTERM/SIGINT (or ``stop()``); SIGHUP reloads the config."""
        loop = asyncio.get_running_loop()
        handlers = (
            (signal.SIGTERM, self.stop),
            (signal.SIGINT, self.stop),
            (signal.SIGHUP, self._reload.set),
        )
        for sig, handler in handlers if install_signals else ():
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, handler)
        await self.start()
        self.notifier.ready(
            f"polling {len(self.config.meters)} meters on {len(self.config.buses)} buses"
        )
        try:
            while not self._stop.is_set():
                reload_wait = asyncio.create_task(self._reload.wait())
                stop_wait = asyncio.create_task(self._stop.wait())
                await asyncio.wait({reload_wait, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
                reload_wait.cancel()
                stop_wait.cancel()
                if self._reload.is_set() and not self._stop.is_set():
                    self._reload.clear()
                    self.notifier.reloading()
                    await self.reload()
                    self.notifier.ready()
        finally:
            await self.shutdown()

    def stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        """Start a supervised task: if it dies, the daemon stops and exits non-zero, so
        systemd restarts it, rather than limping on with a dead bus or writer."""
        task = asyncio.create_task(coro, name=name)

        def done(t: asyncio.Task[None]) -> None:
            if t.cancelled():
                return
            exc = t.exception()
            if exc is not None:
                log.critical("task %s died: %r", name, exc, exc_info=exc)
                self.failure = self.failure or exc
                self.stop()

        task.add_done_callback(done)
        return task

    async def start(self) -> None:
        cfg = self.config
        quota = cfg.storage.quota_mb * 1024 * 1024 if cfg.storage.quota_mb else None
        self.store = Store.open(
            cfg.storage.path,
            synchronous=cfg.storage.synchronous,
            quota_bytes=quota,
            retention_s=cfg.storage.retention_days * 86400,
        )
        self.writer = StoreWriter(self.store, now=self.clock.wall)
        self.config = await self._with_remote_meters(self.config)
        problems = await self.writer.call(self.store.integrity_check)
        if problems:
            self.writer.event(
                Event(
                    "store_integrity",
                    "critical",
                    None,
                    {"problems": problems[:20]},
                    self.clock.wall(),
                )
            )
        # Batches in flight when the process died go out again (the uplink resends them).
        try:
            await self.writer.call(self.store.enforce_quota, self.clock.wall())
        except StoreFullError as exc:  # started on a full disk: poll, hold, retry
            log.error("store full at start-up; polling on, readings held in memory: %s", exc)
        self._core = [
            self._spawn(self.writer.run(), "store-writer"),
            self._spawn(self._housekeeping(), "housekeeping"),
        ]
        self.writer.event(
            Event(
                "daemon_start",
                "info",
                None,
                {"version": __version__, "pid": os.getpid()},
                self.clock.wall(),
            )
        )
        if cfg.uplink is not None:
            key = cfg.uplink.command_key()
            if key is not None:
                self.commands = CommandRunner(self, key)
                self._core.append(self._spawn(self.commands.run(), "commands"))
            self.uplink = Uplink(
                cfg.uplink,
                cfg.concentrator.id,
                self.store,
                self.writer,
                on_command=self.commands.submit if self.commands is not None else None,
            )
            if cfg.update is not None:
                self.updater = Updater(self, cfg.update)
                self.uplink.on_package = self.updater.on_chunk
            self._core.append(self._spawn(self.uplink.run(), "uplink"))
            if self.updater is not None:
                await self.updater.resume()
                await self.updater.report()
        self._core.append(self._spawn(self.control.run(), "control"))
        if cfg.modem is not None:
            writer = self.writer
            self.modem = ModemSupervisor(
                cfg.modem,
                on_event=lambda e: writer.event(e.to_store_event()),
                clock=self.clock,
            )
            self._core.append(self._spawn(self.modem.run(), "modem"))
        if self.notifier.watchdog_s is not None:
            # Fed only while every bus, the store and the core tasks really work.
            self._core.append(self._spawn(self.notifier.keepalive(self._feed_watchdog), "watchdog"))
        self._start_pollers()
        log.info(
            "concentrator %s polling %d meters on %d buses",
            cfg.concentrator.id,
            len(cfg.meters),
            len(cfg.buses),
        )

    def _start_pollers(self) -> None:
        cfg = self.config
        assert self.writer is not None
        tz = cfg.concentrator.tzinfo
        self.workers = {}
        for b in cfg.buses:
            if b.type == "plc":
                self.workers[b.name] = PlcWorker(
                    b,
                    meters=[m for m in cfg.meters if m.bus == b.name],
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
        self._tasks = [
            asyncio.create_task(w.run(), name=f"bus-{name}") for name, w in self.workers.items()
        ]
        self._tasks += [
            asyncio.create_task(self._schedule(task), name=f"task-{task.name}")
            for task in cfg.tasks
        ]

    async def _stop_pollers(self) -> None:
        for w in self.workers.values():
            w.drain("daemon stopping")
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []

    async def reload(self) -> None:
        try:
            new = load_config(self.config_path)
        except ConfigError as exc:
            log.error("config reload refused, keeping the running config:\n%s", exc)
            assert self.writer is not None
            self.writer.event(
                Event(
                    "config_reload_failed",
                    "warning",
                    None,
                    {"issues": [str(i) for i in exc.issues][:50]},
                    self.clock.wall(),
                )
            )
            return
        if new.storage.path != self.config.storage.path:
            log.warning("storage.path changed; it takes effect at the next restart")
        await self._stop_pollers()
        self.config = await self._with_remote_meters(new)
        self._start_pollers()
        assert self.writer is not None
        self.writer.event(
            Event(
                "config_reloaded",
                "info",
                None,
                {"meters": len(new.meters), "buses": len(new.buses)},
                self.clock.wall(),
            )
        )
        log.info("config reloaded: %d meters on %d buses", len(new.meters), len(new.buses))

    # ------------------------------------------------------------------ remote meters
    async def _remote_meters(self) -> dict[str, Any]:
        assert self.writer is not None and self.store is not None
        saved = await self.writer.call(self.store.get_state, REMOTE_METERS_KEY)
        doc: dict[str, Any] = json.loads(saved) if saved else {"added": [], "removed": []}
        return doc

    async def _with_remote_meters(self, config: Config) -> Config:
        doc = await self._remote_meters()
        removed = set(doc["removed"])
        meters = [m for m in config.meters if m.address not in removed]
        known = {m.address for m in meters}
        buses = {b.name for b in config.buses}
        for spec in doc["added"]:
            if spec["address"] in known or spec["bus"] not in buses:
                continue  # the config file has it now, or lost its bus: the file wins
            meters.append(MeterConfig(spec["address"], "dlt645", spec["bus"], spec["group"],
                                      spec.get("area")))  # fmt: skip
        return replace(config, meters=tuple(meters))

    async def add_meter(self, address: str, bus: str, group: str, area: str | None) -> None:
        """Add a DL/T 645 meter to a bus (a signed command); it is polled from the current
        slot on and kept across restarts. Raises ValueError with the reason."""
        if any(m.address == address for m in self.config.meters):
            raise ValueError(f"meter {address} is already configured")
        bus_cfg = next((b for b in self.config.buses if b.name == bus), None)
        if bus_cfg is None:
            names = ", ".join(b.name for b in self.config.buses)
            raise ValueError(f"no bus named {bus!r} (buses: {names})")
        doc = await self._remote_meters()
        doc["removed"] = [a for a in doc["removed"] if a != address]
        doc["added"] = [a for a in doc["added"] if a["address"] != address]
        doc["added"].append({"address": address, "bus": bus, "group": group, "area": area})
        await self._change_meters(doc)

    async def remove_meter(self, address: str) -> None:
        if not any(m.address == address for m in self.config.meters):
            raise ValueError(f"meter {address} is not configured")
        doc = await self._remote_meters()
        doc["added"] = [a for a in doc["added"] if a["address"] != address]
        if address not in doc["removed"]:
            doc["removed"].append(address)
        await self._change_meters(doc)

    async def _change_meters(self, doc: dict[str, Any]) -> None:
        assert self.writer is not None and self.store is not None
        await self.writer.call(self.store.set_state, REMOTE_METERS_KEY, json.dumps(doc))
        await self._stop_pollers()
        self.config = await self._with_remote_meters(self.config)
        self._start_pollers()
        log.info("meters changed by command: %d configured", len(self.config.meters))

    async def shutdown(self) -> None:
        self.notifier.stopping()
        await self.control.close()  # no new requests; streams get their final line
        await self._stop_pollers()
        if self.writer is not None:
            self.writer.event(Event("daemon_stop", "info", None, {}, self.clock.wall()))
            if self._core and not self._core[0].done():
                try:
                    async with asyncio.timeout(FLUSH_TIMEOUT_S):
                        await self.writer.flush()
                except TimeoutError:
                    log.error("store did not accept the last %d readings", self.writer.pending)
            self._write_status()
            for t in self._core:
                t.cancel()
            for t in self._core:
                with contextlib.suppress(asyncio.CancelledError):
                    await t
            self.writer.close()
        if self.store is not None:
            self.store.close()
            self.store = None

    # ------------------------------------------------------------------ scheduling
    async def _schedule(self, task: TaskConfig) -> None:
        assert self.writer is not None and self.store is not None
        tz = self.config.concentrator.tzinfo
        period = task.every.period_s
        key = f"task:{task.name}:last_slot"
        saved = await self.writer.call(self.store.get_state, key)
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
        assert self.writer is not None
        have = await self.writer.call(self._stored_at, slot)
        assert self.store is not None
        known = await self.writer.call(self.store.missing, None, None, slot, slot + 1)
        have |= {(m.meter, m.quantity) for m in known}  # a failure already has its reason
        if only_if_polled and not have:
            return
        reason = "daemon stopped during this slot"
        for meter in self._meters_for(task):
            names = [n for q in task.quantities for n in stored_names(meter, q)]
            if all((meter.address, n) in have for n in names):
                continue
            if self._is_freeze_task(task, meter) and task.backfill:
                self._backfill.setdefault(meter.address, set()).add((task.name, slot))
            for name in names:
                if (meter.address, name) not in have:
                    self.writer.missing(meter.address, name, slot, reason)

    def _skipped(self, task: TaskConfig, first: int, end: int, reason: str) -> None:
        assert self.writer is not None
        period = task.every.period_s
        first = max(first, end - MAX_SKIPPED_SLOTS * period)
        for slot in range(first, end, period):
            for meter in self._meters_for(task):
                for q in task.quantities:
                    for name in stored_names(meter, q):
                        self.writer.missing(meter.address, name, slot, reason)
                if self._is_freeze_task(task, meter) and task.backfill:
                    self._backfill.setdefault(meter.address, set()).add((task.name, slot))

    def _meters_for(self, task: TaskConfig) -> list[MeterConfig]:
        return [m for m in self.config.meters if task.applies_to(m)]

    @staticmethod
    def _is_freeze_task(task: TaskConfig, meter: MeterConfig) -> bool:
        return meter.protocol == "dlt645" and set(task.quantities) <= set(FREEZE_QUANTITIES)

    async def _start_slot(self, task: TaskConfig, slot: int) -> None:
        assert self.writer is not None and self.store is not None
        self.slots_started += 1
        end = slot + task.every.period_s
        deadline = self.clock.monotonic() + (end - self.clock.wall()) / self.clock.scale
        have = await self.writer.call(self._stored_at, slot)
        for meter in self._meters_for(task):
            todo = [
                q
                for q in task.quantities
                if any((meter.address, n) not in have for n in stored_names(meter, q))
            ]
            if todo:
                self._submit_read(task, meter, todo, slot, deadline)

    def _stored_at(self, slot: int) -> set[tuple[str, str]]:
        assert self.store is not None
        return {
            (r.reading.meter, r.reading.quantity)
            for r in self.store.get_readings(since=slot, until=slot + 1)
        }

    def _submit_read(
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
        if self._is_freeze_task(task, meter):
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
        assert self.writer is not None
        if job.slot is None:
            return
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
                    and self._is_freeze_task(t, job.meter)
                ),
                None,
            )
            if task is not None:
                self._backfill.setdefault(job.meter.address, set()).add((task.name, job.slot))

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
        if self.writer is not None:
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
            self._start_backfill(meter)

    def _start_backfill(self, address: str) -> None:
        """Recover missed daily freezes from the meter's own history, at low priority."""
        pending = self._backfill.pop(address, set())
        meter = next((m for m in self.config.meters if m.address == address), None)
        if not pending or meter is None:
            return
        tasks = {t.name: t for t in self.config.tasks}
        horizon = self.clock.wall() - BACKFILL_WINDOW_S
        for task_name, slot in sorted(pending):
            task = tasks.get(task_name)
            if task is None or slot < horizon:
                continue
            deadline = self.clock.monotonic() + 86400 / self.clock.scale
            self._submit_read(
                task,
                meter,
                task.quantities,
                slot,
                deadline,
                priority=Priority.BACKFILL,
                source="backfill",
            )

    def _backfill_online(self) -> None:
        """Freezes missed while the meter answers (its bus too busy for the slot, the
        daemon down over 00:05) get no health change to trigger their backfill: start it
        here. A meter that is failing waits for its return to online instead."""
        for address in list(self._backfill):
            if self.health.get(address).state == Health.ONLINE:
                self._start_backfill(address)

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

    async def backfill_freezes(
        self, address: str, days: Sequence[dt.date]
    ) -> list[tuple[dt.date, asyncio.Future[list[QuantityValue]] | str]]:
        """Recover the daily freezes of ``days`` from the meter's history, as the automatic
        backfill does (backfill priority, stored with source "backfill"). Each day gets
        its job's future (values once stored), or why it is not read."""
        assert self.writer is not None
        meter = next((m for m in self.config.meters if m.address == address), None)
        if meter is None:
            raise KeyError(f"meter {address} is not in the configuration")
        task = next(
            (
                t
                for t in self.config.tasks
                if t.applies_to(meter) and self._is_freeze_task(t, meter)
            ),
            None,
        )
        if task is None:
            raise ValueError(f"no daily-freeze task applies to meter {address}")
        tz = self.config.concentrator.tzinfo
        now = self.clock.wall()
        today = dt.datetime.fromtimestamp(now, tz).date()
        deadline = self.clock.monotonic() + 86400 / self.clock.scale
        loop = asyncio.get_running_loop()
        names = {n for q in task.quantities for n in stored_names(meter, q)}
        out: list[tuple[dt.date, asyncio.Future[list[QuantityValue]] | str]] = []
        for day in days:
            midnight = dt.datetime.combine(day, dt.time(), tz).timestamp()
            slot = task.every.slot_start(midnight + task.every.offset_s, tz)
            if day > today:
                out.append((day, "not frozen yet"))
                continue
            if slot < now - BACKFILL_WINDOW_S:
                out.append((day, "older than the 62 daily freezes a meter keeps"))
                continue
            have = {q for m, q in await self.writer.call(self._stored_at, slot) if m == address}
            if names <= have:
                out.append((day, "already stored"))
                continue
            fut: asyncio.Future[list[QuantityValue]] = loop.create_future()
            self._backfill.get(address, set()).discard((task.name, slot))
            self._submit_read(
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

    # ------------------------------------------------------------------ status
    async def _housekeeping(self) -> None:
        assert self.writer is not None and self.store is not None
        last_prune = 0.0
        while True:
            await asyncio.sleep(STATUS_EVERY_REAL_S)
            self._write_status()
            self._backfill_online()
            if self.updater is not None:
                try:
                    await self.updater.report()
                except (OSError, StoreError) as exc:
                    log.warning("cannot report the upgrade outcome: %s", exc)
            if self.modem is not None and self.uplink is not None:
                # An MQTT session that stays down is the modem supervisor's evidence.
                if self.uplink.stats.connected:
                    self.modem.uplink_alive()
                else:
                    self.modem.uplink_dead("MQTT session not connected")
            now = self.clock.wall()
            if now - last_prune > 3600:
                last_prune = now
                with contextlib.suppress(Exception):
                    await self.writer.call(self.store.prune, now)

    def status(self) -> dict[str, Any]:
        buses: dict[str, dict[str, Any]] = {}
        for name, w in self.workers.items():
            st = w.bus.stats
            buses[name] = {
                "transactions": st.transactions,
                "timeouts": st.timeouts,
                "frame_errors": st.frame_errors,
                "utilisation": round(w.utilisation(), 4),
                "queued": w.queued,
                "reads_ok": w.stats.reads_ok,
                "missing": w.stats.missing,
            }
            if isinstance(w, PlcWorker):
                p = w.plc.stats
                buses[name].update(
                    type="plc",
                    transactions=p.requests,
                    timeouts=p.timeouts,
                    frame_errors=p.frame_errors,
                    denies=p.denies,
                    in_flight=len(w.running),
                    window=w.plc.window,
                    module_up=w.module_up.is_set(),
                    module_down_cause=None if w.module_up.is_set() else w.module_down_cause,
                    module=w.module_info,
                )
        return {
            "concentrator": self.config.concentrator.id,
            "version": __version__,
            "pid": os.getpid(),
            "started": self.started_wall,
            "uptime_s": round(self.clock.monotonic() - self.started_mono, 1),
            "wall": self.clock.wall(),
            "meters": self.health.counts(),
            "buses": buses,
            "pending_writes": self.writer.pending if self.writer else 0,
            "readings_committed": self.writer.committed if self.writer else 0,
            "disk_full": self.writer.disk_full if self.writer else False,
            "slots_started": self.slots_started,
            "uplink": self.uplink.status() if self.uplink is not None else None,
            "modem": self.modem.status() if self.modem is not None else None,
            "unhealthy": self.unhealthy(),
        }

    def unhealthy(self) -> str | None:
        """Why the daemon is not doing its work (None when it is): a supervised task
        ended, a bus job has run far longer than any transaction may, or a store call
        has waited far longer than SQLite's busy timeout. The systemd watchdog is fed
        only while this is None, so a wedged bus or store gets the process restarted."""
        for t in self._core:
            if t.done():
                return f"task {t.get_name()} ended"
        for name, w in self.workers.items():
            stuck = w.stuck_s()
            if stuck > HUNG_JOB_S:
                return f"bus {name}: one job has run for {stuck:.0f} s"
        for t in self._tasks:
            if t.done():
                return f"task {t.get_name()} ended"
        if self.writer is not None and self.writer.oldest_call_s() > HUNG_STORE_S:
            return f"store: a call has waited {self.writer.oldest_call_s():.0f} s"
        return None

    def _feed_watchdog(self) -> bool:
        reason = self.unhealthy()
        if reason is not None:
            log.error("not feeding the systemd watchdog: %s", reason)
        return reason is None

    def _write_status(self) -> None:
        tmp = self.status_path.with_suffix(".tmp")
        try:
            tmp.write_text(json.dumps(self.status(), indent=1))
            tmp.replace(self.status_path)
        except OSError as exc:  # a full disk must not stop polling
            log.warning("cannot write status file %s: %s", self.status_path, exc)


def run_daemon(
    config_path: Path,
    *,
    time_scale: float = 1.0,
    control_socket: Path | None = None,
    time_origin: float | None = None,
    clock_step_file: Path | None = None,
) -> None:
    from concentrator.clock import ScaledClock, scaled_start

    clock: Clock = SystemClock()
    if time_scale != 1.0:
        clock = ScaledClock(
            scale=time_scale, start=scaled_start(time_scale, time_origin), step_file=clock_step_file
        )
    daemon = Daemon(config_path, clock=clock, control_socket=control_socket)
    asyncio.run(daemon.run())
    if daemon.failure is not None:
        raise SystemExit(1)
    if daemon.exit_code:
        raise SystemExit(daemon.exit_code)
