"""One supply state per meter: why its relay is open, and the one rule that moves it.

Four reasons can keep a meter's supply off, in this precedence (the first active one is
the *cause* `show` names, the one to deal with first):

1. ``prepayment`` — the account ran out (`applications.prepay`); only a top-up clears it;
2. ``manual`` — an operator's order (``supply set``, ``command relay-open``);
3. ``demand_response`` — a curtailment, active only inside its window (`applications.dr`);
4. ``maintenance`` — field work on the meter or its line.

The rule (`relay_for`): the relay is open while any reason is active and is closed —
reconnected — only when none remains. Each source sets and clears only its own reason,
so a top-up clears only ``prepayment``, a DR restoration only ``demand_response``, and
neither reconnects a supply another reason holds open. Every relay command of
prepayment, demand response and operators' supply orders is issued here, from the
change of the active set: open when it stops being empty, close when it becomes empty.

Demand response sends its two commands ahead (`curtail`: the concentrator holds them
until due, so a slow link cannot delay a curtailment). A held command cannot be
recalled, so when another reason is set while a DR reconnection is still to come, the
reconnection is withdrawn if it was not published yet; if the concentrator already
holds it, a ``relay_open`` due `OVERRIDE_AFTER_S` after it follows (the supply may come
back for that second). Should that other reason be cleared before the window ends, the
reconnection is issued again, due `RESTORE_AFTER_S` after the window.

Every change is a row of ``supply_history`` (what changed, by whom, the reasons after).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, delete, insert, select, update

from cloud_receiver.applications.fleet import commands
from cloud_receiver.errors import EXIT_USAGE, NotFound, ReceiverError
from cloud_receiver.storage import CommandRecord, Storage
from cloud_receiver.storage.schema import command_log, supply, supply_history, supply_reasons
from cloud_receiver.storage.schema import commands as commands_table

PREPAYMENT = "prepayment"
MANUAL = "manual"
DEMAND_RESPONSE = "demand_response"
MAINTENANCE = "maintenance"
PRECEDENCE = (PREPAYMENT, MANUAL, DEMAND_RESPONSE, MAINTENANCE)
OPEN, CLOSED = "open", "closed"
RELAY_VALID_S = 600.0  # an immediate relay command may take effect up to this late
CLOSE_VALID_S = 3600.0  # a DR reconnection may run up to an hour after its window
OVERRIDE_AFTER_S = 1.0  # a relay_open after a held DR reconnection that must not stand
RESTORE_AFTER_S = 2.0  # a DR reconnection issued again: after any override above

_R, _S, _H = supply_reasons.c, supply.c, supply_history.c


class SupplyError(ReceiverError, ValueError):
    """Bad input: an unknown reason, a malformed meter, a reason set by the wrong path."""

    exit_code = EXIT_USAGE


class UnknownSupply(NotFound, SupplyError):
    """No supply state for that meter (nothing ever opened its relay)."""


def relay_for(reasons: Iterable[str]) -> str:
    """The rule: open while any reason remains, closed only when none does."""
    return OPEN if any(True for _ in reasons) else CLOSED


def ordered(reasons: Iterable[str]) -> list[str]:
    """``reasons`` in precedence order (the cause first)."""
    return sorted(set(reasons), key=PRECEDENCE.index)


def check_reason(reason: str) -> str:
    if reason not in PRECEDENCE:
        raise SupplyError(f"reason {reason!r}: expected one of {', '.join(PRECEDENCE)}")
    return reason


def check_meter(meter: str) -> str:
    if len(meter) != 12 or not meter.isdigit():
        raise SupplyError(f"meter {meter!r}: expected a 12-digit address")
    return meter


@dataclass(frozen=True)
class Reason:
    reason: str
    ref: str  # the account, DR event or request that set it
    since: float
    until: float | None  # only a DR reason ends by itself
    by: str
    set_at: float
    detail: dict[str, Any]

    def active(self, now: float) -> bool:
        return self.since <= now and (self.until is None or now < self.until)

    def as_dict(self) -> dict[str, Any]:
        return {"reason": self.reason, "ref": self.ref, "since": self.since,
                "until": self.until, "by": self.by, "set_at": self.set_at,
                "detail": self.detail}  # fmt: skip


@dataclass(frozen=True)
class Supply:
    meter: str
    concentrator: str
    relay: str  # the position last commanded for now
    updated_at: float
    reasons: tuple[Reason, ...]  # in precedence order, active or to come

    def active(self, now: float) -> list[str]:
        return ordered(r.reason for r in self.reasons if r.active(now))

    def cause(self, now: float) -> str | None:
        names = self.active(now)
        return names[0] if names else None

    def reason(self, name: str) -> Reason | None:
        return next((r for r in self.reasons if r.reason == name), None)

    def as_dict(self, now: float) -> dict[str, Any]:
        active = self.active(now)
        return {"meter": self.meter, "concentrator": self.concentrator,
                "relay": relay_for(active), "commanded": self.relay, "cause": self.cause(now),
                "reasons": [r.as_dict() | {"active": r.active(now)} for r in self.reasons],
                "updated_at": self.updated_at}  # fmt: skip


@dataclass(frozen=True)
class Change:
    """What a set or clear did: the state after, and the relay command it sent now
    (None: the relay already was where the reasons want it)."""

    supply: Supply
    command: CommandRecord | None
    others: tuple[CommandRecord, ...] = field(default=())  # DR withdrawal/restoration

    def holding(self, now: float) -> list[str]:
        """The active reasons keeping the relay open after the change."""
        return self.supply.active(now)


# ---------------------------------------------------------------------- reading
def _load(tx: Connection, meter: str, lock: bool = False) -> Supply | None:
    query = select(_S.meter, _S.concentrator, _S.relay, _S.updated_at).where(_S.meter == meter)
    row = tx.execute(query.with_for_update() if lock else query).first()
    if row is None:
        return None
    rows = tx.execute(
        select(_R.reason, _R.ref, _R.since, _R.until, _R.set_by, _R.set_at, _R.detail).where(
            _R.meter == meter
        )
    ).all()
    reasons = [
        Reason(r[0], r[1], float(r[2]), None if r[3] is None else float(r[3]), r[4],
               float(r[5]), json.loads(r[6]))
        for r in rows
    ]  # fmt: skip
    reasons.sort(key=lambda r: PRECEDENCE.index(r.reason))
    return Supply(row[0], row[1], row[2], float(row[3]), tuple(reasons))


def get(storage: Storage, meter: str) -> Supply:
    check_meter(meter)
    with storage.transaction() as tx:
        found = _load(tx, meter)
    if found is None:
        raise UnknownSupply(f"meter {meter}: no supply state (no reason was ever set)")
    return found


def held_open(storage: Storage, meters: Sequence[str], now: float) -> dict[str, list[str]]:
    """{meter: its active reasons} for those of ``meters`` something holds open."""
    with storage.transaction() as tx:
        rows = tx.execute(
            select(_R.meter, _R.reason, _R.since, _R.until).where(_R.meter.in_(list(meters)))
        ).all()
    out: dict[str, list[str]] = {}
    for meter, reason, since, until in rows:
        if float(since) <= now and (until is None or now < float(until)):
            out.setdefault(meter, []).append(reason)
    return {m: ordered(r) for m, r in out.items()}


def check_close(storage: Storage, meters: Sequence[str], at: float) -> None:
    """An operator's relay-close may lift only the operators' own order (``manual``),
    never another reason: `SupplyError` naming the meters and what holds them."""
    held = held_open(storage, meters, at)
    others = {m: [r for r in rs if r != MANUAL] for m, rs in held.items()}
    named = "; ".join(f"{m}: {', '.join(rs)}" for m, rs in sorted(others.items()) if rs)
    if named:
        raise SupplyError(
            f"relay-close refused: the supply is held off by another reason ({named});"
            " `cloud-receiver supply show METER` says which"
        )


def meters_with(storage: Storage, reason: str) -> set[str]:
    """The meters that have ``reason`` (active or to come)."""
    with storage.transaction() as tx:
        rows = tx.execute(select(_R.meter).where(_R.reason == check_reason(reason))).all()
    return {r[0] for r in rows}


def history(storage: Storage, meter: str) -> list[dict[str, Any]]:
    """Every change of the meter's supply state, oldest first."""
    check_meter(meter)
    with storage.transaction() as tx:
        rows = tx.execute(
            select(_H.at, _H.change, _H.reason, _H.by, _H.reasons_after, _H.detail)
            .where(_H.meter == meter)
            .order_by(_H.id)
        ).all()
    return [{"at": float(r[0]), "change": r[1], "reason": r[2], "by": r[3],
             "reasons_after": json.loads(r[4]), "detail": json.loads(r[5])}
            for r in rows]  # fmt: skip


