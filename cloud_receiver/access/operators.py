"""Operator accounts: a name, a role, an Argon2id password hash and, for the roles that
can change supply or software (and for anyone who asks for one), a TOTP second factor.

The first administrator is made by whoever holds the deployment, without a session,
and only while no operator exists (`bootstrap_allowed`); every later change needs an
administrator (`cloud_receiver.access.policy`). The last active administrator can be
neither disabled nor given another role: nobody could manage the operators any more.
"""

from __future__ import annotations

import functools
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Connection, func, insert, select, update

from cloud_receiver.access.policy import TOTP_ROLES, AccessError, Role
from cloud_receiver.errors import EXIT_USAGE, NotFound, ReceiverError
from cloud_receiver.storage.schema import operators, sessions

NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
ISSUER = "meterflow"
_HASHER = PasswordHasher()  # Argon2id, argon2-cffi's defaults (RFC 9106, low memory)


@functools.cache
def _dummy_hash() -> str:
    """Verified against when the name is unknown, so a wrong name costs the same time."""
    return _HASHER.hash("meterflow: no such operator")


class OperatorError(ReceiverError, ValueError):
    """Bad input about an operator (name, role, password)."""

    exit_code = EXIT_USAGE


class UnknownOperator(NotFound, OperatorError):
    """No operator of that name."""


@dataclass(frozen=True)
class Operator:
    """An operator as others may see it (no secrets)."""

    name: str
    role: Role
    disabled: bool
    has_totp: bool
    failures: int
    locked_until: float | None
    created_at: float
    created_by: str
    updated_at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": str(self.role),
            "disabled": self.disabled,
            "totp": self.has_totp,
            "failures": self.failures,
            "locked_until": self.locked_until,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class Credentials:
    """What a login checks (read in one place, never shown)."""

    operator: Operator
    password_hash: str
    totp_secret: str | None
    totp_last_step: int


_O = operators.c
_COLUMNS = (
    _O.name,
    _O.role,
    _O.disabled,
    _O.totp_secret,
    _O.failures,
    _O.locked_until,
    _O.created_at,
    _O.created_by,
    _O.updated_at,
    _O.password_hash,
    _O.totp_last_step,
)


def _credentials(r: Sequence[Any]) -> Credentials:
    op = Operator(
        r[0],
        Role(r[1]),
        bool(r[2]),
        r[3] is not None,
        int(r[4]),
        None if r[5] is None else float(r[5]),
        float(r[6]),
        r[7],
        float(r[8]),
    )
    return Credentials(op, r[9], r[3], int(r[10]))


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise OperatorError(
            f"operator name {name!r}: expected 1-64 characters from A-Z a-z 0-9 . _ -"
        )
    return name


def parse_role(text: str) -> Role:
    try:
        role = Role(text)
    except ValueError:
        role = Role.SYSTEM
    if role is Role.SYSTEM:
        choices = ", ".join(
            str(r) for r in (Role.VIEWER, Role.BILLING_CLERK, Role.OPERATOR, Role.ADMINISTRATOR)
        )
        raise OperatorError(f"role {text!r}: expected one of {choices}")
    return role


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise OperatorError(f"password: at least {MIN_PASSWORD} characters (got {len(password)})")
    if len(password) > MAX_PASSWORD:
        raise OperatorError(f"password: at most {MAX_PASSWORD} characters")
    return password


def hash_password(password: str) -> str:
    return _HASHER.hash(check_password(password))


def password_matches(password_hash: str | None, password: str) -> bool:
    """Argon2id verification; an unknown operator (``None``) costs the same time."""
    try:
        return (
            _HASHER.verify(password_hash or _dummy_hash(), password) and password_hash is not None
        )
    except (VerificationError, InvalidHashError):
        return False


def new_totp_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(name: str, secret: str) -> str:
    """The ``otpauth://`` URI an authenticator app reads (as a QR code or typed in)."""
    return pyotp.TOTP(secret).provisioning_uri(name=name, issuer_name=ISSUER)


