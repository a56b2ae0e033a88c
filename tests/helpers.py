"""Helpers for tests that drive our CLIs as subprocesses."""

from __future__ import annotations

import json
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

from hil_sim.process import cli_command, env_without_color
from hil_sim.truth import TruthRecord, read_truth


def run_cli(
    *args: str, timeout: float = 300, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*cli_command("concentrator"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**env_without_color(), **(env or {})},
    )


def receiver_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``cloud-receiver ARGS`` as a subprocess, output captured."""
    return subprocess.run(
        [*cli_command("cloud-receiver"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env_without_color(),
    )


def receiver_json(*args: str) -> Any:
    """``cloud-receiver ARGS`` that must succeed; its stdout parsed as JSON."""
    done = receiver_cli(*args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def read_json(*args: str) -> dict[str, Any]:
    result = run_cli("read", "--json", *args)
    assert result.returncode == 0, result.stderr
    doc: dict[str, Any] = json.loads(result.stdout)
    return doc


def truth_of(path: Path) -> list[TruthRecord]:
    return list(read_truth(path))


# A late reply or one behind line noise still carries the meter's true value.
GENUINE = (None, "late_reply", "noise")


def truth_values(truth: Path) -> dict[tuple[str, str], set[str]]:
    """What each meter really reported, per stored quantity name."""
    out: dict[tuple[str, str], set[str]] = defaultdict(set)
    for r in read_truth(truth):
        if r.fault not in GENUINE:
            continue
        if r.quantity.startswith("frozen_daily_energy_fwd"):
            total, *tariffs = r.value.split(" / ")
            for part, value in zip(
                ("total", "t1", "t2", "t3", "t4"), [total, *tariffs], strict=True
            ):
                out[(r.meter, f"frozen_daily_energy_fwd_{part}")].add(value)
        else:
            out[(r.meter, r.quantity)].add(r.value)
    return out


class DaemonProcess:
    """`concentrator run` as a real process; always stopped (or killed) by the test."""

    def __init__(self, config: Path, *args: str, log: Path | None = None) -> None:
        import sys

        self.log = log or config.with_suffix(".daemon.log")
        self._log_fh = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "concentrator", "run", "--config", str(config), "-v", *args],
            stdout=self._log_fh,
            stderr=subprocess.STDOUT,
        )

    def stop(self, timeout: float = 120) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)
        self._log_fh.close()


def wait_for(predicate: Any, timeout: float, what: str, interval: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout``."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def read_status(path: Path) -> dict[str, Any] | None:
    try:
        doc: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc
