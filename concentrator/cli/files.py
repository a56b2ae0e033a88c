"""The commands that read the site's files without a daemon or a bus: ``config check``,
``config keygen`` (the store's key) and ``stats`` (the store)."""

from __future__ import annotations

import json
import secrets
import sys
from pathlib import Path

import click

from clitools.files import PRIVATE, create_file, write_file
from clitools.options import config_option, json_option
from clitools.table import Column, print_table
from concentrator.cli.common import stdout_console
from concentrator.cli.exitcodes import Exit
from concentrator.config import ConfigError, load_config
from concentrator.config.model import STORE_KEY_BYTES


@click.group("config")
def config_group() -> None:
    """Check the concentrator's configuration file."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option()
def config_check(file: Path, as_json: bool) -> None:
    """Check FILE and list every problem in it as FILE:LINE: FIELD: message.

    Errors keep the daemon from starting (exit 7); warnings (a serial port that is not
    there yet) are listed too, and the file is still OK.
    """
    # The issues are this command's report, not an error for the edge to print.
    try:
        config = load_config(file)
    except ConfigError as exc:
        issues, ok = sorted([*exc.issues, *exc.warnings], key=lambda i: i.line or 0), False
    else:
        issues, ok = list(config.warnings), True
    if as_json:
        doc: dict[str, object] = {"ok": ok, "issues": [i.as_dict() for i in issues]}
        if not ok:  # an error under --json, by the one rule (`clitools.output`)
            doc |= {"error": f"{file}: invalid configuration", "exit_code": int(Exit.CONFIG)}
        click.echo(json.dumps(doc))
    else:
        # Plain echo, not rich: "[meter]" in a message is text, not console markup.
        for issue in issues:
            click.echo(str(issue), err=True)
        if ok:
            warned = f", {len(issues)} warning(s)" if issues else ""
            click.echo(
                f"{file}: OK ({len(config.buses)} buses, {len(config.meters)} meters, "
                f"{len(config.tasks)} tasks{warned})"
            )
    if not ok:
        sys.exit(Exit.CONFIG)


@config_group.command("keygen")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@json_option()
def config_keygen(file: Path, as_json: bool) -> None:
    """Write a new random key for the store to FILE (64 hex digits, mode 0600), for
    ``[storage] key_file``. An existing FILE is never overwritten: the store it
    encrypts would be lost with it."""
    if not create_file(file, PRIVATE):
        raise click.ClickException(f"{file} exists; a store key is never overwritten")
    write_file(file, secrets.token_hex(STORE_KEY_BYTES) + "\n", PRIVATE)
    if as_json:
        click.echo(json.dumps({"key_file": str(file), "bits": 8 * STORE_KEY_BYTES}))
        return
    click.echo(f"{file}: new {8 * STORE_KEY_BYTES}-bit store key, mode 0600")


@click.command()
@config_option("Concentrator configuration (TOML); its store is opened read-only.")
@click.option(
    "--days",
    type=click.IntRange(1, 62),
    default=1,
    show_default=True,
    help="How many days back (the current day included).",
)
@json_option()
def stats(config_path: Path, days: int, as_json: bool) -> None:
    """Read-success rate and collection completeness per day, bus and meter, and the
    backlog, from the store. Completeness: the interval slots the tasks expected so far
    and those held, live (polled) or recovered (backfilled from the meter's memory)."""
    from concentrator.control.metrics import collect_metrics

    # The store only: never the uplink's keys, which this user may not be allowed to read.
    cfg = load_config(config_path, keys=False)
    report = collect_metrics(cfg, days=days)
    if as_json:
        click.echo(json.dumps(report))
        return
    console = stdout_console()

    def pct(x: float | None) -> str:
        return "-" if x is None else f"{x * 100:.2f} %"

    rows = [
        (f"{label} {key}", row["read"], row["missing"], pct(row["rate"]),
         (c := row["completeness"])["expected"], c["live"], c["recovered"], pct(c["held_rate"]))
        for scope, label in (("days", "day"), ("buses", "bus"), ("meters", "meter"))
        for key, row in report[scope].items()
    ]  # fmt: skip
    columns = (Column("scope", "id"), Column("read", "number"), Column("missing", "number"),
               Column("rate", "number"), Column("expected", "number"), Column("live", "number"),
               Column("recovered", "number"), Column("complete", "number"))  # fmt: skip
    print_table(columns, rows, title=f"read success, {cfg.concentrator.id}")
    b = report["backlog"]
    console.print(
        f"backlog: {b['readings']} readings, {b['events']} events; "
        f"oldest undelivered slot {b['oldest_slot_iso'] or '-'}"
    )


@click.command()
@config_option("Concentrator configuration (TOML): the store and its key_file.")
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The backup file to write (never overwritten); encrypted when the store is.",
)
@json_option()
def backup(config_path: Path, out: Path, as_json: bool) -> None:
    """Copy the store to OUT while the daemon runs: one consistent snapshot (SQLite's
    online backup), checked before it is given its name."""
    from concentrator.storage.backup import backup_store

    cfg = load_config(config_path, keys=False)
    done = backup_store(cfg.storage, out)
    if as_json:
        click.echo(json.dumps({
            "backup": str(done.path), "encrypted": done.encrypted,
            "schema_version": done.schema_version, "readings": done.readings,
            "undelivered": done.undelivered, "events": done.events,
            "missing": done.missing, "bytes": done.size_bytes,
        }))  # fmt: skip
        return
    click.echo(
        f"{done.path}: {done.readings} readings ({done.undelivered} not yet delivered), "
        f"{done.events} events, {done.missing} missing records; schema {done.schema_version}, "
        f"{'encrypted' if done.encrypted else 'not encrypted'}, {done.size_bytes} bytes"
    )
