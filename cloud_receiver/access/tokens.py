"""API tokens: per operator or per system, scoped by role, revocable, stored hashed.

A token is ``mft_<id>_<secret>``: the id finds its row, the secret (32 random bytes)
is checked against the stored SHA-256 (a random secret needs no slow hash). An
*operator* token acts as that operator, in a role no wider than theirs, and signs its
requests and audit entries like a login session does: its Ed25519 key is derived from
the secret (HKDF), and its public half is registered as a session of its own, which
ends when the token expires or is revoked. A *system* token (a meter-data management
or billing system, a payment provider) acts as ``system:NAME`` in the role it was
given; it reads and tops up, but never asks for commands (a request is an accountable
operator's).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import Connection, insert, select, update

from cloud_receiver.access import operators as ops
from cloud_receiver.access.policy import PERMISSIONS, AccessError, Principal, Role
from cloud_receiver.access.sessions import public_bytes
from cloud_receiver.errors import NotFound
from cloud_receiver.storage.schema import api_tokens, sessions

PREFIX = "mft"
KINDS = ("operator", "system")
SYSTEM_ROLES = (Role.VIEWER, Role.BILLING_CLERK, Role.SYSTEM)
MAX_LIFETIME_S = 366 * 86400.0
_T = api_tokens.c


class TokenError(ops.OperatorError):
    """Bad input about a token (kind, role, lifetime)."""


class UnknownToken(NotFound, TokenError):
    """No token of that id."""


class TokenRefused(AccessError):
    """A token that is malformed, unknown, wrong, revoked, expired, or whose operator
    may no longer act in its role."""


@dataclass(frozen=True)
class Token:
    id: str
    kind: str
    subject: str
    role: Role
    note: str
    created_at: float
    created_by: str
    expires_at: float
    revoked_at: float | None
    last_used_at: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "subject": self.subject,
            "role": str(self.role),
            "note": self.note,
            "created_at": self.created_at,
            "created_by": self.created_by,
            "expires_at": self.expires_at,
            "revoked_at": self.revoked_at,
            "last_used_at": self.last_used_at,
        }


@dataclass(frozen=True)
class Bearer:
    """Who a presented token acts as, and (operator tokens) the key it signs with."""

    token: Token
    principal: Principal
    key: Ed25519PrivateKey | None


_COLUMNS = (
    _T.id,
    _T.kind,
    _T.subject,
    _T.role,
    _T.note,
    _T.created_at,
    _T.created_by,
    _T.expires_at,
    _T.revoked_at,
    _T.last_used_at,
)


def _token(r: Any) -> Token:
    return Token(
        r[0],
        r[1],
        r[2],
        Role(r[3]),
        r[4],
        float(r[5]),
        r[6],
        float(r[7]),
        None if r[8] is None else float(r[8]),
        None if r[9] is None else float(r[9]),
    )


def signing_key(secret: bytes) -> Ed25519PrivateKey:
    """The operator token's Ed25519 key, derived from its secret."""
    seed = HKDF(hashes.SHA256(), 32, salt=None, info=b"meterflow api token v1").derive(secret)
    return Ed25519PrivateKey.from_private_bytes(seed)


def _digest(secret: bytes) -> str:
    return hashlib.sha256(secret).hexdigest()


def _encode(token_id: str, secret: bytes) -> str:
    return f"{PREFIX}_{token_id}_{base64.urlsafe_b64encode(secret).decode().rstrip('=')}"


def _decode(text: str) -> tuple[str, bytes] | None:
    parts = text.strip().split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1].isalnum():
        return None
    try:
        secret = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4))
    except ValueError:
        return None
    return (parts[1], secret) if len(secret) == 32 else None


def covers(wide: Role, narrow: Role) -> bool:
    """Whether role ``wide`` may do everything ``narrow`` may (a token's scope)."""
    return PERMISSIONS[narrow] <= PERMISSIONS[wide]


