"""Asking: a request authorized, checked and queued at once, so that one the operator
may not make, or one with bad parameters, is refused before anyone approves it."""

from __future__ import annotations

from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_receiver.access import audit
from cloud_receiver.access import requests as queue
from cloud_receiver.access import settings as access_settings
from cloud_receiver.access.policy import Denied, Principal, Resource, authorize
from cloud_receiver.access.requests import Request
from cloud_receiver.access.sessions import get_session
from cloud_receiver.applications.requests.registry import kind_of
from cloud_receiver.storage import Storage


def submit(
    storage: Storage,
    principal: Principal,
    key: Ed25519PrivateKey,
    kind_name: str,
    params: dict[str, Any],
    *,
    now: float,
    attachment: bytes | None = None,
) -> Request:
    """Authorize, check and queue a request signed with the operator's session key."""
    kind = kind_of(kind_name)
    action = kind.action(params)
    decision = authorize(principal, action, Resource(kind_name))
    with storage.transaction() as tx:
        conf = access_settings.load(tx)
        session = get_session(tx, principal.session or "")
        if not decision:
            audit.record(
                tx,
                principal,
                kind="denied",
                action=str(action),
                target=kind_name,
                at=now,
                outcome="denied",
                detail={"reason": decision.reason},
                key=key,
            )
    if not decision:
        raise Denied(decision.reason)
    assert session is not None
    kind.check(storage, params, attachment)
    needed = kind.approvals(storage, params, conf)
    return queue.submit(
        storage,
        principal,
        key,
        kind=kind_name,
        action=action,
        params=params,
        approvals_needed=needed,
        lifetime=conf.request_lifetime,
        session_expires=session.expires_at,
        now=now,
        attachment_bytes=attachment,
    )