# ---------------------------------------------------------------------- writing
def _history(
    tx: Connection, meter: str, at: float, change: str, reason: str | None, by: str,
    after: Sequence[str], detail: dict[str, Any],
) -> None:  # fmt: skip
    tx.execute(insert(supply_history).values(
        meter=meter, at=at, change=change, reason=reason, by=by,
        reasons_after=json.dumps(list(after)), detail=json.dumps(detail)))  # fmt: skip


def _row(tx: Connection, meter: str, concentrator: str, now: float) -> Supply:
    found = _load(tx, meter, lock=True)
    if found is None:
        tx.execute(insert(supply).values(meter=meter, concentrator=concentrator, relay=CLOSED,
                                         updated_at=now))  # fmt: skip
        return Supply(meter, concentrator, CLOSED, now, ())
    if concentrator and concentrator != found.concentrator:
        tx.execute(update(supply).where(_S.meter == meter).values(concentrator=concentrator))
        return Supply(meter, concentrator, found.relay, found.updated_at, found.reasons)
    return found


def _prune(tx: Connection, sup: Supply, now: float) -> Supply:
    """Drop DR reasons whose window is over (their reconnection was sent ahead)."""
    over = [r for r in sup.reasons if r.until is not None and r.until <= now]
    if not over:
        return sup
    left = tuple(r for r in sup.reasons if r not in over)
    for r in over:
        tx.execute(delete(supply_reasons).where(_R.meter == sup.meter, _R.reason == r.reason))
        _history(tx, sup.meter, now, "clear", r.reason, "window-end",
                 [x.reason for x in left], {"ref": r.ref, "until": r.until})  # fmt: skip
    return Supply(sup.meter, sup.concentrator, sup.relay, sup.updated_at, left)


