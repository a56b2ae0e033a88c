"""Store-and-forward for the concentrator: readings, events and the outbox in one SQLite file.

A reading exists once `Store.add_readings` has returned. From then on it is either
delivered (the receiver acked its batch) or explicitly recorded as lost by a ``loss``
event (quota eviction). It is never silently gone. Everything that changes more than
one row runs in one transaction, so a kill -9 at any point leaves the old state or the
new one. WAL mode makes that cheap, and ``synchronous=FULL`` also covers power loss.
The schema, and what keeps a reading near 51 bytes, is in `concentrator.storage.schema`.
"""

from __future__ import annotations

from concentrator.config.model import StorageSection
from concentrator.storage.errors import StoreKeyError
from concentrator.storage.events import Events
from concentrator.storage.quota import Quota


class Store(Quota, Events):
    """The concentrator's SQLite store. Synchronous and safe to call from any one thread at a time.

    Create it with `Store.open`. All methods take an internal lock, so calls from
    several ``asyncio.to_thread`` workers are serialised instead of interleaving
    transactions on one connection.
    """


def store_key(section: StorageSection) -> bytes | None:
    """The store's key from ``[storage] key_file`` (None: not encrypted); a key file that
    cannot be read or is malformed is a `StoreKeyError` naming the key."""
    try:
        return section.key()
    except (ValueError, OSError) as exc:
        raise StoreKeyError(f"[storage] key_file: {exc}") from exc


def open_store(section: StorageSection) -> Store:
    """Open the store a config's ``[storage]`` names, with its key when it has one: the
    one way every reader of a configured store (the daemon, ``stats``) opens it."""
    key = store_key(section)
    return Store.open(
        section.path,
        synchronous=section.synchronous,
        quota_bytes=section.quota_mb * 1024 * 1024 if section.quota_mb else None,
        retention_s=section.retention_days * 86400,
        key=key,
    )


def open_store_read_only(section: StorageSection) -> Store:
    """Open the store a config's ``[storage]`` names for queries only (``concentrator
    stats``), with its key when it has one: nothing created, migrated or written."""
    return Store.open_read_only(section.path, key=store_key(section))