def create(
    conn: Connection,
    kind: str,
    subject: str,
    role: Role | None,
    *,
    lifetime: float,
    note: str,
    by: str,
    now: float,
) -> tuple[Token, str]:
    """A new token and its text (shown once; only its hash is kept)."""
    if kind not in KINDS:
        raise TokenError(f"token kind {kind!r}: expected one of {', '.join(KINDS)}")
    if not 0 < lifetime <= MAX_LIFETIME_S:
        raise TokenError(f"token lifetime {lifetime:g}s: expected more than 0, at most 366 days")
    ops.check_name(subject)
    token_id = secrets.token_hex(8)
    secret = secrets.token_bytes(32)
    session = None
    if kind == "operator":
        operator = ops.get(conn, subject)
        role = operator.role if role is None else role
        if not covers(operator.role, role):
            raise TokenError(f"role {role}: wider than operator {subject}'s role {operator.role}")
        session = f"token-{token_id}"
        conn.execute(
            insert(sessions).values(
                id=session,
                operator=subject,
                public_key=public_bytes(signing_key(secret)),
                origin=f"api-token:{token_id}",
                created_at=now,
                expires_at=now + lifetime,
                revoked_at=None,
            )
        )
    elif role not in SYSTEM_ROLES:
        names = ", ".join(str(r) for r in SYSTEM_ROLES)
        raise TokenError(f"a system token's role {role}: expected one of {names}")
    assert role is not None
    conn.execute(
        insert(api_tokens).values(
            id=token_id,
            kind=kind,
            subject=subject,
            role=str(role),
            secret_sha256=_digest(secret),
            session=session,
            note=note,
            created_at=now,
            created_by=by,
            expires_at=now + lifetime,
            revoked_at=None,
            last_used_at=None,
        )
    )
    return get(conn, token_id), _encode(token_id, secret)


def get(conn: Connection, token_id: str) -> Token:
    row = conn.execute(select(*_COLUMNS).where(_T.id == token_id)).first()
    if row is None:
        raise UnknownToken(f"no token {token_id!r}")
    return _token(row)


def listing(conn: Connection) -> list[Token]:
    return [_token(r) for r in conn.execute(select(*_COLUMNS).order_by(_T.created_at, _T.id))]


def revoke(conn: Connection, token_id: str, now: float) -> Token:
    """Revoke a token (and end its session): every later call with it is refused."""
    found = get(conn, token_id)
    if found.revoked_at is None:
        conn.execute(update(api_tokens).where(_T.id == token_id).values(revoked_at=now))
        conn.execute(
            update(sessions)
            .where(sessions.c.id == f"token-{token_id}", sessions.c.revoked_at.is_(None))
            .values(revoked_at=now)
        )
    return get(conn, token_id)


def authenticate(conn: Connection, text: str, now: float, where: str) -> Bearer:
    """Who the token ``text`` acts as; `TokenRefused` saying why not."""
    decoded = _decode(text)
    if decoded is None:
        raise TokenRefused(f"malformed API token: expected {PREFIX}_<id>_<secret>")
    token_id, secret = decoded
    row = conn.execute(select(_T.secret_sha256, _T.session).where(_T.id == token_id)).first()
    if row is None or not hmac.compare_digest(row[0], _digest(secret)):
        raise TokenRefused(f"API token {token_id}: unknown or wrong secret")
    token = get(conn, token_id)
    if token.revoked_at is not None:
        raise TokenRefused(f"API token {token_id} was revoked")
    if token.expires_at <= now:
        raise TokenRefused(f"API token {token_id} expired")
    origin = f"api-token:{token_id}@{where}"
    conn.execute(update(api_tokens).where(_T.id == token_id).values(last_used_at=now))
    if token.kind == "system":
        return Bearer(token, Principal("system", token.subject, token.role, None, origin), None)
    found = ops.credentials(conn, token.subject)
    if found is None or found.operator.disabled:
        raise TokenRefused(f"API token {token_id}: operator {token.subject} is disabled")
    if not covers(found.operator.role, token.role):
        raise TokenRefused(
            f"API token {token_id}: operator {token.subject} is now {found.operator.role},"
            f" narrower than the token's {token.role}"
        )
    principal = Principal.operator(token.subject, token.role, row[1], origin)
    return Bearer(token, principal, signing_key(secret))
