"""The API against its own OpenAPI document (issue 21, acceptance): the document served
at /api/openapi.json is a valid OpenAPI document, every path and method it documents
is called here, and every answer has a documented status and matches the documented
schema (jsonschema, Draft 2020-12 as OpenAPI 3.1 uses)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import pytest
from openapi_spec_validator import validate
from web_harness import CONCENTRATOR, M1, World, bearer, build_world, me, serving

from cloud_receiver.access.policy import Principal
from cloud_receiver.applications import requests as kinds
from cloud_receiver.applications.fleet import commands as fleet_commands
from cloud_receiver.storage import open_storage
from cloud_receiver.web.settings import WebSettings
from contract import commands as wire_commands


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    tmp = tmp_path_factory.mktemp("openapi")
    return build_world(f"sqlite:///{tmp / 'r.db'}", tmp)


@pytest.fixture(scope="module")
def base(world: World, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    key = tmp_path_factory.mktemp("key") / "web.key"
    with serving(WebSettings(world.db_url, key)) as url:
        yield url


def _check(spec: dict[str, Any], template: str, method: str, done: httpx.Response) -> None:
    """The status is documented for this operation, and the body matches its schema."""
    operation = spec["paths"][template][method]
    documented = operation["responses"]
    assert str(done.status_code) in documented, (method, template, done.status_code, done.text)
    content = documented[str(done.status_code)].get("content", {}).get("application/json")
    assert content is not None, (method, template, done.status_code)
    schema = {**content["schema"], "components": spec["components"]}
    jsonschema.Draft202012Validator(schema).validate(done.json())


def _command_id(world: World, admin: httpx.Client) -> tuple[int, str]:
    """A command request carried out by the service's code (so a command exists)."""
    body = {"concentrator": CONCENTRATOR, "action": "read", "meters": [M1],
            "params": {"quantities": ["voltage_a"]}}  # fmt: skip
    rid = admin.post("/api/v1/commands", json=body).json()["id"]
    storage = open_storage(world.db_url)
    try:
        keys = kinds.Keys(command=wire_commands.new_key())
        kinds.execute_ready(storage, keys, time.time(), only=rid, by=Principal.system("test"))
    finally:
        storage.close()
    status = admin.get(f"/api/v1/requests/{rid}").json()
    assert status["status"] == "done", status
    return rid, str(status["result"]["id"])


