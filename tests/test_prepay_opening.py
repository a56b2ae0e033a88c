"""A new prepaid account's opening policy (`prepay.Opening`): an initial credit or a
grace period, so no cut-off comes before the customer could top up. The reproduction
from issue 18 — a new account at 0 whose first charge inside cut-off hours wrote
``low_balance``, went negative and was cut off — as an assertion; the policy's
validation named; both storage backends."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path

import pytest
from helpers import Operators, receiver_cli
from hypothesis import given
from hypothesis import strategies as st

from cloud_receiver.applications import prepay
from cloud_receiver.storage import Storage, open_storage
from contract import commands as wire_commands

CST = dt.timezone(dt.timedelta(hours=8))
OPENED = dt.datetime(2026, 11, 3, 10, tzinfo=CST).timestamp()  # a Tuesday, 10:00 local
M1 = "000000000001"
POLICY = prepay.Policy.parse("08:00-18:00")


@pytest.fixture
def storage(receiver_storage: Storage) -> Storage:
    return receiver_storage


def _kinds(storage: Storage) -> list[str]:
    return [k for _, k, _, _, _, _ in prepay.ledger(storage, "A1")]


def _use(storage: Storage, at: float, start: str, end: str) -> None:
    """Two readings just before ``at``: their energy is charged at ``at``."""
    slot = int(at) // 900 * 900
    readings = [(M1, "energy_fwd_total", slot - 900, start), (M1, "energy_fwd_total", slot, end)]
    prepay.charge(storage, readings, at, "dc-1")


def test_a_grace_period_keeps_the_first_charges_from_a_notice_and_a_cut_off(
    storage: Storage,
) -> None:
    key = wire_commands.new_key()
    tariff = prepay.Tariff.parse(["flat=1.00"], opening="grace=2d")
    prepay.open_account(storage, "A1", M1, tariff, concentrator="dc-1", now=OPENED)
    [opening] = [e for e in prepay.ledger(storage, "A1") if e[1] == "opening_grace"]
    assert opening[5] == {"policy": "grace=2d", "until": OPENED + 2 * 86400}
    # The first charge, inside cut-off hours: negative, but no notice and no cut-off.
    _use(storage, OPENED + 1800, "100.00", "105.00")
    assert prepay.get_account(storage, "A1").balance_cents == -500
    assert "low_balance" not in _kinds(storage)
    assert prepay.enforce(storage, key, POLICY, OPENED + 1900) == []
    assert storage.commands() == []
    # Still inside the period a day later (a working hour): still nothing.
    assert prepay.enforce(storage, key, POLICY, OPENED + 86400) == []
    # After it: the next charge is a notice, and the cut-off follows in allowed hours.
    after = OPENED + 2 * 86400 + 600
    _use(storage, after, "105.00", "106.00")
    assert "low_balance" in _kinds(storage)
    [line] = prepay.enforce(storage, key, POLICY, after + 1)
    assert "relay_open sent" in line


def test_a_top_up_inside_the_grace_period_keeps_the_supply(storage: Storage) -> None:
    key = wire_commands.new_key()
    tariff = prepay.Tariff.parse(["flat=1.00"], opening="grace=1d")
    prepay.open_account(storage, "A1", M1, tariff, concentrator="dc-1", now=OPENED)
    _use(storage, OPENED + 1800, "100.00", "105.00")
    prepay.topup(storage, "A1", Decimal("50"), now=OPENED + 3600, by="t")
    _use(storage, OPENED + 86400 + 1800, "105.00", "106.00")
    assert prepay.get_account(storage, "A1").balance_cents == 5000 - 600
    assert prepay.enforce(storage, key, POLICY, OPENED + 86400 + 1900) == []
    assert "low_balance" not in _kinds(storage)


def test_an_initial_credit_is_the_first_balance(storage: Storage) -> None:
    key = wire_commands.new_key()
    tariff = prepay.Tariff.parse(["flat=1.00"], opening="credit=20")
    acc = prepay.open_account(storage, "A1", M1, tariff, concentrator="dc-1", now=OPENED)
    assert acc.balance_cents == 2000 and acc.tariff.opening.spec == "credit=20.00"
    assert _kinds(storage) == ["open", "opening_credit"]
    _use(storage, OPENED + 1800, "100.00", "105.00")
    assert prepay.get_account(storage, "A1").balance_cents == 1500
    assert "low_balance" not in _kinds(storage)
    assert prepay.enforce(storage, key, POLICY, OPENED + 1900) == []
    # It is a credit, not a grace: running through it is a cut-off as usual.
    _use(storage, OPENED + 3600, "105.00", "121.00")
    assert "low_balance" in _kinds(storage)
    [line] = prepay.enforce(storage, key, POLICY, OPENED + 3700)
    assert "relay_open sent" in line


def test_the_policy_round_trips_and_an_old_tariff_has_none() -> None:
    for spec in ("credit=12.50", "grace=3d", "grace=36h", "grace=1500m"):
        tariff = prepay.Tariff.parse(["flat=1"], opening=spec)
        again = prepay.Tariff.from_json(tariff.to_json())
        assert again.opening == tariff.opening
        assert prepay.Opening.parse(again.opening.spec) == tariff.opening
    old = '{"prices": {"flat": "1"}, "tou": "", "tz": "+08:00"}'  # the previous release's
    assert prepay.Tariff.from_json(old).opening.spec == "none"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "opening policy '': expected credit=YUAN or grace=DURATION"),
        ("soon", "opening policy 'soon': expected credit=YUAN or grace=DURATION"),
        ("none", "opening policy 'none'"),
        ("credit=0", "opening credit '0': must be more than zero"),
        ("credit=-5", "opening credit '-5': must be more than zero"),
        ("credit=1.005", "opening credit '1.005': at most two decimals"),
        ("credit=lots", "opening credit 'lots': expected an amount"),
        ("grace=2h", "opening grace '2h': from 24h to 90d"),
        ("grace=91d", "opening grace '91d': from 24h to 90d"),
        ("grace=3w", "opening grace '3w': expected a duration such as 72h or 3d"),
        ("grace=", "opening grace '': expected a duration"),
        ("grace=-3d", "opening grace '-3d': expected a duration"),
    ],
)
def test_a_bad_policy_is_named(spec: str, message: str) -> None:
    with pytest.raises(prepay.PrepayError) as err:
        prepay.Tariff.parse(["flat=1"], opening=spec)
    assert message in str(err.value)


@given(st.text(max_size=20))
def test_any_policy_text_parses_or_is_named(text: str) -> None:
    try:
        opening = prepay.Opening.parse(text)
    except prepay.PrepayError as exc:
        assert str(exc).startswith("opening ")
    else:
        assert (opening.credit_cents > 0) != (opening.grace_s > 0)
        assert prepay.Opening.parse(opening.spec) == opening


def test_a_credit_not_above_the_low_warning_is_refused(storage: Storage) -> None:
    tariff = prepay.Tariff.parse(["flat=1"], opening="credit=5")
    with pytest.raises(prepay.PrepayError, match=r"opening credit 5\.00 is not above the low"):
        prepay.open_account(storage, "A1", M1, tariff, concentrator="dc-1", low=Decimal("5"),
                            now=OPENED)  # fmt: skip
    assert prepay.accounts(storage) == []


def test_account_open_asks_for_the_policy(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    url = f"sqlite:///{tmp_path / 'r.db'}"
    clerk = operators(url).login("bea", "billing-clerk")
    base = ["account", "open", "A1", "--meter", M1, "--concentrator", "dc-1", "--price",
            "flat=0.5", "--db", url]  # fmt: skip
    missing = receiver_cli(*base, session=clerk)
    assert missing.returncode == 2 and "Missing option '--opening'" in missing.stderr
    bad = receiver_cli(*base, "--opening", "grace=1h", session=clerk)
    assert bad.returncode == 2 and "opening grace '1h': from 24h to 90d" in bad.stderr
    ok = receiver_cli(*base, "--opening", "credit=30", session=clerk)
    assert ok.returncode == 0, ok.stderr
    assert "balance 30.00, opening credit=30.00" in ok.stdout
    s = open_storage(url)
    try:
        assert [a.account for a in prepay.accounts(s)] == ["A1"]
        assert prepay.get_account(s, "A1").balance_cents == 3000
    finally:
        s.close()
