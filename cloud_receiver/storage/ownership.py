"""Meter ownership: which concentrator a meter sits behind, from when — the one rule.

The archive (`cloud_receiver.applications.fleet.archive`) is the authority: each
assignment is a row ``(meter, effective_from, concentrator)`` in ``meter_owners``,
only ever added, so a meter that moves keeps its history ("from T it belongs to B").

The rule (`owner_at`), for a reading of ``meter`` at ``slot``:

- the owner is the concentrator of the meter's latest assignment with
  ``effective_from <= slot``;
- a slot before the meter's first assignment belongs to that first owner (the first
  assignment reaches back: a meter archived today may deliver yesterday's backlog, and
  nobody else may deliver it);
- a meter with no assignment at all is *unassigned*: not in the archive, or archived
  without a concentrator, or one whose readings came from several concentrators before
  ownership existed (migration 0006 leaves those for an operator to settle). Its
  readings are accepted from whichever concentrator delivers them; `archive owners
  --unassigned` lists such meters.

The ingest (`cloud_receiver.ingest.ownership`) refuses a reading whose concentrator is
not the owner at its slot; the archive push (`applications.fleet.archive_push`) sends a
concentrator the meters it owns.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, func, insert, select

from cloud_receiver.storage.backends import Upsert
from cloud_receiver.storage.schema import batches, events, meter_owners, meters, refused_latest

IN_CHUNK = 500  # meters per IN (...) list: under SQLite's 999 host parameters


@dataclass(frozen=True)
class Assignment:
    """From ``effective_from`` (unix time) on, ``meter`` belongs to ``concentrator``."""

    meter: str
    effective_from: int
    concentrator: str
    assigned_at: float = 0.0
    assigned_by: str = ""


def owner_at(history: Sequence[Assignment], slot: int) -> str | None:
    """The owner of a meter's ``slot`` under its ``history`` (sorted by
    ``effective_from``); None when the meter is unassigned. See the module docstring."""
    if not history:
        return None
    owner = history[0].concentrator
    for a in history:
        if a.effective_from > slot:
            break
        owner = a.concentrator
    return owner


def histories(conn: Connection, meter_names: Iterable[str]) -> dict[str, list[Assignment]]:
    """Each named meter's assignments, oldest first (meters without any are left out)."""
    names = sorted(set(meter_names))
    o = meter_owners.c
    out: dict[str, list[Assignment]] = {}
    for i in range(0, len(names), IN_CHUNK):
        query = (
            select(o.meter, o.effective_from, o.concentrator, o.assigned_at, o.assigned_by)
            .where(o.meter.in_(names[i : i + IN_CHUNK]))
            .order_by(o.meter, o.effective_from)
        )
        for r in conn.execute(query):
            out.setdefault(r[0], []).append(Assignment(r[0], int(r[1]), r[2], r[3], r[4]))
    return out


def all_histories(conn: Connection) -> dict[str, list[Assignment]]:
    o = meter_owners.c
    query = select(o.meter, o.effective_from, o.concentrator, o.assigned_at, o.assigned_by)
    out: dict[str, list[Assignment]] = {}
    for r in conn.execute(query.order_by(o.meter, o.effective_from)):
        out.setdefault(r[0], []).append(Assignment(r[0], int(r[1]), r[2], r[3], r[4]))
    return out


def owned_by(
    histories_: Mapping[str, Sequence[Assignment]], concentrator: str, at: int
) -> list[str]:
    """The meters ``concentrator`` owns at time ``at``, sorted."""
    return sorted(m for m, h in histories_.items() if owner_at(h, at) == concentrator)


def unassigned(conn: Connection) -> list[str]:
    """Archive meters with no assignment (their readings are not guarded)."""
    m, o = meters.c, meter_owners.c
    query = (
        select(m.meter)
        .where(m.meter.not_in(select(o.meter).distinct().scalar_subquery()))
        .order_by(m.meter)
    )
    return [r[0] for r in conn.execute(query)]


