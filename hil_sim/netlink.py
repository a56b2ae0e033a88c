"""The concentrator's data link as a TCP proxy on loopback, with the failures of a real one.

The uplink dials the proxy instead of the broker; the proxy forwards both ways and can
be switched between modes at run time:

    up         forwards everything
    drop       closes every connection and refuses new ones (the link went away)
    blackhole  keeps connections open but forwards nothing, either way (a half-open link:
               neither end notices until a keepalive or an ack is overdue)
    slow       forwards at ``slow_bytes_per_s`` in both directions (a weak GPRS cell)

``follow`` couples the mode to something else, e.g. ``SimModem.data_up``: while it
returns False the proxy drops. Faults are what a cellular link does; the proxy never
changes a byte it forwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Literal

log = logging.getLogger(__name__)

Mode = Literal["up", "drop", "blackhole", "slow"]
CHUNK = 4096
FOLLOW_EVERY_S = 0.05  # how often ``follow`` is consulted


class LinkProxy:
    def __init__(
        self,
        target_host: str,
        target_port: int,
        *,
        follow: Callable[[], bool] | None = None,
        slow_bytes_per_s: int = 2000,
    ) -> None:
        self.target = (target_host, target_port)
        self.follow = follow
        self.slow_bytes_per_s = slow_bytes_per_s
        self.mode: Mode = "up"
        self.port = 0
        self.connections = 0  # accepted since start
        self.cuts = 0  # connections closed by a drop
        self._server: asyncio.Server | None = None
        self._pipes: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._watch: asyncio.Task[None] | None = None
        self._flowing = asyncio.Event()
        self._flowing.set()

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        if self.follow is not None:
            self._watch = asyncio.create_task(self._follow(), name="link-follow")
        return self.port

    async def stop(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._close_all()
        for t in list(self._pipes):
            t.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    def set_mode(self, mode: Mode) -> None:
        if mode == self.mode:
            return
        log.info("link %s -> %s", self.mode, mode)
        self.mode = mode
        if mode == "blackhole":
            self._flowing.clear()
        else:
            self._flowing.set()
        if mode == "drop":
            self._close_all()

    def _close_all(self) -> None:
        for w in list(self._writers):
            self.cuts += 1
            w.close()
        self._writers.clear()

    async def _follow(self) -> None:
        assert self.follow is not None
        while True:
            up = self.follow()
            if not up:
                self.set_mode("drop")
            elif self.mode == "drop":
                self.set_mode("up")
            await asyncio.sleep(FOLLOW_EVERY_S)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.mode == "drop":
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()  # the broker itself is down: as the real network would, refuse
            return
        self.connections += 1
        self._writers.update((writer, up_writer))
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pipe(src, dst))
            self._pipes.add(task)
            task.add_done_callback(self._pipes.discard)

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    break
                await self._flowing.wait()  # in a blackhole nothing crosses: hold it
                if self.mode == "drop":
                    break
                if self.mode == "slow":
                    for i in range(0, len(data), 256):
                        dst.write(data[i : i + 256])
                        await asyncio.sleep(256 / self.slow_bytes_per_s)
                else:
                    dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._writers.discard(dst)
            with contextlib.suppress(Exception):
                dst.close()
