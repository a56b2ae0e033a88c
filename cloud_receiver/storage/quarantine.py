"""The quarantine, bounded: whatever arrives, it never holds more than its budget.

A refused message is evidence worth keeping, but an attacker (or a broken device) sends
as many and as large as it likes: the issue's single 50 MB payload grew the database by
105 MB. So each quarantined message is stored under a `Budget`:

- its payload is cut to a prefix (``prefix_bytes``; ``size`` keeps the length as it
  arrived), its topic and detail to a bounded length, and it is *charged* the bytes it
  occupies (payload kept + topic + detail);
- each sender (the concentrator the topic names; "" when none) may hold at most
  ``sender_rows`` rows and ``sender_bytes`` bytes, and the quarantine as a whole
  ``total_rows`` and ``total_bytes``: before a row goes in, the oldest rows (of that
  sender first, then of anyone) are evicted until it fits;
- every count is kept per sender in ``quarantine_senders`` (held now, ever kept,
  truncated, evicted and their bytes) and the totals in ``quarantine_totals``, whose one
  row each insert locks first: two receivers on one database never both squeeze in.

The rate limit per sender is the ingest's (`cloud_receiver.ingest.ratelimit`): messages
beyond it are counted and never reach the database at all.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, func, insert, or_, select, update

from cloud_receiver.storage.schema import quarantine, quarantine_senders, quarantine_totals

TOPIC_CHARS = 256  # an MQTT topic may be 65,535 bytes; ours are far shorter
DETAIL_CHARS = 1024
EVICT_CHUNK = 200  # rows read per round while making room
MiB = 1 << 20


@dataclass(frozen=True)
class Budget:
    """How much the quarantine may hold (see the module)."""

    total_bytes: int = 64 * MiB
    total_rows: int = 10_000
    sender_bytes: int = 8 * MiB
    sender_rows: int = 1_000
    prefix_bytes: int = 4096

    def __post_init__(self) -> None:
        row_max = self.prefix_bytes + 4 * (TOPIC_CHARS + DETAIL_CHARS)  # UTF-8: 4 bytes/char
        for name, value in vars(self).items():
            if value < 1:
                raise ValueError(f"quarantine {name.replace('_', ' ')} must be at least 1")
        if self.sender_bytes < row_max:
            raise ValueError(
                f"quarantine sender bytes {self.sender_bytes} cannot hold one message:"
                f" at least {row_max} (the prefix {self.prefix_bytes} plus topic and detail)"
            )
        if self.total_bytes < self.sender_bytes:
            raise ValueError(
                f"quarantine total bytes {self.total_bytes} is below the sender bytes"
                f" {self.sender_bytes}"
            )
        if self.total_rows < self.sender_rows:
            raise ValueError(
                f"quarantine total rows {self.total_rows} is below the sender rows"
                f" {self.sender_rows}"
            )


@dataclass(frozen=True)
class SenderStats:
    """One sender's quarantine: held now, and ever kept, truncated and evicted."""

    sender: str  # "" when the topic named no concentrator
    rows: int
    bytes: int
    kept: int
    truncated: int
    evicted: int
    evicted_bytes: int


def _clip(text: str, chars: int) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def store(
    conn: Connection,
    budget: Budget,
    *,
    topic: str,
    concentrator: str | None,
    seq: int | None,
    reason: str,
    detail: str,
    payload: bytes,
    received_at: float,
) -> int:
    """Keep one refused message within ``budget``; how many old rows made room for it.
    Runs in the caller's transaction."""
    kept = payload[: budget.prefix_bytes]
    topic, detail = _clip(topic, TOPIC_CHARS), _clip(detail, DETAIL_CHARS)
    charged = len(kept) + len(topic.encode()) + len(detail.encode())
    sender = concentrator or ""
    t = quarantine_totals.c
    # Lock the totals first: every quarantined message passes here, one at a time.
    conn.execute(update(quarantine_totals).where(t.id == 1).values(rows=t.rows))
    _ensure_sender(conn, sender)
    evicted = _evict(conn, budget.sender_rows, budget.sender_bytes, charged, sender)
    evicted += _evict(conn, budget.total_rows, budget.total_bytes, charged, None)
    conn.execute(
        insert(quarantine).values(
            received_at=received_at, topic=topic, concentrator=concentrator, seq=seq,
            reason=reason, detail=detail, payload=kept, size=len(payload), charged=charged,
        )
    )  # fmt: skip
    s = quarantine_senders.c
    conn.execute(
        update(quarantine_senders)
        .where(s.sender == sender)
        .values(
            rows=s.rows + 1,
            bytes=s.bytes + charged,
            kept=s.kept + 1,
            truncated=s.truncated + (1 if len(kept) < len(payload) else 0),
        )
    )
    conn.execute(
        update(quarantine_totals).where(t.id == 1).values(rows=t.rows + 1, bytes=t.bytes + charged)
    )
    return evicted


