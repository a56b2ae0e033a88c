"""Files at rest (issue 19, item 5): every file our tools create has an explicit mode,
whatever the umask — the tools run here under ``umask 000``, the most permissive."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from clitools.files import GROUP_READ, PRIVATE, create_file, open_text, restrict, write_file

BIN = Path(sys.executable).parent


def run(*args: str, cwd: Path) -> None:
    done = subprocess.run(args, cwd=cwd, umask=0, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode)
        for p in root.rglob("*")
        if p.is_file()
    }


def test_receiver_tools_write_keys_configs_and_databases_private_under_umask_000(
    tmp_path: Path,
) -> None:
    cr = str(BIN / "cloud-receiver")
    run(cr, "provision", "C1", "--pki-dir", "pki", "--broker-host", "h", "--broker-port", "1",
        cwd=tmp_path)  # fmt: skip
    run(cr, "broker-config", "--pki-dir", "pki", "--port", "8883", "--out", "b/m.conf",
        cwd=tmp_path)  # fmt: skip
    hs = str(BIN / "hil-sim")
    common = ("areas", "--areas", "1", "--customers", "2", "--days", "1")
    run(hs, *common, "--out-dir", str(tmp_path / "csv"), cwd=tmp_path)
    (tmp_path / "db").mkdir()
    run(hs, *common, "--out-dir", "db", "--db", f"sqlite:///{tmp_path}/db/r.db", cwd=tmp_path)
    found = modes(tmp_path)
    # Certificates, public keys and the CRL the broker checks hold no secret.
    public = {name for name in found if name.endswith((".crt", ".pub", "crl.pem"))}
    group = {"b/m.conf", "b/m.acl", "b/m.dynsec.json", "pki/concentrators/C1/uplink.toml"}
    assert group <= set(found)
    for name, mode in found.items():
        want = 0o644 if name in public else GROUP_READ if name in group else PRIVATE
        assert mode == want, f"{name}: {mode:o}, expected {want:o}"
    for name in ("pki/ca.key", "pki/command.key", "pki/concentrators/C1/payload.key",
                 "db/r.db", "csv/readings.csv", "db/truth.jsonl"):  # fmt: skip
        assert found[name] == PRIVATE, name
    assert stat.S_IMODE((tmp_path / "pki").stat().st_mode) == 0o700


STORE_SCRIPT = """
import sys
from pathlib import Path
from concentrator.storage import Store
from contract.records import Reading
from hil_sim.fleet import write_plc_config
root = Path(sys.argv[1])
with Store.open(root / "store.db") as store:
    store.add_readings([Reading("000000000001", "energy_fwd_total", 900, "1.5", "kWh",
                                901.0, "poll")])
    # -wal and -shm exist while the store is open
    print(sorted(p.name for p in root.iterdir()))
write_plc_config(root / "concentrator.toml", root / "link", ["000000000001"])
"""


def test_concentrator_store_and_written_config_are_private_under_umask_000(
    tmp_path: Path,
) -> None:
    done = subprocess.run(
        [sys.executable, "-c", STORE_SCRIPT, str(tmp_path)],
        umask=0, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "store.db-wal" in done.stdout and "store.db-shm" in done.stdout
    found = modes(tmp_path)
    assert found["store.db"] == PRIVATE
    assert found["concentrator.toml"] == PRIVATE
    assert all(mode == PRIVATE for mode in found.values()), found


def test_a_loose_store_from_an_older_release_is_narrowed_when_opened(tmp_path: Path) -> None:
    from concentrator.storage import Store

    path = tmp_path / "old.db"
    with Store.open(path):
        pass
    for suffix in ("", "-wal", "-shm"):
        target = Path(f"{path}{suffix}")
        if target.exists():
            os.chmod(target, 0o666)
    with Store.open(path):
        for suffix in ("", "-wal", "-shm"):
            assert stat.S_IMODE(Path(f"{path}{suffix}").stat().st_mode) == PRIVATE


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_helpers_give_the_exact_mode_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        write_file(tmp_path / "a", b"x", GROUP_READ)
        assert create_file(tmp_path / "b", PRIVATE)
        assert not create_file(tmp_path / "b", PRIVATE)  # an existing file is not touched
        with open_text(tmp_path / "c", GROUP_READ) as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == GROUP_READ
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == PRIVATE
    assert stat.S_IMODE((tmp_path / "c").stat().st_mode) == GROUP_READ
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp left
    os.chmod(tmp_path / "a", 0o666)
    restrict(tmp_path / "a", PRIVATE)
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == PRIVATE


@pytest.mark.slow
def test_a_daemon_and_simulator_started_under_umask_000_leave_nothing_readable(
    tmp_path: Path,
) -> None:
    from helpers import DaemonProcess, read_status, wait_for

    from hil_sim.process import SimProcess

    links, cfg, db = tmp_path / "links", tmp_path / "c.toml", tmp_path / "store.db"
    links.mkdir()
    old = os.umask(0)  # inherited by both processes
    try:
        sim = SimProcess(
            ["fleet", "--link-dir", str(links), "--write-config", str(cfg), "--store", str(db),
             "--buses", "1", "--meters-per-bus", "2", "--baud", "0", "--cadence", "1s"]
        )  # fmt: skip
        sim.start()
        daemon = DaemonProcess(cfg, "--control-socket", str(tmp_path / "ctl.sock"))
    finally:
        os.umask(old)
    try:
        status = db.with_suffix(".status.json")
        wait_for(lambda: (read_status(status) or {}).get("buses"), 120, "the status file")
        found = modes(tmp_path)
    finally:
        assert daemon.stop() == 0
        sim.stop()
    assert found["c.toml"] == PRIVATE
    assert found["store.db"] == PRIVATE and found["store.db-wal"] == PRIVATE
    assert found["store.db.held"] == PRIVATE
    assert found["store.status.json"] == GROUP_READ
    truth = [name for name in found if name.endswith(".jsonl")]
    assert truth and all(found[name] == PRIVATE for name in truth)


def test_receiver_database_backup_and_restore_are_private_under_umask_000(
    tmp_path: Path,
) -> None:
    from cloud_receiver.storage import backup as bk
    from cloud_receiver.storage import open_storage

    old = os.umask(0)
    try:
        url = f"sqlite:///{tmp_path / 'db' / 'receiver.db'}"
        open_storage(url).close()
        out = tmp_path / "backups" / "receiver.mfbak"
        bk.backup(url, out)
        restored = tmp_path / "restored" / "r.db"
        _, comparison = bk.restore(out, f"sqlite:///{restored}")
    finally:
        os.umask(old)
    assert comparison.same
    found = modes(tmp_path)
    for name in ("db/receiver.db", "backups/receiver.mfbak", "restored/r.db"):
        assert found[name] == PRIVATE, (name, f"{found[name]:o}")
    loose = {name: f"{mode:o}" for name, mode in found.items() if mode & 0o077}
    assert not loose
