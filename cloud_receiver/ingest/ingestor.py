"""The per-message pipeline, free of MQTT so it can be tested and fuzzed directly.

Per message, in order: the topic names the concentrator; the clear header must name the
same one; the payload must decrypt and authenticate under that concentrator's key; the
batch is stored (unique keys make a redelivery a duplicate); only then is the ack sealed.
Anything that fails is quarantined with its reason — the receiver never crashes on input.
"""

from __future__ import annotations

import functools
import logging
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal, get_args

from cloud_receiver.ingest import ownership
from cloud_receiver.ingest.hooks import Reactions
from cloud_receiver.ingest.ratelimit import RateLimiter, SenderRate
from cloud_receiver.storage import Batch, IngestResult, Storage
from cloud_receiver.storage import references as stored_references
from cloud_receiver.storage.quarantine import Budget
from contract import topics, wire
from contract.quantities import canonical_readings
from contract.records import Event, Reading

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """What became of one message; ``ack`` is the payload to publish, if any."""

    status: str  # stored | duplicate | resync | quarantined | dropped (over the rate limit)
    reason: str = ""
    concentrator: str | None = None
    seq: int | None = None
    new_readings: int = 0
    ack: bytes | None = None


# Why a message is quarantined: the wire format's reasons and the ingest's own. A closed
# list, so metrics labelled by reason stay few (`cloud_receiver.ingest.metrics`).
REASONS: tuple[str, ...] = (
    *get_args(wire.WireErrorReason),
    "bad_topic",
    "concentrator_mismatch",
    "replay",
    "revoked",
    "not_owner",  # readings for meters the sender does not own (`.ownership`)
    "internal_error",
)


Message = tuple[str, bytes, float | None]  # topic, payload, received at (None: now)
GROUP = 8  # batches per transaction when messages wait (`Ingestor.handle_many`)
TAKE = 8 * GROUP  # messages the service takes from its queue at once, at most
# How long a thread may hold Python's lock while another waits for it (the interpreter's
# default is 5 ms). The storing thread gives the lock up for every SQLite step and
# commit, and each time it wants it back it waited out the whole default interval
# behind the decoding thread: that wait, not the database, set the pace of a group
# (bench/receiver.py: about 20% more readings a second at 0.5 ms).
SWITCH_INTERVAL_S = 0.0005


@dataclass(frozen=True)
class _Opened:
    """A message that opened and decoded: its batch, ready to store."""

    topic: str
    payload: bytes
    now: float
    concentrator: str
    header: wire.Header
    readings: list[Reading]
    events: Sequence[Event]


@dataclass
class Counters:
    messages: int = 0
    stored: int = 0
    duplicates: int = 0
    quarantined: int = 0  # kept in the quarantine (perhaps evicted since)
    rate_limited: int = 0  # refused beyond the sender's rate: counted, not kept
    evicted: int = 0  # old quarantined messages this process evicted to make room
    resyncs: int = 0  # batches whose references were not resolved: nothing stored
    readings: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)


