"""What ``make demo`` prints after its tables: every figure in plain words.

The tables come from the commands a user runs (`concentrator stats`, `cloud-receiver
concentrators`); the words come from both stores, read after everything stopped, so
that a figure that is not zero says where it comes from (a batch still waiting for its
acknowledgement, the concentrator's own stop record) instead of looking like a loss.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from cloud_receiver.public import SqliteStorage
from concentrator.public import Store

# What an event kind left in the outbox at a normal stop means.
_OUTBOX_KINDS = {
    "daemon_stop": "the record of the concentrator's own stop, written after its uplink had closed",
}


def explain_concentrator(db: Path) -> list[str]:
    """The figures of `concentrator stats` for this store, in words."""
    with Store.open(db) as store:
        stored = len(store.get_readings())
        missing = store.missing()
        backlog = store.backlog()
        pending = store.pending_batches()
        outbox = [e.event.kind for e in store.events() if e.batch_id is None]
    lines = [
        f"read success: {stored} scheduled readings stored and {len(missing)} recorded "
        "missing; the rate is stored ÷ (stored + missing)"
    ]
    for reason, n in Counter(m.reason for m in missing).most_common():
        lines.append(f"  {n} missing because: {reason}")
    if backlog.readings == 0 and backlog.events == 0:
        lines.append("backlog: nothing waits for the uplink; the receiver acknowledged it all")
        return lines
    lines.append(
        f"backlog: {backlog.readings} readings and {backlog.events} events not acknowledged "
        "by the receiver yet; they go up at the concentrator's next start:"
    )
    in_batches = sum(len(b.readings) for b in pending)
    if backlog.readings > in_batches:
        lines.append(
            f"  {backlog.readings - in_batches} readings read after its last batch was sealed"
        )
    for kind, n in Counter(outbox).most_common():
        meaning = _OUTBOX_KINDS.get(kind, "recorded after its last batch was sealed")
        lines.append(f"  {n} {kind} event(s): {meaning}")
    for b in pending:
        kinds = ", ".join(sorted({e.event.kind for e in b.events})) or "no"
        lines.append(
            f"  batch {b.batch_id} ({len(b.readings)} readings, {len(b.events)} events: "
            f"{kinds}) was sent but not acknowledged before the concentrator stopped"
        )
    return lines


def explain_receiver(db: Path, receiver_db: Path, concentrator_id: str) -> list[str]:
    """The figures of `cloud-receiver concentrators` for one concentrator, in words."""
    storage = SqliteStorage(receiver_db)
    try:
        info = next(c for c in storage.concentrators() if c.concentrator == concentrator_id)
    finally:
        storage.close()
    with Store.open(db) as store:
        unacked = [b.batch_id for b in store.pending_batches() if b.batch_id < info.max_seq]
    lines = [
        f"batches {info.batches}: the sealed batches the receiver stored (each acknowledged "
        f"to the concentrator); readings {info.readings}: the readings in them",
        f"max seq {info.max_seq}: the highest batch number received from {concentrator_id}",
    ]
    if info.missing_seqs == 0:
        lines.append("gaps 0: every batch number up to it arrived")
    elif len(unacked) == info.missing_seqs:
        numbers = ", ".join(map(str, unacked))
        lines.append(
            f"gaps {info.missing_seqs}: batch {numbers} left the concentrator but had not "
            "arrived when the demo stopped it; the concentrator keeps it until the receiver "
            "acknowledges it and resends it (same number, same bytes) at its next start"
        )
    else:
        lines.append(
            f"gaps {info.missing_seqs}: batch numbers below {info.max_seq} the receiver has "
            "not seen; the concentrator resends every batch that is not acknowledged"
        )
    return lines
