"""The command line as an operator: every command that reads customer data or acts needs
a session; each role runs exactly the commands its role allows (each refusal audited);
the first administrator without a session; login, operators, requests, settings and the
audit log from the command line, with bad input named and nothing stored."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pyotp
import pytest
from click.testing import CliRunner, Result
from helpers import NO_SESSION, Operators
from sqlalchemy import update

from cloud_receiver.access import operators as operators_mod
from cloud_receiver.access import requests as queue
from cloud_receiver.applications import dr, prepay
from cloud_receiver.applications.fleet import pki
from cloud_receiver.cli import main
from cloud_receiver.storage import MeterRecord, open_storage
from cloud_receiver.storage import audit as chain
from cloud_receiver.storage.schema import audit_log

# Commands that need no session: offline tools with their own key files, the service
# itself, a restore into an empty database; `operator add` needs none only for the
# first administrator (tested below).
EXEMPT = {"provision", "broker-config", "crl", "release build", "run", "restore", "web", "web-cert"}
M1, M2 = "000000000001", "000000000002"


def cli(*args: str, session: Path | None = None, stdin: str | None = None) -> Result:
    env = {"MF_SESSION": str(session) if session is not None else NO_SESSION}
    return CliRunner().invoke(main, list(args), env=env, input=stdin)


def _leaves(group: click.Group, prefix: str = "") -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from _leaves(command, f"{prefix}{name} ")
        else:
            yield f"{prefix}{name}", command


def test_every_command_that_reads_or_acts_takes_a_session() -> None:
    without = {
        name for name, command in _leaves(main)
        if not any("--session" in p.opts for p in command.params)
    }  # fmt: skip
    assert without == EXEMPT
    # ... and no command takes a password on its command line.
    for _, command in _leaves(main):
        assert not any("--password" in p.opts or "--new-password" in p.opts
                       for p in command.params)  # fmt: skip


# One invocation of every command that needs a session, and the action it takes.
def _invocations(db: str, tmp: Path, request_of: dict[str, int]) -> list[tuple[str, list[str]]]:
    archive = tmp / "archive.csv"
    archive.write_text("meter,area,role\nT9,TA-9,total\n", encoding="utf-8")
    password = tmp / "new-operator.pw"
    password.write_text("a new operator password\n")
    day = ["--from", "2026-01-05", "--to", "2026-01-06"]
    now = int(time.time())
    pki_dir = tmp / "pki"
    pki.provision(pki_dir, "dc-1", broker_host="localhost", broker_port=8883)
    return [
        ("data.read", ["readings", "--meter", M1]),
        ("data.read", ["conflicts", "--json"]),
        ("data.read", ["report", "usage", "--meter", M1, *day]),
        ("data.read", ["report", "loss", "--area", "TA-1", *day]),
        ("data.read", ["report", "suspects", "--area", "TA-1", "--day", "2026-01-05"]),
        ("data.read", ["report", "forecast", "--area", "TA-1", "--day", "2026-01-05"]),
        ("data.read", ["archive", "list"]),
        ("data.read", ["dr", "report", "no-such-event"]),
        ("fleet.read", ["concentrators"]),
        ("fleet.read", ["completeness", "--day", "2026-01-05", "--area", "TA-1"]),
        ("fleet.read", ["commands"]),
        ("fleet.read", ["rollout", "status"]),
        ("fleet.read", ["supply", "show", M1]),
        ("prepay.read", ["balance", "A1", "--ledger"]),
        ("request.read", ["requests"]),
        ("prepay.open", ["account", "open", "A9", "--meter", "000000000009", "--concentrator",
                         "dc-1", "--price", "flat=0.5", "--opening", "grace=3d"]),
        ("prepay.topup", ["topup", "A1", "5"]),
        ("dr.enrol", ["dr", "enrol", "g2", "000000000003", "--concentrator", "dc-1"]),
        ("dr.event", ["dr", "event", "--group", "g", "--from", str(now + 3600), "--to",
                      str(now + 7200), "--limit-kw", "1", "--wait", "0"]),
        ("command.query", ["command", "read", "--concentrator", "dc-1", "--meter", M1,
                           "--quantity", "voltage_a", "--wait", "0"]),
        ("command.configure", ["command", "time-sync", "--concentrator", "dc-1", "--wait", "0"]),
        ("command.relay", ["command", "relay-open", "--concentrator", "dc-1", "--meter", M1,
                           "--wait", "0"]),
        ("command.relay", ["supply", "set", M1, "--reason", "maintenance", "--concentrator",
                           "dc-1", "--wait", "0"]),
        ("archive.change", ["archive", "import", str(archive)]),
        ("archive.change", ["archive", "push", "--concentrator", "dc-1", "--wait", "0"]),
        ("fleet.read", ["archive", "owners"]),
        ("rollout.start", ["rollout", "start", "9.9.9", "--stage", "pilot:ALL", "--wait", "0"]),
        ("rollout.abort", ["rollout", "abort"]),
        ("request.approve", ["approve", str(request_of["approve"]), "--wait", "0"]),
        ("request.cancel", ["cancel", str(request_of["cancel"])]),
        ("operator.read", ["operator", "list"]),
        ("operator.manage", ["operator", "add", "newbie", "--role", "viewer",
                             "--password-file", str(password)]),
        ("operator.manage", ["operator", "disable", "rita"]),
        ("settings.change", ["settings", "set", "alert-customers-per-hour", "60"]),
        ("audit.read", ["audit", "list"]),
        ("audit.read", ["audit", "verify"]),
        ("audit.read", ["audit", "alerts"]),
        ("backup", ["backup", "--out", str(tmp / "b.mfbak"), "--no-verify"]),
        ("key.revoke", ["revoke", "dc-1", "--pki-dir", str(pki_dir)]),
        ("customer.manage", ["customer", "add", "cust", "--account", "A1",
                             "--password-file", str(password)]),
        ("customer.manage", ["customer", "link", "cust", "--meter", "000000000008"]),
        ("customer.manage", ["customer", "password", "cust", "--password-file", str(password)]),
        ("customer.manage", ["customer", "disable", "cust"]),
        ("prepay.read", ["customer", "list"]),
        ("operator.manage", ["token", "create", "--system", "billing", "--role", "viewer"]),
        ("operator.read", ["token", "list"]),
        ("operator.manage", ["token", "revoke", "no-such-token"]),
    ]  # fmt: skip


ALLOWED = {
    "viewer": {"data.read", "fleet.read", "prepay.read", "request.read"},
    "billing-clerk": {"data.read", "fleet.read", "prepay.read", "request.read", "prepay.open",
                      "prepay.topup", "customer.manage"},
    "operator": {"data.read", "fleet.read", "prepay.read", "request.read", "dr.enrol",
                 "dr.event", "command.query", "command.configure", "command.relay",
                 "archive.change", "rollout.start", "rollout.abort", "request.approve"},
    "administrator": {"data.read", "fleet.read", "prepay.read", "request.read", "prepay.open",
                      "prepay.topup", "customer.manage", "dr.enrol", "dr.event", "command.query",
                      "command.configure", "command.relay", "archive.change", "rollout.start",
                      "rollout.abort", "request.approve", "request.cancel", "operator.read",
                      "operator.manage", "settings.change", "audit.read", "backup", "key.revoke"},
}  # fmt: skip


def _setup(db: str, ops: Operators) -> dict[str, int]:
    s = open_storage(db)
    try:
        s.replace_archive([MeterRecord("T1", "TA-1", "total"),
                           MeterRecord(M1, "TA-1", "customer", "A1")])  # fmt: skip
        prepay.open_account(s, "A1", M1, prepay.Tariff.parse(["flat=0.5"]), concentrator="dc-1",
                            now=0)  # fmt: skip
        dr.enrol(s, "g", [M1], "dc-1")
    finally:
        s.close()
    rita = ops.login("rita", "operator")  # asks for what the others approve and cancel
    asked = {}
    for what in ("approve", "cancel"):
        path = Path(ops.directory) / f"{what}.csv"
        path.write_text(f"meter,area,role\nX-{what},TA-{what},total\n", encoding="utf-8")
        done = cli("archive", "import", str(path), "--db", db, "--json", session=rita)
        assert done.exit_code == 0, done.output
        asked[what] = json.loads(done.stdout)["request"]
    return asked


@pytest.mark.parametrize("role", ["viewer", "billing-clerk", "operator", "administrator"])
def test_each_role_runs_exactly_the_commands_it_may(
    role: str, tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    ops = operators(db)
    asked = _setup(db, ops)
    session = ops.login("subject", role)
    ops.login("ada", "administrator")  # so that the subject is never the last administrator
    outcomes: dict[str, list[str]] = {"allowed": [], "denied": []}
    for action, args in _invocations(db, tmp_path, asked):
        done = cli(*args, "--db", db, session=session)
        denied = done.exit_code == 4 and f"operator:subject ({role})" in done.output
        if action in ALLOWED[role]:
            assert not denied, (role, args, done.output)
            outcomes["allowed"].append(action)
        else:
            assert denied, (role, args, done.exit_code, done.output)
            outcomes["denied"].append(action)
    every = {a for a, _ in _invocations(db, tmp_path, asked)}
    assert set(outcomes["allowed"]) == ALLOWED[role] & every
    assert set(outcomes["denied"]) == every - ALLOWED[role]
    # Each refusal is in the audit log, signed by the subject's session.
    s = open_storage(db)
    try:
        with s.transaction() as tx:
            refused = chain.entries(tx, principal="operator:subject", kinds=("denied",))
            assert chain.verify(tx).intact
    finally:
        s.close()
    assert len(refused) == len(outcomes["denied"])
    assert all(e.session is not None and e.signature is not None for e in refused)


def test_without_a_session_nothing_is_read_or_done(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    asked = _setup(db, operators(db))
    for _, args in _invocations(db, tmp_path, asked):
        done = cli(*args, "--db", db)
        assert done.exit_code == 4, (args, done.output)
        assert "not logged in (no session file" in done.output, (args, done.output)


# ------------------------------------------------------------------ bootstrap and login
def _pw(tmp: Path, text: str = "first admin password", name: str = "pw") -> Path:
    path = tmp / name
    path.write_text(text + "\n")
    return path


def test_the_first_administrator_login_and_operators_from_the_command_line(
    tmp_path: Path,
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    pw = _pw(tmp_path)
    first = cli(
        "operator", "add", "ann", "--role", "viewer", "--db", db, "--password-file", str(pw)
    )
    assert first.exit_code == 4 and "the first one must be an administrator" in first.output
    added = cli("operator", "add", "ada", "--role", "administrator", "--db", db,
                "--password-file", str(pw), "--json")  # fmt: skip
    assert added.exit_code == 0, added.output
    doc = json.loads(added.stdout)
    assert doc["first"] and doc["totp_uri"].startswith("otpauth://totp/meterflow:ada?secret=")
    totp = pyotp.TOTP(doc["totp_secret"])
    # Now there is an operator: adding another needs an administrator's session.
    again = cli("operator", "add", "bob", "--role", "operator", "--db", db,
                "--password-file", str(pw))  # fmt: skip
    assert again.exit_code == 4 and "not logged in" in again.output
    # Login: the password from a file, the code as an option; the session file 0600.
    session = tmp_path / "cfg" / "session.json"
    bad = cli("login", "ada", "--db", db, "--password-file", str(pw), "--totp", "123456",
              "--session", str(session))  # fmt: skip
    assert bad.exit_code == 4 and "wrong operator name, password or TOTP code" in bad.output
    assert not session.exists()
    done = cli("login", "ada", "--db", db, "--password-file", str(pw), "--totp", totp.now(),
               "--session", str(session))  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "logged in as ada (administrator)" in done.stdout
    assert session.stat().st_mode & 0o777 == 0o600
    assert session.parent.stat().st_mode & 0o777 == 0o700
    who = cli("whoami", "--db", db, "--json", session=session)
    assert json.loads(who.stdout)["operator"] == "ada"
    # The password may also come from the prompt (never from the command line).
    bob = cli("operator", "add", "bob", "--role", "operator", "--db", db, "--json",
              session=session, stdin="bob's password 123\nbob's password 123\n")  # fmt: skip
    assert bob.exit_code == 0, bob.output
    bob_totp = pyotp.TOTP(json.loads(bob.stdout.splitlines()[-1])["totp_secret"])
    mismatch = cli(
        "operator",
        "add",
        "carl",
        "--role",
        "viewer",
        "--db",
        db,
        session=session,
        stdin="one password 123\nanother one 123\none password 123\none password 123\n",
    )
    assert mismatch.exit_code == 0 and "do not match" in mismatch.output
    listed = json.loads(cli("operator", "list", "--db", db, "--json", session=session).stdout)
    assert [(o["name"], o["role"], o["totp"]) for o in listed] == [
        ("ada", "administrator", True), ("bob", "operator", True), ("carl", "viewer", False),
    ]  # fmt: skip
    # Roles, second factors, disable/enable, passwords.
    promoted = cli("operator", "set-role", "carl", "operator", "--db", db, "--json",
                   session=session)  # fmt: skip
    assert json.loads(promoted.stdout)["totp_secret"]  # an operator needs a second factor
    assert cli("operator", "disable", "bob", "--db", db, session=session).exit_code == 0
    bob_pw = _pw(tmp_path, "bob's password 123", "bob.pw")
    refused = cli("login", "bob", "--db", db, "--password-file", str(bob_pw), "--totp",
                  bob_totp.now(), "--session", str(tmp_path / "bob.json"))  # fmt: skip
    assert refused.exit_code == 4 and "operator bob is disabled" in refused.output
    assert cli("operator", "enable", "bob", "--db", db, session=session).exit_code == 0
    reset = cli("operator", "reset-totp", "bob", "--db", db, "--json", session=session)
    new_totp = pyotp.TOTP(json.loads(reset.stdout)["totp_secret"])
    assert new_totp.secret != bob_totp.secret
    ok = cli("login", "bob", "--db", db, "--password-file", str(bob_pw), "--totp",
             new_totp.now(), "--session", str(tmp_path / "bob.json"))  # fmt: skip
    assert ok.exit_code == 0, ok.output
    last = cli("operator", "disable", "ada", "--db", db, session=session)
    assert last.exit_code == 4 and "ada is the last active administrator" in last.output
    # passwd: the current password first; a short new one is named.
    new_pw = _pw(tmp_path, "short", "new.pw")
    short = cli("passwd", "--db", db, "--password-file", str(pw), "--new-password-file",
                str(new_pw), session=session)  # fmt: skip
    assert short.exit_code == 2 and "password: at least 10 characters (got 5)" in short.output
    new_pw = _pw(tmp_path, "a brand new password", "new.pw")
    wrong = cli("passwd", "--db", db, "--password-file", str(new_pw), "--new-password-file",
                str(new_pw), session=session)  # fmt: skip
    assert wrong.exit_code == 4 and "the current password is wrong" in wrong.output
    changed = cli("passwd", "--db", db, "--password-file", str(pw), "--new-password-file",
                  str(new_pw), session=session)  # fmt: skip
    assert changed.exit_code == 0, changed.output
    # Logout: the session ends in the database and its file is deleted.
    assert cli("logout", "--db", db, session=session).exit_code == 0
    assert not session.exists()
    s = open_storage(db)
    try:
        with s.transaction() as tx:
            entries = chain.entries(tx)
            assert chain.verify(tx).intact
    finally:
        s.close()
    assert [(e.principal, e.action, e.outcome) for e in entries if e.kind == "operator"] == [
        ("system:bootstrap", "operator.add", "ok"), ("operator:ada", "operator.add", "ok"),
        ("operator:ada", "operator.add", "ok"), ("operator:ada", "operator.set-role", "ok"),
        ("operator:ada", "operator.disable", "ok"), ("operator:ada", "operator.enable", "ok"),
        ("operator:ada", "operator.reset-totp", "ok"),
        ("operator:ada", "operator.passwd", "refused"), ("operator:ada", "operator.passwd", "ok"),
    ]  # fmt: skip
    assert entries[-1].kind == "logout"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["operator", "add", "x y", "--role", "viewer"], 2, "operator name 'x y': expected"),
        (["operator", "add", "x", "--role", "root"], 2, "'root' is not one of"),
        (["operator", "add", "x", "--role", "viewer", "--password-file", "{short}"], 2,
         "password: at least 10 characters"),
        (["operator", "add", "x", "--role", "viewer", "--password-file", "{missing}"], 1,
         "password file"),
        (["operator", "disable", "nobody"], 9, "no operator 'nobody'"),
        (["settings", "set", "lockout", "3"], 2, "unknown setting 'lockout': expected one of"),
        (["settings", "set", "lockout-failures", "none"], 2,
         "setting lockout-failures: 'none': expected a whole number"),
        (["approve", "999"], 9, "no request 999"),
        (["requests", "--id", "999"], 9, "no request 999"),
        (["audit", "verify", "--anchor", "12:beef"], 2, "expected ENTRY:SHA256"),
        (["audit", "list", "--since", "last week"], 2, "expected unix seconds or an ISO"),
        (["login", "ada", "--for", "forever"], 2, "expected a duration"),
    ],
)  # fmt: skip
def test_bad_input_is_named_and_changes_nothing(
    tmp_path: Path, operators: Callable[[str], Operators], args: list[str], code: int,
    message: str,
) -> None:  # fmt: skip
    db = f"sqlite:///{tmp_path / 'r.db'}"
    ops = operators(db)
    session = ops.login("ada", "administrator")
    short = _pw(tmp_path, "short", "short.pw")
    args = [a.format(short=short, missing=tmp_path / "missing.pw") for a in args]
    s = open_storage(db)
    try:
        with s.transaction() as tx:
            before = chain.head(tx)
    finally:
        s.close()
    done = cli(*args, "--db", db, session=session)
    assert done.exit_code == code, done.output
    assert message in done.output, done.output
    s = open_storage(db)
    try:
        with s.transaction() as tx:
            assert chain.head(tx) == before  # not even an audit entry
            assert [o.name for o in operators_mod.all_operators(tx)] == ["ada"]
    finally:
        s.close()


# ------------------------------------------------------------------ requests and settings
def test_requests_are_listed_approved_and_cancelled_from_the_command_line(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    ops = operators(db)
    olga, ivan = ops.login("olga", "operator"), ops.login("ivan", "operator")
    vera = ops.login("vera", "viewer")
    csv = tmp_path / "a.csv"
    csv.write_text("meter,area,role\nT1,TA,total\n", encoding="utf-8")
    asked = cli("archive", "import", str(csv), "--db", db, session=olga)
    assert asked.exit_code == 0
    assert "archive import of 1 meters in 1 areas from a.csv" in asked.stdout
    assert "waits for a second operator's approval (`cloud-receiver approve 1`)" in asked.stdout
    listed = json.loads(cli("requests", "--db", db, "--json", session=vera).stdout)
    assert [(r["id"], r["status"], r["requested_by"]) for r in listed] == [
        (1, "awaiting_approval", "olga")
    ]
    mine = cli("approve", "1", "--db", db, session=olga)
    assert mine.exit_code == 4 and "a second operator must approve it" in mine.output
    done = cli("approve", "1", "--db", db, session=ivan)
    assert done.exit_code == 0, done.output
    assert "1 meters in 1 areas imported; the archive holds 1 meters" in done.stdout
    one = json.loads(cli("requests", "--id", "1", "--db", db, "--json", session=vera).stdout)
    assert one["status"] == "done" and one["approved_by"] == ["ivan"]
    # A command with no service running: queued, and it says so; cancelled by its operator.
    queued = cli("command", "time-sync", "--concentrator", "dc-1", "--db", db, "--wait", "1s",
                 session=olga)  # fmt: skip
    assert queued.exit_code == 0 and "has not carried it out yet" in queued.stdout
    assert cli("cancel", "2", "--db", db, session=ivan).exit_code == 4
    assert cli("cancel", "2", "--db", db, session=olga).exit_code == 0
    late = cli("cancel", "2", "--db", db, session=olga)
    assert late.exit_code == 2 and "request 2 is cancelled: too late to cancel" in late.output


def test_settings_from_the_command_line(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    ada = operators(db).login("ada", "administrator")
    shown = json.loads(cli("settings", "show", "--db", db, "--json", session=ada).stdout)
    assert shown["relay-open-approval-above"] == "10" and shown["session-lifetime"] == "28800s"
    done = cli("settings", "set", "relay-open-approval-above", "3", "--db", db, session=ada)
    assert done.exit_code == 0
    shown = json.loads(cli("settings", "show", "--db", db, "--json", session=ada).stdout)
    assert shown["relay-open-approval-above"] == "3"
    entries = json.loads(cli("audit", "list", "--kind", "settings", "--db", db, "--json",
                             session=ada).stdout)  # fmt: skip
    assert [(e["target"], e["detail"]) for e in entries] == [
        ("setting:relay-open-approval-above", {"from": "10", "to": "3"})
    ]


# ------------------------------------------------------------------ audit from the CLI
def test_audit_verify_names_the_edited_and_the_deleted_entry(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    ops = operators(db)
    ada, vera = ops.login("ada", "administrator"), ops.login("vera", "viewer")
    for meter in (M1, M2, M1):
        assert cli("readings", "--meter", meter, "--db", db, session=vera).exit_code == 0
    assert cli("readings", "--meter", M2, "--csv", "--db", db, session=vera).exit_code == 0
    ok = cli("audit", "verify", "--db", db, session=ada)
    assert ok.exit_code == 0 and "audit log intact: 6 entries, head entry 6" in ok.stdout
    reads = json.loads(cli("audit", "list", "--operator", "vera", "--kind", "read", "--kind",
                           "export", "--db", db, "--json", session=ada).stdout)  # fmt: skip
    assert [(e["kind"], e["target"]) for e in reads] == [
        ("read", f"meter:{M1}"), ("read", f"meter:{M2}"), ("read", f"meter:{M1}"),
        ("export", f"meter:{M2}"),
    ]  # fmt: skip
    seq = reads[1]["seq"]
    s = open_storage(db)
    try:
        with s.transaction() as tx:  # someone hides that vera read M2
            tx.execute(update(audit_log).where(audit_log.c.seq == seq).values(target=f"meter:{M1}"))
    finally:
        s.close()
    edited = cli("audit", "verify", "--db", db, session=ada)
    assert edited.exit_code == 8
    assert f"entry {seq}: entry {seq} was altered: its content does not match" in edited.stdout
    assert "audit log BROKEN (1 problem(s))" in edited.stdout
    s = open_storage(db)
    try:
        with s.transaction() as tx:
            tx.execute(update(audit_log).where(audit_log.c.seq == seq).values(target=f"meter:{M2}"))
            tx.execute(audit_log.delete().where(audit_log.c.seq == seq + 1))
    finally:
        s.close()
    deleted = cli("audit", "verify", "--db", db, "--json", session=ada)
    assert deleted.exit_code == 8
    assert json.loads(deleted.stdout.splitlines()[0])["problems"] == [
        {"seq": seq + 1, "problem": f"entry {seq + 1} missing (deleted)"}
    ]


def test_abnormal_access_alerts_at_their_thresholds(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    ops = operators(db)
    ada, vera = ops.login("ada", "administrator"), ops.login("vera", "viewer")
    assert cli("settings", "set", "alert-customers-per-hour", "2", "--db", db,
               session=ada).exit_code == 0  # fmt: skip
    meters = ["000000000001", "000000000002", "000000000003"]
    for meter in meters[:2] + meters[:1]:
        assert cli("readings", "--meter", meter, "--db", db, session=vera).exit_code == 0
    assert json.loads(cli("audit", "alerts", "--db", db, "--json", session=ada).stdout) == []
    assert cli("readings", "--meter", meters[2], "--db", db, session=vera).exit_code == 0
    [alert] = json.loads(cli("audit", "alerts", "--db", db, "--json", session=ada).stdout)
    assert (alert["action"], alert["target"]) == ("customers_per_hour", "operator:vera")
    assert alert["detail"] == {"customers": 3, "threshold": 2, "window_s": 3600.0}
    table = cli("audit", "alerts", "--db", db, session=ada)
    assert table.exit_code == 0 and "1 alerts" in table.stdout


def test_a_request_signed_by_an_expired_session_is_not_carried_out(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    ops = operators(db)
    olga = ops.login("olga", "operator", lifetime=2)
    asked = cli("command", "time-sync", "--concentrator", "dc-1", "--db", db, "--wait", "0",
                session=olga)  # fmt: skip
    assert asked.exit_code == 0
    time.sleep(2.5)
    expired = cli("whoami", "--db", db, session=olga)
    assert expired.exit_code == 4 and "session of olga expired at" in expired.output
    from cloud_receiver.access.policy import Principal
    from cloud_receiver.applications import requests as kinds
    from contract.commands import new_key

    s = open_storage(db)
    try:
        kinds.execute_ready(s, kinds.Keys(command=new_key()), time.time(),
                            by=Principal.system("receiver"))  # fmt: skip
        with s.transaction() as tx:
            [req] = queue.listing(tx)
        assert req.status == "expired" and s.commands() == []
    finally:
        s.close()
