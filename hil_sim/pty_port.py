"""The simulated end of a serial line: a raw pseudo-terminal pair whose slave side the
concentrator opens like a UART, published under a stable symlink path.

Shared by the meter bus, the carrier module and the modem simulators, so that all three
set up and tear down their line, read it and write it the same way.

Ownership. A link is one simulator's while it runs: it holds an advisory lock on
``LINK.lock`` (the kernel drops it when the process ends, kill -9 included), so a second
simulator asked for the same link refuses, naming the first, instead of taking the link
over; and a simulator removes on exit only a link that still points at its own PTY.

Writing. A PTY delivers bytes at once, so the simulators re-create a line's pace
themselves: a frame is released when its last byte would have arrived over the wire
(``wire_time``: bits per character / baud per byte, nothing at baud 0), either that
long after the sender starts (``write_after``) or at a moment computed from the
request (``write_at``). The write itself never blocks the event loop: when the PTY's
buffer is full because the client is not reading, the rest is dropped with a warning,
as a real line loses what nobody listens to.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import time
import tty
from collections.abc import Callable
from pathlib import Path

from drivers.port_lock import lock_holder
from hil_sim.errors import LinkInUse, SimUnavailable

READ_CHUNK = 4096


def wire_time(n_bytes: int, baud: int, bits_per_char: int) -> float:
    """Seconds ``n_bytes`` characters take on a line at ``baud`` (0: no wire time)."""
    return n_bytes * bits_per_char / baud if baud > 0 else 0.0


class PtyPort:
    """One simulator's PTY: ``open`` it, ``read`` what the client sent, ``write`` back.

    ``log`` and ``what`` name the simulator in the warning about lost bytes
    (``PTY buffer full, N <what> bytes lost``).
    """

    def __init__(self, link: Path | None, *, log: logging.Logger, what: str) -> None:
        self.link = link
        self.name = ""  # the slave's device name, once open
        self._log = log
        self._what = what
        self._master = -1
        self._slave = -1
        self._lock_fd = -1  # the link's lock, held while we serve it
        self._lock_path: Path | None = None

    def open(self, on_readable: Callable[[], None]) -> str:
        """Open a raw PTY, point the link at its slave, and call ``on_readable`` whenever
        the master has bytes. Returns the slave's name. The slave stays open here too, so
        the line does not hang up between two clients.

        A link another simulator serves is refused (`LinkInUse`), never taken over:
        the link is ours while we hold the advisory lock on ``LINK.lock``, which the
        kernel releases when the process ends, however it ends."""
        link = self.link
        if link is not None:
            self._claim(link)
        try:
            master, slave = os.openpty()
        except OSError as exc:
            self._release()
            raise SimUnavailable(f"cannot create a pseudo-terminal: {exc}") from exc
        tty.setraw(master)
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.name = os.ttyname(slave)
        if link is not None:
            tmp = link.with_name(link.name + ".tmp")
            try:
                with contextlib.suppress(FileNotFoundError):
                    tmp.unlink()
                tmp.symlink_to(self.name)
                tmp.replace(link)  # atomic: a reader never sees a missing link
            except OSError as exc:
                os.close(master)
                os.close(slave)
                self._release()
                raise SimUnavailable(f"cannot create the link {link}: {exc}") from exc
        asyncio.get_running_loop().add_reader(master, on_readable)
        self._master, self._slave = master, slave
        return self.name

    def _claim(self, link: Path) -> None:
        """Take the link's lock, or say who serves it; refuse to replace what is not a
        link (a real device, a file someone put there)."""
        if link.exists() and not link.is_symlink():
            raise SimUnavailable(
                f"{link} exists and is not a simulator's link (a device or a file): "
                "refusing to replace it; choose another --link"
            )
        lock_path = link.with_name(link.name + ".lock")
        while True:
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            except OSError as exc:
                raise SimUnavailable(f"cannot create the lock {lock_path}: {exc}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                holder = lock_holder(lock_path)
                who = holder.describe() if holder is not None else "another simulator"
                raise LinkInUse(
                    f"{link} is live: served by {who}; stop that simulator first, "
                    "or choose another --link"
                ) from None
            # The last owner may have removed the file between our open and our lock:
            # then the lock is on a name nobody sees any more; take the new file.
            try:
                same = os.stat(lock_path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd, self._lock_path = fd, lock_path

    def _release(self) -> None:
        if self._lock_fd >= 0:
            assert self._lock_path is not None
            with contextlib.suppress(FileNotFoundError):
                self._lock_path.unlink()  # still locked by us: nobody else has this name
            os.close(self._lock_fd)
            self._lock_fd, self._lock_path = -1, None

    def close(self) -> None:
        """Undo ``open`` (harmless when not open): the reader, both fds, the link (only
        while it still points at our PTY: never a link another simulator made)."""
        if self._master >= 0:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            os.close(self._slave)
            link = self.link
            if link is not None:
                with contextlib.suppress(OSError):
                    if os.readlink(link) == self.name:
                        link.unlink()
        self._release()
        self._master = self._slave = -1

    def read(self) -> bytes:
        """What the client wrote since the last call; empty when nothing is there or no
        client has the port open (EIO)."""
        try:
            return os.read(self._master, READ_CHUNK)
        except OSError:  # BlockingIOError included
            return b""

    def write(self, data: bytes) -> None:
        """Put ``data`` on the line now, without blocking; dropped while not open."""
        if self._master < 0:
            return
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                # PTY buffer full: the client is not reading; drop like a real line.
                self._log.warning("PTY buffer full, %d %s bytes lost", len(view), self._what)
                return
            except OSError:
                return  # the line is gone: nobody can receive the rest
            view = view[n:]

    async def write_after(self, delay: float, data: bytes) -> None:
        """Write ``data`` once ``delay`` seconds (its wire time) have passed."""
        if delay > 0:
            await asyncio.sleep(delay)
        self.write(data)

    async def write_at(self, when: float, data: bytes) -> None:
        """Write ``data`` at ``time.monotonic()`` ``when`` (at once if that has passed)."""
        await self.write_after(when - time.monotonic(), data)
