"""The concentrator's configuration file (TOML), parsed once into frozen dataclasses.

A field engineer edits this file on site, often over a slow console, so a check reports
*every* problem at once, each as ``FILE:LINE: FIELD: message``. ``tomllib`` keeps no
line numbers, so a small index of the raw text maps table headers (``[[meter]]`` counted
in order) and ``key =`` lines back to lines; an issue points at the key's line, or at
its table's header when the key is missing.

Fields are named as in the file, with 0-based indices into arrays of tables:
``meter[3].address`` is the ``address`` key of the fourth ``[[meter]]``.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from contract.timezone import parse_utc_offset
from drivers import dlt645
from drivers.modbus_rtu import METER_MODELS
from drivers.plc_bus import PlcSettings
from drivers.serial_bus import Parity, SerialSettings

__all__ = [
    "BusConfig",
    "Cadence",
    "ConcentratorSection",
    "Config",
    "ConfigError",
    "ConfigIssue",
    "MeterConfig",
    "StorageSection",
    "TaskConfig",
    "check_config",
    "load_config",
    "parse_cadence",
]

DEFAULT_CONTROL_SOCKET = Path("/run/meterflow/concentrator.sock")
# sun_path holds 108 bytes on Linux, the terminating NUL included.
MAX_SOCKET_PATH_BYTES = 107

BAUD_RATES = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
DAY_S = 86_400

_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_DLT645_ADDRESS_RE = re.compile(r"\d{12}")
_DAILY_RE = re.compile(r"daily@(\d{2}):(\d{2})")
_PERIOD_RE = re.compile(r"(\d+)([smh])")


# ---------------------------------------------------------------------- issues


@dataclass(frozen=True)
class ConfigIssue:
    file: str
    line: int | None
    field: str
    message: str

    def __str__(self) -> str:
        where = self.file if self.line is None else f"{self.file}:{self.line}"
        return f"{where}: {self.field}: {self.message}"

    def as_dict(self) -> dict[str, object]:
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}


class ConfigError(Exception):
    def __init__(self, issues: list[ConfigIssue]) -> None:
        super().__init__(issues)
        self.issues = issues

    def __str__(self) -> str:
        return "\n".join(str(issue) for issue in self.issues)


# ---------------------------------------------------------------------- dataclasses


@dataclass(frozen=True)
class Cadence:
    """When a task runs: every ``period_s`` seconds from local midnight + ``offset_s``.

    Slots are wall-clock boundaries in the concentrator's timezone (design.md, Time), so
    "15m" means :00/:15/:30/:45 local and "daily@00:05" means 00:05 local each day.
    """

    text: str
    period_s: int
    offset_s: int = 0

    def slot_start(self, t: float, tz: dt.tzinfo) -> int:
        """Unix time of the start of the slot that contains unix time ``t``."""
        offset = dt.datetime.fromtimestamp(t, tz).utcoffset()
        utc_offset_s = int(offset.total_seconds()) if offset is not None else 0
        local = math.floor(t) + utc_offset_s - self.offset_s
        return local - local % self.period_s + self.offset_s - utc_offset_s


@dataclass(frozen=True)
class ConcentratorSection:
    id: str
    timezone: str = "+08:00"
    # The field CLI's way into the running daemon (concentrator/control.py).
    control_socket: Path = DEFAULT_CONTROL_SOCKET

    @property
    def tzinfo(self) -> dt.timezone:
        return parse_utc_offset(self.timezone) or dt.timezone(dt.timedelta(hours=8))


@dataclass(frozen=True)
class StorageSection:
    path: Path
    quota_mb: int | None = None
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    retention_days: float = 7.0


@dataclass(frozen=True)
class BusConfig:
    name: str
    port: str
    baud: int
    parity: Parity
    type: Literal["rs485", "plc"] = "rs485"
    response_timeout_ms: int = 600
    inter_frame_gap_ms: int = 5
    rs485: bool = False
    # Power-line carrier only (a Q/GDW 1376.2 module on this port):
    monitor_timeout_ms: int = 90_000  # one meter read through the carrier network
    max_in_flight: int = 1  # reads sent to the module before the first answer
    retries: int = 6  # per read and slot: a failed node is tried again later in the slot

    def plc_settings(self, time_scale: float = 1.0) -> PlcSettings:
        """Carrier time (routing, relays, the meter) runs on the daemon's clock, so a
        scaled test clock scales these timeouts; the UART itself does not."""
        return PlcSettings(
            port=self.port,
            baud=self.baud,
            parity=self.parity,
            response_timeout=self.response_timeout_ms / 1000 / time_scale,
            monitor_timeout=self.monitor_timeout_ms / 1000 / time_scale,
            max_in_flight=self.max_in_flight,
        )

    def settings(self) -> SerialSettings:
        return SerialSettings(
            port=self.port,
            baud=self.baud,
            parity=self.parity,
            response_timeout=self.response_timeout_ms / 1000,
            inter_frame_gap=self.inter_frame_gap_ms / 1000,
            rs485=self.rs485,
        )


@dataclass(frozen=True)
class MeterConfig:
    address: str
    protocol: Literal["dlt645", "modbus"]
    bus: str
    group: str = "default"
    area: str | None = None
    password_level: int | None = None
    password: str | None = None
    operator: str | None = None
    model: str | None = None  # Modbus register map; None for DL/T 645

    @property
    def has_relay_credentials(self) -> bool:
        return None not in (self.password_level, self.password, self.operator)


@dataclass(frozen=True)
class TaskConfig:
    name: str
    quantities: tuple[str, ...]
    every: Cadence
    groups: tuple[str, ...] = ("*",)
    retries: int = 2
    retry_backoff_s: float = 2.0
    backfill: bool = True
    relay: bool = False

    def applies_to(self, meter: MeterConfig) -> bool:
        return "*" in self.groups or meter.group in self.groups


@dataclass(frozen=True)
class Config:
    concentrator: ConcentratorSection
    storage: StorageSection
    buses: tuple[BusConfig, ...]
    meters: tuple[MeterConfig, ...]
    tasks: tuple[TaskConfig, ...]
    uplink: dict[str, object] = field(default_factory=dict)
    modem: dict[str, object] = field(default_factory=dict)  # checked by ModemConfig
    update: dict[str, object] = field(default_factory=dict)  # checked by UpdateConfig
    format: int = 1


# ---------------------------------------------------------------------- public API


def load_config(path: Path) -> Config:
    config, issues = _load(Path(path))
    if issues or config is None:
        raise ConfigError(issues)
    return config


def check_config(path: Path) -> list[ConfigIssue]:
    return _load(Path(path))[1]


def parse_cadence(text: str) -> Cadence:
    """A period that divides a day ("30s", "15m", "1h") or "daily@HH:MM"; else ValueError."""
    if m := _DAILY_RE.fullmatch(text):
        hh, mm = int(m[1]), int(m[2])
        if hh > 23 or mm > 59:
            raise ValueError(f'"{text}": time of day must be 00:00..23:59')
        return Cadence(text, DAY_S, hh * 3600 + mm * 60)
    if m := _PERIOD_RE.fullmatch(text):
        period = int(m[1]) * {"s": 1, "m": 60, "h": 3600}[m[2]]
        if period == 0 or DAY_S % period:
            raise ValueError(f'"{text}" does not divide a day into equal slots')
        return Cadence(text, period)
    raise ValueError(
        f'"{text}" is not a cadence; expected e.g. "1m", "5m", "15m", "30m", "1h" or "daily@HH:MM"'
    )


# ---------------------------------------------------------------------- line index

_HEADER_RE = re.compile(r"\s*(\[\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
_KEY_RE = re.compile(r"""\s*("[^"]*"|'[^']*'|[A-Za-z0-9_-]+)\s*[.=]""")

