"""The receiver's tables, once for both backends (SQLAlchemy Core).

This is the schema the code queries; the migrations (``migrations/versions``) are the
history that builds it, and a test checks that a migrated database matches it. The
types are the portable ones; where a backend needs its own, it says so here:

- ids are ``BIGSERIAL`` on PostgreSQL and ``INTEGER PRIMARY KEY`` (the rowid) on SQLite;
- ``events.detail`` is JSONB on PostgreSQL, JSON text on SQLite;
- ``readings`` is ``WITHOUT ROWID`` on SQLite (the primary key is the table); the
  per-meter index serves one meter's curve or month (the portal, the API) on both.

Values and multipliers are exact decimal text, never floats; "group" is quoted by
SQLAlchemy (an SQL keyword).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

_ID = BigInteger().with_variant(Integer(), "sqlite")  # SQLite: an alias of the rowid


def _id() -> Column[int]:
    return Column("id", _ID, primary_key=True, autoincrement=True)


# ---------------------------------------------------------------- ingest (exactly once)
batches = Table(
    "batches",
    metadata,
    Column("concentrator", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("key_id", BigInteger, nullable=False),
    Column("received_at", Double, nullable=False),
    Column("readings", Integer, nullable=False),
    Column("events", Integer, nullable=False),
    PrimaryKeyConstraint("concentrator", "seq"),
)

readings = Table(
    "readings",
    metadata,
    Column("meter", Text, nullable=False),
    Column("quantity", Text, nullable=False),
    Column("slot", BigInteger, nullable=False),
    Column("value", Text, nullable=False),
    Column("unit", Text, nullable=False),
    Column("read_at", Double, nullable=False),
    Column("source", Text, nullable=False),
    Column("concentrator", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    PrimaryKeyConstraint("slot", "meter", "quantity"),
    sqlite_with_rowid=False,
)
Index("readings_by_meter", readings.c.meter, readings.c.slot)

events = Table(
    "events",
    metadata,
    _id(),
    Column("concentrator", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("kind", Text, nullable=False),
    Column("severity", Text, nullable=False),
    Column("meter", Text),
    Column("detail", JSON().with_variant(JSONB(), "postgresql"), nullable=False),
    Column("at", Double, nullable=False),
)
Index("events_by_kind", events.c.kind, events.c.at)  # the collection_day events of a day

quarantine = Table(
    "quarantine",
    metadata,
    _id(),
    Column("received_at", Double, nullable=False),
    Column("topic", Text, nullable=False),
    Column("concentrator", Text),
    Column("seq", BigInteger),
    Column("reason", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("payload", LargeBinary, nullable=False),  # at most the budget's prefix
    Column("size", BigInteger, nullable=False),  # the payload's length as it arrived
    Column("charged", BigInteger, nullable=False),  # bytes counted against the budget
)
Index("quarantine_by_sender", quarantine.c.concentrator, quarantine.c.id)

# The quarantine's budget (`.quarantine`): the totals (one row, id 1, locked by every
# quarantined message) and, per sender ("" when the topic named none), what it holds
# now and what it ever had kept, truncated and evicted.
quarantine_totals = Table(
    "quarantine_totals",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("rows", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
)

quarantine_senders = Table(
    "quarantine_senders",
    metadata,
    Column("sender", Text, primary_key=True),
    Column("rows", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),
    Column("kept", BigInteger, nullable=False),
    Column("truncated", BigInteger, nullable=False),
    Column("evicted", BigInteger, nullable=False),
    Column("evicted_bytes", BigInteger, nullable=False),
)

# A second, different value for a stored (meter, quantity, slot): both values, both
# sources and both times (`.conflicts`). The stored reading stays as it is.
reading_conflicts = Table(
    "reading_conflicts",
    metadata,
    _id(),
    Column("meter", Text, nullable=False),
    Column("quantity", Text, nullable=False),
    Column("slot", BigInteger, nullable=False),
    Column("stored_value", Text, nullable=False),
    Column("stored_unit", Text, nullable=False),
    Column("stored_read_at", Double, nullable=False),
    Column("stored_concentrator", Text, nullable=False),
    Column("stored_seq", BigInteger, nullable=False),
    Column("stored_received_at", Double, nullable=False),
    Column("value", Text, nullable=False),
    Column("unit", Text, nullable=False),
    Column("read_at", Double, nullable=False),
    Column("source", Text, nullable=False),
    Column("concentrator", Text, nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("received_at", Double, nullable=False),
)
Index("reading_conflicts_by_time", reading_conflicts.c.received_at)
Index("reading_conflicts_by_meter", reading_conflicts.c.meter, reading_conflicts.c.slot)

concentrators = Table(
    "concentrators",
    metadata,
    Column("concentrator", Text, primary_key=True),
    Column("last_seen", Double, nullable=False),
    Column("max_seq", BigInteger, nullable=False),
)

# ---------------------------------------------------------------- the meter archive
meters = Table(
    "meters",
    metadata,
    Column("meter", Text, primary_key=True),
    Column("area", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("account", Text, nullable=False),
    Column("group", Text, nullable=False),
    Column("multiplier", Text, nullable=False),
)
Index("meters_by_area", meters.c.area)

# Which concentrator each meter sits behind, from when (`cloud_receiver.storage.ownership`
# holds the rule): rows are only added, so a meter's history says who owned each slot.
meter_owners = Table(
    "meter_owners",
    metadata,
    _id(),
    Column("meter", Text, nullable=False),
    Column("effective_from", BigInteger, nullable=False),  # unix time, a slot boundary
    Column("concentrator", Text, nullable=False),
    Column("assigned_at", Double, nullable=False),
    Column("assigned_by", Text, nullable=False),
    UniqueConstraint("meter", "effective_from"),
)

# The newest reading of each series a concentrator sent for a meter it does not own:
# refused, never stored as a reading, but acked with its batch, so the concentrator
# codes its next reading of that series against it (`contract.wire.references`); the
# receiver resolves such a reference here (`references.resolve`) instead of answering
# "resync" for every other batch while the meter stays with its owner.
refused_latest = Table(
    "refused_latest",
    metadata,
    Column("concentrator", Text, nullable=False),
    Column("meter", Text, nullable=False),
    Column("quantity", Text, nullable=False),
    Column("slot", BigInteger, nullable=False),
    Column("value", Text, nullable=False),
    Column("read_at", Double, nullable=False),
    PrimaryKeyConstraint("concentrator", "meter", "quantity"),
)

# ---------------------------------------------------------------- downlink commands
# `command_log` is the receiver's audit log of every command.
command_counters = Table(
    "command_counters",
    metadata,
    Column("concentrator", Text, primary_key=True),
    Column("counter", BigInteger, nullable=False),
)

commands = Table(
    "commands",
    metadata,
    Column("id", Text, primary_key=True),
    Column("concentrator", Text, nullable=False),
    Column("counter", BigInteger, nullable=False),
    Column("action", Text, nullable=False),
    Column("meters", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("not_before", Double, nullable=False),
    Column("not_after", Double, nullable=False),
    Column("issued_at", Double, nullable=False),
    Column("issued_by", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("result", Text),
    Column("updated_at", Double, nullable=False),
    Column("blob", LargeBinary, nullable=False),
    UniqueConstraint("concentrator", "counter"),
)
Index("commands_by_status", commands.c.status, commands.c.concentrator, commands.c.counter)

command_log = Table(
    "command_log",
    metadata,
    _id(),
    Column("command_id", Text, nullable=False),
    Column("at", Double, nullable=False),
    Column("status", Text, nullable=False),
    Column("detail", Text, nullable=False),
)
Index("command_log_by_command", command_log.c.command_id, command_log.c.id)

# ---------------------------------------------------------------- software and rollouts
software_seen = Table(
    "software_seen",
    metadata,
    Column("concentrator", Text, primary_key=True),
    Column("software", Text, nullable=False),
    Column("wire_version", Integer, nullable=False),
    Column("seen_at", Double, nullable=False),
)

releases = Table(
    "releases",
    metadata,
    Column("version", Text, primary_key=True),
    Column("manifest", LargeBinary, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("payload", LargeBinary, nullable=False),
    Column("added_at", Double, nullable=False),
)

rollouts = Table(
    "rollouts",
    metadata,
    _id(),
    Column("version", Text, nullable=False),
    Column("stages", Text, nullable=False),
    Column("health_window_s", Double, nullable=False),
    Column("stage", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("reason", Text),
    Column("started_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)

rollout_targets = Table(
    "rollout_targets",
    metadata,
    Column("rollout", BigInteger, nullable=False),
    Column("concentrator", Text, nullable=False),
    Column("stage", Integer, nullable=False),
    Column("state", Text, nullable=False),
    Column("reason", Text),
    Column("command_id", Text),
    Column("detail", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
    PrimaryKeyConstraint("rollout", "concentrator"),
)

# ---------------------------------------------------------------- prepayment
accounts = Table(
    "accounts",
    metadata,
    Column("account", Text, primary_key=True),
    Column("meter", Text, nullable=False, unique=True),
    Column("concentrator", Text, nullable=False),
    Column("multiplier", Text, nullable=False),
    Column("tariff", Text, nullable=False),
    Column("balance_cents", BigInteger, nullable=False),
    Column("grace_cents", BigInteger, nullable=False),
    Column("low_cents", BigInteger, nullable=False),
    Column("billed_slot", BigInteger),
    Column("billed_kwh", Text),
    Column("billed_amount", Text, nullable=False),
    Column("state", Text, nullable=False),
    Column("low_warned", Integer, nullable=False),
    Column("command_id", Text),
    Column("command_at", Double),
    Column("created_at", Double, nullable=False),
)

ledger = Table(
    "ledger",
    metadata,
    _id(),
    Column("account", Text, nullable=False),
    Column("at", Double, nullable=False),
    Column("kind", Text, nullable=False),
    Column("ref", Text, nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("balance_cents", BigInteger, nullable=False),
    Column("detail", Text, nullable=False),
    UniqueConstraint("account", "ref"),
)

# ---------------------------------------------------------------- demand response
dr_enrolment = Table(
    "dr_enrolment",
    metadata,
    Column("meter", Text, primary_key=True),
    Column("group", Text, nullable=False),
    Column("concentrator", Text, nullable=False),
)

dr_events = Table(
    "dr_events",
    metadata,
    Column("id", Text, primary_key=True),
    Column("group", Text, nullable=False),
    Column("start_at", Double, nullable=False),
    Column("end_at", Double, nullable=False),
    Column("limit_kw", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("created_at", Double, nullable=False),
)

# ---------------------------------------------------------------- supply state
# One row per meter whose supply an application has touched (`applications.supply`):
# the relay position last commanded, and the reasons that keep it open (a DR reason has
# a window: ``since``..``until``); every change is a row of ``supply_history``.
supply = Table(
    "supply",
    metadata,
    Column("meter", Text, primary_key=True),
    Column("concentrator", Text, nullable=False),
    Column("relay", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
)

supply_reasons = Table(
    "supply_reasons",
    metadata,
    Column("meter", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("ref", Text, nullable=False),
    Column("since", Double, nullable=False),
    Column("until", Double),
    Column("set_by", Text, nullable=False),
    Column("set_at", Double, nullable=False),
    Column("detail", Text, nullable=False),
    PrimaryKeyConstraint("meter", "reason"),
)

supply_history = Table(
    "supply_history",
    metadata,
    _id(),
    Column("meter", Text, nullable=False),
    Column("at", Double, nullable=False),
    Column("change", Text, nullable=False),
    Column("reason", Text),
    Column("by", Text, nullable=False),
    Column("reasons_after", Text, nullable=False),
    Column("detail", Text, nullable=False),
)
Index("supply_history_by_meter", supply_history.c.meter, supply_history.c.id)

# ---------------------------------------------------------------- operators and audit
# Who may use the receiver (`cloud_receiver.access`): operators with a role, their
# login sessions (each with its own Ed25519 public key), the requests they sign for the
# service to carry out and the approvals of a second operator, and the tamper-evident
# audit log: each entry holds the SHA-256 of the one before (`.audit`), and
# `audit_head` the last entry's number and hash (one row, locked by each append).
operators = Table(
    "operators",
    metadata,
    Column("name", Text, primary_key=True),
    Column("role", Text, nullable=False),
    Column("password_hash", Text, nullable=False),  # Argon2id, PHC string
    Column("totp_secret", Text),  # base32; None: no second factor
    Column("totp_last_step", BigInteger, nullable=False),  # a code is good once
    Column("disabled", Integer, nullable=False),
    Column("failures", Integer, nullable=False),  # failed logins in a row
    Column("locked_until", Double),
    Column("created_at", Double, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
)

operator_origins = Table(
    "operator_origins",
    metadata,
    Column("operator", Text, nullable=False),
    Column("origin", Text, nullable=False),
    Column("first_seen", Double, nullable=False),
    Column("last_seen", Double, nullable=False),
    PrimaryKeyConstraint("operator", "origin"),
)

sessions = Table(
    "sessions",
    metadata,
    Column("id", Text, primary_key=True),
    Column("operator", Text, nullable=False),
    Column("public_key", LargeBinary, nullable=False),  # Ed25519, 32 bytes
    Column("origin", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("revoked_at", Double),
)
Index("sessions_by_operator", sessions.c.operator)

requests = Table(
    "requests",
    metadata,
    _id(),
    Column("nonce", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("params", Text, nullable=False),
    Column("attachment", LargeBinary),
    Column("attachment_sha256", Text),
    Column("requested_by", Text, nullable=False),
    Column("session", Text, nullable=False),
    Column("origin", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("approvals_needed", Integer, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    Column("status", Text, nullable=False),
    Column("result", Text),
    Column("updated_at", Double, nullable=False),
)
Index("requests_by_status", requests.c.status, requests.c.id)

approvals = Table(
    "approvals",
    metadata,
    Column("request", BigInteger, nullable=False),
    Column("operator", Text, nullable=False),
    Column("session", Text, nullable=False),
    Column("at", Double, nullable=False),
    Column("signature", LargeBinary, nullable=False),
    PrimaryKeyConstraint("request", "operator"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", Double, nullable=False),
    Column("principal", Text, nullable=False),
    Column("origin", Text, nullable=False),
    Column("kind", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("target", Text, nullable=False),
    Column("outcome", Text, nullable=False),
    Column("detail", Text, nullable=False),  # canonical JSON, hashed as stored
    Column("session", Text),
    Column("signature", LargeBinary),
    Column("prev_hash", Text, nullable=False),
    Column("hash", Text, nullable=False),
)
Index("audit_by_principal", audit_log.c.principal, audit_log.c.at)
Index("audit_by_kind", audit_log.c.kind, audit_log.c.at)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", BigInteger, nullable=False),
    Column("hash", Text, nullable=False),
)

access_settings = Table(
    "access_settings",
    metadata,
    Column("name", Text, primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("updated_by", Text, nullable=False),
)

# ---------------------------------------------------------------- the portal and the API
# Customers who log in to the portal (`cloud_receiver.access.customers`), each seeing
# only the meters linked to them (and the prepaid accounts of those meters); the API
# tokens of operators and systems (`cloud_receiver.access.tokens`), stored hashed; and
# the payment providers' top-ups, one row per provider reference (idempotent).
customers = Table(
    "customers",
    metadata,
    Column("name", Text, primary_key=True),
    Column("password_hash", Text, nullable=False),  # Argon2id, PHC string
    Column("language", Text, nullable=False),
    Column("disabled", Integer, nullable=False),
    Column("failures", Integer, nullable=False),
    Column("locked_until", Double),
    Column("sessions_after", Double),  # portal sessions started before it are void
    Column("created_at", Double, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
)

customer_meters = Table(
    "customer_meters",
    metadata,
    Column("meter", Text, primary_key=True),  # a meter is one customer's at a time
    Column("customer", Text, nullable=False),
    Column("linked_at", Double, nullable=False),
    Column("linked_by", Text, nullable=False),
)
Index("customer_meters_by_customer", customer_meters.c.customer)

api_tokens = Table(
    "api_tokens",
    metadata,
    Column("id", Text, primary_key=True),
    Column("kind", Text, nullable=False),  # "operator" or "system"
    Column("subject", Text, nullable=False),  # the operator's or the system's name
    Column("role", Text, nullable=False),
    Column("secret_sha256", Text, nullable=False),
    Column("session", Text),  # an operator token signs through a session of its own
    Column("note", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("revoked_at", Double),
    Column("last_used_at", Double),
)

payments = Table(
    "payments",
    metadata,
    Column("reference", Text, primary_key=True),  # the payment provider's own
    Column("account", Text, nullable=False),
    Column("amount_cents", BigInteger, nullable=False),
    Column("provider", Text, nullable=False),
    Column("ledger_ref", Text, nullable=False),
    Column("at", Double, nullable=False),
)

# ---------------------------------------------------------------- customer feedback
# A customer's question or complaint and its conversation (`applications.feedback`).
feedback = Table(
    "feedback",
    metadata,
    _id(),
    Column("account", Text, nullable=False),
    Column("raised_by", Text, nullable=False),
    Column("topic", Text, nullable=False),
    Column("subject", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Column("resolved_by", Text),
)
Index("feedback_by_account", feedback.c.account, feedback.c.id)
Index("feedback_by_status", feedback.c.status, feedback.c.id)

feedback_messages = Table(
    "feedback_messages",
    metadata,
    _id(),
    Column("feedback", BigInteger, nullable=False),
    Column("at", Double, nullable=False),
    Column("author", Text, nullable=False),
    Column("body", Text, nullable=False),
)
Index("feedback_messages_by_feedback", feedback_messages.c.feedback, feedback_messages.c.id)
