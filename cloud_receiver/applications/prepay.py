"""Prepayment: accounts with a balance that follows the meter, disconnection when the
money runs out, reconnection on top-up, and a ledger of every step.

Money is integer cents (fen) in the database and Decimal in between; never float.

Charging follows the meter's forward-energy register as readings arrive. An account
remembers the last slot it billed, the register value there, and the exact (unrounded)
amount billed so far. A reading for a later slot is billed from there: its energy is
spread over the quarter-hours between the two slots and priced by each quarter's tariff
period, and the charge in cents is the change of the *rounded running total*, so the
ledger always sums to the rounded exact cost of the energy — never drifting by a cent
per reading. A reading at or before the billed slot (a redelivered or late batch) is
ignored, and every charge has a unique reference (its slot), so nothing is billed twice
even with two receivers.

Disconnection: when the balance is below minus the grace amount, the meter's supply
gets the ``prepayment`` reason (`applications.supply.state`, which sends the signed
``relay_open`` unless another reason holds the relay open already) — only inside the
allowed hours and never on a configured holiday (no cut-offs at night). A top-up that
brings the balance back to zero or more clears that reason at once, whatever the hour;
the relay closes only when no other reason (an operator's order, a curtailment, field
maintenance) remains. A low balance is a
``low_balance`` ledger entry (the notice to send the customer), once per dip.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Connection, insert, select, update

from cloud_receiver.applications.analytics.usage import TouSchedule, parse_tou
from cloud_receiver.applications.fleet import commands
from cloud_receiver.applications.supply import state as supply
from cloud_receiver.errors import EXIT_USAGE, NotFound, ReceiverError
from cloud_receiver.storage import Storage
from cloud_receiver.storage.schema import accounts as accounts_table
from cloud_receiver.storage.schema import ledger as ledger_table
from contract import quantities
from contract.timezone import parse_utc_offset
from drivers.meter_ids import any_meter_problem, has_relay

QUARTER_S = 900
ENERGY = quantities.ENERGY_FWD_TOTAL  # any protocol: docs/quantities.md
COMMAND_RETRY_S = 600.0  # a failed or unanswered relay command is sent again after this
CENTS = Decimal(100)
IN_CHUNK = 500  # meters per IN (...) list: under SQLite's host-parameter limit
ROLLOVER_KWH = Decimal(1_000_000)  # a DL/T 645 energy register wraps after 999999.99
WRAP_WINDOW_KWH = Decimal(100_000)  # a drop from this close to the top is a wrap


class PrepayError(ReceiverError, ValueError):
    """Bad input (unknown account, negative top-up, malformed tariff or hours)."""

    exit_code = EXIT_USAGE


class UnknownAccount(NotFound, PrepayError):
    """No such account."""


def cents(amount: Decimal) -> int:
    return int((amount * CENTS).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def money(text: str, what: str) -> Decimal:
    """A positive amount of yuan with at most two decimals."""
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise PrepayError(f"{what} {text!r}: expected an amount such as 50 or 12.50") from None
    if not value.is_finite() or value <= 0:
        raise PrepayError(f"{what} {text!r}: must be more than zero")
    if value != value.quantize(Decimal("0.01")):
        raise PrepayError(f"{what} {text!r}: at most two decimals (cents)")
    return value


def parse_offset(text: str) -> dt.timezone:
    """``+08:00`` style UTC offset, by the config's own rule."""
    zone = parse_utc_offset(text)
    if zone is None:
        raise PrepayError(f"time zone {text!r}: expected an offset such as +08:00")
    return zone


