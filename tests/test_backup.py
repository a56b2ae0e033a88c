"""Backups of the receiver's database and restores into a fresh one, on SQLite (the
online backup API) and PostgreSQL (pg_dump/pg_restore): rows per table and the audit
chain compared, taken while the database keeps changing; files 0600, never
overwritten; a damaged or doctored backup, a non-empty target: refused, nothing lost."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from urllib.parse import urlencode

import psycopg
import pytest
from click.testing import CliRunner
from helpers import Operators, wait_for
from psycopg.conninfo import conninfo_to_dict

from cloud_receiver.access import audit
from cloud_receiver.access.policy import Principal
from cloud_receiver.applications import prepay
from cloud_receiver.cli import main
from cloud_receiver.storage import MeterRecord, open_storage
from cloud_receiver.storage import audit as chain
from cloud_receiver.storage import backup as bk
from contract.records import Event, Reading


@pytest.fixture(params=["sqlite", "postgres"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'source.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url


@pytest.fixture
def fresh(source: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the same kind: a new file, or a new PostgreSQL database whose
    search path names the schema the source's tables are in."""
    if bk.backend_name(source) == "sqlite":
        yield f"sqlite:///{tmp_path / 'restored' / 'r.db'}"
        return
    info = conninfo_to_dict(bk.pg_conninfo(source))
    schema = str(info["options"]).split("search_path=")[1]
    name = f"r_{uuid.uuid4().hex[:12]}"
    admin = bk.pg_conninfo(source)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    params = {k: str(v) for k, v in info.items() if k not in ("dbname", "options")}
    params["options"] = f"-csearch_path={schema}"
    yield f"postgresql:///{name}?{urlencode(params)}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _fill(url: str, ops: Operators) -> None:
    """Readings, events, the archive, a prepaid account, operators and their audit."""
    ops.login("ada", "administrator")
    ops.login("vera", "viewer")
    s = open_storage(url)
    try:
        for seq in range(1, 4):
            readings = [Reading(f"00000000000{m}", "energy_fwd_total", 1_800_000_000 + seq * 900,
                                f"{100 + seq}.5", "kWh", 1.0) for m in range(1, 5)]  # fmt: skip
            event = Event("meter_state", "info", "000000000001", {"to": "online", "台区": 1}, 2.0)
            s.ingest("dc-1", seq, 1, readings, [event], 3.0)
        s.replace_archive([MeterRecord("000000000001", "TA-1", "total"),
                           MeterRecord("000000000002", "TA-1", "customer", "A2")])  # fmt: skip
        prepay.open_account(s, "A2", "000000000002", prepay.Tariff.parse(["flat=0.5"]),
                            concentrator="dc-1", now=1.0)  # fmt: skip
        prepay.topup(s, "A2", Decimal("12.34"), now=2.0, by="t")
    finally:
        s.close()


def _counts_and_head(url: str) -> tuple[dict[str, int], tuple[int, str], bool]:
    with bk._connect(url) as conn, conn.begin():
        report = chain.verify(conn)
        return bk.table_counts(conn), (report.head_seq, report.head_hash), report.intact