def _issue(
    storage: Storage, key: Ed25519PrivateKey, sup: Supply, action: str, by: str, now: float,
    not_before: float | None = None, valid_for_s: float = RELAY_VALID_S,
) -> CommandRecord:  # fmt: skip
    return commands.issue(storage, key, concentrator=sup.concentrator, action=action,
                          meters=[sup.meter], not_before=not_before, valid_for_s=valid_for_s,
                          issued_by=by, now=now)  # fmt: skip


def _commanded(storage: Storage, sup: Supply, cmd: CommandRecord | None, now: float) -> None:
    """Note the immediate command just issued (its position, a history row)."""
    if cmd is None:
        return
    relay = OPEN if cmd.action == "relay_open" else CLOSED
    with storage.transaction() as tx:
        tx.execute(update(supply).where(_S.meter == sup.meter).values(relay=relay, updated_at=now))
        _history(tx, sup.meter, now, "command", None, cmd.issued_by,
                     [r.reason for r in sup.reasons], {"action": cmd.action, "command": cmd.id,
                                                       "not_before": cmd.not_before})  # fmt: skip


def set_reason(
    storage: Storage,
    key: Ed25519PrivateKey | None,
    *,
    meter: str,
    concentrator: str,
    reason: str,
    by: str,
    now: float,
    ref: str = "",
    resend: bool = False,
    send: bool = True,
) -> Change:
    """Add ``reason`` (open-ended; not ``demand_response``: see `curtail`). A relay_open
    goes out when no reason held the relay open before (or ``resend``: the caller's
    last one failed); ``send=False`` records an order whose command the caller sends."""
    check_meter(meter)
    if check_reason(reason) == DEMAND_RESPONSE:
        raise SupplyError("a demand-response reason is set by its event (`dr event`)")
    with storage.transaction() as tx:
        sup = _prune(tx, _row(tx, meter, concentrator, now), now)
        before = sup.active(now)
        if sup.reason(reason) is None:
            tx.execute(insert(supply_reasons).values(
                meter=meter, reason=reason, ref=ref, since=now, until=None, set_by=by,
                set_at=now, detail="{}"))  # fmt: skip
            after = ordered([*(r.reason for r in sup.reasons), reason])
            _history(tx, meter, now, "set", reason, by, after, {"ref": ref})
            tx.execute(update(supply).where(_S.meter == meter).values(updated_at=now))
        loaded = _load(tx, meter)
    assert loaded is not None
    sup = loaded
    cmd = None
    if send and key is not None and (relay_for(before) == CLOSED or resend):
        cmd = _issue(storage, key, sup, "relay_open", by, now)
    _commanded(storage, sup, cmd, now)
    others = _hold_dr_open(storage, key, sup, reason, by, now) if key is not None else ()
    return Change(get(storage, meter), cmd, others)