MIN_OPENING_GRACE_S = 86400  # a whole day: it always holds hours to top up in
MAX_OPENING_GRACE_S = 90 * 86400
_UNITS = {"m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Opening:
    """How a new account starts, so that no cut-off can come before its customer could
    top up: with a credit (its first balance, above the low-balance warning, so the
    first charge is no notice either), or a grace period (no cut-off and no low-balance
    notice before it ends; the ``opening_grace`` ledger entry, with its end, is the
    notice to send). Accounts of earlier releases have none (``none``)."""

    credit_cents: int = 0
    grace_s: int = 0

    @property
    def spec(self) -> str:
        if self.credit_cents:
            return f"credit={balance_text(self.credit_cents)}"
        if self.grace_s:
            unit = next(u for u in ("d", "h", "m") if self.grace_s % _UNITS[u] == 0)
            return f"grace={self.grace_s // _UNITS[unit]}{unit}"
        return "none"

    @classmethod
    def parse(cls, text: str) -> Opening:
        """``credit=YUAN`` or ``grace=DURATION`` (``72h``, ``3d``, ``1440m``)."""
        what, eq, value = text.strip().partition("=")
        if what == "credit" and eq:
            return cls(credit_cents=cents(money(value, "opening credit")))
        if what == "grace" and eq:
            count, unit = value[:-1], value[-1:]
            if not count.isdigit() or unit not in _UNITS:
                raise PrepayError(f"opening grace {value!r}: expected a duration such as 72h or 3d")
            grace = int(count) * _UNITS[unit]
            if not MIN_OPENING_GRACE_S <= grace <= MAX_OPENING_GRACE_S:
                raise PrepayError(
                    f"opening grace {value!r}: from 24h to 90d, so the customer can top up"
                    " before any cut-off"
                )
            return cls(grace_s=grace)
        raise PrepayError(
            f"opening policy {text!r}: expected credit=YUAN or grace=DURATION"
            " (e.g. credit=20 or grace=72h)"
        )

    @classmethod
    def stored(cls, spec: str) -> Opening:
        return cls() if spec == "none" else cls.parse(spec)


DEFAULT_OPENING = "grace=3d"  # what callers that name none get (the CLI asks for one)


@dataclass(frozen=True)
class Tariff:
    """Yuan per kWh for each time-of-use period (a flat tariff has one: ``flat``)."""

    prices: dict[str, Decimal]
    tou: TouSchedule
    tz: str = "+08:00"
    opening: Opening = Opening()

    @classmethod
    def parse(
        cls, prices: Sequence[str], tou: str = "", tz: str = "+08:00",
        opening: str = DEFAULT_OPENING,
    ) -> Tariff:  # fmt: skip
        """``prices``: ``PERIOD=YUAN`` items (``flat=0.55``); ``tou``: as in `parse_tou`
        (empty: every quarter-hour is flat); ``opening``: as in `Opening.parse`."""
        try:
            schedule = parse_tou(tou)
        except ValueError as exc:
            raise PrepayError(f"tariff periods: {exc}") from None
        table: dict[str, Decimal] = {}
        for item in prices:
            name, eq, value = item.partition("=")
            if not eq:
                raise PrepayError(f"price {item!r}: expected PERIOD=YUAN, e.g. flat=0.55")
            try:
                price = Decimal(value)
            except InvalidOperation:
                raise PrepayError(f"price {item!r}: {value!r} is not a number") from None
            if not price.is_finite() or price < 0:
                raise PrepayError(f"price {item!r}: must be zero or more")
            table[name.strip().lower()] = price
        missing = [p for p in schedule.periods if p not in table]
        if missing:
            raise PrepayError(f"no price for period(s) {', '.join(missing)}")
        parse_offset(tz)
        return cls(table, schedule, tz, Opening.parse(opening))

    def to_json(self) -> str:
        return json.dumps(
            {"prices": {k: str(v) for k, v in self.prices.items()}, "tou": self.tou.spec,
             "tz": self.tz, "opening": self.opening.spec}
        )  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> Tariff:
        doc = json.loads(text)
        return cls({k: Decimal(v) for k, v in doc["prices"].items()}, parse_tou(doc["tou"]),
                   doc["tz"], Opening.stored(doc.get("opening", "none")))  # fmt: skip

    def cost(self, kwh: Decimal, start: int, end: int) -> Decimal:
        """The price of ``kwh`` used evenly between unix times ``start`` and ``end``."""
        if end <= start:
            return self.prices[self.tou.period(self._quarter(end))] * kwh
        total = Decimal(0)
        span = Decimal(end - start)
        t = start
        while t < end:
            q_end = min(end, (t // QUARTER_S + 1) * QUARTER_S)
            price = self.prices[self.tou.period(self._quarter(t))]
            total += price * kwh * Decimal(q_end - t) / span
            t = q_end
        return total

    def _quarter(self, t: int) -> int:
        local = dt.datetime.fromtimestamp(t, parse_offset(self.tz))
        return local.hour * 4 + local.minute // 15


@dataclass(frozen=True)
class Policy:
    """When a disconnection may be carried out."""

    start_minute: int = 8 * 60  # allowed from 08:00 ...
    end_minute: int = 18 * 60  # ... to 18:00, local time
    holidays: frozenset[dt.date] = frozenset()
    tz: str = "+08:00"

    @classmethod
    def parse(cls, hours: str, holidays: Iterable[str] = (), tz: str = "+08:00") -> Policy:
        """``HH:MM-HH:MM`` (``00:00-24:00``: any time); holidays ``YYYY-MM-DD``."""
        try:
            a, b = hours.split("-")
            start = int(a[:2]) * 60 + int(a[3:5])
            end = int(b[:2]) * 60 + int(b[3:5])
            if len(a) != 5 or len(b) != 5 or a[2] != ":" or b[2] != ":":
                raise ValueError
        except ValueError:
            raise PrepayError(f"cut-off hours {hours!r}: expected HH:MM-HH:MM") from None
        if not (0 <= start < end <= 24 * 60):
            raise PrepayError(f"cut-off hours {hours!r}: start must be before end, within a day")
        days = set()
        for h in holidays:
            try:
                days.add(dt.date.fromisoformat(h))
            except ValueError:
                raise PrepayError(f"holiday {h!r}: expected YYYY-MM-DD") from None
        parse_offset(tz)
        return cls(start, end, frozenset(days), tz)

    def may_disconnect(self, now: float) -> bool:
        local = dt.datetime.fromtimestamp(now, parse_offset(self.tz))
        minute = local.hour * 60 + local.minute
        return local.date() not in self.holidays and self.start_minute <= minute < self.end_minute


@dataclass(frozen=True)
class Account:
    account: str
    meter: str
    concentrator: str  # the only one whose readings bill it and that gets its commands
    multiplier: Decimal  # CT ratio: register kWh x multiplier = kWh used
    tariff: Tariff
    balance_cents: int
    grace_cents: int
    low_cents: int
    billed_slot: int | None
    billed_kwh: Decimal | None
    billed_amount: Decimal
    state: str  # connected, disconnecting, disconnected, reconnecting
    low_warned: bool
    command_id: str | None
    command_at: float | None
    created_at: float

    def opening_grace(self, now: float) -> bool:
        """Inside the opening grace period: no cut-off, no low-balance notice yet."""
        return now < self.created_at + self.tariff.opening.grace_s


_ACCOUNTS = select(accounts_table)  # every column, in the order `_account` reads them
_A = accounts_table.c


def _account(r: Sequence[Any]) -> Account:
    return Account(
        r[0], r[1], r[2], Decimal(r[3]), Tariff.from_json(r[4]), int(r[5]), int(r[6]),
        int(r[7]), None if r[8] is None else int(r[8]), None if r[9] is None else Decimal(r[9]),
        Decimal(r[10]), r[11], bool(r[12]), r[13], None if r[14] is None else float(r[14]),
        float(r[15]),
    )  # fmt: skip


def _ledger(
    tx: Connection, account: str, at: float, kind: str, ref: str, amount: int, balance: int,
    detail: dict[str, Any],
) -> None:  # fmt: skip
    tx.execute(insert(ledger_table).values(
        account=account, at=at, kind=kind, ref=ref, amount_cents=amount, balance_cents=balance,
        detail=json.dumps(detail)))  # fmt: skip


# ---------------------------------------------------------------------- accounts
def open_account(
    storage: Storage,
    account: str,
    meter: str,
    tariff: Tariff,
    *,
    concentrator: str,
    multiplier: Decimal = Decimal(1),
    grace: Decimal = Decimal(0),
    low: Decimal = Decimal(10),
    now: float,
) -> Account:
    if not account or len(account) > 64:
        raise PrepayError(f"account {account!r}: expected 1-64 characters")
    problem = any_meter_problem(meter)
    if problem is not None:
        raise PrepayError(f"meter: {problem}")
    if grace < 0 or low < 0:
        raise PrepayError("grace and low-balance amounts cannot be negative")
    if not concentrator:
        raise PrepayError("the account needs the concentrator its meter is wired to")
    if not multiplier.is_finite() or multiplier <= 0:
        raise PrepayError(f"multiplier {multiplier}: must be more than zero")
    opening = tariff.opening
    if opening.spec == "none":
        raise PrepayError("a new account needs an opening policy: credit=YUAN or grace=DURATION")
    if opening.credit_cents and opening.credit_cents <= cents(low):
        raise PrepayError(
            f"opening credit {balance_text(opening.credit_cents)} is not above the low-balance"
            f" warning {balance_text(cents(low))}: the first charge would be a low-balance notice"
        )
    with storage.transaction() as tx:
        taken = tx.execute(select(_A.account).where((_A.account == account) | (_A.meter == meter)))
        if taken.first() is not None:
            raise PrepayError(f"account {account} or meter {meter} already has an account")
        tx.execute(
            insert(accounts_table).values(
                account=account,
                meter=meter,
                concentrator=concentrator,
                multiplier=str(multiplier),
                tariff=tariff.to_json(),
                balance_cents=opening.credit_cents,
                grace_cents=cents(grace),
                low_cents=cents(low),
                billed_slot=None,
                billed_kwh=None,
                billed_amount="0",
                state="connected",
                low_warned=0,
                command_id=None,
                command_at=None,
                created_at=now,
            )
        )
        _ledger(tx, account, now, "open", "open", 0, 0, {"meter": meter,
                "concentrator": concentrator, "multiplier": str(multiplier),
                "tariff": json.loads(tariff.to_json())})  # fmt: skip
        if opening.credit_cents:
            _ledger(tx, account, now, "opening_credit", "opening", opening.credit_cents,
                    opening.credit_cents, {"policy": opening.spec})  # fmt: skip
        else:
            _ledger(tx, account, now, "opening_grace", "opening", 0, 0,
                    {"policy": opening.spec, "until": now + opening.grace_s})  # fmt: skip
    return get_account(storage, account)


def get_account(storage: Storage, account: str) -> Account:
    with storage.transaction() as tx:
        row = tx.execute(_ACCOUNTS.where(_A.account == account)).first()
    if row is None:
        raise UnknownAccount(f"unknown account {account!r}")
    return _account(row)


def accounts(storage: Storage) -> list[Account]:
    with storage.transaction() as tx:
        rows = tx.execute(_ACCOUNTS.order_by(_A.account)).all()
    return [_account(r) for r in rows]


def ledger(
    storage: Storage, account: str
) -> list[tuple[float, str, str, int, int, dict[str, Any]]]:
    """(at, kind, ref, amount cents, balance cents after, detail), oldest first."""
    get_account(storage, account)
    with storage.transaction() as tx:
        g = ledger_table.c
        rows = tx.execute(
            select(g.at, g.kind, g.ref, g.amount_cents, g.balance_cents, g.detail)
            .where(g.account == account)
            .order_by(g.id)
        ).all()
    return [(float(r[0]), r[1], r[2], int(r[3]), int(r[4]), json.loads(r[5])) for r in rows]


def topup(
    storage: Storage, account: str, amount: Decimal, *, now: float, by: str, ref: str | None = None
) -> Account:
    """Credit ``amount`` yuan (validated by `money`); with ``ref`` (a payment's own
    reference) once only: a ledger entry of that ref already credited it."""
    if amount <= 0 or amount != amount.quantize(Decimal("0.01")):
        raise PrepayError(f"top-up {amount}: must be more than zero, in whole cents")
    with storage.transaction() as tx:
        held = tx.execute(
            select(_A.balance_cents).where(_A.account == account).with_for_update()
        ).scalar()
        if held is None:
            raise UnknownAccount(f"unknown account {account!r}")
        g = ledger_table.c
        if ref and tx.execute(select(g.id).where(g.account == account, g.ref == ref)).first():
            return _account(tx.execute(_ACCOUNTS.where(_A.account == account)).one())
        balance = int(held) + cents(amount)
        tx.execute(
            update(accounts_table).where(_A.account == account).values(balance_cents=balance)
        )
        _ledger(tx, account, now, "topup", ref or f"topup:{uuid.uuid4().hex}", cents(amount),
                balance, {"by": by})  # fmt: skip
    return get_account(storage, account)


# ---------------------------------------------------------------------- charging
_ANY_ACCOUNT = select(_A.account).limit(1)


def charge(
    storage: Storage,
    readings: Iterable[tuple[str, str, int, str]],
    now: float,
    concentrator: str,
) -> int:
    """Bill the forward-energy readings (meter, quantity, slot, value) that
    ``concentrator`` delivered for prepaid meters wired to it (another concentrator's
    word about a meter bills nothing: a stolen certificate cannot empty a balance);
    return how many ledger charges were written."""
    written = 0
    with storage.transaction() as tx:
        # Asked first: a deployment without prepayment looks at no reading (ingest speed).
        if tx.execute(_ANY_ACCOUNT).first() is None:
            return 0
        by_meter: dict[str, list[tuple[int, Decimal]]] = {}
        for meter, quantity, slot, value in readings:
            if quantity == ENERGY:
                by_meter.setdefault(meter, []).append((slot, Decimal(value)))
        meters = sorted(by_meter)
        for i in range(0, len(meters), IN_CHUNK):
            chunk = meters[i : i + IN_CHUNK]
            rows = tx.execute(
                _ACCOUNTS.where(_A.meter.in_(chunk)).order_by(_A.account).with_for_update()
            ).all()
            for acc in map(_account, rows):
                if acc.concentrator == concentrator:
                    written += _bill(tx, acc, sorted(by_meter[acc.meter]), now)
    return written


def _bill(tx: Connection, acc: Account, series: list[tuple[int, Decimal]], now: float) -> int:
    slot, kwh, amount = acc.billed_slot, acc.billed_kwh, acc.billed_amount
    balance, low_warned = acc.balance_cents, acc.low_warned
    written = 0
    for s, value in series:
        if slot is not None and s <= slot:
            continue  # billed already (a redelivered or late batch)
        if slot is None or kwh is None:
            _ledger(tx, acc.account, now, "baseline", f"charge:{s}", 0, balance,
                    {"slot": s, "kwh": str(value)})  # fmt: skip
        else:
            used = value - kwh
            if used < 0 and kwh >= ROLLOVER_KWH - WRAP_WINDOW_KWH and value < WRAP_WINDOW_KWH:
                used += ROLLOVER_KWH  # the register wrapped past 999999.99
            if used < 0:  # a register reset or a replaced meter: billed from here on
                _ledger(tx, acc.account, now, "register_reset", f"charge:{s}", 0, balance,
                        {"slot": s, "kwh": str(value), "was": str(kwh)})  # fmt: skip
            else:
                new_amount = amount + acc.tariff.cost(used * acc.multiplier, slot, s)
                fee = cents(new_amount) - cents(amount)
                balance -= fee
                amount = new_amount
                _ledger(tx, acc.account, now, "charge", f"charge:{s}", -fee, balance,
                        {"slot": s, "from_slot": slot, "kwh": str(used * acc.multiplier),
                         "register": str(value)})  # fmt: skip
                written += 1
        slot, kwh = s, value
    if balance < acc.low_cents and not low_warned and not acc.opening_grace(now):
        low_warned = True
        _ledger(tx, acc.account, now, "low_balance", f"low:{slot}", 0, balance,
                {"threshold_cents": acc.low_cents})  # fmt: skip
    elif balance >= acc.low_cents:
        low_warned = False
    tx.execute(
        update(accounts_table)
        .where(_A.account == acc.account)
        .values(billed_slot=slot, billed_kwh=None if kwh is None else str(kwh),
                billed_amount=str(amount), balance_cents=balance, low_warned=int(low_warned))
    )  # fmt: skip
    return written


# ---------------------------------------------------------------------- relays
def enforce(storage: Storage, key: Ed25519PrivateKey, policy: Policy, now: float) -> list[str]:
    """Send the relay commands the balances call for and follow their outcome; return
    what was done, for the log."""
    done: list[str] = []
    held = supply.meters_with(storage, supply.PREPAYMENT)
    for acc in accounts(storage):
        try:
            if acc.command_id is not None:
                done += _follow(storage, acc, now)
                continue
            owed = acc.balance_cents < -acc.grace_cents
            if not has_relay(acc.meter):
                continue  # a Modbus meter is billed and warned; it has no relay to switch
            may_cut = policy.may_disconnect(now) and not acc.opening_grace(now)
            if acc.state == "connected" and owed and may_cut:
                done += _send(storage, key, acc, "relay_open", "disconnecting", now)
            elif acc.state == "disconnected" and acc.balance_cents >= 0:
                done += _send(storage, key, acc, "relay_close", "reconnecting", now)
            elif acc.state == "connected" and acc.balance_cents >= 0 and acc.meter in held:
                # A cut-off whose command failed, then a top-up: the reason goes too.
                supply.clear_reason(storage, key, meter=acc.meter, reason=supply.PREPAYMENT,
                                    by=f"prepay:{acc.account}", now=now)  # fmt: skip
                done.append(f"{acc.account}: prepayment reason cleared (cut-off never ran)")
        except Exception as exc:  # one account's trouble must not stop the others
            done.append(f"{acc.account}: {exc!r}")
    return done


def _send(
    storage: Storage, key: Ed25519PrivateKey, acc: Account, action: str, state: str, now: float
) -> list[str]:
    if acc.command_at is not None and now - acc.command_at < COMMAND_RETRY_S:
        return []  # the last attempt failed a moment ago: not again yet
    # Claim the account first (a second receiver finds it claimed and sends nothing);
    # a crash before the command exists leaves "pending", closed as unanswered.
    with storage.transaction() as tx:
        claimed = tx.execute(
            update(accounts_table)
            .where(_A.account == acc.account, _A.state == acc.state, _A.command_id.is_(None))
            .values(state=state, command_id="pending", command_at=now)
            .returning(_A.account)
        ).first()
    if claimed is None:
        return []
    # The supply state decides whether a relay command is needed (another reason may
    # hold the relay open already, or still): `applications.supply.state`.
    by, again = f"prepay:{acc.account}", acc.command_at is not None
    if action == "relay_open":
        change = supply.set_reason(storage, key, meter=acc.meter, concentrator=acc.concentrator,
                                   reason=supply.PREPAYMENT, by=by, now=now, ref=acc.account,
                                   resend=again)  # fmt: skip
    else:
        change = supply.clear_reason(storage, key, meter=acc.meter, reason=supply.PREPAYMENT,
                                     by=by, now=now, resend=again)  # fmt: skip
    record = change.command
    if record is None:  # the relay stays where other reasons hold it: nothing to follow
        settled = {"disconnecting": "disconnected", "reconnecting": "connected"}[state]
        others = [r for r in change.holding(now) if r != supply.PREPAYMENT]
        with storage.transaction() as tx:
            tx.execute(update(accounts_table).where(_A.account == acc.account)
                       .values(state=settled, command_id=None, command_at=None))  # fmt: skip
            _ledger(tx, acc.account, now, settled, f"supply:{uuid.uuid4().hex}", 0,
                    acc.balance_cents, {"action": action, "held_open_by": others})  # fmt: skip
        return [f"{acc.account}: {settled} (supply held open by {', '.join(others)})"]
    with storage.transaction() as tx:
        tx.execute(
            update(accounts_table).where(_A.account == acc.account).values(command_id=record.id)
        )
        _ledger(tx, acc.account, now, "command", f"cmd:{record.id}", 0, acc.balance_cents,
                {"action": action, "command": record.id,
                 "concentrator": acc.concentrator})  # fmt: skip
    return [f"{acc.account}: {action} sent ({record.id})"]


def _follow(storage: Storage, acc: Account, now: float) -> list[str]:
    assert acc.command_id is not None
    rows = storage.commands(command_id=acc.command_id, limit=1)
    if not rows and acc.command_at is not None and now - acc.command_at < COMMAND_RETRY_S:
        return []  # "pending": the command is being issued right now
    status = rows[0].status if rows else "unanswered"
    if status not in commands.FINAL:
        return []
    ok = status == "done"
    settled = {"disconnecting": "disconnected", "reconnecting": "connected"}
    before = {"disconnecting": "connected", "reconnecting": "disconnected"}
    state = settled[acc.state] if ok else before[acc.state]
    with storage.transaction() as tx:
        moved = tx.execute(
            update(accounts_table)
            .where(_A.account == acc.account, _A.command_id == acc.command_id)
            .values(state=state, command_id=None, command_at=None if ok else acc.command_at)
            .returning(_A.account)
        ).first()
        if moved is None:
            return []  # another receiver followed it up
        _ledger(tx, acc.account, now, state if ok else "command_failed",
                f"result:{acc.command_id}", 0, acc.balance_cents,
                {"command": acc.command_id, "status": status})  # fmt: skip
    return [f"{acc.account}: {state if ok else 'command ' + status}"]


def balance_text(cents_value: int) -> str:
    sign = "-" if cents_value < 0 else ""
    return f"{sign}{abs(cents_value) // 100}.{abs(cents_value) % 100:02d}"
