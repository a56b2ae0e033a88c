"""The short chaos run of `make test` (`make chaos` runs the long soak): the whole chain
under random faults ends with nothing duplicated, invented or missing unexplained, and a
deliberately broken concentrator (batches retired on the broker's PUBACK) is caught."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent


def chaos(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hil_sim.chaos", "--dir", str(tmp_path / "chaos"), *args],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=ROOT,
    )


def test_short_chaos_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    # Seed 8 with these weights starts: clock step, kill, disk fill, receiver kill, outage.
    result = chaos(
        tmp_path, "--minutes", "1", "--meters-per-bus", "16", "--seed", "8",
        "--weights", "concentrator=4,broker=1,receiver=1,outage=1,link=1,disk=2,clock=2",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "PASS" in result.stdout
    for fault in ("kill -9 concentrator", "fill the concentrator's disk", "step wall clock"):
        assert fault in result.stdout, result.stdout[-4000:]


def test_a_concentrator_that_trusts_puback_is_caught(tmp_path: Path) -> None:
    broken = f"{sys.executable} {ROOT / 'tests' / 'broken_concentrator.py'}"
    result = chaos(
        # Seed 4: the first fault is a receiver outage with a Mosquitto crash inside it.
        tmp_path, "--minutes", "0.5", "--meters-per-bus", "8", "--seed", "4",
        "--weights", "concentrator=0,broker=0,receiver=0,link=0,disk=0,clock=0,outage=1",
        "--concentrator-cmd", broken,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout[-4000:] + result.stderr[-4000:]
    assert "FAIL" in result.stdout and "committed, never delivered" in result.stdout
