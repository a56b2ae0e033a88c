"""At start-up, before any scheduler reads its last slot: what a daemon killed on a full
disk still held in memory (`concentrator.storage.held`) is accounted for, so no slot it
polled is called "daemon down" and no reading is lost without an event saying why.

It needs only the store, its writer, the journal and the clock's wall time; the daemon
calls it once, between opening the store and building `Polling`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from concentrator.storage import HeldJournal, HeldJournalError, Store, StoreFullError, StoreWriter
from contract.records import Event

log = logging.getLogger(__name__)


async def account_for_held(
    store: Store, writer: StoreWriter, journal: HeldJournal, now: Callable[[], float]
) -> None:
    """Turn the held journal of a daemon killed on a full disk into missing records
    and a loss event with the true reason (issue 19, item 10), then clear it."""
    try:
        held = journal.read()
    except HeldJournalError as exc:
        log.critical("held journal unreadable, its readings are unaccounted: %s", exc)
        writer.event(Event("held_journal_damaged", "critical", None, {"error": str(exc)}, now()))
        held = None
    if held is not None:
        try:
            lost = await writer.call(store.record_held, held, now())
        except StoreFullError:
            # Still full: the writer holds it (and journals it again) until it fits.
            log.error("store still full: the held journal waits for space")
            keys = held.slot_keys()
            stored = await writer.query(lambda s: s.stored_keys(keys))
            missing, events, _ = held.account(stored, now())
            for event in events:
                writer.event(event)
            for row in missing:
                writer.missing(*row)
            for key, value in held.states.items():
                writer.set_state(key, value)
            journal.dirty = True  # cleared once the writer has committed it all
        else:
            if lost:
                log.error("%d readings taken on a full disk were never committed: "
                          "recorded lost", lost)  # fmt: skip
    try:
        journal.allocate()
        if not journal.dirty:
            journal.clear()
    except OSError as exc:  # a full disk at start: the journal may be missing
        log.error("cannot allocate the held journal %s: %s", journal.path, exc)
