"""Backups of the receiver's database, and restores checked against them.

A backup is one consistent snapshot of the live database: SQLite through its online
backup API (readers and the ingest go on meanwhile), PostgreSQL through ``pg_dump``
(custom format, found on PATH) run on a snapshot exported from a repeatable-read
transaction, in which the rows are counted and the audit chain verified too — so the
counts and the chain head recorded in the backup are exactly those of its payload.

File layout (mode 0600, never overwritten)::

    b"meterflow-backup 1\\n"
    4 bytes, big-endian: the manifest's length
    the manifest, JSON: backend, created_at, schema (PostgreSQL), revision (Alembic),
      tables {name: rows}, audit {intact, entries, head, problems},
      payload_sha256, payload_bytes
    the payload: the SQLite database file, or pg_dump's custom-format archive

`restore` writes only into an empty database (nothing stored can be lost), then
compares the restored rows per table and the restored audit chain with the manifest;
`verify` does the same in a scratch database (a temporary file; for PostgreSQL a
temporary database on the same server, or one given), which is dropped afterwards.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from sqlalchemy import Connection, create_engine, func, inspect, select, table, text
from sqlalchemy.pool import NullPool

from clitools.files import private_database, write_file
from cloud_receiver.errors import EXIT_INTEGRITY, ReceiverError
from cloud_receiver.storage import audit
from cloud_receiver.storage.schema import metadata

MAGIC = b"meterflow-backup 1\n"
FORMAT = 1
CHUNK = 1 << 20
TOOL_TIMEOUT_S = 3600.0


class BackupError(ReceiverError):
    """A backup cannot be made or read, or a target is not empty."""


class BackupMismatch(BackupError):
    """A restored database differs from its backup (rows or audit chain)."""

    exit_code = EXIT_INTEGRITY


@dataclass
class Manifest:
    backend: str  # "sqlite" or "postgresql"
    created_at: float
    schema: str | None
    revision: str | None
    tables: dict[str, int]
    audit: dict[str, Any]
    payload_sha256: str = ""
    payload_bytes: int = 0
    format: int = FORMAT

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


@dataclass
class Comparison:
    """A database compared with a backup's manifest: empty ``differences`` = the same."""

    tables: dict[str, int]
    audit: dict[str, Any]
    differences: list[str] = field(default_factory=list)

    @property
    def same(self) -> bool:
        return not self.differences


# ------------------------------------------------------------------ URLs and connections
def backend_name(url: str) -> str:
    if url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
        return "postgresql"
    return "sqlite"


def sqlite_path(url: str) -> Path:
    path = url.removeprefix("sqlite:///").removeprefix("sqlite://")
    if not path:
        raise BackupError(f"database URL {url!r}: expected sqlite:///PATH or postgresql://…")
    return Path(path)


def pg_conninfo(url: str, **override: str) -> str:
    """A libpq connection string for ``url`` (what pg_dump and psycopg take)."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict("postgresql://" + url.split("://", 1)[1])
    params.update(override)
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


@contextlib.contextmanager
def _connect(url: str, conninfo: str | None = None) -> Iterator[Connection]:
    """A plain SQLAlchemy connection (no migration, unlike `open_storage`)."""
    if backend_name(url) == "sqlite":
        engine = create_engine(f"sqlite:///{sqlite_path(url)}", poolclass=NullPool)
    else:
        import psycopg

        info = conninfo or pg_conninfo(url)
        engine = create_engine(
            "postgresql+psycopg://", poolclass=NullPool, creator=lambda: psycopg.connect(info)
        )
    try:
        with engine.connect() as conn:
            yield conn
    finally:
        engine.dispose()


def table_counts(conn: Connection) -> dict[str, int]:
    """Rows of each of the receiver's tables present (and Alembic's)."""
    present = set(inspect(conn).get_table_names())
    names = sorted((set(metadata.tables) | {"alembic_version"}) & present)
    return {
        name: int(conn.execute(select(func.count()).select_from(table(name))).scalar_one())
        for name in names
    }


def _revision(conn: Connection, counts: dict[str, int]) -> str | None:
    if not counts.get("alembic_version"):
        return None
    return str(conn.execute(text("SELECT version_num FROM alembic_version")).scalar())


def _chain(conn: Connection, counts: dict[str, int]) -> dict[str, Any]:
    if "audit_log" not in counts:
        return audit.ChainReport().as_dict()
    return audit.verify(conn).as_dict()


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BackupError(f"{name} is not on PATH: install the PostgreSQL client tools")
    return found


def _run(args: list[str], what: str) -> None:
    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BackupError(f"{what}: no result within {TOOL_TIMEOUT_S:.0f} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise BackupError(f"{what} failed: {last}")


def _private_file(path: Path) -> BinaryIO:
    """A new file, mode 0600 from the start."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


