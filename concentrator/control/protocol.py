"""The control protocol, version 1: what the field CLI and the daemon say to each other.

Newline-delimited JSON, UTF-8, one JSON object per line::

    request   {"v": 1, "id": 7, "cmd": "read", "args": {"meter": "000000000001"}}
    answer    {"v": 1, "id": 7, "result": {...}}
          or  {"v": 1, "id": 7, "error": {"code": "unknown_meter", "message": "..."}}

``id`` (a string, an integer or null) is echoed. ``args`` may be left out when a
command takes none. A streaming command (``backfill``, ``logs``) first sends any number
of ``{"v": 1, "id": 7, "progress": {...}}`` or ``{"v": 1, "id": 7, "log": {...}}``
lines; the last line of every answer has ``result`` or ``error``. A connection may
carry several requests; they are answered one after another, in order. Blank lines
are ignored. A line longer than ``MAX_LINE`` bytes is answered with ``line_too_long``
and the connection is closed (the rest of that line cannot be told from a request);
every other malformed request gets its own error and the connection stays open.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from concentrator.errors import ConcentratorError
from drivers.errors import BusError, BusTimeout, DriverError, EncodeError, FrameError, MeterError

PROTOCOL_VERSION = 1
MAX_LINE = 64 * 1024  # bytes in one request line; a request is a few hundred
SOCKET_MODE = 0o660
SOCKET_GROUP = "meterflow"


class ErrorCode(StrEnum):
    # The request itself is wrong (a client bug, or a CLI newer than the daemon).
    BAD_JSON = "bad_json"
    BAD_REQUEST = "bad_request"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_COMMAND = "unknown_command"
    LINE_TOO_LONG = "line_too_long"
    # The request is well formed, but cannot be done as asked.
    BAD_ARGUMENT = "bad_argument"  # unknown quantity, bus or date
    UNKNOWN_METER = "unknown_meter"
    REFUSED = "refused"  # not allowed or not possible here (no relay password, no uplink)
    # The bus or the meter failed (as the drivers' error tree splits it).
    NO_REPLY = "no_reply"
    GARBLED = "garbled"
    METER_ERROR = "meter_error"
    BUS_ERROR = "bus_error"
    FAILED = "failed"  # another driver failure (e.g. a freeze the meter no longer holds)
    # The daemon.
    STOPPING = "stopping"
    INTERNAL = "internal"


class ControlError(ConcentratorError):
    """An error answer: raised by the server's commands, and by the client on receiving one."""

    def __init__(self, code: ErrorCode | str, message: str) -> None:
        super().__init__(message)
        self.code = str(code)
        self.message = message
        self.request_id: RequestId = None

    def as_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


RequestId = str | int | None


def error_for(exc: DriverError) -> ControlError:
    if isinstance(exc, BusTimeout):
        code = ErrorCode.NO_REPLY
    elif isinstance(exc, FrameError):
        code = ErrorCode.GARBLED
    elif isinstance(exc, MeterError):
        code = ErrorCode.METER_ERROR
    elif isinstance(exc, BusError):
        code = ErrorCode.BUS_ERROR
    elif isinstance(exc, EncodeError):
        code = ErrorCode.BAD_ARGUMENT
    else:
        code = ErrorCode.FAILED
    return ControlError(code, str(exc))


# ---------------------------------------------------------------------- requests

# Every command and the arguments it takes (anything else is a bad request).
COMMANDS: dict[str, tuple[str, ...]] = {
    "status": (),
    "meters": ("offline", "bus"),
    "read": ("meter", "quantities"),
    "relay": ("meter", "action"),
    "time-sync": (),
    "events": ("since", "until", "kind", "limit"),
    "buffer": (),
    "flush": (),
    "backfill": ("meter", "from", "to"),
    "logs": ("lines", "follow", "since", "until"),
    "commissioning": ("mode",),
}
_ENVELOPE = ("v", "id", "cmd", "args")


@dataclass(frozen=True)
class Request:
    id: RequestId
    cmd: str
    args: dict[str, Any] = field(default_factory=dict)


