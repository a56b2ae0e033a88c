"""The concentrator's store encrypted at rest with SQLCipher (issue 19, item 5): the key
file and its checks, a wrong key refused without touching the store, and a plaintext
store migrated in place without losing a reading — also one a kill -9 left with a hot
WAL, and after a migration that a kill cut short."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_config import VALID, line_of, write

from concentrator.cli import main
from concentrator.config import check_config, load_config
from concentrator.storage import Store, StoreKeyError, open_store
from concentrator.storage.errors import StoreError
from contract.records import Reading

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))
M = "000000000001"
ENCRYPTED = "store_encrypted"


def readings(n: int, first: int = 0) -> list[Reading]:
    return [
        Reading(
            M,
            "energy_fwd_total",
            (first + i) * 900,
            f"{i}.25",
            "kWh",
            (first + i) * 900.0 + 1,
            "poll",
        )
        for i in range(n)
    ]


def content(store: Store) -> tuple[object, ...]:
    return (
        [(r.reading, r.batch_id) for r in store.get_readings()],
        [
            (e.event.kind, e.event.detail)
            for e in store.events()
            if e.event.kind != "store_encrypted"
        ],
        store.missing(),
        store.get_state("task:t:last_slot"),
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_an_encrypted_store_holds_no_plaintext_and_opens_only_with_its_key(
    tmp_path: Path,
) -> None:
    db = tmp_path / "store.db"
    with Store.open(db, key=KEY) as store:
        store.add_readings(readings(50))
        store.set_state("task:t:last_slot", "44100")
        before = content(store)
    raw = db.read_bytes()
    assert not raw.startswith(b"SQLite format 3") and M.encode() not in raw
    assert b"energy_fwd_total" not in raw
    with Store.open(db, key=KEY) as store:
        assert content(store) == before
    sums = {p.name: digest(p) for p in tmp_path.iterdir()}
    with pytest.raises(StoreKeyError, match="the key does not open this store") as caught:
        Store.open(db, key=OTHER)
    assert "left as it is" in str(caught.value)
    # Refused as it is: not moved aside as damaged, not a byte changed.
    assert {p.name: digest(p) for p in tmp_path.iterdir()} == sums
    with Store.open(db, key=KEY) as store:
        assert content(store) == before


def _plaintext_store_killed_with_a_hot_wal(db: Path) -> None:
    script = f"""
import os, sys
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_store_encryption import readings
from concentrator.storage import Store
from contract.records import Event
store = Store.open({str(db)!r})
store.add_readings(readings(400))
store.add_event(Event("meter_state", "warning", "{M}", {{"state": "degraded"}}, 5.0))
store.record_missing("{M}", "energy_fwd_total", 900 * 400, "meter did not answer")
store.set_state("task:t:last_slot", "360000")
store.take_batch(100, 10)
os._exit(0)  # a kill: no close, no checkpoint
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert Path(f"{db}-wal").stat().st_size > 0  # the last commits are only in the WAL


def test_a_plaintext_store_is_encrypted_in_place_without_losing_a_reading(
    tmp_path: Path,
) -> None:
    db = tmp_path / "store.db"
    _plaintext_store_killed_with_a_hot_wal(db)
    copy = tmp_path / "plain-copy.db"
    src, dst = sqlite3.connect(db), sqlite3.connect(copy)
    src.backup(dst)
    src.close()
    dst.close()
    with Store.open(copy) as plain:
        before = content(plain)
    assert len(before[0]) == 400  # type: ignore[arg-type]
    with Store.open(db, key=KEY) as store:
        assert content(store) == before
        assert [e.event.kind for e in store.events(kind="store_encrypted")] == ["store_encrypted"]
        assert store.integrity_check() == []
        store.add_readings(readings(5, first=1000))  # and it takes new ones
    assert not db.read_bytes().startswith(b"SQLite format 3")
    assert (db.stat().st_mode & 0o777) == 0o600
    assert not list(tmp_path.glob(".store.db.encrypting*"))
    with Store.open(db, key=KEY) as store:
        assert len(store.get_readings()) == 405
        assert len(store.events(kind="store_encrypted")) == 1  # migrated once


