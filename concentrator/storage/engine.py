"""The SQLite the store runs on: the standard library's for a plaintext store,
SQLCipher's for an encrypted one (issue 19, item 5), and the one in-place migration
from the first to the second.

SQLCipher 4 comes from the ``sqlcipher3`` wheel (``sqlcipher3.dbapi2``: the standard
library's DB-API over SQLCipher, with its own OpenSSL). It is imported only when a store
has a key: it costs the process about 10 MB of RSS (bench/daemon.py), which a
concentrator without ``key_file`` does not pay. Its connections behave like the
standard module's but raise its own exception classes, so the store catches
``errors()`` — the ``Error`` classes of every driver loaded — never ``sqlite3.Error``
alone. (For the type checker its connections *are* ``sqlite3`` ones: the wheel ships
no type information.)

The key is SQLCipher's raw key form, ``x'<64 hex digits>'``: 32 random bytes used as
the AES-256 key as they are, so no PBKDF2 runs on every open (SQLCipher's "Raw Key
Data", https://www.zetetic.net/sqlcipher/sqlcipher-api/#key).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, cast

from clitools.files import create_file

if TYPE_CHECKING:
    import sqlite3

__all__ = ["CACHE_KIB", "connect", "database_errors", "encrypt_in_place", "errors", "is_plaintext"]

_SQLCIPHER = "sqlcipher3.dbapi2"
# The standard library's driver, imported by a plaintext store only: an encrypted one
# does not pay its libsqlite3 (about 0.9 MB of RSS) beside SQLCipher's.
_SQLITE = "sqlite3"
# The store's page cache, per connection. The daemon's own working set is small (the
# newest leaf and index pages it inserts into, the slot it checks); the quick_check at
# open reads every page and would otherwise fill SQLite's default 2 MiB for nothing.
# 512 KiB keeps the daemon's peak RSS 1.2 MB lower; group commits of 1,000 readings
# (bench/daemon.py's store figures) were as fast as with 2 MiB within the machine's
# noise, alternating the two (issue 22).
CACHE_KIB = 512


def _sqlcipher() -> ModuleType:
    return importlib.import_module(_SQLCIPHER)


def _loaded() -> list[Any]:
    """The drivers imported so far: an error can only come from one of them."""
    return [m for m in (sys.modules.get(_SQLITE), sys.modules.get(_SQLCIPHER)) if m is not None]


def errors() -> tuple[type[sqlite3.Error], ...]:
    """``sqlite3.Error`` of every SQLite driver loaded: ``except errors() as exc``."""
    return tuple(cast("type[sqlite3.Error]", m.Error) for m in _loaded())


def database_errors() -> tuple[type[sqlite3.DatabaseError], ...]:
    return tuple(cast("type[sqlite3.DatabaseError]", m.DatabaseError) for m in _loaded())


def _raw_key(key: bytes) -> str:
    return f"x'{key.hex()}'"


def connect(path: Path | str, key: bytes | None, **kwargs: Any) -> sqlite3.Connection:
    """A connection to ``path``: plain SQLite without a key; SQLCipher, keyed before
    its first read and with its own stderr logging off (a wrong key is ours to
    report), with one."""
    if key is None:
        sqlite = importlib.import_module(_SQLITE)
        return cast("sqlite3.Connection", sqlite.connect(str(path), **kwargs))
    conn = cast("sqlite3.Connection", _sqlcipher().connect(str(path), **kwargs))
    try:
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(f'PRAGMA key = "{_raw_key(key)}"')
    except BaseException:
        conn.close()
        raise
    return conn


SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of a plaintext database file


def is_plaintext(path: Path) -> bool:
    """Whether ``path`` is a plain (unencrypted) SQLite database with content."""
    try:
        with path.open("rb") as fh:
            return fh.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except FileNotFoundError:
        return False


def fsync_path(path: Path) -> None:
    """fsync a file or a folder (a rename is durable once its folder is) by its path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encrypt_in_place(path: Path, key: bytes, *, busy_timeout_s: float) -> None:
    """Turn the plaintext store at ``path`` into an encrypted one, losing nothing.

    Every committed row (the WAL's too: it is checkpointed first) is copied by
    ``sqlcipher_export`` into ``.<name>.encrypting`` beside it, which is fsynced and
    renamed over the store. A kill at any point leaves the plaintext store or the
    encrypted one, never a mix: the plaintext -wal is emptied and removed before the
    rename, so it can never be replayed into the encrypted file.
    """
    tmp = path.with_name(f".{path.name}.encrypting")
    for suffix in ("", "-wal", "-shm", "-journal"):  # an attempt a kill cut short
        Path(f"{tmp}{suffix}").unlink(missing_ok=True)
    create_file(tmp)
    # SQLCipher's build even for the plaintext side: only it can ATTACH with a KEY.
    conn = cast(
        "sqlite3.Connection",
        _sqlcipher().connect(str(path), timeout=busy_timeout_s, isolation_level=None),
    )
    try:
        conn.execute("PRAGMA cipher_log_level = NONE")
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise OSError(f"{path}: another process holds the store open; not encrypted")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        vacuum = int(conn.execute("PRAGMA auto_vacuum").fetchone()[0])
        conn.execute("ATTACH DATABASE ? AS enc KEY ?", (str(tmp), _raw_key(key)))
        try:
            # Set before the first table exists, like Store does on a fresh file.
            conn.execute(f"PRAGMA enc.auto_vacuum = {vacuum}")
            conn.execute("SELECT sqlcipher_export('enc')")
            conn.execute(f"PRAGMA enc.user_version = {version}")  # not exported
        finally:
            conn.execute("DETACH DATABASE enc")
        conn.execute("PRAGMA journal_mode = DELETE")  # removes the plaintext -wal
    except BaseException:
        conn.close()
        tmp.unlink(missing_ok=True)
        raise
    conn.close()
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)