def clear_reason(
    storage: Storage,
    key: Ed25519PrivateKey | None,
    *,
    meter: str,
    reason: str,
    by: str,
    now: float,
    resend: bool = False,
    send: bool = True,
) -> Change:
    """Remove ``reason``; a relay_close goes out only when no other reason remains
    active (or ``resend`` then: the caller's last one failed)."""
    check_meter(meter)
    check_reason(reason)
    with storage.transaction() as tx:
        found = _load(tx, meter, lock=True)
        if found is None:
            raise UnknownSupply(f"meter {meter}: no supply state (no reason was ever set)")
        sup = _prune(tx, found, now)
        before = sup.active(now)
        if sup.reason(reason) is not None:
            tx.execute(delete(supply_reasons).where(_R.meter == meter, _R.reason == reason))
            left = [r.reason for r in sup.reasons if r.reason != reason]
            _history(tx, meter, now, "clear", reason, by, left, {})
            tx.execute(update(supply).where(_S.meter == meter).values(updated_at=now))
            changed = True
        else:
            changed = False
        loaded = _load(tx, meter)
    assert loaded is not None
    sup = loaded
    after = sup.active(now)
    cmd = None
    wants_close = relay_for(after) == CLOSED
    if send and key is not None and wants_close and ((changed and before) or resend):
        cmd = _issue(storage, key, sup, "relay_close", by, now)
    _commanded(storage, sup, cmd, now)
    others = _restore_dr_close(storage, key, sup, by, now) if key is not None else ()
    return Change(get(storage, meter), cmd, others)


# ---------------------------------------------------------------------- demand response
def curtail(
    storage: Storage,
    key: Ed25519PrivateKey,
    *,
    meter: str,
    concentrator: str,
    start: float,
    end: float,
    ref: str,
    by: str,
    now: float,
) -> tuple[CommandRecord, CommandRecord] | None:
    """Set the ``demand_response`` reason for ``start``..``end`` and send its relay_open
    (due at the start) and relay_close (due at the end) ahead; None, and nothing sent,
    when another reason already holds the meter open (its restoration must not
    reconnect it)."""
    check_meter(meter)
    with storage.transaction() as tx:
        sup = _prune(tx, _row(tx, meter, concentrator, now), now)
        others = [r.reason for r in sup.reasons if r.reason != DEMAND_RESPONSE]
        if others:
            return None
        tx.execute(delete(supply_reasons).where(_R.meter == meter, _R.reason == DEMAND_RESPONSE))
        tx.execute(insert(supply_reasons).values(
            meter=meter, reason=DEMAND_RESPONSE, ref=ref, since=start, until=end, set_by=by,
            set_at=now, detail="{}"))  # fmt: skip
        _history(tx, meter, now, "set", DEMAND_RESPONSE, by, [DEMAND_RESPONSE],
                 {"ref": ref, "since": start, "until": end})  # fmt: skip
        loaded = _load(tx, meter)
    assert loaded is not None
    sup = loaded
    cut = _issue(storage, key, sup, "relay_open", by, now, start, end - start)
    back = _issue(storage, key, sup, "relay_close", by, now, end, CLOSE_VALID_S)
    with storage.transaction() as tx:
        _note_dr(tx, meter, {"open": cut.id, "close": back.id, "close_state": "scheduled"})
        for c in (cut, back):
            _history(tx, meter, now, "command", DEMAND_RESPONSE, by, [DEMAND_RESPONSE],
                     {"action": c.action, "command": c.id, "not_before": c.not_before})  # fmt: skip
    return cut, back