TableId = tuple[str, int | None]  # ("meter", 3), ("storage", None), ("", None) = top level


@dataclass
class _TableLines:
    header: int | None
    keys: dict[str, int] = field(default_factory=dict)


class LineIndex:
    """Where each table header and ``key =`` line is, from the raw text.

    Good enough for configs people write: it ignores lines inside multi-line arrays and
    strings, and maps ``[meter.x]`` sub-tables to key ``x`` of the latest ``[[meter]]``.
    """

    def __init__(self, text: str) -> None:
        self.tables: dict[TableId, _TableLines] = {("", None): _TableLines(None)}
        counts: dict[str, int] = {}
        current: _TableLines | None = self.tables[("", None)]
        depth = 0  # open brackets of a multi-line array
        in_string: str | None = None
        for lineno, raw in enumerate(text.splitlines(), start=1):
            if in_string is not None:
                if raw.count(in_string) % 2:
                    in_string = None
                continue
            if depth == 0:
                header = _HEADER_RE.match(raw)
                if header is not None:
                    names = [n.strip().strip("\"'") for n in header[2].split(".")]
                    current = self._header(names, header[1] == "[[", lineno, counts)
                    continue
                key = _KEY_RE.match(raw)
                if key is not None and current is not None:
                    current.keys.setdefault(key[1].strip("\"'"), lineno)
            value = raw.split("=", 1)[1] if depth == 0 and "=" in raw else raw
            for quote in ('"""', "'''"):
                if value.count(quote) % 2:
                    in_string = quote
            depth = max(0, depth + _bracket_balance(value))

    def _header(
        self, names: list[str], is_array: bool, lineno: int, counts: dict[str, int]
    ) -> _TableLines | None:
        top = names[0]
        if len(names) == 1:
            if is_array:
                index = counts.get(top, -1) + 1
                counts[top] = index
                table = _TableLines(lineno)
                self.tables[(top, index)] = table
                return table
            table = self.tables.setdefault((top, None), _TableLines(lineno))
            table.header = lineno
            return table
        # A sub-table: report it as the key it adds to its parent, and index no deeper.
        parent = self.tables.get((top, counts[top]) if top in counts else (top, None))
        if parent is not None:
            parent.keys.setdefault(names[1], lineno)
        return None

    def line(self, table: TableId, key: str | None = None) -> int | None:
        entry = self.tables.get(table)
        if entry is None:
            # e.g. ``meter = [{...}]`` inline: only the top-level key has a line
            return self.tables[("", None)].keys.get(table[0])
        if key is not None and key in entry.keys:
            return entry.keys[key]
        if table == ("", None) and key is not None:
            # a top-level key written as a table: its header is where it is
            sub = self.tables.get((key, None)) or self.tables.get((key, 0))
            return sub.header if sub is not None else None
        return entry.header


