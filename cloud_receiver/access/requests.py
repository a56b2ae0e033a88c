"""Requests: what an operator asks the service to do with the keys only it holds.

An operator's command line never signs a command, a demand-response event or a
rollout itself: it queues a *request* — what to do (``kind``, ``params``, an optional
attachment such as a release package), signed with the session key — and the running
``cloud-receiver run`` carries it out (`cloud_receiver.applications.requests`). Before
it does, `check` requires of the request row, whatever the database says about it:

- a signature by the key of the session it names, that session the requester's, not
  ended, not expired, and the request made within its life;
- the requester still enabled and in a role that may take the request's action
  (`cloud_receiver.access.policy.authorize`);
- as many approvals as the action needs, each by another operator whose role may take
  the action, signed with that operator's session key over this request's digest.

A request lives at most ``request-lifetime`` and never longer than its session; one
not carried out by then expires. Statuses: ``awaiting_approval`` → ``ready`` →
``executing`` → ``done`` | ``failed`` | ``refused``; or ``expired`` / ``cancelled``.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, insert, select, update

from cloud_receiver.access import audit
from cloud_receiver.access import operators as ops
from cloud_receiver.access.policy import (
    AccessError,
    Action,
    Denied,
    Principal,
    Resource,
    authorize,
)
from cloud_receiver.access.sessions import Session, get_session
from cloud_receiver.errors import EXIT_USAGE, NotFound, ReceiverError
from cloud_receiver.storage import Storage
from cloud_receiver.storage.audit import canonical
from cloud_receiver.storage.schema import approvals, requests

REQUEST_DOMAIN = b"meterflow request v1\x00"
APPROVAL_DOMAIN = b"meterflow approval v1\x00"
SKEW_S = 5.0  # clocks of the operator's machine and the service
OPEN = ("awaiting_approval", "ready")
FINAL = ("done", "failed", "refused", "expired", "cancelled")
STATUSES = ("awaiting_approval", "ready", "executing", *FINAL)


class RequestError(ReceiverError):
    """A request that cannot be approved or cancelled in its state."""

    exit_code = EXIT_USAGE


class UnknownRequest(NotFound, RequestError):
    """No request of that id."""


@dataclass(frozen=True)
class Request:
    id: int
    nonce: str
    kind: str
    action: str
    params_text: str
    attachment_sha256: str | None
    requested_by: str
    session: str
    origin: str
    created_at: float
    expires_at: float
    approvals_needed: int
    signature: bytes
    status: str
    result: dict[str, Any] | None
    updated_at: float

    @property
    def params(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.params_text)
        return doc

    def message(self) -> bytes:
        """What the requester's session key signs."""
        return (
            REQUEST_DOMAIN
            + canonical(
                [
                    self.nonce,
                    self.kind,
                    self.action,
                    self.params_text,
                    self.attachment_sha256,
                    self.requested_by,
                    self.session,
                    float(self.created_at),
                    float(self.expires_at),
                    self.approvals_needed,
                ]
            ).encode()
        )

    def digest(self) -> str:
        return hashlib.sha256(self.message()).hexdigest()

    def resource(self) -> Resource:
        return Resource.request(self.id, self.requested_by, Action(self.action))

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "action": self.action,
            "params": self.params,
            "attachment_sha256": self.attachment_sha256,
            "requested_by": self.requested_by,
            "origin": self.origin,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "approvals_needed": self.approvals_needed,
            "status": self.status,
            "result": self.result,
            "updated_at": self.updated_at,
        }


@dataclass(frozen=True)
class Approval:
    request: int
    operator: str
    session: str
    at: float
    signature: bytes


def approval_message(req: Request, operator: str, session: str, at: float) -> bytes:
    return (
        APPROVAL_DOMAIN + canonical([req.id, req.digest(), operator, session, float(at)]).encode()
    )


_Q = requests.c
_COLUMNS = (
    _Q.id,
    _Q.nonce,
    _Q.kind,
    _Q.action,
    _Q.params,
    _Q.attachment_sha256,
    _Q.requested_by,
    _Q.session,
    _Q.origin,
    _Q.created_at,
    _Q.expires_at,
    _Q.approvals_needed,
    _Q.signature,
    _Q.status,
    _Q.result,
    _Q.updated_at,
)


