"""``backup`` and ``restore``: the receiver's database to a file and back, verified.

``backup`` needs an administrator's session (it copies every customer's data) and
verifies by default: the file is restored into a scratch database and its rows and
audit chain compared with what was backed up. ``restore`` writes only into an empty
database, so it needs no session there (there is nobody to ask yet, and nothing to
lose); it is recorded in the restored audit log as ``system:restore``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from clitools.options import db_option, json_option
from cloud_receiver.access.policy import Action
from cloud_receiver.cli.auth import acting, session_option

if TYPE_CHECKING:
    from cloud_receiver.storage.backup import Comparison, Manifest


def _summary(manifest: Manifest) -> str:
    head = manifest.audit.get("head") or {}
    chain = "intact" if manifest.audit.get("intact") else "BROKEN"
    return (
        f"{len(manifest.tables)} tables, {manifest.rows} rows; audit chain {chain},"
        f" {manifest.audit.get('entries')} entries, head entry {head.get('seq')}"
        f" sha256 {head.get('hash')}"
    )


def _doc(manifest: Manifest, comparison: Comparison | None) -> dict[str, object]:
    from dataclasses import asdict

    return {
        "manifest": asdict(manifest),
        "verified": None if comparison is None else comparison.same,
        "differences": [] if comparison is None else comparison.differences,
    }


@click.command()
@db_option(help="The database to back up: sqlite:///PATH or postgresql://….")
@click.option(
    "--out",
    "out_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="Backup file to write (mode 0600; an existing file is never overwritten).",
)
@click.option(
    "--verify/--no-verify",
    default=True,
    show_default=True,
    help="Restore the backup into a scratch database and compare rows and audit chain.",
)
@click.option(
    "--verify-db",
    default=None,
    help="PostgreSQL: an empty database to verify in (default: a temporary one on the"
    " same server, created and dropped).",
)
@session_option()
@json_option()
def backup(
    db_url: str,
    out_path: Path,
    verify: bool,
    verify_db: str | None,
    session_file: Path | None,
    as_json: bool,
) -> None:
    """Back the receiver's database up to a file: SQLite's online backup API, or
    pg_dump's custom format on one snapshot; then verify it."""
    from cloud_receiver.storage import backup as bk

    with acting(db_url, session_file, Action.BACKUP) as a:
        a.record("backup", str(Action.BACKUP), "database", detail={"out": str(out_path)})
    manifest = bk.backup(db_url, out_path)
    comparison = bk.verify(out_path, verify_db, like=db_url) if verify else None
    if as_json:
        click.echo(json.dumps(_doc(manifest, comparison)))
        return
    click.echo(f"{out_path}: {manifest.backend} backup, {_summary(manifest)}")
    if comparison is not None:
        click.echo(
            f"verified: restored into a scratch database, {manifest.rows} rows and the"
            " audit chain match"
        )
    if not manifest.audit.get("intact"):
        click.echo(
            "warning: the audit chain of the backed-up database does not verify"
            " (`cloud-receiver audit verify` names the entries)",
            err=True,
        )


@click.command()
@db_option(help="An empty database to restore into: sqlite:///PATH or postgresql://….")
@click.option(
    "--from",
    "from_path",
    required=True,
    type=click.Path(path_type=Path, dir_okay=False),
    help="The backup file.",
)
@json_option()
def restore(db_url: str, from_path: Path, as_json: bool) -> None:
    """Restore a backup into an empty database, then compare rows and audit chain with
    the backup (exit 8 when they differ)."""
    from cloud_receiver.access import audit
    from cloud_receiver.access.policy import Principal
    from cloud_receiver.access.sessions import origin
    from cloud_receiver.cli.common import opened
    from cloud_receiver.storage import backup as bk

    manifest, comparison = bk.restore(from_path, db_url)
    with (
        opened(db_url, create=True) as storage,
        storage.transaction() as tx,
    ):  # migrates an older backup
        audit.record(
            tx,
            Principal.system("restore", origin()),
            kind="restore",
            action="restore",
            target="database",
            at=time.time(),
            detail={
                "from": str(from_path),
                "created_at": manifest.created_at,
                "rows": manifest.rows,
            },
        )
    if as_json:
        click.echo(json.dumps(_doc(manifest, comparison)))
        return
    click.echo(f"restored {from_path}: {_summary(manifest)}; verified")


COMMANDS = [backup, restore]
