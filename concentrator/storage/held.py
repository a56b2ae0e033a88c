"""The held journal: what the writer took but could not commit while the disk was full.

While the store refuses writes (SQLITE_FULL, SQLITE_IOERR) the writer keeps readings,
missing records, events and states in memory. A kill -9 then would forget that the
meters answered, and the restarted daemon would call those slots "no poll (daemon
down)" — untrue, and no loss would be written (issue 19, item 10). So the writer keeps
a summary of what it holds in this file, and the next start turns it into missing
records and one ``loss`` event with the true reason.

The file is allocated at full size when the daemon starts (when there is space) and
later only overwritten in place: on a full disk, rewriting blocks a file already owns
needs no new ones. Layout: ``MAGIC`` (8 bytes), body length and CRC-32 (4 bytes each,
big-endian), then the zlib-compressed JSON body; length 0 means "nothing held". A torn
or damaged body fails its CRC and is reported, never half-applied.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import struct
import zlib
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clitools.files import PRIVATE
from contract.records import Event, Reading

log = logging.getLogger(__name__)

MAGIC = b"MFHELD01"
_HEAD = struct.Struct(">8sII")
# Room for the compressed keys of ``max_pending`` readings (a few bytes each once
# compressed) plus the held states, missing records and events.
BASE_BYTES = 64 * 1024
BYTES_PER_READING = 16

HELD_REASON = (
    "disk full: read while the store refused writes; the daemon stopped before it could commit them"
)
OVERFLOW_REASON = "disk full: memory buffer overflowed"
RECOVERED_KEY = "held:recovered"


@dataclass
class Held:
    """What the writer held, as the journal keeps it (reading keys, not values: the
    values are gone with the process; what must survive is that they were taken)."""

    episode: str
    reason: str
    readings: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    missing: list[tuple[str, str, int, str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)
    dropped: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def of(
        cls,
        episode: str,
        reason: str,
        readings: Iterable[Reading],
        missing: Iterable[tuple[str, str, int, str]],
        events: Iterable[Event],
        states: dict[str, str],
        dropped: list[dict[str, Any]],
    ) -> Held:
        slots: defaultdict[tuple[str, str], set[int]] = defaultdict(set)
        for r in readings:
            slots[(r.meter, r.quantity)].add(r.slot)
        return cls(
            episode,
            reason,
            {k: sorted(v) for k, v in slots.items()},
            list(missing),
            list(events),
            dict(states),
            dropped,
        )

    def account(
        self, stored: set[tuple[str, str, int]], at: float
    ) -> tuple[list[tuple[str, str, int, str]], list[Event], int]:
        """What the next start writes for this journal, given the (meter, quantity,
        slot) keys already stored: missing records (each held reading not stored, with
        the true reason, then the held missing records), the events (held ones, the
        overflow's loss and the held readings' loss) and how many readings were lost."""
        missing: list[tuple[str, str, int, str]] = []
        losses: list[dict[str, Any]] = []
        for (meter, quantity), slots in sorted(self.readings.items()):
            lost = [s for s in slots if (meter, quantity, s) not in stored]
            missing += [(meter, quantity, s, self.reason) for s in lost]
            if lost:
                losses.append(
                    {"meter": meter, "quantity": quantity, "count": len(lost),
                     "first_slot": lost[0], "last_slot": lost[-1], "slots": lost}
                )  # fmt: skip
        missing += [row for row in self.missing if row[:3] not in stored]
        events = list(self.events)
        if self.dropped:
            detail: dict[str, object] = {"reason": OVERFLOW_REASON, "losses": self.dropped}
            events.append(Event("loss", "critical", None, detail, at))
        if losses:
            detail = {"reason": self.reason, "losses": losses}
            events.append(Event("loss", "critical", None, detail, at))
        return missing, events, sum(int(loss["count"]) for loss in losses)

    def slot_keys(self) -> list[tuple[str, str, int]]:
        """Every (meter, quantity, slot) the journal names."""
        return [(m, q, s) for (m, q), slots in self.readings.items() for s in slots] + [
            row[:3] for row in self.missing
        ]

    def empty(self) -> bool:
        return not (self.readings or self.missing or self.events or self.states or self.dropped)

    def to_json(self) -> bytes:
        doc = {
            "episode": self.episode,
            "reason": self.reason,
            "readings": [[m, q, slots] for (m, q), slots in sorted(self.readings.items())],
            "missing": [list(row) for row in self.missing],
            "events": [[e.kind, e.severity, e.meter, e.detail, e.at] for e in self.events],
            "states": self.states,
            "dropped": self.dropped,
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Held:
        doc = json.loads(raw)
        return cls(
            episode=str(doc["episode"]),
            reason=str(doc["reason"]),
            readings={(str(m), str(q)): [int(s) for s in slots] for m, q, slots in doc["readings"]},
            missing=[(str(m), str(q), int(s), str(r)) for m, q, s, r in doc["missing"]],
            events=[Event(k, sv, m, d, float(at)) for k, sv, m, d, at in doc["events"]],
            states={str(k): str(v) for k, v in doc["states"].items()},
            dropped=list(doc["dropped"]),
        )


class HeldJournalError(Exception):
    """The journal exists but cannot be read (damaged, or not a journal)."""


class HeldJournal:
    """The journal file next to the store: ``<store>.held``."""

    def __init__(self, store_path: Path, max_pending: int) -> None:
        self.path = store_path.with_name(store_path.name + ".held")
        self.size = BASE_BYTES + BYTES_PER_READING * max_pending
        self.dirty = False  # something non-empty is on disk

    def allocate(self) -> None:
        """Give the file its full size now, while there is space (zeros: "nothing held"
        has length 0). An existing journal keeps its content; it is only grown."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, PRIVATE)
        try:
            os.fchmod(fd, PRIVATE)
            have = os.fstat(fd).st_size
            if have < self.size:
                os.posix_fallocate(fd, 0, self.size)
                os.fsync(fd)
        finally:
            os.close(fd)

    def write(self, held: Held) -> bool:
        """Overwrite the journal with ``held``; False (logged) when it cannot: the
        file is missing or too small and the disk too full to grow it."""
        body = zlib.compress(held.to_json(), 6)
        blob = _HEAD.pack(MAGIC, len(body), zlib.crc32(body)) + body
        if len(blob) > self.size:
            # Keep the counts, drop the slot lists: a loss with ranges is still honest.
            coarse = Held(held.episode, held.reason, states=held.states)
            coarse.dropped = held.dropped + [
                {"meter": m, "quantity": q, "count": len(s), "first_slot": s[0], "last_slot": s[-1]}
                for (m, q), s in sorted(held.readings.items())
            ]
            body = zlib.compress(coarse.to_json(), 9)
            blob = _HEAD.pack(MAGIC, len(body), zlib.crc32(body)) + body
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        except OSError as exc:
            log.error("cannot open the held journal %s: %s", self.path, exc)
            return False
        try:
            os.pwrite(fd, blob, 0)
            os.fdatasync(fd)
        except OSError as exc:
            log.error("cannot write the held journal %s: %s", self.path, exc)
            return False
        finally:
            os.close(fd)
        self.dirty = True
        return True

    def clear(self) -> None:
        """Mark the journal empty (a zero length); its blocks stay allocated."""
        with contextlib.suppress(FileNotFoundError):
            fd = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.pwrite(fd, _HEAD.pack(MAGIC, 0, 0), 0)
                os.fdatasync(fd)
            finally:
                os.close(fd)
        self.dirty = False

    def read(self) -> Held | None:
        """The held summary on disk, or None when nothing is held."""
        try:
            with self.path.open("rb") as fh:
                head = fh.read(_HEAD.size)
                if len(head) < _HEAD.size or head == bytes(_HEAD.size):
                    return None
                magic, length, crc = _HEAD.unpack(head)
                if magic != MAGIC:
                    raise HeldJournalError(f"{self.path}: bytes 0-7 are {magic!r}, not {MAGIC!r}")
                if length == 0:
                    return None
                body = fh.read(length)
        except FileNotFoundError:
            return None
        if len(body) != length or zlib.crc32(body) != crc:
            raise HeldJournalError(
                f"{self.path}: body of {length} bytes fails its CRC-32 (a torn write)"
            )
        try:
            return Held.from_json(zlib.decompress(body))
        except (ValueError, KeyError, TypeError, AttributeError, zlib.error) as exc:
            raise HeldJournalError(f"{self.path}: body does not decode: {exc}") from exc


def new_episode() -> str:
    return secrets.token_hex(8)
