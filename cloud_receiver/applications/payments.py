"""Top-ups by a payment provider: an idempotent call carrying the provider's own
reference. The portal never takes card data; the provider, once it has the money,
calls the API with its reference, and a retried call (a timeout, a replay) credits the
account once: the reference is the ledger entry's ref and a row of ``payments``.
The credit is `prepay.topup`'s, so a cut-off supply is restored as after any top-up.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from sqlalchemy import select

from cloud_receiver.applications import prepay
from cloud_receiver.errors import ReceiverError
from cloud_receiver.storage import Storage
from cloud_receiver.storage.schema import payments

REFERENCE = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class PaymentConflict(ReceiverError):
    """The reference was used already, for another account or amount."""


class PaymentInvalid(prepay.PrepayError):
    """A reference or provider name that cannot be stored (the message names it)."""


@dataclass(frozen=True)
class Payment:
    account: prepay.Account
    reference: str
    amount: Decimal
    replayed: bool  # the reference had credited the account already: nothing done now


def _check(reference: str, provider: str) -> None:
    if not REFERENCE.fullmatch(reference):
        raise PaymentInvalid(
            f"reference {reference!r}: expected 1-128 characters from A-Z a-z 0-9 . _ : -"
        )
    if not REFERENCE.fullmatch(provider):
        raise PaymentInvalid(
            f"provider {provider!r}: expected 1-128 characters from A-Z a-z 0-9 . _ : -"
        )


def pay(
    storage: Storage,
    account: str,
    amount: Decimal,
    *,
    reference: str,
    provider: str,
    now: float,
    by: str,
) -> Payment:
    """Credit ``amount`` to ``account`` for the provider's ``reference``, once."""
    _check(reference, provider)
    p = payments.c
    with storage.transaction() as tx:
        seen = tx.execute(select(p.account, p.amount_cents).where(p.reference == reference)).first()
    if seen is not None:
        if seen[0] != account or int(seen[1]) != prepay.cents(amount):
            raise PaymentConflict(
                f"reference {reference!r} paid {prepay.balance_text(int(seen[1]))} to account"
                f" {seen[0]} already: a new payment needs a new reference"
            )
        return Payment(prepay.get_account(storage, account), reference, amount, True)
    ledger_ref = f"payment:{reference}"
    acc = prepay.topup(storage, account, amount, now=now, by=by, ref=ledger_ref)
    with storage.transaction() as tx:
        tx.execute(
            storage.insert(payments)
            .values(
                reference=reference,
                account=account,
                amount_cents=prepay.cents(amount),
                provider=provider,
                ledger_ref=ledger_ref,
                at=now,
            )
            .on_conflict_do_nothing()
        )
    return Payment(acc, reference, amount, False)
