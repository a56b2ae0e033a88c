"""What the store hands out: rows as frozen records, and figures about itself."""

from __future__ import annotations

from dataclasses import dataclass

from contract.records import Event, Reading


@dataclass(frozen=True, slots=True)
class StoredReading:
    id: int
    reading: Reading
    batch_id: int | None


@dataclass(frozen=True, slots=True)
class StoredEvent:
    id: int
    event: Event
    batch_id: int | None


@dataclass(frozen=True, slots=True)
class Missing:
    meter: str
    quantity: str
    slot: int
    reason: str


@dataclass(frozen=True, slots=True)
class Batch:
    """Rows taken out of the outbox together. Events come first, then readings oldest first."""

    batch_id: int
    readings: tuple[StoredReading, ...]
    events: tuple[StoredEvent, ...]


@dataclass(frozen=True, slots=True)
class SealedBatch:
    """A batch in flight with the exact bytes it was sealed to (what is resent)."""

    batch: Batch
    payload: bytes


@dataclass(frozen=True, slots=True)
class Backlog:
    """Undelivered rows: both those still in the outbox and those in unacked batches."""

    readings: int
    events: int
    oldest_slot: int | None
    oldest_read_at: float | None


@dataclass(frozen=True, slots=True)
class ReadSuccess:
    key: str
    read: int
    missing: int

    @property
    def rate(self) -> float | None:
        total = self.read + self.missing
        return self.read / total if total else None


@dataclass(frozen=True, slots=True)
class Stats:
    readings: int
    events: int
    missing: int
    batches: int
    page_size: int
    page_count: int
    freelist_count: int
    db_bytes: int
    wal_bytes: int
    bytes_per_reading: float | None

    @property
    def file_bytes(self) -> int:
        return self.db_bytes + self.wal_bytes
