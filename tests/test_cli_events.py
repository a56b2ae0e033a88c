"""``concentrator events`` refuses a kind it does not know, listing the kinds (issue 18,
"Smaller"), takes --since/--until and says how many older events --limit left out;
``backfill --from`` after ``--to`` is refused before the daemon is asked. The list of
kinds is the code's: a test walks every event the concentrator records."""

from __future__ import annotations

import ast
import asyncio
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from helpers import wait_for

import concentrator
from concentrator.cli import main
from concentrator.control.client import ControlClient
from concentrator.daemon import Daemon
from concentrator.storage.event_kinds import EVENT_KINDS


def cli(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def _recorded_kinds() -> set[str]:
    """The kind of every ``Event(...)`` the concentrator's code builds, and of the
    helpers that pass theirs on (``_audit``, ``_event`` of the PLC worker), and the
    modem's (``"modem_" + kind``)."""
    kinds: set[str] = set()
    for path in Path(concentrator.__file__).parent.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call):
                name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
                if name in ("Event", "_audit") or (name == "_event" and "plc" in path.name):
                    first = node.args[0] if node.args else None
                    kw = [k.value for k in node.keywords if k.arg == "kind"]
                    arg = kw[0] if kw else first
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                        kinds.add(arg.value)
            if (
                path.name == "modem.py"
                and isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and node.target.id == "kind"
                and isinstance(node.value, ast.Constant)
                and node.value.value != "modem"
            ):
                kinds.add(f"modem_{node.value.value}")
    return kinds


def test_the_kinds_are_exactly_those_the_concentrator_records() -> None:
    assert len(set(EVENT_KINDS)) == len(EVENT_KINDS)
    assert _recorded_kinds() == set(EVENT_KINDS)


def test_an_unknown_kind_is_refused_with_the_list_before_the_daemon_is_asked(
    tmp_path: Path,
) -> None:
    # The reproduction from the issue: `events --kind bogus` returned nothing, exit 0.
    result = cli("events", "--kind", "bogus", "--socket", str(tmp_path / "none.sock"))
    assert result.exit_code == 2
    first = ", ".join(sorted(EVENT_KINDS)[:2])
    assert f"unknown event kind 'bogus': expected one of {first}" in result.stderr
    doc = json.loads(cli("events", "--kind", "bogus", "--json").stdout)
    assert doc["exit_code"] == 2 and "relay" in doc["error"] and "time_sync" in doc["error"]


def test_backfill_from_after_to_is_refused_under_json_too(tmp_path: Path) -> None:
    args = ["backfill", "000000000001", "--from", "2026-03-02", "--to", "2026-03-01",
            "--socket", str(tmp_path / "none.sock")]  # fmt: skip
    plain = cli(*args)
    assert plain.exit_code == 2 and "--from 2026-03-02 is after --to 2026-03-01" in plain.stderr
    assert "0/None" not in plain.output
    doc = json.loads(cli(*args, "--json").stdout)
    assert doc["exit_code"] == 2 and "--from 2026-03-02 is after --to 2026-03-01" in doc["error"]


