"""What `concentrator run` imports is what its config uses (issue 22, item 4): every
module costs the daemon RSS, so a site with only Modbus meters does not load the carrier
(Q/GDW 1376.2) or modem drivers, and one with an encrypted store not the standard
library's SQLite beside SQLCipher. The daemon runs as `concentrator run` does and
reports, at exit, which of those modules it had imported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import wait_for

from clitools.files import write_file
from concentrator.storage import Store
from hil_sim.process import SimProcess

_RUN_AND_REPORT = """
import atexit, runpy, sys
out, config = sys.argv[1], sys.argv[2]
atexit.register(lambda: open(out, "w").write(
    ",".join(sorted(m for m in sys.modules if m.startswith(("drivers.", "sqlite3"))))))
sys.argv = ["concentrator", "run", "--config", config]
runpy.run_module("concentrator", run_name="__main__")
"""

# Loaded only for a carrier bus (`concentrator.polling.plc_worker`), a carrier meter's
# 698.45 action or a [modem] table.
NOT_FOR_MODBUS = ("drivers.gdw1376_2", "drivers.plc_bus", "drivers.modem", "drivers.at_command")


KEY = bytes(range(32))


def _stored(db: Path) -> int:
    if not db.exists():
        return 0
    with Store.open(db, key=KEY) as store:
        return len(store.get_readings())


def test_a_modbus_only_encrypted_daemon_imports_no_carrier_modem_or_plain_sqlite(
    tmp_path: Path,
) -> None:
    cfg, db, imported = tmp_path / "c.toml", tmp_path / "store.db", tmp_path / "imported"
    (tmp_path / "links").mkdir()
    sim = SimProcess(
        ["fleet", "--protocol", "modbus", "--buses", "1", "--meters-per-bus", "2",
         "--baud", "0", "--cadence", "1m", "--link-dir", str(tmp_path / "links"),
         "--write-config", str(cfg), "--store", str(db)]
    )  # fmt: skip
    sim.start()
    write_file(tmp_path / "store.key", KEY.hex() + "\n")
    cfg.write_text(cfg.read_text().replace("[storage]\n", '[storage]\nkey_file = "store.key"\n', 1))
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN_AND_REPORT, str(imported), str(cfg)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for(lambda: _stored(db) > 0, 120, "readings stored")
    finally:
        proc.terminate()
        try:
            assert proc.wait(60) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
            sim.stop()
    modules = set(imported.read_text().split(","))
    assert "drivers.modbus_rtu" in modules  # the report lists what was really used
    assert not modules & {*NOT_FOR_MODBUS, "sqlite3"}, (tmp_path / "daemon.log").read_text()
