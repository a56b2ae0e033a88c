"""What the utility's applications do with the receiver's traffic: the `Reactions` the
ingest calls (`cloud_receiver.ingest.hooks`).

A newly stored batch records command outcomes and upgrade progress from its events and
bills prepaid meters from its readings; each step is idempotent and retried by the next
batch's data, so a failure is logged, never a reason to refuse the batch. Each tick
enforces prepayment, advances the running rollout (both need the command key), closes
commands that will never get an outcome, expires those not sent in time, and sends
the due ones — claimed first, so of two receivers only one sends a command.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_receiver.applications import prepay
from cloud_receiver.applications.fleet import commands, rollout
from cloud_receiver.storage import Storage
from contract.records import Event, Reading

log = logging.getLogger(__name__)


class Applications:
    """The receiver's `Reactions`: prepayment, commands, rollouts."""

    def __init__(
        self,
        storage: Storage,
        *,
        command_key: Ed25519PrivateKey | None = None,
        prepay_policy: prepay.Policy | None = None,
    ) -> None:
        self.storage = storage
        self.command_key = command_key
        self.prepay_policy = prepay_policy or prepay.Policy()

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
