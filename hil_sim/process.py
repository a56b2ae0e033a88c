"""Running ``hil-sim`` as a separate process, for tests, the demo and benchmarks.

The simulator prints a JSON "ready" line once its PTYs exist; we wait for that line
(with a generous timeout, never a fixed sleep) and stop the process with SIGTERM.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from hil_sim.errors import SimNotReady


class SimProcess:
    def __init__(
        self, args: list[str], *, ready_timeout: float = 60.0, cwd: Path | None = None
    ) -> None:
        self.args = args
        self.ready_timeout = ready_timeout
        self.cwd = cwd  # relative paths in ``args`` are relative to it
        self.proc: subprocess.Popen[str] | None = None
        self.ready: dict[str, Any] = {}
        self.summary: dict[str, Any] = {}

    def start(self) -> dict[str, Any]:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "hil_sim", *self.args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.cwd,
        )
        line = self._readline(self.ready_timeout)
        if not line:
            err = self._stop_and_collect()
            raise SimNotReady(f"hil-sim did not become ready: {err.strip()}")
        self.ready = json.loads(line)
        return self.ready

    def _readline(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                if sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    return self.proc.stdout.readline()
                if self.proc.poll() is not None:
                    return ""
            return ""
        finally:
            sel.close()

    def _stop_and_collect(self) -> str:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, err = self.proc.communicate()
        for line in out.splitlines():
            if line.strip().startswith("{"):
                doc = json.loads(line)
                if doc.get("event") == "stopped":
                    self.summary = doc
        return err

    def stop(self) -> None:
        if self.proc is not None:
            self._stop_and_collect()

    @property
    def links(self) -> list[Path]:
        return [(self.cwd or Path()) / b["link"] for b in self.ready["buses"]]

    @property
    def meters(self) -> list[str]:
        return [m for b in self.ready["buses"] for m in b["meters"]]

    @property
    def truth(self) -> Path:
        return (self.cwd or Path()) / str(self.ready["truth"])

    def __enter__(self) -> SimProcess:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def cli_command(name: str) -> list[str]:
    """How to run one of our console scripts with the current interpreter."""
    module = {
        "concentrator": "concentrator",
        "hil-sim": "hil_sim",
        "cloud-receiver": "cloud_receiver",
    }[name]
    return [sys.executable, "-m", module]


def env_without_color() -> dict[str, str]:
    env = dict(os.environ)
    env["NO_COLOR"] = "1"
    env["COLUMNS"] = "120"
    return env
