"""The access settings: lifetimes, the approval threshold, the alert thresholds and
the lockout, in the database (``access_settings``) so that every command line and
every receiver of a deployment applies the same ones. An administrator changes them
(``cloud-receiver settings set``); each change is audited.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import Connection, select

from cloud_receiver.errors import EXIT_USAGE, ReceiverError
from cloud_receiver.storage.schema import access_settings

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


class SettingError(ReceiverError, ValueError):
    """An unknown setting or a value it cannot take."""

    exit_code = EXIT_USAGE


def parse_duration(text: str) -> float:
    """``90s``, ``10m``, ``2h``, ``1d`` or plain seconds; more than zero."""
    value = text.strip()
    factor = _UNITS.get(value[-1:], 1) if value else 1
    number = value[:-1] if value[-1:] in _UNITS else value
    try:
        seconds = float(number) * factor
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"{text!r}: expected a duration such as 90s, 10m, 2h or 1d")
    return seconds


def _count(text: str) -> int:
    if not text.strip().isdigit():
        raise ValueError(f"{text!r}: expected a whole number (0 or more)")
    return int(text)


def _positive(text: str) -> int:
    value = _count(text)
    if value < 1:
        raise ValueError(f"{text!r}: expected a whole number of at least 1")
    return value


def _lifetime(limit: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        seconds = parse_duration(text)
        if seconds > limit:
            raise ValueError(f"{text!r}: at most {limit / 86400:g} days")
        return seconds

    return parse


@dataclass(frozen=True)
class Settings:
    """The values in force (defaults where none is stored)."""

    session_lifetime: float = 8 * 3600.0  # a working shift
    request_lifetime: float = 4 * 3600.0  # how long a request waits for its approval
    relay_open_approval_above: int = 10  # relay-open for more meters needs a second operator
    alert_customers_per_hour: int = 50  # an operator reading more customers' data
    alert_login_failures: int = 3  # failed logins in a row that raise an alert
    lockout_failures: int = 5  # failed logins in a row that lock the operator out
    lockout_duration: float = 15 * 60.0


# name on the command line → (field, parser, what it means)
SETTINGS: dict[str, tuple[str, Callable[[str], Any], str]] = {
    "session-lifetime": (
        "session_lifetime",
        _lifetime(7 * 86400),
        "how long a login session lasts (login --for may ask for less)",
    ),
    "request-lifetime": (
        "request_lifetime",
        _lifetime(7 * 86400),
        "how long a request waits for approval and execution",
    ),
    "relay-open-approval-above": (
        "relay_open_approval_above",
        _count,
        "relay-open (or a DR event) for more meters than this needs a second operator's approval",
    ),
    "alert-customers-per-hour": (
        "alert_customers_per_hour",
        _positive,
        "alert when an operator reads more customers' data in an hour",
    ),
    "alert-login-failures": (
        "alert_login_failures",
        _positive,
        "alert after this many failed logins in a row",
    ),
    "lockout-failures": (
        "lockout_failures",
        _positive,
        "lock an operator out after this many failed logins in a row",
    ),
    "lockout-duration": ("lockout_duration", _lifetime(7 * 86400), "how long a lockout lasts"),
}


def _text(name: str, value: Any) -> str:
    if name in ("session_lifetime", "request_lifetime", "lockout_duration"):
        return f"{value:g}s"
    return str(value)


def parse(name: str, text: str) -> Any:
    """The value of setting ``name`` from ``text``; `SettingError` naming what is wrong."""
    if name not in SETTINGS:
        raise SettingError(f"unknown setting {name!r}: expected one of {', '.join(SETTINGS)}")
    _, parser, _ = SETTINGS[name]
    try:
        return parser(text)
    except ValueError as exc:
        raise SettingError(f"setting {name}: {exc}") from None


def load(conn: Connection) -> Settings:
    stored = dict(conn.execute(select(access_settings.c.name, access_settings.c.value)).all())
    values: dict[str, Any] = {}
    for name, text in stored.items():
        if name in SETTINGS:
            try:
                values[SETTINGS[name][0]] = parse(name, str(text))
            except SettingError:
                continue  # a value edited into nonsense: the default holds
    return Settings(**values)


def describe(current: Settings) -> list[tuple[str, str, str]]:
    """(name, value, meaning) of every setting, for display."""
    by_field = {f.name: getattr(current, f.name) for f in fields(current)}
    return [(name, _text(f, by_field[f]), meaning) for name, (f, _, meaning) in SETTINGS.items()]


def store(conn: Connection, name: str, text: str, by: str, now: float | None = None) -> Any:
    """Set ``name`` (validated); returns the parsed value. The caller audits it."""
    from sqlalchemy import delete, insert

    value = parse(name, text)
    at = time.time() if now is None else now
    conn.execute(delete(access_settings).where(access_settings.c.name == name))
    conn.execute(
        insert(access_settings).values(name=name, value=text.strip(), updated_at=at, updated_by=by)
    )
    return value
