"""One supply state per meter (`cloud_receiver.applications.supply.state`): the relay is
closed only when no reason remains, for every ordered pair of reasons set and cleared;
a DR reconnection already on its way never stands against another reason; the history
of every change. Both storage backends."""

from __future__ import annotations

import itertools

import pytest

from cloud_receiver.applications.supply import state
from cloud_receiver.applications.supply.state import (
    CLOSED,
    DEMAND_RESPONSE,
    MAINTENANCE,
    MANUAL,
    OPEN,
    PRECEDENCE,
    PREPAYMENT,
)
from cloud_receiver.storage import Storage
from contract import commands as wire_commands

M1 = "000000000001"
CID = "dc-1"
T0 = 1_800_000_000.0
WINDOW = 7200.0  # a DR reason's window: T0 + 100 .. T0 + 100 + WINDOW


@pytest.fixture
def storage(receiver_storage: Storage) -> Storage:
    return receiver_storage


def _set(s: Storage, key: object, reason: str, now: float) -> state.Change | None:
    assert isinstance(key, wire_commands.Ed25519PrivateKey)
    if reason == DEMAND_RESPONSE:
        got = state.curtail(s, key, meter=M1, concentrator=CID, start=now, end=now + WINDOW,
                            ref="ev1", by="dr:ev1", now=now)  # fmt: skip
        assert got is not None
        return None
    return state.set_reason(s, key, meter=M1, concentrator=CID, reason=reason, by="t", now=now)


def _clear(s: Storage, key: object, reason: str, now: float) -> None:
    assert isinstance(key, wire_commands.Ed25519PrivateKey)
    if reason == DEMAND_RESPONSE:
        return  # a DR reason ends with its window (moving the clock past it)
    state.clear_reason(s, key, meter=M1, reason=reason, by="t", now=now)


def _relay_at(s: Storage, t: float) -> str:
    """Where the commands issued say the relay is at ``t``: the last one due by then
    (in counter order among those due at once), as the concentrator runs them."""
    position = CLOSED
    due = [c for c in s.commands(limit=1000) if c.status != "expired" and c.not_before <= t]
    for c in sorted(due, key=lambda c: (c.not_before, c.counter)):
        position = OPEN if c.action == "relay_open" else CLOSED
    return position


def test_the_rule_and_the_precedence() -> None:
    assert state.relay_for([]) == CLOSED
    for r in PRECEDENCE:
        assert state.relay_for([r]) == OPEN
    assert state.ordered([MAINTENANCE, DEMAND_RESPONSE, PREPAYMENT, MANUAL]) == list(PRECEDENCE)
    with pytest.raises(state.SupplyError, match="reason 'tamper': expected one of prepayment"):
        state.check_reason("tamper")
    with pytest.raises(state.SupplyError, match="12-digit"):
        state.check_meter("12345")


@pytest.mark.parametrize(("first", "second"), list(itertools.permutations(PRECEDENCE, 2)))
def test_the_relay_closes_only_when_no_reason_remains(
    storage: Storage, first: str, second: str
) -> None:
    """Set ``first`` then ``second``; clear ``first`` (still open, ``second`` the cause),
    then ``second`` (closed). A DR reason is set by its event and cleared by its window's
    end, whose reconnection was sent ahead: it must not reconnect the other reason. A DR
    event after another reason leaves the meter alone (`curtail` returns None)."""
    key = wire_commands.new_key()
    t1, t2, t3 = T0, T0 + 60, T0 + 120
    _set(storage, key, first, t1)
    assert _relay_at(storage, t1) == OPEN
    if second == DEMAND_RESPONSE:
        assert state.curtail(storage, key, meter=M1, concentrator=CID, start=t2, end=t2 + 60,
                             ref="ev2", by="dr:ev2", now=t2) is None  # fmt: skip
        _clear(storage, key, first, t3)
        assert state.get(storage, M1).active(t3) == []
        assert _relay_at(storage, t3) == CLOSED
        assert _relay_at(storage, t3 + 3 * WINDOW) == CLOSED
        return
    _set(storage, key, second, t2)
    assert state.get(storage, M1).active(t2) == state.ordered([first, second])
    assert state.get(storage, M1).cause(t2) == state.ordered([first, second])[0]
    # Clear the first one: the second still holds the relay open.
    if first == DEMAND_RESPONSE:
        t3 = T0 + WINDOW + 10  # past the window: the held reconnection has run
    _clear(storage, key, first, t3)
    state.expire(storage, t3)
    sup = state.get(storage, M1)
    assert sup.active(t3) == [second], sup
    assert sup.cause(t3) == second and sup.as_dict(t3)["relay"] == OPEN
    assert _relay_at(storage, t3) == OPEN
    assert _relay_at(storage, T0 + 3 * WINDOW) == OPEN  # long after any DR window
    # Clear the second: now nothing remains and the relay closes.
    t4 = t3 + 60
    _clear(storage, key, second, t4)
    assert state.get(storage, M1).active(t4) == []
    assert _relay_at(storage, t4) == CLOSED
    changes = [(h["change"], h["reason"]) for h in state.history(storage, M1)]
    for step in (("set", first), ("set", second), ("clear", first), ("clear", second)):
        assert step in changes, (step, changes)