# ------------------------------------------------------------------ backup
def backup(url: str, out: Path) -> Manifest:
    """Write a backup of the database at ``url`` to ``out`` (which must not exist)."""
    if out.exists():
        raise BackupError(f"{out} exists already: a backup never overwrites a file")
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = out.with_name(f".{out.name}.{secrets.token_hex(4)}.payload")
    try:
        if backend_name(url) == "sqlite":
            manifest = _backup_sqlite(url, payload)
        else:
            manifest = _backup_postgres(url, payload)
        _write_container(out, manifest, payload)
    finally:
        payload.unlink(missing_ok=True)
    return manifest


def _backup_sqlite(url: str, payload: Path) -> Manifest:
    source = sqlite_path(url)
    if not source.is_file():
        raise BackupError(f"no database at {source}")
    _private_file(payload).close()
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(payload)
    try:
        src.backup(dst)  # one step: a consistent snapshot, writers wait only for its end
    except sqlite3.Error as exc:
        raise BackupError(f"{source}: {exc}") from exc
    finally:
        dst.close()
        src.close()
    with _connect(f"sqlite:///{payload}") as conn, conn.begin():
        counts = table_counts(conn)
        revision, chain = _revision(conn, counts), _chain(conn, counts)
    return Manifest("sqlite", time.time(), None, revision, counts, chain)