def _request(r: Sequence[Any]) -> Request:
    return Request(
        int(r[0]),
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        r[7],
        r[8],
        float(r[9]),
        float(r[10]),
        int(r[11]),
        bytes(r[12]),
        r[13],
        None if r[14] is None else json.loads(r[14]),
        float(r[15]),
    )


def get(conn: Connection, request_id: int, *, lock: bool = False) -> Request:
    query = select(*_COLUMNS).where(_Q.id == request_id)
    row = conn.execute(query.with_for_update() if lock else query).first()
    if row is None:
        raise UnknownRequest(f"no request {request_id}")
    return _request(row)


def listing(conn: Connection, status: str | None = None, limit: int = 200) -> list[Request]:
    query = select(*_COLUMNS).order_by(_Q.id.desc()).limit(limit)
    if status is not None:
        query = query.where(_Q.status == status)
    return [_request(r) for r in conn.execute(query).all()]


def attachment(conn: Connection, request_id: int) -> bytes | None:
    got = conn.execute(select(_Q.attachment).where(_Q.id == request_id)).scalar()
    return None if got is None else bytes(got)


def approvals_of(conn: Connection, request_id: int) -> list[Approval]:
    a = approvals.c
    rows = conn.execute(
        select(a.request, a.operator, a.session, a.at, a.signature)
        .where(a.request == request_id)
        .order_by(a.at)
    ).all()
    return [Approval(int(r[0]), r[1], r[2], float(r[3]), bytes(r[4])) for r in rows]


def submit(
    storage: Storage,
    principal: Principal,
    key: Ed25519PrivateKey,
    *,
    kind: str,
    action: Action,
    params: dict[str, Any],
    approvals_needed: int,
    lifetime: float,
    session_expires: float,
    now: float,
    attachment_bytes: bytes | None = None,
) -> Request:
    """Sign and queue a request (the caller has authorized and validated it)."""
    assert principal.session is not None
    digest = None if attachment_bytes is None else hashlib.sha256(attachment_bytes).hexdigest()
    draft = Request(
        0,
        secrets.token_hex(16),
        kind,
        str(action),
        canonical(params),
        digest,
        principal.name,
        principal.session,
        principal.origin,
        float(now),
        float(min(now + lifetime, session_expires)),
        approvals_needed,
        b"",
        "awaiting_approval" if approvals_needed else "ready",
        None,
        now,
    )
    signature = key.sign(draft.message())
    with storage.transaction() as tx:
        request_id = int(
            tx.execute(
                insert(requests)
                .values(
                    nonce=draft.nonce,
                    kind=kind,
                    action=str(action),
                    params=draft.params_text,
                    attachment=attachment_bytes,
                    attachment_sha256=digest,
                    requested_by=principal.name,
                    session=principal.session,
                    origin=principal.origin,
                    created_at=draft.created_at,
                    expires_at=draft.expires_at,
                    approvals_needed=approvals_needed,
                    signature=signature,
                    status=draft.status,
                    result=None,
                    updated_at=now,
                )
                .returning(_Q.id)
            ).scalar_one()
        )
        audit.record(
            tx,
            principal,
            kind="request",
            action=str(action),
            target=f"request:{request_id}",
            at=now,
            detail={
                "kind": kind,
                "params": params,
                "attachment_sha256": digest,
                "approvals_needed": approvals_needed,
            },
            key=key,
        )
        return get(tx, request_id)


# ------------------------------------------------------------------ verification
def _verify(public: bytes, signature: bytes, message: bytes) -> bool:
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def _session_problem(s: Session | None, operator: str, at: float, now: float) -> str | None:
    """Why session ``s`` cannot vouch for what ``operator`` signed at ``at`` (None: it can)."""
    if s is None:
        return "its session is not known to the database"
    if s.operator != operator:
        return f"its session belongs to {s.operator}, not {operator}"
    if not s.created_at - SKEW_S <= at <= s.expires_at:
        return "it is dated outside its session's lifetime"
    if s.revoked_at is not None and s.revoked_at <= at:
        return "its session had ended"
    if at > now + SKEW_S:
        return "it is dated in the future"
    return None


