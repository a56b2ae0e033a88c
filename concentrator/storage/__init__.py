"""Store-and-forward: the SQLite store and the writer the running daemon reaches it by.

Owns the store file (schema and migrations, packed values, readings and the outbox,
events and missing slots, retention and the quota) and the group-commit writer. This
module is its interface: other packages import from here.
"""

from concentrator.storage.errors import (
    StoreCorruptError,
    StoreError,
    StoreFullError,
    StoreKeyError,
)
from concentrator.storage.held import HeldJournal, HeldJournalError
from concentrator.storage.records import (
    Backlog,
    Batch,
    Missing,
    ReadSuccess,
    SealedBatch,
    Stats,
    StoredEvent,
    StoredReading,
)
from concentrator.storage.schema import SCHEMA_VERSION, STORE_MIN_READER
from concentrator.storage.store import Store, open_store, open_store_read_only
from concentrator.storage.writer import MAX_PENDING, StoreWriter

__all__ = [
    "MAX_PENDING",
    "SCHEMA_VERSION",
    "STORE_MIN_READER",
    "Backlog",
    "Batch",
    "HeldJournal",
    "HeldJournalError",
    "Missing",
    "ReadSuccess",
    "SealedBatch",
    "Stats",
    "Store",
    "StoreCorruptError",
    "StoreError",
    "StoreFullError",
    "StoreKeyError",
    "StoreWriter",
    "StoredEvent",
    "StoredReading",
    "open_store",
    "open_store_read_only",
]
