"""The tamper-evident audit log: a hash chain in the database.

Entry ``n`` stores ``prev_hash`` (entry ``n - 1``'s hash; 64 zeros for entry 1) and its
own ``hash``: the SHA-256, in hex, of the canonical encoding of

    [seq, prev_hash, at, principal, origin, kind, action, target, outcome, detail,
     session, signature]

— a JSON array, UTF-8, no whitespace (``separators=(",", ":")``, ``ensure_ascii=False``),
``at`` as Python's shortest round-trip float, ``detail`` the stored canonical JSON text
itself, ``signature`` in hex (or null). Editing any field of an entry, deleting one, or
reordering them breaks the chain at that entry; `verify` says which. The ``audit_head``
row holds the last entry's number and hash, so deleting the newest entries is seen
too. Appending locks that row (``SELECT … FOR UPDATE``; SQLite's write transaction
locks the file), so entries are numbered without gaps, one writer at a time, on both
backends.

An operator's entry is also signed by the operator's session key over `statement`
(the fields without the chain), so an entry written straight into the database cannot
be passed off as theirs; `verify` checks those signatures against the sessions table.

What a chain cannot show by itself: someone who rewrites every entry from some point
on, and the head, leaves a consistent chain. Keep the head elsewhere (the service logs
it; backups record it) and check it with ``verify(…, anchor=(seq, hash))``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from sqlalchemy import Connection, insert, select, update

from cloud_receiver.storage.schema import audit_head, audit_log, sessions

GENESIS = "0" * 64
STATEMENT_DOMAIN = b"meterflow audit statement v1\x00"
MAX_PROBLEMS = 100  # verify reports at most this many (a wholesale rewrite is one story)


def canonical(value: Any) -> str:
    """The one JSON text of ``value``: sorted keys, no whitespace, UTF-8 as is."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Entry:
    seq: int
    at: float
    principal: str
    origin: str
    kind: str
    action: str
    target: str
    outcome: str
    detail: str  # canonical JSON text
    session: str | None
    signature: bytes | None
    prev_hash: str
    hash: str

    def detail_doc(self) -> dict[str, Any]:
        doc: dict[str, Any] = json.loads(self.detail)
        return doc

    def as_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": self.at,
            "principal": self.principal,
            "origin": self.origin,
            "kind": self.kind,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "detail": self.detail_doc(),
            "session": self.session,
            "signature": None if self.signature is None else self.signature.hex(),
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


def statement(
    *,
    at: float,
    principal: str,
    origin: str,
    kind: str,
    action: str,
    target: str,
    outcome: str,
    detail: str,
    session: str | None,
) -> bytes:
    """What an operator's session key signs for an entry (everything but the chain)."""
    fields = [float(at), principal, origin, kind, action, target, outcome, detail, session]
    return STATEMENT_DOMAIN + canonical(fields).encode()


def entry_hash(
    seq: int,
    prev_hash: str,
    *,
    at: float,
    principal: str,
    origin: str,
    kind: str,
    action: str,
    target: str,
    outcome: str,
    detail: str,
    session: str | None,
    signature: bytes | None,
) -> str:
    fields = [
        seq,
        prev_hash,
        float(at),
        principal,
        origin,
        kind,
        action,
        target,
        outcome,
        detail,
        session,
        None if signature is None else signature.hex(),
    ]
    return hashlib.sha256(canonical(fields).encode()).hexdigest()


def _hash_of(e: Entry) -> str:
    return entry_hash(
        e.seq,
        e.prev_hash,
        at=e.at,
        principal=e.principal,
        origin=e.origin,
        kind=e.kind,
        action=e.action,
        target=e.target,
        outcome=e.outcome,
        detail=e.detail,
        session=e.session,
        signature=e.signature,
    )


def append(
    conn: Connection,
    *,
    at: float,
    principal: str,
    origin: str,
    kind: str,
    action: str,
    target: str,
    outcome: str,
    detail: str,
    session: str | None = None,
    signature: bytes | None = None,
) -> Entry:
    """Add an entry at the end of the chain, inside the caller's transaction."""
    head = conn.execute(
        select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
    ).first()
    if head is None:  # a head row lost: start it again (verify reports what is missing)
        conn.execute(insert(audit_head).values(id=1, seq=0, hash=GENESIS))
        seq, prev = 0, GENESIS
    else:
        seq, prev = int(head[0]), str(head[1])
    seq += 1
    fields: dict[str, Any] = {
        "at": float(at),
        "principal": principal,
        "origin": origin,
        "kind": kind,
        "action": action,
        "target": target,
        "outcome": outcome,
        "detail": detail,
        "session": session,
        "signature": signature,
    }
    digest = entry_hash(seq, prev, **fields)
    conn.execute(insert(audit_log).values(seq=seq, prev_hash=prev, hash=digest, **fields))
    conn.execute(update(audit_head).where(audit_head.c.id == 1).values(seq=seq, hash=digest))
    return Entry(seq=seq, prev_hash=prev, hash=digest, **fields)


_COLUMNS = (
    audit_log.c.seq,
    audit_log.c.at,
    audit_log.c.principal,
    audit_log.c.origin,
    audit_log.c.kind,
    audit_log.c.action,
    audit_log.c.target,
    audit_log.c.outcome,
    audit_log.c.detail,
    audit_log.c.session,
    audit_log.c.signature,
    audit_log.c.prev_hash,
    audit_log.c.hash,
)