def _bracket_balance(text: str) -> int:
    balance = 0
    quote: str | None = None
    for ch in text:
        if quote is not None:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            break
        elif ch in "[{":
            balance += 1
        elif ch in "]}":
            balance -= 1
    return balance


# ---------------------------------------------------------------------- checking

T = TypeVar("T")


class _Required:
    """Marks a key without a default."""


REQUIRED = _Required()

_TOP_KEYS = (
    "format",
    "concentrator",
    "storage",
    "bus",
    "meter",
    "task",
    "uplink",
    "modem",
    "update",
)
# The config file format this software reads. A file may say ``format = N`` at the top
# (1 when absent); an update package states the lowest format it reads, and is refused
# by a concentrator whose file is older.
CONFIG_FORMAT = 1
_CONCENTRATOR_KEYS = ("id", "timezone", "control_socket")
_STORAGE_KEYS = ("path", "quota_mb", "synchronous", "retention_days")
_BUS_KEYS = (
    "name",
    "type",
    "port",
    "baud",
    "parity",
    "response_timeout_ms",
    "inter_frame_gap_ms",
    "rs485",
    "monitor_timeout_ms",
    "max_in_flight",
    "retries",
)
_PLC_ONLY_KEYS = ("monitor_timeout_ms", "max_in_flight", "retries")
_METER_KEYS = (
    "address",
    "protocol",
    "bus",
    "group",
    "area",
    "password_level",
    "password",
    "operator",
    "model",
)
_TASK_KEYS = (
    "name",
    "quantities",
    "every",
    "groups",
    "retries",
    "retry_backoff_s",
    "backfill",
    "relay",
)


def _type_name(value: object) -> str:
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


def _show(value: object) -> str:
    text = f'"{value}"' if isinstance(value, str) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Invalid(Exception):
    """One field's value is wrong; already recorded as an issue."""