def _backup_postgres(url: str, payload: Path) -> Manifest:
    pg_dump = _tool("pg_dump")
    info = pg_conninfo(url)
    with _connect(url, info) as conn:
        conn.exec_driver_sql("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        try:
            snapshot = str(conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar())
            schema = str(conn.exec_driver_sql("SELECT current_schema()").scalar())
            counts = table_counts(conn)
            revision, chain = _revision(conn, counts), _chain(conn, counts)
            _private_file(payload).close()
            # pg_dump sees exactly this transaction's snapshot while it stays open.
            _run(
                [
                    pg_dump,
                    "--format=custom",
                    "--no-owner",
                    "--no-privileges",
                    f"--snapshot={snapshot}",
                    f"--schema={schema}",
                    f"--file={payload}",
                    f"--dbname={info}",
                ],
                "pg_dump",
            )
        finally:
            conn.exec_driver_sql("COMMIT")
    return Manifest("postgresql", time.time(), schema, revision, counts, chain)


def _write_container(out: Path, manifest: Manifest, payload: Path) -> None:
    digest = hashlib.sha256()
    with payload.open("rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    manifest.payload_sha256 = digest.hexdigest()
    manifest.payload_bytes = payload.stat().st_size
    head = json.dumps(asdict(manifest), sort_keys=True).encode()
    tmp = out.with_name(f".{out.name}.{secrets.token_hex(4)}.tmp")
    try:
        with _private_file(tmp) as dst, payload.open("rb") as src:
            dst.write(MAGIC + len(head).to_bytes(4, "big") + head)
            shutil.copyfileobj(src, dst, CHUNK)
            dst.flush()
            os.fsync(dst.fileno())
        os.link(tmp, out)  # fails if out appeared meanwhile: never overwrite
    except FileExistsError:
        raise BackupError(f"{out} exists already: a backup never overwrites a file") from None
    finally:
        tmp.unlink(missing_ok=True)


# ------------------------------------------------------------------ reading a backup
def read_manifest(path: Path) -> tuple[Manifest, int]:
    """The manifest and where the payload starts; `BackupError` for anything else."""
    try:
        with path.open("rb") as fh:
            magic = fh.read(len(MAGIC))
            if magic != MAGIC:
                raise BackupError(f"{path}: not a meterflow backup (no {MAGIC[:-1].decode()!r})")
            size = int.from_bytes(fh.read(4), "big")
            doc = json.loads(fh.read(size))
    except OSError as exc:
        raise BackupError(f"{path}: {exc.strerror or exc}") from exc
    except (ValueError, UnicodeDecodeError):
        raise BackupError(f"{path}: the manifest is damaged") from None
    try:
        manifest = Manifest(**doc)
    except TypeError:
        raise BackupError(f"{path}: the manifest is not one this release reads") from None
    if manifest.format != FORMAT:
        raise BackupError(f"{path}: backup format {manifest.format}, this release reads {FORMAT}")
    return manifest, len(MAGIC) + 4 + size


def _extract(path: Path, offset: int, manifest: Manifest, dest: Path) -> None:
    """The payload into ``dest`` (0600), checked against the manifest's SHA-256."""
    digest = hashlib.sha256()
    with path.open("rb") as src, _private_file(dest) as dst:
        src.seek(offset)
        for block in iter(lambda: src.read(CHUNK), b""):
            digest.update(block)
            dst.write(block)
    if digest.hexdigest() != manifest.payload_sha256:
        raise BackupError(f"{path}: the payload does not match its SHA-256 (damaged or truncated)")


def compare(manifest: Manifest, conn: Connection) -> Comparison:
    """The database of ``conn`` against what the backup recorded."""
    counts = table_counts(conn)
    chain = _chain(conn, counts)
    result = Comparison(counts, chain)
    for name in sorted(set(manifest.tables) | set(counts)):
        want, got = manifest.tables.get(name), counts.get(name)
        if want != got:
            result.differences.append(
                f"table {name}: {'missing' if got is None else f'{got} rows'}, the backup has"
                f" {'no such table' if want is None else f'{want} rows'}"
            )
    for key in ("entries", "head", "intact"):
        got, want = chain.get(key), manifest.audit.get(key)
        if got != want:
            result.differences.append(f"audit chain {key}: {got}, the backup recorded {want}")
    return result


# ------------------------------------------------------------------ restore
def restore(path: Path, url: str) -> tuple[Manifest, Comparison]:
    """Restore the backup at ``path`` into the empty database at ``url`` and compare
    it; `BackupMismatch` when it differs."""
    manifest, offset = read_manifest(path)
    backend = backend_name(url)
    if backend != manifest.backend:
        raise BackupError(f"{path} holds a {manifest.backend} backup; {url} is {backend}")
    with tempfile.TemporaryDirectory(prefix="mf-restore-") as scratch:
        payload = Path(scratch) / "payload"
        _extract(path, offset, manifest, payload)
        if backend == "sqlite":
            result = _restore_sqlite(manifest, payload, sqlite_path(url))
        else:
            result = _restore_postgres(manifest, payload, url, pg_conninfo(url))
    if not result.same:
        raise BackupMismatch(
            f"the restored database differs from {path}: " + "; ".join(result.differences)
        )
    return manifest, result


def _empty_or_missing(conn: Connection, where: str) -> None:
    ours = (set(metadata.tables) | {"alembic_version"}) & set(inspect(conn).get_table_names())
    if ours:
        raise BackupError(
            f"{where} is not empty (it has {', '.join(sorted(ours)[:5])}…): restore only into"
            " an empty database, so nothing stored is lost"
        )


def _restore_sqlite(manifest: Manifest, payload: Path, target: Path) -> Comparison:
    with _connect(f"sqlite:///{payload}") as conn, conn.begin():
        staged = compare(manifest, conn)
    if not staged.same:
        return staged  # the backup itself does not hold what it says: nothing written
    if target.exists():
        with _connect(f"sqlite:///{target}") as conn:
            _empty_or_missing(conn, str(target))
    target.parent.mkdir(parents=True, exist_ok=True)
    private_database(target)  # a restored database is as private as the one backed up
    src, dst = sqlite3.connect(payload), sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    with _connect(f"sqlite:///{target}") as conn, conn.begin():
        return compare(manifest, conn)


def _restore_postgres(manifest: Manifest, payload: Path, url: str, info: str) -> Comparison:
    pg_restore = _tool("pg_restore")
    schema = manifest.schema or "public"
    with _connect(url, info) as conn:
        current = conn.exec_driver_sql("SELECT current_schema()").scalar()
        path = str(conn.exec_driver_sql("SELECT current_setting('search_path')").scalar())
        if (current or schema) != schema or schema not in [p.strip(' "') for p in path.split(",")]:
            raise BackupError(
                f"the backup holds schema {schema}; the target's search path is {path}: restore"
                f" into a database whose search path is {schema}"
            )
        exists = conn.execute(
            text("SELECT 1 FROM pg_namespace WHERE nspname = :s"), {"s": schema}
        ).first()
        if exists is not None:
            _empty_or_missing(conn, f"schema {schema} of the target database")
        conn.rollback()
    args = [
        pg_restore,
        "--format=custom",
        "--no-owner",
        "--no-privileges",
        "--single-transaction",
        "--exit-on-error",
        f"--dbname={info}",
    ]
    if exists is not None:  # leave out creating (and commenting) the schema that is there
        listing = subprocess.run(
            [pg_restore, "--list", str(payload)], capture_output=True, text=True, check=False
        )
        if listing.returncode != 0:
            raise BackupError(f"pg_restore --list failed: {listing.stderr.strip()}")
        keep = [
            line
            for line in listing.stdout.splitlines()
            if not (" SCHEMA - " in line or " COMMENT - SCHEMA " in line)
        ]
        toc = payload.with_name("toc.list")
        write_file(toc, "\n".join(keep) + "\n")
        args.append(f"--use-list={toc}")
    _run([*args, str(payload)], "pg_restore")
    with _connect(url, info) as conn, conn.begin():
        return compare(manifest, conn)


# ------------------------------------------------------------------ verify
def verify(path: Path, scratch_url: str | None = None, like: str | None = None) -> Comparison:
    """Restore ``path`` into a scratch database and compare (`BackupMismatch` if it
    differs). SQLite: a temporary file. PostgreSQL: ``scratch_url`` (empty), else a
    temporary database created on the server of ``like`` (the backed-up URL) and
    dropped afterwards."""
    manifest, _ = read_manifest(path)
    if manifest.backend == "sqlite":
        with tempfile.TemporaryDirectory(prefix="mf-verify-") as scratch:
            return restore(path, f"sqlite:///{Path(scratch) / 'verify.db'}")[1]
    if scratch_url is not None:
        return restore(path, scratch_url)[1]
    if like is None:
        raise BackupError("verifying a PostgreSQL backup needs a scratch database (--verify-db)")
    with _temporary_database(like, manifest.schema) as url:
        return restore(path, url)[1]


@contextlib.contextmanager
def _temporary_database(like: str, schema: str | None) -> Iterator[str]:
    import psycopg

    name = f"mf_verify_{secrets.token_hex(6)}"
    admin = pg_conninfo(like)
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error as exc:
        raise BackupError(
            f"cannot create a scratch database to verify the backup ({str(exc).strip()}):"
            " give one with --verify-db, or skip with --no-verify"
        ) from None
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(admin)
        params["dbname"] = name
        params["options"] = f"-csearch_path={schema}" if schema else params.get("options")
        query = "&".join(
            f"{k}={_quote(str(v))}" for k, v in params.items() if v is not None and k != "dbname"
        )
        yield f"postgresql:///{name}" + (f"?{query}" if query else "")
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _quote(value: str) -> str:
    from urllib.parse import quote

    return quote(value, safe="/")
