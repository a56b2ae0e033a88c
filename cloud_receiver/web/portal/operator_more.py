"""The operators' other pages (issue 21, item 2): transformer areas (line loss per day,
theft suspects with their evidence), prepaid accounts with the top-up, demand-response
events with their measured reductions, rollouts, customers' feedback, and the audit
log for administrators. Actions confirm first; DR events and rollouts are signed
requests (`applications.requests`, as the CLI) that show the approval step; a top-up
is `applications.prepay.topup` behind ``prepay.topup``, as ``cloud-receiver topup``.
"""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from typing import Annotated

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from cloud_receiver.access import settings as access_settings
from cloud_receiver.access.policy import Action, Resource, authorize
from cloud_receiver.applications import dr, prepay
from cloud_receiver.applications import feedback as fb
from cloud_receiver.applications import requests as kinds
from cloud_receiver.applications.fleet import rollout
from cloud_receiver.errors import ReceiverError
from cloud_receiver.web.portal import common, reads
from cloud_receiver.web.portal.common import render, see_other
from cloud_receiver.web.portal.operator import Operator, _submit
from cloud_receiver.web.security import Caller, check_csrf

router = APIRouter(prefix="/ops", include_in_schema=False)
LOSS_DAYS = 14


# ------------------------------------------------------------------ areas
@router.get("/areas", response_class=HTMLResponse)
def areas(request: Request, caller: Operator) -> Response:
    caller.require(Action.DATA_READ)
    return render(request, "operator/areas.html", caller, names=reads.area_names(caller.storage))


@router.get("/areas/{name}", response_class=HTMLResponse)
def area(request: Request, caller: Operator, name: str, day: str = "") -> Response:
    from cloud_receiver.web import charts

    caller.require(Action.DATA_READ, Resource("area", name))
    chosen = common.parse_day(day, common.today() - dt.timedelta(days=1))
    try:
        view = reads.area(caller.storage, name, chosen, LOSS_DAYS, common.tz())
    except ReceiverError as exc:
        raise HTTPException(404, str(exc)) from None
    named = len(view.report.suspects) if view.report else 0
    caller.read("area loss and suspects", f"area:{name}", customers=named)
    g = common.gettext(request)
    chart = charts.bars(
        [f"{d.day:%m-%d}" for d in view.days],
        {"loss": [d.loss_kwh for d in view.days]},
        title=g.plain("Line loss per day (kWh)"), unit="kWh",
        names={"loss": g.plain("Loss")}, no_data=g.plain("No complete day in this range"),
    )  # fmt: skip
    return render(request, "operator/area.html", caller, view=view, chart=chart,
                  day=chosen.isoformat())  # fmt: skip


# ------------------------------------------------------------------ accounts
@router.get("/accounts", response_class=HTMLResponse)
def accounts(request: Request, caller: Operator) -> Response:
    caller.require(Action.PREPAY_READ)
    found = prepay.accounts(caller.storage)
    caller.read("account list", "account:*", customers=len(found))
    return render(request, "operator/accounts.html", caller, found=found)


@router.get("/accounts/{account_id}", response_class=HTMLResponse)
def account(request: Request, caller: Operator, account_id: str) -> Response:
    caller.require(Action.PREPAY_READ, caller.resource("account", account_id))
    acc = prepay.get_account(caller.storage, account_id)
    entries = prepay.ledger(caller.storage, account_id)[-100:]
    supply = reads.supply_of(caller.storage, acc.meter)
    caller.read("balance and ledger", f"account:{account_id}", customers=1)
    return render(request, "operator/account.html", caller, acc=acc, entries=entries[::-1],
                  active=supply.active(time.time()) if supply else [],
                  may_topup=bool(authorize(caller.principal, Action.PREPAY_TOPUP)))  # fmt: skip


@router.get("/accounts/{account_id}/topup", response_class=HTMLResponse)
def topup_confirm(request: Request, caller: Operator, account_id: str, amount: str) -> Response:
    caller.require(Action.PREPAY_TOPUP, caller.resource("account", account_id))
    value = prepay.money(amount, "top-up")
    acc = prepay.get_account(caller.storage, account_id)
    g = common.gettext(request)
    what = g.plain("top up account %(a)s (meter %(m)s) by %(v)s yuan", a=acc.account,
                   m=acc.meter, v=value)  # fmt: skip
    return render(request, "operator/confirm.html", caller, what=what, needed=0,
                  post=f"/ops/accounts/{account_id}/topup", fields={"amount": str(value)},
                  back=f"/ops/accounts/{account_id}")  # fmt: skip