class _Table:
    """One TOML table being checked: typed getters that record issues, never raise out."""

    def __init__(
        self, checker: _Checker, data: Mapping[str, Any], table: TableId, prefix: str
    ) -> None:
        self.checker = checker
        self.data = data
        self.table = table
        self.prefix = prefix

    def field(self, key: str) -> str:
        return f"{self.prefix}.{key}" if self.prefix else key

    def line(self, key: str | None = None) -> int | None:
        return self.checker.index.line(self.table, key)

    def issue(self, key: str, message: str) -> None:
        self.checker.add(self.line(key), self.field(key), message)

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

    def get(
        self,
        key: str,
        check: Callable[[object], T | None],
        expected: str,
        default: T | _Required | None = REQUIRED,
    ) -> T | None:
        """The value of ``key`` if ``check`` accepts it (returns non-None), else _Invalid."""
        if key not in self.data:
            if isinstance(default, _Required):
                self.checker.add(self.line(), self.field(key), "required key is missing")
                raise _Invalid
            return default
        value = self.data[key]
        checked = check(value)
        if checked is None:
            self.issue(key, f"expected {expected}, got {_type_name(value)} {_show(value)}")
            raise _Invalid
        return checked

    def string(self, key: str, default: str | _Required | None = REQUIRED) -> str | None:
        def check(v: object) -> str | None:
            return v if isinstance(v, str) else None

        value = self.get(key, check, "a string", default)
        if value == "" and isinstance(default, _Required):
            self.issue(key, "must not be empty")
            raise _Invalid
        return value

    def integer(
        self, key: str, lo: int, hi: int | None, default: int | _Required | None = REQUIRED
    ) -> int | None:
        def check(v: object) -> int | None:
            return v if isinstance(v, int) and not isinstance(v, bool) else None

        value = self.get(key, check, "an integer", default)
        if value is not None and (value < lo or (hi is not None and value > hi)):
            bounds = f"{lo}..{hi}" if hi is not None else f">= {lo}"
            self.issue(key, f"{value} is out of range {bounds}")
            raise _Invalid
        return value

    def number(self, key: str, *, positive: bool, default: float) -> float | None:
        def check(v: object) -> float | None:
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v):
                return float(v)
            return None

        value = self.get(key, check, "a number", default)
        if value is not None and ((value <= 0) if positive else (value < 0)):
            self.issue(key, f"{value:g} must be {'> 0' if positive else '>= 0'}")
            raise _Invalid
        return value

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
            self.issue(key, f"{_show(value)} is not one of {listed}")
            raise _Invalid
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
            self.issue(key, f"{_show(value)} is not {what}")
            raise _Invalid
        return value


def _optional(call: Callable[[], T], failed: list[bool]) -> T | None:
    """Run one field getter; on an invalid value note the failure and go on."""
    try:
        return call()
    except _Invalid:
        failed.append(True)
        return None


