"""Files our tools create, with an explicit mode whatever the umask (issue 19, item 5).

A process started under ``umask 000`` (a shell, a container, a test runner) would
otherwise leave databases, stores, configs and keys world-readable: a stolen disk or
another local account then reads every household's load curve. Every file the three
command lines write goes through here, so the rule lives in one place:

- ``PRIVATE`` (0600): databases, stores, keys, configs naming keys, data exports;
- ``GROUP_READ`` (0640): files a service group must read (the broker's config and
  ACL, the daemon's status file, release packages).

The file is created with the mode (``O_CREAT``/``O_EXCL``) and then ``fchmod``-ed to
it, because ``open``'s mode is narrowed by the umask but never widened: 0640 under
``umask 077`` would otherwise become 0600. It never exists, even for a moment, with
a wider mode than the one asked for.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import TextIO

PRIVATE = 0o600
GROUP_READ = 0o640
PUBLIC = 0o644  # certificates: public by design, still an explicit mode


def write_file(path: Path, data: bytes | str, mode: int = PRIVATE, *, sync: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (a temporary file renamed over it) with
    exactly ``mode``. A reader sees the old content or the new, never half of it."""
    path = Path(path)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode & 0o600)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            if sync:
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def create_file(path: Path, mode: int = PRIVATE) -> bool:
    """Create ``path`` empty with exactly ``mode`` if it does not exist; return whether
    it was created. For files a library fills (SQLite opens what is there, and gives
    its ``-wal``/``-shm`` files the database file's mode)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode & 0o600)
    except FileExistsError:
        return False
    try:
        os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return True


def restrict(path: Path, mode: int = PRIVATE) -> None:
    """Take away any permission beyond ``mode`` from an existing file (one a previous
    release created under a loose umask); a missing file, or one we do not own, is
    left alone."""
    with contextlib.suppress(FileNotFoundError, PermissionError):
        current = os.stat(path).st_mode & 0o777
        if current & ~mode:
            os.chmod(path, current & mode)


def private_database(path: Path) -> None:
    """Before SQLite opens ``path``: create it 0600, and narrow a loose existing file
    and its ``-wal``/``-shm`` (the journal files take the database's mode only when
    SQLite creates them)."""
    path = Path(path)
    if not create_file(path, PRIVATE):
        for suffix in ("", "-wal", "-shm"):
            restrict(Path(f"{path}{suffix}"), PRIVATE)


def open_text(path: Path, mode: int = PRIVATE, *, append: bool = False) -> TextIO:
    """Open ``path`` for writing text (created, then truncated or, with ``append``,
    appended to) with exactly ``mode``: for files written as a stream (CSV exports,
    ground-truth logs)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | (os.O_APPEND if append else os.O_TRUNC)
    fd = os.open(path, flags, mode & 0o600)
    try:
        os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "w", encoding="utf-8", newline="")


def private_dir(path: Path, mode: int = 0o700) -> Path:
    """Create the directory ``path`` (and its parents) with exactly ``mode``: a
    directory of keys others may write into is as open as its files. An existing one
    keeps the mode its administrator gave it (a broker's group may need to enter it)."""
    path = Path(path)
    if not path.is_dir():
        path.mkdir(parents=True, exist_ok=True)
        os.chmod(path, mode)
    return path
