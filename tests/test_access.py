"""Operators, roles, sessions, requests and approvals (`cloud_receiver.access`), on both
storage backends where storage is involved: the permission table, role for role and
action for action; logins with password and TOTP, lockout, expiry; requests the
service refuses (forged, unapproved, expired, of a disabled operator) and those it
carries out; the audit chain and the alerts."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from helpers import Operators
from sqlalchemy import delete, insert, select, update

from cloud_receiver.access import audit, operators, sessions
from cloud_receiver.access import requests as queue
from cloud_receiver.access import settings as access_settings
from cloud_receiver.access.policy import (
    OPERATOR_ROLES,
    Action,
    Principal,
    Resource,
    Role,
    authorize,
)
from cloud_receiver.applications import requests as kinds
from cloud_receiver.applications.fleet import commands
from cloud_receiver.storage import Storage, open_storage
from cloud_receiver.storage import audit as chain
from cloud_receiver.storage.schema import approvals, audit_head, audit_log, requests
from contract import commands as wire_commands

VIEW, BILL, OPER, ADMIN = "viewer", "billing-clerk", "operator", "administrator"
# Who may take each action: written out here, independently of the policy's own table.
EXPECTED: dict[Action, set[str]] = {
    Action.DATA_READ: {VIEW, BILL, OPER, ADMIN},
    Action.FLEET_READ: {VIEW, BILL, OPER, ADMIN},
    Action.PREPAY_READ: {VIEW, BILL, OPER, ADMIN},
    Action.REQUEST_READ: {VIEW, BILL, OPER, ADMIN},
    Action.PREPAY_OPEN: {BILL, ADMIN},
    Action.PREPAY_TOPUP: {BILL, ADMIN},
    Action.CUSTOMER_MANAGE: {BILL, ADMIN},
    Action.DR_ENROL: {OPER, ADMIN},
    Action.DR_EVENT: {OPER, ADMIN},
    Action.COMMAND_QUERY: {OPER, ADMIN},
    Action.COMMAND_CONFIGURE: {OPER, ADMIN},
    Action.COMMAND_RELAY: {OPER, ADMIN},
    Action.ARCHIVE_CHANGE: {OPER, ADMIN},
    Action.ROLLOUT_START: {OPER, ADMIN},
    Action.ROLLOUT_ABORT: {OPER, ADMIN},
    Action.OPERATOR_READ: {ADMIN},
    Action.OPERATOR_MANAGE: {ADMIN},
    Action.SETTINGS_CHANGE: {ADMIN},
    Action.AUDIT_READ: {ADMIN},
    Action.BACKUP: {ADMIN},
    Action.KEY_REVOKE: {ADMIN},
}
KEY = wire_commands.new_key()
M1, M2 = "000000000001", "000000000002"


def test_the_expected_table_covers_every_action() -> None:
    resource_rules = {Action.REQUEST_APPROVE, Action.REQUEST_CANCEL}
    assert set(EXPECTED) | resource_rules == set(Action)


@pytest.mark.parametrize("role", [str(r) for r in OPERATOR_ROLES])
@pytest.mark.parametrize("action", sorted(EXPECTED, key=str))
def test_each_role_may_do_exactly_what_the_table_says(role: str, action: Action) -> None:
    who = Principal.operator("someone", Role(role), "s", "h")
    decision = authorize(who, action, Resource("meter", M1))
    assert bool(decision) == (role in EXPECTED[action]), decision.reason
    if not decision:
        assert f"({role}) may not {action}" in decision.reason


@pytest.mark.parametrize("role", [str(r) for r in OPERATOR_ROLES])
@pytest.mark.parametrize("asked", [Action.COMMAND_RELAY, Action.ARCHIVE_CHANGE, Action.DR_EVENT])
def test_approving_needs_a_role_that_may_do_it_and_another_operator(
    role: str, asked: Action
) -> None:
    other = Resource.request(7, "olga", asked)
    who = Principal.operator("ivan", Role(role), "s", "h")
    assert bool(authorize(who, Action.REQUEST_APPROVE, other)) == (role in (OPER, ADMIN))
    own = Resource.request(7, "ivan", asked)
    decision = authorize(who, Action.REQUEST_APPROVE, own)
    assert not decision
    if role in (OPER, ADMIN):
        assert "a second operator must approve it" in decision.reason


@pytest.mark.parametrize("role", [str(r) for r in OPERATOR_ROLES])
def test_a_request_is_cancelled_by_its_operator_or_an_administrator(role: str) -> None:
    who = Principal.operator("ivan", Role(role), "s", "h")
    others = Resource.request(7, "olga", Action.COMMAND_RELAY)
    own = Resource.request(8, "ivan", Action.COMMAND_RELAY)
    assert bool(authorize(who, Action.REQUEST_CANCEL, others)) == (role == ADMIN)
    assert bool(authorize(who, Action.REQUEST_CANCEL, own)) == (role != VIEW)  # viewers ask nothing


def test_the_system_principal_has_its_own_row() -> None:
    service = Principal.system("receiver")
    assert service.label == "system:receiver"
    assert authorize(service, Action.COMMAND_RELAY)
    assert not authorize(service, Action.OPERATOR_MANAGE)
    assert not authorize(
        service, Action.REQUEST_APPROVE, Resource.request(1, "x", Action.DATA_READ)
    )


# ------------------------------------------------------------------ fixtures
@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'r.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def storage(db: str) -> Iterator[Storage]:
    s = open_storage(db)
    yield s
    s.close()


@pytest.fixture
def ops(db: str, operators: Callable[[str], Operators]) -> Operators:
    return operators(db)


def _acting(storage: Storage, session: Path) -> tuple[Principal, Ed25519PrivateKey]:
    file = sessions.SessionFile.read(session)
    with storage.transaction() as tx:
        return sessions.open_session(tx, file, time.time(), "test@host"), file.key


def _entries(storage: Storage, **kw: Any) -> list[chain.Entry]:
    with storage.transaction() as tx:
        return chain.entries(tx, **kw)


def _set(storage: Storage, name: str, value: str) -> None:
    with storage.transaction() as tx:
        access_settings.store(tx, name, value, "test")


def _login(
    storage: Storage,
    ops: Operators,
    name: str,
    *,
    code: str | None = "auto",
    password: str = Operators.PASSWORD,
    where: str = "test@host",
    lifetime: float | None = None,
) -> sessions.Login:
    return sessions.login(
        storage,
        name,
        password,
        ops.code(name) if code == "auto" else code,
        where=where,
        now=time.time(),
        lifetime=lifetime,
    )


# ------------------------------------------------------------------ logins
def test_operators_and_administrators_need_a_totp_code(storage: Storage, ops: Operators) -> None:
    assert ops.add("olga", OPER) is not None and ops.add("ada", ADMIN) is not None
    assert ops.add("vera", VIEW) is None  # a viewer has no second factor unless asked for
    for name in ("olga", "ada"):
        with pytest.raises(sessions.LoginRefused, match=f"operator {name} needs a TOTP code"):
            _login(storage, ops, name, code=None)
        secret = ops.secrets[name]
        assert secret is not None
        wrong = str((int(pyotp.TOTP(secret).now()) + 1) % 1_000_000).zfill(6)
        with pytest.raises(sessions.LoginRefused, match="wrong operator name, password or TOTP"):
            _login(storage, ops, name, code=wrong)
        with pytest.raises(sessions.LoginRefused, match="wrong operator name, password or TOTP"):
            _login(storage, ops, name, password="not the password at all")
        done = _login(storage, ops, name)
        assert done.principal.role is Role(ops_role := {"olga": OPER, "ada": ADMIN}[name]), ops_role
    vera = _login(storage, ops, "vera", code=None)
    assert vera.principal.label == "operator:vera"
    with pytest.raises(sessions.LoginRefused, match="wrong operator name"):
        _login(storage, ops, "nobody", code=None)
    failed = _entries(storage, kinds=("login_failed",))
    assert [(e.target, e.detail_doc()["reason"]) for e in failed] == [
        ("operator:olga", "no TOTP code"),
        ("operator:olga", "wrong or reused TOTP code"),
        ("operator:olga", "wrong password"),
        ("operator:ada", "no TOTP code"),
        ("operator:ada", "wrong or reused TOTP code"),
        ("operator:ada", "wrong password"),
        ("operator:nobody", "unknown operator"),
    ]
    assert len(_entries(storage, kinds=("login",))) == 3


def test_a_totp_code_is_good_once(storage: Storage, ops: Operators) -> None:
    ops.add("olga", OPER)
    code = ops.code("olga")
    sessions.login(storage, "olga", ops.PASSWORD, code, where="h", now=time.time())
    with pytest.raises(sessions.LoginRefused):
        sessions.login(storage, "olga", ops.PASSWORD, code, where="h", now=time.time())


def test_repeated_failures_alert_then_lock_the_operator_out(
    storage: Storage, ops: Operators
) -> None:
    ops.add("olga", OPER)
    _set(storage, "alert-login-failures", "2")
    _set(storage, "lockout-failures", "3")
    _set(storage, "lockout-duration", "1h")
    for _ in range(2):
        with pytest.raises(sessions.LoginRefused):
            _login(storage, ops, "olga", code="000000", password="a wrong password")
    alerts = _entries(storage, kinds=("alert",))
    assert [(e.action, e.target) for e in alerts] == [("repeated_failures", "operator:olga")]
    with pytest.raises(sessions.LoginRefused, match="now locked out until"):
        _login(storage, ops, "olga", code="000000", password="a wrong password")
    # Locked: even the right password and code are refused, and say so.
    with pytest.raises(sessions.LoginRefused, match="locked out after repeated failed logins"):
        _login(storage, ops, "olga")
    alerts = _entries(storage, kinds=("alert",))
    assert [e.action for e in alerts] == ["repeated_failures", "lockout"]
    with storage.transaction() as tx:
        assert operators.get(tx, "olga").locked_until is not None
        operators.set_disabled(tx, "olga", False, time.time())  # an administrator's enable
    assert _login(storage, ops, "olga").principal.name == "olga"


def test_a_login_from_a_new_origin_raises_an_alert(storage: Storage, ops: Operators) -> None:
    ops.add("vera", VIEW)
    assert not _login(storage, ops, "vera", code=None, where="vera@desk").new_origin  # the first
    assert _login(storage, ops, "vera", code=None, where="vera@laptop").new_origin
    assert not _login(storage, ops, "vera", code=None, where="vera@laptop").new_origin
    [alert] = _entries(storage, kinds=("alert",))
    assert (alert.action, alert.target) == ("new_origin", "operator:vera")
    assert alert.detail_doc() == {"origin": "vera@laptop", "known": ["vera@desk"]}


def test_sessions_expire_end_and_belong_to_one_database(
    storage: Storage, ops: Operators, tmp_path: Path
) -> None:
    ops.add("vera", VIEW)
    short = _login(storage, ops, "vera", code=None, lifetime=1.0)
    path = tmp_path / "s.json"
    short.file.write(path)
    assert path.stat().st_mode & 0o777 == 0o600
    with storage.transaction() as tx:
        assert sessions.open_session(tx, short.file, time.time(), "h").name == "vera"
        with pytest.raises(sessions.NotLoggedIn, match="expired at"):
            sessions.open_session(tx, short.file, time.time() + 2, "h")
    # A session file others can read is refused; a damaged one too.
    os.chmod(path, 0o644)
    with pytest.raises(sessions.NotLoggedIn, match="open to other users"):
        sessions.SessionFile.read(path)
    os.chmod(path, 0o600)
    path.write_text("{not json")
    with pytest.raises(sessions.NotLoggedIn, match="damaged"):
        sessions.SessionFile.read(path)
    with pytest.raises(sessions.NotLoggedIn, match="no session file"):
        sessions.SessionFile.read(tmp_path / "none.json")
    # Logged out: the database no longer accepts it. Another key under its id: refused.
    done = _login(storage, ops, "vera", code=None)
    other = sessions.SessionFile(
        done.file.session, "vera", done.file.expires_at, Ed25519PrivateKey.generate()
    )
    with storage.transaction() as tx, pytest.raises(sessions.NotLoggedIn, match="not the session"):
        sessions.open_session(tx, other, time.time(), "h")
    sessions.logout(storage, done.principal, done.file.key, time.time())
    with storage.transaction() as tx, pytest.raises(sessions.NotLoggedIn, match="ended at"):
        sessions.open_session(tx, done.file, time.time(), "h")
    # Disabled: every session of the operator ends.
    again = _login(storage, ops, "vera", code=None)
    with storage.transaction() as tx:
        operators.set_disabled(tx, "vera", True, time.time())
    with storage.transaction() as tx, pytest.raises(sessions.NotLoggedIn):
        sessions.open_session(tx, again.file, time.time(), "h")
    with pytest.raises(sessions.LoginRefused, match="operator vera is disabled"):
        _login(storage, ops, "vera", code=None)


def test_the_last_administrator_stays(storage: Storage, ops: Operators) -> None:
    ops.add("ada", ADMIN)
    with storage.transaction() as tx, pytest.raises(sessions.AccessError, match="last active"):
        operators.set_disabled(tx, "ada", True, time.time())
    with storage.transaction() as tx, pytest.raises(sessions.AccessError, match="last active"):
        operators.set_role(tx, "ada", Role.OPERATOR, time.time())
    ops.add("alan", ADMIN)
    with storage.transaction() as tx:
        operators.set_role(tx, "ada", Role.VIEWER, time.time())
        assert operators.get(tx, "ada").role is Role.VIEWER


@pytest.mark.parametrize(
    ("name", "password", "message"),
    [
        ("bad name", "long enough password", "operator name 'bad name': expected 1-64"),
        ("x" * 65, "long enough password", "expected 1-64 characters"),
        ("ok", "short", r"password: at least 10 characters \(got 5\)"),
    ],
)
def test_bad_operator_input_is_named_and_adds_nothing(
    storage: Storage, name: str, password: str, message: str
) -> None:
    with storage.transaction() as tx, pytest.raises(operators.OperatorError, match=message):
        operators.add(tx, name, Role.VIEWER, password, with_totp=False, by="t", now=0)
    with storage.transaction() as tx:
        assert operators.all_operators(tx) == []
    with pytest.raises(operators.OperatorError, match="role 'root': expected one of viewer"):
        operators.parse_role("root")


# ------------------------------------------------------------------ requests
def _relay_open(meters: list[str]) -> dict[str, Any]:
    return {
        "id": commands.new_command_id(),
        "concentrator": "dc-1",
        "action": "relay_open",
        "meters": meters,
        "params": {},
        "not_before": None,
        "valid_for_s": 600.0,
    }


def _service(storage: Storage, now: float | None = None) -> list[str]:
    return kinds.execute_ready(
        storage, kinds.Keys(command=KEY), now or time.time(), by=Principal.system("receiver")
    )


def _status(storage: Storage, request_id: int) -> queue.Request:
    with storage.transaction() as tx:
        return queue.get(tx, request_id)


def test_a_relay_open_above_the_threshold_waits_for_a_second_operator(
    storage: Storage, ops: Operators
) -> None:
    _set(storage, "relay-open-approval-above", "1")
    olga, olga_key = _acting(storage, ops.login("olga", OPER))
    small = kinds.submit(storage, olga, olga_key, "command", _relay_open([M1]), now=time.time())
    assert small.status == "ready"  # one meter: at the threshold, no approval needed
    big = kinds.submit(storage, olga, olga_key, "command", _relay_open([M1, M2]), now=time.time())
    assert big.status == "awaiting_approval" and big.approvals_needed == 1
    _service(storage)
    assert _status(storage, small.id).status == "done"
    assert _status(storage, big.id).status == "awaiting_approval"  # not signed, not sent
    assert [c.id for c in storage.commands()] == [small.params["id"]]
    # The one who asked cannot approve; nor can roles that may not open relays.
    with pytest.raises(queue.Denied, match="a second operator must approve it"):
        queue.approve(storage, olga, olga_key, big.id, time.time())
    for name, role in (("vera", VIEW), ("bea", BILL)):
        who, key = _acting(storage, ops.login(name, role))
        with pytest.raises(queue.Denied, match="may not"):
            queue.approve(storage, who, key, big.id, time.time())
    ivan, ivan_key = _acting(storage, ops.login("ivan", OPER))
    approved = queue.approve(storage, ivan, ivan_key, big.id, time.time())
    assert approved.status == "ready"
    with pytest.raises(queue.RequestError, match="nothing to approve"):
        queue.approve(storage, ivan, ivan_key, big.id, time.time())
    _service(storage)
    done = _status(storage, big.id)
    assert done.status == "done" and done.result is not None
    [cmd] = storage.commands(command_id=done.result["id"])
    assert cmd.meters == [M1, M2] and cmd.issued_by == f"operator:olga (request {big.id})"
    opened = wire_commands.open_signed(cmd.blob, KEY.public_key())
    assert opened.action == "relay_open" and opened.meters == (M1, M2)
    trail = [
        (e.kind, e.principal, e.outcome) for e in _entries(storage, target=f"request:{big.id}")
    ]
    assert trail == [
        ("request", "operator:olga", "ok"),
        ("denied", "operator:olga", "denied"),
        ("denied", "operator:vera", "denied"),
        ("denied", "operator:bea", "denied"),
        ("approval", "operator:ivan", "ok"),
        ("execution", "system:receiver", "done"),
    ]


def _insert_request(storage: Storage, session: str, **overrides: Any) -> int:
    now = time.time()
    row: dict[str, Any] = {
        "nonce": os.urandom(8).hex(),
        "kind": "command",
        "action": "command.relay",
        "params": json.dumps(_relay_open([M1])),
        "attachment": None,
        "attachment_sha256": None,
        "requested_by": "olga",
        "session": session,
        "origin": "nowhere",
        "created_at": now,
        "expires_at": now + 600,
        "approvals_needed": 0,
        "signature": b"\0" * 64,
        "status": "ready",
        "result": None,
        "updated_at": now,
    }
    row.update(overrides)
    with storage.transaction() as tx:
        return int(tx.execute(insert(requests).values(**row).returning(requests.c.id)).scalar_one())


def test_requests_the_service_refuses(storage: Storage, ops: Operators) -> None:
    olga, olga_key = _acting(storage, ops.login("olga", OPER))
    assert olga.session is not None
    # 1. Written straight into the database: signed by no live session.
    forged = _insert_request(storage, olga.session)
    unknown = _insert_request(storage, "no-such-session")
    # 2. Signed, then edited in the database (the meters and the approvals it needs).
    _set(storage, "relay-open-approval-above", "1")
    signed = kinds.submit(
        storage, olga, olga_key, "command", _relay_open([M1, M2]), now=time.time()
    )
    with storage.transaction() as tx:
        tx.execute(
            update(requests)
            .where(requests.c.id == signed.id)
            .values(approvals_needed=0, status="ready")
        )
    # 3. Signed with approvals_needed 0 by a command line that skipped the rule.
    cheat = queue.submit(
        storage,
        olga,
        olga_key,
        kind="command",
        action=Action.COMMAND_RELAY,
        params=_relay_open([M1, M2]),
        approvals_needed=0,
        lifetime=600,
        session_expires=time.time() + 600,
        now=time.time(),
    )
    # 4. An approval written straight into the database does not count.
    with storage.transaction() as tx:
        tx.execute(
            insert(approvals).values(
                request=cheat.id,
                operator="ivan",
                session=olga.session,
                at=time.time(),
                signature=b"\1" * 64,
            )
        )
    # 5. A role that may not: a viewer's request (made by hand, properly signed).
    vera, vera_key = _acting(storage, ops.login("vera", VIEW))
    viewer = queue.submit(
        storage,
        vera,
        vera_key,
        kind="command",
        action=Action.COMMAND_RELAY,
        params=_relay_open([M1]),
        approvals_needed=0,
        lifetime=600,
        session_expires=time.time() + 600,
        now=time.time(),
    )
    # 6. A viewer's relay-open disguised as a read.
    disguised = queue.submit(storage, vera, vera_key, kind="command", action=Action.DATA_READ,
                             params=_relay_open([M1]), approvals_needed=0, lifetime=600,
                             session_expires=time.time() + 600, now=time.time())  # fmt: skip
    _service(storage)
    reasons = {
        r: (_status(storage, r).result or {}).get("error", "")
        for r in (forged, unknown, signed.id, cheat.id, viewer.id, disguised.id)
    }
    assert all(_status(storage, r).status == "refused" for r in reasons), reasons
    assert "signature does not verify" in reasons[forged]
    assert "session is not known" in reasons[unknown]
    assert "signature does not verify" in reasons[signed.id]
    assert "needs 1 approval(s) by another operator, has 0" in reasons[cheat.id]
    assert "operator:vera (viewer) may not command.relay" in reasons[viewer.id]
    assert "it asks for command.relay but names data.read" in reasons[disguised.id]
    assert storage.commands() == []  # nothing signed, nothing sent
    forgeries = {e.target for e in _entries(storage, kinds=("alert",))}
    assert forgeries == {f"request:{r}" for r in (forged, unknown, signed.id, disguised.id)}


def test_a_request_outlives_neither_its_session_nor_its_operator(
    storage: Storage, ops: Operators
) -> None:
    olga, olga_key = _acting(storage, ops.login("olga", OPER, lifetime=60))
    late = kinds.submit(storage, olga, olga_key, "command", _relay_open([M1]), now=time.time())
    assert late.expires_at <= time.time() + 60  # never longer than the session
    _service(storage, time.time() + 61)
    assert _status(storage, late.id).status == "expired"
    olga, olga_key = _acting(storage, ops.login("olga", fresh=True))
    gone = kinds.submit(storage, olga, olga_key, "command", _relay_open([M1]), now=time.time())
    with storage.transaction() as tx:
        operators.set_role(tx, "olga", Role.VIEWER, time.time())
    _service(storage)
    refused = _status(storage, gone.id)
    assert refused.status == "refused"
    assert refused.result is not None and "may not command.relay" in refused.result["error"]
    assert storage.commands() == []


def test_an_archive_change_is_carried_out_by_its_approval(storage: Storage, ops: Operators) -> None:
    olga, olga_key = _acting(storage, ops.login("olga", OPER))
    rows = [["T1", "TA", "total", "", "", "1"], ["C1", "TA", "customer", "A1", "", "1"]]
    req = kinds.submit(
        storage,
        olga,
        olga_key,
        "archive.import",
        {"records": rows, "replace": False, "source": "a.csv"},
        now=time.time(),
    )
    assert req.status == "awaiting_approval"
    assert _service(storage) == [] and storage.archive() == []  # waits, even at the service
    ivan, ivan_key = _acting(storage, ops.login("ivan", OPER))
    queue.approve(storage, ivan, ivan_key, req.id, time.time())
    kinds.execute_ready(storage, kinds.Keys(), time.time(), only=req.id, by=Principal.system("cli"))
    assert _status(storage, req.id).result == {
        "imported": 2,
        "areas": 1,
        "archive": 2,
        "assigned": 0,
    }
    assert [r.meter for r in storage.archive()] == ["T1", "C1"]
    # A bad archive is refused when asked for, naming line and column; nothing queued.
    bad = {"records": [["T9", "TA", "total", "", "", "1"]], "replace": False, "source": "b.csv"}
    with pytest.raises(kinds.archive.ArchiveError, match="already has total meter T1"):
        kinds.submit(storage, olga, olga_key, "archive.import", bad, now=time.time())
    with storage.transaction() as tx:
        assert [r.id for r in queue.listing(tx)] == [req.id]


def test_a_request_can_be_cancelled_by_its_operator(storage: Storage, ops: Operators) -> None:
    olga, olga_key = _acting(storage, ops.login("olga", OPER))
    ivan, ivan_key = _acting(storage, ops.login("ivan", OPER))
    req = kinds.submit(
        storage,
        olga,
        olga_key,
        "archive.import",
        {"records": [["T1", "TA", "total", "", "", "1"]], "replace": True, "source": "a.csv"},
        now=time.time(),
    )
    with pytest.raises(queue.Denied, match="may cancel only their own requests"):
        queue.cancel(storage, ivan, ivan_key, req.id, time.time())
    assert queue.cancel(storage, olga, olga_key, req.id, time.time()).status == "cancelled"
    with pytest.raises(queue.RequestError, match="nothing to approve"):
        queue.approve(storage, ivan, ivan_key, req.id, time.time())
    with pytest.raises(queue.UnknownRequest, match="no request 999"):
        queue.approve(storage, ivan, ivan_key, 999, time.time())


# ------------------------------------------------------------------ the audit chain
def _fill(storage: Storage, n: int) -> None:
    who = Principal.system("test", "h")
    with storage.transaction() as tx:
        for i in range(n):
            audit.record(
                tx,
                who,
                kind="read",
                action="data.read",
                target=f"meter:{i:012d}",
                at=1000.0 + i,
                detail={"customers": 1, "i": i, "名": "台区"},
            )


def _verify(storage: Storage, anchor: tuple[int, str] | None = None) -> chain.ChainReport:
    with storage.transaction() as tx:
        return chain.verify(tx, anchor)


def test_the_audit_chain_verifies_and_names_an_edited_entry(storage: Storage) -> None:
    _fill(storage, 6)
    report = _verify(storage)
    assert report.intact and report.entries == report.head_seq == 6
    with storage.transaction() as tx:
        tx.execute(update(audit_log).where(audit_log.c.seq == 3).values(target="meter:X"))
    report = _verify(storage)
    assert report.problems == [(3, "entry 3 was altered: its content does not match its hash")]
    # Edited and its hash recomputed: the next entry still holds the old one.
    with storage.transaction() as tx:
        row = tx.execute(select(audit_log).where(audit_log.c.seq == 3)).mappings().one()
        fields = {
            k: row[k]
            for k in (
                "at",
                "principal",
                "origin",
                "kind",
                "action",
                "target",
                "outcome",
                "detail",
                "session",
                "signature",
            )
        }
        digest = chain.entry_hash(3, row["prev_hash"], **fields)
        tx.execute(update(audit_log).where(audit_log.c.seq == 3).values(hash=digest))
    assert _verify(storage).problems == [
        (3, "entry 3 was altered or replaced: entry 4 recorded a different hash for it")
    ]


@pytest.mark.parametrize(
    ("deleted", "problem"),
    [
        ((4,), (4, "entry 4 missing (deleted)")),
        ((2, 3), (2, "entries 2-3 missing (deleted)")),
        ((1,), (1, "entry 1 missing (deleted)")),
        ((6,), (6, "entry 6 missing (deleted; the head says 6 entries)")),
    ],
)
def test_a_deleted_audit_entry_is_named(
    storage: Storage, deleted: tuple[int, ...], problem: tuple[int, str]
) -> None:
    _fill(storage, 6)
    with storage.transaction() as tx:
        tx.execute(delete(audit_log).where(audit_log.c.seq.in_(deleted)))
    assert _verify(storage).problems == [problem]


def test_the_newest_entries_rewritten_with_the_head_need_an_anchor(storage: Storage) -> None:
    _fill(storage, 6)
    before = _verify(storage)
    anchor = (6, before.head_hash)
    with storage.transaction() as tx:  # the last entry deleted and the head moved back
        tx.execute(delete(audit_log).where(audit_log.c.seq == 6))
        prev = tx.execute(select(audit_log.c.hash).where(audit_log.c.seq == 5)).scalar_one()
        tx.execute(update(audit_head).values(seq=5, hash=prev))
    assert _verify(storage).intact  # consistent by itself ...
    report = _verify(storage, anchor)  # ... but not with what was recorded
    assert report.problems == [(6, "anchor: entry 6 is beyond the head (5): entries deleted")]


def test_an_operator_entry_written_straight_into_the_database_is_forged(
    storage: Storage, ops: Operators
) -> None:
    vera, key = _acting(storage, ops.login("vera", VIEW))
    with storage.transaction() as tx:
        audit.record(
            tx,
            vera,
            kind="read",
            action="data.read",
            target="meter:1",
            at=time.time(),
            detail={"customers": 1},
            key=key,
        )
        other = Ed25519PrivateKey.generate()
        audit.record(
            tx,
            vera,
            kind="read",
            action="data.read",
            target="meter:2",
            at=time.time(),
            detail={"customers": 1},
            key=other,
        )
    report = _verify(storage)
    [(seq, problem)] = report.problems
    assert seq == report.head_seq and "signature does not verify" in problem


def test_appends_from_two_connections_keep_one_chain(db: str) -> None:
    import threading

    def append(n: int) -> None:
        s = open_storage(db)
        try:
            _fill(s, n)
        finally:
            s.close()

    threads = [threading.Thread(target=append, args=(20,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    s = open_storage(db)
    try:
        report = _verify(s)
    finally:
        s.close()
    assert report.intact and report.entries == 60


# ------------------------------------------------------------------ alerts
def test_reading_many_customers_in_an_hour_raises_one_alert(
    storage: Storage, ops: Operators
) -> None:
    _set(storage, "alert-customers-per-hour", "3")
    conf = access_settings.Settings(alert_customers_per_hour=3)
    vera, key = _acting(storage, ops.login("vera", VIEW))
    now = time.time()

    def read(target: str, customers: int = 1) -> chain.Entry | None:
        with storage.transaction() as tx:
            audit.record(
                tx,
                vera,
                kind="read",
                action="data.read",
                target=target,
                at=now,
                detail={"customers": customers},
                key=key,
            )
            return audit.after_read(tx, vera, conf, now)

    for meter in ("meter:1", "meter:2", "meter:1", "account:A3"):
        assert read(meter) is None  # three customers: at the threshold
    fired = read("meter:4")
    assert fired is not None and fired.action == "customers_per_hour"
    assert fired.target == "operator:vera" and fired.detail_doc()["customers"] == 4
    assert read("meter:5") is None  # once an hour
    assert read("area:TA-1", customers=10) is None
    with storage.transaction() as tx:  # an hour later the count starts again
        assert audit.customers_read(tx, "operator:vera", now + 3601) == 0


def test_settings_are_checked_and_stored(storage: Storage) -> None:
    with pytest.raises(access_settings.SettingError, match="unknown setting 'lockout'"):
        access_settings.parse("lockout", "3")
    with pytest.raises(access_settings.SettingError, match="lockout-failures: '0'"):
        access_settings.parse("lockout-failures", "0")
    with pytest.raises(access_settings.SettingError, match="at most 7 days"):
        access_settings.parse("session-lifetime", "30d")
    _set(storage, "session-lifetime", "2h")
    with storage.transaction() as tx:
        assert access_settings.load(tx).session_lifetime == 7200.0
