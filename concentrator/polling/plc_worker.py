"""A power-line carrier channel as one more bus: a Q/GDW 1376.2 module on a UART.

The job queue, priorities, deadlines and stored readings are the RS-485 worker's
(``bus_worker.BusWorker``); what differs is what a carrier channel is like:

- Slow, and parallel only where the module says so. A read takes seconds (routing,
  relays); a module that reports an edition running several reads at once gets up to
  ``max_in_flight`` jobs in the air, a 1376.2-2013 module one (docs/protocols.md §3.6),
  and the transport shrinks the window when the module says it is busy.
- Lossy. A node that does not answer is tried again *later in the slot*, behind the
  nodes not tried yet, up to the bus's ``retries``: one bad link never holds up the rest.
- Two kinds of failure. A meter that does not answer (deny "node did not reply") counts
  against that meter's health. A module that says nothing at all, or denies everything,
  is the channel's failure: no meter is blamed, an event says what happened, reads wait
  for the module (until their slot ends) while a probe asks it for its run mode with
  backoff, and reading resumes, with another event, when it answers again.
- Its own archive. The module routes only to meters in its node table: at start-up,
  after a reload (the worker is rebuilt) and after the module restarts, the table is
  made equal to the config's meters on this bus. A node the module reports discovering
  that the config does not know is an event (the utility's archive is wrong, or a meter
  was fitted without paperwork).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Sequence

from concentrator.clock import Clock
from concentrator.config import BusConfig, MeterConfig
from concentrator.polling.bus_worker import BusWorker, Job
from concentrator.polling.freeze_read import FreezeNotTaken
from concentrator.polling.health import HealthTracker
from concentrator.storage import StoreWriter
from contract.records import Event
from drivers import gdw1376_2 as gdw
from drivers.errors import (
    BusError,
    CarrierBusy,
    CarrierDenied,
    CarrierReset,
    CarrierTimeout,
    DriverError,
    FrameError,
    NodeNoReply,
    NodeNotInRoute,
)
from drivers.plc_bus import ModuleIdentity, ModuleRestarted, Plc645Channel, PlcBus, plc_reader
from drivers.readers import Dlt645Reader, Dlt645Transport

log = logging.getLogger(__name__)

# The protocol type a carrier module is told for each meter (Q/GDW 1376.2: 11 F1, 13 F1).
PLC_PROTOCOL_TYPES = {
    "dlt645": gdw.ProtocolType.DLT645_2007,
    "dlt645-1997": gdw.ProtocolType.DLT645_1997,
    "dlt698": gdw.ProtocolType.DLT698_45,
}

BUSY_RETRY_S = 1.0  # wall seconds before a read the module was too busy for goes again
PROBE_MIN_S = 2.0  # wall seconds between probes of a silent module, doubling ...
PROBE_MAX_S = 60.0  # ... up to this


class PlcWorker(BusWorker):
    def __init__(
        self,
        config: BusConfig,
        *,
        meters: Sequence[MeterConfig],
        clock: Clock,
        writer: StoreWriter,
        health: HealthTracker,
        tz: dt.tzinfo,
        on_missing: Callable[[Job, str], None],
        on_event: Callable[[Event], None],
    ) -> None:
        super().__init__(
            config, clock=clock, writer=writer, health=health, tz=tz, on_missing=on_missing
        )
        self.meters = {m.address: m for m in meters}
        self.on_event = on_event
        self.plc = PlcBus(config.plc_settings(clock.scale))
        self.running: set[asyncio.Task[None]] = set()
        self.module_up = asyncio.Event()
        self.module_down_since: float | None = None  # wall time
        self.module_down_cause = ""
        self.module_info: dict[str, object] = {}
        self._probe: asyncio.Task[None] | None = None
        self._resync = asyncio.Event()
        self._unknown_reported: set[str] = set()
        self._mismatches: set[tuple[str, object, object]] = set()
        self._busy_s = 0.0
        self._started_at: dict[object, float] = {}  # jobs in the air: monotonic start

    # ------------------------------------------------------------------ events
    def _event(self, kind: str, severity: str, detail: dict[str, object]) -> None:
        self.on_event(
            Event(kind, severity, None, {"bus": self.config.name, **detail}, self.clock.wall())
        )

    def _module_failed(self, cause: str) -> None:
        """The module itself is not working: blame no meter, probe until it answers."""
        if self.module_up.is_set() or self.module_down_since is None:
            self.module_up.clear()
            self.module_down_since = self.clock.wall()
            self.module_down_cause = cause
            log.warning("bus %s: carrier module not working: %s", self.config.name, cause)
            self._event("plc_module_down", "error", {"cause": cause})
        if self._probe is None or self._probe.done():
            self._probe = asyncio.create_task(self._probe_until_up(), name="plc-probe")

    def _module_answered(self) -> None:
        if self.module_up.is_set():
            return
        down = self.module_down_since
        self.module_up.set()
        self.module_down_since = None
        if down is not None:
            outage = round(self.clock.wall() - down, 1)
            log.warning("bus %s: carrier module back after %.1f s", self.config.name, outage)
            self._event(
                "plc_module_back",
                "info",
                {"outage_s": outage, "cause": self.module_down_cause},
            )

    # ------------------------------------------------------------------ module
    async def _ensure_open(self) -> None:
        if self.plc._transport is None:
            await self.plc.open()

    def _dlt645(self) -> Dlt645Reader:
        return plc_reader(self.plc)

    def _channel(self, protocol: str) -> Dlt645Transport:
        # Q/GDW 1376.2 AFN 13 F1 names the protocol of the frame it forwards.
        return Plc645Channel(self.plc, protocol=PLC_PROTOCOL_TYPES[protocol])

    async def _start_module(self) -> None:
        """Open the port, learn the module, and make its node table the config's."""
        await self._ensure_open()
        identity = await self.plc.identify()
        try:
            vendor = await self.plc.vendor_info()
            self.module_info = {
                "vendor": vendor.vendor,
                "chip": vendor.chip,
                "version": vendor.version,
            }
        except CarrierDenied:
            self.module_info = {}  # optional for a module; routing does not need it
        self._identified(identity)
        await self._sync_routes()
        self._module_answered()

    def _identified(self, identity: ModuleIdentity) -> None:
        """Record who the module is; a configured address or mode it contradicts is an
        event (the configured one is used: docs/protocols.md §3.1, §3.4)."""
        run_mode = identity.run_mode
        self.module_info.update(
            master_address=identity.master_address,
            comm_mode=identity.mode,
            concurrent=identity.concurrent,
            window=identity.window,
        )
        if run_mode is not None:
            self.module_info["monitor_timeout_s"] = run_mode.monitor_timeout_s
        for key, configured, reported in (
            ("master_address", self.config.master_address, identity.reported_address),
            ("comm_mode", self.config.comm_mode, identity.reported_mode),
        ):
            told = (key, configured, reported)
            if configured is not None and reported is not None and configured != reported:
                if told in self._mismatches:
                    continue  # once per worker, not at every probe
                self._mismatches.add(told)
                self._event(
                    "plc_config_mismatch",
                    "warning",
                    {"key": key, "configured": configured, "module": reported},
                )
        if self.config.max_in_flight > identity.window:
            log.warning(
                "bus %s: the module reads one meter at a time (1376.2-2013): max_in_flight "
                "%d not used",
                self.config.name,
                self.config.max_in_flight,
            )

    async def _sync_routes(self) -> None:
        table = {n.address for n in await self.plc.route_table()}
        want = set(self.meters)
        add, remove = sorted(want - table), sorted(table - want)
        if add:
            await self.plc.add_nodes(
                gdw.SlaveNode(a, PLC_PROTOCOL_TYPES[self.meters[a].protocol]) for a in add
            )
        if remove:
            await self.plc.delete_nodes(remove)
        self._event(
            "plc_routes_synced",
            "info",
            {"nodes": len(want), "added": add[:50], "removed": remove[:50]},
        )

    async def _probe_until_up(self) -> None:
        delay = PROBE_MIN_S
        while not self.module_up.is_set():
            await self.clock.sleep_wall(delay)
            try:
                if self.plc._lost is not None or self.plc._transport is None:
                    await self.plc.close()
                await self._start_module()
            except (DriverError, OSError) as exc:
                log.info("bus %s: carrier module still down: %s", self.config.name, exc)
                delay = min(delay * 2, PROBE_MAX_S)

    async def _watch_reports(self) -> None:
        async for report in self.plc.reports():
            if isinstance(report, gdw.NodeReport):
                for node in report.nodes:
                    if node.address in self.meters or node.address in self._unknown_reported:
                        continue
                    self._unknown_reported.add(node.address)
                    self._event(
                        "plc_unknown_meter",
                        "warning",
                        {"address": node.address, "protocol": node.protocol},
                    )
            elif isinstance(report, ModuleRestarted):
                self._event("plc_module_reset", "warning", {})
                self._resync.set()
            elif isinstance(report, gdw.RouteChange):
                self._event("plc_route_status", "info", {"task": report.task})

    async def _keep_routes(self) -> None:
        """After a module restart its node table may be empty: rebuild it."""
        while True:
            await self._resync.wait()
            self._resync.clear()
            try:
                await self._sync_routes()
            except (DriverError, OSError) as exc:
                self._module_failed(f"node table after a restart: {exc}")

    # ------------------------------------------------------------------ run
    def utilisation(self) -> float:
        """Share of the in-flight window in use since start."""
        elapsed = self.clock.monotonic() - self._started
        window = max(self.plc.window, 1)
        return self._busy_s / (elapsed * window) if elapsed > 0 else 0.0

    async def run(self) -> None:
        helpers = [
            asyncio.create_task(self._watch_reports(), name="plc-reports"),
            asyncio.create_task(self._keep_routes(), name="plc-routes"),
        ]
        try:
            try:
                await self._start_module()
            except (DriverError, OSError) as exc:
                self._module_failed(f"at start-up: {exc}")
            while True:
                while len(self.running) >= max(self.plc.window, 1):
                    await asyncio.wait(self.running, return_when=asyncio.FIRST_COMPLETED)
                job = await self._next_job()
                self.in_flight = job
                task = asyncio.create_task(self._run_job(job))
                self.running.add(task)
                task.add_done_callback(self.running.discard)
        finally:
            for t in [*self.running, *helpers, *([self._probe] if self._probe else [])]:
                t.cancel()
            for t in [*self.running, *helpers]:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
            await self.plc.close()

    async def _run_job(self, job: Job) -> None:
        started = self.clock.monotonic()
        token = object()
        self._started_at[token] = started
        try:
            await self._execute(job)
        except Exception:  # a bug must not kill the channel: log, count the job missing
            log.exception("bus %s: job for %s failed", self.config.name, job.meter.address)
            self._give_up(job, "internal error")
        finally:
            del self._started_at[token]
            self._busy_s += self.clock.monotonic() - started

    def status(self) -> dict[str, object]:
        doc = super().status()
        p = self.plc.stats
        doc.update(
            type="plc",
            transactions=p.requests,
            timeouts=p.timeouts,
            frame_errors=p.frame_errors,
            denies=p.denies,
            in_flight=len(self.running),
            window=self.plc.window,
            module_up=self.module_up.is_set(),
            module_down_cause=None if self.module_up.is_set() else self.module_down_cause,
            module=self.module_info,
        )
        return doc

    def usable(self) -> bool:
        return self.module_up.is_set()

    def stuck_s(self) -> float:
        """Real seconds the oldest job in the air has been running (0 when none)."""
        if not self._started_at:
            return 0.0
        return self.clock.monotonic() - min(self._started_at.values())

    async def _ready_for(self, job: Job) -> bool:
        if not self.module_up.is_set():
            # Wait for the module, but never past the slot.
            wait = job.deadline - self.clock.monotonic()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self.module_up.wait()
            if not self.module_up.is_set():
                self._give_up(job, f"carrier module not working: {self.module_down_cause}")
                return False
        return True

    async def _prepare(self) -> None:
        """The module's port is opened and watched by the module tasks, not per read."""

    async def _open_for_action(self) -> None:
        await self._ensure_open()

    async def _channel_failed(self, exc: BusError) -> None:
        self._module_failed(str(exc))

    def _answered(self) -> None:
        self._module_answered()

    async def _read_failed(self, job: Job, exc: DriverError) -> bool:
        address = job.meter.address
        if isinstance(exc, NodeNotInRoute):
            # The module lost the node (a reset, a table edit): put it back, read again.
            self.stats.reads_failed += 1
            self._event("plc_node_readded", "warning", {"address": address})
            try:
                await self.plc.add_nodes([address])
            except (DriverError, OSError) as add_exc:
                log.warning("bus %s: cannot re-add %s: %s", self.config.name, address, add_exc)
            self._retry_or_give_up(job, exc)
        elif isinstance(exc, CarrierBusy):
            self._again(job, BUSY_RETRY_S)  # flow control, not a failure of anyone
        elif isinstance(exc, (NodeNoReply, FrameError, FreezeNotTaken)):
            self.stats.reads_failed += 1
            # A carrier link loses single attempts routinely: the meter is blamed for a
            # read that failed in its slot, not for each attempt (three lost attempts in
            # a row would otherwise take a healthy meter offline and end its retries).
            if not self._retry_or_give_up(job, exc) and not isinstance(exc, FreezeNotTaken):
                self.health.failure(address, str(exc))
        elif isinstance(exc, CarrierReset):
            self._event("plc_module_reset", "warning", {"during_read_of": address})
            self._resync.set()
            self._again(job, BUSY_RETRY_S, exc)
        elif isinstance(exc, (CarrierTimeout, CarrierDenied, BusError)):
            # Silent, closed, or denying with a reason that is not about this node.
            self._module_failed(str(exc))
            self._again(job, 0.0, exc)
        else:
            return False
        return True

    def _again(self, job: Job, delay_s: float, exc: Exception | None = None) -> None:
        """Queue a job again without spending one of its retries, while its slot lasts."""
        now = self.clock.monotonic()
        not_before = now + delay_s / self.clock.scale
        if not_before >= job.deadline:
            self._give_up(job, str(exc) if exc else "slot ended", exc)
            return
        job.not_before = not_before
        self.submit(job)
