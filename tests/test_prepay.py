"""Prepayment in the receiver (`cloud_receiver.applications.prepay`): tariffs, idempotent
charging to the cent, low balance, cut-off hours, relay commands, and bad input leaving
the ledger as it was. Both storage backends."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from helpers import Operators, receiver_cli
from sqlalchemy import func, select

from cloud_receiver.applications import prepay
from cloud_receiver.applications.fleet import commands
from cloud_receiver.storage import Storage, open_storage
from cloud_receiver.storage.schema import dr_events, requests
from contract import commands as wire_commands
from contract.records import Event, Reading

CST = dt.timezone(dt.timedelta(hours=8))
DAY = int(dt.datetime(2026, 11, 2, tzinfo=CST).timestamp())  # a Monday, 00:00 local
M1 = "000000000001"


@pytest.fixture
def storage(receiver_storage: Storage) -> Storage:
    return receiver_storage


def flat(price: str = "0.55") -> prepay.Tariff:
    return prepay.Tariff.parse([f"flat={price}"])


def energy(slot: int, kwh: str, meter: str = M1) -> tuple[str, str, int, str]:
    return (meter, "energy_fwd_total", slot, kwh)


def test_tou_cost_spreads_energy_over_the_quarters_by_period() -> None:
    t = prepay.Tariff.parse(["peak=0.80", "flat=0.50", "valley=0.30"], "peak=08-11;valley=23-07")
    q = 900
    at = DAY + 8 * 3600  # 08:00, peak
    assert t.cost(Decimal("2"), at, at + q) == Decimal("1.60")
    # 07:45-08:15: half flat, half peak; 06:45-07:15: half valley, half flat.
    assert t.cost(Decimal("2"), at - q, at + q) == Decimal("0.50") + Decimal("0.80")
    assert t.cost(Decimal("2"), at - 5 * q, at - 3 * q) == Decimal("0.30") + Decimal("0.50")
    with pytest.raises(prepay.PrepayError, match="no price for period"):
        prepay.Tariff.parse(["flat=0.5"], "peak=08-11")


def test_charges_follow_the_register_to_the_cent_and_never_twice(storage: Storage) -> None:
    prepay.open_account(storage, "A1", M1, flat("0.333"), concentrator="dc-1", now=0)
    prepay.topup(storage, "A1", Decimal("10.00"), now=0, by="t")
    values = ["100.00", "100.01", "100.02", "100.05", "100.10", "101.00"]
    batch = [energy(DAY + i * 900, v) for i, v in enumerate(values)]
    prepay.charge(storage, batch[:3], 1, "dc-1")
    prepay.charge(storage, batch, 2, "dc-1")  # a redelivered batch and its continuation
    prepay.charge(storage, batch[1:2], 3, "dc-1")  # a late reading of a billed slot
    acc = prepay.get_account(storage, "A1")
    # One rounding of the exact cost of 1.00 kWh at 0.333, not one per reading.
    assert acc.balance_cents == 1000 - 33
    entries = prepay.ledger(storage, "A1")
    charges = [a for _, kind, _, a, _, _ in entries if kind == "charge"]
    assert len(charges) == 5 and sum(charges) == -33
    assert [kind for _, kind, _, _, _, _ in entries][:4] == [
        "open",
        "opening_grace",
        "topup",
        "baseline",
    ]


def test_only_the_meters_own_concentrator_bills_it_with_its_ct_ratio(storage: Storage) -> None:
    prepay.open_account(storage, "A1", M1, flat("1.00"), concentrator="dc-1",
                        multiplier=Decimal(40), now=0)  # fmt: skip
    prepay.topup(storage, "A1", Decimal("100"), now=0, by="t")
    prepay.charge(storage, [energy(DAY, "10.00")], 1, "dc-1")
    # A stolen certificate of another concentrator reports a huge register: nothing.
    prepay.charge(storage, [energy(DAY + 900, "99999.00")], 2, "dc-evil")
    assert prepay.get_account(storage, "A1").balance_cents == 10000
    prepay.charge(storage, [energy(DAY + 900, "10.50")], 3, "dc-1")
    assert prepay.get_account(storage, "A1").balance_cents == 10000 - 2000  # 0.5 x 40 kWh


def test_a_register_rolling_over_is_billed_across_the_wrap(storage: Storage) -> None:
    prepay.open_account(storage, "A1", M1, flat("1.00"), concentrator="dc-1", now=0)
    prepay.topup(storage, "A1", Decimal("10"), now=0, by="t")
    prepay.charge(storage, [energy(DAY, "999999.50"), energy(DAY + 900, "0.75")], 1, "dc-1")
    assert prepay.get_account(storage, "A1").balance_cents == 1000 - 125


def test_low_balance_is_noted_once_per_dip(storage: Storage) -> None:
    prepay.open_account(
        storage, "A1", M1, flat("1.00"), concentrator="dc-1", low=Decimal("5"), now=0
    )
    prepay.topup(storage, "A1", Decimal("6"), now=0, by="t")
    # (billed long after the opening grace period ended)
    prepay.charge(storage, [energy(DAY, "0"), energy(DAY + 900, "2")], DAY + 901, "dc-1")
    prepay.charge(storage, [energy(DAY + 1800, "3")], DAY + 1801, "dc-1")
    kinds = [k for _, k, _, _, _, _ in prepay.ledger(storage, "A1")]
    assert kinds.count("low_balance") == 1


def test_cut_off_only_inside_allowed_hours_and_never_on_holidays() -> None:
    policy = prepay.Policy.parse("08:00-18:00", ["2026-11-03"])
    at = lambda d, h: dt.datetime(2026, 11, d, h, tzinfo=CST).timestamp()  # noqa: E731
    assert policy.may_disconnect(at(2, 9))
    assert not policy.may_disconnect(at(2, 7))
    assert not policy.may_disconnect(at(2, 18))
    assert not policy.may_disconnect(at(2, 23))
    assert not policy.may_disconnect(at(3, 10))  # a holiday
    for bad in ("8-18", "18:00-08:00", "08:00-25:00"):
        with pytest.raises(prepay.PrepayError, match="cut-off hours"):
            prepay.Policy.parse(bad)


def test_running_out_sends_relay_open_and_a_top_up_relay_close(storage: Storage) -> None:
    key = wire_commands.new_key()
    storage.ingest("dc-1", 1, 1, [Reading(M1, "energy_fwd_total", DAY, "1.00", "kWh", DAY, "poll")],
                   [], DAY)  # fmt: skip
    prepay.open_account(
        storage, "A1", M1, flat("1.00"), concentrator="dc-1", grace=Decimal("1"), now=0
    )
    prepay.topup(storage, "A1", Decimal("2"), now=0, by="t")
    prepay.charge(storage, [energy(DAY, "1.00"), energy(DAY + 900, "4.50")], 1, "dc-1")
    assert prepay.get_account(storage, "A1").balance_cents == -150
    night = dt.datetime(2026, 11, 2, 23, tzinfo=CST).timestamp()
    policy = prepay.Policy.parse("08:00-18:00")
    assert prepay.enforce(storage, key, policy, night) == []  # not at night
    morning = night + 10 * 3600
    [line] = prepay.enforce(storage, key, policy, morning)
    assert "relay_open sent" in line
    [cmd] = storage.commands()
    assert (cmd.action, cmd.meters, cmd.concentrator) == ("relay_open", [M1], "dc-1")
    assert prepay.enforce(storage, key, policy, morning + 1) == []  # waits for the outcome
    done = Event("command", "info", None, {"id": cmd.id, "result": "done"}, morning + 2)
    commands.apply_results(storage, "dc-1", [done])
    prepay.enforce(storage, key, policy, morning + 3)
    assert prepay.get_account(storage, "A1").state == "disconnected"
    prepay.topup(storage, "A1", Decimal("1.00"), now=morning + 4, by="t")  # still below 0
    assert prepay.enforce(storage, key, policy, morning + 5) == []
    prepay.topup(storage, "A1", Decimal("1.00"), now=morning + 6, by="t")
    [line] = prepay.enforce(storage, key, policy, night + 86400)  # reconnection at night too
    assert "relay_close sent" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["topup", "NOPE", "10"], "unknown account 'NOPE'"),
        (["topup", "A1", "-5"], "must be more than zero"),
        (["topup", "A1", "0"], "must be more than zero"),
        (["topup", "A1", "1.005"], "at most two decimals"),
        (["topup", "A1", "ten"], "expected an amount"),
        (["balance", "NOPE"], "unknown account 'NOPE'"),
        (["account", "open", "A2", "--meter", "1234", "--price", "flat=1",
          "--concentrator", "dc-1", "--opening", "grace=3d"], "12-digit"),
        (["account", "open", "A2", "--meter", M1, "--price", "flat=1",
          "--concentrator", "dc-1", "--opening", "grace=3d"], "already has an account"),
        (["account", "open", "A3", "--meter", "000000000003", "--price", "flat=1",
          "--concentrator", "dc-1", "--tou", "peak=8-25", "--opening", "grace=3d"],
         "tariff periods"),
        (["account", "open", "A3", "--meter", "000000000003", "--price", "flat=1",
          "--concentrator", "dc-1", "--multiplier", "-40", "--opening", "grace=3d"],
         "multiplier -40"),
    ],
)  # fmt: skip
def test_bad_input_is_named_and_leaves_the_ledger_unchanged(
    tmp_path: Path, args: list[str], message: str, operators: Callable[[str], Operators]
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    s = open_storage(url)
    prepay.open_account(s, "A1", M1, flat(), concentrator="dc-1", now=0)
    prepay.topup(s, "A1", Decimal("5"), now=0, by="t")
    before = prepay.ledger(s, "A1")
    s.close()
    clerk = operators(url).login("bea", "billing-clerk")
    done = receiver_cli(*args, "--db", url, session=clerk)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    s = open_storage(url)
    try:
        assert prepay.ledger(s, "A1") == before
        assert [a.account for a in prepay.accounts(s)] == ["A1"]
    finally:
        s.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dr", "event", "--group", "g", "--from", "tomorrow", "--to", "2000000000"],
         "expected unix seconds or an ISO date/time"),
        (["dr", "event", "--group", "g", "--from", "2000003600", "--to", "2000000000"],
         "must end after it starts"),
        (["dr", "event", "--group", "nobody", "--from", "2000000000", "--to", "2000003600"],
         "no meter is enrolled in group 'nobody'"),
        (["dr", "event", "--group", "g", "--from", "2000000000", "--to", "2000003600",
          "--limit-kw", "lots"], "expected kW"),
        (["dr", "report", "nope"], "unknown demand-response event 'nope'"),
        (["command", "relay-open", "--concentrator", "dc-1", "--meter", M1,
          "--not-before", "noon-ish"], "expected unix seconds or an ISO date/time"),
        (["command", "relay-open", "--concentrator", "dc-1", "--meter", M1,
          "--valid-for", "soon"], "expected a duration"),
        (["command", "relay-open", "--concentrator", "dc-1", "--meter", M1,
          "--valid-for", "30d"], "exceeds"),
        (["command", "relay-open", "--concentrator", "dc-1"], "needs at least one meter"),
    ],
)  # fmt: skip
def test_malformed_times_and_commands_are_named_and_store_nothing(
    tmp_path: Path, args: list[str], message: str, operators: Callable[[str], Operators]
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    s = open_storage(url)
    from cloud_receiver.applications import dr

    dr.enrol(s, "g", [M1], "dc-1")
    s.close()
    extra = ["--limit-kw", "10"] if "--limit-kw" not in args and args[:2] == ["dr", "event"] else []
    session = operators(url).login("olga", "operator")
    done = receiver_cli(*args, *extra, "--db", url, session=session)
    assert done.returncode != 0
    assert message in done.stderr, done.stderr
    s = open_storage(url)
    try:
        assert s.commands() == []
        with s.transaction() as tx:
            assert tx.execute(select(func.count()).select_from(dr_events)).scalar() == 0
            assert tx.execute(select(func.count()).select_from(requests)).scalar() == 0
    finally:
        s.close()
