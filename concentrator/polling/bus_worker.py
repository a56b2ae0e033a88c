"""One worker per bus: a priority queue of read jobs and exactly one transaction at a time.

RS-485 and PLC are half-duplex, so each bus has one worker that owns its transport. Jobs
are ordered by priority (on-demand reads first, then interval polls, then daily freezes,
then backfill), deadline and arrival; a failed job goes back with a backoff and a
*not-before* time, behind the meters that have not been tried yet, so one silent meter
never blocks its neighbours.
Every deadline is on the monotonic clock. A job past its slot's end is not run: a value
read after its slot would be stamped into the wrong slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import heapq
import itertools
import logging
from collections.abc import Callable

from concentrator.clock import Clock
from concentrator.config import BusConfig
from concentrator.polling import freeze_read, load_read
from concentrator.polling.freeze_read import FreezeNotTaken
from concentrator.polling.health import Health, HealthTracker
from concentrator.polling.jobs import (
    BLOCK_PARTS,
    FREEZE_QUANTITIES,
    BusAction,
    Job,
    Priority,
    WorkerStats,
    expand,
    single,
    stored_names,
)
from concentrator.storage import StoreWriter
from contract.records import Event, Reading
from drivers import dlt645, dlt645_1997
from drivers.errors import BusError, BusTimeout, DriverError, FrameError, MeterError
from drivers.readers import (
    Dlt645Reader,
    Dlt645Transport,
    Dlt698Reader,
    Dlt6451997Reader,
    ModbusReader,
    QuantityValue,
    dlt645_1997_not_supported,
    dlt698_not_supported,
)
from drivers.serial_bus import SerialBus

log = logging.getLogger(__name__)

# A serial port that cannot be opened (a USB adapter unplugged, a wrong device name) is
# tried again after these real seconds, doubling: often enough to notice an adapter
# plugged back in, seldom enough not to fill the log or the CPU.
PORT_RETRY_MIN_S = 1.0
PORT_RETRY_MAX_S = 60.0

# Imported from here by the schedulers, the backfills and the tests: they stay here.
__all__ = [
    "BLOCK_PARTS",
    "FREEZE_QUANTITIES",
    "PORT_RETRY_MAX_S",
    "PORT_RETRY_MIN_S",
    "BusAction",
    "BusWorker",
    "Job",
    "Priority",
    "WorkerStats",
    "stored_names",
]


class BusWorker:
    def __init__(
        self,
        config: BusConfig,
        *,
        clock: Clock,
        writer: StoreWriter,
        health: HealthTracker,
        tz: dt.tzinfo,
        on_missing: Callable[[Job, str], None],
    ) -> None:
        self.config = config
        self.clock = clock
        self.writer = writer
        self.health = health
        self.tz = tz
        self.on_missing = on_missing
        self.bus = SerialBus(config.settings())
        self.stats = WorkerStats()
        self._ready: list[Job] = []
        self._delayed: list[tuple[float, int, Job]] = []
        self._seq = itertools.count()
        self._wake = asyncio.Event()
        self._started = clock.monotonic()
        self.in_flight: Job | None = None
        self._in_flight_since = 0.0
        # The port's state: None while usable; else why not, since when (wall), and
        # when it is tried again (monotonic), with the backoff doubling up to its cap.
        self.port_error: str | None = None
        self._port_down_since = 0.0
        self._port_retry_at = 0.0
        self._port_backoff = PORT_RETRY_MIN_S

    # ------------------------------------------------------------------ queue
    def submit(self, job: Job) -> None:
        job.seq = next(self._seq)
        if job.not_before > self.clock.monotonic():
            heapq.heappush(self._delayed, (job.not_before, job.seq, job))
        else:
            heapq.heappush(self._ready, job)
        self._wake.set()

    def new_seq(self) -> int:
        return next(self._seq)

    @property
    def queued(self) -> int:
        return len(self._ready) + len(self._delayed)

    def usable(self) -> bool:
        """Whether the channel works now (a carrier module says so itself)."""
        return self.port_error is None

    def utilisation(self) -> float:
        elapsed = self.clock.monotonic() - self._started
        return self.bus.stats.busy_s / elapsed if elapsed > 0 else 0.0

    async def _next_job(self) -> Job:
        while True:
            now = self.clock.monotonic()
            while self._delayed and self._delayed[0][0] <= now:
                heapq.heappush(self._ready, heapq.heappop(self._delayed)[2])
            if self._ready:
                return heapq.heappop(self._ready)
            self._wake.clear()
            timeout = self._delayed[0][0] - now if self._delayed else None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()

    def status(self) -> dict[str, object]:
        """This bus's figures for the daemon's status file."""
        st = self.bus.stats
        return {
            "transactions": st.transactions,
            "timeouts": st.timeouts,
            "frame_errors": st.frame_errors,
            "utilisation": round(self.utilisation(), 4),
            "queued": self.queued,
            "reads_ok": self.stats.reads_ok,
            "reads_failed": self.stats.reads_failed,
            "readings": self.stats.readings,
            "missing": self.stats.missing,
            "port_error": self.port_error,
        }

    def stuck_s(self) -> float:
        """Real seconds the job on the bus has been running (0 when idle)."""
        if self.in_flight is None:
            return 0.0
        return self.clock.monotonic() - self._in_flight_since

    def drain(self, reason: str) -> None:
        """Give up every queued job (shutdown, reload): on-demand callers get an error."""
        jobs = [*self._ready, *(j for _, _, j in self._delayed)]
        self._ready.clear()
        self._delayed.clear()
        for job in jobs:
            if job.future is not None and not job.future.done():
                job.future.set_exception(BusError(f"bus {self.config.name}: {reason}"))

    # ------------------------------------------------------------------ run
    async def run(self) -> None:
        try:
            while True:
                job = await self._next_job()
                self.in_flight = job
                self._in_flight_since = self.clock.monotonic()
                try:
                    await self._execute(job)
                finally:
                    self.in_flight = None
        finally:
            await self.bus.close()

    async def _ensure_open(self) -> None:
        if self.bus._transport is None:
            await self.bus.open()

    def _dlt645(self) -> Dlt645Reader:
        return Dlt645Reader(self.bus)

    def _channel(self, protocol: str) -> Dlt645Transport:
        """What a DL/T 698.45 or 645-1997 reader talks through (a carrier module's
        channel names the protocol type of what it forwards)."""
        return self.bus

    async def _execute(self, job: Job) -> None:
        """One read job: the deadline, the store and the caller's future are handled
        here for every kind of channel; what a channel's errors mean is
        `_read_failed`'s business (a carrier module has its own)."""
        self.stats.jobs += 1
        if job.action is not None:
            await self._run_action(job)
            return
        if not await self._ready_for(job):
            return
        if self.clock.monotonic() >= job.deadline:
            self._give_up(job, "slot ended before the meter could be read")
            return
        try:
            await self._prepare()
            if job.freeze_day is not None:
                await self._read_freeze(job)
            elif job.load is not None:
                await self._read_load(job)
            else:
                await self._read_quantities(job)
        except MeterError as exc:
            # The meter refused: retrying the same request will not help.
            self.stats.reads_failed += 1
            self.health.success(job.meter.address, self.clock.wall())  # it did answer
            self._give_up(job, f"meter error: {exc.description}", exc)
            return
        except DriverError as exc:
            if not await self._read_failed(job, exc):
                raise
            return
        self.health.success(job.meter.address, self.clock.wall())
        self._answered()
        if job.future is not None and not job.future.done():
            job.future.set_result(job.done)

    async def _ready_for(self, job: Job) -> bool:
        """Whether the channel can take the job now (True), or put it aside: while the
        port cannot be opened, a scheduled read waits for the next try (its slot
        permitting; else it is recorded missing with the port's error), and a person's
        request tries the port at once and fails with that error if it is still down."""
        if self.port_error is None:
            return True
        if (
            self.clock.monotonic() >= self._port_retry_at or job.future is not None
        ) and await self._reopen():
            return True
        reason = f"serial port {self.config.port} unavailable: {self.port_error}"
        if job.future is not None:
            if not job.future.done():
                job.future.set_exception(BusError(f"bus {self.config.name}: {reason}"))
        elif self._port_retry_at < job.deadline:
            job.not_before = self._port_retry_at
            self.submit(job)
        else:
            self._give_up(job, reason)
        return False

    # ------------------------------------------------------------------ the port
    def _port_failed(self, exc: Exception) -> None:
        """The port could not be opened or was lost: said once, tried again with backoff."""
        now = self.clock.monotonic()
        if self.port_error is None:
            self._port_down_since = self.clock.wall()
            self._port_backoff = PORT_RETRY_MIN_S
            log.warning(
                "bus %s: %s; trying again every %g..%g s until it works",
                self.config.name,
                exc,
                PORT_RETRY_MIN_S,
                PORT_RETRY_MAX_S,
                extra={"bus": self.config.name, "event": "bus_port_down"},
            )
            self.writer.event(
                Event(
                    "bus_port_down",
                    "error",
                    None,
                    {"bus": self.config.name, "port": self.config.port, "error": str(exc)},
                    self.clock.wall(),
                )
            )
        else:
            self._port_backoff = min(self._port_backoff * 2, PORT_RETRY_MAX_S)
        self.port_error = str(exc)
        self._port_retry_at = now + self._port_backoff

    async def _open_for_action(self) -> None:
        """A command is someone waiting: a port that was down is tried at once."""
        if self.port_error is not None and not await self._reopen():
            raise BusError(f"serial port {self.config.port} unavailable: {self.port_error}")
        await self._ensure_open()

    async def _channel_failed(self, exc: BusError) -> None:
        """The transport failed under a command: the port's state, as for a read."""
        self._port_failed(exc)
        await self.bus.close()

    async def _reopen(self) -> bool:
        """One more try at a port that was down; True (and said once) when it opens."""
        await self.bus.close()
        try:
            await self.bus.open()
        except BusError as exc:
            log.debug("bus %s: still unavailable: %s", self.config.name, exc)
            self._port_failed(exc)
            return False
        outage = round(self.clock.wall() - self._port_down_since, 1)
        log.warning(
            "bus %s: serial port %s usable again after %.1f s",
            self.config.name,
            self.config.port,
            outage,
            extra={"bus": self.config.name, "event": "bus_port_back"},
        )
        self.writer.event(
            Event(
                "bus_port_back",
                "info",
                None,
                {"bus": self.config.name, "port": self.config.port, "outage_s": outage},
                self.clock.wall(),
            )
        )
        self.port_error = None
        return True

    async def _prepare(self) -> None:
        await self._ensure_open()

    def _answered(self) -> None:
        """A read went through: the channel works."""

    async def _read_failed(self, job: Job, exc: DriverError) -> bool:
        """Count, judge and retry a failed read; False for an error this channel does
        not expect (a bug: it propagates and stops the worker)."""
        if not isinstance(exc, (BusTimeout, FrameError, FreezeNotTaken, BusError)):
            return False
        if isinstance(exc, BusError):
            # The port, not the meter: no retry spent, no health lost; the job waits for
            # the port's next try (`_ready_for`), within its slot.
            self._port_failed(exc)
            await self.bus.close()
            self.submit(job)
            return True
        self.stats.reads_failed += 1
        if not isinstance(exc, FreezeNotTaken):
            self.health.failure(job.meter.address, str(exc))
        self._retry_or_give_up(job, exc)
        return True

    async def _run_action(self, job: Job) -> None:
        """Run a command once, and hand its outcome to the caller: a command is not
        retried behind the caller's back (a relay may have switched even when its reply
        was lost), and what a failure says about the meter is for the caller to judge."""
        assert job.action is not None and job.future is not None
        future = job.future
        try:
            if self.clock.monotonic() >= job.deadline:
                raise BusTimeout("not run: the bus stayed busy too long")
            await self._open_for_action()
            result = await job.action(self._dlt645())
        except Exception as exc:  # the worker must outlive a failing command
            if isinstance(exc, BusError):
                await self._channel_failed(exc)
            if not future.done():  # the caller may have given up waiting
                future.set_exception(exc)
        else:
            if not future.done():
                future.set_result(result)

    def _retry_or_give_up(self, job: Job, exc: Exception) -> bool:
        """Queue the job again if a retry is left and its slot lasts; True if it was."""
        offline = self.health.get(job.meter.address).state == Health.OFFLINE
        now = self.clock.monotonic()
        delay = job.backoff / self.clock.scale
        if job.retries_left > 0 and not offline and now + delay < job.deadline:
            job.retries_left -= 1
            job.not_before = now + delay
            job.backoff *= 2
            self.submit(job)
            return True
        self._give_up(job, str(exc), exc)
        return False

    def _give_up(self, job: Job, reason: str, exc: Exception | None = None) -> None:
        if job.future is not None:
            if not job.future.done():
                job.future.set_exception(exc or BusTimeout(reason))
            return
        self.stats.missing += len(job.quantities)
        self.on_missing(job, reason)

    # ------------------------------------------------------------------ reading
    def _store(self, job: Job, values: list[QuantityValue]) -> None:
        job.done.extend(values)
        if job.slot is None:
            return
        self.stats.readings += len(values)
        self.writer.add(
            [
                Reading(
                    meter=v.meter,
                    quantity=v.quantity,
                    slot=job.slot,
                    value=v.value,
                    unit=v.unit,
                    read_at=self.clock.wall(),
                    source=job.source,
                )
                for v in values
            ]
        )

    async def _read_quantities(self, job: Job) -> None:
        meter = job.meter
        if meter.protocol == "modbus":
            reader = ModbusReader(self.bus, model=meter.model or "sdm630")
            values = await reader.read_many(meter.address, reader.quantities(job.quantities))
            self.stats.reads_ok += len(values)
            self._store(job, values)
            job.quantities = []
            return
        if meter.protocol == "dlt698":
            await self._read_dlt698(job)
            return
        if meter.protocol == "dlt645-1997":
            await self._read_dlt645_1997(job)
            return
        d = self._dlt645()
        while job.quantities:
            if self.clock.monotonic() >= job.deadline:
                raise BusTimeout("slot ended while reading")
            name = job.quantities[0]
            entry = dlt645.lookup(name)
            try:
                # Stored values are plain numbers; an on-demand caller gets display
                # text, as the direct-mode CLI shows it (a status word as 0x0010).
                value = await d.read(meter.address, entry, numeric=job.slot is not None)
            except MeterError as exc:
                if not exc.code & dlt645.ErrorBits.NO_DATA:
                    raise
                # Not supported by this meter, wherever it stands in the list: record it
                # missing and read the rest (an on-demand caller sees it absent).
                self.on_missing(single(job, name), f"not supported by the meter: {exc.description}")
                job.quantities.pop(0)
                continue
            self.stats.reads_ok += 1
            self._store(job, expand(entry, value))
            job.quantities.pop(0)

    async def _read_dlt698(self, job: Job) -> None:
        """Every quantity of the job in one GET-Request NormalList; what the meter
        refuses as not there (DAR 4, 6) is recorded missing, any other refusal fails
        the read as a 645 error reply does."""
        reader = Dlt698Reader(self._channel("dlt698"))
        quantities = Dlt698Reader.quantities(job.quantities)
        values, refused = await reader.read_many(
            job.meter.address, quantities, numeric=job.slot is not None
        )
        for _name, exc in refused:
            if not dlt698_not_supported(exc):
                raise exc
        self.stats.reads_ok += len(quantities) - len(refused)
        self._store(job, values)
        for name, exc in refused:
            self.on_missing(single(job, name), f"not supported by the meter: {exc.description}")
        job.quantities = []

    async def _read_dlt645_1997(self, job: Job) -> None:
        """One 0x01 read per identifier (1997 has no list read)."""
        reader = Dlt6451997Reader(self._channel("dlt645-1997"))
        while job.quantities:
            if self.clock.monotonic() >= job.deadline:
                raise BusTimeout("slot ended while reading")
            name = job.quantities[0]
            entry = dlt645_1997.lookup(name)
            try:
                values = await reader.read(job.meter.address, entry, numeric=job.slot is not None)
            except MeterError as exc:
                if not dlt645_1997_not_supported(exc):
                    raise
                self.on_missing(single(job, name), f"not supported by the meter: {exc.description}")
                job.quantities.pop(0)
                continue
            self.stats.reads_ok += 1
            self._store(job, values)
            job.quantities.pop(0)

    async def _read_load(self, job: Job) -> None:
        """Missed slots read back from the meter's load curve (`load_read`): stored with
        the job's source ("backfill") under each record's own slot."""
        assert job.load is not None
        got = await load_read.recover(
            self._channel(job.meter.protocol), job.meter, job.load, self.tz
        )
        now = self.clock.wall()
        readings = [
            Reading(job.meter.address, name, slot, text, unit, now, job.source)
            for slot, values in got.values.items()
            for name, (text, unit) in sorted(values.items())
        ]
        self.stats.reads_ok += 1
        self.stats.readings += len(readings)
        self.writer.add(readings)
        job.done.extend(
            QuantityValue(r.meter, r.quantity, str(r.slot), r.value, r.unit, now) for r in readings
        )
        for slot, names in got.not_held.items():  # not tried again (`LoadBackfill.sweep`)
            for name in sorted(names):
                self.writer.missing(job.meter.address, name, slot, load_read.NOT_HELD)
        job.quantities = []

    async def _read_freeze(self, job: Job) -> None:
        """The daily freeze of ``job.freeze_day``: a DL/T 645 meter's searched among its
        last 62, a 698.45 meter asked for the day (both in `freeze_read`)."""
        assert job.freeze_day is not None
        address = job.meter.address
        if job.meter.protocol == "dlt698":
            now = self.clock.wall()
            today = dt.datetime.fromtimestamp(now, self.tz).date()
            got = await freeze_read.read_daily(
                self._channel("dlt698"), address, job.freeze_day, job.quantities, today, now
            )
        else:
            got = await freeze_read.read_daily_645(
                self._dlt645(), address, job.freeze_day, job.quantities
            )
        if got is None:
            self._give_up(job, f"daily freeze of {job.freeze_day} no longer held by the meter")
        else:
            self.stats.reads_ok += 1
            self._store(job, got)
        job.quantities = []