class Ingestor:
    """The per-message pipeline, free of MQTT so it can be tested and fuzzed directly."""

    def __init__(
        self,
        storage: Storage,
        keys: Callable[[str, int], bytes | None],
        reactions: Reactions | None = None,
        revoked: Callable[[str], bool] | None = None,
        *,
        budget: Budget | None = None,
        rate: SenderRate | None = None,
    ) -> None:
        self.storage = storage
        self.keys = keys
        # Concentrators whose certificates were revoked (`fleet.revocation`): the broker
        # refuses their new connections, this refuses what still comes by an open one.
        self.revoked = revoked
        self.reactions = reactions
        self.budget = budget or Budget()
        self.limiter = RateLimiter(rate or SenderRate())
        self.counters = Counters()
        self.owners = ownership.Owners(storage)  # who may deliver which meter
        self._software: dict[str, tuple[str | None, int]] = {}
        # Held while a message is opened and while the storing thread counts or
        # quarantines: the counters, the rate limiter and the quarantine are one at a time.
        self._effects = threading.Lock()
        self._writer_pool: ThreadPoolExecutor | None = None

    def handle(self, topic: str, payload: bytes, received_at: float | None = None) -> Outcome:
        return self.handle_many([(topic, payload, received_at)])[0]

    def handle_many(self, messages: Sequence[Message]) -> list[Outcome]:
        """Each message's outcome, in order, as if they were handled one by one; their
        batches are stored `GROUP` per transaction (`Storage.ingest_many`), and while a
        group is being stored (on a thread of its own) the next one is opened and
        decoded, so the database's work overlaps ours."""
        outcomes: list[Outcome | None] = [None] * len(messages)
        pending: Future[None] | None = None
        try:
            for start in range(0, len(messages), GROUP):
                opened: list[tuple[int, _Opened]] = []
                for i in range(start, min(start + GROUP, len(messages))):
                    result = self._open_one(*messages[i])
                    if isinstance(result, Outcome):
                        outcomes[i] = result
                    else:
                        opened.append((i, result))
                if pending is not None:
                    pending.result()
                    pending = None
                if not opened:
                    continue
                if start + GROUP >= len(messages):
                    self._store(opened, outcomes)  # the last group: nothing to overlap
                else:
                    pending = self._writer().submit(self._store, opened, outcomes)
        finally:
            if pending is not None:
                pending.result()
        done = [o for o in outcomes if o is not None]
        assert len(done) == len(messages)  # every message was refused or stored
        with self._effects:  # a message is counted once all of it is
            for outcome in done:
                self.counters.messages += 1
                if outcome.status == "stored":
                    self.counters.stored += 1
                    self.counters.readings += outcome.new_readings
                elif outcome.status == "duplicate":
                    self.counters.duplicates += 1
        return done

    def _open_one(self, topic: str, payload: bytes, received_at: float | None) -> Outcome | _Opened:
        now = time.time() if received_at is None else received_at
        with self._effects:
            try:
                return self._open(topic, payload, now)
            except Exception as exc:  # a storage failure or a bug: quarantine, never crash
                return self._internal_error(topic, payload, now, None, None, exc)

    def _internal_error(
        self,
        topic: str,
        payload: bytes,
        now: float,
        concentrator: str | None,
        seq: int | None,
        exc: Exception,
    ) -> Outcome:
        """Called inside ``except``: the failure is logged with its traceback."""
        log.exception("failed to ingest a message on %s", topic)
        return self._quarantine(topic, payload, now, concentrator, seq, "internal_error", repr(exc))

    def _writer(self) -> ThreadPoolExecutor:
        if self._writer_pool is None:
            # Process-wide, and only ever lowered: the storing thread is what needs it.
            sys.setswitchinterval(min(sys.getswitchinterval(), SWITCH_INTERVAL_S))
            self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="ingest-store")
        return self._writer_pool

    def _store(self, opened: Sequence[tuple[int, _Opened]], outcomes: list[Outcome | None]) -> None:
        """Store a group of opened batches and settle their outcomes; never raises (a
        failure is each message's ``internal_error``)."""
        try:
            splits = self.owners.split_many([(o.concentrator, o.readings) for _, o in opened])
        except Exception as exc:
            with self._effects:
                for i, o in opened:
                    outcomes[i] = self._internal_error(
                        o.topic, o.payload, o.now, o.concentrator, o.header.seq, exc
                    )
            return
        ready: list[tuple[int, _Opened, ownership.Split]] = []
        for (i, o), split in zip(opened, splits, strict=True):
            if split.refused:
                with self._effects:
                    try:
                        self._refuse_foreign(o.topic, o.concentrator, o.header.seq, split, o.now)
                    except Exception as exc:
                        outcomes[i] = self._internal_error(
                            o.topic, o.payload, o.now, o.concentrator, o.header.seq, exc
                        )
                        continue
            ready.append((i, o, split))
        group = [
            Batch(o.concentrator, o.header.seq, o.header.key_id, split.owned, o.events, o.now)
            for _, o, split in ready
        ]
        results: list[tuple[IngestResult, int] | Exception]
        try:
            results = list(self.storage.ingest_many(group))
        except Exception:
            log.exception("storing a group of %d batches failed; storing them one by one",
                          len(group))  # fmt: skip
            results = [self._store_alone(batch) for batch in group]
        for (i, o, split), result in zip(ready, results, strict=True):
            try:
                if isinstance(result, Exception):
                    raise result
                outcomes[i] = self._stored(o, split.owned, *result)
            except Exception as exc:
                with self._effects:
                    outcomes[i] = self._internal_error(
                        o.topic, o.payload, o.now, o.concentrator, o.header.seq, exc
                    )

    def _store_alone(self, batch: Batch) -> tuple[IngestResult, int] | Exception:
        try:
            return self.storage.ingest_many([batch])[0]
        except Exception as exc:
            return exc

    def _open(self, topic: str, payload: bytes, now: float) -> Outcome | _Opened:
        """Check, open and decode a message: an `Outcome` when it is refused, else the
        batch to store."""
        topic_id = topics.up_sender(topic)
        if topic_id is None:
            return self._quarantine(
                topic,
                payload,
                now,
                None,
                None,
                "bad_topic",
                f"topic {topic!r} is not {topics.up('<concentrator>')}",
            )
        try:
            header = wire.parse_header(payload)
        except wire.WireError as exc:
            return self._quarantine(topic, payload, now, topic_id, None, exc.reason, str(exc))
        if header.concentrator_id != topic_id:
            return self._quarantine(
                topic,
                payload,
                now,
                topic_id,
                header.seq,
                "concentrator_mismatch",
                f"header names {header.concentrator_id!r} on the topic of {topic_id!r}",
            )
        if self.revoked is not None and self.revoked(topic_id):
            return self._quarantine(
                topic,
                payload,
                now,
                topic_id,
                header.seq,
                "revoked",
                f"concentrator {topic_id!r} is revoked (`cloud-receiver revoke`)",
            )
        try:
            _, content = wire.open_batch(
                payload, self.keys, functools.partial(self._resolve, topic_id)
            )
        except wire.WireError as exc:
            if exc.reason == "unresolved_reference":
                return self._resync(topic_id, header, str(exc))
            return self._quarantine(topic, payload, now, topic_id, header.seq, exc.reason, str(exc))
        # A concentrator of the previous release still sends Modbus register names.
        readings = canonical_readings(content.readings)
        return _Opened(topic, payload, now, topic_id, header, readings, content.events)

    def _stored(self, o: _Opened, owned: list[Reading], result: IngestResult, new: int) -> Outcome:
        """The outcome of a batch the storage has settled (`_store`)."""
        topic, topic_id, header, now = o.topic, o.concentrator, o.header, o.now
        if result == IngestResult.REPLAY:
            with self._effects:
                return self._quarantine(
                    topic,
                    o.payload,
                    now,
                    topic_id,
                    header.seq,
                    "replay",
                    f"sequence {header.seq} is older than the replay window",
                )
        if result == IngestResult.STORED:
            self._after_store(topic_id, owned, o.events, now)
            self._note_software(topic_id, header, o.events, now)
        key = self.keys(topic_id, header.key_id)
        assert key is not None  # open_batch just used it
        status: Literal["stored", "duplicate"] = (
            "stored" if result == IngestResult.STORED else "duplicate"
        )
        ack = wire.seal_ack(
            wire.Ack(seq=header.seq, status=status),
            concentrator_id=topic_id,
            key_id=header.key_id,
            key=key,
            version=header.version,
        )
        return Outcome(status, "", topic_id, header.seq, new, ack)

    def _resolve(
        self, concentrator: str, keys: Sequence[wire.RefKey]
    ) -> Mapping[wire.RefKey, tuple[str, float]]:
        return stored_references.resolve(self.storage, keys, concentrator)

    def _resync(self, concentrator: str, header: wire.Header, detail: str) -> Outcome:
        """A batch coded against values this database does not hold (or holds
        otherwise): nothing is stored, nothing quarantined (the sender did no wrong),
        and the ack asks the concentrator for the same readings as a key batch."""
        self.counters.resyncs += 1
        self.counters.by_reason["unresolved_reference"] = (
            self.counters.by_reason.get("unresolved_reference", 0) + 1
        )
        log.info("asked %s to resend batch %d as a key batch: %s", concentrator, header.seq, detail)
        key = self.keys(concentrator, header.key_id)
        assert key is not None  # open_batch just used it
        ack = wire.seal_ack(
            wire.Ack(seq=header.seq, status="resync", reason=detail[:512]),
            concentrator_id=concentrator,
            key_id=header.key_id,
            key=key,
            version=header.version,
        )
        return Outcome("resync", "unresolved_reference", concentrator, header.seq, 0, ack)

    def _refuse_foreign(
        self, topic: str, concentrator: str, seq: int, split: ownership.Split, now: float
    ) -> None:
        """Readings for meters the sender does not own: quarantined with an alert, never
        stored; the rest of the batch goes on (and is acked)."""
        self.counters.by_reason["not_owner"] = self.counters.by_reason.get("not_owner", 0) + 1
        log.warning(
            "refused %d reading(s) from %s (seq %d) for meters it does not own: %s",
            len(split.refused), concentrator, seq, ", ".join(sorted(split.owners)),
        )  # fmt: skip
        ownership.refuse(
            self.storage, topic=topic, concentrator=concentrator, seq=seq, split=split,
            received_at=now,
        )  # fmt: skip

    def _note_software(
        self, concentrator: str, header: wire.Header, events: Sequence[Event], now: float
    ) -> None:
        """Which release and wire format each concentrator runs, from its authenticated
        header (version 2) or, for version 1, its ``daemon_start`` events; passed on when
        it changes (and once per process), not per batch."""
        if self.reactions is None:
            return
        software = header.software or None
        for e in events:
            if header.software is None and e.kind == "daemon_start":
                software = str(e.detail.get("version")) or None
        seen = (software, header.version)
        if self._software.get(concentrator) == seen:
            return
        try:
            self.reactions.software(concentrator, seen[0], seen[1], now)
        except Exception:
            log.exception("could not record the software of %s", concentrator)
            return
        self._software[concentrator] = seen

    def _after_store(
        self, concentrator: str, readings: Sequence[Reading], events: Sequence[Event], now: float
    ) -> None:
        """What a newly stored batch means beyond its rows is the applications' business
        (`Reactions.stored`); a failure there is logged, never a reason to refuse it."""
        if self.reactions is None:
            return
        try:
            self.reactions.stored(concentrator, readings, events, now)
        except Exception:
            log.exception("reacting to a batch of %s failed", concentrator)

    def _quarantine(
        self,
        topic: str,
        payload: bytes,
        now: float,
        concentrator: str | None,
        seq: int | None,
        reason: str,
        detail: str,
    ) -> Outcome:
        self.counters.by_reason[reason] = self.counters.by_reason.get(reason, 0) + 1
        if not self.limiter.allow(concentrator or "", now):
            self.counters.rate_limited += 1
            log.debug("dropped a message on %s over the rate limit: %s", topic, reason)
            return Outcome("dropped", reason, concentrator, seq)
        self.counters.quarantined += 1
        log.warning("quarantined a message on %s: %s (%s)", topic[:256], reason, detail[:1024])
        self.counters.evicted += self.storage.quarantine(
            topic=topic,
            concentrator=concentrator,
            seq=seq,
            reason=reason,
            detail=detail,
            payload=payload,
            received_at=now,
            budget=self.budget,
        )
        return Outcome("quarantined", reason, concentrator, seq)
