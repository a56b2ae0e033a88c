"""Helpers for tests that drive our CLIs as subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
from collections import defaultdict
from pathlib import Path
from typing import Any

from hil_sim.process import cli_command, env_without_color
from hil_sim.truth import TruthRecord, read_truth

# `make test-long` (MF_LONG=1) runs the full-size versions of the longest tests; `make
# test` (and CI) runs the same tests at a size that keeps the suite under 15 minutes.
LONG = os.environ.get("MF_LONG") == "1"


def sized(short: int, long: int) -> int:
    """The size of a run: ``long`` under `make test-long`, ``short`` otherwise."""
    return long if LONG else short


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


# A session file no test creates: a command run without ``session=`` is not logged in
# (and never picks up the session of whoever runs the tests).
NO_SESSION = "/nonexistent/meterflow-test-session.json"


def receiver_cli(
    *args: str,
    timeout: float = 120,
    session: Path | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``cloud-receiver ARGS`` as a subprocess, output captured, acting through the
    login ``session`` (a file from `Operators.login`)."""
    return subprocess.run(
        [*cli_command("cloud-receiver"), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={
            **env_without_color(),
            "MF_SESSION": str(session) if session is not None else NO_SESSION,
            **(env or {}),
        },
    )


def receiver_json(*args: str, session: Path | None = None) -> Any:
    """``cloud-receiver ARGS`` that must succeed; its stdout parsed as JSON."""
    done = receiver_cli(*args, session=session)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


class Operators:
    """Operators of one receiver database with known passwords and TOTP secrets, logged
    in on demand (`login` writes a session file, as ``cloud-receiver login`` does).

        ops = Operators(url, tmp_path / "sessions")
        session = ops.login("olga", "operator")      # added first if need be
        receiver_cli("command", ..., session=session)
    """

    PASSWORD = "correct horse battery staple"

    def __init__(self, db_url: str, directory: Path) -> None:
        self.db_url = db_url
        self.directory = directory
        self.secrets: dict[str, str | None] = {}
        self._steps: dict[str, int] = {}
        self._sessions: dict[str, Path] = {}

    def add(self, name: str, role: str, *, totp: bool | None = None) -> str | None:
        """Add operator ``name`` (TOTP: by role unless ``totp`` says); its secret."""
        import time

        from cloud_receiver.access import operators
        from cloud_receiver.access.policy import Role
        from cloud_receiver.storage import open_storage

        storage = open_storage(self.db_url)
        try:
            with storage.transaction() as tx:
                _, secret = operators.add(
                    tx, name, Role(role), self.PASSWORD, with_totp=bool(totp), by="test",
                    now=time.time(),
                )  # fmt: skip
        finally:
            storage.close()
        self.secrets[name] = secret
        return secret

    # A code is used a moment after it is made (a browser fills the form on a busy
    # machine): it must stay valid at least this long.
    CODE_MARGIN_S = 15

    def code(self, name: str) -> str | None:
        """A TOTP code not used yet (a login takes each time step once) that the server
        accepts for at least `CODE_MARGIN_S` more seconds (it takes one step either side
        of its own: step ``s`` until ``(s + 2) * interval``)."""
        import time

        import pyotp

        secret = self.secrets.get(name)
        if secret is None:
            return None
        totp = pyotp.TOTP(secret)
        while True:
            now = time.time()
            current = int(now // totp.interval)
            step = next(
                (
                    s
                    for s in (current - 1, current, current + 1)
                    if s > self._steps.get(name, 0)
                    and (s + 2) * totp.interval - now >= self.CODE_MARGIN_S
                ),
                None,
            )
            if step is not None:
                self._steps[name] = step
                return totp.generate_otp(step)
            time.sleep(1)

    def login(
        self,
        name: str,
        role: str | None = None,
        *,
        lifetime: float | None = None,
        fresh: bool = False,
    ) -> Path:
        """Log ``name`` in (adding it with ``role`` first if it is new); the session file.
        The session of an earlier call is reused unless ``fresh`` (or ``lifetime``)."""
        import time

        from cloud_receiver.access import sessions
        from cloud_receiver.storage import open_storage

        if name in self._sessions and not fresh and lifetime is None:
            return self._sessions[name]
        if name not in self.secrets:
            assert role is not None, f"operator {name} is new: give its role"
            self.add(name, role)
        storage = open_storage(self.db_url)
        try:
            done = sessions.login(
                storage, name, self.PASSWORD, self.code(name), where="test@host",
                now=time.time(), lifetime=lifetime,
            )  # fmt: skip
        finally:
            storage.close()
        path = self.directory / f"{name}.session.json"
        path.unlink(missing_ok=True)
        done.file.write(path)
        self._sessions[name] = path
        return path


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
