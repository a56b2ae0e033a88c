"""``account``, ``topup`` and ``balance``: prepaid accounts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import click

from clitools.options import db_option, json_option
from cloud_receiver.access.policy import Action, Resource
from cloud_receiver.cli.auth import acting, session_option
from cloud_receiver.cli.common import check_concentrator_id


@click.group()
def account() -> None:
    """Prepaid accounts: one per meter, with its tariff."""


@account.command("open")
@click.argument("account_id")
@click.option("--meter", required=True, help="The meter this account pays for.")
@click.option(
    "--concentrator",
    "concentrator_id",
    required=True,
    callback=check_concentrator_id,
    help="The concentrator the meter is wired to: only its readings bill the account, "
    "and its relay commands go there.",
)
@click.option("--multiplier", default="1", show_default=True, help="CT ratio: register kWh x this.")
@click.option(
    "--price",
    "prices",
    multiple=True,
    required=True,
    metavar="PERIOD=YUAN",
    help="Price per kWh: flat=0.55, or one per period with --tou (peak=0.85 ...).",
)
@click.option("--tou", default="", help="Time-of-use periods, e.g. peak=08-11,18-23;valley=23-07.")
@click.option(
    "--opening",
    required=True,
    metavar="credit=YUAN|grace=DURATION",
    help="How the account starts, so no cut-off comes before the customer could top up: "
    "an initial credit (above --low), or a grace period of 24h to 90d without cut-off or "
    "low-balance notice (e.g. credit=20, grace=72h).",
)
@click.option("--grace", default="0", show_default=True, help="Credit allowed below zero (yuan).")
@click.option("--low", default="10", show_default=True, help="Low-balance warning below (yuan).")
@click.option("--tz", "tz_text", default="+08:00", show_default=True, help="Tariff time zone.")
@db_option()
@session_option()
def account_open(
    account_id: str,
    meter: str,
    concentrator_id: str,
    multiplier: str,
    prices: tuple[str, ...],
    tou: str,
    opening: str,
    grace: str,
    low: str,
    tz_text: str,
    db_url: str,
    session_file: Path | None,
) -> None:
    """Open a prepaid account for a meter, with its opening credit or grace period."""
    import time
    from decimal import Decimal, InvalidOperation

    from cloud_receiver.applications import prepay

    tariff = prepay.Tariff.parse(prices, tou, tz_text, opening)
    try:
        grace_d, low_d, ratio = Decimal(grace), Decimal(low), Decimal(multiplier)
    except InvalidOperation:
        raise prepay.PrepayError(
            f"--grace {grace!r} / --low {low!r} / --multiplier {multiplier!r}: not numbers"
        ) from None
    with acting(db_url, session_file, Action.PREPAY_OPEN, Resource("account", account_id)) as actor:
        acc = prepay.open_account(
            actor.storage,
            account_id,
            meter,
            tariff,
            concentrator=concentrator_id,
            multiplier=ratio,
            grace=grace_d,
            low=low_d,
            now=time.time(),
        )
        actor.record("change", str(Action.PREPAY_OPEN), f"account:{account_id}",
                     detail={"meter": meter, "concentrator": concentrator_id})  # fmt: skip
    click.echo(
        f"account {acc.account} opened for meter {acc.meter}: balance"
        f" {prepay.balance_text(acc.balance_cents)}, opening {acc.tariff.opening.spec}"
    )


@click.command(context_settings={"ignore_unknown_options": True})  # "-5" is an amount
@click.argument("account_id")
@click.argument("amount")
@db_option()
@session_option()
def topup(account_id: str, amount: str, db_url: str, session_file: Path | None) -> None:
    """Credit AMOUNT yuan to a prepaid account; a cut-off supply is restored at once
    when the balance is back at zero or above."""
    import time

    from cloud_receiver.applications import prepay

    value = prepay.money(amount, "top-up")
    target = Resource("account", account_id)
    with acting(db_url, session_file, Action.PREPAY_TOPUP, target) as actor:
        acc = prepay.topup(
            actor.storage,
            account_id,
            value,
            now=time.time(),
            by=actor.principal.label,
        )
        actor.record("change", str(Action.PREPAY_TOPUP), f"account:{account_id}",
                     detail={"amount": str(value), "balance_cents": acc.balance_cents})  # fmt: skip
    click.echo(f"account {acc.account}: balance {prepay.balance_text(acc.balance_cents)}")


@click.command()
@click.argument("account_id")
@click.option("--ledger", "show_ledger", is_flag=True, help="Every entry of the ledger too.")
@json_option()
@db_option()
@session_option()
def balance(
    account_id: str, show_ledger: bool, as_json: bool, db_url: str, session_file: Path | None
) -> None:
    """A prepaid account's balance, supply state and (with --ledger) its ledger (audited)."""
    import json
    import time

    from cloud_receiver.applications import prepay
    from cloud_receiver.applications.supply import state as supply

    target = Resource("account", account_id)
    with acting(db_url, session_file, Action.PREPAY_READ, target) as actor:
        acc = prepay.get_account(actor.storage, account_id)
        try:
            held = supply.get(actor.storage, acc.meter).active(time.time())
        except supply.UnknownSupply:
            held = []  # nothing ever held this meter's supply off
        entries = prepay.ledger(actor.storage, account_id) if show_ledger or as_json else []
        actor.read("balance and ledger" if entries else "balance", str(target), customers=1,
                   export="json" if as_json else None)  # fmt: skip
    if as_json:
        click.echo(
            json.dumps(
                {
                    "account": acc.account,
                    "meter": acc.meter,
                    "balance": prepay.balance_text(acc.balance_cents),
                    "balance_cents": acc.balance_cents,
                    "state": acc.state,
                    "supply_reasons": held,
                    "billed_slot": acc.billed_slot,
                    "billed_kwh": None if acc.billed_kwh is None else str(acc.billed_kwh),
                    "ledger": [
                        {"at": at, "kind": k, "ref": ref, "amount_cents": a, "balance_cents": b,
                         "detail": d}
                        for at, k, ref, a, b, d in entries
                    ],
                }
            )
        )  # fmt: skip
        return
    click.echo(
        f"account {acc.account} (meter {acc.meter}): balance "
        f"{prepay.balance_text(acc.balance_cents)}, supply {acc.state}"
        + (f" (held off by {', '.join(held)})" if held else "")
    )
    for at, kind, _ref, amount, after, detail in entries:
        when = dt.datetime.fromtimestamp(at).isoformat(" ", "seconds")
        click.echo(
            f"{when}  {kind:<14} {prepay.balance_text(amount):>10}  "
            f"{prepay.balance_text(after):>10}  {json.dumps(detail)}"
        )


COMMANDS = [account, topup, balance]
