"""The HTTP API (issue 21, items 4 and 5): each role against each endpoint, a customer
against every other customer's id, CSRF, lockout and rate limiting, the audit of every
view of customer data, idempotent top-ups, commands through the CLI's request path;
served by a real uvicorn over a real SQLite file, driven with httpx."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from web_harness import (
    CONCENTRATOR,
    M1,
    M2,
    M3,
    PASSWORD,
    World,
    bearer,
    build_world,
    csrf_of,
    logged_in,
    login,
    me,
    serving,
)

from cloud_receiver.access.policy import Principal
from cloud_receiver.applications import requests as kinds
from cloud_receiver.applications.fleet import commands as fleet_commands
from cloud_receiver.storage import audit as chain
from cloud_receiver.storage import open_storage
from cloud_receiver.web.settings import WebSettings
from contract import commands as wire_commands

CALLERS = ("viewer", "billing-clerk", "operator", "administrator", "sys-system",
           "sys-billing-clerk", "customer")  # fmt: skip
READERS = {"viewer", "billing-clerk", "operator", "administrator"}
_refs = itertools.count()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    tmp = tmp_path_factory.mktemp("web")
    return build_world(f"sqlite:///{tmp / 'r.db'}", tmp)


@pytest.fixture(scope="module")
def base(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    secret = tmp_path_factory.mktemp("key") / "web.key"
    with serving(WebSettings(world.db_url, secret, login_attempts=10_000)) as url:
        yield url


@pytest.fixture(scope="module")
def clients(world: World, base: str) -> Iterator[dict[str, httpx.Client]]:
    """One client per caller: operators' and systems' tokens, customer c1's session."""
    made = {name: httpx.Client(base_url=base, timeout=30, headers=bearer(world.tokens[name]))
            for name in CALLERS if name != "customer"}  # fmt: skip
    made["customer"] = logged_in(base, world, "c1", "customer")
    made["operator2"] = logged_in(base, world, "operator2")
    yield made
    for client in made.values():
        client.close()


def _csrf(client: httpx.Client) -> dict[str, str]:
    """A cookie caller's X-CSRF-Token (a token caller needs none)."""
    if "authorization" in client.headers:
        return {}
    return {"X-CSRF-Token": str(me(client)["csrf_token"])}


def _relay_open_request(client: httpx.Client, meters: int = 11) -> int:
    """A relay-open of more meters than relay-open-approval-above: awaits approval."""
    body = {"concentrator": CONCENTRATOR, "action": "relay_open",
            "meters": [f"{900000000000 + i:012d}" for i in range(meters)]}  # fmt: skip
    done = client.post("/api/v1/commands", json=body, headers=_csrf(client))
    assert done.status_code == 202, done.text
    assert done.json()["status"] == "awaiting_approval"
    return int(done.json()["id"])


# ------------------------------------------------------------------ the role table
def _call(name: str, c: dict[str, httpx.Client], endpoint: str) -> httpx.Response:
    client = c[name]
    h = _csrf(client) if endpoint.startswith("POST") else {}
    command = {"concentrator": CONCENTRATOR, "action": "time_sync"}
    match endpoint:
        case "GET me":
            return client.get("/api/v1/me")
        case "GET meters":
            return client.get("/api/v1/meters")
        case "GET readings":
            return client.get(f"/api/v1/meters/{M1}/readings")
        case "GET events":
            return client.get(f"/api/v1/meters/{M1}/events")
        case "GET accounts":
            return client.get("/api/v1/accounts")
        case "GET account":
            return client.get("/api/v1/accounts/A1")
        case "GET ledger":
            return client.get("/api/v1/accounts/A1/ledger")
        case "POST topup":
            body = {"amount": "1.00", "reference": f"role-{next(_refs)}", "provider": "test"}
            return client.post("/api/v1/accounts/A1/topups", json=body, headers=h)
        case "GET commands":
            return client.get("/api/v1/commands")
        case "GET command":
            return client.get("/api/v1/commands/no-such-command")
        case "GET completeness":
            return client.get("/api/v1/completeness", params={"area": "A-1"})
        case "POST commands":
            return client.post("/api/v1/commands", json=command, headers=h)
        case "POST requests":
            params = {**command, "id": fleet_commands.new_command_id(), "meters": [],
                      "params": {}, "not_before": None, "valid_for_s": 3600}  # fmt: skip
            return client.post("/api/v1/requests", json={"kind": "command", "params": params},
                               headers=h)  # fmt: skip
        case "GET requests":
            return client.get("/api/v1/requests")
        case "GET request":
            return client.get("/api/v1/requests/1")
        case "POST approve":
            rid = _relay_open_request(c["operator2"])
            return client.post(f"/api/v1/requests/{rid}/approve", headers=h)
        case "POST cancel":
            rid = _relay_open_request(c["operator2"])
            return client.post(f"/api/v1/requests/{rid}/cancel", headers=h)
    raise AssertionError(endpoint)


