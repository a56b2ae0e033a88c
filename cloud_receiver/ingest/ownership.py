"""The ingest's ownership check: a concentrator delivers only the meters it owns.

Called from the ingest path (`Ingestor`) once a batch has opened under its
concentrator's key and before it is stored. A reading for a meter the sender does not
own at the reading's slot (`cloud_receiver.storage.ownership.owner_at`) is split off:
it never reaches the ``readings`` table, so the true owner's value for that slot is
stored when it arrives. The refused readings go to quarantine (reason ``not_owner``)
with an ``ownership_refused`` alert event; the rest of the batch is stored and the batch
is acknowledged as usual, so a stolen concentrator learns nothing and an honest one
with a stale archive does not resend the batch forever (docs/analytics.md, "Meter ownership").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from cloud_receiver.storage import Storage
from cloud_receiver.storage import ownership as rule
from cloud_receiver.storage.schema import refused_latest
from contract.records import Reading


@dataclass(frozen=True)
class Split:
    owned: list[Reading]
    refused: list[Reading] = field(default_factory=list)
    owners: dict[str, str] = field(default_factory=dict)  # refused meter -> its owner


class Owners:
    """The owners of the meters a receiver hears, cached per ownership version.

    Assignments are only ever added, so the newest row's id (`rule.version`, one index
    lookup) tells whether anything changed since the cache was filled: a group of
    batches costs that one query, plus one for the meters not seen since the last
    change. Two receivers on one database see each other's changes at their next
    group."""

    MAX_CACHED = 200_000  # meters; beyond, the cache starts over

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self._version = -1
        self._known: dict[str, list[rule.Assignment]] = {}
        # The owner of each cached meter whose owner is the same at every slot.
        self._fixed: dict[str, str | None] = {}

    def split(self, concentrator: str, readings: Sequence[Reading]) -> Split:
        """The readings ``concentrator`` may deliver, and those it may not."""
        return self.split_many([(concentrator, readings)])[0]

    def split_many(self, batches: Sequence[tuple[str, Sequence[Reading]]]) -> list[Split]:
        """`split` for each (concentrator, readings) of a group of batches: one version
        query for the group, one for the meters not seen since the last change."""
        if not any(readings for _, readings in batches):
            return [Split(list(readings)) for _, readings in batches]
        with self.storage.read() as conn:
            version = rule.version(conn)
            if version != self._version or len(self._known) > self.MAX_CACHED:
                self._known.clear()
                self._fixed.clear()
                self._version = version
            if version == 0:  # nobody owns anything yet
                return [Split(list(readings)) for _, readings in batches]
            unseen = {r.meter for _, readings in batches for r in readings} - self._known.keys()
            if unseen:
                found = rule.histories(conn, unseen)
                for meter in unseen:
                    history = self._known[meter] = found.get(meter, [])
                    if len(history) <= 1:  # one owner (or none) at every slot
                        self._fixed[meter] = rule.owner_at(history, 0)
        return [self._split(concentrator, readings) for concentrator, readings in batches]

    def _split(self, concentrator: str, readings: Sequence[Reading]) -> Split:
        fixed = self._fixed
        owned: list[Reading] = []
        refused: list[Reading] = []
        owners: dict[str, str] = {}
        for r in readings:
            meter = r.meter
            owner = fixed[meter] if meter in fixed else rule.owner_at(self._known[meter], r.slot)
            if owner is None or owner == concentrator:
                owned.append(r)
            else:
                refused.append(r)
                owners[meter] = owner
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
    """The alert event, then the quarantine row (through `Storage.quarantine`, the one
    way into quarantine), unless this batch was stored before (a redelivery of a batch
    already judged: nothing is repeated). Both are written before the batch is stored,
    so a crash in between repeats them at the resend, never loses them."""
    with storage.read() as conn:
        if rule.batch_stored(conn, concentrator, seq):
            return
    rows = [
        (r.meter, r.quantity, r.slot, r.value, r.unit, r.read_at, r.source) for r in split.refused
    ]
    with storage.transaction() as conn:
        rule.record_alert(
            conn, concentrator=concentrator, seq=seq, refused=rows, owners=split.owners,
            received_at=received_at,
        )  # fmt: skip
        rule.remember_refused(conn, storage.insert(refused_latest), concentrator, rows)
    storage.quarantine(
        topic=topic,
        concentrator=concentrator,
        seq=seq,
        reason="not_owner",
        detail=rule.refusal_text(concentrator, rows, split.owners),
        payload=rule.refusal_payload(rows),
        received_at=received_at,
    )
