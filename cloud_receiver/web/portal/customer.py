"""The customers' pages (issue 21, item 3): their own data only — daily and monthly
usage with the tariff-period breakdown and what it cost, balance and ledger, the
low-balance alert and "will my power be cut, and when", how to top up, the statement of
which data is collected and why, feedback (raise a question or complaint, follow the
answers until resolved), and a simple mode with large text.

A customer names an account in the URL; `Caller.resource` says whose it is and
`Caller.require` refuses any that is not theirs (audited, 403), so a guessed id shows
nothing. Every view of their data is audited as a read.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from cloud_receiver.access import customers
from cloud_receiver.access.policy import Action
from cloud_receiver.applications import feedback as fb
from cloud_receiver.applications import prepay
from cloud_receiver.applications.analytics import energy
from cloud_receiver.applications.analytics.usage import subrange
from cloud_receiver.web.portal import common, reads
from cloud_receiver.web.portal.common import render, see_other
from cloud_receiver.web.security import Caller, check_csrf, state

router = APIRouter(prefix="/my", include_in_schema=False)
Customer = Annotated[Caller, Depends(common.customer)]


def _accounts(caller: Caller) -> list[str]:
    with caller.storage.read() as conn:
        return customers.accounts_of(conn, caller.principal.name)


def _account(caller: Caller, account_id: str | None) -> prepay.Account:
    """The account asked for (default: the customer's first), checked to be theirs."""
    mine = _accounts(caller)
    chosen = account_id or (mine[0] if mine else "")
    if not chosen:
        raise HTTPException(404, "no prepaid account is linked to you yet: ask the utility")
    caller.require(Action.PREPAY_READ, caller.resource("account", chosen))
    return prepay.get_account(caller.storage, chosen)


@router.get("", response_class=HTMLResponse)
def overview(request: Request, caller: Customer, account: str = "") -> Response:
    """Balance, this month's usage so far, alerts and the outlook: the first page."""
    acc = _account(caller, account or None)
    now = time.time()
    entries = prepay.ledger(caller.storage, acc.account)
    outlook = reads.outlook(acc, entries, now)
    first = common.today().replace(day=1)
    month_kwh = reads.used_since(caller.storage, acc, energy.midnight(first, common.tz()), now)
    caller.read("customer overview", f"account:{acc.account}", customers=1)
    return render(request, "customer/overview.html", caller, acc=acc, outlook=outlook,
                  month_kwh=month_kwh, month=f"{first:%Y-%m}",
                  accounts=_accounts(caller))  # fmt: skip


@router.get("/usage", response_class=HTMLResponse)
def usage(request: Request, caller: Customer, account: str = "", month: str = "") -> Response:
    """A month's daily usage by tariff period with its cost, and the last 12 months."""
    from cloud_receiver.web import charts

    acc = _account(caller, account or None)
    first = common.parse_month(month, common.today())
    end = common.next_month(first)
    shown_end = max(first + dt.timedelta(days=1), min(end, common.today() + dt.timedelta(days=1)))
    year_first = (first.replace(day=1) - dt.timedelta(days=330)).replace(day=1)
    year = reads.customer_usage(caller.storage, acc, year_first, shown_end, common.tz(),
                                state(request).series)  # fmt: skip
    report = subrange(year, first, shown_end, acc.tariff.tou)  # one read for both
    costs = reads.day_charges(report, acc.tariff)
    caller.read("customer usage", f"account:{acc.account}", customers=1, month=f"{first:%Y-%m}")
    g = common.gettext(request)
    periods = list(acc.tariff.tou.periods)
    names = {p: g.plain(p) for p in periods}
    daily = charts.bars(
        [f"{d.day:%d}" for d in report.days],
        {p: [d.tou.get(p) if d.tou else None for d in report.days] for p in periods},
        title=g.plain("Daily usage in %(m)s (kWh)", m=first.strftime("%Y-%m")), unit="kWh",
        names=names, no_data=g.plain("No readings this month yet"),
    )  # fmt: skip
    monthly = charts.bars(
        [m.month for m in year.months],
        {p: [m.tou.get(p) for m in year.months] for p in periods},
        title=g.plain("Monthly usage (kWh)"), unit="kWh", names=names,
        no_data=g.plain("No readings yet"),
    )  # fmt: skip
    prev = (first - dt.timedelta(days=1)).replace(day=1)
    return render(request, "customer/usage.html", caller, acc=acc, report=report, costs=costs,
                  daily=daily, monthly=monthly, periods=periods, month=f"{first:%Y-%m}",
                  prev=f"{prev:%Y-%m}", next=f"{end:%Y-%m}",
                  total_cost=sum((c for c in costs if c is not None), start=0))  # fmt: skip


@router.get("/account", response_class=HTMLResponse)
def account_page(request: Request, caller: Customer, account: str = "") -> Response:
    """Balance, charges and top-ups (the ledger), alerts, and how to top up."""
    acc = _account(caller, account or None)
    entries = prepay.ledger(caller.storage, acc.account)
    outlook = reads.outlook(acc, entries, time.time())
    caller.read("customer balance and ledger", f"account:{acc.account}", customers=1)
    return render(request, "customer/account.html", caller, acc=acc, outlook=outlook,
                  entries=entries[::-1][:200])  # fmt: skip


@router.get("/simple", response_class=HTMLResponse)
def simple(request: Request, caller: Customer, account: str = "") -> Response:
    """Large text, three answers: the balance, whether and when the power will be cut,
    and how to top up."""
    acc = _account(caller, account or None)
    outlook = reads.outlook(acc, prepay.ledger(caller.storage, acc.account), time.time())
    caller.read("customer simple view", f"account:{acc.account}", customers=1)
    return render(request, "customer/simple.html", caller, acc=acc, outlook=outlook)


@router.get("/privacy", response_class=HTMLResponse)
def privacy(request: Request, caller: Customer) -> Response:
    return render(request, "customer/privacy.html", caller)


# ------------------------------------------------------------------ feedback
@router.get("/feedback", response_class=HTMLResponse)
def feedback_list(request: Request, caller: Customer) -> Response:
    mine = _accounts(caller)
    found = []
    for a in mine:
        caller.require(Action.DATA_READ, caller.resource("account", a))
        found += fb.listing(caller.storage, account=a)[0]
    found.sort(key=lambda f: -f.id)
    caller.read("customer feedback list", f"customer:{caller.principal.name}", customers=1)
    return render(request, "customer/feedback_list.html", caller, found=found, accounts=mine,
                  topics=fb.TOPICS)  # fmt: skip


@router.post("/feedback")
def feedback_raise(request: Request, caller: Customer, account: Annotated[str, Form()],
                   topic: Annotated[str, Form()], subject: Annotated[str, Form()],
                   message: Annotated[str, Form()],
                   csrf_token: Annotated[str, Form()] = "") -> Response:  # fmt: skip
    check_csrf(request, csrf_token)
    caller.require(Action.DATA_READ, caller.resource("account", account))
    try:
        item = fb.raise_feedback(
            caller.storage, account=account, customer=caller.principal.name, topic=topic,
            subject=subject, body=message, now=time.time(),
        )  # fmt: skip
    except fb.FeedbackError as exc:
        raise HTTPException(422, str(exc)) from None
    caller.record("change", "feedback.raise", f"account:{account}",
                  detail={"feedback": item.id, "topic": topic})  # fmt: skip
    return see_other(f"/my/feedback/{item.id}")


def _mine(caller: Caller, feedback_id: int) -> fb.Feedback:
    """A matter of one of the customer's accounts; any other is unknown (404)."""
    for a in _accounts(caller):
        try:
            return fb.get(caller.storage, feedback_id, account=a)
        except fb.UnknownFeedback:
            continue
    raise HTTPException(404, f"feedback {feedback_id}: no such matter")


@router.get("/feedback/{feedback_id}", response_class=HTMLResponse)
def feedback_page(request: Request, caller: Customer, feedback_id: int) -> Response:
    item = _mine(caller, feedback_id)
    caller.require(Action.DATA_READ, caller.resource("account", item.account))
    caller.read("customer feedback", f"account:{item.account}", customers=1, feedback=item.id)
    return render(request, "customer/feedback.html", caller, item=item)


@router.post("/feedback/{feedback_id}")
def feedback_reply(request: Request, caller: Customer, feedback_id: int,
                   message: Annotated[str, Form()] = "", resolve: Annotated[str, Form()] = "",
                   csrf_token: Annotated[str, Form()] = "") -> Response:  # fmt: skip
    check_csrf(request, csrf_token)
    item = _mine(caller, feedback_id)
    caller.require(Action.DATA_READ, caller.resource("account", item.account))
    try:
        fb.write(
            caller.storage, feedback_id, author_kind=fb.CUSTOMER, author=caller.principal.name,
            body=message, now=time.time(), account=item.account, resolve=bool(resolve),
        )  # fmt: skip
    except fb.FeedbackError as exc:
        raise HTTPException(422, str(exc)) from None
    return see_other(f"/my/feedback/{feedback_id}")
