"""What the audit log records, and the alerts raised on what it shows.

Entry kinds: ``login``, ``login_failed``, ``logout``, ``request`` (an operator asks the
service for something), ``approval``, ``cancel``, ``execution`` (the service carried a
request out, or refused it), ``read`` (one customer's data, or a report naming
customers), ``export`` (customer data written as CSV, JSON or PNG), ``denied`` (a role
that may not), ``operator`` (accounts changed), ``settings``, ``backup``, ``restore``
and ``alert``. The chain itself is `cloud_receiver.storage.audit`.

Alerts (kind ``alert``, principal ``system:monitor``, target the operator concerned):
``customers_per_hour`` (an operator read more customers' data within an hour than
``alert-customers-per-hour``), ``new_origin`` (a login from a host/user the operator
never logged in from), ``repeated_failures`` (``alert-login-failures`` failed logins in
a row), ``lockout`` (``lockout-failures`` in a row: locked for ``lockout-duration``),
``forged_request`` (a request or approval whose signature or session does not hold).
"""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection

from cloud_receiver.access.policy import Principal
from cloud_receiver.access.settings import Settings
from cloud_receiver.storage import audit as chain

KINDS = (
    "login",
    "login_failed",
    "logout",
    "request",
    "approval",
    "cancel",
    "execution",
    "read",
    "export",
    "denied",
    "operator",
    "settings",
    "backup",
    "restore",
    "alert",
)
ALERTS = ("customers_per_hour", "new_origin", "repeated_failures", "lockout", "forged_request")
MONITOR = "system:monitor"
HOUR_S = 3600.0


def record(
    conn: Connection,
    principal: Principal,
    *,
    kind: str,
    action: str,
    target: str,
    at: float,
    outcome: str = "ok",
    detail: dict[str, Any] | None = None,
    key: Ed25519PrivateKey | None = None,
) -> chain.Entry:
    """Append an entry for ``principal``; with the session ``key`` it is signed, so
    `chain.verify` can tell it from one written straight into the database."""
    text = chain.canonical(detail or {})
    session = principal.session if key is not None else None
    signature = None
    if key is not None:
        signature = key.sign(
            chain.statement(
                at=at,
                principal=principal.label,
                origin=principal.origin,
                kind=kind,
                action=action,
                target=target,
                outcome=outcome,
                detail=text,
                session=session,
            )
        )
    return chain.append(
        conn,
        at=at,
        principal=principal.label,
        origin=principal.origin,
        kind=kind,
        action=action,
        target=target,
        outcome=outcome,
        detail=text,
        session=session,
        signature=signature,
    )


def alert(
    conn: Connection, name: str, subject: str, at: float, detail: dict[str, Any], origin: str = ""
) -> chain.Entry:
    return chain.append(
        conn,
        at=at,
        principal=MONITOR,
        origin=origin,
        kind="alert",
        action=name,
        target=subject,
        outcome="alert",
        detail=chain.canonical(detail),
    )


def _alerted(conn: Connection, name: str, subject: str, since: float) -> bool:
    return any(
        e.action == name for e in chain.entries(conn, since=since, kinds=("alert",), target=subject)
    )


def customers_read(conn: Connection, principal: str, since: float) -> int:
    """How many customers' data ``principal`` read since then: each single-customer
    target once, plus the customers of every report or export naming several."""
    singles: set[str] = set()
    bulk = 0
    for e in chain.entries(conn, since=since, principal=principal, kinds=("read", "export")):
        n = int(e.detail_doc().get("customers", 0))
        if n == 1:
            singles.add(e.target)
        elif n > 1:
            bulk += n
    return len(singles) + bulk


def after_read(
    conn: Connection, principal: Principal, settings: Settings, at: float
) -> chain.Entry | None:
    """The ``customers_per_hour`` alert, once an hour at most per operator."""
    n = customers_read(conn, principal.label, at - HOUR_S)
    limit = settings.alert_customers_per_hour
    if n <= limit or _alerted(conn, "customers_per_hour", principal.label, at - HOUR_S):
        return None
    return alert(
        conn,
        "customers_per_hour",
        principal.label,
        at,
        {"customers": n, "threshold": limit, "window_s": HOUR_S},
        principal.origin,
    )


def after_failed_login(
    conn: Connection,
    name: str,
    failures: int,
    settings: Settings,
    at: float,
    origin: str,
    locked_until: float | None,
) -> list[chain.Entry]:
    """Alerts on the ``failures``-th failed login in a row of operator ``name``."""
    raised = []
    subject = f"operator:{name}"
    if failures == settings.alert_login_failures:
        raised.append(
            alert(
                conn,
                "repeated_failures",
                subject,
                at,
                {"failures": failures, "threshold": settings.alert_login_failures},
                origin,
            )
        )
    if locked_until is not None:
        raised.append(
            alert(
                conn,
                "lockout",
                subject,
                at,
                {"failures": failures, "locked_until": locked_until},
                origin,
            )
        )
    return raised