_ALL = set(CALLERS)
_PREPAY_READ = READERS | {"sys-billing-clerk", "customer"}
_FLEET_READ = READERS | {"sys-system", "sys-billing-clerk"}
# endpoint → the callers it answers (2xx, or 404 for a command id that does not exist)
ALLOWED: dict[str, set[str]] = {
    "GET me": _ALL,
    "GET meters": _ALL,
    "GET readings": _ALL,
    "GET events": _ALL,
    "GET accounts": _PREPAY_READ,
    "GET account": _PREPAY_READ,
    "GET ledger": _PREPAY_READ,
    "POST topup": {"billing-clerk", "administrator", "sys-billing-clerk"},
    "GET commands": _FLEET_READ,
    "GET command": _FLEET_READ,
    "GET completeness": _FLEET_READ,
    "POST commands": {"operator", "administrator"},
    "POST requests": {"operator", "administrator"},
    "GET requests": READERS | {"sys-billing-clerk"},
    "GET request": READERS | {"sys-billing-clerk"},
    "POST approve": {"operator", "administrator"},
    "POST cancel": {"administrator"},  # not their own: only an administrator
}


@pytest.mark.parametrize("endpoint", list(ALLOWED))
def test_each_role_against_each_endpoint(
    endpoint: str, clients: dict[str, httpx.Client], world: World
) -> None:
    for name in CALLERS:
        done = _call(name, clients, endpoint)
        if name in ALLOWED[endpoint]:
            assert done.status_code in (200, 201, 202, 404), (name, endpoint, done.text)
            if done.status_code == 404:
                assert endpoint == "GET command", (name, done.text)
        else:
            assert done.status_code == 403, (name, endpoint, done.status_code, done.text)
            assert done.json()["detail"], done.text


def test_without_a_session_or_token_nothing_answers_but_the_document(base: str) -> None:
    with httpx.Client(base_url=base) as anon:
        for endpoint in ("/api/v1/me", "/api/v1/meters", f"/api/v1/meters/{M1}/readings",
                         "/api/v1/accounts", "/api/v1/commands", "/api/v1/requests"):  # fmt: skip
            done = anon.get(endpoint)
            assert done.status_code == 401, endpoint
            assert done.headers["www-authenticate"] == "Bearer"
        bad = anon.get("/api/v1/me", headers=bearer("mft_0123456789abcdef_" + "A" * 43))
        assert bad.status_code == 401 and "unknown or wrong secret" in bad.json()["detail"]
        assert anon.get("/api/openapi.json").status_code == 200
        assert anon.get("/", follow_redirects=False).headers["location"] == "/login"
        for answer in (anon.get("/login"), anon.get("/api/v1/me")):
            policy = answer.headers["content-security-policy"]
            assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy
            assert answer.headers["x-content-type-options"] == "nosniff"
            assert answer.headers["cache-control"] == "no-store"
            assert "strict-transport-security" not in answer.headers  # plain HTTP here


