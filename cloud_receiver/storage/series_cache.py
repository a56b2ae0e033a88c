"""`SeriesCache`: `Storage.series` for pages that read the same meter's months again
(the customer's usage page reads the year around the month it shows), without fetching
readings that have not changed since the last time.

Stored readings never change and are never deleted: a reading's key is (meter, quantity,
slot), a later different value is recorded as a conflict and the stored one stands
(`.conflicts`). So the readings of a meter in a range are the same set as long as there
are as many of them, and the number is read from the index alone (`Storage.series_counts`)
for a fraction of what fetching the values costs. The cache keeps each meter's readings in
week-long chunks of slots, each with the number of rows fetched for it; a chunk whose
count in the database differs (a new reading, however late it arrived) is fetched again.
What `series` returns is what `Storage.series` returns (each chunk as of when it was
counted: a reading stored meanwhile shows at the next call, as with any read racing
an ingest).

Per process, bounded (`MAX_ROWS`, least recently used chunks dropped first), and safe to
share between the web server's threads.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence

from cloud_receiver.storage.database import Storage

CHUNK_S = 7 * 86_400  # a chunk: one week of slots (the current week is fetched again)
# Readings held at most: ~180 bytes each (the value's text, its slot, the row), so about
# 45 MB; a year of one meter's register is ~35,000.
MAX_ROWS = 250_000

Row = tuple[str, str, int, str]  # (meter, quantity, slot, value), as `Storage.series`
_Key = tuple[str, tuple[str, ...], int]  # (meter, quantities, chunk)


class SeriesCache:
    def __init__(self, storage: Storage, max_rows: int = MAX_ROWS) -> None:
        self.storage = storage
        self.max_rows = max_rows
        self._chunks: OrderedDict[_Key, list[Row]] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()
        self.fetched = 0  # chunks fetched from the database (tests see the cache work)

    def series(
        self, quantities: Sequence[str], meters: Sequence[str], since: int, until: int
    ) -> list[Row]:
        """What ``storage.series(quantities, meters, since, until)`` returns now."""
        if not quantities or not meters or until <= since:
            return []
        if since < 0:  # chunks are counted by floor division: slots before 1970, uncached
            return self.storage.series(quantities, meters, since, until)
        wanted = tuple(quantities)
        out: list[Row] = []
        for meter in dict.fromkeys(meters):
            for rows in self._meter(wanted, meter, since, until):
                out += [r for r in rows if since <= r[2] < until]
        out.sort()
        return out

    def _meter(
        self, quantities: tuple[str, ...], meter: str, since: int, until: int
    ) -> list[list[Row]]:
        """The meter's chunks covering ``[since, until)``, fetched again where stale."""
        first, last = since // CHUNK_S, (until - 1) // CHUNK_S
        counts = self.storage.series_counts(
            quantities, meter, first * CHUNK_S, (last + 1) * CHUNK_S, CHUNK_S
        )
        chunks: dict[int, list[Row]] = {}
        stale: list[int] = []
        with self._lock:
            for k in range(first, last + 1):
                held = self._chunks.get((meter, quantities, k))
                if held is not None and len(held) == counts.get(k, 0):
                    self._chunks.move_to_end((meter, quantities, k))
                    chunks[k] = held
                else:
                    stale.append(k)
        if stale:
            # One query from the first stale chunk to the last; its rows, chunk by chunk,
            # are the chunks as stored (the count kept is of these rows, never read apart).
            fresh: dict[int, list[Row]] = {k: [] for k in range(stale[0], stale[-1] + 1)}
            rows = self.storage.series(
                quantities, [meter], stale[0] * CHUNK_S, (stale[-1] + 1) * CHUNK_S
            )
            names: dict[str, str] = {}  # one string per quantity, not one per row
            for _, quantity, slot, value in rows:
                name = names.setdefault(quantity, quantity)
                fresh[slot // CHUNK_S].append((meter, name, slot, value))
            with self._lock:
                for k, got in fresh.items():
                    self._put((meter, quantities, k), got)
                    self.fetched += 1
            chunks.update(fresh)
        return [chunks[k] for k in range(first, last + 1)]

    def _put(self, key: _Key, rows: list[Row]) -> None:
        old = self._chunks.pop(key, None)
        if old is not None:
            self._held -= len(old)
        self._chunks[key] = rows
        self._held += len(rows)
        while self._held > self.max_rows and len(self._chunks) > 1:
            _, dropped = self._chunks.popitem(last=False)
            self._held -= len(dropped)
