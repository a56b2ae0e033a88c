"""Signed commands end to end through a real Mosquitto with TLS: `cloud-receiver command`
(a request signed by the operator's session) → the receiver service (checks it, signs
the command with the key only it holds) → broker → concentrator → simulated meter relay,
and the outcome back up the encrypted uplink. A relay-open above the approval threshold
waits for a second operator — not the one who asked — and only then moves the relay.
Then forged, expired, replayed and misaddressed commands, published straight onto the
concentrator's ``cmd`` topic — through the real broker (its ACL stops them) and through
a broker without ACLs (a compromised one) — and a request row written straight into the
database: each is refused and audited, and the relay never moves."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import DaemonProcess, Operators, receiver_cli, receiver_json, truth_of, wait_for
from mqtt_harness import Broker, Peer
from test_uplink_e2e import Receiver

from cloud_receiver.applications.fleet import pki
from cloud_receiver.storage import SqliteStorage
from concentrator.storage import Store
from contract import commands as wire_commands
from hil_sim.fleet import add_uplink
from hil_sim.process import SimProcess

pytestmark = pytest.mark.slow

CID = "dc-cmd"


def _command(rdb: Path, session: Path, *args: str) -> str:
    doc = receiver_json("command", *args, "--concentrator", CID, "--db", f"sqlite:///{rdb}",
                        "--json", session=session)  # fmt: skip
    command_id: str = doc["id"]
    return command_id


def _request_status(rdb: Path, request_id: int) -> str:
    from cloud_receiver.access import requests as queue

    s = SqliteStorage(rdb)
    try:
        with s.transaction() as tx:
            return queue.get(tx, request_id).status
    finally:
        s.close()


def _status(rdb: Path, command_id: str) -> str | None:
    s = SqliteStorage(rdb)
    try:
        rows = s.commands(command_id=command_id)
    finally:
        s.close()
    return rows[0].status if rows else None


def _relay_truth(sim: SimProcess) -> list[tuple[str, str]]:
    return [(r.meter, r.value) for r in truth_of(sim.truth) if r.quantity == "relay"]


def _refusals(db: Path) -> list[str]:
    with Store.open(db) as store:
        return [
            str(e.event.detail.get("reason"))
            for e in store.events(kind="command")
            if e.event.detail.get("result") == "refused"
        ]


def _store_readings(db: Path, meter: str) -> list[Any]:
    with Store.open(db) as store:
        return list(store.get_readings(meter=meter))


def test_signed_commands_switch_the_relay_and_forgeries_never_do(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    cfg, db, rdb = tmp_path / "c.toml", tmp_path / "store.db", tmp_path / "receiver.db"
    url = f"sqlite:///{rdb}"
    broker = Broker(tmp_path / "broker")
    broker.start()
    sim = SimProcess(
        ["bus", "--link", str(tmp_path / "bus1"), "--meters", "2", "--baud", "9600",
         "--cadence", "5s", "--write-config", str(cfg), "--store", str(db)]
    )  # fmt: skip
    sim.start()
    frag = pki.provision(broker.pki_dir, CID, broker_host="127.0.0.1", broker_port=broker.port)
    pki.provision(broker.pki_dir, "dc-other", broker_host="127.0.0.1", broker_port=broker.port)
    add_uplink(cfg, frag, concentrator_id=CID, overrides={"ack_timeout_s": 5.0, "poll_s": 0.5})
    receiver = Receiver(broker, rdb, tmp_path / "receiver.log")
    receiver.start()
    daemon = DaemonProcess(cfg)
    m1, m2 = sim.meters
    try:
        # The concentrator has connected (and subscribed to its cmd topic) once a batch
        # of its own has reached the receiver.
        def heard() -> bool:
            if not rdb.exists():
                return False
            s = SqliteStorage(rdb)
            try:
                return any(c.concentrator == CID for c in s.concentrators())
            finally:
                s.close()

        wait_for(heard, 120, "the concentrator's first batch at the receiver")
        ops = operators(url)
        olga, ivan = ops.login("olga", "operator"), ops.login("ivan", "operator")
        ada = ops.login("ada", "administrator")

        # Above the threshold (lowered to 0 meters here) a relay-open waits for a second
        # operator; the service neither signs nor sends it until then.
        done = receiver_cli("settings", "set", "relay-open-approval-above", "0", "--db", url,
                            session=ada)  # fmt: skip
        assert done.returncode == 0, done.stderr
        asked = receiver_json("command", "relay-open", "--meter", m1, "--concentrator", CID,
                              "--db", url, "--json", session=olga)  # fmt: skip
        assert asked["status"] == "awaiting_approval"
        opened, request = asked["id"], asked["request"]
        time.sleep(3)  # three ticks of the service
        assert _status(rdb, opened) is None and _relay_truth(sim) == []
        own = receiver_cli("approve", str(request), "--db", url, session=olga)
        assert own.returncode == 4 and "a second operator must approve it" in own.stderr
        assert _request_status(rdb, request) == "awaiting_approval"
        approved = receiver_json("approve", str(request), "--db", url, "--json", session=ivan)
        assert approved["id"] == opened and approved["counter"] == 1
        wait_for(lambda: _status(rdb, opened) == "done", 90, "relay-open done")
        s = SqliteStorage(rdb)
        try:
            [row] = s.commands(command_id=opened)
            log = [status for _, status, _ in s.command_log(opened)]
        finally:
            s.close()
        assert row.result is not None
        assert row.result["results"] == [
            {"meter": m1, "result": "ok", "relay_state": "open", "status_word_3": "0x0010"}
        ]
        assert log == ["issued", "published", "done"]
        assert _relay_truth(sim) == [(m1, "open")]  # the meter's own record: it opened
        assert row.issued_by == f"operator:olga (request {request})"
        done = receiver_cli("settings", "set", "relay-open-approval-above", "10", "--db", url,
                            session=ada)  # fmt: skip
        assert done.returncode == 0, done.stderr

        closed = _command(rdb, olga, "relay-close", "--meter", m1)
        wait_for(lambda: _status(rdb, closed) == "done", 90, "relay-close done")
        assert _relay_truth(sim) == [(m1, "open"), (m1, "closed")]

        # A meter without relay passwords, or unknown here: failed, with the reason.
        unknown = _command(rdb, olga, "relay-open", "--meter", "999999999999")
        wait_for(lambda: _status(rdb, unknown) == "failed", 90, "a refused target")

        # Clocks: the simulated meters' clocks are off by up to 20 s; a check finds it,
        # a broadcast time sync fixes it, a second check finds them close.
        def result(command_id: str) -> dict[str, Any]:
            wait_for(lambda: _status(rdb, command_id) == "done", 90, f"command {command_id}")
            s = SqliteStorage(rdb)
            try:
                doc = s.commands(command_id=command_id)[0].result
            finally:
                s.close()
            assert doc is not None
            return doc

        first = result(_command(rdb, olga, "clock-check", "--meter", m1, "--meter", m2,
                                "--threshold", "0.5"))  # fmt: skip
        drifts = {r["meter"]: r["drift_s"] for r in first["results"]}
        with Store.open(db) as store:
            flagged = {e.event.meter for e in store.events(kind="clock_drift")}
        assert flagged == {m for m, d in drifts.items() if abs(d) > 0.5}
        assert flagged  # seed 0 puts at least one clock seconds off
        sync = result(_command(rdb, olga, "time-sync"))
        assert [r["result"] for r in sync["results"]] == ["ok"]
        again = result(_command(rdb, olga, "clock-check", "--meter", m1, "--meter", m2,
                                "--threshold", "3"))  # fmt: skip
        assert not any(r["beyond_threshold"] for r in again["results"]), again

        # An on-demand read, answered in the command's result.
        read = result(_command(rdb, olga, "read", "--meter", m2, "--quantity", "voltage_a"))
        [row] = read["results"]
        told = {(r.meter, r.value) for r in truth_of(sim.truth) if r.quantity == "voltage_a"}
        assert (m2, row["values"]["voltage_a"][0]) in told

        # Remove a meter, then add it back: polling stops, then resumes.
        removed = result(_command(rdb, olga, "remove-meter", "--meter", m2))
        assert removed["results"][0]["meters"] == 1
        added = result(
            _command(rdb, olga, "add-meter", "--meter", m2, "--bus", "bus1", "--group", "dlt645")
        )
        assert added["results"][0]["meters"] == 2
        since = time.time()
        wait_for(
            lambda: any(r.reading.read_at > since for r in _store_readings(db, m2)),
            60,
            "the re-added meter polled",
        )
        dup = _command(rdb, olga, "add-meter", "--meter", m2, "--bus", "bus1", "--group", "dlt645")
        wait_for(lambda: _status(rdb, dup) == "failed", 90, "adding a meter twice refused")

        # --- forgeries -------------------------------------------------------------
        key = pki.command_key(broker.pki_dir)
        now = time.time()

        def signed(**kw: object) -> bytes:
            base: dict[str, object] = {
                "id": "forged", "concentrator": CID, "counter": 1000, "action": "relay_open",
                "meters": (m2,), "not_before": now - 60, "not_after": now + 600,
                "issued_at": now - 60,
            }  # fmt: skip
            base.update(kw)
            return wire_commands.sign(wire_commands.Command(**base), key)  # type: ignore[arg-type]

        s = SqliteStorage(rdb)
        try:
            replay = s.commands(command_id=opened)[0].blob
        finally:
            s.close()
        forged = {
            "bad signature": wire_commands.sign(
                wire_commands.Command(
                    "forged-1", CID, 1001, "relay_open", (m2,), now - 60, now + 600, now
                ),
                wire_commands.new_key(),
            ),
            "expired": signed(id="forged-2", not_before=now - 7200, not_after=now - 3600),
            "duplicate: counter 1 was accepted before": replay,
            "addressed to concentrator 'dc-other'": signed(id="forged-3", concentrator="dc-other"),
        }
        # Through the real broker, a concentrator certificate cannot even publish there.
        thief = Peer.connect(broker, "dc-other", "thief")
        try:
            for blob in forged.values():
                reason = thief.publish(f"mf/v1/{CID}/cmd", blob)
                assert reason.is_failure, reason  # "not authorized"
        finally:
            thief.client.disconnect()
            thief.client.loop_stop()

        # A compromised broker lets anything through: the concentrator's own checks hold.
        # (Without its ACL file and subscription rules: with a plugin loaded and nothing
        # granting, Mosquitto would refuse everything.)
        conf = broker.conf.read_text()
        broker.conf.write_text(
            "\n".join(
                line for line in conf.splitlines() if not line.startswith(("acl_file", "plugin"))
            )
        )
        broker.restart()
        thief = Peer.connect(broker, "dc-other", "thief")
        try:
            for blob in forged.values():
                assert not thief.publish(f"mf/v1/{CID}/cmd", blob).is_failure
        finally:
            thief.client.disconnect()
            thief.client.loop_stop()

        def audited() -> bool:
            got = _refusals(db)
            return all(any(want in r for r in got) for want in forged)

        wait_for(audited, 90, "every forgery refused and audited by the concentrator")

        # ... and the refusals reach the utility in the encrypted uplink (its audit log).
        def upstream() -> int:
            s = SqliteStorage(rdb)
            try:
                return sum(
                    1
                    for _, e in s.events(CID)
                    if e.kind == "command" and e.detail.get("result") == "refused"
                )
            finally:
                s.close()

        wait_for(lambda: upstream() >= len(forged), 90, "the refusals at the receiver")

        # A request row written straight into the database, signed by no live session,
        # is refused by the service (and raises an alert); nothing is signed or sent.
        forged_request = _forge_request(rdb, m2)
        wait_for(lambda: _request_status(rdb, forged_request) == "refused", 30,
                 "the forged request refused")  # fmt: skip
        assert _status(rdb, "forged-req-1") is None
        alerts = receiver_json("audit", "alerts", "--db", url, "--json", session=ada)
        assert any(a["action"] == "forged_request" and a["target"] == f"request:{forged_request}"
                   for a in alerts)  # fmt: skip
        assert _relay_truth(sim) == [(m1, "open"), (m1, "closed")]  # the relay never moved
    finally:
        assert daemon.stop() == 0
        receiver.stop()
        sim.stop()
        broker.stop()


def _forge_request(rdb: Path, meter: str) -> int:
    """A ``ready`` relay-open request inserted by hand, naming operator olga's session
    but signed with another key."""
    import json

    from sqlalchemy import insert, select

    from cloud_receiver.storage.schema import requests, sessions

    s = SqliteStorage(rdb)
    now = time.time()
    try:
        with s.transaction() as tx:
            session = tx.execute(select(sessions.c.id).where(sessions.c.operator == "olga"))
            params = {
                "id": "forged-req-1",
                "concentrator": CID,
                "action": "relay_open",
                "meters": [meter],
                "params": {},
                "not_before": None,
                "valid_for_s": 600,
            }
            return int(tx.execute(insert(requests).values(
                nonce="forged", kind="command", action="command.relay", params=json.dumps(params),
                attachment=None, attachment_sha256=None, requested_by="olga",
                session=session.scalar_one(), origin="nowhere", created_at=now,
                expires_at=now + 600, approvals_needed=0, signature=b"\0" * 64, status="ready",
                result=None, updated_at=now,
            ).returning(requests.c.id)).scalar_one())  # fmt: skip
    finally:
        s.close()