def test_backup_and_restore_into_a_fresh_database_keep_every_row_and_the_chain(
    source: str, fresh: str, tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    _fill(source, operators(source))
    out = tmp_path / "backups" / "receiver.mfbak"
    manifest = bk.backup(source, out)
    assert out.stat().st_mode & 0o777 == 0o600
    counts, head, intact = _counts_and_head(source)
    assert manifest.tables == counts and intact
    assert manifest.audit["head"] == {"seq": head[0], "hash": head[1]}
    assert counts["readings"] == 12 and counts["audit_log"] >= 2 and counts["operators"] == 2
    assert bk.verify(out, like=source).same  # in a scratch database, dropped afterwards
    restored, comparison = bk.restore(out, fresh)
    assert comparison.same and restored.tables == counts
    # Independently of the comparison: the same rows, the same intact chain, the same head.
    assert _counts_and_head(fresh) == (counts, head, True)
    s = open_storage(fresh)  # ... and a receiver works on it: the readings, the balance
    try:
        assert len(s.readings()) == 12
        assert prepay.get_account(s, "A2").balance_cents == 1234
        with s.transaction() as tx:
            audit.record(tx, Principal.system("test"), kind="restore", action="restore",
                         target="database", at=time.time())  # fmt: skip
            assert chain.verify(tx).intact
    finally:
        s.close()


def test_a_backup_taken_while_the_database_changes_is_one_snapshot(
    source: str, fresh: str, tmp_path: Path
) -> None:
    s = open_storage(source)
    stop = threading.Event()
    done = [0]  # batches the writer has committed

    def writer() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            with s.transaction() as tx:
                audit.record(tx, Principal.system("writer"), kind="read", action="data.read",
                             target=f"meter:{i}", at=float(i), detail={"customers": 1})  # fmt: skip
            s.ingest("dc-1", i, 1, [Reading("000000000001", "voltage_a", i * 900, "220.1", "V",
                                            1.0)], [], 1.0)  # fmt: skip
            done[0] = i

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        # Counted, not timed: some batches before the backup, some more while and after.
        wait_for(lambda: done[0] >= 20, 60, "the writer's first batches")
        manifest = bk.backup(source, tmp_path / "live.mfbak")
        taken = manifest.tables["batches"]
        wait_for(lambda: done[0] >= taken + 20, 60, "the writer going on after the backup")
    finally:
        stop.set()
        thread.join()
        s.close()
    # The writer went on; the backup holds one moment: as many batches as readings as
    # audit entries, and its chain intact up to its own head.
    tables = manifest.tables
    assert tables["batches"] == tables["readings"] > 0
    assert tables["audit_log"] in (tables["batches"], tables["batches"] + 1)
    assert manifest.audit["intact"] and manifest.audit["entries"] == tables["audit_log"]
    assert _counts_and_head(source)[0]["batches"] > tables["batches"]
    assert bk.restore(tmp_path / "live.mfbak", fresh)[1].same


def test_backups_never_overwrite_and_restores_never_write_over_data(
    source: str, fresh: str, tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    _fill(source, operators(source))
    out = tmp_path / "b.mfbak"
    bk.backup(source, out)
    before = out.read_bytes()
    with pytest.raises(bk.BackupError, match="exists already: a backup never overwrites"):
        bk.backup(source, out)
    assert out.read_bytes() == before
    # Into the source itself (not empty): refused, and the source is as it was.
    counts = _counts_and_head(source)
    with pytest.raises(bk.BackupError, match=r"is not empty .*restore only into an empty"):
        bk.restore(out, source)
    assert _counts_and_head(source) == counts
    # Another backend's backup, something that is no backup at all.
    other = "sqlite:///x.db" if bk.backend_name(source) == "postgresql" else "postgresql:///x"
    with pytest.raises(bk.BackupError, match=r"backup; .* is "):
        bk.restore(out, other)
    junk = tmp_path / "junk.mfbak"
    junk.write_bytes(b"PK\x03\x04 not a backup")
    with pytest.raises(bk.BackupError, match="not a meterflow backup"):
        bk.restore(junk, fresh)


def test_a_damaged_or_doctored_backup_is_refused(
    source: str, fresh: str, tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    _fill(source, operators(source))
    out = tmp_path / "b.mfbak"
    manifest = bk.backup(source, out)
    _, offset = bk.read_manifest(out)
    data = bytearray(out.read_bytes())
    damaged = tmp_path / "damaged.mfbak"
    data[offset + len(data[offset:]) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(bk.BackupError, match="does not match its SHA-256"):
        bk.restore(damaged, fresh)
    truncated = tmp_path / "truncated.mfbak"
    truncated.write_bytes(out.read_bytes()[: offset + 100])
    with pytest.raises(bk.BackupError, match="damaged or truncated"):
        bk.restore(truncated, fresh)
    # A manifest that claims other rows: the restore is compared and found different.
    head = json.loads(out.read_bytes()[len(bk.MAGIC) + 4 : offset])
    head["tables"]["readings"] = manifest.tables["readings"] + 1
    text = json.dumps(head).encode()
    doctored = tmp_path / "doctored.mfbak"
    doctored.write_bytes(bk.MAGIC + len(text).to_bytes(4, "big") + text + out.read_bytes()[offset:])
    with pytest.raises(bk.BackupMismatch, match="table readings: 12 rows, the backup has 13"):
        bk.verify(doctored, like=source)


def test_backup_and_restore_from_the_command_line(
    source: str, fresh: str, tmp_path: Path, operators: Callable[[str], Operators]
) -> None:
    ops = operators(source)
    _fill(source, ops)
    ada = ops.login("ada")
    out = tmp_path / "cli.mfbak"
    runner = CliRunner()
    done = runner.invoke(main, ["backup", "--db", source, "--out", str(out)],
                         env={"MF_SESSION": str(ada)})  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "audit chain intact" in done.stdout
    assert "verified: restored into a scratch database" in done.stdout
    again = runner.invoke(main, ["backup", "--db", source, "--out", str(out)],
                          env={"MF_SESSION": str(ada)})  # fmt: skip
    assert again.exit_code == 1 and "exists already" in again.output
    restored = runner.invoke(main, ["restore", "--db", fresh, "--from", str(out), "--json"])
    assert restored.exit_code == 0, restored.output
    doc = json.loads(restored.stdout)
    assert doc["verified"] and doc["differences"] == []
    # The restore is the first thing the restored log records after the backup's entries.
    s = open_storage(fresh)
    try:
        with s.transaction() as tx:
            entries = chain.entries(tx)
            assert chain.verify(tx).intact
    finally:
        s.close()
    assert [e.kind for e in entries[-2:]] == ["backup", "restore"]
    assert entries[-1].principal == "system:restore"
    refused = runner.invoke(main, ["restore", "--db", fresh, "--from", str(out)])
    assert refused.exit_code == 1 and "restore only into an empty database" in refused.output