def _entry(r: Sequence[Any]) -> Entry:
    return Entry(
        int(r[0]),
        float(r[1]),
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        r[7],
        r[8],
        r[9],
        None if r[10] is None else bytes(r[10]),
        r[11],
        r[12],
    )


def head(conn: Connection) -> tuple[int, str]:
    """(last entry's number, its hash); (0, 64 zeros) for an empty log."""
    row = conn.execute(select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1))
    got = row.first()
    return (0, GENESIS) if got is None else (int(got[0]), str(got[1]))


def entries(
    conn: Connection,
    *,
    since: float | None = None,
    until: float | None = None,
    principal: str | None = None,
    kinds: Sequence[str] = (),
    target: str | None = None,
    after_seq: int | None = None,
    limit: int | None = None,
    newest_first: bool = False,
) -> list[Entry]:
    a = audit_log.c
    query = select(*_COLUMNS)
    if since is not None:
        query = query.where(a.at >= since)
    if until is not None:
        query = query.where(a.at < until)
    if principal is not None:
        query = query.where(a.principal == principal)
    if kinds:
        query = query.where(a.kind.in_(list(kinds)))
    if target is not None:
        query = query.where(a.target == target)
    if after_seq is not None:
        query = query.where(a.seq > after_seq)
    query = query.order_by(a.seq.desc() if newest_first else a.seq)
    if limit is not None:
        query = query.limit(limit)
    return [_entry(r) for r in conn.execute(query).all()]


@dataclass
class ChainReport:
    """What `verify` found: the entries it read, the head, and each problem with the
    entry it concerns (empty: the chain is intact)."""

    entries: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS
    problems: list[tuple[int, str]] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "intact": self.intact,
            "entries": self.entries,
            "head": {"seq": self.head_seq, "hash": self.head_hash},
            "problems": [{"seq": s, "problem": p} for s, p in self.problems],
        }


def verify(conn: Connection, anchor: tuple[int, str] | None = None) -> ChainReport:
    """Walk the chain from entry 1 to the head; report every break with its entry.

    Reads the head first and then the entries up to it, so an entry appended meanwhile
    is no false alarm. ``anchor``: an (entry, hash) recorded earlier, checked too.
    """
    head_seq, head_hash = head(conn)
    report = ChainReport(head_seq=head_seq, head_hash=head_hash)
    problems = report.problems

    def problem(seq: int, text: str) -> None:
        if len(problems) < MAX_PROBLEMS:
            problems.append((seq, text))

    keys = {
        str(r[0]): (bytes(r[1]), float(r[2]), float(r[3]))
        for r in conn.execute(
            select(
                sessions.c.id, sessions.c.public_key, sessions.c.created_at, sessions.c.expires_at
            )
        ).all()
    }
    expected, prev = 1, GENESIS
    by_seq: dict[int, str] = {}
    for e in entries(conn, after_seq=None):
        if e.seq > head_seq:
            break
        report.entries += 1
        if e.seq != expected:
            gap = (
                f"entry {expected}" if e.seq == expected + 1 else f"entries {expected}-{e.seq - 1}"
            )
            problem(expected, f"{gap} missing (deleted)")
        elif e.prev_hash != prev and e.seq > 1:
            problem(
                e.seq - 1,
                f"entry {e.seq - 1} was altered or replaced: entry {e.seq}"
                " recorded a different hash for it",
            )
        elif e.prev_hash != prev:
            problem(1, "entry 1 does not start the chain (altered)")
        if _hash_of(e) != e.hash:
            problem(e.seq, f"entry {e.seq} was altered: its content does not match its hash")
        elif e.session is not None:
            why = _signature_problem(e, keys)
            if why:
                problem(e.seq, f"entry {e.seq}: {why}")
        by_seq[e.seq] = e.hash
        prev, expected = e.hash, e.seq + 1
    if expected <= head_seq:
        gap = f"entry {head_seq}" if expected == head_seq else f"entries {expected}-{head_seq}"
        problem(expected, f"{gap} missing (deleted; the head says {head_seq} entries)")
    elif head_seq and by_seq.get(head_seq) not in (None, head_hash):
        problem(
            head_seq,
            f"entry {head_seq} was altered or replaced: the chain head recorded"
            " a different hash for it",
        )
    if anchor is not None:
        seq, digest = anchor
        if seq > head_seq:
            problem(seq, f"anchor: entry {seq} is beyond the head ({head_seq}): entries deleted")
        elif by_seq.get(seq) != digest:
            problem(
                seq,
                f"anchor: entry {seq} no longer has the hash {digest[:16]}… recorded"
                " for it (the log was rewritten from there on)",
            )
    return report


def _signature_problem(e: Entry, keys: dict[str, tuple[bytes, float, float]]) -> str | None:
    assert e.session is not None
    known = keys.get(e.session)
    if known is None:
        return f"signed by session {e.session[:8]}…, which the database does not know"
    public, created, expires = known
    if e.signature is None:
        return f"names session {e.session[:8]}… but is not signed (forged)"
    if not created - 1 <= e.at <= expires + 1:
        return f"dated outside the lifetime of its session {e.session[:8]}… (forged)"
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(
            e.signature,
            statement(
                at=e.at,
                principal=e.principal,
                origin=e.origin,
                kind=e.kind,
                action=e.action,
                target=e.target,
                outcome=e.outcome,
                detail=e.detail,
                session=e.session,
            ),
        )
    except (InvalidSignature, ValueError):
        return f"its signature does not verify with session {e.session[:8]}… (forged or edited)"
    return None