class _Checker:
    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self.file = str(path)
        self.index = LineIndex(text)
        self.issues: list[ConfigIssue] = []

    def add(self, line: int | None, field_name: str, message: str) -> None:
        self.issues.append(ConfigIssue(self.file, line, field_name, message))

    # -- sections

    def run(self, doc: dict[str, Any]) -> Config | None:
        top = _Table(self, doc, ("", None), "")
        top.unknown_keys(_TOP_KEYS)
        concentrator = self.concentrator(doc)
        storage = self.storage(doc)
        buses = self.array(doc, "bus", self.bus)
        self.check_ports(buses)
        meters = self.array(doc, "meter", lambda t: self.meter(t, buses))
        self.check_duplicate_meters(meters)
        tasks = self.array(doc, "task", lambda t: self.task(t, meters))
        self.check_unique_names(tasks)
        uplink = doc.get("uplink", {})
        if not isinstance(uplink, dict):
            top.issue("uplink", f"expected a table [uplink], got {_type_name(uplink)}")
        modem = doc.get("modem", {})
        if not isinstance(modem, dict):
            top.issue("modem", f"expected a table [modem], got {_type_name(modem)}")
        update = doc.get("update", {})
        if not isinstance(update, dict):
            top.issue("update", f"expected a table [update], got {_type_name(update)}")
        fmt = doc.get("format", 1)
        if not isinstance(fmt, int) or isinstance(fmt, bool) or not 1 <= fmt <= CONFIG_FORMAT:
            top.issue(
                "format",
                f"config format {fmt!r}: this software reads formats 1..{CONFIG_FORMAT}",
            )
        if self.issues or concentrator is None or storage is None:
            return None
        return Config(
            concentrator=concentrator,
            storage=storage,
            buses=tuple(b for _, b in buses if b is not None),
            meters=tuple(m for _, m in meters if m is not None),
            tasks=tuple(t for _, t in tasks if t is not None),
            uplink=dict(uplink),
            modem=dict(modem),
            update=dict(update) if isinstance(update, dict) else {},
            format=fmt if isinstance(fmt, int) else 1,
        )

    def section(self, doc: dict[str, Any], name: str) -> _Table | None:
        if name not in doc:
            self.add(None, name, f"required table [{name}] is missing")
            return None
        data = doc[name]
        if not isinstance(data, dict):
            self.add(self.index.line(("", None), name), name, f"expected a table [{name}]")
            return None
        return _Table(self, data, (name, None), name)

    def array(
        self, doc: dict[str, Any], name: str, build: Callable[[_Table], T | None]
    ) -> list[tuple[_Table, T | None]]:
        """Each ``[[name]]`` entry with what ``build`` made of it (None when invalid)."""
        data = doc.get(name, [])
        if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
            line = self.index.line(("", None), name) or self.index.line((name, None))
            self.add(line, name, f"expected [[{name}]] entries (an array of tables)")
            return []
        out = []
        for i, entry in enumerate(data):
            table = _Table(self, entry, (name, i), f"{name}[{i}]")
            out.append((table, build(table)))
        return out

    def concentrator(self, doc: dict[str, Any]) -> ConcentratorSection | None:
        t = self.section(doc, "concentrator")
        if t is None:
            return None
        t.unknown_keys(_CONCENTRATOR_KEYS)
        failed: list[bool] = []
        id_ = _optional(
            lambda: t.pattern("id", _ID_RE, "1..64 characters of A-Z a-z 0-9 . _ -"), failed
        )
        tz = _optional(lambda: t.string("timezone", "+08:00"), failed)
        if tz is not None and parse_utc_offset(tz) is None:
            t.issue("timezone", f'{_show(tz)} is not a UTC offset such as "+08:00"')
            failed.append(True)
        socket_text = _optional(lambda: t.string("control_socket", None), failed)
        control_socket = DEFAULT_CONTROL_SOCKET
        if socket_text is not None:
            # Relative to the config file, as the store path is.
            control_socket = self.path.parent / socket_text
            size = len(os.fsencode(control_socket))
            if not socket_text:
                t.issue("control_socket", "must not be empty")
                failed.append(True)
            elif size > MAX_SOCKET_PATH_BYTES:
                t.issue(
                    "control_socket",
                    f"{_show(str(control_socket))} is {size} bytes long; a Unix socket "
                    f"path holds at most {MAX_SOCKET_PATH_BYTES}",
                )
                failed.append(True)
        if failed or id_ is None or tz is None:
            return None
        return ConcentratorSection(id_, tz, control_socket)

    def storage(self, doc: dict[str, Any]) -> StorageSection | None:
        t = self.section(doc, "storage")
        if t is None:
            return None
        t.unknown_keys(_STORAGE_KEYS)
        failed: list[bool] = []
        path = _optional(lambda: t.string("path"), failed)
        quota = _optional(lambda: t.integer("quota_mb", 1, None, None), failed)
        sync = _optional(lambda: t.choice("synchronous", ("FULL", "NORMAL"), "FULL"), failed)
        retention = _optional(
            lambda: t.number("retention_days", positive=True, default=7.0), failed
        )
        if failed or path is None or sync is None or retention is None:
            return None
        # A relative store path is relative to the config file, not to the daemon's cwd.
        return StorageSection(
            path=self.path.parent / path,
            quota_mb=quota,
            synchronous=cast(Literal["FULL", "NORMAL"], sync),
            retention_days=retention,
        )

    def bus(self, t: _Table) -> BusConfig | None:
        t.unknown_keys(_BUS_KEYS)
        failed: list[bool] = []
        name = _optional(lambda: t.string("name"), failed)
        type_ = _optional(lambda: t.choice("type", ("rs485", "plc")), failed)
        plc = type_ == "plc"
        if type_ == "rs485":
            for key in _PLC_ONLY_KEYS:
                if key in t.data:
                    t.issue(key, 'only power-line carrier buses (type = "plc") take this key')
                    failed.append(True)
        elif plc and "rs485" in t.data:
            t.issue("rs485", "a carrier module's UART is not an RS-485 line")
            failed.append(True)
        port = _optional(lambda: t.string("port"), failed)
        # A carrier module's UART runs 9600 8E1 unless its vendor says otherwise.
        baud = _optional(lambda: t.integer("baud", 0, None, 9600 if plc else REQUIRED), failed)
        if baud is not None and baud != 0 and baud not in BAUD_RATES:
            rates = ", ".join(map(str, BAUD_RATES))
            t.issue("baud", f"{baud} is not a standard rate ({rates}, or 0 for the simulator)")
            failed.append(True)
        parity = _optional(
            lambda: t.choice("parity", ("E", "N", "O"), "E" if plc else REQUIRED), failed
        )
        # The module answers its own commands at once; a meter read is the slow part.
        timeout = _optional(
            lambda: t.integer("response_timeout_ms", 20, 60000, 5000 if plc else 600), failed
        )
        gap = _optional(lambda: t.integer("inter_frame_gap_ms", 0, 1000, 5), failed)
        rs485 = _optional(lambda: t.boolean("rs485", False), failed)
        monitor = _optional(lambda: t.integer("monitor_timeout_ms", 1000, 600_000, 90_000), failed)
        in_flight = _optional(lambda: t.integer("max_in_flight", 1, 16, 1), failed)
        retries = _optional(lambda: t.integer("retries", 0, 100, 6), failed)
        if failed or None in (name, port, baud, parity, timeout, gap, rs485, monitor):
            return None
        return BusConfig(
            name=cast(str, name),
            port=cast(str, port),
            baud=cast(int, baud),
            parity=cast(Parity, parity),
            type=cast(Literal["rs485", "plc"], type_),
            response_timeout_ms=cast(int, timeout),
            inter_frame_gap_ms=cast(int, gap),
            rs485=cast(bool, rs485),
            monitor_timeout_ms=cast(int, monitor),
            max_in_flight=cast(int, in_flight),
            retries=cast(int, retries),
        )

    def check_ports(self, buses: list[tuple[_Table, BusConfig | None]]) -> None:
        """Bus names are unique; buses sharing a port share its line settings.

        Two meters on one port at different baud rates (a common site mistake) show up
        here as two [[bus]] entries naming the same port with different settings: one
        UART cannot run at two speeds, so one of them would never answer.
        """
        names: dict[str, _Table] = {}
        ports: dict[str, tuple[_Table, BusConfig]] = {}
        for t, bus in buses:
            if bus is None:
                continue
            if bus.name in names:
                first = names[bus.name]
                t.issue("name", f'duplicate bus name "{bus.name}" (also {_at(first, "name")})')
            else:
                names[bus.name] = t
            if bus.port not in ports:
                ports[bus.port] = (t, bus)
                continue
            first, other = ports[bus.port]
            for key in ("baud", "parity"):
                mine, theirs = getattr(bus, key), getattr(other, key)
                if mine != theirs:
                    t.issue(
                        key,
                        f'port "{bus.port}" is also used by bus "{other.name}" '
                        f"({_at(first, key)}) with {key} {theirs}, here {mine}: "
                        "buses on one port must agree on baud and parity",
                    )

    def meter(self, t: _Table, buses: list[tuple[_Table, BusConfig | None]]) -> MeterConfig | None:
        t.unknown_keys(_METER_KEYS)
        failed: list[bool] = []
        protocol = _optional(lambda: t.choice("protocol", ("dlt645", "modbus")), failed)
        address = _optional(lambda: t.string("address"), failed)
        problem = None if address is None else _address_problem(address, protocol)
        if problem is not None:
            t.issue("address", problem)
            failed.append(True)
        bus = _optional(lambda: t.string("bus"), failed)
        known = [b.name for _, b in buses if b is not None]
        unparsed = [x.data.get("name") for x, b in buses if b is None]
        if bus is not None and bus not in known and bus not in unparsed:
            listed = ", ".join(f'"{n}"' for n in known) or "none defined"
            t.issue("bus", f'no [[bus]] is named "{bus}" (buses: {listed})')
            failed.append(True)
        on_plc = any(b is not None and b.name == bus and b.type == "plc" for _, b in buses)
        if on_plc and protocol == "modbus":
            t.issue("protocol", f'bus "{bus}" is a carrier (PLC) bus: only DL/T 645 meters')
            failed.append(True)
        group = _optional(lambda: t.string("group", "default"), failed)
        area = _optional(lambda: t.string("area", None), failed)
        level = _optional(lambda: t.integer("password_level", 0, 99, None), failed)
        password = _optional(
            lambda: t.pattern("password", re.compile(r"[0-9A-Fa-f]{6}"), "6 hex digits", None),
            failed,
        )
        operator = _optional(
            lambda: t.pattern("operator", re.compile(r"[0-9A-Fa-f]{8}"), "8 hex digits", None),
            failed,
        )
        model: str | None = None
        if protocol == "modbus":
            model = _optional(lambda: t.choice("model", METER_MODELS, "sdm630"), failed)
        elif "model" in t.data and protocol is not None:
            t.issue("model", "only Modbus meters have a register-map model")
            failed.append(True)
        if failed or None in (protocol, address, bus, group):
            return None
        return MeterConfig(
            address=cast(str, address),
            protocol=cast(Literal["dlt645", "modbus"], protocol),
            bus=cast(str, bus),
            group=cast(str, group),
            area=area,
            password_level=level,
            password=password,
            operator=operator,
            model=model,
        )

    def check_duplicate_meters(self, meters: list[tuple[_Table, MeterConfig | None]]) -> None:
        on_bus: dict[tuple[str, str], _Table] = {}
        dlt645_anywhere: dict[str, _Table] = {}
        for t, meter in meters:
            if meter is None:
                continue
            key = (meter.bus, meter.address)
            if key in on_bus:
                first = on_bus[key]
                t.issue(
                    "address",
                    f'duplicate address "{meter.address}" on bus "{meter.bus}": '
                    f"{t.prefix} at line {t.line('address')} and "
                    f"{first.prefix} at line {first.line('address')}",
                )
                continue
            on_bus[key] = t
            if meter.protocol != "dlt645":
                continue
            # A DL/T 645 address is the meter's identity in the readings and upstream, so
            # it must be unique across buses too (same meter configured twice).
            if meter.address in dlt645_anywhere:
                first = dlt645_anywhere[meter.address]
                t.issue(
                    "address",
                    f'duplicate DL/T 645 address "{meter.address}": '
                    f"{t.prefix} at line {t.line('address')} and "
                    f"{first.prefix} at line {first.line('address')} (on another bus)",
                )
            else:
                dlt645_anywhere[meter.address] = t

    def check_unique_names(self, tasks: list[tuple[_Table, TaskConfig | None]]) -> None:
        seen: dict[str, _Table] = {}
        for t, task in tasks:
            if task is None:
                continue
            if task.name in seen:
                first = seen[task.name]
                t.issue("name", f'duplicate task name "{task.name}" (also {_at(first, "name")})')
            else:
                seen[task.name] = t

    def task(self, t: _Table, meters: list[tuple[_Table, MeterConfig | None]]) -> TaskConfig | None:
        t.unknown_keys(
            _TASK_KEYS,
            special={
                "action": "tasks only read meters; relay switching is a downlink command, "
                "not a scheduled task (set relay = true to require relay passwords)"
            },
        )
        failed: list[bool] = []
        name = _optional(lambda: t.string("name"), failed)
        quantities = _optional(lambda: t.string_list("quantities"), failed)
        if quantities == ():
            t.issue("quantities", "must name at least one quantity")
            failed.append(True)
        every_text = _optional(lambda: t.string("every"), failed)
        every: Cadence | None = None
        if every_text is not None:
            try:
                every = parse_cadence(every_text)
            except ValueError as exc:
                t.issue("every", str(exc))
                failed.append(True)
        groups = _optional(lambda: t.string_list("groups", ("*",)), failed)
        if groups == ():
            t.issue("groups", 'must name at least one group ("*" = all meters)')
            failed.append(True)
        retries = _optional(lambda: t.integer("retries", 0, 10, 2), failed)
        backoff = _optional(
            lambda: t.number("retry_backoff_s", positive=False, default=2.0), failed
        )
        backfill = _optional(lambda: t.boolean("backfill", True), failed)
        relay = _optional(lambda: t.boolean("relay", False), failed)
        if name is not None and quantities and groups and relay is not None:
            self.check_task_meters(t, name, quantities, groups, relay, meters)
        if failed or None in (name, quantities, every, groups, retries, backoff, backfill, relay):
            return None
        return TaskConfig(
            name=cast(str, name),
            quantities=cast(tuple[str, ...], quantities),
            every=cast(Cadence, every),
            groups=cast(tuple[str, ...], groups),
            retries=cast(int, retries),
            retry_backoff_s=cast(float, backoff),
            backfill=cast(bool, backfill),
            relay=cast(bool, relay),
        )

    def check_task_meters(
        self,
        t: _Table,
        name: str,
        quantities: tuple[str, ...],
        groups: tuple[str, ...],
        relay: bool,
        meters: list[tuple[_Table, MeterConfig | None]],
    ) -> None:
        applied = [
            (mt, m) for mt, m in meters if m is not None and ("*" in groups or m.group in groups)
        ]
        # Groups of every [[meter]], valid or not: one bad meter must not cascade.
        known_groups = {mt.data.get("group", "default") for mt, _ in meters}
        for group in groups:
            if group != "*" and group not in known_groups:
                t.issue("groups", f'no meter is in group "{group}"')
        # One issue per (quantity, meter kind), not per meter: a typo must not print a
        # thousand lines on a site with a thousand meters.
        kinds: dict[tuple[str, str | None], list[_Table]] = {}
        for mt, m in applied:
            kinds.setdefault((m.protocol, m.model), []).append(mt)
        for (protocol, model), tables in kinds.items():
            kind = "DL/T 645" if protocol == "dlt645" else f"Modbus {model}"
            for quantity in quantities:
                if not _resolves(quantity, protocol, model):
                    t.issue(
                        "quantities",
                        f'unknown quantity "{quantity}" for {kind} meters '
                        f"(e.g. {_at(tables[0], None)}, {len(tables)} meter(s))",
                    )
        if relay:
            for mt, m in applied:
                if not m.has_relay_credentials:
                    missing = [
                        k
                        for k in ("password_level", "password", "operator")
                        if getattr(m, k) is None
                    ]
                    mt.issue(
                        missing[0],
                        f'meter "{m.address}": missing passwords for relay tasks: '
                        f'task "{name}" '
                        f"({_at(t, 'relay')}) has relay = true; set {', '.join(missing)}",
                    )


