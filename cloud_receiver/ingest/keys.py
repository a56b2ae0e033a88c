"""The payload keys the ingest opens batches with."""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path

log = logging.getLogger(__name__)

Stamp = tuple[int, int, int]


def _stamp(path: Path) -> Stamp:
    """What says a file changed: its inode (the PKI tools replace files, never rewrite
    them in place), its mtime in nanoseconds and its size — an mtime alone misses a
    rewrite within the file system's timestamp granularity."""
    st = path.stat()
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class KeyRegistry:
    """Payload keys per concentrator and key id, from the provisioning ``keys.json``.

    The file is re-read when it changes, so a concentrator provisioned (or a key rotated)
    while the receiver runs is accepted without a restart.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: Stamp | None = None
        self._keys: dict[str, dict[int, bytes]] = {}
        self._lock = threading.Lock()

    def lookup(self, concentrator_id: str, key_id: int) -> bytes | None:
        with self._lock:
            self._refresh()
            return self._keys.get(concentrator_id, {}).get(key_id)

    def _refresh(self) -> None:
        try:
            stamp = _stamp(self.path)
        except FileNotFoundError:
            return
        if stamp == self._stamp:
            return
        doc = json.loads(self.path.read_text())
        self._keys = {
            cid: {int(kid): bytes.fromhex(hexkey) for kid, hexkey in keys.items()}
            for cid, keys in doc.items()
        }
        self._stamp = stamp


# The revocation ledger in the PKI directory, written by
# `cloud_receiver.applications.fleet.revocation`; the ingest reads only which
# concentrators are revoked.
REVOCATIONS = "revoked.json"


class Revocations:
    """Which concentrators are revoked, from the ledger's ``concentrators`` table.

    Re-read when the file changes, like `KeyRegistry`: a ``cloud-receiver revoke`` takes
    effect on the running receivers at their next message. A ledger that cannot be read
    counts as no change (the last good one stays in force), never as "nobody revoked".
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stamp: Stamp | None = None
        self._revoked: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def is_revoked(self, concentrator_id: str) -> bool:
        with self._lock:
            self._refresh()
            return concentrator_id in self._revoked

    def _refresh(self) -> None:
        try:
            stamp = _stamp(self.path)
            if stamp == self._stamp:
                return
            doc = json.loads(self.path.read_text())
            table = doc.get("concentrators", {}) if isinstance(doc, dict) else None
            if not isinstance(table, dict):
                raise ValueError("expected an object with a 'concentrators' object")
            revoked = frozenset(str(cid) for cid in table)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as exc:
            log.error(
                "%s is unreadable, the revocations read before stay in force: %s", self.path, exc
            )
            return
        self._revoked = revoked
        self._stamp = stamp