def test_a_migration_cut_short_by_a_kill_is_done_again(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    with Store.open(db) as store:
        store.add_readings(readings(30))
    # What a kill during the export leaves: a half-written encrypted copy beside it.
    (tmp_path / ".store.db.encrypting").write_bytes(os.urandom(5000))
    with Store.open(db, key=KEY) as store:
        assert len(store.get_readings()) == 30
    assert not (tmp_path / ".store.db.encrypting").exists()


def test_open_store_reads_the_configured_key(tmp_path: Path) -> None:
    key_file = tmp_path / "store.key"
    result = CliRunner().invoke(main, ["config", "keygen", str(key_file)])
    assert result.exit_code == 0, result.output
    assert key_file.stat().st_mode & 0o777 == 0o600 and len(key_file.read_text()) == 65
    again = CliRunner().invoke(main, ["config", "keygen", str(key_file)])
    assert again.exit_code != 0 and "never overwritten" in again.output
    text = VALID.replace("quota_mb = 512", 'quota_mb = 512\nkey_file = "store.key"')
    cfg = load_config(write(tmp_path, text))
    assert cfg.storage.key_file == key_file
    with open_store(cfg.storage) as store:
        store.add_readings(readings(3))
    key = bytes.fromhex(key_file.read_text())
    with Store.open(cfg.storage.path, key=key) as store:
        assert len(store.get_readings()) == 3
    with pytest.raises(StoreKeyError):
        Store.open(cfg.storage.path, key=OTHER)
    stats = CliRunner().invoke(main, ["stats", "--config", str(tmp_path / "site.toml")])
    assert stats.exit_code == 0, stats.output


@pytest.mark.parametrize(
    ("content_", "mode", "message"),
    [
        (None, 0o600, "does not exist"),
        ("ab" * 32, 0o644, "mode 0644; the store key must be readable by its owner only"),
        ("ab" * 31, 0o600, "62 characters; expected 64 hex digits"),
        ("ab" * 31 + "zz", 0o600, "byte 62 is 'z', expected a hex digit"),
    ],
)
def test_config_check_names_the_key_file_line(
    tmp_path: Path, content_: str | None, mode: int, message: str
) -> None:
    text = VALID.replace("quota_mb = 512", 'quota_mb = 512\nkey_file = "store.key"')
    path = write(tmp_path, text)
    if content_ is not None:
        key = tmp_path / "store.key"
        key.write_text(content_ + "\n")
        key.chmod(mode)
    issues = check_config(path)
    assert len(issues) == 1, issues
    issue = issues[0]
    assert issue.line == line_of(text, "key_file") and issue.field == "storage.key_file"
    assert message in issue.message
    assert str(issue).startswith(f"{path}:{issue.line}: storage.key_file: ")


def test_the_daemon_encrypts_a_plaintext_store_and_refuses_a_wrong_key(tmp_path: Path) -> None:
    """End to end: a daemon polls into a plaintext store; started again with a key it
    encrypts the store in place (no reading lost) and polls on; `stats` reads it with
    the key; with another key the daemon refuses to start, the store untouched."""
    from helpers import DaemonProcess, wait_for

    from hil_sim.process import SimProcess

    links, cfg, db = tmp_path / "links", tmp_path / "c.toml", tmp_path / "store.db"
    links.mkdir()
    sim = SimProcess(
        ["fleet", "--link-dir", str(links), "--write-config", str(cfg), "--store", str(db),
         "--buses", "1", "--meters-per-bus", "4", "--baud", "0", "--cadence", "1s"]
    )  # fmt: skip
    sim.start()
    ctl = ("--control-socket", str(tmp_path / "ctl.sock"))

    def count_plain() -> int:
        try:
            con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
            try:
                return int(con.execute("SELECT count(*) FROM readings").fetchone()[0])
            finally:
                con.close()
        except sqlite3.Error:
            return 0

    def count_encrypted() -> int:
        if db.read_bytes()[:15] == b"SQLite format 3":
            return 0  # the daemon has not encrypted it yet: opening it with a key would
        # Read-only: a read-write open here would race the daemon's own (and may move
        # a store it catches mid-rename aside as damaged).
        try:
            with Store.open_read_only(db, key=KEY) as store:
                return len(store.get_readings())
        except StoreError:
            return 0

    def rows(store: Store) -> set[tuple[str, int, str]]:
        return {(r.reading.meter, r.reading.slot, r.reading.value) for r in store.get_readings()}

    try:
        daemon = DaemonProcess(cfg, *ctl)
        try:
            wait_for(lambda: count_plain() >= 12, 120, "plaintext readings")
        finally:
            assert daemon.stop() == 0
        with Store.open(db) as store:
            plain = {
                (r.reading.meter, r.reading.slot, r.reading.value) for r in store.get_readings()
            }
        key_file = tmp_path / "store.key"
        key_file.write_text(KEY.hex() + "\n")
        key_file.chmod(0o600)
        text = cfg.read_text()
        cfg.write_text(text.replace("[storage]\n", '[storage]\nkey_file = "store.key"\n', 1))
        daemon = DaemonProcess(cfg, *ctl)
        try:
            wait_for(lambda: count_encrypted() >= len(plain) + 8, 120, "encrypted readings")
        finally:
            assert daemon.stop() == 0
        assert not db.read_bytes().startswith(b"SQLite format 3")
        with Store.open(db, key=KEY) as store:
            now = rows(store)
            assert store.events(kind="store_encrypted")
        assert plain <= now  # not a reading lost
        stats = CliRunner().invoke(main, ["stats", "--config", str(cfg), "--json"])
        assert stats.exit_code == 0, stats.output
        sums = {p.name: digest(p) for p in tmp_path.iterdir() if p.name.startswith("store.db")}
        key_file.write_text(OTHER.hex() + "\n")
        done = subprocess.run(
            [sys.executable, "-m", "concentrator", "run", "--config", str(cfg), *ctl],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode != 0
        assert "the key does not open this store" in done.stderr
        assert "Traceback" not in done.stderr
        after = {p.name: digest(p) for p in tmp_path.iterdir() if p.name.startswith("store.db")}
        assert after == sums  # untouched: not moved aside, not rewritten
    finally:
        sim.stop()
