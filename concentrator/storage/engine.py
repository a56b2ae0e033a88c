"""The SQLite build the store runs on: SQLCipher's, so the store can be encrypted at
rest (issue 19, item 5), and the one in-place migration of a plaintext store.

``sqlite3`` here is ``sqlcipher3.dbapi2``, SQLCipher 4 behind the standard library's
DB-API: the same SQLite, the same API, its own exception classes — which is why every
module of the store imports ``sqlite3`` from here and never the standard library's.
Without a key it reads and writes plain SQLite files, byte for byte. (For the type
checker it *is* the standard module: sqlcipher3 ships no type information.)

The key is SQLCipher's raw key form, ``x'<64 hex digits>'``: 32 random bytes used as
the AES-256 key as they are, so no PBKDF2 runs on every open (SQLCipher's "Raw Key
Data", https://www.zetetic.net/sqlcipher/sqlcipher-api/#key).
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from clitools.files import create_file

if TYPE_CHECKING:
    import sqlite3
else:
    from sqlcipher3 import dbapi2 as sqlite3

__all__ = ["apply_key", "encrypt_in_place", "is_plaintext", "raw_key", "sqlite3"]

SQLITE_HEADER = b"SQLite format 3\x00"  # the first 16 bytes of a plaintext database file


def raw_key(key: bytes) -> str:
    return f"x'{key.hex()}'"


def apply_key(conn: sqlite3.Connection, key: bytes | None) -> None:
    """Quiet SQLCipher's own stderr logging (a wrong key is our error to report), and
    key the connection before its first read."""
    conn.execute("PRAGMA cipher_log_level = NONE")
    if key is not None:
        conn.execute(f'PRAGMA key = "{raw_key(key)}"')


def is_plaintext(path: Path) -> bool:
    """Whether ``path`` is a plain (unencrypted) SQLite database with content."""
    try:
        with path.open("rb") as fh:
            return fh.read(len(SQLITE_HEADER)) == SQLITE_HEADER
    except FileNotFoundError:
        return False


def _fsync(path: Path) -> None:
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
    conn = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None)
    try:
        apply_key(conn, None)
        busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        if busy:
            raise sqlite3.OperationalError("another process holds the store open")
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        vacuum = int(conn.execute("PRAGMA auto_vacuum").fetchone()[0])
        conn.execute("ATTACH DATABASE ? AS enc KEY ?", (str(tmp), raw_key(key)))
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
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)
