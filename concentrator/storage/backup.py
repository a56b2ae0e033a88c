"""A live backup of the concentrator's store: one consistent copy while the daemon polls.

SQLite's online backup API copies the database page by page from a read transaction of
its own, so the copy is the store as it was at one commit, whatever the daemon writes
meanwhile (WAL mode lets the daemon go on writing while the copy is read). An encrypted
store is copied into a database keyed with the same key, page for page: the backup is as
unreadable without the key as the store. The copy is written beside its final name,
checked (``quick_check``, the schema version, the row counts), fsynced, and only then
linked to that name, which never replaces an existing file: a backup never overwrites.
Every table is copied, the sealed bytes of batches in flight too (schema 4): a store
restored from the backup resends those batches as the same bytes under the same ``seq``.
The copy's batch counter is raised by `wire.RESTORE_SEQ_MARGIN`: the store it was taken
from goes on numbering batches after the backup, and a restored store that numbered
from where the copy stood would reuse those ``seq``s, the AES-GCM nonce, under the same
key (and the receiver, which dedupes on them, would ack its new readings as duplicates
of batches it holds).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from clitools.files import private_database
from concentrator.config.model import StorageSection
from concentrator.storage.engine import connect, errors, fsync_path, is_plaintext
from concentrator.storage.errors import StoreError, StoreKeyError
from concentrator.storage.readings import BATCH_COUNTER
from concentrator.storage.store import store_key
from contract import wire

if TYPE_CHECKING:
    import sqlite3  # the annotations' type; the driver is `engine`'s to load

# Pages copied per step: small steps let the daemon's writer in between them (SQLite
# restarts a step's copy only if the source changed through another connection).
PAGES_PER_STEP = 256


@dataclass(frozen=True)
class StoreBackup:
    """What a backup holds, as checked in the copy itself."""

    path: Path
    encrypted: bool
    schema_version: int
    readings: int
    undelivered: int
    events: int
    missing: int
    size_bytes: int


def _counts(conn: sqlite3.Connection) -> tuple[int, int, int, int, int]:
    one = conn.execute
    return (
        int(one("PRAGMA user_version").fetchone()[0]),
        int(one("SELECT count(*) FROM readings").fetchone()[0]),
        int(one("SELECT count(*) FROM readings WHERE delivered = 0").fetchone()[0]),
        int(one("SELECT count(*) FROM events").fetchone()[0]),
        int(one("SELECT count(*) FROM missing").fetchone()[0]),
    )


def backup_store(section: StorageSection, out: Path) -> StoreBackup:
    """Copy the store ``section`` names to ``out`` (which must not exist), live."""
    key = store_key(section)
    src_path, out = Path(section.path), Path(out)
    if not src_path.is_file():
        raise StoreError(f"{src_path}: the store does not exist: nothing to back up")
    if key is not None and is_plaintext(src_path):
        raise StoreError(
            f"{src_path}: the store is not encrypted yet though [storage] key_file is set:"
            " start `concentrator run` once to encrypt it, then back it up"
        )
    if out.exists() or out.is_symlink():
        raise StoreError(f"{out} exists already: a backup never overwrites")
    if not out.parent.is_dir():
        raise StoreError(f"{out.parent}: no such folder for the backup")
    part = out.with_name(f".{out.name}.part")
    with contextlib.suppress(FileNotFoundError):
        part.unlink()  # what an interrupted backup left: never a backup
    try:
        source = connect(
            f"{src_path.absolute().as_uri()}?mode=ro", key, uri=True, timeout=30.0,
            isolation_level=None,
        )  # fmt: skip
    except errors() as exc:
        raise StoreError(f"{src_path}: cannot open the store: {exc}") from exc
    try:
        private_database(part)
        target = connect(part, key, isolation_level=None)
        try:
            source.backup(target, pages=PAGES_PER_STEP)
            target.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?)"
                " ON CONFLICT (name) DO UPDATE SET value = value + excluded.value",
                (BATCH_COUNTER, wire.RESTORE_SEQ_MARGIN),
            )
            check = target.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise StoreError(f"{out}: the copy does not check out: {check}")
            version, readings, undelivered, events, missing = _counts(target)
        finally:
            target.close()
    except errors() as exc:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        if "not a database" in str(exc):
            raise StoreKeyError(f"{src_path}: the key does not open this store: {exc}") from exc
        raise StoreError(f"{src_path}: backup failed: {exc}") from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise
    finally:
        source.close()
    fsync_path(part)
    try:
        os.link(part, out)  # fails, never replaces, if ``out`` appeared meanwhile
    except FileExistsError as exc:
        raise StoreError(f"{out} exists already: a backup never overwrites") from exc
    finally:
        part.unlink()
    fsync_path(out.parent)
    return StoreBackup(
        path=out,
        encrypted=key is not None,
        schema_version=version,
        readings=readings,
        undelivered=undelivered,
        events=events,
        missing=missing,
        size_bytes=out.stat().st_size,
    )
