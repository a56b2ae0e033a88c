"""The simulated end of a serial line: a raw pseudo-terminal pair whose slave side the
concentrator opens like a UART, published under a stable symlink path.

Shared by the meter bus, the carrier module and the modem simulators, so that all three
set up and tear down their line the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tty
from collections.abc import Callable
from pathlib import Path


def open_pty(link: Path | None, on_readable: Callable[[], None]) -> tuple[int, int, str]:
    """Open a raw PTY, point ``link`` at its slave, and call ``on_readable`` whenever the
    master has bytes. Returns (master fd, slave fd, slave name). The slave stays open
    here too, so the line does not hang up between two clients."""
    master, slave = os.openpty()
    tty.setraw(master)
    tty.setraw(slave)
    os.set_blocking(master, False)
    name = os.ttyname(slave)
    if link is not None:
        tmp = link.with_name(link.name + ".tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        tmp.symlink_to(name)
        tmp.replace(link)  # atomic: a reader never sees a missing link
    asyncio.get_running_loop().add_reader(master, on_readable)
    return master, slave, name


def close_pty(master: int, slave: int, link: Path | None) -> None:
    """Undo `open_pty` (a closed fd, -1, is skipped): the reader, both fds, the link."""
    if master >= 0:
        asyncio.get_running_loop().remove_reader(master)
        os.close(master)
        os.close(slave)
    if link is not None and link.is_symlink():
        with contextlib.suppress(FileNotFoundError):
            link.unlink()
