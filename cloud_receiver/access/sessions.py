"""Logging in: password and TOTP checked against the database, a short-lived session.

`login` checks the operator's Argon2id password hash and, where the operator has one,
a TOTP code (each code is good once); it then registers a fresh Ed25519 public key for
the session with its expiry. The private half stays in the session file (mode 0600,
`SessionFile`), and the command line signs with it what it asks for and what it
records: a request row or audit entry written straight into the database, without that
key, is not the operator's. `open_session` is what every later command does first: the
session must be known, not ended or expired, match the file's key, and belong to an
operator still enabled (whose role is read afresh).

Failed logins are counted per operator; ``alert-login-failures`` in a row raise an
alert and ``lockout-failures`` lock the operator out for ``lockout-duration``. A login
from a host/user the operator never used raises a ``new_origin`` alert.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import secrets
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, insert, select, update

from clitools.files import PRIVATE, write_file
from cloud_receiver.access import audit
from cloud_receiver.access import operators as ops
from cloud_receiver.access import settings as access_settings
from cloud_receiver.access.policy import AccessError, Principal, Role
from cloud_receiver.storage import Storage
from cloud_receiver.storage.schema import operator_origins, operators, sessions

SESSION_ENV = "MF_SESSION"
FILE_VERSION = 1
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class LoginRefused(AccessError):
    """Wrong name, password or code; locked out; disabled."""


class NotLoggedIn(AccessError):
    """No usable session: none, ended, expired, or not this database's."""


def origin() -> str:
    """Where the command line runs, as the audit log names it: ``user@host``."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


def default_path() -> Path:
    """``$MF_SESSION``, else ``$XDG_CONFIG_HOME/meterflow/session.json`` (default
    ``~/.config/meterflow/session.json``)."""
    if os.environ.get(SESSION_ENV):
        return Path(os.environ[SESSION_ENV])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "meterflow" / "session.json"


def public_bytes(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(*_RAW)


@dataclass(frozen=True)
class SessionFile:
    """The command line's half of a session: its id and private key."""

    session: str
    operator: str
    expires_at: float
    key: Ed25519PrivateKey

    def write(self, path: Path) -> None:
        """Atomically, mode 0600 (its directory 0700 when created)."""
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        raw = self.key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        doc = {
            "version": FILE_VERSION,
            "session": self.session,
            "operator": self.operator,
            "expires_at": self.expires_at,
            "private_key": base64.b64encode(raw).decode(),
        }
        write_file(path, json.dumps(doc), PRIVATE)

    @classmethod
    def read(cls, path: Path) -> SessionFile:
        try:
            mode = path.stat().st_mode
            text = path.read_text()
        except FileNotFoundError:
            raise NotLoggedIn(
                f"not logged in (no session file {path}): run `cloud-receiver login NAME --db URL`"
            ) from None
        except OSError as exc:
            raise NotLoggedIn(f"session file {path}: {exc.strerror or exc}") from None
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise NotLoggedIn(
                f"session file {path} is open to other users (mode {stat.S_IMODE(mode):04o}):"
                " log in again"
            )
        try:
            doc: dict[str, Any] = json.loads(text)
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(doc["private_key"]))
            return cls(str(doc["session"]), str(doc["operator"]), float(doc["expires_at"]), key)
        except (ValueError, KeyError, TypeError):
            raise NotLoggedIn(f"session file {path} is damaged: log in again") from None


@dataclass(frozen=True)
class Session:
    id: str
    operator: str
    public_key: bytes
    origin: str
    created_at: float
    expires_at: float
    revoked_at: float | None


_S = sessions.c


def get_session(conn: Connection, session_id: str) -> Session | None:
    row = conn.execute(
        select(
            _S.id,
            _S.operator,
            _S.public_key,
            _S.origin,
            _S.created_at,
            _S.expires_at,
            _S.revoked_at,
        ).where(_S.id == session_id)
    ).first()
    if row is None:
        return None
    return Session(
        row[0],
        row[1],
        bytes(row[2]),
        row[3],
        float(row[4]),
        float(row[5]),
        None if row[6] is None else float(row[6]),
    )


def needs_totp(storage: Storage, name: str) -> bool:
    """Whether to ask for a code (also asked for an unknown name: nothing is revealed)."""
    with storage.transaction() as tx:
        found = ops.credentials(tx, name)
    return found is None or found.totp_secret is not None


@dataclass(frozen=True)
class Login:
    principal: Principal
    file: SessionFile
    new_origin: bool


def login(
    storage: Storage,
    name: str,
    password: str,
    code: str | None,
    *,
    where: str,
    now: float,
    lifetime: float | None = None,
) -> Login:
    """Check the password (and TOTP code) and open a session; `LoginRefused` otherwise,
    after the failure is counted and audited."""
    with storage.transaction() as tx:
        found = ops.credentials(tx, name)
    # The slow part (Argon2id) outside the write transaction; decided again inside it.
    password_ok = ops.password_matches(None if found is None else found.password_hash, password)
    refusal: str | None = None
    with storage.transaction() as tx:
        conf = access_settings.load(tx)
        found = ops.credentials(tx, name, lock=True)
        failed_as = Principal("operator", name, Role.VIEWER, None, where)
        if found is None:
            refusal = _refuse(tx, failed_as, "unknown operator", now)
        elif found.operator.locked_until is not None and found.operator.locked_until > now:
            refusal = _refuse(
                tx,
                failed_as,
                "locked",
                now,
                f"operator {name} is locked out after repeated failed logins"
                f" until {_when(found.operator.locked_until)}",
            )
        else:
            step = None
            if found.totp_secret is not None and code:
                step = ops.totp_step(found.totp_secret, code, now, found.totp_last_step)
            if not password_ok:
                refusal = _fail(tx, found, failed_as, "wrong password", conf, now)
            elif found.totp_secret is not None and not code:
                refusal = _fail(
                    tx,
                    found,
                    failed_as,
                    "no TOTP code",
                    conf,
                    now,
                    f"operator {name} needs a TOTP code (--totp or the prompt)",
                )
            elif found.totp_secret is not None and step is None:
                refusal = _fail(tx, found, failed_as, "wrong or reused TOTP code", conf, now)
            elif found.operator.disabled:
                refusal = _refuse(tx, failed_as, "disabled", now, f"operator {name} is disabled")
            else:
                return _open(tx, found, step, where, now, lifetime or conf.session_lifetime, conf)
    assert refusal is not None
    raise LoginRefused(refusal)


