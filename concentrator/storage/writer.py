"""The single way into the store for the running daemon: group commits in one thread.

Bus workers hand readings over without waiting for the disk; the writer commits them in
groups (one fsync for many readings), in a dedicated thread so SQLite never blocks the
event loop. A reading counts as collected only once it is in the store, because every
"what is still to read in this slot" question is answered from the store.

When the disk is full the readings wait in memory, bounded: past ``max_pending`` the
oldest are dropped and counted, and the count is written as an explicit loss event as
soon as the store accepts writes again. Nothing is lost silently. The writer tries again
as soon as space returns — it watches the free space of the store's filesystem every
50 ms and backs off from 50 ms to ``retry_s`` for a full quota or an I/O error that
free space does not show — and meanwhile keeps a summary of what it holds in the held
journal (`concentrator.storage.held`), so that a kill -9 before the commit is
accounted for by the next start with its true reason (issue 19, item 10).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from concentrator.storage.errors import StoreError, StoreFullError
from concentrator.storage.held import (
    HELD_REASON,
    OVERFLOW_REASON,
    Held,
    HeldJournal,
    new_episode,
)
from concentrator.storage.store import Store
from contract.records import Event, Reading

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_GROUP = 5000
MAX_PENDING = 50_000  # readings held in memory while the disk is full
WATCH_S = 0.05  # how often a full store's free space is looked at, and the first retry
# How long the first reading of a group waits for others to share its commit. A commit
# costs about 0.7 ms of CPU whatever it carries (SQLCipher encrypts and the WAL syncs
# whole pages) plus about 6 µs a reading: at a few hundred reads a second, 50 ms
# groups spent 35 µs a reading, 200 ms groups 12 (bench/daemon.py). A reading counts
# as stored only from its commit on; one still waiting when the power goes is read
# again (its slot still open) or recorded missing at the next start, like any read the
# daemon did not finish.
GATHER_S = 0.2


class StoreWriter:
    def __init__(
        self,
        store: Store,
        *,
        max_pending: int = MAX_PENDING,
        retry_s: float = 1.0,
        gather_s: float = GATHER_S,
        now: Callable[[], float],
        journal: HeldJournal | None = None,
    ) -> None:
        self.store = store
        self.max_pending = max_pending
        # The longest wait between two tries on a full store (the first is WATCH_S).
        self.retry_s = retry_s
        self.journal = journal
        self._backoff = WATCH_S
        self._changed = False  # something handed over since the journal was written
        self._episode: str | None = None
        self._full_reason = ""
        # Wait this long after the first new reading so one commit (one fsync) carries
        # everything the buses read meanwhile, instead of one fsync per reading.
        self.gather_s = gather_s
        self._now = now
        self._pending: deque[Reading] = deque()
        self._events: deque[Event] = deque()
        self._missing: deque[tuple[str, str, int, str]] = deque()
        self._states: dict[str, str] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store")
        self._calls: dict[object, float] = {}  # store calls not finished: monotonic start
        self._dropped: Counter[tuple[str, str]] = Counter()
        self._dropped_slots: dict[tuple[str, str], tuple[int, int]] = {}
        self.disk_full = False
        self.committed = 0
        self._closed = False

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run a store method in the store's thread (reads see every earlier write)."""
        loop = asyncio.get_running_loop()
        token = object()
        self._calls[token] = time.monotonic()
        try:
            return await loop.run_in_executor(self._executor, lambda: fn(*args))
        finally:
            del self._calls[token]

    async def query(self, fn: Callable[[Store], T]) -> T:
        """Run a read of the store in the store's thread (it sees every earlier write)."""
        return await self.call(fn, self.store)

    async def read_state(self, key: str) -> str | None:
        """A named state value, as committed by every write handed over before."""
        return await self.call(self.store.get_state, key)

    async def write_state(self, key: str, value: str) -> None:
        """Commit a state value now and wait for it; `set_state` instead queues one
        behind the records handed over before it."""
        await self.call(self.store.set_state, key, value)

    async def delete_state(self, key: str) -> None:
        await self.call(self.store.delete_state, key)

    def oldest_call_s(self) -> float:
        """How long the oldest store call has been waiting or running (0 when none): a
        store thread stuck in SQLite shows here, whatever the disk is doing."""
        if not self._calls:
            return 0.0
        return time.monotonic() - min(self._calls.values())

    def add(self, readings: Sequence[Reading]) -> None:
        self._pending.extend(readings)
        overflow = len(self._pending) - self.max_pending
        for _ in range(max(0, overflow)):
            r = self._pending.popleft()
            key = (r.meter, r.quantity)
            self._dropped[key] += 1
            lo, hi = self._dropped_slots.get(key, (r.slot, r.slot))
            self._dropped_slots[key] = (min(lo, r.slot), max(hi, r.slot))
        self._kick()

    def event(self, event: Event) -> None:
        self._events.append(event)
        self._kick()

    def missing(self, meter: str, quantity: str, slot: int, reason: str) -> None:
        self._missing.append((meter, quantity, slot, reason))
        self._kick()

    def set_state(self, key: str, value: str) -> None:
        """Record a state value *after* every reading, event and missing record handed
        over before it: a state such as "slot S started" must never be on disk while
        what it implies (the earlier slots' missing records) is still in memory — a kill
        then would leave those slots neither stored nor accounted for."""
        self._states[key] = value
        self._kick()

    @property
    def pending(self) -> int:
        return len(self._pending)

    def _kick(self) -> None:
        self._changed = True
        self._idle.clear()
        self._wake.set()

    async def flush(self) -> None:
        """Wait until everything handed over so far is committed (or held: disk full)."""
        self._kick()
        await self._idle.wait()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            if len(self._pending) < MAX_GROUP:
                await asyncio.sleep(self.gather_s)
            self._wake.clear()
            try:
                await self._commit_all()
            except StoreFullError as exc:
                if not self.disk_full:
                    log.error("store full, holding %d readings in memory: %s", self.pending, exc)
                    self._full_reason = str(exc)
                self.disk_full = True
                self._idle.set()  # held, not lost: flush() must not hang on a full disk
                await self._wait_for_space()
                self._wake.set()
                continue
            except StoreError:
                log.exception("store write failed; retrying")
                self._idle.set()
                await asyncio.sleep(self.retry_s)
                self._wake.set()
                continue
            self._backoff = WATCH_S
            if self.disk_full:
                log.warning("store accepts writes again")
                self.disk_full = False
            if self.journal is not None and self.journal.dirty:
                # Everything the journal names was queued before this round: committed.
                await self.call(self.journal.clear)
                self._episode = None
            if not (self._pending or self._events or self._missing or self._states):
                self._idle.set()

    async def _wait_for_space(self) -> None:
        """Wait for the next try on a full store: at most the current backoff (doubling
        from WATCH_S to ``retry_s``), and no longer than the moment the filesystem shows
        more free space than now. Keeps the held journal up to date meanwhile."""
        start_free = self._free_bytes()
        deadline = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, self.retry_s)
        while True:
            if self._changed:
                await self._write_journal()
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(WATCH_S)
            free = self._free_bytes()
            if free is not None and start_free is not None and free > start_free:
                return

    def _free_bytes(self) -> int | None:
        try:
            st = os.statvfs(self.store.path.parent)
        except OSError:
            return None
        return st.f_bavail * st.f_frsize

    async def _write_journal(self) -> None:
        """Overwrite the held journal with what is held now (in the store's thread)."""
        self._changed = False
        if self.journal is None:
            return
        if self._episode is None:
            self._episode = new_episode()
        held = Held.of(
            self._episode,
            HELD_REASON,
            self._pending,
            self._missing,
            self._events,
            self._states,
            self._dropped_losses(),
        )
        await self.call(self.journal.write, held)

    async def _commit_all(self) -> None:
        while True:
            await self._commit_events()
            # Only the readings handed over before the events just committed: one handed
            # over after an event that arrives meanwhile waits for that event's commit.
            if not await self._commit_readings(len(self._pending)):
                break
        while self._missing:
            rows = [self._missing[i] for i in range(min(MAX_GROUP, len(self._missing)))]
            await self.call(self.store.record_missing_many, rows)
            for _ in rows:
                self._missing.popleft()
        # Only what was queued before this point: a state queued while these commit
        # waits for the next round, after the records queued before it.
        states, self._states = self._states, {}
        try:
            for key, value in states.items():
                await self.call(self.store.set_state, key, value)
        except BaseException:
            for key, value in states.items():  # not lost: a newer value wins
                self._states.setdefault(key, value)
            raise

    async def _commit_events(self) -> None:
        while self._events:
            await self.call(self.store.add_event, self._events[0])
            self._events.popleft()
        if self._dropped:
            await self.call(self.store.add_event, self._loss_event())
            self._dropped.clear()
            self._dropped_slots.clear()

    async def _commit_readings(self, count: int) -> bool:
        """Commit the first ``count`` pending readings; True when more was handed over
        meanwhile (events go first, then the readings handed over after them)."""
        while count > 0 and self._pending:
            group = [self._pending[i] for i in range(min(MAX_GROUP, count, len(self._pending)))]
            try:
                await self.call(self.store.add_readings, group)
            except ValueError:
                # A reading the store cannot represent is a bug upstream; it must not
                # take the readings committed with it down: store them one by one.
                await self._commit_one_by_one(group)
            for _ in group:
                self._pending.popleft()
            self.committed += len(group)
            count -= len(group)
        return bool(self._events or self._dropped or self._pending)

    async def _commit_one_by_one(self, group: list[Reading]) -> None:
        for reading in group:
            try:
                await self.call(self.store.add_readings, [reading])
            except ValueError as exc:
                log.error("store refused a reading: %s", exc)
                await self.call(
                    self.store.add_event,
                    Event(
                        "reading_rejected",
                        "critical",
                        reading.meter,
                        {
                            "quantity": reading.quantity,
                            "slot": reading.slot,
                            "value": reading.value,
                            "error": str(exc),
                        },
                        self._now(),
                    ),
                )

    def _dropped_losses(self) -> list[dict[str, object]]:
        return [
            {
                "meter": meter,
                "quantity": quantity,
                "count": count,
                "first_slot": self._dropped_slots[(meter, quantity)][0],
                "last_slot": self._dropped_slots[(meter, quantity)][1],
            }
            for (meter, quantity), count in sorted(self._dropped.items())
        ]

    def _loss_event(self) -> Event:
        return Event(
            kind="loss",
            severity="critical",
            meter=None,
            detail={"reason": OVERFLOW_REASON, "losses": self._dropped_losses()},
            at=self._now(),
        )

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=True)