def assign(conn: Connection, changes: Sequence[Assignment]) -> int:
    """Add the assignments that change something, inside the caller's transaction:
    a meter already owned by the same concentrator at that time is left alone; an
    assignment at the same ``effective_from`` as an existing one is refused
    (`ValueError`: history is never rewritten). Returns the rows added."""
    current = histories(conn, (a.meter for a in changes))
    rows = []
    for a in changes:
        history = current.get(a.meter, [])
        if any(h.effective_from == a.effective_from for h in history):
            raise ValueError(
                f"meter {a.meter}: an assignment from {a.effective_from} exists already;"
                " assignments are never rewritten: give a later --effective time"
            )
        if history and owner_at(history, a.effective_from) == a.concentrator:
            continue  # no change
        rows.append(a)
        history.append(a)
        history.sort(key=lambda h: h.effective_from)
        current[a.meter] = history
    if rows:
        conn.execute(
            insert(meter_owners),
            [
                {"meter": a.meter, "effective_from": a.effective_from,
                 "concentrator": a.concentrator, "assigned_at": a.assigned_at,
                 "assigned_by": a.assigned_by}
                for a in rows
            ],
        )  # fmt: skip
    return len(rows)


def version(conn: Connection) -> int:
    """The ownership's version: the newest assignment's id (rows are only added, so it
    only grows), 0 when none. An archive pushed to a concentrator carries it."""
    return int(conn.execute(select(func.coalesce(func.max(meter_owners.c.id), 0))).scalar_one())


Row = tuple[str, str, int, str, str, float, str]  # meter, quantity, slot, value, unit, …


def refusal_text(concentrator: str, refused: Sequence[Row], owners: Mapping[str, str]) -> str:
    """The quarantine row's detail: how many readings, which meters, whose they are."""
    meter_names = sorted({r[0] for r in refused})
    shown = ", ".join(f"{m} (owner {owners.get(m, '?')})" for m in meter_names[:10])
    more = f" and {len(meter_names) - 10} more" if len(meter_names) > 10 else ""
    return f"{len(refused)} reading(s) for meters {concentrator} does not own: {shown}{more}"


def refusal_payload(refused: Sequence[Row]) -> bytes:
    """The refused readings as JSON rows (meter, quantity, slot, value, unit, read_at,
    source): what the quarantine keeps of them, never the ``readings`` table."""
    return json.dumps([list(r) for r in refused]).encode()


def record_alert(
    conn: Connection,
    *,
    concentrator: str,
    seq: int,
    refused: Sequence[Row],
    owners: Mapping[str, str],
    received_at: float,
) -> None:
    """The ``ownership_refused`` alert event naming the meters and their owners, inside
    the caller's transaction."""
    meter_names = sorted({r[0] for r in refused})
    detail = {
        "meters": meter_names,
        "owners": {m: owners[m] for m in meter_names if m in owners},
        "readings": len(refused),
        "seq": seq,
    }
    conn.execute(
        insert(events).values(
            concentrator=concentrator,
            seq=seq,
            kind="ownership_refused",
            severity="alert",
            meter=meter_names[0] if len(meter_names) == 1 else None,
            detail=detail,
            at=received_at,
        )
    )


def batch_stored(conn: Connection, concentrator: str, seq: int) -> bool:
    b = batches.c
    query = select(b.seq).where(b.concentrator == concentrator, b.seq == seq)
    return conn.execute(query).first() is not None


def remember_refused(
    conn: Connection, upsert: Upsert, concentrator: str, refused: Sequence[Row]
) -> None:
    """Keep the newest refused reading of each series (`schema.refused_latest`), inside
    the caller's transaction: what the sender's next batch may be coded against."""
    newest: dict[tuple[str, str], Row] = {}
    for row in refused:
        held = newest.get((row[0], row[1]))
        if held is None or row[2] > held[2]:
            newest[(row[0], row[1])] = row
    if not newest:
        return
    c = refused_latest.c
    stmt = upsert
    stmt = stmt.on_conflict_do_update(
        index_elements=[c.concentrator, c.meter, c.quantity],
        set_={"slot": stmt.excluded.slot, "value": stmt.excluded.value,
              "read_at": stmt.excluded.read_at},
        where=c.slot < stmt.excluded.slot,
    )  # fmt: skip
    conn.execute(
        stmt,
        [
            {
                "concentrator": concentrator,
                "meter": m,
                "quantity": q,
                "slot": slot,
                "value": value,
                "read_at": read_at,
            }
            for m, q, slot, value, _, read_at, _ in newest.values()
        ],
    )
