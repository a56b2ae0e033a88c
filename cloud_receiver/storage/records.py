"""What the storage returns and takes: plain rows, free of SQL."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

Role = Literal["total", "customer"]


class IngestResult(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    REPLAY = "replay"  # older than the window and unknown: refused


@dataclass(frozen=True)
class StoredRow:
    meter: str
    quantity: str
    slot: int
    value: str
    unit: str
    read_at: float
    source: str
    concentrator: str
    seq: int


@dataclass(frozen=True)
class ConcentratorInfo:
    concentrator: str
    last_seen: float
    batches: int
    readings: int
    max_seq: int
    missing_seqs: int  # sequence numbers below max_seq never received (gaps)


@dataclass(frozen=True)
class Quarantined:
    id: int
    received_at: float
    topic: str
    concentrator: str | None
    seq: int | None
    reason: str
    detail: str
    size: int  # the payload's length as it arrived
    kept: int  # bytes of it kept (a prefix beyond the budget's prefix_bytes)


@dataclass(frozen=True)
class Conflict:
    """A second, different value for a stored (meter, quantity, slot) (`.conflicts`):
    the stored one (which stands) and the one that arrived later, each with its source
    (concentrator, batch) and times."""

    id: int
    meter: str
    quantity: str
    slot: int
    stored_value: str
    stored_unit: str
    stored_read_at: float
    stored_concentrator: str
    stored_seq: int
    stored_received_at: float
    value: str
    unit: str
    read_at: float
    source: str
    concentrator: str
    seq: int
    received_at: float


@dataclass(frozen=True)
class MeterRecord:
    """One meter of the archive (`cloud_receiver.applications.fleet.archive`)."""

    meter: str
    area: str
    role: Role
    account: str = ""
    group: str = ""
    multiplier: Decimal = Decimal(1)


@dataclass(frozen=True)
class CommandRecord:
    """A signed downlink command and what became of it."""

    id: str
    concentrator: str
    counter: int
    action: str
    meters: list[str]
    params: dict[str, Any]
    not_before: float
    not_after: float
    issued_at: float
    issued_by: str
    status: str  # issued, published, done, failed, refused, expired
    result: dict[str, Any] | None
    updated_at: float
    blob: bytes
