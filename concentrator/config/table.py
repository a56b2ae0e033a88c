"""One TOML table under check: typed getters that report what is wrong with its line.

A getter returns the checked value (or the default), or records an issue and raises
`Invalid`; `optional` turns that into None plus a note that the table failed, so one
bad key never hides the next one.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

from concentrator.config.issues import ConfigIssue, Severity
from concentrator.config.lines import LineIndex, TableId

T = TypeVar("T")


class _Required:
    """Marks a key without a default."""


REQUIRED = _Required()


def type_name(value: object) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return "date/time"


def show(value: object) -> str:
    text = f'"{value}"' if isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class Invalid(Exception):
    """One field's value is wrong; already recorded as an issue."""


class Report:
    """The issues of one file, with the line index that places them. ``keys``: whether
    the key files the file names are read too (not by commands that never use them)."""

    def __init__(self, file: str, index: LineIndex, *, keys: bool = True) -> None:
        self.file = file
        self.index = index
        self.keys = keys
        self.issues: list[ConfigIssue] = []

    def add(
        self, line: int | None, field_name: str, message: str, severity: Severity = "error"
    ) -> None:
        self.issues.append(ConfigIssue(self.file, line, field_name, message, severity))

    @property
    def errors(self) -> list[ConfigIssue]:
        return [i for i in self.issues if i.severity == "error"]


