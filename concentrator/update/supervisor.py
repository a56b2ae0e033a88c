"""The guard process, `concentrator supervise`: it runs the daemon from the current
release and rolls an upgrade back when the new release does not prove itself.

Why a separate process: a release that cannot start, crashes in a loop or stops polling
cannot be trusted to judge itself. The guard is small, runs the release it started with
for its whole life, and needs nothing from a new release but its status file.

A trial (a switch to a release the updater installed) passes when, within the health
window, the new daemon has stored readings, had an uplink batch acknowledged and reports
itself healthy — and is still healthy when the window ends. Otherwise (the window ends
without that proof, or the daemon exits three times) the guard switches ``current``
back to ``previous``, starts the old release and writes why into ``outcome.json``; the
old daemon sends that upstream. The store is shared by both releases and never copied,
so readings taken during the trial are kept either way.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType
from typing import Any

from concentrator.update.releases import EXIT_SWITCH, SUPERVISOR_ENV, Releases

log = logging.getLogger(__name__)

MAX_TRIAL_EXITS = 3
STOP_TIMEOUT_S = 60.0


class Supervisor:
    def __init__(
        self,
        releases: Releases,
        run_args: list[str],
        status_path: Path,
        *,
        poll_s: float = 0.5,
    ) -> None:
        self.releases = releases
        self.run_args = run_args
        self.status_path = status_path
        self.poll_s = poll_s
        self.child: subprocess.Popen[bytes] | None = None
        self._stop_signal: int | None = None

    # ------------------------------------------------------------------ child
    def _start_child(self) -> None:
        env = dict(os.environ)
        env[SUPERVISOR_ENV] = str(self.releases.root)
        current = self.releases.link("current")
        if current is not None:
            site = str(self.releases.site(current))
            env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
        # Never import from the working directory: the release on PYTHONPATH must win.
        env["PYTHONSAFEPATH"] = "1"
        cmd = [sys.executable, "-m", "concentrator", "run", *self.run_args]
        self.releases.root.mkdir(parents=True, exist_ok=True)
        self.child = subprocess.Popen(cmd, env=env, cwd=self.releases.root)
        log.info("started the daemon (release %s), pid %d", current or "base", self.child.pid)

    def _stop_child(self) -> int:
        child = self.child
        if child is None:
            return 0
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        return child.returncode

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            if self.child is not None and self.child.poll() is None:
                self.child.send_signal(signal.SIGHUP)  # reload: the daemon's business
            return
        self._stop_signal = signum

    # ------------------------------------------------------------------ main loop
    def run(self) -> int:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self._recover()
        self._start_child()
        while True:
            if self._stop_signal is not None:
                stopped = self._stop_child()
                log.info(
                    "stopped (signal %d); the daemon exited with %d", self._stop_signal, stopped
                )
                return stopped
            assert self.child is not None
            code = self.child.poll()
            if code is None:
                trial = self.releases.read("trial.json")
                if trial is not None:
                    self._judge(trial)
                time.sleep(self.poll_s)
                continue
            if code == EXIT_SWITCH and self.releases.read("switch.json") is not None:
                self._switch()
            elif self.releases.read("trial.json") is not None:
                self._trial_exit(code)
            else:
                log.warning("the daemon exited with %d; the service manager restarts us", code)
                return code
            self._start_child()

    def _recover(self) -> None:
        """After a guard restart: a half-done switch is finished, a trial goes on."""
        if self.releases.read("switch.json") is not None:
            self._switch()

    # ------------------------------------------------------------------ trial
    def _switch(self) -> None:
        doc = self.releases.read("switch.json") or {}
        version = str(doc.get("version"))
        self.releases.remove("switch.json")
        if not self.releases.installed(version):
            log.error("asked to switch to %s, which is not installed; staying", version)
            return
        previous = self.releases.link("current")
        window = float(doc.get("window_s", 1800.0))
        now = time.time()
        self.releases.write(
            "trial.json",
            {
                "version": version,
                "previous": previous,
                "started": now,
                "deadline": now + window,
                "window_s": window,
                "exits": 0,
                "proven_at": None,
            },
        )
        self.releases.set_link("previous", previous)
        self.releases.set_link("current", version)
        log.info("switched to release %s (from %s) for a %.0f s trial", version, previous, window)

    def _status(self) -> dict[str, Any] | None:
        try:
            doc = json.loads(self.status_path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(doc, dict) or self.child is None or doc.get("pid") != self.child.pid:
            return None  # not written by the daemon we are judging
        return doc

    def _missing(self, st: dict[str, Any] | None, version: str) -> list[str]:
        """What the running daemon has not proved yet (empty: healthy)."""
        if st is None:
            return ["no status from the new daemon"]
        out = []
        if st.get("version") != version:
            out.append(f"it runs version {st.get('version')}, expected {version}")
        if st.get("unhealthy"):
            out.append(f"it reports itself unhealthy: {st['unhealthy']}")
        if not st.get("readings_committed"):
            out.append("no reading polled and stored")
        if not (st.get("uplink") or {}).get("batches_acked"):
            out.append("no uplink batch acknowledged")
        return out

    def _judge(self, trial: dict[str, Any]) -> None:
        version = str(trial["version"])
        missing = self._missing(self._status(), version)
        now = time.time()
        if not missing and trial.get("proven_at") is None:
            trial["proven_at"] = now
            self.releases.write("trial.json", trial)
            log.info("release %s proved itself; watching it to the end of the window", version)
        if now < float(trial["deadline"]):
            return
        if trial.get("proven_at") is not None and not missing:
            self._pass(trial)
        else:
            self._rollback(trial, "within the health window: " + "; ".join(missing))
            self._start_child()

    def _trial_exit(self, code: int) -> None:
        trial = self.releases.read("trial.json")
        assert trial is not None
        trial["exits"] = int(trial.get("exits", 0)) + 1
        self.releases.write("trial.json", trial)
        log.warning("release %s exited with %d during its trial", trial["version"], code)
        if trial["exits"] >= MAX_TRIAL_EXITS:
            self._rollback(trial, f"the daemon exited {trial['exits']} times, last with {code}")

    def _pass(self, trial: dict[str, Any]) -> None:
        self.releases.write(
            "outcome.json",
            {
                "version": trial["version"],
                "state": "healthy",
                "previous": trial.get("previous"),
                "window_s": trial.get("window_s"),
                "at": time.time(),
            },
        )
        self.releases.remove("trial.json")
        gone = self.releases.prune()
        log.info("release %s passed its trial (pruned %s)", trial["version"], gone or "nothing")

    def _rollback(self, trial: dict[str, Any], reason: str) -> None:
        log.error("rolling release %s back: %s", trial["version"], reason)
        self._stop_child()
        previous = trial.get("previous")
        self.releases.set_link("current", previous)
        self.releases.set_link("previous", None)
        self.releases.write(
            "outcome.json",
            {
                "version": trial["version"],
                "state": "rolled_back",
                "previous": previous,
                "reason": reason,
                "at": time.time(),
            },
        )
        self.releases.remove("trial.json")
