"""The receiver's side of downlink commands: issue (sign and queue), publish, and learn
the outcome from the concentrator's ``command`` events.

A command is signed when it is issued, with the counter it will carry, and stored with
its signed bytes: publishing only sends those bytes, so a receiver restart or a second
receiver never re-signs or re-numbers anything. The concentrator's verdict comes back as
an event in its encrypted uplink (`concentrator.command_runner`); every step is written
to ``command_log``, the receiver's audit log.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cloud_receiver.storage import CommandRecord, Storage
from contract import commands as wire_commands
from contract.commands import Command
from contract.records import Event

DEFAULT_VALID_S = 3600.0
FINAL = ("done", "failed", "refused", "expired", "unanswered")
# A sent command with no outcome this long after its window closed never will have one
# (lost, or refused unreadable): it is closed as unanswered, so nothing waits forever.
UNANSWERED_AFTER_S = 600.0


def issue(
    storage: Storage,
    key: Ed25519PrivateKey,
    *,
    concentrator: str,
    action: str,
    meters: Sequence[str] = (),
    params: dict[str, Any] | None = None,
    not_before: float | None = None,
    valid_for_s: float = DEFAULT_VALID_S,
    issued_by: str = "cli",
    now: float | None = None,
    command_id: str | None = None,
) -> CommandRecord:
    """Sign a command for ``concentrator`` and queue it; it is published by the running
    receiver service. Raises `contract.commands.CommandError` for a bad command
    (nothing is stored then). ``command_id``: the id an operator's request chose for it
    (default: a new one)."""
    draft = draft_command(
        concentrator=concentrator, action=action, meters=meters, params=params,
        not_before=not_before, valid_for_s=valid_for_s, now=now, command_id=command_id,
    )  # fmt: skip
    now = draft.issued_at
    cmd = Command(**{**draft.__dict__, "counter": storage.next_command_counter(concentrator)})
    record = CommandRecord(
        id=cmd.id,
        concentrator=concentrator,
        counter=cmd.counter,
        action=action,
        meters=list(cmd.meters),
        params=cmd.params,
        not_before=cmd.not_before,
        not_after=cmd.not_after,
        issued_at=now,
        issued_by=issued_by,
        status="issued",
        result=None,
        updated_at=now,
        blob=wire_commands.sign(cmd, key),
    )
    storage.add_command(record)
    return record


def draft_command(
    *,
    concentrator: str,
    action: str,
    meters: Sequence[str] = (),
    params: dict[str, Any] | None = None,
    not_before: float | None = None,
    valid_for_s: float = DEFAULT_VALID_S,
    now: float | None = None,
    command_id: str | None = None,
) -> Command:
    """The command `issue` would sign, checked (`contract.commands.check`) but without
    a counter yet: what a request is validated against before it is queued."""
    now = time.time() if now is None else now
    start = now if not_before is None else not_before
    draft = Command(
        id=command_id or new_command_id(),
        concentrator=concentrator,
        counter=1,
        action=action,
        meters=tuple(meters),
        not_before=start,
        not_after=start + valid_for_s,
        issued_at=now,
        params=dict(params or {}),
    )
    wire_commands.check(draft)  # refuse before a counter is spent
    return draft


def new_command_id() -> str:
    return uuid.uuid4().hex[:16]


def apply_results(storage: Storage, concentrator: str, events: Sequence[Event]) -> int:
    """Record the outcomes the concentrator reported (``command`` events); returns how
    many commands changed state."""
    changed = 0
    for e in events:
        if e.kind != "command":
            continue
        if e.detail.get("duplicate"):
            continue  # a refused copy of a command whose own outcome counts
        command_id = e.detail.get("id")
        result = e.detail.get("result")
        if not isinstance(command_id, str) or result not in (
            "scheduled",
            "done",
            "failed",
            "refused",
        ):
            continue  # a refusal of something unreadable: kept as an event only
        known = storage.commands(command_id=command_id, limit=1)
        if not known or known[0].concentrator != concentrator:
            continue  # not ours, or a report about another concentrator's command
        if storage.set_command_status(command_id, str(result), dict(e.detail), e.at):
            changed += 1
    return changed


def sweep(storage: Storage, now: float) -> list[CommandRecord]:
    """Close sent commands that can no longer get an outcome (see UNANSWERED_AFTER_S)."""
    closed = []
    for status in ("published", "scheduled"):
        for c in storage.commands(status=status, limit=10_000):
            if c.not_after + UNANSWERED_AFTER_S < now and storage.set_command_status(
                c.id, "unanswered", {"reason": "no outcome reported"}, now
            ):
                closed.append(c)
    return closed


def due(storage: Storage, now: float) -> tuple[list[CommandRecord], list[CommandRecord]]:
    """(to publish, expired unpublished) among the issued commands, in counter order per
    concentrator: publishing in that order keeps every counter above the last."""
    issued = storage.commands(status="issued", limit=10_000)
    issued.sort(key=lambda c: (c.concentrator, c.counter))
    return [c for c in issued if c.not_after > now], [c for c in issued if c.not_after <= now]
