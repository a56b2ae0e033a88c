"""A principal acting on the receiver's data, whichever door it came through: the role
check whose refusal is audited before it is said, and the audit entries of what it does
and reads. The CLI's `Actor` and the portal's and API's `Caller` are these with their
own way of saying no (exit 4, HTTP 403)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from cloud_receiver.access.policy import ANY, Action, Principal, Resource, authorize

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from cloud_receiver.storage import Storage
    from cloud_receiver.storage.audit import Entry


class Acting:
    """Mixed into a dataclass holding ``storage``, ``principal`` and ``key`` (the
    operator's session key that signs the entries; None for a customer)."""

    storage: Storage
    principal: Principal

    @property
    def signing_key(self) -> Ed25519PrivateKey | None:
        raise NotImplementedError

    def refusal(self, reason: str) -> Exception:
        """The exception this door refuses with."""
        raise NotImplementedError

    def require(self, action: Action, resource: Resource = ANY) -> None:
        """`authorize`; a refusal is audited, then raised (`refusal`)."""
        decision = authorize(self.principal, action, resource)
        if decision:
            return
        self.record(
            "denied",
            str(action),
            str(resource),
            outcome="denied",
            detail={"reason": decision.reason},
        )
        raise self.refusal(decision.reason)

    def record(
        self,
        kind: str,
        action: str,
        target: str,
        *,
        outcome: str = "ok",
        detail: dict[str, Any] | None = None,
    ) -> Entry:
        from cloud_receiver.access import audit

        with self.storage.transaction() as tx:
            return audit.record(
                tx,
                self.principal,
                kind=kind,
                action=action,
                target=target,
                at=time.time(),
                outcome=outcome,
                detail=detail,
                key=self.signing_key,
            )

    def audit_read(self, kind: str, target: str, doc: dict[str, Any], *, alert: bool) -> None:
        """Audit a read of data (``kind``: read or export) before it is shown; with
        ``alert``, raise the abnormal-access alert at its threshold."""
        from cloud_receiver.access import audit, settings

        now = time.time()
        with self.storage.transaction() as tx:
            audit.record(
                tx,
                self.principal,
                kind=kind,
                action=str(Action.DATA_READ),
                target=target,
                at=now,
                detail=doc,
                key=self.signing_key,
            )
            if alert:
                audit.after_read(tx, self.principal, settings.load(tx), now)
