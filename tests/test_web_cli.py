"""``cloud-receiver web`` as it is run (issue 21, items 1 and 5): a subprocess serving
HTTPS with a certificate from ``web-cert`` (the deployment's CA), its cookies Secure,
HttpOnly and SameSite; and the ``customer`` and ``token`` commands that give customers
and systems their access."""

from __future__ import annotations

import json
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from helpers import Operators, receiver_cli, receiver_json
from web_harness import M1, PASSWORD, bearer, build_world, login, serving

from cloud_receiver.applications.fleet.broker import free_port
from cloud_receiver.web.settings import WebSettings
from hil_sim.process import cli_command, env_without_color


def _wait_https(url: str, ca: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            httpx.get(
                url + "api/openapi.json", verify=ssl.create_default_context(cafile=ca), timeout=5
            )
            return
        except httpx.TransportError:
            assert time.monotonic() < deadline, "the portal did not answer in 60 s"
            time.sleep(0.1)


def test_the_portal_serves_https_with_the_deployments_certificate(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    world = build_world(f"sqlite:///{tmp_path / 'r.db'}", tmp_path)
    pki_dir = tmp_path / "pki"
    cert = receiver_json("web-cert", "--pki-dir", str(pki_dir), "--host", "localhost",
                         "--ip", "127.0.0.1", "--json")  # fmt: skip
    assert Path(cert["cert"]).exists() and Path(cert["key"]).stat().st_mode & 0o077 == 0
    port = free_port()
    secret = tmp_path / "web.key"
    proc = subprocess.Popen(
        [*cli_command("cloud-receiver"), "web", "--db", world.db_url, "--port", str(port),
         "--secret-key", str(secret), "--tls-cert", cert["cert"], "--tls-key", cert["key"],
         "--json"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_without_color(),
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        started = json.loads(proc.stdout.readline())
        assert started == {"url": f"https://127.0.0.1:{port}/",
                           "api": f"https://127.0.0.1:{port}/api/v1", "tls": True}  # fmt: skip
        _wait_https(started["url"], Path(cert["ca"]), proc)
        assert secret.stat().st_mode & 0o077 == 0  # the key it made
        with httpx.Client(
            base_url=started["url"],
            verify=ssl.create_default_context(cafile=cert["ca"]),
            timeout=30,
        ) as client:
            done = login(client, "c1", kind="customer")
            assert done.status_code == 303, done.text
            cookie = done.headers["set-cookie"].lower()
            assert "mf_session=" in cookie
            assert all(flag in cookie for flag in ("secure", "httponly", "samesite=strict"))
            assert done.headers["strict-transport-security"].startswith("max-age=")
            assert client.get(f"/api/v1/meters/{M1}/readings").status_code == 200
        with pytest.raises(httpx.TransportError):  # no plain HTTP on the TLS port
            httpx.get(f"http://127.0.0.1:{port}/api/openapi.json", timeout=5).raise_for_status()
        with pytest.raises(httpx.ConnectError):  # a client that does not trust the CA
            httpx.get(started["url"], timeout=5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert proc.returncode in (0, -15)


def test_web_refuses_half_a_tls_pair(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    half = ["--tls-cert", str(tmp_path / "c.pem")]
    done = receiver_cli("web", "--db", db, "--secret-key", str(tmp_path / "k"), *half, "--json")
    assert done.returncode == 2
    assert json.loads(done.stdout)["error"] == "--tls-cert and --tls-key: give both or neither"


def test_customers_and_tokens_are_managed_from_the_command_line(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    world = build_world(f"sqlite:///{tmp_path / 'r.db'}", tmp_path)
    db = world.db_url
    clerk = world.ops.login("billingclerk")
    admin = world.ops.login("administrator")
    password = tmp_path / "pw"
    password.write_text(PASSWORD + "\n")
    added = receiver_json("customer", "add", "c9", "--account", "A3", "--password-file",
                          str(password), "--db", db, "--json", session=clerk)  # fmt: skip
    assert added["meters"] == ["000000000103"] and added["accounts"] == ["A3"]
    taken = receiver_cli("customer", "add", "c10", "--meter", M1, "--password-file",
                         str(password), "--db", db, "--json", session=clerk)  # fmt: skip
    assert taken.returncode == 2
    assert "linked to customer 'c1' already" in json.loads(taken.stdout)["error"]
    listed = receiver_json("customer", "list", "--db", db, "--json", session=clerk)
    assert {c["name"] for c in listed} == {"c1", "c2", "c9"}
    new = tmp_path / "new-pw"
    new.write_text("another long password\n")
    receiver_json("customer", "password", "c2", "--password-file", str(new), "--db", db,
                  "--json", session=clerk)  # fmt: skip
    receiver_json("customer", "disable", "c9", "--db", db, "--json", session=clerk)
    made = receiver_json("token", "create", "--system", "mdm", "--role", "viewer", "--note",
                         "meter-data management", "--db", db, "--json", session=admin)  # fmt: skip
    assert made["token"].startswith(f"mft_{made['id']}_") and made["role"] == "viewer"
    wide = receiver_cli("token", "create", "--operator", "viewer", "--role", "administrator",
                        "--db", db, "--json", session=admin)  # fmt: skip
    assert wide.returncode == 2 and "wider than operator viewer" in wide.stdout
    denied = receiver_cli("token", "create", "--system", "x", "--role", "viewer", "--db", db,
                          "--json", session=clerk)  # fmt: skip
    assert denied.returncode == 4
    tokens = receiver_json("token", "list", "--db", db, "--json", session=admin)
    assert made["id"] in {t["id"] for t in tokens}
    assert all("token" not in t and "secret" not in json.dumps(t) for t in tokens)
    revoked = receiver_json("token", "revoke", made["id"], "--db", db, "--json", session=admin)
    assert revoked["revoked_at"] is not None
    with serving(WebSettings(db, tmp_path / "k")) as url, httpx.Client(base_url=url) as c:
        assert c.get("/api/v1/me", headers=bearer(made["token"])).status_code == 401
        assert login(c, "c9", kind="customer").status_code == 401  # disabled
        assert login(c, "c2", kind="customer").status_code == 401  # the old password
        assert login(c, "c2", kind="customer", password="another long password").status_code == 303