@router.post("/accounts/{account_id}/topup")
def topup(request: Request, caller: Operator, account_id: str, amount: Annotated[str, Form()],
          csrf_token: Annotated[str, Form()] = "") -> Response:  # fmt: skip
    check_csrf(request, csrf_token)
    caller.require(Action.PREPAY_TOPUP, caller.resource("account", account_id))
    value = prepay.money(amount, "top-up")
    acc = prepay.topup(caller.storage, account_id, value, now=time.time(),
                       by=caller.principal.label)  # fmt: skip
    caller.record("change", str(Action.PREPAY_TOPUP), f"account:{account_id}",
                  detail={"amount": str(value), "balance_cents": acc.balance_cents})  # fmt: skip
    return see_other(f"/ops/accounts/{account_id}")


# ------------------------------------------------------------------ demand response
@router.get("/dr", response_class=HTMLResponse)
def dr_events(request: Request, caller: Operator) -> Response:
    caller.require(Action.DATA_READ)
    found = reads.dr_list(caller.storage, time.time())
    return render(request, "operator/dr.html", caller, found=found,
                  may_create=bool(authorize(caller.principal, Action.DR_EVENT)))  # fmt: skip


def _dr_params(group: str, start: str, end: str, limit_kw: str) -> dict[str, object]:
    zone = common.tz()
    try:
        t0 = int(dt.datetime.fromisoformat(start).replace(tzinfo=zone).timestamp())
        t1 = int(dt.datetime.fromisoformat(end).replace(tzinfo=zone).timestamp())
        Decimal(limit_kw)
    except (ValueError, ArithmeticError):
        raise HTTPException(422, "start/end: expected date and time; limit: kW") from None
    offset = dt.datetime.now(zone).strftime("%z")
    return {"id": dr.new_event_id(), "group": group.strip(), "start": t0, "end": t1,
            "limit_kw": limit_kw.strip(), "tz": f"{offset[:3]}:{offset[3:]}",
            "baseline_days": 10}  # fmt: skip


def _confirm_request(request: Request, caller: Caller, kind_name: str,
                     params: dict[str, object], post: str, fields: dict[str, str],
                     back: str) -> Response:  # fmt: skip
    kind = kinds.kind_of(kind_name)
    try:
        kind.check(caller.storage, params, None)
    except ReceiverError as exc:
        raise HTTPException(422, str(exc)) from None
    with caller.storage.read() as conn:
        conf = access_settings.load(conn)
    needed = kind.approvals(caller.storage, params, conf)  # it reads the storage itself
    return render(request, "operator/confirm.html", caller, what=kind.describe(params),
                  needed=needed, post=post, fields=fields, back=back)  # fmt: skip


@router.get("/dr/new", response_class=HTMLResponse)
def dr_confirm(request: Request, caller: Operator, group: str, start: str, end: str,
               limit_kw: str) -> Response:  # fmt: skip
    caller.require(Action.DR_EVENT)
    fields = {"group": group, "start": start, "end": end, "limit_kw": limit_kw}
    return _confirm_request(request, caller, "dr.event", _dr_params(**fields), "/ops/dr/new",
                            fields, "/ops/dr")  # fmt: skip


@router.post("/dr/new")
def dr_create(request: Request, caller: Operator, group: Annotated[str, Form()],
              start: Annotated[str, Form()], end: Annotated[str, Form()],
              limit_kw: Annotated[str, Form()],
              csrf_token: Annotated[str, Form()] = "") -> Response:  # fmt: skip
    check_csrf(request, csrf_token)
    req = _submit(caller, "dr.event", _dr_params(group, start, end, limit_kw))
    return see_other(f"/ops/requests/{req.id}")


# ------------------------------------------------------------------ rollouts
@router.get("/rollouts", response_class=HTMLResponse)
def rollouts(request: Request, caller: Operator) -> Response:
    caller.require(Action.FLEET_READ)
    return render(request, "operator/rollouts.html", caller,
                  found=rollout.status(caller.storage),
                  versions=sorted(rollout.stored_versions(caller.storage)),
                  may_start=bool(authorize(caller.principal, Action.ROLLOUT_START)))  # fmt: skip