def _note_dr(tx: Connection, meter: str, detail: dict[str, Any]) -> None:
    tx.execute(update(supply_reasons)
               .where(_R.meter == meter, _R.reason == DEMAND_RESPONSE)
               .values(detail=json.dumps(detail)))  # fmt: skip


def _hold_dr_open(
    storage: Storage, key: Ed25519PrivateKey, sup: Supply, reason: str, by: str, now: float
) -> tuple[CommandRecord, ...]:
    """Another reason was set: the DR reconnection to come must not stand."""
    dr = sup.reason(DEMAND_RESPONSE)
    if dr is None or dr.detail.get("close_state") not in ("scheduled", "restored"):
        return ()
    close_id = str(dr.detail["close"])
    why = {"reason": f"withdrawn: supply held open by {reason}"}
    with storage.transaction() as tx:
        withdrawn = tx.execute(
            update(commands_table)
            .where(commands_table.c.id == close_id, commands_table.c.status == "issued")
            .values(status="expired", result=json.dumps(why), updated_at=now)
            .returning(commands_table.c.id)
        ).first()
        if withdrawn is not None:
            tx.execute(insert(command_log).values(command_id=close_id, at=now, status="expired",
                                                  detail=json.dumps(why)))  # fmt: skip
            _note_dr(tx, sup.meter, dr.detail | {"close_state": "withdrawn"})
            _history(tx, sup.meter, now, "withdraw", DEMAND_RESPONSE, by,
                     [r.reason for r in sup.reasons], {"command": close_id} | why)  # fmt: skip
            return ()
    rows = storage.commands(command_id=close_id, limit=1)
    held = rows[0] if rows else None
    if held is None or held.status in commands.FINAL:
        return ()  # it ran already (or never will): nothing to undo
    after = _issue(storage, key, sup, "relay_open", by, now,
                   held.not_before + OVERRIDE_AFTER_S, CLOSE_VALID_S)  # fmt: skip
    with storage.transaction() as tx:
        _note_dr(tx, sup.meter, dr.detail | {"close_state": "overridden", "override": after.id})
        _history(tx, sup.meter, now, "override", DEMAND_RESPONSE, by,
                 [r.reason for r in sup.reasons],
                 {"command": after.id, "held": close_id, "reason": reason})  # fmt: skip
    return (after,)


def _restore_dr_close(
    storage: Storage, key: Ed25519PrivateKey, sup: Supply, by: str, now: float
) -> tuple[CommandRecord, ...]:
    """A reason was cleared: when only a DR reason whose reconnection was withdrawn or
    overridden remains, its reconnection is issued again, after the window."""
    dr = sup.reason(DEMAND_RESPONSE)
    if dr is None or dr.until is None or len(sup.reasons) != 1:
        return ()
    if dr.detail.get("close_state") not in ("withdrawn", "overridden"):
        return ()
    back = _issue(storage, key, sup, "relay_close", by, now, max(dr.until + RESTORE_AFTER_S, now),
                  CLOSE_VALID_S)  # fmt: skip
    with storage.transaction() as tx:
        _note_dr(tx, sup.meter, dr.detail | {"close": back.id, "close_state": "restored"})
        _history(tx, sup.meter, now, "restore", DEMAND_RESPONSE, by, [DEMAND_RESPONSE],
                 {"command": back.id, "not_before": back.not_before})  # fmt: skip
    return (back,)


def expire(storage: Storage, now: float) -> int:
    """Drop the DR reasons whose window is over (each tick); returns how many."""
    with storage.transaction() as tx:
        meters = tx.execute(
            select(_R.meter).where(_R.until.is_not(None), _R.until <= now).distinct()
        ).all()
        dropped = 0
        for (meter,) in meters:
            found = _load(tx, meter, lock=True)
            if found is not None:
                dropped += len(found.reasons) - len(_prune(tx, found, now).reasons)
    return dropped