def totp_step(secret: str, code: str, now: float, last_step: int) -> int | None:
    """The time step ``code`` is good for (one step of clock skew either way), if it is
    later than the last one used: a code is accepted once."""
    totp = pyotp.TOTP(secret)
    code = code.strip().replace(" ", "")
    if not (code.isdigit() and len(code) == totp.digits):
        return None
    current = int(now // totp.interval)
    for step in (current - 1, current, current + 1):
        if step > last_step and hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


def count(conn: Connection) -> int:
    return int(conn.execute(select(func.count()).select_from(operators)).scalar_one())


def bootstrap_allowed(conn: Connection) -> bool:
    """No operator exists yet: the first administrator may be made without a session."""
    return count(conn) == 0


def credentials(conn: Connection, name: str, *, lock: bool = False) -> Credentials | None:
    query = select(*_COLUMNS).where(_O.name == name)
    row = conn.execute(query.with_for_update() if lock else query).first()
    return None if row is None else _credentials(row)


def get(conn: Connection, name: str) -> Operator:
    found = credentials(conn, name)
    if found is None:
        raise UnknownOperator(f"no operator {name!r}")
    return found.operator


def all_operators(conn: Connection) -> list[Operator]:
    return [_credentials(r).operator for r in conn.execute(select(*_COLUMNS).order_by(_O.name))]


def add(
    conn: Connection,
    name: str,
    role: Role,
    password: str,
    *,
    with_totp: bool,
    by: str,
    now: float,
) -> tuple[Operator, str | None]:
    """A new operator; returns it and its TOTP secret (to show once), if it has one."""
    check_name(name)
    password_hash = hash_password(password)
    if credentials(conn, name) is not None:
        raise OperatorError(f"operator {name!r} exists already")
    secret = new_totp_secret() if with_totp or role in TOTP_ROLES else None
    conn.execute(
        insert(operators).values(
            name=name,
            role=str(role),
            password_hash=password_hash,
            totp_secret=secret,
            totp_last_step=0,
            disabled=0,
            failures=0,
            locked_until=None,
            created_at=now,
            created_by=by,
            updated_at=now,
        )
    )
    return get(conn, name), secret


def _active_administrators(conn: Connection) -> set[str]:
    rows = conn.execute(
        select(_O.name).where(_O.role == str(Role.ADMINISTRATOR), _O.disabled == 0)
    ).scalars()
    return set(rows)


def _keep_an_administrator(conn: Connection, name: str, what: str) -> None:
    if _active_administrators(conn) == {name}:
        raise AccessError(f"operator {name} is the last active administrator: cannot {what}")


def set_role(conn: Connection, name: str, role: Role, now: float) -> str | None:
    """Give ``name`` another role; returns a new TOTP secret when the new role needs a
    second factor the operator does not have yet (to show once)."""
    found = credentials(conn, name, lock=True)
    if found is None:
        raise UnknownOperator(f"no operator {name!r}")
    if found.operator.role is Role.ADMINISTRATOR and role is not Role.ADMINISTRATOR:
        _keep_an_administrator(conn, name, f"make it {role}")
    secret = None
    values: dict[str, Any] = {"role": str(role), "updated_at": now}
    if role in TOTP_ROLES and found.totp_secret is None:
        secret = new_totp_secret()
        values.update(totp_secret=secret, totp_last_step=0)
    conn.execute(update(operators).where(_O.name == name).values(**values))
    return secret


def set_disabled(conn: Connection, name: str, disabled: bool, now: float) -> None:
    """Disable (ending every session of the operator) or enable (also ending a lockout)."""
    found = credentials(conn, name, lock=True)
    if found is None:
        raise UnknownOperator(f"no operator {name!r}")
    if disabled:
        if found.operator.role is Role.ADMINISTRATOR:
            _keep_an_administrator(conn, name, "disable it")
        conn.execute(
            update(sessions)
            .where(sessions.c.operator == name, sessions.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
        conn.execute(update(operators).where(_O.name == name).values(disabled=1, updated_at=now))
    else:
        conn.execute(
            update(operators)
            .where(_O.name == name)
            .values(disabled=0, failures=0, locked_until=None, updated_at=now)
        )


def reset_totp(conn: Connection, name: str, now: float) -> str:
    """A new TOTP secret (to show once); the old authenticator stops working."""
    if credentials(conn, name, lock=True) is None:
        raise UnknownOperator(f"no operator {name!r}")
    secret = new_totp_secret()
    conn.execute(
        update(operators)
        .where(_O.name == name)
        .values(totp_secret=secret, totp_last_step=0, updated_at=now)
    )
    return secret


def set_password(conn: Connection, name: str, password: str, now: float) -> None:
    password_hash = hash_password(password)
    if credentials(conn, name, lock=True) is None:
        raise UnknownOperator(f"no operator {name!r}")
    conn.execute(
        update(operators)
        .where(_O.name == name)
        .values(password_hash=password_hash, failures=0, locked_until=None, updated_at=now)
    )
