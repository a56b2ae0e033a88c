"""One time rule for what the command lines print and take (issue 18, item 4): ISO 8601
with the UTC offset, in the site's time zone, on both ends. Never raw Unix seconds, never
host-local time without an offset.

The site's zone is a fixed offset (`contract.timezone`): the concentrator's comes from
its config (the daemon reports it), the receiver's from ``--tz`` / ``MF_TZ``
(`tz_option`), ``+08:00`` unless said otherwise, as the receiver has always assumed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any, TypeVar

import click

from contract.timezone import iso_time, parse_utc_offset

F = TypeVar("F", bound=Callable[..., Any])
DEFAULT_TZ = "+08:00"
_META_KEY = "meterflow.tz"


def parse_tz(text: str) -> dt.timezone:
    """``+HH:MM`` as a zone; `click.BadParameter` naming what was expected."""
    tz = parse_utc_offset(text.strip())
    if tz is None:
        raise click.BadParameter(f"{text!r}: expected a UTC offset such as +08:00 or -05:30")
    return tz


def _tz_callback(ctx: click.Context, param: click.Parameter, value: str) -> dt.timezone:
    tz = parse_tz(value)
    ctx.meta[_META_KEY] = tz
    return tz


def tz_option() -> Callable[[F], F]:
    """``--tz +HH:MM`` (env ``MF_TZ``): the site's zone for every time a command prints
    or takes without an offset; on a group, it serves all the commands under it."""
    return click.option(
        "--tz",
        "site_tz",
        default=DEFAULT_TZ,
        show_default=True,
        envvar="MF_TZ",
        show_envvar=True,
        callback=_tz_callback,
        is_eager=True,
        help="The site's time zone (UTC offset): times are printed and read in it.",
    )


def site_tz() -> dt.timezone:
    """The zone set by `tz_option` for the running command (the default outside one)."""
    ctx = click.get_current_context(silent=True)
    tz = ctx.meta.get(_META_KEY) if ctx is not None else None
    return tz if isinstance(tz, dt.timezone) else parse_tz(DEFAULT_TZ)


def site_tz_text() -> str:
    """The site's zone as ``+HH:MM``: the default of a command's own ``--tz`` (a tariff's,
    a report's), so that it follows the program's ``--tz`` / ``MF_TZ``."""
    offset = site_tz().utcoffset(None)
    minutes = int(offset.total_seconds() // 60) if offset is not None else 0
    sign = "-" if minutes < 0 else "+"
    return f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def iso(t: float | None, tz: dt.tzinfo | None = None, *, empty: str = "") -> str:
    """Unix seconds as ISO 8601 with offset, to the second (``empty`` for None)."""
    if t is None:
        return empty
    return iso_time(t, tz or site_tz())


def parse_time(text: str, tz: dt.tzinfo | None = None) -> int:
    """ISO 8601 (a date, or a date and time; without an offset, in the site's zone) or
    Unix seconds, as Unix seconds; `click.BadParameter` saying what was expected."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise click.BadParameter(
            f"{text!r}: expected unix seconds or an ISO 8601 date or time (2026-03-01, "
            "2026-03-01T12:00, 2026-03-01T12:00+08:00)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=tz or site_tz())
    return int(when.timestamp())


def time_range(
    since: str | None, until: str | None, *, names: tuple[str, str] = ("--since", "--until")
) -> tuple[int | None, int | None]:
    """``--since``/``--until`` parsed by `parse_time`; a start after the end is a
    `click.UsageError` naming both."""
    first = parse_time(since) if since is not None else None
    end = parse_time(until) if until is not None else None
    if first is not None and end is not None and first > end:
        raise click.UsageError(
            f"{names[0]} {iso(first)} is after {names[1]} {iso(end)}: nothing can match"
        )
    return first, end


def since_option(
    help: str = "Only from this time on (ISO 8601, or unix seconds).", *, also: str | None = None
) -> Callable[[F], F]:
    """``--since T`` (and the older spelling ``also``): the start of a time range."""
    flags = ["--since", *([also] if also else [])]
    return click.option(*flags, "since", default=None, metavar="TIME", help=help)


def until_option(
    help: str = "Only before this time (ISO 8601, or unix seconds).", *, also: str | None = None
) -> Callable[[F], F]:
    """``--until T`` (and the older spelling ``also``): the exclusive end of a range."""
    flags = ["--until", *([also] if also else [])]
    return click.option(*flags, "until", default=None, metavar="TIME", help=help)