# ------------------------------------------------------------------ one customer, not another
def test_a_customer_gets_nothing_of_another_customers(
    clients: dict[str, httpx.Client], base: str, world: World
) -> None:
    c1 = clients["customer"]
    h = _csrf(c1)
    refused = []
    for meter in (M2, M3, "999999999999"):  # c2's, nobody's, no such meter
        refused += [c1.get(f"/api/v1/meters/{meter}/readings"),
                    c1.get(f"/api/v1/meters/{meter}/readings", params={"quantity": "voltage_a"}),
                    c1.get(f"/api/v1/meters/{meter}/events")]  # fmt: skip
    for account in ("A2", "A3", "no-such"):
        refused += [c1.get(f"/api/v1/accounts/{account}"),
                    c1.get(f"/api/v1/accounts/{account}/ledger"),
                    c1.post(f"/api/v1/accounts/{account}/topups", headers=h,
                            json={"amount": "5", "reference": f"x-{next(_refs)}"})]  # fmt: skip
    refused.append(c1.post("/api/v1/commands", headers=h, json={
        "concentrator": CONCENTRATOR, "action": "relay_close", "meters": [M2]}))  # fmt: skip
    for done in refused:
        assert done.status_code == 403, (done.request.url, done.text)
        assert M2 not in done.text and "A2" not in done.json()["detail"].split("own")[-1]
    # What is theirs they do see, and lists hold only theirs.
    assert [m["meter"] for m in c1.get("/api/v1/meters").json()["items"]] == [M1]
    assert [a["account"] for a in c1.get("/api/v1/accounts").json()] == ["A1"]
    mine = c1.get(f"/api/v1/meters/{M1}/readings").json()["items"]
    assert mine and {r["meter"] for r in mine} == {M1}
    c2 = logged_in(base, world, "c2", "customer")
    assert c2.get(f"/api/v1/meters/{M2}/readings").status_code == 200
    assert c2.get(f"/api/v1/meters/{M1}/readings").status_code == 403
    assert [a["account"] for a in c2.get("/api/v1/accounts").json()] == ["A2"]


# ------------------------------------------------------------------ data as documented
def test_readings_page_through_a_range_with_exact_values(
    clients: dict[str, httpx.Client],
) -> None:
    viewer = clients["viewer"]
    seen: list[dict[str, Any]] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 5, "since": "2026-01-05T00:00:00+08:00",
                                  "until": str(1767542400 + 6 * 900)}  # fmt: skip
        if after:
            params["after"] = after
        page = viewer.get(f"/api/v1/meters/{M1}/readings", params=params).json()
        seen += page["items"]
        after = page["next"]
        if after is None:
            break
    assert len(seen) == 12  # 6 slots x 2 quantities, none twice
    assert [(r["slot"], r["quantity"]) for r in seen] == sorted(
        (1767542400 + 900 * i, q) for i in range(6) for q in ("energy_fwd_total", "voltage_a")
    )
    assert seen[2] == {"meter": M1, "quantity": "energy_fwd_total", "slot": 1767542400 + 900,
                       "value": "101.010", "unit": "kWh", "read_at": 1767542400 + 905.5,
                       "source": seen[2]["source"], "concentrator": CONCENTRATOR}  # fmt: skip
    only = viewer.get(f"/api/v1/meters/{M1}/readings", params={"quantity": "voltage_a"}).json()
    assert {r["quantity"] for r in only["items"]} == {"voltage_a"} and len(only["items"]) == 8
    bad = viewer.get(f"/api/v1/meters/{M1}/readings", params={"since": "yesterday"})
    assert bad.status_code == 422 and "since/until" in bad.json()["detail"]
    bad = viewer.get(f"/api/v1/meters/{M1}/readings", params={"after": "nonsense"})
    assert bad.status_code == 422 and "after 'nonsense'" in bad.json()["detail"]
    bad = viewer.get(f"/api/v1/meters/{M1}/readings", params={"quantity": "kwh"})
    assert bad.status_code == 422 and "unknown quantity 'kwh'" in bad.json()["detail"]
    bad = viewer.get(f"/api/v1/meters/{M1}/readings", params={"limit": 0})
    assert bad.status_code == 422 and "limit" in bad.json()["detail"]