def signature_problem(conn: Connection, req: Request, now: float) -> str | None:
    """Why the request itself is not what its requester signed (None: it is)."""
    s = get_session(conn, req.session)
    why = _session_problem(s, req.requested_by, req.created_at, now)
    if why is not None:
        return f"request {req.id}: {why}"
    assert s is not None
    if not _verify(s.public_key, req.signature, req.message()):
        return f"request {req.id}: its signature does not verify (forged or altered)"
    if req.expires_at > s.expires_at + SKEW_S:
        return f"request {req.id}: it outlives its session (forged)"
    return None


def check(conn: Connection, req: Request, required: int, now: float) -> str | None:
    """Why the service must not carry ``req`` out (None: it may), see the module."""
    why = signature_problem(conn, req, now)
    if why is not None:
        return why
    s = get_session(conn, req.session)
    assert s is not None
    if s.revoked_at is not None:
        return f"request {req.id}: the requester's session ended before it was carried out"
    if s.expires_at <= now or req.expires_at <= now:
        return f"request {req.id}: expired before it was carried out"
    requester = _operator(conn, req.requested_by, req.session)
    if isinstance(requester, str):
        return f"request {req.id}: {requester}"
    decision = authorize(requester, Action(req.action), req.resource())
    if not decision:
        return f"request {req.id}: {decision.reason}"
    approvers = valid_approvers(conn, req, now)
    if len(approvers) < required:
        return (
            f"request {req.id}: needs {required} approval(s) by another operator,"
            f" has {len(approvers)}"
        )
    return None


def valid_approvers(conn: Connection, req: Request, now: float) -> list[str]:
    """The operators whose approval of ``req`` holds (signed, allowed, not the requester)."""
    good = []
    for a in approvals_of(conn, req.id):
        s = get_session(conn, a.session)
        if _session_problem(s, a.operator, a.at, now) is not None or s is None:
            continue
        if not _verify(
            s.public_key, a.signature, approval_message(req, a.operator, a.session, a.at)
        ):
            continue
        approver = _operator(conn, a.operator, a.session)
        if isinstance(approver, Principal) and authorize(
            approver, Action.REQUEST_APPROVE, req.resource()
        ):
            good.append(a.operator)
    return sorted(set(good))


def _operator(conn: Connection, name: str, session: str) -> Principal | str:
    found = ops.credentials(conn, name)
    if found is None:
        return f"operator {name} does not exist"
    if found.operator.disabled:
        return f"operator {name} is disabled"
    return Principal.operator(name, found.operator.role, session, "")


# ------------------------------------------------------------------ approve, cancel
def approve(
    storage: Storage, principal: Principal, key: Ed25519PrivateKey, request_id: int, now: float
) -> Request:
    """Add ``principal``'s approval; the request becomes ``ready`` with enough of them.
    A request whose own signature does not hold is refused instead (and alerted)."""
    assert principal.session is not None
    failure: ReceiverError | None = None
    with storage.transaction() as tx:
        req = _open_request(tx, request_id, now)
        if req.status != "awaiting_approval":
            raise RequestError(f"request {request_id} is {req.status}: nothing to approve")
        decision = authorize(principal, Action.REQUEST_APPROVE, req.resource())
        forged = signature_problem(tx, req, now) if decision else None
        if not decision:
            audit.record(
                tx,
                principal,
                kind="denied",
                action=str(Action.REQUEST_APPROVE),
                target=f"request:{request_id}",
                at=now,
                outcome="denied",
                detail={"reason": decision.reason},
                key=key,
            )
            failure = Denied(decision.reason)
        elif forged is not None:
            audit.alert(
                tx,
                "forged_request",
                f"request:{request_id}",
                now,
                {"reason": forged, "requested_by": req.requested_by},
                principal.origin,
            )
            finish(tx, request_id, "refused", {"error": forged}, now)
            failure = AccessError(f"{forged}: refused, not approved")
        elif any(a.operator == principal.name for a in approvals_of(tx, request_id)):
            raise RequestError(f"request {request_id}: approved by {principal.name} already")
        else:
            signature = key.sign(approval_message(req, principal.name, principal.session, now))
            tx.execute(
                insert(approvals).values(
                    request=request_id,
                    operator=principal.name,
                    session=principal.session,
                    at=float(now),
                    signature=signature,
                )
            )
            have = len(valid_approvers(tx, req, now))
            if have >= req.approvals_needed:
                tx.execute(
                    update(requests)
                    .where(_Q.id == request_id)
                    .values(status="ready", updated_at=now)
                )
            audit.record(
                tx,
                principal,
                kind="approval",
                action=req.action,
                target=f"request:{request_id}",
                at=now,
                detail={
                    "requested_by": req.requested_by,
                    "digest": req.digest(),
                    "approvals": have,
                    "needed": req.approvals_needed,
                },
                key=key,
            )
    if failure is not None:
        raise failure
    with storage.transaction() as tx:
        return get(tx, request_id)


