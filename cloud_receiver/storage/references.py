"""Resolving a batch's references from the readings table (`contract.wire.references`).

A version 3 batch may code a reading as a delta against a value the receiver committed
earlier. The value comes from the database, never from one receiver's memory, so every
receiver of a shared subscription resolves the same references, and one restored from
a backup finds that it lacks them (and asks for a key batch) instead of guessing.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select

from cloud_receiver.storage.database import Storage
from cloud_receiver.storage.schema import readings, refused_latest
from contract.wire import RefKey

METERS_PER_QUERY = 500  # one parameter per meter: within SQLite's host parameter limit


def resolve(
    storage: Storage, keys: Sequence[RefKey], concentrator: str | None = None
) -> dict[RefKey, tuple[str, float]]:
    """(value, read_at) of each key the readings table holds, or else, for a batch of
    ``concentrator``, the newest reading of that series it sent and was refused for
    (a meter it does not own: `schema.refused_latest`); absent keys are left out.

    One query per slot and block of meters: the primary key starts with the slot, and a
    live batch refers to one slot (the one before it) for all its series.
    """
    wanted = set(keys)
    by_slot: dict[int, set[str]] = defaultdict(set)
    for meter, _, slot in wanted:
        by_slot[slot].add(meter)
    found: dict[RefKey, tuple[str, float]] = {}
    r = readings.c
    with storage.read() as conn:
        for slot, meter_set in by_slot.items():
            meters = sorted(meter_set)
            for i in range(0, len(meters), METERS_PER_QUERY):
                query = select(r.meter, r.quantity, r.value, r.read_at).where(
                    r.slot == slot, r.meter.in_(meters[i : i + METERS_PER_QUERY])
                )
                for meter, quantity, value, read_at in conn.execute(query):
                    key = (meter, quantity, slot)
                    if key in wanted:
                        found[key] = (value, float(read_at))
        missing = sorted({k[0] for k in wanted if k not in found})
        if concentrator is None or not missing:
            return found
        f = refused_latest.c
        for i in range(0, len(missing), METERS_PER_QUERY):
            query = select(f.meter, f.quantity, f.slot, f.value, f.read_at).where(
                f.concentrator == concentrator, f.meter.in_(missing[i : i + METERS_PER_QUERY])
            )
            for meter, quantity, slot, value, read_at in conn.execute(query):
                key = (meter, quantity, int(slot))
                if key in wanted and key not in found:
                    found[key] = (value, float(read_at))
    return found
