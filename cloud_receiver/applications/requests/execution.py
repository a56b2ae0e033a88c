"""Carrying out: each ready request this process holds the keys for, after the checks
`access.requests` makes of its row whatever the database says (signature, approvals,
the attachment signed); the service decides the action and approvals, not the
requester's command line. Every outcome is finished in the queue and audited."""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from sqlalchemy import Connection

from cloud_receiver.access import audit
from cloud_receiver.access import requests as queue
from cloud_receiver.access import settings as access_settings
from cloud_receiver.access.policy import Principal
from cloud_receiver.access.requests import Request
from cloud_receiver.applications.requests.kind import Keys, Kind
from cloud_receiver.applications.requests.registry import KINDS
from cloud_receiver.errors import ReceiverError
from cloud_receiver.storage import Storage

log = logging.getLogger(__name__)


def execute_ready(
    storage: Storage,
    keys: Keys,
    now: float,
    *,
    by: Principal,
    only: int | None = None,
) -> list[str]:
    """Expire what is overdue, then carry out every ready request this process holds
    the keys for (``only``: that one request); returns what was done, for the log."""
    done: list[str] = []
    with storage.transaction() as tx:
        for req in queue.expire(tx, now):
            done.append(f"request {req.id} ({req.kind}) expired")
        ready = queue.ready(tx)
    held = {name for name, key in (("command", keys.command), ("release", keys.release)) if key}
    for req in ready:
        kind = KINDS.get(req.kind)
        if (only is not None and req.id != only) or (kind is not None and not kind.needs <= held):
            continue
        with storage.transaction() as tx:
            if not queue.claim(tx, req.id, now):
                continue  # another receiver (or command line) carries it out
        done.append(_execute(storage, kind, req, keys, now, by))
    return done


def _finish(
    tx: Connection,
    by: Principal,
    req: Request,
    now: float,
    status: str,
    result: dict[str, Any],
    detail: dict[str, Any],
) -> None:
    """Record how a request ended, in the queue and in the audit trail."""
    queue.finish(tx, req.id, status, result, now)
    audit.record(
        tx,
        by,
        kind="execution",
        action=req.action,
        target=f"request:{req.id}",
        at=now,
        outcome=status,
        detail={"requested_by": req.requested_by, **detail},
    )


def _execute(
    storage: Storage, kind: Kind | None, req: Request, keys: Keys, now: float, by: Principal
) -> str:
    with storage.transaction() as tx:
        attachment = queue.attachment(tx, req.id)
        conf = access_settings.load(tx)
    required = req.approvals_needed
    why = None if kind is not None else f"request {req.id}: unknown kind {req.kind!r}"
    lie = None
    if kind is not None:
        try:  # the requester's command line said what and how many; the service decides
            asked = kind.action(req.params)
            required = max(required, kind.approvals(storage, req.params, conf))
        except Exception as exc:
            why = f"request {req.id}: unreadable parameters ({exc})"
        else:
            if str(asked) != req.action:
                why = lie = f"request {req.id}: it asks for {asked} but names {req.action}"
    with storage.transaction() as tx:
        forged = queue.signature_problem(tx, req, now) or lie
        why = why or queue.check(tx, req, required, now)
        digest = None if attachment is None else hashlib.sha256(attachment).hexdigest()
        if why is None and digest != req.attachment_sha256:
            why = forged = f"request {req.id}: its attachment is not the one signed (altered)"
        approvers = queue.valid_approvers(tx, req, now)
        if why is not None:
            _finish(tx, by, req, now, "refused", {"error": why}, {"reason": why})
            if forged is not None:
                audit.alert(
                    tx,
                    "forged_request",
                    f"request:{req.id}",
                    now,
                    {"reason": forged, "requested_by": req.requested_by},
                    by.origin,
                )
    if why is not None:
        log.warning("%s: refused", why)
        return f"{why}: refused"
    assert kind is not None
    status = "done"
    try:
        result = kind.execute(storage, keys, req, attachment, now)
    except ReceiverError as exc:
        status, result = "failed", {"error": str(exc), "exit_code": exc.exit_code}
    except Exception as exc:  # a bug or the database: recorded, the service goes on
        log.exception("request %d (%s) failed", req.id, req.kind)
        status, result = "failed", {"error": repr(exc), "exit_code": 1}
    with storage.transaction() as tx:
        _finish(tx, by, req, now, status, result, {"approved_by": approvers, "result": result})
    return f"request {req.id} ({req.kind}) by {req.requested_by}: {status}"