def parse_request(line: bytes) -> Request:
    """One request line, checked as far as it can be without the daemon; else ControlError
    (with ``request_id`` set whenever the line carried a usable id)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as exc:
        reason = f"not UTF-8 text: {exc.reason} at byte {exc.start}"
        raise ControlError(ErrorCode.BAD_JSON, reason) from None
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: "[[[[..." nested too deep
        raise ControlError(ErrorCode.BAD_JSON, f"not a JSON line: {short(str(exc))}") from None
    if not isinstance(doc, dict):
        raise ControlError(ErrorCode.BAD_REQUEST, "a request is a JSON object")
    request_id = doc.get("id")
    if not (request_id is None or isinstance(request_id, str | int)) or isinstance(
        request_id, bool
    ):
        raise ControlError(ErrorCode.BAD_REQUEST, '"id" must be a string, an integer or null')
    try:
        return _check_request(doc, request_id)
    except ControlError as exc:
        exc.request_id = request_id
        raise


def _check_request(doc: dict[str, Any], request_id: RequestId) -> Request:
    unknown = sorted(set(doc) - set(_ENVELOPE))
    if unknown:
        raise ControlError(
            ErrorCode.BAD_REQUEST,
            f"unknown field(s) {', '.join(map(repr, unknown))}; a request has v, id, cmd, args",
        )
    if "v" not in doc:
        raise ControlError(
            ErrorCode.BAD_REQUEST, f'missing field "v" (the protocol version, {PROTOCOL_VERSION})'
        )
    version = doc["v"]
    if version != PROTOCOL_VERSION or isinstance(version, bool):
        raise ControlError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {short(json.dumps(version))} is not supported; "
            f"this daemon speaks version {PROTOCOL_VERSION}",
        )
    cmd = doc.get("cmd")
    if not isinstance(cmd, str):
        raise ControlError(ErrorCode.BAD_REQUEST, 'missing field "cmd" (a string)')
    if cmd not in COMMANDS:
        raise ControlError(
            ErrorCode.UNKNOWN_COMMAND,
            f"unknown command {short(json.dumps(cmd))}; commands: {', '.join(COMMANDS)}",
        )
    args = doc.get("args", {})
    if not isinstance(args, dict):
        raise ControlError(ErrorCode.BAD_REQUEST, f'{cmd}: "args" must be a JSON object')
    allowed = COMMANDS[cmd]
    extra = sorted(set(args) - set(allowed))
    if extra:
        expected = ", ".join(allowed) if allowed else "none"
        raise ControlError(
            ErrorCode.BAD_REQUEST,
            f"{cmd}: unknown argument(s) {', '.join(map(repr, extra))} (expected: {expected})",
        )
    return Request(request_id, cmd, args)


def short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Args:
    """Typed access to one request's ``args``; a wrong type is a bad request."""

    def __init__(self, cmd: str, data: dict[str, Any]) -> None:
        self.cmd = cmd
        self.data = data

    def _bad(self, name: str, expected: str) -> ControlError:
        got = short(json.dumps(self.data[name]))
        return ControlError(
            ErrorCode.BAD_REQUEST, f"{self.cmd}: {name}: expected {expected}, got {got}"
        )

    def _missing(self, name: str) -> ControlError:
        return ControlError(ErrorCode.BAD_REQUEST, f'{self.cmd}: missing argument "{name}"')

    def string(self, name: str) -> str:
        if name not in self.data:
            raise self._missing(name)
        value = self.data[name]
        if not isinstance(value, str) or not value:
            raise self._bad(name, "a non-empty string")
        return value

    def optional_string(self, name: str) -> str | None:
        return None if self.data.get(name) is None else self.string(name)

    def strings(self, name: str) -> list[str]:
        value = self.data.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise self._bad(name, "an array of non-empty strings")
        return list(value)

    def boolean(self, name: str) -> bool:
        value = self.data.get(name, False)
        if not isinstance(value, bool):
            raise self._bad(name, "true or false")
        return value

    def integer(self, name: str, default: int, lo: int, hi: int) -> int:
        value = self.data.get(name, default)
        if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
            raise self._bad(name, f"an integer {lo}..{hi}")
        return value

    def time(self, name: str, now: float, tz: dt.tzinfo) -> float | None:
        if self.data.get(name) is None:
            return None
        value = self.data[name]
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self._bad(name, "a time (unix seconds or text)")
        return parse_time(value, now, tz)

    def day(self, name: str) -> dt.date:
        text = self.string(name)
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise ControlError(
                ErrorCode.BAD_ARGUMENT, f'{name}: "{short(text)}" is not a date such as 2026-11-25'
            ) from None


_AGE_RE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_AGE_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_time(value: str | int | float, now: float, tz: dt.tzinfo) -> float:
    """Unix seconds, an ISO date or date-time (concentrator time unless it has an
    offset), or an age before ``now`` such as ``90m``, ``2h``, ``1d``."""
    if isinstance(value, int | float):
        t = float(value)
    elif m := _AGE_RE.fullmatch(value.strip()):
        t = now - float(m[1]) * _AGE_UNITS[m[2]]
    else:
        text = value.strip()
        try:
            t = float(text)
        except ValueError:
            try:
                when = dt.datetime.fromisoformat(text)
            except ValueError:
                raise ControlError(
                    ErrorCode.BAD_ARGUMENT,
                    f'"{short(text)}" is not a time: expected unix seconds, an ISO date or '
                    "time such as 2026-11-25T08:00 (concentrator time), or an age such as "
                    "90m, 2h, 1d",
                ) from None
            t = (when if when.tzinfo else when.replace(tzinfo=tz)).timestamp()
    if not math.isfinite(t):
        raise ControlError(ErrorCode.BAD_ARGUMENT, f"{value!r} is not a finite time")
    return t


def encode(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n").encode()


def answer(request_id: RequestId, key: str, payload: object) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": request_id, key: payload}