def _at(t: _Table, key: str | None) -> str:
    line = t.line(key)
    return t.prefix if line is None else f"{t.prefix} at line {line}"


def _address_problem(address: str, protocol: str | None) -> str | None:
    if protocol == "dlt645" and not _DLT645_ADDRESS_RE.fullmatch(address):
        return f"{_show(address)} is not a 12-digit DL/T 645 address"
    if protocol == "modbus" and not (address.isdigit() and 1 <= int(address) <= 247):
        return f"{_show(address)} is not a Modbus slave id 1..247"
    return None


def _resolves(quantity: str, protocol: str, model: str | None) -> bool:
    if protocol == "dlt645":
        try:
            dlt645.lookup(quantity)
        except (KeyError, ValueError):
            return False
        return True
    return quantity in METER_MODELS.get(model or "sdm630", {})


_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)$")


def _load(path: Path) -> tuple[Config | None, list[ConfigIssue]]:
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [ConfigIssue(file, None, "file", f"cannot read: {exc}")]
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        m = _TOML_AT.search(message)
        if m is not None:
            line: int | None = int(m[1])
            message = f"{message[: m.start()].rstrip()} (column {m[2]})"
        else:
            line = max(1, len(text.splitlines()))
        return None, [ConfigIssue(file, line, "toml", f"syntax error: {message}")]
    checker = _Checker(path, text)
    config = checker.run(doc)
    # In file order, so the list reads like the file; issues without a line go first.
    return config, sorted(checker.issues, key=lambda i: i.line or 0)


