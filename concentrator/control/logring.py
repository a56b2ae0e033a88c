"""The daemon's recent log lines, kept in memory for `concentrator logs`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque

LOG_RING_LINES = 2000  # recent log lines kept in memory for `concentrator logs`
FOLLOW_QUEUE = 1000  # log lines held for a slow `logs --follow` client before dropping


class _Follower:
    """One `logs --follow` client: log lines hop from any thread into its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[dict[str, object]] = asyncio.Queue(FOLLOW_QUEUE)
        self.dropped = 0

    def offer(self, line: dict[str, object]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self.loop.call_soon_threadsafe(self._put, line)

    def _put(self, line: dict[str, object]) -> None:
        try:
            self.queue.put_nowait(line)
        except asyncio.QueueFull:
            self.dropped += 1


class LogRing(logging.Handler):
    """The daemon's recent log lines in memory, for `concentrator logs` (with follow).

    Records arrive from every thread (the store writer, paho's network loop);
    ``logging`` calls ``emit`` under the handler's lock, which also guards the followers.
    """

    def __init__(self, capacity: int = LOG_RING_LINES) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._lines: deque[dict[str, object]] = deque(maxlen=capacity)
        self._followers: list[_Follower] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line: dict[str, object] = {
                "at": record.created,
                "level": record.levelname,
                "logger": record.name,
                "text": self.format(record),
            }
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)
        for follower in self._followers:
            follower.offer(line)

    def recent(self, n: int) -> list[dict[str, object]]:
        self.acquire()
        try:
            return list(self._lines)[-n:] if n > 0 else []
        finally:
            self.release()

    def follow(self, n: int) -> tuple[list[dict[str, object]], _Follower]:
        """The last ``n`` lines and a follower for every later one, with no gap between."""
        follower = _Follower(asyncio.get_running_loop())
        self.acquire()
        try:
            self._followers.append(follower)
            return (list(self._lines)[-n:] if n > 0 else []), follower
        finally:
            self.release()

    def unfollow(self, follower: _Follower) -> None:
        self.acquire()
        try:
            with contextlib.suppress(ValueError):
                self._followers.remove(follower)
        finally:
            self.release()