def test_a_payment_provider_top_up_credits_once_per_reference(
    clients: dict[str, httpx.Client],
) -> None:
    provider = clients["sys-billing-clerk"]
    before = provider.get("/api/v1/accounts/A3").json()["balance_cents"]
    body = {"amount": "25.50", "reference": "PAY-2026-0001", "provider": "wechat"}
    first = provider.post("/api/v1/accounts/A3/topups", json=body)
    assert first.status_code == 201 and first.json()["replayed"] is False, first.text
    assert first.json()["account"]["balance_cents"] == before + 2550
    again = provider.post("/api/v1/accounts/A3/topups", json=body)
    assert again.status_code == 200 and again.json()["replayed"] is True
    assert provider.get("/api/v1/accounts/A3").json()["balance_cents"] == before + 2550
    other = provider.post("/api/v1/accounts/A3/topups", json={**body, "amount": "30"})
    assert other.status_code == 409 and "PAY-2026-0001" in other.json()["detail"]
    ledger = provider.get("/api/v1/accounts/A3/ledger").json()["items"]
    assert [e["ref"] for e in ledger if e["kind"] == "topup"] == ["payment:PAY-2026-0001"]
    assert ledger[-1]["amount"] == "25.50"
    bad = provider.post("/api/v1/accounts/A3/topups", json={**body, "reference": "a b"})
    assert bad.status_code == 422 and "reference 'a b'" in bad.json()["detail"]


def test_a_command_asked_through_the_api_is_approved_by_a_second_operator_and_issued(
    clients: dict[str, httpx.Client], world: World
) -> None:
    operator, admin = clients["operator2"], clients["administrator"]
    rid = _relay_open_request(operator)
    own = operator.post(f"/api/v1/requests/{rid}/approve", headers=_csrf(operator))
    assert own.status_code == 403 and "a second operator must approve" in own.json()["detail"]
    done = admin.post(f"/api/v1/requests/{rid}/approve")
    assert done.status_code == 200 and done.json()["status"] == "ready", done.text
    assert done.json()["approved_by"] == ["administrator"]
    # The service carries it out as it does every ready request (its command key).
    storage = open_storage(world.db_url)
    try:
        keys = kinds.Keys(command=wire_commands.new_key())
        kinds.execute_ready(storage, keys, time.time(), only=rid, by=Principal.system("test"))
    finally:
        storage.close()
    status = admin.get(f"/api/v1/requests/{rid}").json()
    assert status["status"] == "done", status
    command = admin.get(f"/api/v1/commands/{status['result']['id']}")
    assert command.status_code == 200 and command.json()["action"] == "relay_open"
    assert command.json()["log"][0]["status"] == "issued"


# ------------------------------------------------------------------ security
def test_a_form_or_cookie_write_without_its_csrf_token_is_refused(
    base: str, world: World, clients: dict[str, httpx.Client]
) -> None:
    with httpx.Client(base_url=base) as anon:
        anon.get("/login")
        form = {"name": "c1", "password": PASSWORD, "kind": "customer"}
        assert anon.post("/login", data=form).status_code == 403
        assert anon.post("/login", data={**form, "csrf_token": "forged"}).status_code == 403
    operator = clients["operator2"]
    no_header = operator.post("/api/v1/commands", json={"concentrator": CONCENTRATOR,
                                                         "action": "time_sync"})  # fmt: skip
    assert no_header.status_code == 403 and "CSRF" in no_header.json()["detail"]
    assert operator.post("/logout", data={}).status_code == 403
    assert operator.post("/logout", data={"csrf_token": "forged"}).status_code == 403
    assert me(operator)["name"] == "operator2"  # still logged in
    assert csrf_of(operator.get("/login").text) == me(operator)["csrf_token"]


def test_a_customers_cookie_is_void_after_logout(base: str, world: World) -> None:
    client = logged_in(base, world, "c2", "customer")
    copy = dict(client.cookies)
    token = me(client)["csrf_token"]
    assert client.post("/logout", data={"csrf_token": token}).status_code == 303
    with httpx.Client(base_url=base, cookies=copy) as replay:
        assert replay.get("/api/v1/me").status_code == 401
    again = logged_in(base, world, "c2", "customer")  # a new login works at once
    assert me(again)["name"] == "c2"


