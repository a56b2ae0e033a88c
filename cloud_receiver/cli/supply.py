"""``supply``: a meter's supply state — show it, and set or clear an operator's
``manual`` or ``maintenance`` reason (asked of the service, which sends the command)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from clitools.options import db_option, json_option
from clitools.table import limit_option, more_note, window
from clitools.timefmt import iso, since_option, time_range, until_option
from cloud_receiver.access.policy import Action, Resource
from cloud_receiver.cli.auth import acting, session_option, show_request, wait_done, wait_option
from cloud_receiver.cli.common import check_concentrator_id


@click.group()
def supply() -> None:
    """Supply state per meter: the reasons that keep its relay open."""


def _concentrator(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    return None if value is None else check_concentrator_id(ctx, param, value)


def _when(t: float) -> str:
    return iso(t)  # the site's zone, not the host's (docs/output.md)


@supply.command("show")
@click.argument("meter")
@click.option("--history", "with_history", is_flag=True, help="Every change too.")
@since_option("History from this time on (ISO 8601, or unix seconds).")
@until_option("History before this time (ISO 8601, or unix seconds).")
@limit_option()
@json_option()
@db_option()
@session_option()
def supply_show(
    meter: str,
    with_history: bool,
    since: str | None,
    until: str | None,
    limit: int,
    as_json: bool,
    db_url: str,
    session_file: Path | None,
) -> None:
    """METER's supply: on or off, the cause, every reason, and (with --history) its
    changes, the newest --limit in the --since/--until range (audited)."""
    import json
    import time

    from cloud_receiver.applications.supply import state

    first, end = time_range(since, until)
    state.check_meter(meter)
    target = Resource("meter", meter)
    with acting(db_url, session_file, Action.FLEET_READ, target) as actor:
        sup = state.get(actor.storage, meter)
        every = state.history(actor.storage, meter) if with_history or as_json else []
        changes, more = window(every, lambda h: float(h["at"]), first, end, limit)
        actor.read("supply state", str(target), customers=1,
                   export="json" if as_json else None)  # fmt: skip
    now = time.time()
    doc: dict[str, Any] = sup.as_dict(now)
    more_note(more, "older changes: use --limit/--since")
    if as_json:
        history = [h | {"at_iso": iso(h["at"])} for h in changes]
        click.echo(json.dumps(doc | {"history": history, "more": more}))
        return
    on = "on (relay closed)" if doc["relay"] == "closed" else "off (relay open)"
    cause = f", cause {doc['cause']}" if doc["cause"] else ""
    click.echo(f"meter {meter} on {sup.concentrator}: supply {on}{cause}")
    for r in sup.reasons:
        lasts = f" until {_when(r.until)}" if r.until is not None else ""
        status = "" if r.active(now) else " (not active now)"
        click.echo(f"  {r.reason:<16} since {_when(r.since)}{lasts} by {r.by}"
                   f"{' (' + r.ref + ')' if r.ref else ''}{status}")  # fmt: skip
    for h in changes:
        after = ", ".join(h["reasons_after"]) or "none"
        what = f"{h['change']} {h['reason'] or ''}".strip()
        click.echo(f"{_when(h['at'])}  {what:<24} by {h['by']}  reasons: {after}"
                   f"  {json.dumps(h['detail'])}")  # fmt: skip


def _order(
    meter: str,
    reason: str,
    on: bool,
    concentrator_id: str | None,
    db_url: str,
    session_file: Path | None,
    wait_s: float,
    as_json: bool,
) -> None:
    from cloud_receiver.applications.supply import state

    state.check_meter(meter)
    params = {"meter": meter, "reason": reason, "set": on, "concentrator": concentrator_id}
    with acting(db_url, session_file) as actor:
        req = actor.submit("supply", params)
        done = wait_done(actor.storage, req.id, wait_s)
    if as_json or done.status != "done":
        show_request(done, as_json)
        return
    result = done.result or {}
    held = ", ".join(result.get("reasons") or []) or "no reason"
    command = f" (command {result['command']})" if result.get("command") else ""
    click.echo(f"meter {meter}: supply {'off' if result['relay'] == 'open' else 'on'},"
               f" held by {held}{command}")  # fmt: skip


_REASON = click.option(
    "--reason",
    type=click.Choice(["manual", "maintenance"]),
    required=True,
    help="manual: an operator's order; maintenance: field work on the meter or line.",
)


@supply.command("set")
@click.argument("meter")
@_REASON
@click.option(
    "--concentrator",
    "concentrator_id",
    default=None,
    callback=_concentrator,
    help="The concentrator the meter is wired to (needed the first time).",
)
@db_option()
@session_option()
@wait_option()
@json_option()
def supply_set(
    meter: str,
    reason: str,
    concentrator_id: str | None,
    db_url: str,
    session_file: Path | None,
    wait_s: float,
    as_json: bool,
) -> None:
    """Hold METER's supply off for REASON; the relay opens unless it already is."""
    _order(meter, reason, True, concentrator_id, db_url, session_file, wait_s, as_json)


@supply.command("clear")
@click.argument("meter")
@_REASON
@db_option()
@session_option()
@wait_option()
@json_option()
def supply_clear(
    meter: str, reason: str, db_url: str, session_file: Path | None, wait_s: float, as_json: bool
) -> None:
    """Lift REASON from METER; the relay closes only when no other reason remains."""
    _order(meter, reason, False, None, db_url, session_file, wait_s, as_json)


COMMANDS = [supply]