@pytest.fixture(scope="module")
def daemon_socket(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A daemon with one unreachable bus: events daemon_start, then time_sync."""
    tmp = tmp_path_factory.mktemp("events")
    sock_dir = Path(tempfile.mkdtemp(prefix="mfe", dir="/tmp"))  # short: a socket path
    cfg = tmp / "c.toml"
    cfg.write_text(
        '[concentrator]\nid = "dc-events"\n[storage]\npath = "s.db"\n'
        '[[bus]]\nname = "bus1"\ntype = "rs485"\nport = "/nonexistent/tty-ev"\nbaud = 2400\n'
        'parity = "E"\n'
        '[[meter]]\naddress = "000000000001"\nprotocol = "dlt645"\nbus = "bus1"\n'
        '[[meter]]\naddress = "123456789012"\nprotocol = "dlt645"\nbus = "bus1"\n'
    )
    got: dict[str, Any] = {}
    started = threading.Event()

    def run() -> None:
        async def serve() -> None:
            got["daemon"] = Daemon(cfg, control_socket=sock_dir / "ctl.sock")
            got["loop"] = asyncio.get_running_loop()
            started.set()
            await got["daemon"].run(install_signals=False)

        try:
            asyncio.run(serve())
        finally:
            started.set()

    thread = threading.Thread(target=run, name="events-daemon", daemon=True)
    thread.start()
    sock = sock_dir / "ctl.sock"
    try:
        assert started.wait(30) and "daemon" in got
        wait_for(lambda: _events(sock, {}).get("result", {}).get("total"), 60, "daemon_start")
        cli("time-sync", "--socket", str(sock))  # fails on the missing port: a second event
        wait_for(lambda: _events(sock, {})["result"]["total"] >= 2, 60, "the time_sync event")
        yield sock
    finally:
        if "loop" in got:
            got["loop"].call_soon_threadsafe(got["daemon"].stop)
        thread.join(60)
        shutil.rmtree(sock_dir, ignore_errors=True)
    assert not thread.is_alive()


def _events(sock: Path, args: dict[str, Any]) -> dict[str, Any]:
    try:
        *_, last = ControlClient(sock, timeout=30).stream("events", args)
    except Exception:
        return {}
    return last


def test_the_daemon_refuses_an_unknown_kind_by_the_same_rule(daemon_socket: Path) -> None:
    answer = _events(daemon_socket, {"kind": "bogus"})
    assert answer["error"]["code"] == "bad_argument"
    assert answer["error"]["message"].startswith("unknown event kind 'bogus': expected one of")


def test_since_until_and_the_note_about_older_events(daemon_socket: Path) -> None:
    sock = ["--socket", str(daemon_socket)]
    every = json.loads(cli("events", "--json", *sock).stdout)
    first_at = every["events"][0]["at"]
    assert every["events"][0]["kind"] == "daemon_start"
    # --until is exclusive: nothing before the first event, the first one just after.
    none = json.loads(cli("events", "--until", str(int(first_at) - 1), "--json", *sock).stdout)
    assert none["events"] == [] and none["total"] == 0
    one = json.loads(cli("events", "--until", str(int(first_at) + 1), "--kind", "daemon_start",
                         "--json", *sock).stdout)  # fmt: skip
    assert [e["kind"] for e in one["events"]] == ["daemon_start"]
    backwards = cli("events", "--since", "2026-03-02", "--until", "2026-03-01", *sock)
    assert backwards.exit_code == 2 and "since is after until" in backwards.stderr
    # --limit keeps the newest; the note on stderr says how many older ones it left out.
    limited = cli("events", "--limit", "1", *sock, env={"COLUMNS": "80"})
    assert limited.exit_code == 0
    assert f"{every['total'] - 1} more row" in limited.stderr
    assert "older ones: use --limit/--since/--until" in limited.stderr
    # Times in ISO 8601 with the concentrator's offset.
    assert "+08:00" in limited.stdout


def test_meters_takes_limit_and_keeps_addresses_whole(daemon_socket: Path) -> None:
    sock = ["--socket", str(daemon_socket)]
    limited = cli("meters", "--limit", "1", "--json", *sock)
    doc = json.loads(limited.stdout)
    assert [m["address"] for m in doc["meters"]] == ["000000000001"] and doc["more"] == 1
    assert "1 more row; use --limit (0: all), --bus or --offline" in limited.stderr
    table = cli("meters", *sock, env={"COLUMNS": "80"})
    assert "000000000001" in table.stdout and "123456789012" in table.stdout
    assert table.stderr == ""


def test_stats_reads_the_store_read_only_and_never_creates_it(tmp_path: Path) -> None:
    from concentrator.storage import Store

    site = tmp_path / "site"
    site.mkdir()
    cfg = site / "c.toml"
    cfg.write_text(
        '[concentrator]\nid = "dc-stats"\n[storage]\npath = "s.db"\n'
        '[[bus]]\nname = "bus1"\ntype = "rs485"\nport = "/dev/null"\nbaud = 2400\n'
        'parity = "E"\n'
    )
    missing = cli("stats", "--config", str(cfg), "--json")
    assert missing.exit_code == 1
    assert json.loads(missing.stdout)["error"] == (
        f"{site / 's.db'}: the store does not exist: nothing stored yet"
        " (`concentrator run` creates it)"
    )
    assert sorted(p.name for p in site.iterdir()) == ["c.toml"]
    with Store.open(site / "s.db"):
        pass
    db = site / "s.db"
    before = (db.read_bytes(), db.stat().st_mtime_ns)
    report = cli("stats", "--config", str(cfg), "--json")
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["backlog"]["readings"] == 0
    assert (db.read_bytes(), db.stat().st_mtime_ns) == before  # not a byte written
    # (SQLite may leave the WAL index files a reader of a WAL database needs.)
    assert {p.name for p in site.iterdir()} <= {"c.toml", "s.db", "s.db-wal", "s.db-shm"}
