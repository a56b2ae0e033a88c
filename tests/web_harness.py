"""The portal and API under test: a real uvicorn on a free port serving `create_app`
over a real database, driven with httpx; and a small world in that database (meters
with readings and events, prepaid accounts, customers, operators of every role, API
tokens)."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from helpers import Operators

from cloud_receiver.access import customers, tokens
from cloud_receiver.access.policy import Role
from cloud_receiver.applications import prepay
from cloud_receiver.applications.fleet.broker import free_port
from cloud_receiver.storage import MeterRecord, open_storage
from cloud_receiver.web.app import create_app
from cloud_receiver.web.settings import WebSettings
from contract.records import Event, Reading

DAY0 = 1767542400  # 2026-01-05 00:00 +08:00
CONCENTRATOR = "dc-web-1"
M1, M2, M3 = "000000000101", "000000000102", "000000000103"  # c1's, c2's, nobody's
PASSWORD = Operators.PASSWORD
OPERATOR_ROLES = ("viewer", "billing-clerk", "operator", "administrator")
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@contextlib.contextmanager
def serving(settings: WebSettings, **ssl: str) -> Iterator[str]:
    """uvicorn serving the app on a free port in a thread; its base URL."""
    port = free_port()
    config = uvicorn.Config(
        create_app(settings),
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        **ssl,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive(), "uvicorn stopped while starting"
        assert time.monotonic() < deadline, "uvicorn did not start in 30 s"
        time.sleep(0.02)
    try:
        yield f"{'https' if ssl else 'http'}://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@dataclass
class World:
    """What `build_world` put in the database: who can log in, and with what tokens."""

    db_url: str
    ops: Operators
    tokens: dict[str, str] = field(default_factory=dict)  # role or system name → token
    token_ids: dict[str, str] = field(default_factory=dict)


def build_world(db_url: str, tmp: Path) -> World:
    storage = open_storage(db_url)
    world = World(db_url, Operators(db_url, tmp / "sessions"))
    try:
        readings = [
            Reading(m, q, DAY0 + 900 * i, f"{100 + i}.{i:02d}{j}", unit, DAY0 + 900 * i + 5.5)
            for i in range(8)
            for j, m in enumerate((M1, M2, M3))
            for q, unit in (("energy_fwd_total", "kWh"), ("voltage_a", "V"))
        ]
        events = [
            Event("relay_state", "info", m, {"relay": "closed"}, DAY0 + 60) for m in (M1, M2, M3)
        ]
        storage.ingest(CONCENTRATOR, 1, 1, readings, events, DAY0 + 7200)
        storage.replace_archive([MeterRecord(m, "TA-1", "customer") for m in (M1, M2, M3)])
        now = time.time()
        for account, meter in (("A1", M1), ("A2", M2), ("A3", M3)):
            prepay.open_account(
                storage,
                account,
                meter,
                prepay.Tariff.parse(["flat=0.55"]),
                concentrator=CONCENTRATOR,
                now=now,
            )
        with storage.transaction() as tx:
            customers.add(
                tx, "c1", PASSWORD, meters=[M1], account_ids=[], language="en", by="test", now=now
            )
            customers.add(
                tx, "c2", PASSWORD, meters=[], account_ids=["A2"], language="zh", by="test", now=now
            )
    finally:
        storage.close()
    for role in OPERATOR_ROLES:
        world.ops.add(role.replace("-", ""), role)
    world.ops.add("operator2", "operator")
    storage = open_storage(db_url)
    try:
        with storage.transaction() as tx:
            for role in OPERATOR_ROLES:
                found, text = tokens.create(
                    tx,
                    "operator",
                    role.replace("-", ""),
                    None,
                    lifetime=3600,
                    note="",
                    by="test",
                    now=time.time(),
                )
                world.tokens[role], world.token_ids[role] = text, found.id
            for role in ("system", "billing-clerk"):
                name = f"sys-{role}"
                found, text = tokens.create(
                    tx,
                    "system",
                    name,
                    Role(role),
                    lifetime=3600,
                    note="",
                    by="test",
                    now=time.time(),
                )
                world.tokens[name], world.token_ids[name] = text, found.id
    finally:
        storage.close()
    return world


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found is not None, "no CSRF token in the page"
    return found.group(1)


def login(
    client: httpx.Client,
    name: str,
    *,
    kind: str = "operator",
    code: str | None = None,
    password: str = PASSWORD,
) -> httpx.Response:
    """Log in through the form (GET /login for the CSRF token, then POST it)."""
    token = csrf_of(client.get("/login").text)
    form = {
        "csrf_token": token,
        "name": name,
        "password": password,
        "kind": kind,
        "totp": code or "",
    }
    return client.post("/login", data=form)


def logged_in(base: str, world: World, name: str, kind: str = "operator") -> httpx.Client:
    client = httpx.Client(base_url=base, timeout=30)
    code = world.ops.code(name) if kind == "operator" else None
    response = login(client, name, kind=kind, code=code)
    assert response.status_code == 303, response.text
    return client


def me(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/api/v1/me")
    assert response.status_code == 200, response.text
    doc: dict[str, Any] = response.json()
    return doc
