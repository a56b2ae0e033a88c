"""Prepayment, demand response and the migration through the one supply state
(`cloud_receiver.applications.supply.state`): a top-up clears only the prepayment
reason, a DR event leaves a prepaid-cut meter alone and a cut-off during its window
outlasts its reconnection, and a database whose accounts were cut off by the previous
release starts with that reason. Both storage backends."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from pathlib import Path

import pytest
from alembic import command
from sqlalchemy import insert

from cloud_receiver.applications import dr, prepay
from cloud_receiver.applications.fleet import commands
from cloud_receiver.applications.supply import state as supply
from cloud_receiver.storage import Storage, open_storage
from cloud_receiver.storage.backends import backend_for
from cloud_receiver.storage.migrate import _config
from cloud_receiver.storage.schema import accounts
from contract import commands as wire_commands
from contract.records import Event

CST = dt.timezone(dt.timedelta(hours=8))
MORNING = dt.datetime(2026, 11, 3, 10, tzinfo=CST).timestamp()  # a Tuesday, 10:00 local
M1, M2 = "000000000001", "000000000002"
CID = "dc-1"


@pytest.fixture
def storage(receiver_storage: Storage) -> Storage:
    return receiver_storage


def _cut_off(storage: Storage, key: wire_commands.Ed25519PrivateKey, now: float) -> None:
    """Account A1 on M1 runs out and its cut-off is carried out."""
    prepay.open_account(
        storage, "A1", M1, prepay.Tariff.parse(["flat=1.00"]), concentrator=CID, now=now - 4 * 86400
    )  # fmt: skip  (its opening grace is over)
    readings = [(M1, "energy_fwd_total", int(now) - 1800, "1.00"),
                (M1, "energy_fwd_total", int(now) - 900, "6.00")]  # fmt: skip
    prepay.charge(storage, readings, now, CID)
    [line] = prepay.enforce(storage, key, prepay.Policy(), now)
    assert "relay_open sent" in line
    [cmd] = [c for c in storage.commands(limit=100) if c.issued_by == "prepay:A1"]
    done = Event("command", "info", None, {"id": cmd.id, "result": "done"}, now + 1)
    commands.apply_results(storage, CID, [done])
    prepay.enforce(storage, key, prepay.Policy(), now + 2)
    assert prepay.get_account(storage, "A1").state == "disconnected"


def test_a_top_up_clears_only_the_prepayment_reason(storage: Storage) -> None:
    key = wire_commands.new_key()
    _cut_off(storage, key, MORNING)
    # An operator's order on the same meter meanwhile: no second relay command.
    change = supply.set_reason(storage, key, meter=M1, concentrator=CID, reason=supply.MANUAL,
                               by="operator:olga", now=MORNING + 10)  # fmt: skip
    assert change.command is None
    assert change.supply.cause(MORNING + 10) == supply.PREPAYMENT
    prepay.topup(storage, "A1", Decimal("20"), now=MORNING + 20, by="t")
    [line] = prepay.enforce(storage, key, prepay.Policy(), MORNING + 30)
    assert line == "A1: connected (supply held open by manual)"
    assert [c.action for c in storage.commands(limit=100)] == ["relay_open"]  # no close
    assert prepay.get_account(storage, "A1").state == "connected"
    assert supply.get(storage, M1).active(MORNING + 30) == [supply.MANUAL]
    # The operator lifts the order: now nothing holds it and the relay closes.
    change = supply.clear_reason(storage, key, meter=M1, reason=supply.MANUAL,
                                 by="operator:olga", now=MORNING + 40)  # fmt: skip
    assert change.command is not None and change.command.action == "relay_close"


def test_a_prepaid_cut_meter_is_not_curtailed_and_a_cut_during_a_window_outlasts_it(
    storage: Storage,
) -> None:
    key = wire_commands.new_key()
    _cut_off(storage, key, MORNING)
    dr.enrol(storage, "g", [M1, M2], CID)
    assert dr.enrolled(storage, "g") == {M2: CID}  # the cut-off meter is not curtailed
    start = MORNING + 3600
    event = dr.create_event(storage, key, group="g", start=start, end=start + 7200,
                            limit_kw=Decimal(0), now=MORNING + 60)  # fmt: skip
    assert event["curtailed"] == [M2]
    # M2's account-less supply: prepayment does not apply; an operator's maintenance
    # order during the window keeps it off after the DR reconnection.
    [opened, closing] = [c for c in storage.commands(limit=100) if c.issued_by.startswith("dr:")]
    for c in (opened, closing):
        assert storage.claim_command(c.id, MORNING + 61)
    change = supply.set_reason(storage, key, meter=M2, concentrator=CID,
                               reason=supply.MAINTENANCE, by="operator:olga",
                               now=start + 60)  # fmt: skip
    assert change.command is None
    [override] = change.others
    assert (override.action, override.not_before) == ("relay_open", closing.not_before + 1)
    history = [h["change"] for h in supply.history(storage, M2)]
    assert history == ["set", "command", "command", "set", "override"]


def test_the_previous_releases_cut_off_accounts_keep_their_reason(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    engine = backend_for(url)().engine
    with engine.begin() as conn:
        command.upgrade(_config(conn), "0002")
        for account, meter, state, balance in (("A1", M1, "disconnected", -500),
                                               ("A2", M2, "connected", 0)):  # fmt: skip
            conn.execute(insert(accounts).values(
                account=account, meter=meter, concentrator=CID, multiplier="1",
                tariff=prepay.Tariff.parse(["flat=1"]).to_json(), balance_cents=balance,
                grace_cents=0, low_cents=1000, billed_slot=None, billed_kwh=None,
                billed_amount="0", state=state, low_warned=1, command_id=None, command_at=None,
                created_at=1.0))  # fmt: skip
    engine.dispose()
    s = open_storage(url)
    try:
        assert supply.get(s, M1).active(2.0) == [supply.PREPAYMENT]
        assert supply.meters_with(s, supply.PREPAYMENT) == {M1}
        key = wire_commands.new_key()
        prepay.topup(s, "A1", Decimal("10"), now=3.0, by="t")
        [line] = prepay.enforce(s, key, prepay.Policy(), 4.0)
        assert "relay_close sent" in line
    finally:
        s.close()
