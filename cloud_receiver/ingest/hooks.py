"""How the applications plug into the ingest, without the ingest knowing them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from contract.records import Event, Reading


class Reactions(Protocol):
    """What the applications do with the traffic. Each method may raise: the ingest
    logs it and goes on (a batch is never refused for what it means)."""

    def stored(
        self, concentrator: str, readings: Sequence[Reading], events: Sequence[Event], now: float
    ) -> None:
        """A batch was newly stored (not a duplicate)."""

    def software(
        self, concentrator: str, software: str | None, wire_version: int, now: float
    ) -> None:
        """The release and wire format a concentrator runs, when it changes."""

    def chunk(self, concentrator: str, version: str, index: int) -> bytes | None:
        """Chunk ``index`` of release ``version`` for ``concentrator``; None: refused."""

    def tick(self, now: float, send_command: Callable[[str, bytes], None]) -> None:
        """Periodic work (every ``COMMAND_POLL_S``): send due commands to their
        concentrators with ``send_command(concentrator, signed bytes)``."""
