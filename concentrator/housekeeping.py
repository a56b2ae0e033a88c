"""The daemon's housekeeping task: what has to happen every few seconds beside polling.

Every ``STATUS_EVERY_REAL_S`` real seconds it writes the status file, sweeps the freeze
and load-curve backfills, reports an upgrade's outcome, tells the modem supervisor
whether the MQTT session is up, sends the day's ``collection_day`` event once a day and,
hourly, prunes the store. It gets only what those need (the writer and store, `Polling`,
the clock, a callback for the status file and look-ups of the services a reload may
replace), never the daemon, so it stays a task the daemon wires rather than a part of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Protocol

from concentrator.clock import Clock
from concentrator.control import completeness
from concentrator.polling.scheduler import Polling
from concentrator.storage import Store, StoreError, StoreWriter

log = logging.getLogger(__name__)

STATUS_EVERY_REAL_S = 2.0
PRUNE_EVERY_S = 3600.0  # wall seconds between two prunes of the store


class UpgradeReport(Protocol):
    """The updater, as housekeeping sees it (`concentrator.update.updater.Updater`)."""

    async def report(self) -> None: ...


class ModemEvidence(Protocol):
    """The modem supervisor, as housekeeping sees it: an MQTT session that stays down is
    its evidence that the link is dead (`concentrator.uplink.modem.ModemSupervisor`)."""

    def uplink_alive(self) -> None: ...

    def uplink_dead(self, reason: str) -> None: ...


class Housekeeping:
    """The periodic chores; the services are looked up at each tick because a SIGHUP
    reload may stop, replace or add the uplink, the updater and the modem."""

    def __init__(
        self,
        *,
        writer: StoreWriter,
        store: Store,
        polling: Polling,
        clock: Clock,
        write_status: Callable[[], None],
        updater: Callable[[], UpgradeReport | None],
        modem: Callable[[], ModemEvidence | None],
        uplink_connected: Callable[[], bool | None],  # None: no uplink
    ) -> None:
        self.writer = writer
        self.store = store
        self.polling = polling
        self.clock = clock
        self._write_status = write_status
        self._updater = updater
        self._modem = modem
        self._uplink_connected = uplink_connected
        self._collection_sent: str | None = None  # the last collection_day sent; None: unread

    async def run(self) -> None:
        last_prune = 0.0
        while True:
            await asyncio.sleep(STATUS_EVERY_REAL_S)
            self._write_status()
            self.polling.backfill.sweep()
            if self.polling.load.due():
                await self.polling.load.sweep()
            updater = self._updater()
            if updater is not None:
                try:
                    await updater.report()
                except (OSError, StoreError) as exc:
                    log.warning("cannot report the upgrade outcome: %s", exc)
            modem = self._modem()
            # The uplink is asked only when there is a modem, as before the split.
            connected = self._uplink_connected() if modem is not None else None
            if modem is not None and connected is not None:
                # An MQTT session that stays down is the modem supervisor's evidence.
                if connected:
                    modem.uplink_alive()
                else:
                    modem.uplink_dead("MQTT session not connected")
            try:
                await self.report_collection_day()
            except StoreError as exc:  # tried again at the next tick
                log.warning("cannot draw the day's collection figures: %s", exc)
            now = self.clock.wall()
            if now - last_prune > PRUNE_EVERY_S:
                last_prune = now
                with contextlib.suppress(Exception):
                    await self.writer.call(self.store.prune, now)

    async def report_collection_day(self) -> None:
        """Once a day, after local midnight, the day's ``collection_day`` event
        (`concentrator.control.completeness`); the day sent is kept in the store's state,
        so a restart neither repeats nor skips it; a new store starts with the first day
        the daemon sees (no event for the days before it ran)."""
        cfg, now = self.polling.config, self.clock.wall()
        if self._collection_sent is None:
            sent = await self.writer.read_state(completeness.STATE_KEY)
            if sent is None:  # a new store: from the first day this daemon sees on
                sent = str(completeness.due_day(cfg, now, None))
                self.writer.set_state(completeness.STATE_KEY, sent)
            self._collection_sent = sent
        day = completeness.due_day(cfg, now, self._collection_sent)
        if day is None:
            return
        event = await self.writer.query(lambda store: completeness.day_event(cfg, store, day, now))
        self.writer.event(event)
        self.writer.set_state(completeness.STATE_KEY, day.isoformat())
        self._collection_sent = day.isoformat()
