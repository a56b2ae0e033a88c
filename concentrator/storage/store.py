"""Store-and-forward for the concentrator: readings, events and the outbox in one SQLite file.

A reading exists once `Store.add_readings` has returned. From then on it is either
delivered (the receiver acked its batch) or explicitly recorded as lost by a ``loss``
event (quota eviction). It is never silently gone. Everything that changes more than
one row runs in one transaction, so a kill -9 at any point leaves the old state or the
new one. WAL mode makes that cheap, and ``synchronous=FULL`` also covers power loss.
The schema, and what keeps a reading near 51 bytes, is in `concentrator.storage.schema`.
"""

from __future__ import annotations

from concentrator.storage.events import Events
from concentrator.storage.quota import Quota


class Store(Quota, Events):
    """The concentrator's SQLite store. Synchronous and safe to call from any one thread at a time.

    Create it with `Store.open`. All methods take an internal lock, so calls from
    several ``asyncio.to_thread`` workers are serialised instead of interleaving
    transactions on one connection.
    """
