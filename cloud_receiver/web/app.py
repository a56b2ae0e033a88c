"""`create_app`: the portal and the API as one ASGI application.

The session middleware signs the cookie with a key derived from the server's secret
(HttpOnly, SameSite=Strict, Secure under TLS, lasting at most the access setting
``session-lifetime``); the storage is opened once (never created: the receiver's
service makes the database) and closed at shutdown.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from cryptography.fernet import Fernet
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware

from cloud_receiver.access import settings as access_settings
from cloud_receiver.access.policy import AccessError
from cloud_receiver.errors import NotFound, ReceiverError, StorageError
from cloud_receiver.storage import Storage, open_storage
from cloud_receiver.storage.series_cache import SeriesCache
from cloud_receiver.web import api, pages
from cloud_receiver.web.portal import customer, operator, operator_more
from cloud_receiver.web.security import RateLimiter, WebState, security_headers
from cloud_receiver.web.settings import WebSettings, derive, fernet_key, load_secret

SESSION_COOKIE = "mf_session"
STATIC = Path(__file__).parent / "static"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"detail": message}, status_code=status)


def create_app(settings: WebSettings, storage: Storage | None = None) -> FastAPI:
    """The application for ``settings`` (``storage``: one already open, for tests and
    benchmarks; otherwise the database is opened here)."""
    secret = load_secret(settings.secret_key_file)
    store = storage if storage is not None else open_storage(settings.db_url, create=False)
    with store.read() as conn:
        lifetime = access_settings.load(conn).session_lifetime

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        if storage is None:
            store.close()

    app = FastAPI(
        title="meterflow receiver API",
        version="1",
        description=api.DESCRIPTION,
        openapi_url="/api/openapi.json",
        docs_url=None,  # its page loads scripts from a CDN: nothing from elsewhere
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.web = WebState(
        settings,
        store,
        Fernet(fernet_key(secret)),
        RateLimiter(settings.login_attempts, settings.login_window_s),
        SeriesCache(store),
    )
    app.add_middleware(
        SessionMiddleware,
        secret_key=derive(secret, "cookie").hex(),
        session_cookie=SESSION_COOKIE,
        max_age=int(lifetime),
        same_site="strict",
        https_only=settings.secure,
    )

    app.middleware("http")(security_headers)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return _error(404, str(exc))

    @app.exception_handler(AccessError)
    async def denied(request: Request, exc: AccessError) -> JSONResponse:
        return _error(403, str(exc))  # audited where it was decided

    @app.exception_handler(StorageError)
    async def unavailable(request: Request, exc: StorageError) -> JSONResponse:
        return _error(503, str(exc))

    @app.exception_handler(ReceiverError)
    async def refused(request: Request, exc: ReceiverError) -> JSONResponse:
        # Bad input the application refused, naming the field (the CLI's exit 2), or
        # what the resource's state does not allow (a request approved already).
        return _error(422 if isinstance(exc, ValueError) else 409, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()
        ]
        return _error(422, "; ".join(parts) or "invalid request")

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.include_router(api.router)
    app.include_router(pages.router)
    for portal in (operator, operator_more, customer):  # the portal's pages (issue 21, 2-3)
        app.include_router(portal.router)
    return app
