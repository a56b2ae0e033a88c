"""The one checker of the configuration file: TOML in, a `Config` or every issue out.

A field engineer edits this file on site, often over a slow console, so a check reports
*every* problem at once, each as ``FILE:LINE: FIELD: message`` (`LineIndex` finds the
lines ``tomllib`` does not keep). Fields are named as in the file, with 0-based indices
into arrays of tables: ``meter[3].address`` is the ``address`` key of the fourth
``[[meter]]``. The services tables are checked by `concentrator.config.services`,
through the same tables and the same list of issues.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from concentrator.config import services
from concentrator.config.carrier import carrier_identity
from concentrator.config.issues import ConfigError, ConfigIssue
from concentrator.config.lines import LineIndex, TableId
from concentrator.config.model import (
    DEFAULT_CONTROL_SOCKET,
    BusConfig,
    Cadence,
    ConcentratorSection,
    Config,
    MeterConfig,
    StorageSection,
    TaskConfig,
    parse_cadence,
)
from concentrator.config.quantities import quantity_problem, renamed
from concentrator.config.table import (
    REQUIRED,
    Report,
    Table,
    optional,
    resolve,
    resolve_port,
    show,
    type_name,
)
from contract.timezone import parse_utc_offset
from drivers.meter_ids import address_problem
from drivers.meter_quantities import kind_name
from drivers.modbus_rtu import METER_MODELS
from drivers.serial_bus import Parity, baud_problem

PROTOCOLS = ("dlt645", "dlt645-1997", "dlt698", "modbus")

T = TypeVar("T")

# sun_path holds 108 bytes on Linux, the terminating NUL included.
MAX_SOCKET_PATH_BYTES = 107

_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")

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
    "metrics",
)
# The config file format this software reads. A file may say ``format = N`` at the top
# (1 when absent); an update package states the lowest format it reads, and is refused
# by a concentrator whose file is older.
CONFIG_FORMAT = 1
_CONCENTRATOR_KEYS = ("id", "timezone", "control_socket", "commissioning")
_STORAGE_KEYS = ("path", "quota_mb", "synchronous", "retention_days", "key_file")
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
    "master_address",
    "comm_mode",
)
_PLC_ONLY_KEYS = ("monitor_timeout_ms", "max_in_flight", "retries", "master_address", "comm_mode")

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


def load_config(path: Path, *, keys: bool = True) -> Config:
    """The configuration in ``path``, or `ConfigError` with every issue. Its warnings
    (a serial port not there yet) are in ``Config.warnings``. ``keys=False`` leaves the
    key files of ``[uplink]`` and ``[update]`` unread, for commands that do not use
    them (``stats``): they may run as a user who cannot read them."""
    config, issues = _load(Path(path), keys=keys)
    errors = [i for i in issues if i.severity == "error"]
    if config is None or errors:
        raise ConfigError(errors, [i for i in issues if i.severity == "warning"])
    return config


def check_config(path: Path, *, warnings: bool = False) -> list[ConfigIssue]:
    """Every error of the file (with ``warnings``: the warnings too), in file order."""
    issues = _load(Path(path))[1]
    return [i for i in issues if warnings or i.severity == "error"]


class _Checker:
    """Reads every table of one file into the model, reporting every problem."""

    def __init__(self, path: Path, text: str, *, keys: bool = True) -> None:
        self.path = path
        # Every relative path of the file is relative to its folder (`table.resolve`).
        self.base = path.absolute().parent
        self.report = Report(str(path), LineIndex(text), keys=keys)
        self.index = self.report.index

    @property
    def issues(self) -> list[ConfigIssue]:
        return self.report.issues

    def add(self, line: int | None, field_name: str, message: str) -> None:
        self.report.add(line, field_name, message)

    def table(self, data: Mapping[str, Any], table: TableId, prefix: str) -> Table:
        return Table(self.report, data, table, prefix, self.base)

    # -- sections

    def run(self, doc: dict[str, Any]) -> Config | None:
        top = self.table(doc, ("", None), "")
        top.unknown_keys(_TOP_KEYS)
        concentrator = self.concentrator(doc)
        storage = self.storage(doc)
        buses = self.array(doc, "bus", self.bus)
        self.check_ports(buses)
        meters = self.array(doc, "meter", lambda t: self.meter(t, buses))
        self.check_duplicate_meters(meters)
        tasks = self.array(doc, "task", lambda t: self.task(t, meters))
        self.check_unique_names(tasks)
        uplink = self.service(top, "uplink", services.uplink)
        modem = self.service(top, "modem", services.modem)
        has_uplink = bool(doc.get("uplink"))
        update = self.service(top, "update", lambda t: services.update(t, has_uplink=has_uplink))
        metrics = self.service(top, "metrics", services.metrics, empty_is_absent=False)
        fmt = doc.get("format", 1)
        if not isinstance(fmt, int) or isinstance(fmt, bool) or not 1 <= fmt <= CONFIG_FORMAT:
            top.issue(
                "format",
                f"config format {fmt!r}: this software reads formats 1..{CONFIG_FORMAT}",
            )
        if self.report.errors or concentrator is None or storage is None:
            return None
        return Config(
            concentrator=concentrator,
            storage=storage,
            buses=tuple(b for _, b in buses if b is not None),
            meters=tuple(m for _, m in meters if m is not None),
            tasks=tuple(t for _, t in tasks if t is not None),
            uplink=uplink,
            modem=modem,
            update=update,
            metrics=metrics,
            format=fmt if isinstance(fmt, int) else 1,
            warnings=tuple(i for i in self.issues if i.severity == "warning"),
        )

    def service(
        self,
        top: Table,
        name: str,
        build: Callable[[Table], T | None],
        *,
        empty_is_absent: bool = True,
    ) -> T | None:
        """An optional services table; absent (or empty, unless ``empty_is_absent`` is
        False: then its required keys are reported), the service is not configured."""
        data = top.data.get(name, {})
        if not isinstance(data, dict):
            top.issue(name, f"expected a table [{name}], got {type_name(data)}")
            return None
        if name not in top.data or (not data and empty_is_absent):
            return None
        return build(self.table(data, (name, None), name))

    def section(self, doc: dict[str, Any], name: str) -> Table | None:
        if name not in doc:
            self.add(None, name, f"required table [{name}] is missing")
            return None
        data = doc[name]
        if not isinstance(data, dict):
            self.add(self.index.line(("", None), name), name, f"expected a table [{name}]")
            return None
        return self.table(data, (name, None), name)

    def array(
        self, doc: dict[str, Any], name: str, build: Callable[[Table], T | None]
    ) -> list[tuple[Table, T | None]]:
        """Each ``[[name]]`` entry with what ``build`` made of it (None when invalid)."""
        data = doc.get(name, [])
        if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
            line = self.index.line(("", None), name) or self.index.line((name, None))
            self.add(line, name, f"expected [[{name}]] entries (an array of tables)")
            return []
        out = []
        for i, entry in enumerate(data):
            table = self.table(entry, (name, i), f"{name}[{i}]")
            out.append((table, build(table)))
        return out

    def concentrator(self, doc: dict[str, Any]) -> ConcentratorSection | None:
        t = self.section(doc, "concentrator")
        if t is None:
            return None
        t.unknown_keys(_CONCENTRATOR_KEYS)
        failed: list[bool] = []
        id_ = optional(
            lambda: t.pattern("id", _ID_RE, "1..64 characters of A-Z a-z 0-9 . _ -"), failed
        )
        tz = optional(lambda: t.string("timezone", "+08:00"), failed)
        if tz is not None and parse_utc_offset(tz) is None:
            t.issue("timezone", f'{show(tz)} is not a UTC offset such as "+08:00"')
            failed.append(True)
        socket_text = optional(lambda: t.string("control_socket", None), failed)
        control_socket = DEFAULT_CONTROL_SOCKET
        if socket_text is not None:
            # Relative to the config file, as every path of the file.
            control_socket = resolve(self.base, socket_text)
            size = len(os.fsencode(control_socket))
            if not socket_text:
                t.issue("control_socket", "must not be empty")
                failed.append(True)
            elif size > MAX_SOCKET_PATH_BYTES:
                t.issue(
                    "control_socket",
                    f"{show(str(control_socket))} is {size} bytes long; a Unix socket "
                    f"path holds at most {MAX_SOCKET_PATH_BYTES}",
                )
                failed.append(True)
        commissioning = optional(lambda: t.boolean("commissioning", False), failed)
        if failed or id_ is None or tz is None:
            return None
        return ConcentratorSection(id_, tz, control_socket, bool(commissioning))

    def storage(self, doc: dict[str, Any]) -> StorageSection | None:
        t = self.section(doc, "storage")
        if t is None:
            return None
        t.unknown_keys(_STORAGE_KEYS)
        failed: list[bool] = []
        path = optional(lambda: t.string("path"), failed)
        quota = optional(lambda: t.integer("quota_mb", 1, None, None), failed)
        sync = optional(lambda: t.choice("synchronous", ("FULL", "NORMAL"), "FULL"), failed)
        retention = optional(lambda: t.number("retention_days", positive=True, default=7.0), failed)
        key_file = services.store_key_file(t, failed)
        if failed or path is None or sync is None or retention is None:
            return None
        store = resolve(self.base, path)
        # The daemon creates the database (and its status file beside it), not folders:
        # a folder that is not there is a mistyped path, not something to conjure up.
        if store.is_dir():
            t.issue("path", f"{store} is a folder; expected the database file in it")
            return None
        if not store.parent.is_dir():
            what = "is not a folder" if store.parent.exists() else "does not exist"
            t.issue("path", f"{store}: the folder {store.parent} {what}")
            return None
        return StorageSection(
            path=store,
            quota_mb=quota,
            synchronous=cast(Literal["FULL", "NORMAL"], sync),
            retention_days=retention,
            key_file=key_file,
        )

    def bus(self, t: Table) -> BusConfig | None:
        t.unknown_keys(_BUS_KEYS)
        failed: list[bool] = []
        name = optional(lambda: t.string("name"), failed)
        type_ = optional(lambda: t.choice("type", ("rs485", "plc")), failed)
        plc = type_ == "plc"
        if type_ == "rs485":
            for key in _PLC_ONLY_KEYS:
                if key in t.data:
                    t.issue(key, 'only power-line carrier buses (type = "plc") take this key')
                    failed.append(True)
        elif plc and "rs485" in t.data:
            t.issue("rs485", "a carrier module's UART is not an RS-485 line")
            failed.append(True)
        port = optional(lambda: t.string("port"), failed)
        # A carrier module's UART runs 9600 8E1 unless its vendor says otherwise.
        baud = optional(lambda: t.integer("baud", 0, None, 9600 if plc else REQUIRED), failed)
        if baud is not None and (problem := baud_problem(baud)) is not None:
            t.issue("baud", problem)
            failed.append(True)
        parity = optional(
            lambda: t.choice("parity", ("E", "N", "O"), "E" if plc else REQUIRED), failed
        )
        # The module answers its own commands at once; a meter read is the slow part.
        timeout = optional(
            lambda: t.integer("response_timeout_ms", 20, 60000, 5000 if plc else 600), failed
        )
        gap = optional(lambda: t.integer("inter_frame_gap_ms", 0, 1000, 5), failed)
        rs485 = optional(lambda: t.boolean("rs485", False), failed)
        monitor = optional(lambda: t.integer("monitor_timeout_ms", 1000, 600_000, 90_000), failed)
        in_flight = optional(lambda: t.integer("max_in_flight", 1, 16, 1), failed)
        retries = optional(lambda: t.integer("retries", 0, 100, 6), failed)
        master, comm_mode = carrier_identity(t, failed)
        if failed or None in (name, port, baud, parity, timeout, gap, rs485, monitor):
            return None
        port = resolve_port(self.base, cast(str, port))
        t.serial_port("port", port)
        return BusConfig(
            name=cast(str, name),
            port=port,
            baud=cast(int, baud),
            parity=cast(Parity, parity),
            type=cast(Literal["rs485", "plc"], type_),
            response_timeout_ms=cast(int, timeout),
            inter_frame_gap_ms=cast(int, gap),
            rs485=cast(bool, rs485),
            monitor_timeout_ms=cast(int, monitor),
            max_in_flight=cast(int, in_flight),
            retries=cast(int, retries),
            master_address=master,
            comm_mode=comm_mode,
        )

    def check_ports(self, buses: list[tuple[Table, BusConfig | None]]) -> None:
        """Bus names are unique; buses sharing a port share its line settings.

        Two meters on one port at different baud rates (a common site mistake) show up
        here as two [[bus]] entries naming the same port with different settings: one
        UART cannot run at two speeds, so one of them would never answer.
        """
        names: dict[str, Table] = {}
        ports: dict[str, tuple[Table, BusConfig]] = {}
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

    def meter(self, t: Table, buses: list[tuple[Table, BusConfig | None]]) -> MeterConfig | None:
        t.unknown_keys(_METER_KEYS)
        failed: list[bool] = []
        protocol = optional(lambda: t.choice("protocol", PROTOCOLS), failed)
        address = optional(lambda: t.string("address"), failed)
        problem = None if address is None else _address_problem(address, protocol)
        if problem is not None:
            t.issue("address", problem)
            failed.append(True)
        bus = optional(lambda: t.string("bus"), failed)
        known = [b.name for _, b in buses if b is not None]
        unparsed = [x.data.get("name") for x, b in buses if b is None]
        if bus is not None and bus not in known and bus not in unparsed:
            listed = ", ".join(f'"{n}"' for n in known) or "none defined"
            t.issue("bus", f'no [[bus]] is named "{bus}" (buses: {listed})')
            failed.append(True)
        on_plc = any(b is not None and b.name == bus and b.type == "plc" for _, b in buses)
        if on_plc and protocol == "modbus":
            t.issue(
                "protocol",
                f'bus "{bus}" is a carrier (PLC) bus: only DL/T 645 and DL/T 698.45 meters',
            )
            failed.append(True)
        group = optional(lambda: t.string("group", "default"), failed)
        area = optional(lambda: t.string("area", None), failed)
        level = optional(lambda: t.integer("password_level", 0, 99, None), failed)
        password = optional(
            lambda: t.pattern("password", re.compile(r"[0-9A-Fa-f]{6}"), "6 hex digits", None),
            failed,
        )
        operator = optional(
            lambda: t.pattern("operator", re.compile(r"[0-9A-Fa-f]{8}"), "8 hex digits", None),
            failed,
        )
        model: str | None = None
        if protocol == "modbus":
            model = optional(lambda: t.choice("model", METER_MODELS, "sdm630"), failed)
        elif "model" in t.data and protocol is not None:
            t.issue("model", "only Modbus meters have a register-map model")
            failed.append(True)
        if failed or None in (protocol, address, bus, group):
            return None
        # The values thousands of meters repeat are kept once (sys.intern): TOML gives
        # every occurrence its own string (about 0.5 MB at 2,048 meters).
        return MeterConfig(
            address=cast(str, address),
            protocol=cast(Literal["dlt645", "dlt645-1997", "dlt698", "modbus"], _once(protocol)),
            bus=sys.intern(cast(str, bus)),
            group=sys.intern(cast(str, group)),
            area=_once(area),
            password_level=level,
            password=_once(password),
            operator=_once(operator),
            model=_once(model),
        )

    def check_duplicate_meters(self, meters: list[tuple[Table, MeterConfig | None]]) -> None:
        on_bus: dict[tuple[str, str], Table] = {}
        dlt645_anywhere: dict[str, Table] = {}
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
            if meter.protocol == "modbus":
                continue
            # A DL/T address is the meter's identity in the readings and upstream, so
            # it must be unique across buses too (same meter configured twice).
            if meter.address in dlt645_anywhere:
                first = dlt645_anywhere[meter.address]
                t.issue(
                    "address",
                    f'duplicate {kind_name(meter.protocol)} address "{meter.address}": '
                    f"{t.prefix} at line {t.line('address')} and "
                    f"{first.prefix} at line {first.line('address')} (on another bus)",
                )
            else:
                dlt645_anywhere[meter.address] = t

    def check_unique_names(self, tasks: list[tuple[Table, TaskConfig | None]]) -> None:
        seen: dict[str, Table] = {}
        for t, task in tasks:
            if task is None:
                continue
            if task.name in seen:
                first = seen[task.name]
                t.issue("name", f'duplicate task name "{task.name}" (also {_at(first, "name")})')
            else:
                seen[task.name] = t

    def task(self, t: Table, meters: list[tuple[Table, MeterConfig | None]]) -> TaskConfig | None:
        t.unknown_keys(
            _TASK_KEYS,
            special={
                "action": "tasks only read meters; relay switching is a downlink command, "
                "not a scheduled task (set relay = true to require relay passwords)"
            },
        )
        failed: list[bool] = []
        name = optional(lambda: t.string("name"), failed)
        quantities = optional(lambda: t.string_list("quantities"), failed)
        if quantities == ():
            t.issue("quantities", "must name at least one quantity")
            failed.append(True)
        elif quantities is not None:
            quantities, warnings = renamed(quantities)
            for warning in warnings:
                t.warn("quantities", warning)
        every_text = optional(lambda: t.string("every"), failed)
        every: Cadence | None = None
        if every_text is not None:
            try:
                every = parse_cadence(every_text)
            except ValueError as exc:
                t.issue("every", str(exc))
                failed.append(True)
        groups = optional(lambda: t.string_list("groups", ("*",)), failed)
        if groups == ():
            t.issue("groups", 'must name at least one group ("*" = all meters)')
            failed.append(True)
        retries = optional(lambda: t.integer("retries", 0, 10, 2), failed)
        backoff = optional(lambda: t.number("retry_backoff_s", positive=False, default=2.0), failed)
        backfill = optional(lambda: t.boolean("backfill", True), failed)
        relay = optional(lambda: t.boolean("relay", False), failed)
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
        t: Table,
        name: str,
        quantities: tuple[str, ...],
        groups: tuple[str, ...],
        relay: bool,
        meters: list[tuple[Table, MeterConfig | None]],
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
        kinds: dict[tuple[str, str | None], list[Table]] = {}
        for mt, m in applied:
            kinds.setdefault((m.protocol, m.model), []).append(mt)
        for (protocol, model), tables in kinds.items():
            kind = kind_name(protocol, model)
            for quantity in quantities:
                problem = quantity_problem(quantity, protocol, model)
                if problem is not None:
                    t.issue(
                        "quantities",
                        f'unknown quantity "{quantity}" for {kind} meters '
                        f"(e.g. {_at(tables[0], None)}, {len(tables)} meter(s)){problem}",
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


def _at(t: Table, key: str | None) -> str:
    line = t.line(key)
    return t.prefix if line is None else f"{t.prefix} at line {line}"


def _address_problem(address: str, protocol: str | None) -> str | None:
    return None if protocol is None else address_problem(protocol, address)


_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)$")


def _load(path: Path, *, keys: bool = True) -> tuple[Config | None, list[ConfigIssue]]:
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
    checker = _Checker(path, text, keys=keys)
    config = checker.run(doc)
    # In file order, so the list reads like the file; issues without a line go first.
    return config, sorted(checker.issues, key=lambda i: i.line or 0)


def _once(text: str | None) -> str | None:
    return None if text is None else sys.intern(text)