def test_every_documented_endpoint_answers_as_documented(base: str, world: World) -> None:
    with (
        httpx.Client(base_url=base, headers=bearer(world.tokens["administrator"])) as admin,
        httpx.Client(base_url=base, headers=bearer(world.tokens["operator"])) as operator,
        httpx.Client(base_url=base, headers=bearer(world.tokens["sys-system"])) as system,
        httpx.Client(base_url=base, timeout=30) as anon,
    ):
        spec = anon.get("/api/openapi.json").json()
        validate(spec)  # a valid OpenAPI document (3.1)
        rid, command_id = _command_id(world, admin)
        waiting = operator.post("/api/v1/commands", json={
            "concentrator": CONCENTRATOR, "action": "relay_open",
            "meters": [f"{800000000000 + i:012d}" for i in range(11)]}).json()["id"]  # fmt: skip
        other = operator.post("/api/v1/commands", json={
            "concentrator": CONCENTRATOR, "action": "relay_open",
            "meters": [f"{700000000000 + i:012d}" for i in range(11)]}).json()["id"]  # fmt: skip
        params = {"id": fleet_commands.new_command_id(), "concentrator": CONCENTRATOR,
                  "action": "time_sync", "meters": [], "params": {}, "not_before": None,
                  "valid_for_s": 600}  # fmt: skip
        # (method, documented path) → the calls that exercise it: successes and errors
        calls: dict[tuple[str, str], list[httpx.Response]] = {
            ("get", "/api/v1/me"): [admin.get("/api/v1/me"), anon.get("/api/v1/me")],
            ("get", "/api/v1/meters"): [admin.get("/api/v1/meters", params={"limit": 2}),
                                         admin.get("/api/v1/meters", params={"limit": -1})],
            ("get", "/api/v1/meters/{meter}/readings"): [
                admin.get(f"/api/v1/meters/{M1}/readings", params={"limit": 3}),
                admin.get(f"/api/v1/meters/{M1}/readings", params={"until": "never"})],
            ("get", "/api/v1/meters/{meter}/events"): [
                admin.get(f"/api/v1/meters/{M1}/events")],
            ("get", "/api/v1/accounts"): [admin.get("/api/v1/accounts"),
                                           system.get("/api/v1/accounts")],
            ("get", "/api/v1/accounts/{account}"): [admin.get("/api/v1/accounts/A1"),
                                                     admin.get("/api/v1/accounts/none")],
            ("get", "/api/v1/accounts/{account}/ledger"): [
                admin.get("/api/v1/accounts/A1/ledger")],
            ("post", "/api/v1/accounts/{account}/topups"): [
                admin.post("/api/v1/accounts/A1/topups",
                           json={"amount": "10", "reference": "doc-1"}),
                admin.post("/api/v1/accounts/A1/topups",
                           json={"amount": "10", "reference": "doc-1"}),
                admin.post("/api/v1/accounts/A1/topups",
                           json={"amount": "11", "reference": "doc-1"}),
                admin.post("/api/v1/accounts/A1/topups", json={"amount": "-3",
                                                               "reference": "doc-2"})],
            ("get", "/api/v1/commands"): [admin.get("/api/v1/commands")],
            ("get", "/api/v1/commands/{command_id}"): [
                admin.get(f"/api/v1/commands/{command_id}"),
                admin.get("/api/v1/commands/none")],
            ("get", "/api/v1/completeness"): [
                admin.get("/api/v1/completeness", params={"since": "2026-01-01",
                                                          "until": "2026-01-03"}),
                system.get("/api/v1/completeness", params={"meter": M1, "incomplete_only": 1}),
                admin.get("/api/v1/completeness", params={"since": "2026-01-03",
                                                          "until": "2026-01-01"})],
            ("post", "/api/v1/commands"): [
                admin.post("/api/v1/commands", json={"concentrator": CONCENTRATOR,
                                                     "action": "clock_check"}),
                admin.post("/api/v1/commands", json={"concentrator": CONCENTRATOR,
                                                     "action": "explode"}),
                system.post("/api/v1/commands", json={"concentrator": CONCENTRATOR,
                                                      "action": "time_sync"})],
            ("post", "/api/v1/requests"): [
                admin.post("/api/v1/requests", json={"kind": "command", "params": params})],
            ("get", "/api/v1/requests"): [admin.get("/api/v1/requests"),
                                           admin.get("/api/v1/requests",
                                                     params={"status": "nonsense"})],
            ("get", "/api/v1/requests/{request_id}"): [admin.get(f"/api/v1/requests/{rid}"),
                                                        admin.get("/api/v1/requests/99999")],
            ("post", "/api/v1/requests/{request_id}/approve"): [
                admin.post(f"/api/v1/requests/{waiting}/approve"),
                admin.post(f"/api/v1/requests/{waiting}/approve"),  # approved already: 409
                operator.post(f"/api/v1/requests/{other}/approve")],
            ("post", "/api/v1/requests/{request_id}/cancel"): [
                admin.post(f"/api/v1/requests/{other}/cancel"),
                admin.post(f"/api/v1/requests/{other}/cancel")],  # cancelled already: 409
        }  # fmt: skip
        documented = {(m, p) for p, ops in spec["paths"].items() for m in ops}
        assert documented == set(calls), documented ^ set(calls)
        statuses: set[int] = set()
        for (method, template), responses in calls.items():
            for done in responses:
                _check(spec, template, method, done)
                statuses.add(done.status_code)
        assert {200, 201, 202, 401, 403, 404, 409, 422} <= statuses
        assert me(admin)["role"] == "administrator"
