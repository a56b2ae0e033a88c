"""Storage: the receiver's database, one layer for SQLite and PostgreSQL.

Owns the schema (`.schema`, SQLAlchemy Core), its migrations (`.migrations`, Alembic,
run by `.migrate` whenever a database is opened, adopting databases of the releases
before migrations), the exactly-once ingest of batches, a group per transaction
(`.ingest`), every query the receiver's applications run (`.database`), and what
differs per backend (`.backends`). It imports nothing of the receiver's above it.
"""

from cloud_receiver.storage.database import (
    PostgresStorage,
    SqliteStorage,
    Storage,
    open_storage,
)
from cloud_receiver.storage.ingest import Batch
from cloud_receiver.storage.local import local_postgres_url
from cloud_receiver.storage.records import (
    CommandRecord,
    ConcentratorInfo,
    Conflict,
    IngestResult,
    MeterRecord,
    Quarantined,
    StoredRow,
)
from contract.wire import REPLAY_WINDOW

__all__ = [
    "REPLAY_WINDOW",
    "Batch",
    "CommandRecord",
    "ConcentratorInfo",
    "Conflict",
    "IngestResult",
    "MeterRecord",
    "PostgresStorage",
    "Quarantined",
    "SqliteStorage",
    "Storage",
    "StoredRow",
    "local_postgres_url",
    "open_storage",
]
