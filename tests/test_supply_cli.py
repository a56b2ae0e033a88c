"""``cloud-receiver supply show|set|clear`` and the manual relay commands through the
supply state: an operator's maintenance reason goes through the request path the
service carries out; a relay-close is refused while another reason holds the supply
off; the roles that may, and bad input named."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from click.testing import CliRunner, Result
from helpers import NO_SESSION, Operators

from cloud_receiver.access.policy import Principal
from cloud_receiver.applications import requests as kinds
from cloud_receiver.applications.supply import state as supply
from cloud_receiver.cli import main
from cloud_receiver.storage import open_storage
from contract.commands import new_key

M1 = "000000000001"
KEY = new_key()


def cli(*args: str, session: Path | None = None) -> Result:
    env = {"MF_SESSION": str(session) if session is not None else NO_SESSION}
    return CliRunner().invoke(main, list(args), env=env)


def _service(db: str) -> list[str]:
    """What the running receiver does each tick with the ready requests."""
    s = open_storage(db)
    try:
        return kinds.execute_ready(s, kinds.Keys(command=KEY), time.time(),
                                   by=Principal.system("receiver"))  # fmt: skip
    finally:
        s.close()


def _asked(db: str, session: Path, *args: str) -> dict[str, object]:
    done = cli(*args, "--db", db, "--wait", "0", "--json", session=session)
    assert done.exit_code == 0, done.output
    doc: dict[str, object] = json.loads(done.stdout)
    return doc


def test_show_set_and_clear_through_the_request_path(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    s = open_storage(db)
    try:  # a prepaid cut-off, as `applications.prepay` sets it
        supply.set_reason(s, KEY, meter=M1, concentrator="dc-1", reason=supply.PREPAYMENT,
                          by="prepay:A1", now=time.time(), ref="A1")  # fmt: skip
    finally:
        s.close()
    olga = operators(db).login("olga", "operator")
    _asked(db, olga, "supply", "set", M1, "--reason", "maintenance")
    [line] = _service(db)
    assert line.endswith(": done"), line
    shown = cli("supply", "show", M1, "--db", db, "--json", session=olga)
    assert shown.exit_code == 0, shown.output
    doc = json.loads(shown.stdout)
    assert (doc["relay"], doc["cause"]) == ("open", "prepayment")
    assert [r["reason"] for r in doc["reasons"]] == ["prepayment", "maintenance"]
    assert [(h["change"], h["reason"]) for h in doc["history"]] == [
        ("set", "prepayment"), ("command", None), ("set", "maintenance")
    ]  # fmt: skip
    assert doc["more"] == 0 and doc["history"][0]["at_iso"].endswith("+08:00")
    newest = cli("supply", "show", M1, "--db", db, "--limit", "1", "--json", session=olga)
    assert [h["reason"] for h in json.loads(newest.stdout)["history"]] == ["maintenance"]
    assert json.loads(newest.stdout)["more"] == 2
    assert newest.stderr.strip() == "2 more rows; older changes: use --limit/--since"
    at = [h["at"] for h in doc["history"]]
    later = cli("supply", "show", M1, "--db", db, "--since", str(int(at[-1]) + 1), "--json",
                session=olga)  # fmt: skip
    assert json.loads(later.stdout)["history"] == [] and later.stderr == ""
    since = cli("supply", "show", M1, "--db", db, "--history", "--since", str(int(at[0])),
                "--limit", "0", session=olga)  # fmt: skip
    assert since.exit_code == 0, since.output
    assert "set prepayment" in since.stdout and "set maintenance" in since.stdout
    backwards = cli("supply", "show", M1, "--db", db, "--since", "2026-01-02", "--until",
                    "2026-01-01", session=olga)  # fmt: skip
    assert backwards.exit_code == 2 and "is after --until" in backwards.stderr
    text = cli("supply", "show", M1, "--db", db, session=olga).stdout
    assert f"meter {M1} on dc-1: supply off (relay open), cause prepayment" in text
    assert "maintenance" in text and "by operator:olga (request " in text

    # A manual relay-close may not lift another reason: refused, naming them.
    refused = cli("command", "relay-close", "--concentrator", "dc-1", "--meter", M1, "--db", db,
                  "--wait", "0", session=olga)  # fmt: skip
    assert refused.exit_code == 2
    assert f"the supply is held off by another reason ({M1}: prepayment, maintenance)" in (
        refused.output
    )
    # A manual relay-open is the `manual` reason; its relay-close lifts just that.
    _asked(db, olga, "command", "relay-open", "--concentrator", "dc-1", "--meter", M1)
    _service(db)
    s = open_storage(db)
    try:
        assert supply.get(s, M1).active(time.time()) == ["prepayment", "manual", "maintenance"]
        supply.clear_reason(s, KEY, meter=M1, reason=supply.PREPAYMENT, by="prepay:A1",
                            now=time.time())  # fmt: skip
    finally:
        s.close()
    _asked(db, olga, "supply", "clear", M1, "--reason", "maintenance")
    _service(db)
    _asked(db, olga, "command", "relay-close", "--concentrator", "dc-1", "--meter", M1)
    _service(db)
    s = open_storage(db)
    try:
        assert supply.get(s, M1).active(time.time()) == []
        actions = [c.action for c in sorted(s.commands(limit=100), key=lambda c: c.counter)]
        # the cut-off; the operator's relay-open (the relay already was open); its close.
        assert actions == ["relay_open", "relay_open", "relay_close"]
    finally:
        s.close()


def test_who_may_and_bad_input(tmp_path: Path, operators: Callable[[str], Operators]) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    ops = operators(db)
    viewer, clerk, olga = (ops.login(n, r) for n, r in (("vic", "viewer"),
                                                        ("bea", "billing-clerk"),
                                                        ("olga", "operator")))  # fmt: skip
    order = ["supply", "set", M1, "--reason", "manual", "--concentrator", "dc-1", "--db", db]
    for who, name, role in ((viewer, "vic", "viewer"), (clerk, "bea", "billing-clerk")):
        done = cli(*order, "--wait", "0", session=who)
        assert done.exit_code == 4 and f"operator:{name} ({role}) may not command.relay" in (
            done.output
        ), done.output
    cases = [
        (["supply", "show", "12345"], 2, "meter '12345': expected a 12-digit address"),
        (["supply", "show", M1], 9, f"meter {M1}: no supply state"),
        (["supply", "set", M1, "--reason", "prepayment"], 2, "'prepayment' is not one of"),
        (["supply", "set", M1, "--reason", "manual", "--wait", "0"], 2,
         "--concentrator is needed"),
        (["supply", "clear", M1, "--reason", "manual", "--wait", "0"], 2,
         f"meter {M1} has no manual reason"),
        (["supply", "set", M1, "--reason", "manual", "--concentrator", "bad id!"], 2,
         "--concentrator"),
    ]  # fmt: skip
    for args, code, message in cases:
        done = cli(*args, "--db", db, session=olga)
        assert done.exit_code == code, (args, done.exit_code, done.output)
        assert message in done.output, (args, done.output)
    s = open_storage(db)
    try:
        assert s.commands() == [] and supply.history(s, M1) == []
    finally:
        s.close()


def test_set_waits_for_the_service_and_says_what_holds_the_supply(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    olga = operators(db).login("olga", "operator")
    done: list[str] = []

    def service() -> None:  # the running receiver: carries out the request once asked
        deadline = time.monotonic() + 60
        while not done and time.monotonic() < deadline:
            done.extend(_service(db))
            time.sleep(0.05)

    worker = threading.Thread(target=service)
    worker.start()
    try:
        out = cli("supply", "set", M1, "--reason", "maintenance", "--concentrator", "dc-1",
                  "--db", db, session=olga)  # fmt: skip
    finally:
        worker.join()
    assert out.exit_code == 0, out.output
    s = open_storage(db)
    try:
        [cmd] = s.commands()
    finally:
        s.close()
    assert out.stdout.strip() == (f"meter {M1}: supply off, held by maintenance (command {cmd.id})")
