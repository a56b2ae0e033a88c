"""The API's documents (pydantic models): what the OpenAPI document at
``/api/openapi.json`` describes and every response is validated against in the tests.

Values are exact decimal text (``"12.50"``), never floats; times are Unix seconds;
money is yuan as decimal text with its integer cents beside it.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

DECIMAL = r"^-?[0-9]+(\.[0-9]+)?$"
MONEY = r"^-?[0-9]+\.[0-9]{2}$"


class Error(BaseModel):
    detail: str = Field(description="What is wrong, naming the field or the rule.")


class Me(BaseModel):
    principal: str = Field(description="As the audit log names it: operator:alice, customer:c1…")
    kind: Literal["operator", "system", "customer"]
    name: str
    role: str
    via: Literal["session", "token"]
    meters: list[str] | None = Field(None, description="A customer's meters.")
    accounts: list[str] | None = Field(None, description="A customer's prepaid accounts.")
    csrf_token: str | None = Field(None, description="For X-CSRF-Token (cookie callers).")


class Meter(BaseModel):
    meter: str
    area: str | None = Field(description="From the archive (null: not in it).")
    role: str | None
    account: str | None
    group: str | None
    multiplier: str | None = Field(pattern=DECIMAL)
    customer: str | None = Field(description="The customer it is linked to, if any.")


class MeterPage(BaseModel):
    items: list[Meter]
    next: str | None = Field(description="Pass as `after` for the next page; null: the last.")


class Reading(BaseModel):
    meter: str
    quantity: str = Field(description="Canonical quantity name (docs/quantities.md).")
    slot: int = Field(description="The interval's start, Unix seconds.")
    value: str = Field(pattern=DECIMAL, description="Exact decimal, as the meter reported it.")
    unit: str
    read_at: float
    source: str
    concentrator: str


class ReadingPage(BaseModel):
    items: list[Reading]
    next: str | None


class Event(BaseModel):
    id: int
    meter: str
    concentrator: str
    kind: str
    severity: str
    detail: dict[str, Any]
    at: float


class EventPage(BaseModel):
    items: list[Event]
    next: str | None


class Account(BaseModel):
    account: str
    meter: str
    concentrator: str
    balance: str = Field(pattern=MONEY, description="Yuan.")
    balance_cents: int
    grace: str = Field(pattern=MONEY)
    low: str = Field(pattern=MONEY)
    state: str = Field(description="connected, disconnecting, disconnected, reconnecting")
    low_warned: bool
    billed_slot: int | None
    billed_kwh: str | None
    created_at: float


class LedgerEntry(BaseModel):
    id: int
    at: float
    kind: str
    ref: str
    amount: str = Field(pattern=MONEY)
    amount_cents: int
    balance: str = Field(pattern=MONEY)
    balance_cents: int
    detail: dict[str, Any]


class LedgerPage(BaseModel):
    items: list[LedgerEntry]
    next: str | None


class TopupIn(BaseModel):
    amount: str = Field(pattern=r"^[0-9]+(\.[0-9]{1,2})?$", description="Yuan, e.g. 50.00")
    reference: str = Field(description="The payment provider's own reference (idempotency).")
    provider: str = Field("api", description="The payment channel's name.")


class TopupOut(BaseModel):
    account: Account
    reference: str
    amount: str
    replayed: bool = Field(description="True: this reference credited the account before.")


class Command(BaseModel):
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
    status: str
    result: dict[str, Any] | None
    updated_at: float


class CommandLogEntry(BaseModel):
    at: float
    status: str
    detail: dict[str, Any]


class CommandDetail(Command):
    log: list[CommandLogEntry]


class CommandIn(BaseModel):
    concentrator: str
    action: Literal[
        "relay_open",
        "relay_close",
        "read",
        "clock_check",
        "time_sync",
        "add_meter",
        "remove_meter",
    ]
    meters: list[str] = Field(default_factory=list)
    params: dict[str, Any] = Field(default_factory=dict)
    not_before: float | None = None
    valid_for_s: float = Field(3600.0, gt=0, le=7 * 86400)


class RequestIn(BaseModel):
    kind: Literal["command", "dr.event", "archive.import", "archive.push", "supply"]
    params: dict[str, Any]


class Request(BaseModel):
    id: int
    kind: str
    action: str
    params: dict[str, Any]
    attachment_sha256: str | None
    requested_by: str
    origin: str
    created_at: float
    expires_at: float
    approvals_needed: int
    status: str
    result: dict[str, Any] | None
    updated_at: float
    approved_by: list[str]


class CompletenessTotals(BaseModel):
    meters: int  # meter-days
    complete: int
    success_rate: float | None
    expected: int
    live: int
    recovered: int
    late: int
    missing: int
    ratio: float | None


class CompletenessMeterDay(BaseModel):
    day: str
    meter: str
    area: str
    concentrator: str | None
    expected: int
    live: int
    recovered: int
    late: int
    missing: int
    status: str


class Completeness(BaseModel):
    """As `cloud-receiver completeness --json` prints it (docs/receiver.md)."""

    plan: dict[str, int | str]
    since: str
    until: str
    at: str
    overall: CompletenessTotals
    days: dict[str, CompletenessTotals]
    concentrators: dict[str, CompletenessTotals]
    areas: dict[str, CompletenessTotals]
    meters: list[CompletenessMeterDay]
    reported: list[dict[str, Any]]
    more: int