class Table:
    """One TOML table being checked: typed getters that record issues, never raise out
    (a bad value raises `Invalid` to its caller, already reported)."""

    def __init__(
        self, report: Report, data: Mapping[str, Any], table: TableId, prefix: str, base: Path
    ) -> None:
        self.report = report
        self.data = data
        self.table = table
        self.prefix = prefix
        self.base = base  # relative paths are relative to the config file's folder

    def field(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def line(self, key: str | None = None) -> int | None:
        return self.report.index.line(self.table, key)

    def issue(self, key: str, message: str) -> None:
        self.report.add(self.line(key), self.field(key), message)

    def warn(self, key: str, message: str) -> None:
        """Say something that does not keep the daemon from starting."""
        self.report.add(self.line(key), self.field(key), message, "warning")

    def unknown_keys(
        self, allowed: Iterable[str], special: Mapping[str, str] | None = None
    ) -> None:
        allowed = tuple(allowed)
        for key in self.data:
            if key in allowed:
                continue
            if special and key in special:
                self.issue(key, special[key])
            else:
                self.issue(key, f'unknown key "{key}"; allowed keys: {", ".join(allowed)}')

    def unknown_keys_at_once(self, allowed: Iterable[str]) -> None:
        """The keys not in ``allowed`` as one issue for the whole table, at the first one's
        line, in the words the services tables (``[uplink]``, ``[modem]``, ``[update]``)
        used when each of them still parsed itself."""
        allowed = tuple(allowed)
        unknown = [key for key in self.data if key not in allowed]
        if unknown:
            listed = ", ".join(sorted(unknown))
            self.report.add(
                self.line(unknown[0]),
                self.prefix,
                f"unknown key(s) {listed}; expected some of {', '.join(sorted(allowed))}",
            )

    def get(
        self,
        key: str,
        check: Callable[[object], T | None],
        expected: str,
        default: T | _Required | None = REQUIRED,
    ) -> T | None:
        """The value of ``key`` if ``check`` accepts it (returns non-None), else Invalid."""
        if key not in self.data:
            if isinstance(default, _Required):
                self.report.add(self.line(), self.field(key), "required key is missing")
                raise Invalid
            return default
        value = self.data[key]
        checked = check(value)
        if checked is None:
            self.issue(key, f"expected {expected}, got {type_name(value)} {show(value)}")
            raise Invalid
        return checked

    def string(self, key: str, default: str | _Required | None = REQUIRED) -> str | None:
        def check(v: object) -> str | None:
            return v if isinstance(v, str) else None

        value = self.get(key, check, "a string", default)
        if value == "" and isinstance(default, _Required):
            self.issue(key, "must not be empty")
            raise Invalid
        return value

    def integer(
        self,
        key: str,
        lo: int | None,
        hi: int | None,
        default: int | _Required | None = REQUIRED,
    ) -> int | None:
        """An integer within ``lo..hi`` (None: unbounded on that side)."""

        def check(v: object) -> int | None:
            return v if isinstance(v, int) and not isinstance(v, bool) else None

        value = self.get(key, check, "an integer", default)
        below = value is not None and lo is not None and value < lo
        above = value is not None and hi is not None and value > hi
        if below or above:
            if lo is not None and hi is not None:
                bounds = f"{lo}..{hi}"
            else:
                bounds = f">= {lo}" if lo is not None else f"<= {hi}"
            self.issue(key, f"{value} is out of range {bounds}")
            raise Invalid
        return value

    def number(self, key: str, *, positive: bool, default: float) -> float | None:
        def check(v: object) -> float | None:
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                return float(v)
            return None

        value = self.get(key, check, "a number", default)
        if value is not None and ((value <= 0) if positive else (value < 0)):
            self.issue(key, f"{value:g} must be {'> 0' if positive else '>= 0'}")
            raise Invalid
        return value

    def seconds(self, key: str, default: float) -> float:
        """A positive number of seconds (an integer is taken as a float)."""
        value = self.data.get(key, default)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or not math.isfinite(value) or value <= 0:
            self.issue(key, f"expected a positive number of seconds, got {show(value)}")
            raise Invalid
        return float(value)

    def path(self, key: str, default: Path | _Required | None = REQUIRED) -> Path | None:
        """A file path; a relative one is relative to the config file's folder."""
        if key not in self.data and not isinstance(default, _Required):
            return default
        text = self.string(key)  # present, so it must be a non-empty string
        return None if text is None else resolve(self.base, text)

    def existing_file(self, key: str, path: Path) -> bool:
        """Whether the file ``key`` names is there (an issue at its line if not)."""
        if path.is_file():
            return True
        if path.is_dir():
            self.issue(key, f"{path} is a folder; expected a file")
        elif not path.parent.is_dir():
            self.issue(key, f"{path}: the folder {path.parent} does not exist")
        else:
            self.issue(key, f"{path} does not exist")
        return False

    def serial_port(self, key: str, port: str) -> None:
        """A serial port that is not there is a warning, not an error: a USB adapter may
        be plugged in after the daemon starts, which opens it once it appears."""
        if is_url(port) or os.path.exists(port):
            return
        self.warn(
            key,
            f"serial port {port} does not exist (yet): the daemon keeps trying to open it; "
            "plug the adapter in, or correct the port",
        )

    def boolean(self, key: str, default: bool) -> bool | None:
        def check(v: object) -> bool | None:
            return v if isinstance(v, bool) else None

        return self.get(key, check, "true or false", default)

    def choice(
        self, key: str, choices: Iterable[str], default: str | _Required = REQUIRED
    ) -> str | None:
        choices = tuple(choices)
        value = self.string(key, default)
        if value is not None and value not in choices:
            listed = ", ".join(f'"{c}"' for c in choices)
            self.issue(key, f"{show(value)} is not one of {listed}")
            raise Invalid
        return value

    def string_list(
        self, key: str, default: tuple[str, ...] | _Required = REQUIRED
    ) -> tuple[str, ...] | None:
        def check(v: object) -> tuple[str, ...] | None:
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                return tuple(cast(list[str], v))
            return None

        return self.get(key, check, "an array of strings", default)

    def pattern(
        self,
        key: str,
        regex: re.Pattern[str],
        what: str,
        default: str | _Required | None = REQUIRED,
    ) -> str | None:
        value = self.string(key, default)
        if value is not None and not regex.fullmatch(value):
            self.issue(key, f"{show(value)} is not {what}")
            raise Invalid
        return value


def is_url(port: str) -> bool:
    """A pyserial URL (socket://host:port, rfc2217://...) rather than a device node."""
    return "://" in port


def resolve(base: Path, text: str) -> Path:
    """The one path rule of the configuration: a relative path is relative to the config
    file's folder (``base``, absolute), wherever the daemon or a command is started."""
    return base / text


def resolve_port(base: Path, port: str) -> str:
    """A serial port by the same rule (a device node is a path); a URL stays as it is."""
    return port if is_url(port) or not port else str(resolve(base, port))


def optional(call: Callable[[], T], failed: list[bool]) -> T | None:
    """Run one field getter; on an invalid value note the failure and go on."""
    try:
        return call()
    except Invalid:
        failed.append(True)
        return None
