"""References: values the receiver has committed, which live batches are coded against.

A version 3 batch may code the first reading of a series as a delta against a
*reference*: the value of the same (meter, quantity) at an earlier slot, which the
concentrator knows the receiver committed because the receiver acked the batch that
carried it. The receiver resolves each reference from its database (never from one
process's memory), so any receiver on a shared subscription, or one restored from a
backup, decodes the batch or knows that it cannot. Every batch with references also
carries a CRC-32 over the references as the sender holds them; a receiver whose values
differ (a conflicting value stands in its database, a restored backup holds an older
one) refuses the batch instead of decoding it wrong, and asks for a key batch.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from contract.records import Reading

RefKey = tuple[str, str, int]  # meter, quantity, slot
# Looks up what the receiver committed for these keys: (value text, read_at) per key
# found; keys it does not hold are left out.
Resolver = Callable[[Sequence[RefKey]], Mapping[RefKey, tuple[str, float]]]


@dataclass(frozen=True, slots=True)
class Reference:
    """A committed value of one series: the base the next reading is coded against."""

    slot: int
    value: str
    read_at: float


def check(rows: Iterable[tuple[RefKey, str, float]]) -> int:
    """CRC-32 over the references in series order, as both ends hold them."""
    crc = 0
    for (meter, quantity, slot), value, read_at in rows:
        line = f"{meter}\x00{quantity}\x00{slot}\x00{value}\x00{round(read_at * 1000)}\n"
        crc = zlib.crc32(line.encode("utf-8", "surrogatepass"), crc)
    return crc


class ReferenceBook:
    """What one concentrator knows the receiver holds: per series, the newest value the
    receiver acked. Kept in memory only: after a restart it is empty and the next
    batches go as key batches. Bounded by the number of series."""

    def __init__(self) -> None:
        self._refs: dict[tuple[str, str], Reference] = {}

    def __len__(self) -> int:
        return len(self._refs)

    def learn(self, readings: Iterable[Reading]) -> None:
        """Readings the receiver just acked (stored, or already held)."""
        refs = self._refs
        for r in readings:
            key = (r.meter, r.quantity)
            old = refs.get(key)
            if old is None or r.slot >= old.slot:
                refs[key] = Reference(r.slot, r.value, r.read_at)

    def copy(self) -> ReferenceBook:
        """A snapshot, to seal against in another thread while this book learns."""
        book = ReferenceBook()
        book._refs = dict(self._refs)
        return book

    def forget(self) -> None:
        """The receiver could not resolve a reference: trust none of them."""
        self._refs.clear()

    def usable(self, oldest_slot: int) -> Mapping[tuple[str, str], Reference]:
        """References not older than ``oldest_slot``: older ones go as key values."""
        return {k: v for k, v in self._refs.items() if v.slot >= oldest_slot}


def latest(readings: Iterable[Reading]) -> list[Reading]:
    """The newest reading of each series: all `ReferenceBook.learn` needs of a batch."""
    newest: dict[tuple[str, str], Reading] = {}
    for r in readings:
        old = newest.get((r.meter, r.quantity))
        if old is None or r.slot >= old.slot:
            newest[(r.meter, r.quantity)] = r
    return list(newest.values())
