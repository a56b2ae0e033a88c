"""`concentrator backup`: a consistent copy of the store while the daemon polls into it,
encrypted like the store, checked, and never written over an existing file."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
from pathlib import Path

from helpers import DaemonProcess, run_cli, wait_for

from concentrator.storage import Store
from concentrator.storage.errors import StoreError
from hil_sim.process import SimProcess

KEY = bytes(range(32))
OTHER = bytes(range(1, 33))


def _count(path: Path, key: bytes | None) -> int:
    with Store.open_read_only(path, key=key) as store:
        return len(store.get_readings())


def _stored(path: Path, key: bytes | None) -> int:
    """Readings so far, 0 while the daemon is still creating the store."""
    try:
        return _count(path, key) if path.exists() else 0
    except StoreError:
        return 0


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_live_backup_of_an_encrypted_store_is_one_checked_encrypted_snapshot(
    tmp_path: Path,
) -> None:
    links, cfg, db = tmp_path / "links", tmp_path / "c.toml", tmp_path / "store.db"
    links.mkdir()
    sim = SimProcess(
        ["fleet", "--link-dir", str(links), "--write-config", str(cfg), "--store", str(db),
         "--buses", "1", "--meters-per-bus", "4", "--baud", "0", "--cadence", "1s"]
    )  # fmt: skip
    sim.start()
    key_file = tmp_path / "store.key"
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(0o600)
    cfg.write_text(cfg.read_text().replace("[storage]\n", '[storage]\nkey_file = "store.key"\n', 1))
    daemon = DaemonProcess(cfg, "--control-socket", str(tmp_path / "ctl.sock"))
    first, again = tmp_path / "b1.db", tmp_path / "b2.db"
    try:
        wait_for(lambda: _stored(db, KEY) >= 12, 120, "encrypted readings")
        done = run_cli("backup", "--config", str(cfg), "--out", str(first), "--json")
        assert done.returncode == 0, done.stderr
        doc = json.loads(done.stdout)
        assert doc["encrypted"] is True and doc["readings"] >= 12
        # The copy is what the tool says it is, readable only with the key, private.
        assert _count(first, KEY) == doc["readings"]
        assert first.read_bytes()[:15] != b"SQLite format 3"
        assert stat.S_IMODE(first.stat().st_mode) == 0o600
        assert not list(tmp_path.glob(".b1.db.part"))
        # The daemon went on polling meanwhile: the backup was one moment of it.
        wait_for(lambda: _count(db, KEY) > doc["readings"], 120, "the daemon polling on")
        # Never over an existing file.
        before = _digest(first)
        refused = run_cli("backup", "--config", str(cfg), "--out", str(first))
        assert refused.returncode == 1 and "never overwrites" in refused.stderr
        assert _digest(first) == before
    finally:
        assert daemon.stop() == 0
        sim.stop()
    later = run_cli("backup", "--config", str(cfg), "--out", str(again), "--json")
    assert later.returncode == 0, later.stderr
    assert json.loads(later.stdout)["readings"] == _count(db, KEY) > doc["readings"]
    # With the wrong key: refused with the reason, nothing written.
    key_file.write_text(OTHER.hex() + "\n")
    wrong = run_cli("backup", "--config", str(cfg), "--out", str(tmp_path / "b3.db"))
    assert wrong.returncode == 1 and "key does not open" in wrong.stderr, wrong.stderr
    assert not (tmp_path / "b3.db").exists() and not list(tmp_path.glob(".b3.db.part"))


def test_a_plaintext_store_backs_up_plain_and_errors_are_named(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    cfg = tmp_path / "c.toml"
    sim = SimProcess(
        ["bus", "--link", str(tmp_path / "bus1"), "--meters", "1", "--baud", "0",
         "--write-config", str(cfg), "--store", str(db)]
    )  # fmt: skip
    sim.start()
    sim.stop()
    missing = run_cli("backup", "--config", str(cfg), "--out", str(tmp_path / "b.db"))
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    with Store.open(db):
        pass
    done = run_cli("backup", "--config", str(cfg), "--out", str(tmp_path / "b.db"))
    assert done.returncode == 0, done.stderr
    con = sqlite3.connect(tmp_path / "b.db")
    try:
        assert con.execute("PRAGMA quick_check").fetchone()[0] == "ok"
    finally:
        con.close()
    nowhere = run_cli("backup", "--config", str(cfg), "--out", str(tmp_path / "no" / "b.db"))
    assert nowhere.returncode == 1 and "no such folder" in nowhere.stderr
    # A key configured for a store that was never encrypted: said, not guessed.
    key_file = tmp_path / "store.key"
    key_file.write_text(KEY.hex() + "\n")
    key_file.chmod(0o600)
    cfg.write_text(
        cfg.read_text().replace('path = "store.db"', 'path = "store.db"\nkey_file = "store.key"')
    )
    plain = run_cli("backup", "--config", str(cfg), "--out", str(tmp_path / "c.db"))
    assert plain.returncode == 1 and "not encrypted yet" in plain.stderr


def test_a_store_restored_from_a_backup_never_reuses_a_sequence_number(tmp_path: Path) -> None:
    """The store goes on numbering batches after its backup; a store restored from the
    backup numbers its new batches after `wire.RESTORE_SEQ_MARGIN`, not after the copy,
    so no ``seq`` (the AES-GCM nonce, what the receiver dedupes on) is used twice, while
    the batch in flight in the backup keeps its own (resent as the same bytes)."""
    from concentrator.config.model import StorageSection
    from concentrator.storage.backup import backup_store
    from contract import wire
    from contract.records import Reading

    def readings(k: int) -> list[Reading]:
        slot = 1_795_000_000 + 900 * k
        return [Reading(f"{m:012d}", "energy_fwd_total", slot, f"{k}.5", "kWh", slot + 1.0)
                for m in range(3)]  # fmt: skip

    db, copy = tmp_path / "store.db", tmp_path / "backup.db"
    with Store.open(db) as store:
        store.add_readings(readings(0))
        sealed = store.take_sealed_batch(100, 10, lambda b: b"sealed-%d" % b.batch_id)
        assert sealed is not None
        in_flight = sealed.batch.batch_id
        backup_store(StorageSection(path=db), copy)
        used = [in_flight]
        for k in range(1, 4):  # the store lives on after its backup
            store.add_readings(readings(k))
            taken = store.take_batch(100, 10)
            assert taken is not None
            used.append(taken.batch_id)
    copy.replace(db)  # the store is lost and restored from the backup
    with Store.open(db) as store:
        resend, _ = store.resume_in_flight()
        assert [(s.batch.batch_id, s.payload) for s in resend] == [
            (in_flight, b"sealed-%d" % in_flight)
        ]
        store.add_readings(readings(9))
        new = store.take_batch(100, 10)
        assert new is not None
        assert new.batch_id == in_flight + wire.RESTORE_SEQ_MARGIN + 1 > max(used)
        assert new.batch_id - in_flight < wire.REPLAY_WINDOW
