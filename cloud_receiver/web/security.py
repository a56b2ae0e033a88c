"""Who calls, and may they: the caller of a page or an API call, the role check with
its audit, CSRF tokens and the login rate limit.

A caller is one of:

- an operator logged in through the login form: the session cookie (signed by
  Starlette's `SessionMiddleware`, HttpOnly, SameSite=Strict, Secure under TLS) holds
  the login session's id and its Ed25519 private key encrypted with a key derived from
  the server's secret (Fernet), so the server signs the operator's requests and audit
  entries as `cloud-receiver login` does, and the session is checked against the
  database on every call (`sessions.open_session`: ended, expired, disabled, role);
- a customer logged in through the same form (`access.customers`);
- an API client with ``Authorization: Bearer mft_…`` (`access.tokens`).

Every role check goes through `cloud_receiver.access.policy.authorize` (`Caller.require`);
a refusal is audited before the 403. A meter or account is always named with the
customer it belongs to (`Caller.resource`), so a customer is refused anything not
theirs. Forms carry the session's CSRF token (`csrf_token`, `check_csrf`); a cookie
caller's API writes carry it in ``X-CSRF-Token``.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import HTTPException, Request

from cloud_receiver.access import audit, customers, sessions, tokens
from cloud_receiver.access.acting import Acting
from cloud_receiver.access.policy import (
    AccessError,
    Action,
    Principal,
    Resource,
    Role,
)
from cloud_receiver.storage import Storage
from cloud_receiver.storage.series_cache import SeriesCache
from cloud_receiver.web.settings import WebSettings

CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_RAW_KEY = (
    serialization.Encoding.Raw,
    serialization.PrivateFormat.Raw,
    serialization.NoEncryption(),
)


class RateLimiter:
    """At most ``attempts`` per client address in any ``window_s`` (login forms, bad
    tokens): a guessing client is slowed down before the per-account lockout."""

    def __init__(self, attempts: int, window_s: float) -> None:
        self.attempts = attempts
        self.window_s = window_s
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, client: str, now: float | None = None) -> float | None:
        """Count an attempt; the seconds to wait if it is one too many (else None)."""
        at = time.monotonic() if now is None else now
        with self._lock:
            seen = self._seen.setdefault(client, deque())
            while seen and seen[0] <= at - self.window_s:
                seen.popleft()
            if len(seen) >= self.attempts:
                return seen[0] + self.window_s - at
            seen.append(at)
            return None


@dataclass
class WebState:
    """What every request reaches through ``request.app.state.web``."""

    settings: WebSettings
    storage: Storage
    fernet: Fernet
    limiter: RateLimiter
    series: SeriesCache  # the customers' usage pages read their year through it
    extra: dict[str, Any] = field(default_factory=dict)


def state(request: Request) -> WebState:
    found: WebState = request.app.state.web
    return found


def client_address(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def limit(request: Request) -> None:
    """The login rate limit: 429 with Retry-After when this address tried too often."""
    wait = state(request).limiter.hit(client_address(request))
    if wait is not None:
        raise HTTPException(
            429,
            f"too many login attempts from {client_address(request)}: try again in"
            f" {max(1, int(wait) + 1)} s",
            headers={"Retry-After": str(max(1, int(wait) + 1))},
        )


@dataclass
class Caller(Acting):
    """An authenticated caller: the principal `authorize` judges, and (operators) the
    key that signs their audit entries and requests."""

    storage: Storage
    principal: Principal
    key: Ed25519PrivateKey | None
    via: str  # "session" or "token"

    @property
    def is_customer(self) -> bool:
        return self.principal.kind == "customer"

    def resource(self, kind: str, name: str) -> Resource:
        """A meter or account named with the customer it is linked to (the owner
        `authorize` compares with a customer who asks)."""
        with self.storage.read() as conn:
            if kind == "meter":
                owner = customers.owner_of_meter(conn, name)
            elif kind == "account":
                owner = customers.owner_of_account(conn, name)
            else:
                owner = name if kind == "customer" else None
        return Resource(kind, name, owner)

    @property
    def signing_key(self) -> Ed25519PrivateKey | None:
        return self.key

    def refusal(self, reason: str) -> Exception:
        return HTTPException(403, reason)

    def read(self, what: str, target: str, *, customers: int, **detail: Any) -> None:
        """Audit a view of customer data (``customers``: how many customers' data it
        shows; 0 for fleet data) and raise the abnormal-access alert at its threshold."""
        doc = {"what": what, "customers": customers, "via": self.via, **detail}
        self.audit_read("read", target, doc, alert=bool(customers) and not self.is_customer)


# ------------------------------------------------------------------ response headers
# Nothing is loaded from elsewhere, nothing runs inline, no page is framed (clickjacking),
# and forms post only back here; under TLS browsers are told to keep to HTTPS.
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self'"
    " 'unsafe-inline'; script-src 'self'; object-src 'none'; base-uri 'none';"
    " form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
HSTS = "max-age=31536000"


async def security_headers(request: Request, call_next: Callable[[Request], Any]) -> Any:
    """An HTTP middleware: `HEADERS` on every answer (static files may be cached)."""
    response = await call_next(request)
    for name, value in HEADERS.items():
        if name != "Cache-Control" or not request.url.path.startswith("/static/"):
            response.headers.setdefault(name, value)
    if state(request).settings.secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response


# ------------------------------------------------------------------ the session cookie
def seal_key(st: WebState, key: Ed25519PrivateKey) -> str:
    return st.fernet.encrypt(key.private_bytes(*_RAW_KEY)).decode()


def _unseal_key(st: WebState, sealed: str) -> Ed25519PrivateKey | None:
    try:
        return Ed25519PrivateKey.from_private_bytes(st.fernet.decrypt(sealed.encode()))
    except (InvalidToken, ValueError):
        return None


def start_operator_session(request: Request, login: sessions.Login) -> None:
    """After a login: a fresh cookie (no fixation) for the new session."""
    request.session.clear()
    request.session.update(
        kind="operator",
        session=login.file.session,
        name=login.file.operator,
        expires_at=login.file.expires_at,
        key=seal_key(state(request), login.file.key),
        csrf=secrets.token_urlsafe(32),
    )


def start_customer_session(request: Request, name: str, lifetime: float) -> None:
    request.session.clear()
    request.session.update(
        kind="customer",
        name=name,
        started_at=time.time(),
        expires_at=time.time() + lifetime,
        csrf=secrets.token_urlsafe(32),
    )


def _from_cookie(request: Request) -> Caller | None:
    st = state(request)
    s = request.session
    kind = s.get("kind")
    now = time.time()
    where = f"web:{client_address(request)}"
    if kind not in ("operator", "customer") or float(s.get("expires_at", 0)) <= now:
        return None
    name = str(s.get("name", ""))
    if kind == "customer":
        with st.storage.read() as conn:
            enabled = customers.check_enabled(conn, name, float(s.get("started_at", 0)))
        return (
            Caller(st.storage, Principal.customer(name, where), None, "session")
            if enabled
            else None
        )
    key = _unseal_key(st, str(s.get("key", "")))
    if key is None:
        return None
    file = sessions.SessionFile(str(s.get("session", "")), name, float(s["expires_at"]), key)
    try:
        with st.storage.read() as conn:
            principal = sessions.open_session(conn, file, now, where)
    except AccessError:
        return None
    return Caller(st.storage, principal, key, "session")


def _from_token(request: Request, text: str) -> Caller:
    st = state(request)
    where = client_address(request)
    try:
        with st.storage.transaction() as tx:
            bearer = tokens.authenticate(tx, text, time.time(), where)
    except AccessError as exc:
        with st.storage.transaction() as tx:
            who = Principal("system", "api", Role.SYSTEM, None, f"api:{where}")
            audit.record(
                tx,
                who,
                kind="login_failed",
                action="token",
                target="api",
                at=time.time(),
                outcome="refused",
                detail={"reason": str(exc)},
            )
        limit(request)
        raise HTTPException(401, str(exc), headers={"WWW-Authenticate": "Bearer"}) from None
    return Caller(st.storage, bearer.principal, bearer.key, "token")


def optional_caller(request: Request) -> Caller | None:
    """The caller, if any (pages show the login form to nobody)."""
    header = request.headers.get("authorization", "")
    if header[:7].lower() == "bearer ":
        return _from_token(request, header[7:])
    return _from_cookie(request)


def current_caller(request: Request) -> Caller:
    """The caller, or 401 (a FastAPI dependency for the API and the pages)."""
    found = optional_caller(request)
    if found is None:
        raise HTTPException(
            401,
            "not logged in: log in at /login, or send Authorization: Bearer <API token>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return found


def requires(action: Action) -> Callable[[Request], Caller]:
    """A dependency: the caller, checked for ``action`` on no particular resource."""

    def dependency(request: Request) -> Caller:
        caller = current_caller(request)
        caller.require(action)
        return caller

    return dependency


def operator_only(request: Request) -> Caller:
    """A dependency: the caller, who must not be a customer (operator lists)."""
    caller = current_caller(request)
    if caller.is_customer:
        caller.record(
            "denied",
            "operator.only",
            request.url.path,
            outcome="denied",
            detail={"reason": "customers see only their own meters and accounts"},
        )
        raise HTTPException(403, f"{caller.principal.label}: customers see only their own data")
    return caller


# ------------------------------------------------------------------ CSRF
def csrf_token(request: Request) -> str:
    """The session's CSRF token (made on first use), for a form's hidden field."""
    token = request.session.get("csrf")
    if not token:
        token = request.session["csrf"] = secrets.token_urlsafe(32)
    return str(token)


def check_csrf(request: Request, submitted: str | None) -> None:
    """403 unless ``submitted`` is this session's CSRF token."""
    expected = request.session.get("csrf")
    if not expected or not submitted or not hmac.compare_digest(str(expected), submitted):
        raise HTTPException(403, "CSRF token missing or wrong: reload the form and try again")


def check_api_csrf(request: Request, caller: Caller) -> None:
    """A cookie caller's API write must carry the CSRF token in ``X-CSRF-Token``; a
    bearer token is not sent by a browser on its own, so it needs none."""
    if caller.via == "session":
        check_csrf(request, request.headers.get(CSRF_HEADER))
