"""The portal's API on PostgreSQL (issue 21): the same queries, isolation and
idempotent top-up as on SQLite, on a private schema of the local server."""

from __future__ import annotations

from pathlib import Path

import httpx
from web_harness import M1, M2, bearer, build_world, logged_in, serving

from cloud_receiver.web.settings import WebSettings


def test_the_api_on_postgresql(pg_url: str, tmp_path: Path) -> None:
    world = build_world(pg_url, tmp_path)
    with serving(WebSettings(pg_url, tmp_path / "k")) as base:
        with httpx.Client(base_url=base, headers=bearer(world.tokens["viewer"])) as viewer:
            first = viewer.get(f"/api/v1/meters/{M1}/readings", params={"limit": 10}).json()
            rest = viewer.get(f"/api/v1/meters/{M1}/readings",
                              params={"limit": 10, "after": first["next"]}).json()  # fmt: skip
            values = [r["value"] for r in first["items"] + rest["items"]]
            assert len(values) == 16 and rest["next"] is None
            assert values[:4] == ["100.000", "100.000", "101.010", "101.010"]
        bill = bearer(world.tokens["sys-billing-clerk"])
        with httpx.Client(base_url=base, headers=bill) as provider:
            body = {"amount": "7.25", "reference": "PG-1", "provider": "bank"}
            codes = [provider.post("/api/v1/accounts/A2/topups", json=body).status_code
                     for _ in range(3)]  # fmt: skip
            assert codes == [201, 200, 200]
            ledger = provider.get("/api/v1/accounts/A2/ledger").json()["items"]
            assert [e["amount"] for e in ledger if e["kind"] == "topup"] == ["7.25"]
        c1 = logged_in(base, world, "c1", "customer")
        assert c1.get(f"/api/v1/meters/{M1}/events").status_code == 200
        assert c1.get(f"/api/v1/meters/{M2}/events").status_code == 403
        assert c1.get("/api/v1/accounts/A2").status_code == 403
