"""``settings``: the access settings (lifetimes, the approval threshold, alerts and the
lockout), shown to any operator and changed, audited, by an administrator."""

from __future__ import annotations

import time
from pathlib import Path

import click

from clitools.options import db_option, json_option
from clitools.output import result
from cloud_receiver.access.policy import Action, Resource
from cloud_receiver.cli.auth import acting, session_option


@click.group()
def settings() -> None:
    """Access settings: lifetimes, the approval threshold, alerts and the lockout."""


@settings.command("show")
@db_option()
@session_option()
@json_option()
def settings_show(db_url: str, session_file: Path | None, as_json: bool) -> None:
    """The settings in force and what each means."""
    import json

    from cloud_receiver.access import settings as conf
    from cloud_receiver.cli.common import emit

    with acting(db_url, session_file) as a, a.storage.transaction() as tx:
        rows = conf.describe(conf.load(tx))
    if as_json:
        click.echo(json.dumps({name: value for name, value, _ in rows}))
    else:
        emit(("setting", "value", "meaning"), [list(r) for r in rows], "access settings", False)


@settings.command("set")
@click.argument("name")
@click.argument("value")
@db_option()
@session_option()
@json_option()
def settings_set(
    name: str, value: str, db_url: str, session_file: Path | None, as_json: bool
) -> None:
    """Change a setting (administrators); `settings show` lists them."""
    from cloud_receiver.access import audit
    from cloud_receiver.access import settings as conf

    conf.parse(name, value)  # a bad name or value is named before anything else
    target = Resource("setting", name)
    with (
        acting(db_url, session_file, Action.SETTINGS_CHANGE, target) as a,
        a.storage.transaction() as tx,
    ):
        before = dict((n, v) for n, v, _ in conf.describe(conf.load(tx)))[name]
        conf.store(tx, name, value, a.principal.label)
        audit.record(
            tx,
            a.principal,
            kind="settings",
            action=str(Action.SETTINGS_CHANGE),
            target=f"setting:{name}",
            at=time.time(),
            detail={"from": before, "to": value},
            key=a.key,
        )
    result(as_json, f"{name} = {value}", {"name": name, "value": value})
