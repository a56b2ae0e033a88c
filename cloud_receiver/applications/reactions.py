"""What the utility's applications do with the receiver's traffic: the `Reactions` the
ingest calls (`cloud_receiver.ingest.hooks`).

A newly stored batch records command outcomes and upgrade progress from its events and
bills prepaid meters from its readings; each step is idempotent and retried by the next
batch's data, so a failure is logged, never a reason to refuse the batch. Each tick
carries out the operators' ready requests (`.requests`: checked, then signed with the
keys only the service holds), enforces prepayment, advances the running rollout (both
need the command key), closes commands that will never get an outcome, expires those
not sent in time, and sends the due ones — claimed first, so of two receivers only one
sends a command. Whenever the audit log has grown, at most every ten minutes, its head
(last entry and hash) is logged: a record outside the database to check it against.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_receiver.access.policy import Principal
from cloud_receiver.applications import prepay, requests
from cloud_receiver.applications.fleet import commands, rollout
from cloud_receiver.applications.supply import state as supply
from cloud_receiver.storage import Storage
from cloud_receiver.storage import audit as audit_chain
from contract.records import Event, Reading

log = logging.getLogger(__name__)

AUDIT_HEAD_LOG_S = 600.0


class Applications:
    """The receiver's `Reactions`: prepayment, commands, rollouts."""

    def __init__(
        self,
        storage: Storage,
        *,
        command_key: Ed25519PrivateKey | None = None,
        prepay_policy: prepay.Policy | None = None,
        request_keys: requests.Keys | None = None,
        name: str = "receiver",
    ) -> None:
        self.storage = storage
        self.command_key = command_key
        self.prepay_policy = prepay_policy or prepay.Policy()
        # None: this process carries out no operator requests (benchmarks, simulations).
        self.request_keys = request_keys
        self.principal = Principal.system(name)
        self._audit_head: tuple[int, str] | None = None
        self._audit_head_at = float("-inf")

    def stored(
        self, concentrator: str, readings: Sequence[Reading], events: Sequence[Event], now: float
    ) -> None:
        if events:
            try:
                commands.apply_results(self.storage, concentrator, events)
            except Exception:
                log.exception("could not record command results from %s", concentrator)
            try:
                rollout.apply_events(self.storage, concentrator, events, now)
            except Exception:
                log.exception("could not record upgrade progress from %s", concentrator)
        try:
            prepay.charge(
                self.storage,
                ((r.meter, r.quantity, r.slot, r.value) for r in readings),
                now,
                concentrator,
            )
        except Exception:
            log.exception("prepayment charging failed for a batch of %s", concentrator)

    def software(
        self, concentrator: str, software: str | None, wire_version: int, now: float
    ) -> None:
        rollout.note_software(self.storage, concentrator, software, wire_version, now)

    def chunk(self, concentrator: str, version: str, index: int) -> bytes | None:
        return rollout.chunk(self.storage, concentrator, version, index)

    def tick(self, now: float, send_command: Callable[[str, bytes], None]) -> None:
        storage = self.storage
        if self.request_keys is not None:
            for line in requests.execute_ready(storage, self.request_keys, now, by=self.principal):
                log.info("%s", line)
            self._log_audit_head(now)
        supply.expire(storage, now)  # DR reasons whose window ended (their reconnection ran)
        if self.command_key is not None:
            for line in prepay.enforce(storage, self.command_key, self.prepay_policy, now):
                log.info("prepayment: %s", line)
            for line in rollout.advance(storage, self.command_key, now):
                log.info("%s", line)
        for c in commands.sweep(storage, now):
            log.warning("command %s (%s) to %s: no outcome, closed", c.id, c.action, c.concentrator)
        ready, expired = commands.due(storage, now)
        for c in expired:
            storage.set_command_status(c.id, "expired", {"reason": "not sent in time"}, now)
        for c in ready:
            if not storage.claim_command(c.id, now):
                continue  # another receiver sends it
            # Marking it issued again if the send fails would send it twice: paho keeps
            # a QoS 1 message it could not send yet and sends it on reconnect.
            send_command(c.concentrator, c.blob)
            log.info("command %s (%s) sent to %s", c.id, c.action, c.concentrator)

    def _log_audit_head(self, now: float) -> None:
        if now - self._audit_head_at < AUDIT_HEAD_LOG_S:
            return
        with self.storage.transaction() as tx:
            head = audit_chain.head(tx)
        if head != self._audit_head:
            log.info("audit head: entry %d, sha256 %s", *head)
            self._audit_head = head
        self._audit_head_at = now