def _rollout_params(version: str, stages: str, health: str) -> dict[str, object]:
    try:
        parsed = [rollout.Stage.parse(s.strip()) for s in stages.split(",") if s.strip()]
        window = float(health)
    except (ReceiverError, ValueError) as exc:
        raise HTTPException(422, f"stages/health window: {exc}") from None
    return {"version": version.strip(), "stages": [[s.name, s.target] for s in parsed],
            "health_window_s": window}  # fmt: skip


@router.get("/rollouts/new", response_class=HTMLResponse)
def rollout_confirm(request: Request, caller: Operator, version: str, stages: str,
                    health: str = "600") -> Response:  # fmt: skip
    caller.require(Action.ROLLOUT_START)
    fields = {"version": version, "stages": stages, "health": health}
    return _confirm_request(request, caller, "rollout.start",
                            _rollout_params(version, stages, health), "/ops/rollouts/new",
                            fields, "/ops/rollouts")  # fmt: skip


@router.post("/rollouts/new")
def rollout_start(request: Request, caller: Operator, version: Annotated[str, Form()],
                  stages: Annotated[str, Form()], health: Annotated[str, Form()] = "600",
                  csrf_token: Annotated[str, Form()] = "") -> Response:  # fmt: skip
    check_csrf(request, csrf_token)
    req = _submit(caller, "rollout.start", _rollout_params(version, stages, health))
    return see_other(f"/ops/requests/{req.id}")


# ------------------------------------------------------------------ feedback
@router.get("/feedback", response_class=HTMLResponse)
def feedback_list(request: Request, caller: Operator, status: str = "") -> Response:
    caller.require(Action.DATA_READ, Resource("feedback"))
    try:
        found, more = fb.listing(caller.storage, status=status or None, limit=200)
    except fb.FeedbackError as exc:
        raise HTTPException(422, str(exc)) from None
    caller.read("feedback list", "feedback:*", customers=len({f.account for f in found}))
    return render(request, "operator/feedback_list.html", caller, found=found, more=more,
                  status=status, counts=fb.counts(caller.storage))  # fmt: skip


@router.get("/feedback/{feedback_id}", response_class=HTMLResponse)
def feedback_page(request: Request, caller: Operator, feedback_id: int) -> Response:
    caller.require(Action.DATA_READ, Resource("feedback", str(feedback_id)))
    found = fb.get(caller.storage, feedback_id)
    caller.read("feedback", f"account:{found.account}", customers=1)
    return render(request, "operator/feedback.html", caller, item=found,
                  may_answer=bool(authorize(caller.principal, Action.FEEDBACK_ANSWER)))  # fmt: skip


@router.post("/feedback/{feedback_id}")
def feedback_answer(request: Request, caller: Operator, feedback_id: int,
                    message: Annotated[str, Form()] = "", resolve: Annotated[str, Form()] = "",
                    csrf_token: Annotated[str, Form()] = "") -> Response:  # fmt: skip
    check_csrf(request, csrf_token)
    caller.require(Action.FEEDBACK_ANSWER, Resource("feedback", str(feedback_id)))
    try:
        done = fb.write(caller.storage, feedback_id, author_kind=fb.OPERATOR,
                        author=caller.principal.name, body=message, now=time.time(),
                        resolve=bool(resolve))  # fmt: skip
    except fb.UnknownFeedback as exc:
        raise HTTPException(404, str(exc)) from None
    except fb.FeedbackError as exc:
        raise HTTPException(422, str(exc)) from None
    caller.record("change", str(Action.FEEDBACK_ANSWER), f"account:{done.account}",
                  detail={"feedback": done.id, "status": done.status})  # fmt: skip
    return see_other(f"/ops/feedback/{feedback_id}")


# ------------------------------------------------------------------ audit
@router.get("/audit", response_class=HTMLResponse)
def audit(request: Request, caller: Operator, kind: str = "", principal: str = "",
          limit: int = 200) -> Response:  # fmt: skip
    caller.require(Action.AUDIT_READ)
    from cloud_receiver.access.audit import KINDS

    if kind and kind not in KINDS:
        raise HTTPException(422, f"kind {kind!r}: expected one of {', '.join(KINDS)}")
    entries = reads.audit_entries(caller.storage, kind=kind, principal=principal,
                                  limit=max(1, min(limit, 2000)))  # fmt: skip
    return render(request, "operator/audit.html", caller, entries=entries, kinds=KINDS,
                  kind=kind, principal=principal)  # fmt: skip