_GENERIC = "login refused: wrong operator name, password or TOTP code"


def _when(t: float) -> str:
    from clitools.timefmt import iso

    return iso(t)  # ISO 8601 with the site's offset (docs/output.md)


def _refuse(
    tx: Connection, who: Principal, reason: str, now: float, message: str = _GENERIC
) -> str:
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
    return message


def _fail(
    tx: Connection,
    found: ops.Credentials,
    who: Principal,
    reason: str,
    conf: access_settings.Settings,
    now: float,
    message: str = _GENERIC,
) -> str:
    failures = found.operator.failures + 1
    locked = now + conf.lockout_duration if failures >= conf.lockout_failures else None
    tx.execute(
        update(operators)
        .where(operators.c.name == found.operator.name)
        .values(failures=failures, locked_until=locked)
    )
    audit.record(
        tx,
        who,
        kind="login_failed",
        action="login",
        target=who.label,
        at=now,
        outcome="refused",
        detail={"reason": reason, "failures": failures},
    )
    audit.after_failed_login(tx, found.operator.name, failures, conf, now, who.origin, locked)
    if locked is not None:
        return f"{message}; operator {found.operator.name} is now locked out until {_when(locked)}"
    return message


def _open(
    tx: Connection,
    found: ops.Credentials,
    step: int | None,
    where: str,
    now: float,
    lifetime: float,
    conf: access_settings.Settings,
) -> Login:
    name = found.operator.name
    values: dict[str, Any] = {"failures": 0, "locked_until": None}
    if step is not None:
        values["totp_last_step"] = step
    tx.execute(update(operators).where(operators.c.name == name).values(**values))
    key = Ed25519PrivateKey.generate()
    session_id = secrets.token_hex(16)
    expires = now + min(lifetime, conf.session_lifetime)
    tx.execute(
        insert(sessions).values(
            id=session_id,
            operator=name,
            public_key=public_bytes(key),
            origin=where,
            created_at=now,
            expires_at=expires,
            revoked_at=None,
        )
    )
    o = operator_origins.c
    seen = set(tx.execute(select(o.origin).where(o.operator == name)).scalars())
    new_origin = where not in seen
    if new_origin:
        tx.execute(
            insert(operator_origins).values(
                operator=name, origin=where, first_seen=now, last_seen=now
            )
        )
    else:
        tx.execute(
            update(operator_origins)
            .where(o.operator == name, o.origin == where)
            .values(last_seen=now)
        )
    principal = Principal.operator(name, found.operator.role, session_id, where)
    audit.record(
        tx,
        principal,
        kind="login",
        action="login",
        target=principal.label,
        at=now,
        detail={
            "session": session_id,
            "expires_at": expires,
            "totp": found.totp_secret is not None,
        },
        key=key,
    )
    if new_origin and seen:  # the first login ever has nothing to compare with
        audit.alert(
            tx, "new_origin", principal.label, now, {"origin": where, "known": sorted(seen)}, where
        )
    return Login(principal, SessionFile(session_id, name, expires, key), new_origin and bool(seen))


def open_session(conn: Connection, file: SessionFile, now: float, where: str) -> Principal:
    """The operator a session file acts for, checked against the database."""
    s = get_session(conn, file.session)
    if s is None or s.operator != file.operator:
        raise NotLoggedIn(
            f"session of {file.operator} is not known to this database (logged in to another"
            " one?): run `cloud-receiver login`"
        )
    if s.public_key != public_bytes(file.key):
        raise NotLoggedIn("the session file's key is not the session's: run `cloud-receiver login`")
    if s.revoked_at is not None:
        raise NotLoggedIn(f"session of {s.operator} ended at {_when(s.revoked_at)}: log in again")
    if s.expires_at <= now:
        raise NotLoggedIn(f"session of {s.operator} expired at {_when(s.expires_at)}: log in again")
    found = ops.credentials(conn, s.operator)
    if found is None or found.operator.disabled:
        raise NotLoggedIn(f"operator {s.operator} is disabled")
    return Principal.operator(s.operator, found.operator.role, s.id, where)


def logout(storage: Storage, principal: Principal, key: Ed25519PrivateKey, now: float) -> None:
    assert principal.session is not None
    with storage.transaction() as tx:
        tx.execute(update(sessions).where(_S.id == principal.session).values(revoked_at=now))
        audit.record(
            tx,
            principal,
            kind="logout",
            action="logout",
            target=principal.label,
            at=now,
            detail={"session": principal.session},
            key=key,
        )
