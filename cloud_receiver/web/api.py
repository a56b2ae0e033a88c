"""``/api/v1``: the HTTP JSON API for utility systems, described by the OpenAPI
document at ``/api/openapi.json`` (generated from these routes and `schemas`).

Every call is made by a caller (`security`: an API token, or a portal session) and
audited like a command line call: each view of data as a ``read`` entry (customer data
counts towards the abnormal-access alert), each refusal as ``denied``, each request,
approval and top-up by the application code that carries it out. Commands and other
requests go through `cloud_receiver.applications.requests.submit` and
`cloud_receiver.access.requests.approve`, the command line's own code path and checks.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated, Any

import click
from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import JSONResponse

from clitools.timefmt import parse_time
from cloud_receiver.access import customers as customer_accounts
from cloud_receiver.access import requests as queue
from cloud_receiver.access.policy import Action, Principal, Resource
from cloud_receiver.applications import payments, prepay
from cloud_receiver.applications import requests as kinds
from cloud_receiver.applications.fleet import commands as fleet_commands
from cloud_receiver.storage import completeness as collection
from cloud_receiver.web import data, schemas
from cloud_receiver.web.security import Caller, check_api_csrf, csrf_token, current_caller, state
from contract import quantities

DESCRIPTION = """The meterflow receiver's data for utility systems (meter-data management,
billing, payment providers). Authenticate with `Authorization: Bearer mft_…` (a token from
`cloud-receiver token create`, scoped by role, revocable). Values are exact decimal text;
times Unix seconds; lists are paged: pass `next` back as `after`. Every call is audited."""

ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": schemas.Error, "description": "No valid session or token."},
    403: {"model": schemas.Error, "description": "The role may not, or not this resource."},
    404: {"model": schemas.Error, "description": "No such resource."},
    409: {"model": schemas.Error, "description": "Its state does not allow it (approved already)."},
    422: {"model": schemas.Error, "description": "A parameter is invalid (named)."},
}
router = APIRouter(prefix="/api/v1", tags=["v1"], responses=ERRORS)
CallerDep = Annotated[Caller, Depends(current_caller)]
Limit = Annotated[int, Query(ge=1, le=data.MAX_LIMIT, description="Items per page.")]
After = Annotated[str | None, Query(description="The `next` of the previous page.")]
Since = Annotated[str | None, Query(description="From (ISO 8601 or Unix seconds), inclusive.")]
Until = Annotated[str | None, Query(description="Before (ISO 8601 or Unix seconds).")]


def _range(since: str | None, until: str | None) -> tuple[int | None, int | None]:
    try:
        first = None if since is None else parse_time(since)
        end = None if until is None else parse_time(until)
    except click.BadParameter as exc:
        raise HTTPException(422, f"since/until: {exc.message}") from None
    if first is not None and end is not None and first > end:
        raise HTTPException(422, f"since {since} is after until {until}: nothing can match")
    return first, end


def _own(caller: Caller, kind: str, name: str, action: Action) -> Resource:
    """The resource named with its customer, checked for ``action`` (403 if not)."""
    resource = caller.resource(kind, name)
    caller.require(action, resource)
    return resource


def _paged(page: data.Page) -> dict[str, Any]:
    return page.as_dict()


def _customer_scope(caller: Caller) -> tuple[list[str], list[str]] | None:
    if not caller.is_customer:
        return None
    with caller.storage.read() as conn:
        name = caller.principal.name
        return (customer_accounts.meters_of(conn, name), customer_accounts.accounts_of(conn, name))


# ------------------------------------------------------------------ who am I
@router.get("/me", response_model=schemas.Me, summary="Who the caller is")
def me(request: Request, caller: CallerDep) -> dict[str, Any]:
    p = caller.principal
    scope = _customer_scope(caller)
    return {
        "principal": p.label,
        "kind": p.kind,
        "name": p.name,
        "role": str(p.role),
        "via": caller.via,
        "meters": None if scope is None else scope[0],
        "accounts": None if scope is None else scope[1],
        "csrf_token": csrf_token(request) if caller.via == "session" else None,
    }


# ------------------------------------------------------------------ meters and readings
@router.get("/meters", response_model=schemas.MeterPage, summary="Meters in the archive")
def meters(caller: CallerDep, limit: Limit = data.DEFAULT_LIMIT, after: After = None) -> Any:
    """Operators: every archive meter; a customer: their own."""
    scope = _customer_scope(caller)
    caller.require(
        Action.DATA_READ,
        caller.resource("customer", caller.principal.name)
        if scope is not None
        else Resource("all"),
    )
    page = data.meter_list(caller.storage, None if scope is None else scope[0], limit, after)
    owners = {r["customer"] for r in page.rows if r["customer"]}
    caller.read("meters", "meters", customers=len(owners), count=len(page.rows))
    return _paged(page)


@router.get(
    "/meters/{meter}/readings",
    response_model=schemas.ReadingPage,
    summary="A meter's readings in a time range",
)
def readings(
    meter: str,
    caller: CallerDep,
    since: Since = None,
    until: Until = None,
    quantity: Annotated[list[str] | None, Query(description="Only these quantities.")] = None,
    limit: Limit = data.DEFAULT_LIMIT,
    after: After = None,
) -> Any:
    """Readings by slot then quantity, in canonical quantities, values exact."""
    target = _own(caller, "meter", meter, Action.DATA_READ)
    first, end = _range(since, until)
    for name in quantity or ():
        try:
            quantities.get(name)
        except quantities.UnknownQuantity as exc:
            raise HTTPException(422, f"quantity: {exc}") from None
    page = data.readings_page(
        caller.storage,
        meter,
        since=first,
        until=end,
        quantities=quantity or (),
        limit=limit,
        after=after,
    )
    caller.read("readings", str(target), customers=1, since=first, until=end)
    return _paged(page)


@router.get("/meters/{meter}/events", response_model=schemas.EventPage, summary="A meter's events")
def meter_events(
    meter: str,
    caller: CallerDep,
    since: Since = None,
    until: Until = None,
    limit: Limit = data.DEFAULT_LIMIT,
    after: After = None,
) -> Any:
    target = _own(caller, "meter", meter, Action.DATA_READ)
    first, end = _range(since, until)
    page = data.events_page(caller.storage, meter, since=first, until=end, limit=limit, after=after)
    caller.read("events", str(target), customers=1, since=first, until=end)
    return _paged(page)


# ------------------------------------------------------------------ accounts
@router.get("/accounts", response_model=list[schemas.Account], summary="Prepaid accounts")
def accounts(caller: CallerDep) -> Any:
    """Operators who may read balances: every account; a customer: their own."""
    scope = _customer_scope(caller)
    caller.require(
        Action.PREPAY_READ,
        caller.resource("customer", caller.principal.name)
        if scope is not None
        else Resource("all"),
    )
    found = data.account_list(caller.storage, None if scope is None else scope[1])
    caller.read("accounts", "accounts", customers=len(found), count=len(found))
    return found


@router.get("/accounts/{account}", response_model=schemas.Account, summary="An account")
def account(account: str, caller: CallerDep) -> Any:
    target = _own(caller, "account", account, Action.PREPAY_READ)
    found = data.account(caller.storage, account)
    caller.read("balance", str(target), customers=1)
    return found


@router.get(
    "/accounts/{account}/ledger", response_model=schemas.LedgerPage, summary="An account's ledger"
)
def account_ledger(
    account: str,
    caller: CallerDep,
    since: Since = None,
    until: Until = None,
    limit: Limit = data.DEFAULT_LIMIT,
    after: After = None,
) -> Any:
    target = _own(caller, "account", account, Action.PREPAY_READ)
    first, end = _range(since, until)
    page = data.ledger_page(
        caller.storage, account, since=first, until=end, limit=limit, after=after
    )
    caller.read("ledger", str(target), customers=1, since=first, until=end)
    return _paged(page)


@router.post(
    "/accounts/{account}/topups",
    response_model=schemas.TopupOut,
    status_code=201,
    responses={
        200: {"model": schemas.TopupOut, "description": "Replayed: credited before."},
        409: {"model": schemas.Error, "description": "Reference used otherwise."},
    },
    summary="A payment provider's top-up (idempotent by its reference)",
)
def topup(account: str, body: schemas.TopupIn, request: Request, caller: CallerDep) -> Any:
    """Credit the account once per provider reference; a retry answers 200 with
    ``replayed``. A cut-off supply is restored as after any top-up."""
    check_api_csrf(request, caller)
    target = _own(caller, "account", account, Action.PREPAY_TOPUP)
    amount = prepay.money(body.amount, "amount")
    done = payments.pay(
        caller.storage,
        account,
        amount,
        reference=body.reference,
        provider=body.provider,
        now=time.time(),
        by=caller.principal.label,
    )
    caller.record(
        "change",
        str(Action.PREPAY_TOPUP),
        str(target),
        outcome="replayed" if done.replayed else "ok",
        detail={
            "amount": str(amount),
            "reference": body.reference,
            "provider": body.provider,
            "balance_cents": done.account.balance_cents,
        },
    )
    doc = {
        "account": data.account_doc(done.account),
        "reference": done.reference,
        "amount": f"{done.amount:.2f}",
        "replayed": done.replayed,
    }
    return JSONResponse(doc, status_code=200 if done.replayed else 201)


# ------------------------------------------------------------------ commands
@router.get("/commands", response_model=list[schemas.Command], summary="Commands issued")
def commands(
    caller: CallerDep,
    concentrator: str | None = None,
    status: str | None = None,
    since: Since = None,
    until: Until = None,
    limit: Limit = data.DEFAULT_LIMIT,
) -> Any:
    caller.require(Action.FLEET_READ)
    first, end = _range(since, until)
    found = data.command_list(
        caller.storage,
        concentrator=concentrator,
        status=status,
        since=first,
        until=end,
        limit=limit,
    )
    caller.read("commands", "commands", customers=0, count=len(found))
    return found


@router.get("/commands/{command_id}", response_model=schemas.CommandDetail, summary="A command")
def command(command_id: str, caller: CallerDep) -> Any:
    """A command and what became of it (its log)."""
    caller.require(Action.FLEET_READ)
    found = data.command(caller.storage, command_id)
    caller.read("command", f"command:{command_id}", customers=0)
    return found


# ------------------------------------------------------------------ completeness
Day = Annotated[dt.date | None, Query(description="A local day, YYYY-MM-DD.")]


@router.get(
    "/completeness",
    response_model=schemas.Completeness,
    summary="Collection completeness (采集成功率) by day, concentrator, area, meter",
)
def completeness(
    request: Request,
    caller: CallerDep,
    day: Day = None,
    since: Day = None,
    until: Annotated[dt.date | None, Query(description="The day after the last one.")] = None,
    concentrator: str | None = None,
    area: str | None = None,
    meter: str | None = None,
    incomplete_only: bool = False,
    limit: Limit = data.DEFAULT_LIMIT,
) -> Any:
    """What `cloud-receiver completeness --json` prints: of the interval readings due from
    the archive's meters, the share received (live, recovered, late), with the meters'
    days (``incomplete_only``: those that fell short). Default: today."""
    scope = next((Resource(k, v) for k, v in (("meter", meter), ("area", area),
                  ("concentrator", concentrator)) if v is not None), Resource("all"))  # fmt: skip
    caller.require(Action.FLEET_READ, scope)
    plan = state(request).settings.collection_plan()
    now = time.time()
    if day is not None and (since is not None or until is not None):
        raise HTTPException(422, "day is one day: give it, or since/until, not both")
    first = day or since or plan.day_of(now)
    one = dt.timedelta(days=1)
    end = first + one if day else until or max(first, plan.day_of(now)) + one
    if end <= first:
        raise HTTPException(422, f"until {end} must be after since {first} (until is excluded)")
    if (end - first).days > 31:
        raise HTTPException(422, f"since {first} to until {end}: at most 31 days a call")
    with caller.storage.read() as conn:
        report = collection.compute(conn, plan, first, end, now, meter=meter, area=area,
                                    concentrator=concentrator)  # fmt: skip
    rows = report.incomplete() if incomplete_only else report.rows
    caller.read("completeness", str(scope), customers=0, since=report.since, until=report.until)
    return collection.document(report, rows[:limit], max(0, len(rows) - limit))


def _operator(caller: Caller, what: str) -> Any:
    """Requests are an accountable operator's: a session or an operator's token."""
    if caller.principal.kind != "operator" or caller.key is None:
        reason = (
            f"{caller.principal.label}: only an operator {what} (log in, or an operator's token)"
        )
        caller.record("denied", what, "requests", outcome="denied", detail={"reason": reason})
        raise HTTPException(403, reason)
    return caller.key


def _submit(caller: Caller, kind: str, params: dict[str, Any]) -> dict[str, Any]:
    key = _operator(caller, "asks for requests")
    req = kinds.submit(caller.storage, caller.principal, key, kind, params, now=time.time())
    return data.request(caller.storage, req.id)


@router.post(
    "/commands", response_model=schemas.Request, status_code=202, summary="Ask for a command"
)
def command_create(body: schemas.CommandIn, request: Request, caller: CallerDep) -> Any:
    """Queue a command request, as `cloud-receiver command` does; the running service
    signs and sends it (once a second operator approved it, where that is needed)."""
    check_api_csrf(request, caller)
    params = {
        "id": fleet_commands.new_command_id(),
        "concentrator": body.concentrator,
        "action": body.action,
        "meters": body.meters,
        "params": body.params,
        "not_before": None if body.not_before is None else int(body.not_before),
        "valid_for_s": body.valid_for_s,
    }
    return _submit(caller, "command", params)


@router.post(
    "/requests", response_model=schemas.Request, status_code=202, summary="Ask for a request"
)
def request_create(body: schemas.RequestIn, request: Request, caller: CallerDep) -> Any:
    """Any request the command line can queue without an attachment, by kind."""
    check_api_csrf(request, caller)
    return _submit(caller, body.kind, body.params)


@router.get("/requests", response_model=list[schemas.Request], summary="Requests")
def request_list(
    caller: CallerDep,
    status: Annotated[str | None, Query(description=", ".join(queue.STATUSES))] = None,
    limit: Limit = 200,
) -> Any:
    caller.require(Action.REQUEST_READ)
    if status is not None and status not in queue.STATUSES:
        raise HTTPException(422, f"status {status!r}: expected one of {', '.join(queue.STATUSES)}")
    found = data.request_list(caller.storage, status, limit)
    caller.read("requests", "requests", customers=0, count=len(found))
    return found


@router.get("/requests/{request_id}", response_model=schemas.Request, summary="A request's status")
def request_status(request_id: int, caller: CallerDep) -> Any:
    caller.require(Action.REQUEST_READ)
    found = data.request(caller.storage, request_id)
    caller.read("request", f"request:{request_id}", customers=0)
    return found


@router.post(
    "/requests/{request_id}/approve", response_model=schemas.Request, summary="Approve a request"
)
def request_approve(request_id: int, request: Request, caller: CallerDep) -> Any:
    """A second operator's approval, as `cloud-receiver approve` gives it (an archive
    change is then carried out at once, the rest by the running service)."""
    check_api_csrf(request, caller)
    key = _operator(caller, "approves requests")
    req = queue.approve(caller.storage, caller.principal, key, request_id, time.time())
    kind = kinds.KINDS.get(req.kind)
    if req.status == "ready" and kind is not None and not kind.needs:
        kinds.execute_ready(
            caller.storage,
            kinds.Keys(),
            time.time(),
            only=req.id,
            by=Principal.system("web", caller.principal.origin),
        )
    return data.request(caller.storage, request_id)


@router.post(
    "/requests/{request_id}/cancel", response_model=schemas.Request, summary="Cancel a request"
)
def request_cancel(request_id: int, request: Request, caller: CallerDep) -> Any:
    check_api_csrf(request, caller)
    key = _operator(caller, "cancels requests")
    queue.cancel(caller.storage, caller.principal, key, request_id, time.time())
    return data.request(caller.storage, request_id)
