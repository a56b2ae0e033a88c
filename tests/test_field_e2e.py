"""Issue 18, end to end: what a new user meets in the first hour, with the shipped
commands as processes: a config written by ``hil-sim`` runs wherever it is started
from, a direct read never talks over the daemon's polls, a bad store folder or date
range is a clear message, and a normal stop says nothing alarming."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from helpers import DaemonProcess, read_status, run_cli, wait_for

from cloud_receiver.public import LocalBroker, SqliteStorage, pki
from concentrator.storage import Store
from drivers.port_lock import lock_holder
from hil_sim.fleet import add_uplink
from hil_sim.process import SimProcess, cli_command, env_without_color


def _short_dir(prefix: str) -> Path:
    # A Unix socket path holds at most 107 bytes: pytest's tmp_path can be longer.
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def _stored(db: Path) -> int:
    if not db.exists():
        return 0
    with Store.open(db) as store:
        return len(store.get_readings())


def test_a_config_written_by_hil_sim_runs_and_its_port_is_the_daemons(tmp_path: Path) -> None:
    # The reproduction: `hil-sim bus --write-config hb/c.toml` passed `config
    # check`, then `concentrator run` died with a traceback (StoreError: hb/hb/c.db): the
    # store was read relative to the config file, the port and the simulator's own
    # paths relative to the working directory. One rule now: relative to the config.
    (tmp_path / "hb").mkdir()
    sim = SimProcess(
        ["bus", "--link", "hb/bus", "--write-config", "hb/c.toml", "--meters", "2",
         "--baud", "0", "--cadence", "1m"],
        cwd=tmp_path,
    )  # fmt: skip
    sock_dir = _short_dir("mff")
    daemon: subprocess.Popen[str] | None = None
    try:
        sim.start()
        check = subprocess.run(
            [*cli_command("concentrator"), "config", "check", "hb/c.toml"],
            capture_output=True, text=True, timeout=120, env=env_without_color(), cwd=tmp_path,
        )  # fmt: skip
        assert check.returncode == 0, check.stderr
        assert check.stdout == "hb/c.toml: OK (1 buses, 2 meters, 2 tasks)\n"
        socket = sock_dir / "ctl.sock"
        log = tmp_path / "daemon.log"
        with log.open("w") as out:
            daemon = subprocess.Popen(
                [*cli_command("concentrator"), "run", "--config", "hb/c.toml",
                 "--time-scale", "60", "--control-socket", str(socket)],
                stdout=out, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
            )  # fmt: skip
        db = tmp_path / "hb" / "c.db"  # beside the config, not hb/hb/c.db
        wait_for(lambda: _stored(db) >= 2 or daemon.poll() is not None, 120, "readings")
        assert daemon.poll() is None, log.read_text()
        assert not (tmp_path / "hb" / "hb").exists()

        # The daemon holds its port: a direct read there would garble its polls.
        link = tmp_path / "hb" / "bus"
        holder = lock_holder(link)
        assert holder is not None and holder.pid == daemon.pid
        meter = sim.meters[0]
        for args in (("read", "--address", meter), ("scan",)):
            refused = run_cli(*args, "--port", str(link), "--timeout", "0.05")
            assert refused.returncode == 6, refused.stderr
            text = refused.stderr.replace("\n", " ")
            assert f"it is in use by pid {daemon.pid} (" in text
            assert "use `concentrator read METER` through the daemon" in text
        through = run_cli("read", meter, "voltage_a", "--socket", str(socket), "--json")
        assert through.returncode == 0, through.stderr
        assert json.loads(through.stdout)["readings"][0]["name"] == "voltage_a"
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(timeout=120)
        sim.stop()
        shutil.rmtree(sock_dir, ignore_errors=True)
    assert daemon is not None and daemon.returncode == 0
    assert "Traceback" not in log.read_text()


def test_run_refuses_a_store_folder_that_does_not_exist(tmp_path: Path) -> None:
    # It used to start and die with a traceback when opening the store.
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        '[concentrator]\nid = "dc-1"\n\n[storage]\npath = "no/such/folder/s.db"\n\n'
        '[[bus]]\nname = "b"\ntype = "rs485"\nport = "/dev/ttyUSB-mf-absent"\nbaud = 2400\n'
        'parity = "E"\n'
    )
    done = run_cli("run", "--config", str(cfg), "--control-socket", "/tmp/mf-unused.sock")
    assert done.returncode == 7, done.stderr
    assert done.stderr.startswith("invalid configuration, not starting:")
    assert f"{cfg}:5: storage.path: {tmp_path}/no/such/folder/s.db: the folder" in done.stderr
    assert "does not exist" in done.stderr and "Traceback" not in done.stderr
    # The port that is not there is said too, as a warning.
    assert "bus[0].port: warning: serial port /dev/ttyUSB-mf-absent does not exist" in (done.stderr)


def test_a_backfill_range_is_checked_before_the_daemon_is_asked(tmp_path: Path) -> None:
    # It drew a "0/None" progress bar and then failed; no daemon is needed to know.
    socket = str(tmp_path / "nobody.sock")
    backwards = run_cli(
        "backfill", "000000000001", "--from", "2026-03-05", "--to", "2026-03-01",
        "--socket", socket,
    )  # fmt: skip
    assert backwards.returncode == 2, backwards.stderr  # not 8: nobody was asked
    assert "--from 2026-03-05 is after --to 2026-03-01" in backwards.stderr
    assert "None" not in backwards.stderr and "/" not in backwards.stderr.split("Error:")[1]
    too_long = run_cli(
        "backfill", "000000000001", "--from", "2026-01-01", "--to", "2026-03-31",
        "--socket", socket,
    )  # fmt: skip
    assert too_long.returncode == 2
    assert "90 days from 2026-01-01 to 2026-03-31: at most 62" in too_long.stderr


def test_a_normal_stop_logs_no_warning(tmp_path: Path) -> None:
    # `make demo` logged "WARNING uplink disconnected: Normal disconnection" (and the
    # receiver the same) on every normal stop.
    cid = "dc-sim-0001"
    (tmp_path / "links").mkdir()
    cfg, db, rdb = tmp_path / "c.toml", tmp_path / "s.db", tmp_path / "r.db"
    sock_dir = _short_dir("mfw")
    with LocalBroker(tmp_path / "broker") as broker:
        fragment = pki.provision(
            broker.pki_dir, cid, broker_host="127.0.0.1", broker_port=broker.port
        )
        with SimProcess(
            ["fleet", "--buses", "1", "--meters-per-bus", "2", "--baud", "0", "--cadence", "1m",
             "--time-scale", "60", "--link-dir", str(tmp_path / "links"),
             "--write-config", str(cfg), "--store", str(db)]
        ):  # fmt: skip
            add_uplink(cfg, fragment, concentrator_id=cid, overrides={"poll_s": 0.5})
            receiver_log = tmp_path / "receiver.log"
            with receiver_log.open("w") as out:
                receiver = subprocess.Popen(
                    [*cli_command("cloud-receiver"), "run", "--broker", broker.address,
                     "--pki-dir", str(broker.pki_dir), "--db", f"sqlite:///{rdb}"],
                    stdout=out, stderr=subprocess.STDOUT, env=env_without_color(),
                )  # fmt: skip
            daemon = DaemonProcess(
                cfg, "--time-scale", "60", "--control-socket", str(sock_dir / "c.sock")
            )
            try:
                status = db.with_suffix(".status.json")

                def acked() -> bool:
                    doc = read_status(status)
                    uplink = (doc or {}).get("uplink") or {}
                    return bool(uplink.get("batches_acked"))

                wait_for(lambda: acked() or daemon.proc.poll() is not None, 120, "an ack")
                assert daemon.proc.poll() is None, daemon.log.read_text()
            finally:
                code = daemon.stop()
                receiver.send_signal(signal.SIGTERM)
                receiver.wait(timeout=120)
                shutil.rmtree(sock_dir, ignore_errors=True)
    assert code == 0 and receiver.returncode == 0
    for log in (daemon.log, receiver_log):
        text = log.read_text()
        assert " WARNING " not in text and "Traceback" not in text, text
    storage = SqliteStorage(rdb)
    try:
        assert [c.concentrator for c in storage.concentrators()] == [cid]
    finally:
        storage.close()
    assert time.time() > 0 and os.path.exists(db)
