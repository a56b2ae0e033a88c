"""Which configured meters the concentrator may poll: those of the archive the receiver
downloaded, or all of them while it is commissioning (docs/analytics.md, "Meter ownership").

The receiver's meter archive is the authority on which meters sit behind which
concentrator; it sends each one its list as a signed ``archive`` command
(`contract.commands.check_archive`). The list and its version are kept in the store
(state ``archive:current``) and survive restarts. A configured meter outside it is not
polled, and an ``archive_refused`` event names it — unless commissioning mode is on
(``[concentrator] commissioning = true``, or ``concentrator commissioning on`` whose word,
kept in state ``archive:commissioning``, overrides the file until ``... config``). A
concentrator that has never received an archive polls every configured meter: there is
nothing to check them against yet (the receiver refuses foreign readings anyway,
`cloud_receiver.ingest.ownership`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from concentrator.config import Config
from concentrator.storage import StoreWriter

ARCHIVE_KEY = "archive:current"
COMMISSIONING_KEY = "archive:commissioning"

Word = Literal["on", "off", "config"]


@dataclass(frozen=True)
class ArchiveList:
    version: int
    meters: frozenset[str]
    command: str  # the signed command that brought it
    applied_at: float


class ArchiveGuard:
    def __init__(self, writer: StoreWriter) -> None:
        self.writer = writer
        self.archive: ArchiveList | None = None
        self.override: bool | None = None  # the control command's word, if any
        self.configured = False  # ``[concentrator] commissioning``

    @property
    def commissioning(self) -> bool:
        return self.configured if self.override is None else self.override

    async def load(self, config: Config) -> None:
        """Read the archive and the commissioning word from the store."""
        self.configured = config.concentrator.commissioning
        saved = await self.writer.read_state(ARCHIVE_KEY)
        if saved:
            doc = json.loads(saved)
            self.archive = ArchiveList(
                int(doc["version"]), frozenset(doc["meters"]), str(doc["command"]),
                float(doc["applied_at"]),
            )  # fmt: skip
        word = await self.writer.read_state(COMMISSIONING_KEY)
        self.override = None if word is None else word == "on"

    def allows(self, address: str) -> bool:
        return self.commissioning or self.archive is None or address in self.archive.meters

    def refused(self, config: Config) -> list[str]:
        """Configured meters outside the archive (not polled), sorted."""
        return sorted(m.address for m in config.meters if not self.allows(m.address))

    async def apply(
        self, version: int, meters: list[str], command: str, now: float, config: Config
    ) -> dict[str, Any]:
        """Keep a downloaded archive; ValueError when it is older than the one in force
        (two pushes crossing: the newer one stays)."""
        if self.archive is not None and version < self.archive.version:
            raise ValueError(
                f"archive version {version} is older than the one in force ({self.archive.version})"
            )
        doc = {"version": version, "meters": sorted(meters), "command": command, "applied_at": now}
        await self.writer.write_state(ARCHIVE_KEY, json.dumps(doc))
        self.archive = ArchiveList(version, frozenset(meters), command, now)
        configured = {m.address for m in config.meters}
        return {
            "version": version,
            "meters": len(meters),
            "not_configured": sorted(set(meters) - configured),  # owned, no bus to poll on
            "not_in_archive": sorted(configured - set(meters)),
        }

    async def set_word(self, word: Word) -> None:
        """``on``/``off`` override the config key; ``config`` returns to it."""
        if word == "config":
            await self.writer.delete_state(COMMISSIONING_KEY)
            self.override = None
        else:
            await self.writer.write_state(COMMISSIONING_KEY, word)
            self.override = word == "on"

    def status(self, config: Config) -> dict[str, Any]:
        a = self.archive
        return {
            "commissioning": self.commissioning,
            "commissioning_source": "config" if self.override is None else "command",
            "archive_version": None if a is None else a.version,
            "archive_meters": None if a is None else len(a.meters),
            "archive_applied_at": None if a is None else a.applied_at,
            "refused": self.refused(config),
        }
