"""Processes the benchmarks start beside what they measure (bench/ is no package: the
scripts import this module from beside them)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cloud_receiver.public import LocalBroker


def receiver(broker: LocalBroker, db: Path, log: Path) -> subprocess.Popen[bytes]:
    """``cloud-receiver run -v`` on ``broker`` into the SQLite file ``db``, its output in
    ``log`` (it says "subscribed to" there once it takes batches): it acks a concentrator's
    batches, so a backlog drains."""
    with log.open("wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "cloud_receiver", "run", "--broker", broker.address,
             "--pki-dir", str(broker.pki_dir), "--db", f"sqlite:///{db}", "-v"],
            stdout=fh,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate, and kill what does not stop within a minute."""
    proc.terminate()
    try:
        proc.wait(60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
