"""The operators' pages (issue 21, item 2): the fleet, finding a meter, a meter's page
(interval curve for a chosen range, daily freezes, events, supply state and its
reasons, commands and their outcomes), and the relay actions with their confirmation
and the second operator's approval.

Every page checks the role through `Caller.require` (`cloud_receiver.access.policy`,
the one place) and audits a view of customer data before showing it. Actions go
through the code path of the command line: a relay order is a signed request
(`applications.requests.submit`, as ``cloud-receiver command relay-open``) that the
running service carries out once approved; approving is `access.requests.approve`.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Annotated

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from cloud_receiver.access import requests as queue
from cloud_receiver.access import settings as access_settings
from cloud_receiver.access.policy import AccessError, Action, authorize
from cloud_receiver.applications import requests as kinds
from cloud_receiver.applications.fleet import commands as fleet_commands
from cloud_receiver.errors import ReceiverError
from cloud_receiver.web.portal import common, reads
from cloud_receiver.web.portal.common import render, see_other
from cloud_receiver.web.security import Caller, check_csrf
from cloud_receiver.web.settings import WebSettings

router = APIRouter(prefix="/ops", include_in_schema=False)
Operator = Annotated[Caller, Depends(common.operator)]
RELAYS = {"open": "relay_open", "close": "relay_close"}


@router.get("", response_class=HTMLResponse)
def home(request: Request, caller: Operator) -> Response:
    return see_other("/ops/fleet")


@router.get("/fleet", response_class=HTMLResponse)
def fleet(request: Request, caller: Operator) -> Response:
    caller.require(Action.FLEET_READ)
    s: WebSettings = request.app.state.web.settings
    rows = reads.fleet(caller.storage, time.time(), s.collection_plan())
    return render(request, "operator/fleet.html", caller, rows=rows)


@router.get("/meters", response_class=HTMLResponse)
def meters(request: Request, caller: Operator, q: str = "") -> Response:
    caller.require(Action.DATA_READ)
    found = reads.find_meters(caller.storage, q) if q else []
    if len(found) == 1 and found[0].meter == q.strip():
        return see_other(f"/ops/meters/{found[0].meter}")
    return render(request, "operator/meters.html", caller, q=q, found=found)


def _range(since: str, until: str) -> tuple[int, int]:
    """The curve's range from the form: local dates, ``until`` inclusive (default: the
    last two days)."""
    zone = common.tz()
    last = common.parse_day(until, common.today())
    first = common.parse_day(since, last - dt.timedelta(days=1))
    if first > last:
        raise HTTPException(422, f"from {first} is after to {last}")
    start = int(dt.datetime.combine(first, dt.time(), zone).timestamp())
    end = int(dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), zone).timestamp())
    if end - start > reads.MAX_RANGE_S:
        raise HTTPException(422, "a curve covers at most 31 days: choose a shorter range")
    return start, end


@router.get("/meters/{meter}", response_class=HTMLResponse)
def meter(request: Request, caller: Operator, meter: str, since: str = "",
          until: str = "") -> Response:  # fmt: skip
    from cloud_receiver.web import charts

    caller.require(Action.DATA_READ, caller.resource("meter", meter))
    start, end = _range(since, until)
    st = caller.storage
    record = reads.record_of(st, meter)
    curve = reads.load_curve(st, meter, start, end)
    freezes = reads.freezes(st, meter, start - 7 * reads.DAY_S, end + reads.DAY_S)
    events = st.meter_events([meter], start, end)
    supply = reads.supply_of(st, meter)
    commands = reads.meter_commands(st, meter)
    caller.read("meter page", f"meter:{meter}", customers=1)
    g = common.gettext(request)
    chart = charts.curve(curve.points, title=g.plain("Load of meter %(m)s", m=meter), unit="kW",
                         tz=common.tz(), no_data=g.plain("No readings in this range"),
                         step_s=curve.step_s)  # fmt: skip
    now = time.time()
    first = dt.datetime.fromtimestamp(start, common.tz()).date()
    last = dt.datetime.fromtimestamp(end - 1, common.tz()).date()
    return render(request, "operator/meter.html", caller, meter=meter, record=record,
                  curve=curve, chart=chart, freezes=freezes, events=events, supply=supply,
                  active=supply.active(now) if supply else [], commands=commands,
                  since=first.isoformat(), until=last.isoformat(),
                  may_relay=bool(authorize(caller.principal, Action.COMMAND_RELAY)))  # fmt: skip


def _concentrator_of(caller: Caller, meter: str) -> str:
    from cloud_receiver.storage import ownership

    with caller.storage.read() as conn:
        history = ownership.histories(conn, [meter]).get(meter, [])
    owner = ownership.owner_at(history, int(time.time()))
    if owner is None:
        owner = reads.last_concentrator(caller.storage, meter)
    if owner is None:
        raise HTTPException(409, f"meter {meter}: no concentrator is known for it")
    return owner


def _relay_params(caller: Caller, meter: str, action: str) -> dict[str, object]:
    if action not in RELAYS:
        raise HTTPException(422, f"action {action!r}: expected open or close")
    return {"id": fleet_commands.new_command_id(), "concentrator": _concentrator_of(caller, meter),
            "action": RELAYS[action], "meters": [meter], "params": {}, "not_before": None,
            "valid_for_s": 3600.0}  # fmt: skip


@router.get("/meters/{meter}/relay", response_class=HTMLResponse)
def relay_confirm(request: Request, caller: Operator, meter: str, action: str) -> Response:
    """What the order will do and whether a second operator must approve it, before it
    is asked for."""
    caller.require(Action.COMMAND_RELAY, caller.resource("meter", meter))
    params = _relay_params(caller, meter, action)
    with caller.storage.read() as conn:
        conf = access_settings.load(conn)
    kind = kinds.kind_of("command")
    needed = kind.approvals(caller.storage, params, conf)
    return render(request, "operator/confirm.html", caller, what=kind.describe(params),
                  needed=needed, post=f"/ops/meters/{meter}/relay",
                  fields={"action": action}, back=f"/ops/meters/{meter}")  # fmt: skip


@router.post("/meters/{meter}/relay")
def relay(request: Request, caller: Operator, meter: str, action: Annotated[str, Form()],
          csrf_token: Annotated[str, Form()] = "") -> Response:  # fmt: skip
    check_csrf(request, csrf_token)
    caller.require(Action.COMMAND_RELAY, caller.resource("meter", meter))
    req = _submit(caller, "command", _relay_params(caller, meter, action))
    return see_other(f"/ops/requests/{req.id}")


def _submit(caller: Caller, kind: str, params: dict[str, object]) -> queue.Request:
    """Queue a request signed with the operator's session key (the CLI's path)."""
    assert caller.key is not None
    try:
        return kinds.submit(caller.storage, caller.principal, caller.key, kind, params,
                            now=time.time())  # fmt: skip
    except AccessError as exc:  # the role may not (audited by `submit`)
        raise HTTPException(403, str(exc)) from None
    except ReceiverError as exc:  # what it asks cannot be done (the message says why)
        raise HTTPException(422, str(exc)) from None


@router.get("/requests", response_class=HTMLResponse)
def request_list(request: Request, caller: Operator, status: str = "") -> Response:
    caller.require(Action.REQUEST_READ)
    with caller.storage.read() as conn:
        found = queue.listing(conn, status or None, limit=100)
    return render(request, "operator/requests.html", caller, found=found,
                  describe=kinds.describe, status=status)  # fmt: skip


@router.get("/requests/{request_id}", response_class=HTMLResponse)
def request_page(request: Request, caller: Operator, request_id: int) -> Response:
    """A request: what it asks, its status, its approvals, and (to another operator who
    may) the approve button; once carried out, the command and its outcome."""
    caller.require(Action.REQUEST_READ)
    with caller.storage.read() as conn:
        req = queue.get(conn, request_id)
        approvals = queue.approvals_of(conn, request_id)
    may_approve = req.status == "awaiting_approval" and bool(
        authorize(caller.principal, Action.REQUEST_APPROVE, req.resource())
    )
    command = None
    if req.kind == "command" and req.status == "done" and req.result:
        found = caller.storage.commands(command_id=str(req.result.get("id")), limit=1)
        command = found[0] if found else None
    return render(request, "operator/request.html", caller, req=req, approvals=approvals,
                  what=kinds.describe(req), may_approve=may_approve, command=command)  # fmt: skip


@router.post("/requests/{request_id}/approve")
def approve(request: Request, caller: Operator, request_id: int,
            csrf_token: Annotated[str, Form()] = "") -> Response:  # fmt: skip
    check_csrf(request, csrf_token)
    assert caller.key is not None
    try:
        queue.approve(caller.storage, caller.principal, caller.key, request_id, time.time())
    except AccessError as exc:  # not a second operator who may, or a forged request
        raise HTTPException(403, str(exc)) from None
    except ReceiverError as exc:  # not awaiting approval any more, approved already
        raise HTTPException(409, str(exc)) from None
    return see_other(f"/ops/requests/{request_id}")
