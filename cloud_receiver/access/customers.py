"""Customers of the portal: a login name, an Argon2id password hash, a language, and
the meters linked to them (with those meters' prepaid accounts). A customer sees only
what is linked to them: `owner_of_meter` / `owner_of_account` name the customer a
resource belongs to, and `cloud_receiver.access.policy.authorize` compares it with who
asks.

Logging in counts failures and locks the customer out with the operators' settings
(``lockout-failures``, ``lockout-duration``); both outcomes are audited as
``customer:NAME``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from cloud_receiver.access import audit
from cloud_receiver.access import operators as ops
from cloud_receiver.access import settings as access_settings
from cloud_receiver.access.policy import AccessError, Principal
from cloud_receiver.errors import NotFound
from cloud_receiver.storage import Storage
from cloud_receiver.storage.schema import accounts, customer_meters, customers

LANGUAGES = ("zh", "en")
_C = customers.c
_M = customer_meters.c
_GENERIC = "login refused: wrong customer name or password"


class CustomerError(ops.OperatorError):
    """Bad input about a customer (name, password, meter, language)."""


class UnknownCustomer(NotFound, CustomerError):
    """No customer of that name."""


class CustomerLoginRefused(AccessError):
    """Wrong name or password; locked out; disabled."""


@dataclass(frozen=True)
class Customer:
    name: str
    language: str
    disabled: bool
    failures: int
    locked_until: float | None
    created_at: float
    meters: tuple[str, ...]
    accounts: tuple[str, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "language": self.language,
            "disabled": self.disabled,
            "failures": self.failures,
            "locked_until": self.locked_until,
            "created_at": self.created_at,
            "meters": list(self.meters),
            "accounts": list(self.accounts),
        }


def _language(text: str) -> str:
    if text not in LANGUAGES:
        raise CustomerError(f"language {text!r}: expected one of {', '.join(LANGUAGES)}")
    return text


def meters_of(conn: Connection, name: str) -> list[str]:
    return list(
        conn.execute(select(_M.meter).where(_M.customer == name).order_by(_M.meter)).scalars()
    )


def accounts_of(conn: Connection, name: str) -> list[str]:
    q = (
        select(accounts.c.account)
        .join(customer_meters, customer_meters.c.meter == accounts.c.meter)
        .where(_M.customer == name)
        .order_by(accounts.c.account)
    )
    return list(conn.execute(q).scalars())


def owner_of_meter(conn: Connection, meter: str) -> str | None:
    return conn.execute(select(_M.customer).where(_M.meter == meter)).scalar()


def owners_of(conn: Connection, meters: list[str]) -> dict[str, str]:
    """meter → customer, for those of ``meters`` linked to one."""
    found = conn.execute(select(_M.meter, _M.customer).where(_M.meter.in_(meters))).all()
    return {r[0]: r[1] for r in found}


def owner_of_account(conn: Connection, account: str) -> str | None:
    q = (
        select(_M.customer)
        .join(accounts, accounts.c.meter == _M.meter)
        .where(accounts.c.account == account)
    )
    return conn.execute(q).scalar()


def get(conn: Connection, name: str) -> Customer:
    row = conn.execute(
        select(
            _C.name, _C.language, _C.disabled, _C.failures, _C.locked_until, _C.created_at
        ).where(_C.name == name)
    ).first()
    if row is None:
        raise UnknownCustomer(f"no customer {name!r}")
    return Customer(
        row[0],
        row[1],
        bool(row[2]),
        int(row[3]),
        None if row[4] is None else float(row[4]),
        float(row[5]),
        tuple(meters_of(conn, name)),
        tuple(accounts_of(conn, name)),
    )


def all_customers(conn: Connection) -> list[Customer]:
    return [get(conn, n) for n in conn.execute(select(_C.name).order_by(_C.name)).scalars()]


def _meters_for(conn: Connection, meters: list[str], account_ids: list[str]) -> list[str]:
    found = list(meters)
    for account in account_ids:
        meter = conn.execute(select(accounts.c.meter).where(accounts.c.account == account)).scalar()
        if meter is None:
            raise CustomerError(f"--account {account!r}: no such prepaid account")
        found.append(meter)
    return sorted(set(found))


def add(
    conn: Connection,
    name: str,
    password: str,
    *,
    meters: list[str],
    account_ids: list[str],
    language: str,
    by: str,
    now: float,
) -> Customer:
    """A new customer linked to ``meters`` and the meters of ``account_ids``."""
    ops.check_name(name)
    password_hash = ops.hash_password(password)
    if conn.execute(select(_C.name).where(_C.name == name)).first() is not None:
        raise CustomerError(f"customer {name!r} exists already")
    conn.execute(
        insert(customers).values(
            name=name,
            password_hash=password_hash,
            language=_language(language),
            disabled=0,
            failures=0,
            locked_until=None,
            created_at=now,
            created_by=by,
            updated_at=now,
        )
    )
    link(conn, name, _meters_for(conn, meters, account_ids), by=by, now=now)
    return get(conn, name)


def link(conn: Connection, name: str, meters: list[str], *, by: str, now: float) -> None:
    """Link meters to ``name``; a meter linked to another customer is refused."""
    for meter in meters:
        owner = owner_of_meter(conn, meter)
        if owner is not None and owner != name:
            raise CustomerError(f"meter {meter} is linked to customer {owner!r} already")
        if owner is None:
            conn.execute(
                insert(customer_meters).values(
                    meter=meter, customer=name, linked_at=now, linked_by=by
                )
            )


def unlink(conn: Connection, name: str, meters: list[str]) -> None:
    conn.execute(delete(customer_meters).where(_M.customer == name, _M.meter.in_(meters)))


def end_sessions(conn: Connection, name: str, now: float) -> None:
    """Void every portal session of ``name`` started until now (logout, a new password)."""
    conn.execute(update(customers).where(_C.name == name).values(sessions_after=now))


def set_disabled(conn: Connection, name: str, disabled: bool, now: float) -> None:
    get(conn, name)
    values: dict[str, Any] = {"disabled": int(disabled), "updated_at": now, "sessions_after": now}
    if not disabled:
        values.update(failures=0, locked_until=None)
    conn.execute(update(customers).where(_C.name == name).values(**values))


def set_password(conn: Connection, name: str, password: str, now: float) -> None:
    """A new password (given by a billing clerk or administrator); ends a lockout."""
    password_hash = ops.hash_password(password)
    get(conn, name)
    conn.execute(
        update(customers)
        .where(_C.name == name)
        .values(
            password_hash=password_hash,
            failures=0,
            locked_until=None,
            updated_at=now,
            sessions_after=now,
        )
    )


def login(storage: Storage, name: str, password: str, *, where: str, now: float) -> Principal:
    """The customer's principal, or `CustomerLoginRefused` after the failure is counted
    (and, at ``lockout-failures`` in a row, the lockout) and audited."""
    with storage.transaction() as tx:
        stored = tx.execute(select(_C.password_hash).where(_C.name == name)).scalar()
    # The slow part (Argon2id) outside the write transaction; decided again inside it.
    ok = ops.password_matches(stored, password)
    who = Principal.customer(name, where)
    with storage.transaction() as tx:
        row = tx.execute(
            select(_C.password_hash, _C.disabled, _C.failures, _C.locked_until)
            .where(_C.name == name)
            .with_for_update()
        ).first()
        conf = access_settings.load(tx)
        reason = None
        message = _GENERIC
        if row is None:
            reason = "unknown customer"
        elif row[3] is not None and float(row[3]) > now:
            reason = "locked"
            message = f"customer {name} is locked out after repeated failed logins"
        elif not ok or row[0] != stored:
            failures = int(row[2]) + 1
            locked = now + conf.lockout_duration if failures >= conf.lockout_failures else None
            tx.execute(
                update(customers)
                .where(_C.name == name)
                .values(failures=failures, locked_until=locked)
            )
            reason = "wrong password"
            if locked is not None:
                detail = {"failures": failures, "locked_until": locked}
                audit.alert(tx, "lockout", who.label, now, detail, where)
                message = f"{_GENERIC}; customer {name} is now locked out"
        elif row[1]:
            reason, message = "disabled", f"customer {name} is disabled"
        if reason is None:
            tx.execute(
                update(customers).where(_C.name == name).values(failures=0, locked_until=None)
            )
            audit.record(tx, who, kind="login", action="login", target=who.label, at=now)
            return who
        audit.record(
            tx,
            who,
            kind="login_failed",
            action="login",
            target=who.label,
            at=now,
            outcome="refused",
            detail={"reason": reason},
        )
    raise CustomerLoginRefused(message)


def check_enabled(conn: Connection, name: str, started_at: float) -> bool:
    """Whether a customer's portal session started at ``started_at`` still holds: the
    customer exists, is not disabled, and has not logged out (or had a new password)
    since."""
    row = conn.execute(select(_C.disabled, _C.sessions_after).where(_C.name == name)).first()
    return row is not None and not row[0] and (row[1] is None or started_at > float(row[1]))