@pytest.mark.parametrize(
    ("first", "second"),
    [(a, b) for a, b in itertools.permutations(PRECEDENCE, 2) if b != DEMAND_RESPONSE],
)  # a DR event never curtails a meter another reason holds open (the test above)
def test_clearing_the_later_reason_leaves_the_first_in_force(
    storage: Storage, first: str, second: str
) -> None:
    """Set ``first`` then ``second``; clear ``second``: ``first`` still holds it open."""
    key = wire_commands.new_key()
    _set(storage, key, first, T0)
    _set(storage, key, second, T0 + 60)
    t = T0 + 120
    _clear(storage, key, second, t)
    assert state.get(storage, M1).active(t) == [first]
    assert _relay_at(storage, t) == OPEN
    if first != DEMAND_RESPONSE:
        assert _relay_at(storage, T0 + 3 * WINDOW) == OPEN
    else:  # the DR window ends: its reconnection (withdrawn, then issued again) closes it
        end = T0 + WINDOW
        assert _relay_at(storage, end - 1) == OPEN
        assert _relay_at(storage, end + state.RESTORE_AFTER_S) == CLOSED


def test_a_dr_event_does_not_curtail_a_meter_held_open(storage: Storage) -> None:
    key = wire_commands.new_key()
    for reason in (PREPAYMENT, MANUAL, MAINTENANCE):
        state.set_reason(storage, key, meter=M1, concentrator=CID, reason=reason, by="t", now=T0)
        before = len(storage.commands(limit=100))
        got = state.curtail(storage, key, meter=M1, concentrator=CID, start=T0 + 100,
                            end=T0 + 200, ref="ev", by="dr:ev", now=T0 + 1)  # fmt: skip
        assert got is None and len(storage.commands(limit=100)) == before
        state.clear_reason(storage, key, meter=M1, reason=reason, by="t", now=T0 + 2)


def test_a_dr_reconnection_not_yet_published_is_withdrawn(storage: Storage) -> None:
    key = wire_commands.new_key()
    start = T0 + 3600
    got = state.curtail(storage, key, meter=M1, concentrator=CID, start=start,
                        end=start + WINDOW, ref="ev", by="dr:ev", now=T0)  # fmt: skip
    assert got is not None
    _, back = got
    state.set_reason(storage, key, meter=M1, concentrator=CID, reason=PREPAYMENT, by="prepay:A1",
                     now=T0 + 60)  # fmt: skip
    [withdrawn] = storage.commands(command_id=back.id)
    assert withdrawn.status == "expired"
    assert withdrawn.result == {"reason": "withdrawn: supply held open by prepayment"}
    # Open now (the cut-off), and it stays open past the window.
    assert _relay_at(storage, T0 + 61) == OPEN
    assert _relay_at(storage, start + 2 * WINDOW) == OPEN
    assert "withdraw" in [h["change"] for h in state.history(storage, M1)]


def test_a_dr_reconnection_already_held_is_followed_by_an_open(storage: Storage) -> None:
    key = wire_commands.new_key()
    got = state.curtail(storage, key, meter=M1, concentrator=CID, start=T0, end=T0 + WINDOW,
                        ref="ev", by="dr:ev", now=T0 - 60)  # fmt: skip
    assert got is not None
    for c in got:
        assert storage.claim_command(c.id, T0 - 59)  # published: the concentrator holds it
    change = state.set_reason(storage, key, meter=M1, concentrator=CID, reason=PREPAYMENT,
                              by="prepay:A1", now=T0 + 60)  # fmt: skip
    assert change.command is None  # the curtailment holds it open already
    [override] = change.others
    assert override.action == "relay_open"
    assert override.not_before == T0 + WINDOW + state.OVERRIDE_AFTER_S
    assert _relay_at(storage, T0 + WINDOW + 5) == OPEN
    # A top-up during the window: the DR reason alone remains, its reconnection comes
    # back after the window (after the override), and the supply is on again.
    change = state.clear_reason(storage, key, meter=M1, reason=PREPAYMENT, by="prepay:A1",
                                now=T0 + 120)  # fmt: skip
    assert change.command is None and change.holding(T0 + 120) == [DEMAND_RESPONSE]
    assert _relay_at(storage, T0 + WINDOW - 1) == OPEN
    assert _relay_at(storage, T0 + WINDOW + state.RESTORE_AFTER_S) == CLOSED


def test_setting_twice_sends_once_unless_asked_to_resend(storage: Storage) -> None:
    key = wire_commands.new_key()
    a = state.set_reason(storage, key, meter=M1, concentrator=CID, reason=MANUAL, by="t", now=T0)
    b = state.set_reason(storage, key, meter=M1, concentrator=CID, reason=MANUAL, by="t", now=T0)
    assert a.command is not None and b.command is None
    c = state.set_reason(storage, key, meter=M1, concentrator=CID, reason=MANUAL, by="t",
                         now=T0 + 1, resend=True)  # fmt: skip
    assert c.command is not None and c.command.action == "relay_open"
    assert [h["change"] for h in state.history(storage, M1)].count("set") == 1


def test_bad_input_changes_nothing(storage: Storage) -> None:
    key = wire_commands.new_key()
    with pytest.raises(state.SupplyError, match="set by its event"):
        state.set_reason(storage, key, meter=M1, concentrator=CID, reason=DEMAND_RESPONSE,
                         by="t", now=T0)  # fmt: skip
    with pytest.raises(state.UnknownSupply, match="no supply state"):
        state.get(storage, M1)
    with pytest.raises(state.UnknownSupply):
        state.clear_reason(storage, key, meter=M1, reason=MANUAL, by="t", now=T0)
    assert storage.commands() == [] and state.history(storage, M1) == []