def _open_request(tx: Connection, request_id: int, now: float) -> Request:
    req = get(tx, request_id, lock=True)
    if req.status in OPEN and req.expires_at <= now:
        raise RequestError(f"request {request_id} expired at {_when(req.expires_at)}")
    return req


def cancel(
    storage: Storage, principal: Principal, key: Ed25519PrivateKey, request_id: int, now: float
) -> Request:
    with storage.transaction() as tx:
        req = get(tx, request_id, lock=True)
        decision = authorize(principal, Action.REQUEST_CANCEL, req.resource())
        if decision and req.status in OPEN:
            tx.execute(
                update(requests)
                .where(_Q.id == request_id)
                .values(status="cancelled", updated_at=now)
            )
        audit.record(
            tx,
            principal,
            kind="cancel" if decision else "denied",
            action=str(Action.REQUEST_CANCEL),
            target=f"request:{request_id}",
            at=now,
            outcome="ok" if decision and req.status in OPEN else "refused",
            detail={"reason": decision.reason, "status": req.status},
            key=key,
        )
    if not decision:
        raise Denied(decision.reason)
    if req.status not in OPEN:
        raise RequestError(f"request {request_id} is {req.status}: too late to cancel")
    with storage.transaction() as tx:
        return get(tx, request_id)


# ------------------------------------------------------------------ the service's side
def expire(conn: Connection, now: float) -> list[Request]:
    """Mark the open requests whose time is up as expired (audited)."""
    due = [
        _request(r)
        for r in conn.execute(
            select(*_COLUMNS).where(_Q.status.in_(OPEN), _Q.expires_at <= now).with_for_update()
        ).all()
    ]
    for req in due:
        conn.execute(
            update(requests).where(_Q.id == req.id).values(status="expired", updated_at=now)
        )
        audit.record(
            conn,
            Principal.system("receiver"),
            kind="execution",
            action=req.action,
            target=f"request:{req.id}",
            at=now,
            outcome="expired",
            detail={"requested_by": req.requested_by, "status": req.status},
        )
    return due


def ready(conn: Connection) -> list[Request]:
    return [
        _request(r)
        for r in conn.execute(select(*_COLUMNS).where(_Q.status == "ready").order_by(_Q.id)).all()
    ]


def claim(conn: Connection, request_id: int, now: float) -> bool:
    """Take a ready request for execution; False when another process has."""
    got = conn.execute(
        update(requests)
        .where(_Q.id == request_id, _Q.status == "ready")
        .values(status="executing", updated_at=now)
        .returning(_Q.id)
    ).first()
    return got is not None


def finish(
    conn: Connection, request_id: int, status: str, result: dict[str, Any], now: float
) -> None:
    conn.execute(
        update(requests)
        .where(_Q.id == request_id)
        .values(status=status, result=json.dumps(result), updated_at=now)
    )


def _when(t: float) -> str:
    from clitools.timefmt import iso

    return iso(t)  # ISO 8601 with the site's offset (docs/output.md)
