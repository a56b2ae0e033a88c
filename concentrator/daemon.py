"""The concentrator daemon: a small supervisor that builds the tasks, wires them and keeps
them running.

Shape (docs/architecture.md): the polling side (`concentrator.polling`: one worker per
bus, one scheduler per reading task), one store writer, the uplink and the modem
supervisor, the updater, the runner of signed commands, the control socket, one
housekeeping task (`concentrator.housekeeping`) and, with ``[metrics]``, the Prometheus
endpoint (unsupervised: polling never stops for it). The ``Daemon`` builds them at
start, each with only what it needs (the writer, the clock, a turn on the buses, a
callback: never the daemon itself), reloads the polling side on SIGHUP, and on SIGTERM
stops them after the readings already taken are committed. A supervised task that dies
stops the daemon, which exits non-zero so that systemd restarts it rather than it
limping on with a dead bus or writer. At start it first accounts for what a daemon
killed on a full disk held (`concentrator.held_recovery`); whether it is doing its work
at all is `concentrator.liveness`'s judgement.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from clitools.files import GROUP_READ, write_file
from concentrator import __version__, liveness
from concentrator.clock import Clock, ScaledClock, SystemClock, scaled_start
from concentrator.config import Config, ConfigError, MetricsConfig, load_config
from concentrator.config.changes import keep_restart_only, polling_part, uplink_fingerprint
from concentrator.control.api import ControlApi
from concentrator.control.logring import LogRing
from concentrator.control.server import ControlServer
from concentrator.held_recovery import account_for_held
from concentrator.housekeeping import Housekeeping
from concentrator.polling.scheduler import Polling
from concentrator.sdnotify import SdNotifier
from concentrator.storage import (
    MAX_PENDING,
    HeldJournal,
    Store,
    StoreFullError,
    StoreWriter,
    open_store,
)
from concentrator.update.releases import EXIT_SWITCH, Releases
from contract.records import Event

if TYPE_CHECKING:
    # Imported where they start, only when the config has them: the uplink, commands
    # and updates bring paho-mqtt, cryptography, CBOR and zstd (about 14 MB of RSS a
    # daemon without ``[uplink]`` does not pay), the modem its AT driver.
    from concentrator.control.command_runner import CommandRunner
    from concentrator.update.updater import Updater
    from concentrator.uplink.modem import ModemSupervisor
    from concentrator.uplink.mqtt import Uplink

log = logging.getLogger(__name__)

# Every bus transaction has a timeout far below these; only a wedged task gets there.
HUNG_JOB_S = 300.0  # real seconds one job may run on a bus
HUNG_STORE_S = 120.0  # real seconds a store call may wait (SQLite's busy timeout is 5 s)
FLUSH_TIMEOUT_S = 30.0  # at shutdown, how long to wait for the last commits


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
        self._file_config: Config = load_config(config_path)
        # From the daemon's creation on, so `concentrator logs` shows its start-up too.
        self.log_ring = LogRing()
        logging.getLogger().addHandler(self.log_ring)
        self._socket_given = control_socket is not None
        self.control_socket = control_socket or self._file_config.concentrator.control_socket
        self.status_path = status_path or self._file_config.storage.path.with_suffix(".status.json")
        self.notifier = SdNotifier()
        self.exit_code = 0  # EXIT_SWITCH: the updater installed a release to switch to
        # Built by `start`, in this order:
        self.store: Store | None = None
        self.writer: StoreWriter | None = None
        self.polling: Polling | None = None
        self.uplink: Uplink | None = None
        self._earlier_keys: dict[int, bytes] = {}  # the replaced uplink's, for its acks
        self.updater: Updater | None = None
        self.commands: CommandRunner | None = None
        self.control: ControlServer | None = None
        self.modem: ModemSupervisor | None = None
        # The Prometheus endpoint ([metrics]): not supervised, polling never stops for it.
        self._metrics: tuple[MetricsConfig, asyncio.Task[None]] | None = None
        self._core: list[asyncio.Task[None]] = []
        # The tasks of the services a reload may restart (also in ``_core``).
        self._uplink_tasks: list[asyncio.Task[None]] = []
        self._modem_task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self.started_wall = self.clock.wall()
        self.started_mono = self.clock.monotonic()
        self.failure: BaseException | None = None

    @property
    def config(self) -> Config:
        """The configuration in force: the file's, with the meters commands added or removed."""
        return self.polling.config if self.polling is not None else self._file_config

    @property
    def slots_started(self) -> int:
        """Slots the schedulers have started polling, since the start."""
        return self.polling.slots_started if self.polling is not None else 0

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
        cfg = self._file_config
        for warning in cfg.warnings:
            log.warning("config: %s", warning)
        self.store = store = open_store(cfg.storage)
        journal = HeldJournal(cfg.storage.path, MAX_PENDING)
        self.writer = writer = StoreWriter(
            store, max_pending=MAX_PENDING, now=self.clock.wall, journal=journal
        )
        # Before any scheduler reads its last slot: what a killed daemon held on a full
        # disk is accounted for first, so no slot it polled is called "daemon down".
        await account_for_held(store, writer, journal, self.clock.wall)
        self.polling = polling = Polling(cfg, clock=self.clock, writer=writer)
        await polling.apply(cfg)
        problems = await writer.call(store.integrity_check)
        if problems:
            writer.event(
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
            await writer.call(store.enforce_quota, self.clock.wall())
        except StoreFullError as exc:  # started on a full disk: poll, hold, retry
            log.error("store full at start-up; polling on, readings held in memory: %s", exc)
        self._core = [
            self._spawn(writer.run(), "store-writer"),
            self._spawn(self._housekeeping(store, writer, polling).run(), "housekeeping"),
        ]
        writer.event(
            Event(
                "daemon_start",
                "info",
                None,
                {"version": __version__, "pid": os.getpid()},
                self.clock.wall(),
            )
        )
        if cfg.uplink is not None:
            await self._start_uplink(cfg)
        api = ControlApi(
            socket_path=self.control_socket,
            polling=polling,
            writer=writer,
            log_ring=self.log_ring,
            status=self.status,
            uplink=lambda: self.uplink,  # looked up per request: the uplink may change
        )
        self.control = ControlServer(self.control_socket, api)
        self._core.append(self._spawn(self.control.run(), "control"))
        if cfg.modem is not None:
            self._start_modem(cfg)
        self._start_metrics(cfg.metrics)
        if self.notifier.watchdog_s is not None:
            # Fed only while every bus, the store and the core tasks really work.
            self._core.append(self._spawn(self.notifier.keepalive(self._feed_watchdog), "watchdog"))
        polling.start()
        log.info(
            "concentrator %s polling %d meters on %d buses",
            cfg.concentrator.id,
            len(cfg.meters),
            len(cfg.buses),
        )

    def _start_modem(self, cfg: Config) -> None:
        assert cfg.modem is not None and self.writer is not None
        from concentrator.uplink.modem import ModemSupervisor

        writer = self.writer
        self.modem = ModemSupervisor(
            cfg.modem,
            on_event=lambda e: writer.event(e.to_store_event()),
            clock=self.clock,
        )
        self._modem_task = self._spawn(self.modem.run(), "modem")
        self._core.append(self._modem_task)

    async def _stop_modem(self) -> None:
        task, self._modem_task, self.modem = self._modem_task, None, None
        if task is not None:
            self._core.remove(task)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _start_uplink(self, cfg: Config) -> None:
        """The uplink, and what arrives over it: signed commands and software updates."""
        assert cfg.uplink is not None and self.store is not None and self.writer is not None
        assert self.polling is not None
        from concentrator.uplink.mqtt import Uplink

        polling = self.polling
        self.uplink = uplink = Uplink(
            cfg.uplink,
            cfg.concentrator.id,
            self.store,
            self.writer,
            earlier_keys=self._earlier_keys,
        )
        self._uplink_tasks = []
        if cfg.update is not None:
            from concentrator.update.updater import Updater  # with [update] only: RSS

            self.updater = Updater(
                cfg.update,
                releases=Releases(cfg.releases_dir),
                writer=self.writer,
                link=uplink,
                clock=self.clock,
                wire_version=cfg.uplink.wire_version,
                config_format=lambda: polling.config.format,
                on_installed=self._switch_release,
            )
            uplink.on_package = self.updater.on_chunk
        key = cfg.uplink.command_key()
        if key is not None:
            from concentrator.control.command_runner import CommandRunner

            self.commands = CommandRunner(
                key,
                targets=polling,
                writer=self.writer,
                flush=uplink.flush,
                upgrades=self.updater,
            )
            uplink.on_command = self.commands.submit
            self._uplink_tasks.append(self._spawn(self.commands.run(), "commands"))
        self._uplink_tasks.append(self._spawn(uplink.run(), "uplink"))
        self._core += self._uplink_tasks
        if self.updater is not None:
            await self.updater.resume()
            await self.updater.report()

    async def _stop_uplink(self) -> None:
        """Stop the uplink and what hangs on it (a reload of ``[uplink]``/``[update]``):
        the connection first, so no command arrives meanwhile; then the command runner
        between two commands. Batches in flight are resent by the next uplink (the
        store keeps them until the receiver's ack)."""
        tasks, self._uplink_tasks = self._uplink_tasks, []
        for t in tasks:
            self._core.remove(t)
        runner = self.commands
        uplink_task = tasks[-1] if tasks else None
        if uplink_task is not None:
            uplink_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await uplink_task
        if runner is not None and len(tasks) > 1:
            await runner.stop(tasks[0])
        if self.uplink is not None:
            # A key rotation: the acks of batches sealed before it come under the old key.
            self._earlier_keys = dict(self.uplink.keys)
        self.uplink = self.commands = self.updater = None

    def _start_metrics(self, cfg: MetricsConfig | None) -> None:
        """Serve ``[metrics]`` (`concentrator.control.prometheus`), imported only then:
        prometheus_client is RSS a concentrator without a scraper does not pay."""
        if cfg is None:
            return
        from concentrator.control.prometheus import MetricsEndpoint

        assert self.polling is not None and self.writer is not None
        endpoint = MetricsEndpoint(
            cfg,
            concentrator_id=self.config.concentrator.id,
            polling=self.polling,
            writer=self.writer,
            uplink=lambda: self.uplink,  # looked up per scrape: a reload may replace them
            modem=lambda: self.modem,
        )
        task = asyncio.create_task(endpoint.run(), name="metrics")
        task.add_done_callback(_log_metrics_failure)
        self._metrics = (cfg, task)

    async def _stop_metrics(self) -> None:
        if self._metrics is not None:
            task = self._metrics[1]
            self._metrics = None
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _reload_metrics(self, cfg: MetricsConfig | None) -> None:
        """SIGHUP: a changed (or added, or removed) ``[metrics]`` table takes effect, and
        an endpoint that could not bind its port tries again."""
        running = self._metrics
        if running is None or running[0] != cfg or running[1].done():
            await self._stop_metrics()
            self._start_metrics(cfg)

    def _switch_release(self) -> None:
        """The updater installed a release: exit with EXIT_SWITCH for the guard to start it."""
        self.exit_code = EXIT_SWITCH
        self.stop()

    async def reload(self) -> None:
        """SIGHUP: apply every table that can change while running (the buses, meters
        and tasks, the timezone, ``[uplink]`` and ``[update]``, ``[modem]``) and refuse,
        with the reason, what only a restart can change (``[storage]``, the
        concentrator's id and control socket). A refusal keeps the running value; it is
        logged and recorded as a ``config_reload_refused`` event."""
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
        assert self.polling is not None and self.writer is not None
        for warning in new.warnings:
            log.warning("config: %s", warning)
        running = self._file_config
        new, refused = keep_restart_only(running, new, socket_fixed=self._socket_given)
        applied: list[str] = []
        if polling_part(new) != polling_part(running):
            await self.polling.reload(new)
            applied.append("buses, meters, tasks")
        if uplink_fingerprint(new) != uplink_fingerprint(running):
            if self.updater is not None and self.updater.busy:
                reason = (
                    f"an upgrade to {self.updater.version} is being downloaded or installed; "
                    "send SIGHUP again when it is done, or restart"
                )
                for table in ("uplink", "update"):
                    if getattr(new, table) != getattr(running, table):
                        refused[table] = reason
                new = dataclasses.replace(new, uplink=running.uplink, update=running.update)
            else:
                await self._stop_uplink()
                if new.uplink is not None:
                    await self._start_uplink(new)
                applied.append("uplink" if new.update == running.update else "uplink, update")
        if new.modem != running.modem:
            await self._stop_modem()
            if new.modem is not None:
                self._start_modem(new)
            applied.append("modem")
        if new.metrics != running.metrics:
            applied.append("metrics")
        await self._reload_metrics(new.metrics)  # also retries a port it could not bind
        self._file_config = new
        self.writer.event(
            Event(
                "config_reloaded",
                "info",
                None,
                {"applied": applied, "meters": len(new.meters), "buses": len(new.buses)},
                self.clock.wall(),
            )
        )
        log.info(
            "config reloaded: %d meters on %d buses; %s",
            len(new.meters),
            len(new.buses),
            f"applied: {', '.join(applied)}" if applied else "nothing changed",
        )
        if refused:
            for table, reason in refused.items():
                log.warning("config reload: [%s] not applied: %s", table, reason)
            self.writer.event(
                Event(
                    "config_reload_refused",
                    "warning",
                    None,
                    {"refused": refused},
                    self.clock.wall(),
                )
            )

    async def shutdown(self) -> None:
        self.notifier.stopping()
        await self._stop_metrics()
        if self.control is not None:
            await self.control.close()  # no new requests; streams get their final line
        logging.getLogger().removeHandler(self.log_ring)
        if self.polling is not None:
            await self.polling.stop()
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

    # ------------------------------------------------------------------ status
    def _housekeeping(self, store: Store, writer: StoreWriter, polling: Polling) -> Housekeeping:
        """The periodic chores (`concentrator.housekeeping`), with look-ups of the
        services a reload may replace rather than the daemon itself."""
        return Housekeeping(
            writer=writer,
            store=store,
            polling=polling,
            clock=self.clock,
            write_status=self._write_status,
            updater=lambda: self.updater,
            modem=lambda: self.modem,
            uplink_connected=lambda: (
                self.uplink.stats.connected if self.uplink is not None else None
            ),
        )

    def status(self) -> dict[str, Any]:
        polling = self.polling
        return {
            "concentrator": self.config.concentrator.id,
            "version": __version__,
            "pid": os.getpid(),
            "started": self.started_wall,
            "uptime_s": round(self.clock.monotonic() - self.started_mono, 1),
            "wall": self.clock.wall(),
            "meters": polling.health.counts() if polling is not None else {},
            "buses": polling.bus_status() if polling is not None else {},
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
        has waited far longer than SQLite's busy timeout (`concentrator.liveness`). The
        systemd watchdog is fed only while this is None, so a wedged bus or store gets
        the process restarted."""
        return liveness.unhealthy(
            self._core,
            self.polling,
            self.writer,
            hung_job_s=HUNG_JOB_S,  # read at each call: tests shorten them
            hung_store_s=HUNG_STORE_S,
        )

    def _feed_watchdog(self) -> bool:
        reason = self.unhealthy()
        if reason is not None:
            log.error("not feeding the systemd watchdog: %s", reason)
        return reason is None

    def _write_status(self) -> None:
        try:
            status = json.dumps(self.status(), indent=1)
            write_file(self.status_path, status, GROUP_READ, sync=False)
        except OSError as exc:  # a full disk must not stop polling
            log.warning("cannot write status file %s: %s", self.status_path, exc)


def _log_metrics_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.error("metrics endpoint failed: %r", exc, exc_info=exc)


def run_daemon(
    config_path: Path,
    *,
    time_scale: float = 1.0,
    control_socket: Path | None = None,
    time_origin: float | None = None,
    clock_step_file: Path | None = None,
) -> int:
    """Run the daemon until it stops; its exit code (1: a supervised task died;
    EXIT_SWITCH: switch to the release the updater installed)."""
    clock: Clock = SystemClock()
    if time_scale != 1.0:
        clock = ScaledClock(
            scale=time_scale, start=scaled_start(time_scale, time_origin), step_file=clock_step_file
        )
    daemon = Daemon(config_path, clock=clock, control_socket=control_socket)
    asyncio.run(daemon.run())
    if daemon.failure is not None:
        return 1
    return daemon.exit_code