def test_repeated_failed_logins_lock_the_account_out(base: str, world: World) -> None:
    world.ops.add("locky", "viewer")
    storage = open_storage(world.db_url)
    try:
        from cloud_receiver.access import customers

        with storage.transaction() as tx:
            customers.add(tx, "c-locky", PASSWORD, meters=[], account_ids=[], language="zh",
                          by="test", now=time.time())  # fmt: skip
    finally:
        storage.close()
    for name, kind in (("locky", "operator"), ("c-locky", "customer")):
        with httpx.Client(base_url=base) as client:
            for _ in range(5):  # lockout-failures, the default
                done = login(client, name, kind=kind, password="wrong password!")
                assert done.status_code == 401
            assert "locked out" in done.text
            done = login(client, name, kind=kind)  # the right password, too late
            assert done.status_code == 401 and "locked out" in done.text
    storage = open_storage(world.db_url)
    try:
        with storage.transaction() as tx:
            alerts = chain.entries(tx, kinds=("alert",))
    finally:
        storage.close()
    locked = {e.target for e in alerts if e.action == "lockout"}
    assert {"operator:locky", "customer:c-locky"} <= locked


def test_logins_from_one_address_are_rate_limited(world: World, tmp_path: Path) -> None:
    settings = WebSettings(world.db_url, tmp_path / "k", login_attempts=3, login_window_s=600)
    with serving(settings) as url, httpx.Client(base_url=url) as client:
        codes = [login(client, "nobody", password="wrong password!").status_code
                 for _ in range(4)]  # fmt: skip
        assert codes == [401, 401, 401, 429]
        last = login(client, "nobody")
        assert last.status_code == 429 and int(last.headers["retry-after"]) > 0


def test_every_view_of_customer_data_is_in_the_audit_log(
    clients: dict[str, httpx.Client], world: World
) -> None:
    since = time.time() - 1
    clients["customer"].get(f"/api/v1/meters/{M1}/readings")
    clients["customer"].get("/api/v1/accounts/A1/ledger")
    clients["customer"].get(f"/api/v1/meters/{M2}/events")  # refused
    clients["viewer"].get(f"/api/v1/meters/{M2}/events")
    clients["sys-billing-clerk"].get("/api/v1/accounts/A2")
    storage = open_storage(world.db_url)
    try:
        with storage.transaction() as tx:
            entries = chain.entries(tx, since=since)
            assert chain.verify(tx).intact
    finally:
        storage.close()
    seen = {(e.principal, e.kind, e.target) for e in entries}
    assert ("customer:c1", "read", f"meter:{M1}") in seen
    assert ("customer:c1", "read", "account:A1") in seen
    assert ("customer:c1", "denied", f"meter:{M2}") in seen
    assert ("operator:viewer", "read", f"meter:{M2}") in seen
    assert ("system:sys-billing-clerk", "read", "account:A2") in seen
    signed = [e for e in entries if e.principal == "operator:viewer"]
    assert signed and all(e.signature is not None for e in signed)  # the token's key


def test_a_revoked_token_is_refused(world: World, base: str) -> None:
    from cloud_receiver.access import tokens

    storage = open_storage(world.db_url)
    try:
        with storage.transaction() as tx:
            found, text = tokens.create(tx, "operator", "viewer", None, lifetime=600, note="",
                                        by="test", now=time.time())  # fmt: skip
    finally:
        storage.close()
    with httpx.Client(base_url=base, headers=bearer(text)) as client:
        assert client.get("/api/v1/me").json()["principal"] == "operator:viewer"
        storage = open_storage(world.db_url)
        try:
            with storage.transaction() as tx:
                tokens.revoke(tx, found.id, time.time())
        finally:
            storage.close()
        done = client.get("/api/v1/me")
        assert done.status_code == 401 and "revoked" in done.json()["detail"]


def test_the_api_counts_completeness_by_the_servers_collection_plan(
    world: World, tmp_path: Path
) -> None:
    """``/completeness`` judges by the plan `cloud-receiver web` was started with (as the
    fleet page does), not the default: hourly collection expects a quarter of the
    quarter-hourly slots."""
    counts = {}
    for interval in (900, 3600):
        settings = WebSettings(world.db_url, tmp_path / "web.key", login_attempts=10_000,
                               collection_interval_s=interval)  # fmt: skip
        with serving(settings) as url, httpx.Client(base_url=url, timeout=30) as client:
            client.headers.update(bearer(world.tokens["viewer"]))
            day = settings.collection_plan().day_of(time.time() - 86_400)
            got = client.get("/api/v1/completeness", params={"day": day.isoformat()})
            assert got.status_code == 200, got.text
            counts[interval] = got.json()["overall"]["expected"]
    assert counts[900] == 4 * counts[3600] > 0
