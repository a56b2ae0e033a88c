"""The ingest's ownership check: a concentrator delivers only the meters it owns.

Called from the ingest path (`Ingestor`) once a batch has opened under its
concentrator's key and before it is stored. A reading for a meter the sender does not
own at the reading's slot (`cloud_receiver.storage.ownership.owner_at`) is split off:
it never reaches the ``readings`` table, so the true owner's value for that slot is
stored when it arrives. The refused readings go to quarantine (reason ``not_owner``)
with an ``ownership_refused`` alert event; the rest of the batch is stored and the batch
is acknowledged as usual, so a stolen concentrator learns nothing and an honest one
with a stale archive does not resend the batch forever (README, "Meter ownership").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cloud_receiver.storage import Storage
from cloud_receiver.storage import ownership as rule
from contract.records import Reading


@dataclass(frozen=True)
class Split:
    owned: list[Reading]
    refused: list[Reading] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)  # refused meter -> its owner


def split_owned(storage: Storage, concentrator: str, readings: Sequence[Reading]) -> Split:
    """The readings ``concentrator`` may deliver, and those it may not (one query)."""
    if not readings:
        return Split([])
    with storage.read() as conn:
        history = rule.histories(conn, (r.meter for r in readings))
    if not history:
        return Split(list(readings))
    owned: list[Reading] = []
    refused: list[Reading] = []
    owners: dict[str, str] = {}
    for r in readings:
        h = history.get(r.meter)
        owner = rule.owner_at(h, r.slot) if h else None
        if owner is None or owner == concentrator:
            owned.append(r)
        else:
            refused.append(r)
            owners[r.meter] = owner
    return Split(owned, refused, owners)


def refuse(
    storage: Storage,
    *,
    topic: str,
    concentrator: str,
    seq: int,
    split: Split,
    received_at: float,
) -> None:
    """Quarantine ``split.refused`` with its alert, unless this batch was stored before
    (a redelivery of a batch already judged: the alert is not repeated). Written before
    the batch is stored, so a crash in between repeats the alert, never loses it."""
    with storage.transaction() as conn:
        if rule.batch_stored(conn, concentrator, seq):
            return
        rule.record_refusal(
            conn,
            topic=topic,
            concentrator=concentrator,
            seq=seq,
            refused=[
                (r.meter, r.quantity, r.slot, r.value, r.unit, r.read_at, r.source)
                for r in split.refused
            ],
            owners=split.owners,
            received_at=received_at,
        )
