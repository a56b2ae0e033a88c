"""The guard (`concentrator supervise`) on its own, with stand-in releases: tiny
``concentrator`` packages on the release's PYTHONPATH that behave like a daemon that
proves itself, or like one that crashes at start. The real daemon's side is in
tests/test_rollout_e2e.py."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import read_status, wait_for

from concentrator.update.releases import Releases

CONFIG = """\
[concentrator]
id = "dc-guard"

[storage]
path = "store.db"

[[bus]]
name = "bus1"
type = "rs485"
port = "/dev/null"
baud = 2400
parity = "E"

[[meter]]
address = "000000000001"
protocol = "dlt645"
bus = "bus1"

[[task]]
name = "energy"
quantities = ["energy_fwd_total"]
every = "15m"
"""

# A release whose daemon writes a healthy status (pid, version, readings stored, a batch
# acknowledged) and runs until SIGTERM.
HEALTHY = """\
import json, os, signal, sys, time
status = sys.argv[sys.argv.index("--config") + 1].replace("c.toml", "store.status.json")
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
while True:
    with open(status + ".tmp", "w") as fh:
        json.dump({"pid": os.getpid(), "version": VERSION, "unhealthy": None,
                   "readings_committed": 3, "uplink": {"batches_acked": 1}}, fh)
    os.replace(status + ".tmp", status)
    time.sleep(0.1)
"""
CRASHING = "import sys\nsys.exit(3)\n"


def fake_release(releases: Releases, version: str, main: str) -> None:
    pkg = releases.site(version) / "concentrator"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(f"VERSION = {version!r}\n" + main)
    (releases.release_dir(version) / "manifest.cbor").write_bytes(b"")


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Path, Releases]]:
    cfg = tmp_path / "c.toml"
    cfg.write_text(CONFIG)
    yield cfg, Releases(tmp_path / "releases")


def _guard(cfg: Path, releases: Releases) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "concentrator", "supervise", "--config", str(cfg),
         "--releases", str(releases.root)],
        stdout=(cfg.parent / "guard.log").open("ab"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def _stop(guard: subprocess.Popen[bytes]) -> int:
    guard.send_signal(signal.SIGTERM)
    try:
        return guard.wait(60)
    finally:
        if guard.poll() is None:
            guard.kill()
            guard.wait()


def test_a_switch_requested_before_a_restart_is_made_and_passes_its_trial(
    site: tuple[Path, Releases],
) -> None:
    cfg, releases = site
    fake_release(releases, "0.2.0", HEALTHY)
    releases.write("switch.json", {"version": "0.2.0", "window_s": 1.0})
    guard = _guard(cfg, releases)
    try:
        outcome = wait_for(lambda: releases.read("outcome.json"), 60, "the trial's outcome")
        assert outcome["state"] == "healthy" and outcome["version"] == "0.2.0"
        assert releases.link("current") == "0.2.0" and releases.link("previous") is None
        assert releases.read("trial.json") is None and releases.read("switch.json") is None
        status = read_status(cfg.parent / "store.status.json")
        assert status is not None and status["version"] == "0.2.0"
    finally:
        assert _stop(guard) == 0


def test_a_release_that_keeps_crashing_is_rolled_back(site: tuple[Path, Releases]) -> None:
    cfg, releases = site
    fake_release(releases, "0.1.0", HEALTHY)
    fake_release(releases, "0.2.0", CRASHING)
    releases.set_link("current", "0.1.0")
    releases.write("switch.json", {"version": "0.2.0", "window_s": 600.0})
    guard = _guard(cfg, releases)
    try:
        outcome = wait_for(lambda: releases.read("outcome.json"), 60, "the rollback")
        assert outcome["state"] == "rolled_back" and outcome["previous"] == "0.1.0"
        assert outcome["reason"] == "the daemon exited 3 times, last with 3"
        assert releases.link("current") == "0.1.0"
        # The old release runs again.
        wait_for(lambda: (read_status(cfg.parent / "store.status.json") or {}).get("version")
                 == "0.1.0", 60, "the old release's status")  # fmt: skip
    finally:
        assert _stop(guard) == 0
    assert json.loads((releases.root / "outcome.json").read_text())["version"] == "0.2.0"


def test_a_trial_that_never_proves_itself_is_rolled_back_with_what_was_missing(
    site: tuple[Path, Releases],
) -> None:
    cfg, releases = site
    fake_release(
        releases, "0.2.0", HEALTHY.replace('"readings_committed": 3', '"readings_committed": 0')
    )
    releases.write("switch.json", {"version": "0.2.0", "window_s": 1.0})
    guard = _guard(cfg, releases)
    try:
        outcome = wait_for(lambda: releases.read("outcome.json"), 60, "the rollback")
        assert outcome["state"] == "rolled_back"
        assert outcome["reason"] == "within the health window: no reading polled and stored"
        assert releases.link("current") is None  # back on the base install
    finally:
        _stop(guard)  # the base install's daemon cannot open /dev/null as a bus: any code
