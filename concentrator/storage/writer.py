"""The single way into the store for the running daemon: group commits in one thread.

Bus workers hand readings over without waiting for the disk; the writer commits them in
groups (one fsync for many readings), in a dedicated thread so SQLite never blocks the
event loop. A reading counts as collected only once it is in the store, because every
"what is still to read in this slot" question is answered from the store.

When the disk is full the readings wait in memory, bounded: past ``max_pending`` the
oldest are dropped and counted, and the count is written as an explicit loss event as
soon as the store accepts writes again. Nothing is lost silently.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from concentrator.storage.errors import StoreError, StoreFullError
from concentrator.storage.store import Store
from contract.records import Event, Reading

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_GROUP = 5000


class StoreWriter:
    def __init__(
        self,
        store: Store,
        *,
        max_pending: int = 50_000,
        retry_s: float = 5.0,
        gather_s: float = 0.05,
        now: Callable[[], float],
    ) -> None:
        self.store = store
        self.max_pending = max_pending
        self.retry_s = retry_s
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
                self.disk_full = True
                self._idle.set()  # held, not lost: flush() must not hang on a full disk
                await asyncio.sleep(self.retry_s)
                self._wake.set()
                continue
            except StoreError:
                log.exception("store write failed; retrying")
                self._idle.set()
                await asyncio.sleep(self.retry_s)
                self._wake.set()
                continue
            if self.disk_full:
                log.warning("store accepts writes again")
                self.disk_full = False
            if not (self._pending or self._events or self._missing or self._states):
                self._idle.set()

    async def _commit_all(self) -> None:
        while self._events:
            await self.call(self.store.add_event, self._events[0])
            self._events.popleft()
        if self._dropped:
            await self.call(self.store.add_event, self._loss_event())
            self._dropped.clear()
            self._dropped_slots.clear()
        while self._pending:
            group = [self._pending[i] for i in range(min(MAX_GROUP, len(self._pending)))]
            try:
                await self.call(self.store.add_readings, group)
            except ValueError:
                # A reading the store cannot represent is a bug upstream; it must not
                # take the readings committed with it down: store them one by one.
                await self._commit_one_by_one(group)
            for _ in group:
                self._pending.popleft()
            self.committed += len(group)
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

    def _loss_event(self) -> Event:
        losses = [
            {
                "meter": meter,
                "quantity": quantity,
                "count": count,
                "first_slot": self._dropped_slots[(meter, quantity)][0],
                "last_slot": self._dropped_slots[(meter, quantity)][1],
            }
            for (meter, quantity), count in sorted(self._dropped.items())
        ]
        return Event(
            kind="loss",
            severity="critical",
            meter=None,
            detail={"reason": "disk full: memory buffer overflowed", "losses": losses},
            at=self._now(),
        )

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=True)