def _ensure_sender(conn: Connection, sender: str) -> None:
    s = quarantine_senders.c
    if conn.execute(select(s.sender).where(s.sender == sender)).first() is None:
        conn.execute(
            insert(quarantine_senders).values(
                sender=sender, rows=0, bytes=0, kept=0, truncated=0, evicted=0, evicted_bytes=0
            )
        )


def _evict(
    conn: Connection, max_rows: int, max_bytes: int, incoming: int, sender: str | None
) -> int:
    """Delete the oldest rows (of ``sender``, or of anyone when None) until one more row
    of ``incoming`` bytes fits under ``max_rows`` and ``max_bytes``; how many."""
    if sender is None:
        t = quarantine_totals.c
        rows, held = conn.execute(select(t.rows, t.bytes).where(t.id == 1)).one()
    else:
        s = quarantine_senders.c
        rows, held = conn.execute(select(s.rows, s.bytes).where(s.sender == sender)).one()
    rows, held = int(rows), int(held)
    q = quarantine.c
    evicted = 0
    while rows + 1 > max_rows or held + incoming > max_bytes:
        oldest = select(q.id, q.concentrator, q.charged).order_by(q.id).limit(EVICT_CHUNK)
        if sender is not None:
            owner = (
                or_(q.concentrator.is_(None), q.concentrator == "")
                if sender == ""
                else q.concentrator == sender
            )
            oldest = oldest.where(owner)
        victims: list[tuple[int, str, int]] = []
        for row in conn.execute(oldest):
            if not (rows + 1 > max_rows or held + incoming > max_bytes):
                break
            victims.append((int(row[0]), row[1] or "", int(row[2])))
            rows, held = rows - 1, held - int(row[2])
        if not victims:
            break  # the counts disagree with the rows: nothing left to evict
        _delete(conn, victims)
        evicted += len(victims)
    return evicted


def _delete(conn: Connection, victims: list[tuple[int, str, int]]) -> None:
    q, s, t = quarantine.c, quarantine_senders.c, quarantine_totals.c
    conn.execute(quarantine.delete().where(q.id.in_([v[0] for v in victims])))
    by_sender: dict[str, tuple[int, int]] = {}
    for _, who, charged in victims:
        n, b = by_sender.get(who, (0, 0))
        by_sender[who] = (n + 1, b + charged)
    for who, (n, b) in by_sender.items():
        conn.execute(
            update(quarantine_senders)
            .where(s.sender == who)
            .values(
                rows=s.rows - n,
                bytes=s.bytes - b,
                evicted=s.evicted + n,
                evicted_bytes=s.evicted_bytes + b,
            )
        )
    total_n = len(victims)
    total_b = sum(v[2] for v in victims)
    conn.execute(
        update(quarantine_totals)
        .where(t.id == 1)
        .values(rows=t.rows - total_n, bytes=t.bytes - total_b)
    )


def senders(conn: Connection) -> list[SenderStats]:
    s = quarantine_senders.c
    rows = conn.execute(
        select(s.sender, s.rows, s.bytes, s.kept, s.truncated, s.evicted, s.evicted_bytes).order_by(
            s.sender
        )
    ).all()
    return [SenderStats(r[0], *(int(v) for v in r[1:])) for r in rows]


def held(conn: Connection) -> tuple[int, int]:
    """(rows, bytes) the quarantine holds now, counted from the rows themselves."""
    q = quarantine.c
    rows, charged = conn.execute(select(func.count(), func.coalesce(func.sum(q.charged), 0))).one()
    return int(rows), int(charged)
