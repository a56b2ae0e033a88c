"""The output rules every command line keeps (issue 18, item 4): queries never create a
database; tables take --limit and --since/--until and say what they left out; every
command takes --json and fails under it with one JSON object on stdout and its exit
code; identifiers are never cut at 80 columns; times in ISO 8601 with the site's
offset."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result
from helpers import NO_SESSION, Operators

from cloud_receiver.cli import main as receiver_main
from cloud_receiver.storage import Storage, open_storage
from concentrator.cli import main as concentrator_main
from contract.records import Reading
from hil_sim.cli import main as sim_main

PROGRAMS: dict[str, click.Group] = {
    "concentrator": concentrator_main,
    "cloud-receiver": receiver_main,
    "hil-sim": sim_main,
}
# Slots of 2026-01-05 at +08:00: 00:00, 00:15, ...
DAY0 = 1767542400
ADDRESSES = [f"{n:012d}" for n in (123456789012, 210987654321, 555000111222)]


def run(program: click.Group, *args: str, session: Path | None = None, **env: str) -> Result:
    environ = {"MF_SESSION": str(session) if session is not None else NO_SESSION, **env}
    return CliRunner().invoke(program, list(args), env=environ)


def _leaves(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _leaves(command, (*path, name))
        else:
            yield (*path, name)


def _command(group: click.Group, path: tuple[str, ...]) -> click.Command:
    command: click.Command = group
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    return command


ALL = [(prog, path) for prog, group in PROGRAMS.items() for path in _leaves(group)]


@pytest.mark.parametrize(("program", "path"), ALL, ids=[" ".join((p, *c)) for p, c in ALL])
def test_every_command_takes_json_and_fails_under_it_with_one_json_object(
    program: str, path: tuple[str, ...]
) -> None:
    group = PROGRAMS[program]
    assert any("--json" in getattr(p, "opts", ()) for p in _command(group, path).params)
    result = run(group, *path, "--json", "--no-such-option")
    assert result.exit_code == 2, result.output
    doc = json.loads(result.stdout)  # one JSON document, nothing else on stdout
    assert doc["exit_code"] == 2
    # The option is named, or (a command taking any argument, e.g. `topup ID -5`) what
    # is missing.
    assert "--no-such-option" in doc["error"] or doc["error"].startswith("Missing")
    assert doc["error"] in result.stderr  # the person watching reads the same


def _fill(db: str, rows: int) -> None:
    storage = open_storage(db)
    try:
        readings = [
            Reading(ADDRESSES[i % 3], "energy_fwd_total", DAY0 + 900 * (i // 3), f"{i}.50",
                    "kWh", DAY0 + 900 * (i // 3) + 7.25)
            for i in range(rows)
        ]  # fmt: skip
        storage.ingest("CONC-LONG-IDENTIFIER-0001", 1, 1, readings, [], DAY0 + 86400)
    finally:
        storage.close()


@pytest.fixture
def filled(tmp_path: Path, operators: Callable[[str], Operators]) -> tuple[str, Path]:
    db = f"sqlite:///{tmp_path / 'r.db'}"
    session = operators(db).login("vera", "viewer")
    _fill(db, 30)
    return db, session


def test_a_query_on_a_database_that_does_not_exist_creates_nothing(
    tmp_path: Path, filled: tuple[str, Path]
) -> None:
    _, session = filled
    # The reproduction from the issue: the folder and the database were created.
    for extra in ([], ["--json"]):
        result = run(receiver_main, "readings", "--db", "sqlite:////nonexistent/x.db", *extra,
                     session=session)  # fmt: skip
        assert result.exit_code == 1
        assert "/nonexistent/x.db does not exist" in result.stderr
        assert not Path("/nonexistent").exists()
    assert json.loads(result.stdout) == {
        "error": "cannot open database sqlite:////nonexistent/x.db: database /nonexistent/x.db"
        " does not exist (only `cloud-receiver run` and `restore` create one)",
        "exit_code": 1,
    }
    # A folder that exists, a file that does not: still nothing created.
    missing = tmp_path / "typo.db"
    result = run(receiver_main, "concentrators", "--db", f"sqlite:///{missing}", session=session)
    assert result.exit_code == 1 and not missing.exists()
    # A file that is not a receiver database is not adopted either.
    empty = tmp_path / "empty.db"
    import sqlite3

    sqlite3.connect(empty).close()
    result = run(receiver_main, "readings", "--db", f"sqlite:///{empty}", session=session)
    assert result.exit_code == 1 and "holds no receiver tables" in result.stderr
    assert sqlite3.connect(empty).execute("SELECT name FROM sqlite_master").fetchall() == []


def test_readings_limit_range_and_iso_times(filled: tuple[str, Path]) -> None:
    db, session = filled
    result = run(receiver_main, "readings", "--db", db, "--limit", "4", "--csv", session=session)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 5  # heading + 4 rows
    assert result.stderr.strip() == "26 more rows; use --limit/--since"
    first = lines[1].split(",")
    assert first[0] == ADDRESSES[0]
    assert first[2] == "2026-01-05T00:00:00+08:00"  # a slot, never raw unix seconds
    assert first[5] == "2026-01-05T00:00:07+08:00"
    # The site's zone is the receiver's --tz / MF_TZ.
    utc = run(receiver_main, "--tz", "+00:00", "readings", "--db", db, "--limit", "1", "--csv",
              session=session)  # fmt: skip
    assert utc.stdout.splitlines()[1].split(",")[2] == "2026-01-04T16:00:00+00:00"
    # --since/--until in ISO 8601 (without an offset: the site's zone), end exclusive.
    ranged = run(receiver_main, "readings", "--db", db, "--json", "--since", "2026-01-05T00:15",
                 "--until", "2026-01-05T00:45+08:00", session=session)  # fmt: skip
    doc = json.loads(ranged.stdout)
    assert doc["more"] == 0
    assert sorted({r["slot"] for r in doc["readings"]}) == [
        "2026-01-05T00:15:00+08:00", "2026-01-05T00:30:00+08:00"
    ]  # fmt: skip
    assert len(doc["readings"]) == 6
    # --since after --until: a clear error, under --json too.
    bad = run(receiver_main, "readings", "--db", db, "--json", "--since", "2026-01-06",
              "--until", "2026-01-05", session=session)  # fmt: skip
    assert bad.exit_code == 2
    assert json.loads(bad.stdout)["error"] == (
        "--since 2026-01-06T00:00:00+08:00 is after --until 2026-01-05T00:00:00+08:00:"
        " nothing can match"
    )
    garbled = run(receiver_main, "readings", "--db", db, "--since", "yesterday", session=session)
    assert garbled.exit_code == 2
    assert "'yesterday': expected unix seconds or an ISO 8601 date" in garbled.stderr
    # --quantity narrows the count of what was left out too.
    other = run(receiver_main, "readings", "--db", db, "--quantity", "voltage_a", "--json",
                session=session)  # fmt: skip
    assert json.loads(other.stdout) == {"readings": [], "more": 0}
    energy = run(receiver_main, "readings", "--db", db, "--quantity", "energy_fwd_total",
                 "--limit", "2", "--json", session=session)  # fmt: skip
    assert json.loads(energy.stdout)["more"] == 28
    # --limit 0: everything, no note.
    every = run(receiver_main, "readings", "--db", db, "--limit", "0", "--json", session=session)
    assert len(json.loads(every.stdout)["readings"]) == 30 and every.stderr == ""


def test_tables_at_80_columns_keep_identifiers_whole(filled: tuple[str, Path]) -> None:
    db, session = filled
    result = run(receiver_main, "readings", "--db", db, "--limit", "0", session=session,
                 COLUMNS="80")  # fmt: skip
    assert result.exit_code == 0, result.output
    for address in ADDRESSES:
        assert address in result.stdout
    assert "2026-01-05T00:15:00+08:00" in result.stdout  # a time is not split either
    assert "CONC-LONG-IDENTIFIER-0001" in result.stdout
    assert "…" not in result.stdout
    narrow = run(receiver_main, "concentrators", "--db", db, session=session, COLUMNS="40")
    assert "CONC-LONG-IDENTIFIER-0001" in narrow.stdout
    assert re.search(r"\b30\b", narrow.stdout)


def test_commands_and_audit_take_limit_and_a_time_range(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    from cloud_receiver.applications.fleet import commands
    from contract import commands as wire_commands

    db = f"sqlite:///{tmp_path / 'r.db'}"
    ops = operators(db)
    ada, olga = ops.login("ada", "administrator"), ops.login("olga", "operator")
    key = wire_commands.new_key()
    storage = open_storage(db)
    try:
        for i in range(3):
            commands.issue(storage, key, concentrator="dc-with-a-long-name-01",
                           action="time_sync", now=DAY0 + 3600 * i)  # fmt: skip
    finally:
        storage.close()
    listed = run(receiver_main, "commands", "--db", db, "--json", "--limit", "2", session=olga)
    assert listed.exit_code == 0, listed.output
    assert [c["issued_at"] for c in json.loads(listed.stdout)] == [DAY0, DAY0 + 3600]
    assert json.loads(listed.stdout)[1]["issued_at_iso"] == "2026-01-05T01:00:00+08:00"
    assert listed.stderr.strip() == "1 more row; use --limit/--since"
    later = run(receiver_main, "commands", "--db", db, "--json", "--since", "2026-01-05T01:00",
                "--until", "2026-01-05T02:00", session=olga)  # fmt: skip
    assert [c["issued_at"] for c in json.loads(later.stdout)] == [DAY0 + 3600]
    # The table at 80 columns: every command id whole, as `commands --id` needs it.
    table = run(receiver_main, "commands", "--db", db, session=olga, COLUMNS="80")
    for doc in json.loads(listed.stdout):
        assert doc["id"] in table.stdout
    assert "2026-01-05T01:00:00+08:00" in table.stdout
    # The audit log: the newest --limit, a note that older ones exist, and a range check.
    audit = run(receiver_main, "audit", "list", "--db", db, "--limit", "1", "--json", session=ada)
    assert len(json.loads(audit.stdout)) == 1
    assert "more rows; older ones: use --limit/--since" in audit.stderr
    backwards = run(receiver_main, "audit", "list", "--db", db, "--since", "2026-01-02",
                    "--until", "2026-01-01", session=ada)  # fmt: skip
    assert backwards.exit_code == 2 and "is after --until" in backwards.stderr


def test_concentrators_and_operators_take_limit_and_a_time_range(
    filled: tuple[str, Path], operators: Callable[[str], Operators]
) -> None:
    db, session = filled  # CONC-LONG-IDENTIFIER-0001, last seen DAY0 + 1 day
    storage = open_storage(db)
    try:
        for n, cid in ((1, "dc-a"), (2, "dc-b")):  # last seen 01:00 and 02:00 on DAY0
            one = Reading(ADDRESSES[0], "energy_fwd_total", DAY0, "1", "kWh", DAY0 + 7)
            storage.ingest(cid, 1, 1, [one], [], DAY0 + 3600 * n)
    finally:
        storage.close()
    first = run(receiver_main, "concentrators", "--db", db, "--limit", "2", "--json",
                session=session)  # fmt: skip
    assert first.exit_code == 0, first.output
    assert [c["concentrator"] for c in json.loads(first.stdout)] == [
        "CONC-LONG-IDENTIFIER-0001", "dc-a"
    ]  # fmt: skip
    assert first.stderr.strip() == "1 more row; use --limit/--since"
    ranged = run(receiver_main, "concentrators", "--db", db, "--since", "2026-01-05T01:30",
                 "--until", "2026-01-05T03:00+08:00", "--json", session=session)  # fmt: skip
    [only] = json.loads(ranged.stdout)
    assert only["concentrator"] == "dc-b" and only["last_seen"] == "2026-01-05T02:00:00+08:00"
    assert ranged.stderr == ""
    table = run(receiver_main, "concentrators", "--db", db, "--limit", "1", session=session)
    assert "CONC-LONG-IDENTIFIER-0001" in table.stdout and "dc-a" not in table.stdout
    assert "2 more rows; use --limit/--since" in table.stderr
    backwards = run(receiver_main, "concentrators", "--db", db, "--since", "2026-01-06",
                    "--until", "2026-01-05", session=session)  # fmt: skip
    assert backwards.exit_code == 2 and "is after --until" in backwards.stderr
    # operator list: the first --limit by name.
    ops = operators(db)
    ada = ops.login("ada", "administrator")
    ops.add("zed", "viewer")
    every = json.loads(run(receiver_main, "operator", "list", "--db", db, "--json",
                           session=ada).stdout)  # fmt: skip
    names = [o["name"] for o in every]
    assert names == sorted(names) and {"ada", "vera", "zed"} <= set(names)
    cut = run(receiver_main, "operator", "list", "--db", db, "--limit", "1", "--json",
              session=ada)  # fmt: skip
    assert [o["name"] for o in json.loads(cut.stdout)] == names[:1]
    more = len(names) - 1
    assert cut.stderr.strip() == f"{more} more row{'s' if more != 1 else ''}; use --limit (0: all)"
    cut_table = run(receiver_main, "operator", "list", "--db", db, "--limit", "1", session=ada)
    assert "zed" not in cut_table.stdout and "use --limit (0: all)" in cut_table.stderr


def test_window_keeps_the_range_and_the_newest_or_oldest_and_counts_the_rest() -> None:
    from clitools.table import window

    rows = [(t, f"r{t}") for t in range(10)]
    assert window(rows, lambda r: r[0], None, None, 0) == (rows, 0)
    assert window(rows, lambda r: r[0], 2, 8, 3) == (rows[5:8], 3)
    assert window(rows, lambda r: r[0], 2, 8, 3, newest=False) == (rows[2:5], 3)
    assert window(rows, lambda r: r[0], 8, None, 5) == (rows[8:], 0)


def test_a_table_in_a_pipe_at_80_columns_folds_text_never_ids_or_numbers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from clitools.table import Column, print_table

    monkeypatch.setenv("COLUMNS", "80")
    ids = ["COMMAND-0123456789abcdef0123456789abcdef", "COMMAND-fedcba9876543210fedcba9876543210"]
    text = "a long explanation that is free text and may fold over several lines " * 2
    print_table(
        [Column("id", "id"), Column("value", "number"), Column("what")],
        [(ids[0], "12345678.123456", text), (ids[1], "[red]7[/red]", text)],
    )
    out = capsys.readouterr().out
    assert all(i in out for i in ids)
    assert "12345678.123456" in out and "[red]7[/red]" in out  # whole, and not markup
    assert max(len(line) for line in out.splitlines()) <= 80  # the text folded instead


def test_an_expiry_error_prints_an_iso_time_with_the_sites_offset(
    tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    from helpers import wait_for

    db = f"sqlite:///{tmp_path / 'r.db'}"
    olga = operators(db).login("olga", "operator", lifetime=1)
    expired = wait_for(
        lambda: (r := run(receiver_main, "whoami", "--db", db, session=olga)).exit_code == 4 and r,
        30,
        "the session to expire",
    )
    iso_time = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d"
    assert re.search(rf"session of olga expired at {iso_time}\+08:00: log in again",
                     expired.stderr), expired.stderr  # fmt: skip
    utc = run(receiver_main, "--tz", "+00:00", "whoami", "--db", db, "--json", session=olga)
    doc = json.loads(utc.stdout)
    assert doc["exit_code"] == 4 and re.search(rf"expired at {iso_time}\+00:00", doc["error"])


def test_a_query_on_an_empty_postgresql_schema_creates_no_table(
    pg_url: str, filled: tuple[str, Path]
) -> None:
    import psycopg

    _, session = filled
    result = run(receiver_main, "readings", "--db", pg_url, "--json", session=session)
    assert result.exit_code == 1
    assert "holds no receiver tables: a wrong --db?" in json.loads(result.stdout)["error"]
    with psycopg.connect(pg_url.replace("postgresql+psycopg://", "postgresql://")) as conn:
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()"
        ).fetchall()
    assert tables == []


def test_a_commands_own_tz_defaults_to_the_programs() -> None:
    from clitools.timefmt import site_tz_text, tz_option

    @click.group()
    @tz_option()
    def program(site_tz: object) -> None:
        pass

    @program.command()
    @click.option("--tz", "tz_text", default=site_tz_text)
    def report(tz_text: str) -> None:
        click.echo(tz_text)

    runner = CliRunner()
    assert runner.invoke(program, ["report"], env={"MF_TZ": None}).stdout == "+08:00\n"
    assert runner.invoke(program, ["--tz", "-03:30", "report"]).stdout == "-03:30\n"
    assert runner.invoke(program, ["report"], env={"MF_TZ": "+05:45"}).stdout == "+05:45\n"
    assert runner.invoke(program, ["--tz", "+01:00", "report", "--tz", "+02:00"]).stdout == (
        "+02:00\n"
    )
    bad = runner.invoke(program, ["--tz", "CST", "report"])
    assert bad.exit_code == 2 and "expected a UTC offset such as +08:00" in bad.stderr


def test_a_query_runs_in_a_read_only_transaction(receiver_storage: Storage) -> None:
    from sqlalchemy import exc, insert

    from cloud_receiver.storage.schema import quarantine

    writing = insert(quarantine).values(received_at=1.0, topic="t", concentrator=None, seq=None,
                                        reason="r", detail="d", payload=b"")  # fmt: skip
    with pytest.raises(exc.DBAPIError, match=r"(?i)read.only|readonly"):
        receiver_storage._rows(writing.returning(quarantine.c.id))
    # ... and a write transaction afterwards still writes.
    receiver_storage.quarantine(topic="t", concentrator=None, seq=None, reason="r", detail="d",
                                payload=b"", received_at=1.0)  # fmt: skip
    assert len(receiver_storage.quarantined()) == 1
