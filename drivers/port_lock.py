"""Who holds a serial port: the process behind an advisory lock, for a clear refusal.

Our transports open a UART with an exclusive advisory lock (``flock``, what pyserial's
``exclusive=True`` takes), so that two programs never talk on one half-duplex line at
once: the second request garbles both answers. When the lock is taken, the one who
holds it is named from Linux's ``/proc/locks`` (``ID: FLOCK ADVISORY WRITE PID
MAJ:MIN:INODE START END``, device numbers in hex, proc(5)) and ``/proc/PID/cmdline``,
so that the refusal says "held by pid 812 (concentrator run --config …)" rather than
"Resource temporarily unavailable". Elsewhere, or when the holder cannot be read (it
exited meanwhile, another PID namespace), there is no name and the refusal says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")


@dataclass(frozen=True)
class Holder:
    """A process holding a lock: its pid and its command line (empty when unreadable)."""

    pid: int
    argv: tuple[str, ...]

    def describe(self) -> str:
        command = " ".join(self.argv) if self.argv else "command line unknown"
        if len(command) > 120:
            command = command[:117] + "..."
        return f"pid {self.pid} ({command})"


def lock_holder(path: str | os.PathLike[str], *, proc: Path = PROC) -> Holder | None:
    """The process holding a ``flock`` on the file ``path`` (a device node), or None."""
    try:
        st = os.stat(path)
        locks = (proc / "locks").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    want = (os.major(st.st_dev), os.minor(st.st_dev), st.st_ino)
    for line in locks.splitlines():
        fields = line.split()
        if len(fields) < 6 or fields[1] == "->":  # "->": a waiter, not the holder
            continue
        try:
            pid = int(fields[4])
            major, minor, inode = fields[5].split(":")
            key = (int(major, 16), int(minor, 16), int(inode))
        except ValueError:
            continue
        if key == want:
            return Holder(pid, _argv(proc, pid))
    return None


def _argv(proc: Path, pid: int) -> tuple[str, ...]:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        return ()
    return tuple(part.decode(errors="replace") for part in raw.split(b"\0") if part)
