"""What the simulator (`hil_sim`) and the benchmarks (`bench/`) may use of the receiver.

They drive the receiver as a deployment would — a private broker, the PKI, the database
and the ingest — and check what it stored; everything else in the package may move
without notice (an import-linter contract keeps `hil_sim` to this module).
"""

from __future__ import annotations

from collections.abc import Callable

from cloud_receiver.access import tokens
from cloud_receiver.access.policy import Role
from cloud_receiver.applications.analytics import forecast
from cloud_receiver.applications.analytics.energy import DEFAULT_TZ
from cloud_receiver.applications.analytics.tamper import TAMPER_EVENTS
from cloud_receiver.applications.fleet import pki
from cloud_receiver.applications.fleet.archive import Archive, format_archive_csv
from cloud_receiver.applications.fleet.local_broker import LocalBroker
from cloud_receiver.applications.reactions import Applications
from cloud_receiver.ingest.ingestor import GROUP as INGEST_GROUP
from cloud_receiver.ingest.ingestor import TAKE as INGEST_TAKE
from cloud_receiver.ingest.ingestor import Ingestor
from cloud_receiver.ingest.metrics import CachedFigures, CollectionRule
from cloud_receiver.storage import (
    Batch,
    MeterRecord,
    PostgresStorage,
    SqliteStorage,
    Storage,
    local_postgres_url,
    open_storage,
)


def receiver_ingestor(storage: Storage, keys: Callable[[str, int], bytes | None]) -> Ingestor:
    """The ingest pipeline as ``cloud-receiver run`` wires it (the applications react to
    each stored batch), without MQTT: for benchmarks and in-process simulations."""
    return Ingestor(storage, keys, Applications(storage))


def system_token(
    storage: Storage, name: str, role: str = "viewer", lifetime: float = 3600.0
) -> str:
    """An API token for system ``name`` in ``role`` (as `cloud-receiver token create
    --system` makes one), for benchmarks that drive `cloud-receiver web`."""
    import time

    with storage.transaction() as tx:
        _, text = tokens.create(tx, "system", name, Role(role), lifetime=lifetime, note="bench",
                                by="bench", now=time.time())  # fmt: skip
    return text


__all__ = [
    "DEFAULT_TZ",
    "INGEST_GROUP",
    "INGEST_TAKE",
    "TAMPER_EVENTS",
    "Archive",
    "Batch",
    "CachedFigures",
    "CollectionRule",
    "Ingestor",
    "LocalBroker",
    "MeterRecord",
    "PostgresStorage",
    "SqliteStorage",
    "Storage",
    "forecast",
    "format_archive_csv",
    "local_postgres_url",
    "open_storage",
    "pki",
    "receiver_ingestor",
    "system_token",
]