def fields_from_table(cls: Any, doc: Mapping[str, object], base: Path) -> dict[str, Any]:
    """Keyword arguments for dataclass ``cls`` from a TOML table, checked against its
    field types (Path, int, float, str); relative paths are relative to ``base`` (the
    config file's folder). ValueError names the key and what was expected."""
    fields = cls.__dataclass_fields__
    unknown = sorted(set(doc) - set(fields))
    if unknown:
        raise ValueError(
            f"unknown key(s) {', '.join(unknown)}; expected some of {', '.join(sorted(fields))}"
        )
    kw: dict[str, Any] = {}
    for name, field_ in fields.items():
        if name not in doc:
            if field_.default is MISSING:  # required
                raise ValueError(f"missing key {name!r}")
            continue
        value = doc[name]
        kind = field_.type
        if kind in ("Path", "Path | None"):
            if not isinstance(value, str):
                raise ValueError(f"{name}: expected a path string, got {value!r}")
            kw[name] = (base / value) if not Path(value).is_absolute() else Path(value)
        elif kind == "int":
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name}: expected a non-negative integer, got {value!r}")
            kw[name] = value
        elif kind == "float":
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}: expected a positive number, got {value!r}")
            kw[name] = float(value)
        else:
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name}: expected a non-empty string, got {value!r}")
            kw[name] = value
    return kw
