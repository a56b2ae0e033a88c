"""The portal's pages: the login form (operators and customers), logout, and the home
page each kind of caller lands on. Templates are in ``templates/`` (Jinja2, autoescaped);
every form carries the session's CSRF token.

`render` is what every page uses: it gives the template the caller, the CSRF token and
the language, so pages built on this skeleton need not repeat them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from cloud_receiver.access import customers, sessions
from cloud_receiver.access import settings as access_settings
from cloud_receiver.access.policy import AccessError
from cloud_receiver.web import security
from cloud_receiver.web.security import Caller, check_csrf, csrf_token, optional_caller, state
from cloud_receiver.web.settings import LANGUAGES

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
router = APIRouter(include_in_schema=False)


def language(request: Request) -> str:
    """``?lang=`` (remembered in the session), else the session's, else the server's."""
    asked = request.query_params.get("lang")
    if asked in LANGUAGES:
        request.session["lang"] = asked
        return asked
    stored = request.session.get("lang")
    return str(stored) if stored in LANGUAGES else state(request).settings.language


def render(
    request: Request,
    template: str,
    caller: Caller | None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """A page from ``template`` with the caller, the CSRF token and the language."""
    doc = {"caller": caller, "csrf_token": csrf_token(request), "lang": language(request)}
    return TEMPLATES.TemplateResponse(
        request, template, {**doc, **context}, status_code=status_code
    )


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> Response:
    return render(request, "login.html", None)


@router.post("/login", response_class=HTMLResponse)
def login(
    request: Request,
    name: Annotated[str, Form()],
    password: Annotated[str, Form()],
    csrf_token: Annotated[str, Form()] = "",
    totp: Annotated[str, Form()] = "",
    kind: Annotated[str, Form()] = "operator",
) -> Response:
    """Password (and a TOTP code for the roles that need one), rate-limited per client
    address, each account locked out after repeated failures (the access settings)."""
    check_csrf(request, csrf_token)
    security.limit(request)
    st = state(request)
    where = f"web:{security.client_address(request)}"
    now = time.time()
    try:
        if kind == "customer":
            customers.login(st.storage, name, password, where=where, now=now)
            with st.storage.read() as conn:
                lifetime = access_settings.load(conn).session_lifetime
            security.start_customer_session(request, name, lifetime)
        else:
            done = sessions.login(st.storage, name, password, totp or None, where=where, now=now)
            security.start_operator_session(request, done)
    except AccessError as exc:
        return render(request, "login.html", None, 401, error=str(exc), name=name, kind=kind)
    return RedirectResponse("/", status_code=303)


@router.post("/logout")
def logout(
    request: Request,
    caller: Annotated[Caller | None, Depends(optional_caller)],
    csrf_token: Annotated[str, Form()] = "",
) -> Response:
    check_csrf(request, csrf_token)
    if caller is not None and caller.principal.kind == "operator" and caller.key is not None:
        sessions.logout(caller.storage, caller.principal, caller.key, time.time())
    elif caller is not None:
        if caller.is_customer:  # a copy of the cookie is void from now on
            with caller.storage.transaction() as tx:
                customers.end_sessions(tx, caller.principal.name, time.time())
        caller.record("logout", "logout", caller.principal.label)
    request.session.clear()
    return RedirectResponse("/login", status_code=303)


@router.get("/", response_class=HTMLResponse)
def home(request: Request, caller: Annotated[Caller | None, Depends(optional_caller)]) -> Response:
    if caller is None:
        return RedirectResponse("/login", status_code=303)
    return render(request, "home.html", caller)
