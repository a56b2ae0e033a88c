"""The A/B release directory shared by the updater (inside the daemon) and the guard
process (`concentrator supervise`), so both read and write one layout::

    ROOT/releases/<version>/site/      the release, installed with pip --target
    ROOT/releases/<version>/manifest.cbor, manifest.sig
    ROOT/incoming/<version>.part       a download in progress: verified chunks only
    ROOT/current  -> releases/<version>  what the guard starts (absent: the base install)
    ROOT/previous -> releases/<version>  what a rollback returns to (absent: base install)
    ROOT/switch.json    the updater asks the guard to switch to a new release
    ROOT/trial.json     the guard is judging a new release (survives a guard restart)
    ROOT/outcome.json   how the last trial ended; the daemon reports it upstream

A release is never changed in place: a new one is installed beside the running one and
the switch (and the switch back) is one atomic rename of a symlink.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from clitools.files import write_file

SUPERVISOR_ENV = "MF_SUPERVISOR"  # set by the guard for its child: the releases root
EXIT_SWITCH = 75  # the daemon's exit code for "switch to the release in switch.json"


class Releases:
    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def releases_dir(self) -> Path:
        return self.root / "releases"

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    def release_dir(self, version: str) -> Path:
        return self.releases_dir / version

    def site(self, version: str) -> Path:
        return self.release_dir(version) / "site"

    def installed(self, version: str) -> bool:
        return (self.release_dir(version) / "manifest.cbor").is_file()

    def link(self, name: str) -> str | None:
        """The version ``current`` or ``previous`` points at (None: the base install)."""
        path = self.root / name
        if not path.is_symlink():
            return None
        return Path(os.readlink(path)).name

    def set_link(self, name: str, version: str | None) -> None:
        path = self.root / name
        if version is None:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return
        tmp = self.root / f".{name}.tmp"
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(Path("releases") / version)
        os.replace(tmp, path)  # atomic: the guard never sees a missing link

    def read(self, name: str) -> dict[str, Any] | None:
        try:
            doc = json.loads((self.root / name).read_text())
        except (OSError, ValueError):
            return None
        return doc if isinstance(doc, dict) else None

    def write(self, name: str, doc: dict[str, Any]) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        write_file(self.root / name, json.dumps(doc))

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / name).unlink()

    def prune(self) -> list[str]:
        """Delete releases that are neither current nor previous; return their versions."""
        keep = {self.link("current"), self.link("previous")}
        gone = []
        if self.releases_dir.is_dir():
            for d in self.releases_dir.iterdir():
                if d.name not in keep:
                    shutil.rmtree(d, ignore_errors=True)
                    gone.append(d.name)
        return gone
