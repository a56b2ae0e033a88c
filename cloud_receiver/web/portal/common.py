"""What the operators' and the customers' pages share: rendering with the language's
catalogue (`cloud_receiver.web.i18n`), the site's time zone, range parsing, and the
redirects and error pages a form-driven portal needs (no JavaScript anywhere)."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from clitools.timefmt import site_tz
from cloud_receiver.web import i18n, pages
from cloud_receiver.web.security import Caller, optional_caller


def tz() -> dt.timezone:
    return site_tz()


def gettext(request: Request) -> i18n.Gettext:
    """The request's catalogue, for text a page builds itself (chart titles)."""
    return i18n.Gettext(pages.language(request))


def render(request: Request, name: str, caller: Caller | None, status_code: int = 200,
           **context: Any) -> HTMLResponse:  # fmt: skip
    """`pages.render` with ``_`` (the language's catalogue) and the formatting helpers."""
    lang = pages.language(request)
    zone = tz()
    helpers = {
        "_": i18n.Gettext(lang),
        "money": lambda cents: i18n.money(int(cents)),
        "when": lambda t, date_only=False: i18n.when(t, zone, date_only=date_only),
        "languages": i18n.NAMES,
        "path": request.url.path,
        "query": dict(request.query_params),
        "now": time.time(),
    }
    return pages.render(request, name, caller, status_code, **helpers, **context)


def see_other(url: str) -> RedirectResponse:
    """After a form: the page that shows its outcome (the browser's back and reload
    never post twice)."""
    return RedirectResponse(url, status_code=303)


def operator(request: Request) -> Caller:
    """A dependency of every operator page: a logged-in operator (customers get 403,
    audited, as for the API's operator lists); nobody logged in is sent to /login."""
    caller = optional_caller(request)
    if caller is None:
        raise HTTPException(303, "log in first", headers={"Location": "/login"})
    if caller.is_customer:
        caller.record("denied", "operator.pages", request.url.path, outcome="denied",
                      detail={"reason": "customers see only their own data"})  # fmt: skip
        raise HTTPException(403, f"{caller.principal.label}: customers see only their own data")
    return caller


def customer(request: Request) -> Caller:
    """A dependency of every customer page: a logged-in customer."""
    caller = optional_caller(request)
    if caller is None:
        raise HTTPException(303, "log in first", headers={"Location": "/login"})
    if not caller.is_customer:
        raise HTTPException(303, "operators use the operator pages", headers={"Location": "/ops"})
    return caller


def parse_day(text: str | None, default: dt.date) -> dt.date:
    """``YYYY-MM-DD`` from a form (an empty field: ``default``)."""
    if not text:
        return default
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise HTTPException(422, f"date {text!r}: expected YYYY-MM-DD") from None


def parse_month(text: str | None, default: dt.date) -> dt.date:
    """``YYYY-MM`` from a form: the first day of that month."""
    if not text:
        return default.replace(day=1)
    try:
        return dt.date.fromisoformat(f"{text}-01")
    except ValueError:
        raise HTTPException(422, f"month {text!r}: expected YYYY-MM") from None


def next_month(first: dt.date) -> dt.date:
    return (first.replace(day=28) + dt.timedelta(days=4)).replace(day=1)


def today() -> dt.date:
    return dt.datetime.now(tz()).date()
