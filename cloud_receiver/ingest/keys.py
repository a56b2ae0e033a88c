"""The payload keys the ingest opens batches with."""

from __future__ import annotations

import json
import threading
from pathlib import Path


class KeyRegistry:
    """Payload keys per concentrator and key id, from the provisioning ``keys.json``.

    The file is re-read when it changes, so a concentrator provisioned (or a key rotated)
    while the receiver runs is accepted without a restart.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime = -1.0
        self._keys: dict[str, dict[int, bytes]] = {}
        self._lock = threading.Lock()

    def lookup(self, concentrator_id: str, key_id: int) -> bytes | None:
        with self._lock:
            self._refresh()
            return self._keys.get(concentrator_id, {}).get(key_id)

    def _refresh(self) -> None:
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime == self._mtime:
            return
        doc = json.loads(self.path.read_text())
        self._keys = {
            cid: {int(kid): bytes.fromhex(hexkey) for kid, hexkey in keys.items()}
            for cid, keys in doc.items()
        }
        self._mtime = mtime
