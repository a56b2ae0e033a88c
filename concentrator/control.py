"""The daemon's local control API: how the field CLI talks to a running concentrator.

Transport. A Unix stream socket, never a network listener (design.md, Security model):
``[concentrator] control_socket`` or ``concentrator run --control-socket``, default
``/run/meterflow/concentrator.sock``. The socket is mode 0660 and belongs to group
``meterflow`` when that group exists, so only the service account and the field
engineers in that group can switch a relay. A stale socket left by a killed daemon is
replaced; one that a live daemon answers on is left alone.

Protocol, version 1. Newline-delimited JSON, UTF-8, one JSON object per line::

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

Anything that needs a bus goes through that bus's worker at on-demand priority
(``Daemon.read_now``, ``Daemon.run_on_bus``), between two transactions of the poller,
so a command never collides with a poll on the half-duplex line.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import grp
import json
import logging
import math
import os
import pwd
import re
import socket
import stat
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from concentrator.config import MeterConfig
from concentrator.meter_actions import (
    RELAY_ACTIONS,
    ActionRefused,
    broadcast_time,
    switch_relay,
)
from concentrator.storage import ReadSuccess, Store
from contract.records import Event
from drivers import dlt645
from drivers.errors import BusError, BusTimeout, DriverError, EncodeError, FrameError, MeterError
from drivers.modbus_rtu import METER_MODELS
from drivers.readers import QuantityValue

if TYPE_CHECKING:
    from concentrator.daemon import Daemon

log = logging.getLogger(__name__)

T = TypeVar("T")

PROTOCOL_VERSION = 1
MAX_LINE = 64 * 1024  # bytes in one request line; a request is a few hundred
SOCKET_MODE = 0o660
SOCKET_GROUP = "meterflow"
LOG_RING_LINES = 2000  # recent log lines kept in memory for `concentrator logs`
FOLLOW_QUEUE = 1000  # log lines held for a slow `logs --follow` client before dropping
READ_WITHIN_S = 60.0  # real seconds an on-demand read may wait for its bus
FLUSH_WRITER_S = 10.0  # how long a query waits for the writer to commit what it holds
MAX_EVENTS = 10_000
BACKFILL_MAX_DAYS = dlt645.MAX_DAILY_FREEZES


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


class ControlError(Exception):
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
    "events": ("since", "kind", "limit"),
    "buffer": (),
    "flush": (),
    "backfill": ("meter", "from", "to"),
    "logs": ("lines", "follow"),
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
        raise ControlError(ErrorCode.BAD_JSON, f"not a JSON line: {_short(str(exc))}") from None
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
            f"protocol version {_short(json.dumps(version))} is not supported; "
            f"this daemon speaks version {PROTOCOL_VERSION}",
        )
    cmd = doc.get("cmd")
    if not isinstance(cmd, str):
        raise ControlError(ErrorCode.BAD_REQUEST, 'missing field "cmd" (a string)')
    if cmd not in COMMANDS:
        raise ControlError(
            ErrorCode.UNKNOWN_COMMAND,
            f"unknown command {_short(json.dumps(cmd))}; commands: {', '.join(COMMANDS)}",
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


def _short(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Args:
    """Typed access to one request's ``args``; a wrong type is a bad request."""

    def __init__(self, cmd: str, data: dict[str, Any]) -> None:
        self.cmd = cmd
        self.data = data

    def _bad(self, name: str, expected: str) -> ControlError:
        got = _short(json.dumps(self.data[name]))
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
                ErrorCode.BAD_ARGUMENT, f'{name}: "{_short(text)}" is not a date such as 2026-11-25'
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
                    f'"{_short(text)}" is not a time: expected unix seconds, an ISO date or '
                    "time such as 2026-11-25T08:00 (concentrator time), or an age such as "
                    "90m, 2h, 1d",
                ) from None
            t = (when if when.tzinfo else when.replace(tzinfo=tz)).timestamp()
    if not math.isfinite(t):
        raise ControlError(ErrorCode.BAD_ARGUMENT, f"{value!r} is not a finite time")
    return t


def encode(doc: dict[str, Any]) -> bytes:
    return (json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n").encode()


def _answer(request_id: RequestId, key: str, payload: object) -> dict[str, Any]:
    return {"v": PROTOCOL_VERSION, "id": request_id, key: payload}


# ---------------------------------------------------------------------- log ring


class _Follower:
    """One `logs --follow` client: log lines hop from any thread into its event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[dict[str, object]] = asyncio.Queue(FOLLOW_QUEUE)
        self.dropped = 0

    def offer(self, line: dict[str, object]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self.loop.call_soon_threadsafe(self._put, line)

    def _put(self, line: dict[str, object]) -> None:
        try:
            self.queue.put_nowait(line)
        except asyncio.QueueFull:
            self.dropped += 1


class LogRing(logging.Handler):
    """The daemon's recent log lines in memory, for `concentrator logs` (with follow).

    Records arrive from every thread (the store writer, paho's network loop);
    ``logging`` calls ``emit`` under the handler's lock, which also guards the followers.
    """

    def __init__(self, capacity: int = LOG_RING_LINES) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self._lines: deque[dict[str, object]] = deque(maxlen=capacity)
        self._followers: list[_Follower] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line: dict[str, object] = {
                "at": record.created,
                "level": record.levelname,
                "logger": record.name,
                "text": self.format(record),
            }
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)
        for follower in self._followers:
            follower.offer(line)

    def recent(self, n: int) -> list[dict[str, object]]:
        self.acquire()
        try:
            return list(self._lines)[-n:] if n > 0 else []
        finally:
            self.release()

    def follow(self, n: int) -> tuple[list[dict[str, object]], _Follower]:
        """The last ``n`` lines and a follower for every later one, with no gap between."""
        follower = _Follower(asyncio.get_running_loop())
        self.acquire()
        try:
            self._followers.append(follower)
            return (list(self._lines)[-n:] if n > 0 else []), follower
        finally:
            self.release()

    def unfollow(self, follower: _Follower) -> None:
        self.acquire()
        try:
            with contextlib.suppress(ValueError):
                self._followers.remove(follower)
        finally:
            self.release()


# ---------------------------------------------------------------------- server


@dataclass
class Call:
    """One request being answered: where its lines go and who asked."""

    id: RequestId
    peer: dict[str, object]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, key: str, payload: object) -> None:
        self.writer.write(encode(_answer(self.id, key, payload)))
        await self.writer.drain()


Handler = Callable[["ControlServer", Call, Args], Awaitable[dict[str, Any]]]


class ControlServer:
    def __init__(self, daemon: Daemon, path: Path) -> None:
        self.daemon = daemon
        self.path = path
        # From the daemon's creation on, so the ring holds its start-up too.
        self.log_ring = LogRing()
        logging.getLogger().addHandler(self.log_ring)
        self._server: asyncio.AbstractServer | None = None
        self._connections: set[asyncio.Task[Any]] = set()
        self._inode: int | None = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        """Serve until cancelled. Without a socket the daemon still polls: a control
        socket it cannot bind is logged, not fatal (the readings matter more)."""
        try:
            try:
                sock = self._bind()
            except OSError as exc:
                log.error(
                    "no control socket at %s (the field CLI cannot reach this daemon): %s",
                    self.path,
                    exc,
                )
            else:
                self._server = await asyncio.start_unix_server(
                    self._connection, sock=sock, limit=MAX_LINE
                )
                log.info("control socket %s", self.path)
            await asyncio.Future()  # until the daemon stops
        finally:
            await self.close()

    def _bind(self) -> socket.socket:
        path = self.path
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(mode):
                raise OSError(f"{path} exists and is not a socket")
            if _answers(path):
                raise OSError(f"another daemon answers on {path}")
            path.unlink()  # left behind by a daemon that was killed
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        # Never group- or world-writable for a moment: the umask applies at bind().
        old = os.umask(0o777 & ~SOCKET_MODE)
        try:
            sock.bind(os.fspath(path))
        except OSError:
            sock.close()
            raise
        finally:
            os.umask(old)
        os.chmod(path, SOCKET_MODE)
        try:
            gid = grp.getgrnam(SOCKET_GROUP).gr_gid
        except KeyError:
            log.debug("no group %s: %s keeps group %d", SOCKET_GROUP, path, path.stat().st_gid)
        else:
            try:
                os.chown(path, -1, gid)
            except OSError as exc:
                log.warning("cannot give %s to group %s: %s", path, SOCKET_GROUP, exc)
        self._inode = path.stat().st_ino
        sock.listen(16)
        sock.setblocking(False)
        return sock

    async def close(self) -> None:
        """Stop accepting, end every open request with a ``stopping`` error, remove the
        socket file (if it is still ours). Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._server is not None:
            self._server.close()
            self._server = None
        tasks = list(self._connections)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._inode is not None:
            with contextlib.suppress(OSError):
                if self.path.stat().st_ino == self._inode:
                    self.path.unlink()
            self._inode = None
        logging.getLogger().removeHandler(self.log_ring)

    # ------------------------------------------------------------------ connections
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        if self._closed:
            writer.close()
            return
        self._connections.add(task)
        peer = _peer(writer)
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than MAX_LINE: the rest of it is not a request
                    error = ControlError(
                        ErrorCode.LINE_TOO_LONG,
                        f"a request line may be at most {MAX_LINE} bytes; closing",
                    )
                    writer.write(encode(_answer(None, "error", error.as_dict())))
                    await writer.drain()
                    break
                if not line:
                    break
                if line.strip():
                    await self._serve(line, Call(None, peer, reader, writer))
        except ConnectionError:
            pass  # the client went away
        except asyncio.CancelledError:
            # close() cancels us; end quietly (asyncio 3.11 logs a handler that ends
            # cancelled as an error). Any other cancellation goes on up.
            if not self._closed:
                raise
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, line: bytes, call: Call) -> None:
        try:
            request = parse_request(line)
        except ControlError as exc:
            call.id = exc.request_id
            await call.send("error", exc.as_dict())
            return
        call.id = request.id
        handler = _HANDLERS[request.cmd]
        try:
            result = await handler(self, call, Args(request.cmd, request.args))
        except asyncio.CancelledError:
            # The daemon is stopping: the client gets a final line, not a cut connection.
            stopping = ControlError(ErrorCode.STOPPING, "the daemon is stopping")
            with contextlib.suppress(Exception):
                call.writer.write(encode(_answer(call.id, "error", stopping.as_dict())))
            raise
        except ControlError as exc:
            await call.send("error", exc.as_dict())
        except DriverError as exc:
            await call.send("error", error_for(exc).as_dict())
        except ConnectionError:
            raise
        except Exception as exc:  # a bug must cost one answer, never the daemon
            log.exception("control: %s failed", request.cmd)
            error = ControlError(ErrorCode.INTERNAL, f"{request.cmd} failed: {exc!r}")
            await call.send("error", error.as_dict())
        else:
            await call.send("result", result)

    # ------------------------------------------------------------------ helpers
    @property
    def tz(self) -> dt.tzinfo:
        return self.daemon.config.concentrator.tzinfo

    def _meter(self, address: str) -> MeterConfig:
        meter = next((m for m in self.daemon.config.meters if m.address == address), None)
        if meter is None:
            raise ControlError(
                ErrorCode.UNKNOWN_METER,
                f"meter {address} is not in the daemon's configuration "
                f"({len(self.daemon.config.meters)} meters)",
            )
        return meter

    def _bus_type(self, name: str) -> str:
        bus = next((b for b in self.daemon.config.buses if b.name == name), None)
        return "rs485" if bus is None else bus.type

    async def _query(self, query: Callable[[Store], T]) -> T:
        """Run a read of the store in the store's thread (it sees every earlier write)."""
        store, writer = self.daemon.store, self.daemon.writer
        if store is None or writer is None:
            raise ControlError(ErrorCode.STOPPING, "the daemon's store is closed")
        return await writer.call(query, store)

    async def _settle(self) -> None:
        """Let the writer commit what it holds, so an answer sees the events just written."""
        if self.daemon.writer is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_WRITER_S):
                    await self.daemon.writer.flush()

    def _today(self) -> tuple[int, int]:
        now = dt.datetime.fromtimestamp(self.daemon.clock.wall(), self.tz)
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return int(start.timestamp()), int((start + dt.timedelta(days=1)).timestamp())

    async def _success_today(self) -> dict[str, ReadSuccess]:
        start, end = self._today()
        rows = await self._query(lambda store: store.read_success(start, end, by="meter"))
        return {r.key: r for r in rows}

    async def _backlog(self) -> dict[str, Any]:
        b = await self._query(Store.backlog)
        now = self.daemon.clock.wall()
        return {
            "readings": b.readings,
            "events": b.events,
            "oldest_slot": b.oldest_slot,
            "oldest_read_at": b.oldest_read_at,
            "oldest_age_s": None if b.oldest_read_at is None else round(now - b.oldest_read_at, 1),
        }

    def _health(self, address: str) -> dict[str, Any]:
        h = self.daemon.health.peek(address)
        if h is None:
            return {"state": "unknown", "last_read_at": None, "last_error": None}
        never = h.last_ok is None and h.failures_in_row == 0
        return {
            "state": "unknown" if never else h.state.value,
            "last_read_at": h.last_ok,
            "last_error": h.last_error,
        }

    def _audit(
        self, kind: str, meter: str | None, call: Call, detail: dict[str, object], ok: bool
    ) -> None:
        d = self.daemon
        if d.writer is not None:
            record = {**detail, "by": call.peer}
            d.writer.event(Event(kind, "info" if ok else "warning", meter, record, d.clock.wall()))

    # ------------------------------------------------------------------ commands
    async def status(self, call: Call, args: Args) -> dict[str, Any]:
        d = self.daemon
        doc = d.status()
        for name, bus in doc["buses"].items():
            worker = d.workers.get(name)
            bus["type"] = self._bus_type(name)
            bus["busy"] = worker is not None and worker.in_flight is not None
        counts = {"online": 0, "degraded": 0, "offline": 0, "unknown": 0}
        for m in d.config.meters:
            counts[self._health(m.address)["state"]] += 1
        success = await self._success_today()
        read = sum(r.read for r in success.values())
        missing = sum(r.missing for r in success.values())
        doc.update(
            meters={"total": len(d.config.meters), **counts},
            today={
                "read": read,
                "missing": missing,
                "rate": round(read / (read + missing), 6) if read + missing else None,
            },
            backlog=await self._backlog(),
            modem=d.modem.status() if d.modem is not None else None,
            timezone=d.config.concentrator.timezone,
            control_socket=str(self.path),
        )
        return doc

    async def meters(self, call: Call, args: Args) -> dict[str, Any]:
        d = self.daemon
        offline = args.boolean("offline")
        bus = args.optional_string("bus")
        names = [b.name for b in d.config.buses]
        if bus is not None and bus not in names:
            raise ControlError(
                ErrorCode.BAD_ARGUMENT,
                f'no bus named "{bus}" (buses: {", ".join(names) or "none"})',
            )
        success = await self._success_today()
        rows = []
        for m in d.config.meters:
            health = self._health(m.address)
            if (bus is not None and m.bus != bus) or (offline and health["state"] != "offline"):
                continue
            today = success.get(m.address)
            rows.append(
                {
                    "address": m.address,
                    "bus": m.bus,
                    "protocol": m.protocol,
                    "group": m.group,
                    **health,
                    "read_today": today.read if today else 0,
                    "missing_today": today.missing if today else 0,
                }
            )
        return {"meters": rows, "timezone": d.config.concentrator.timezone}

    async def read(self, call: Call, args: Args) -> dict[str, Any]:
        meter = self._meter(args.string("meter"))
        names = _resolve_quantities(meter, args.strings("quantities"))
        try:
            values = await self.daemon.read_now(meter.address, names, within_s=READ_WITHIN_S)
        except KeyError:  # the meter left the configuration (reload) meanwhile
            raise self._meter_gone(meter) from None
        read = {v.quantity for v in values}
        return {
            "meter": meter.address,
            "bus": meter.bus,
            "protocol": meter.protocol,
            "readings": [_reading(v) for v in values],
            "not_supported": [
                n for n in names if n not in read and not any(q.startswith(n + "_") for q in read)
            ],
        }

    def _meter_gone(self, meter: MeterConfig) -> ControlError:
        return ControlError(
            ErrorCode.UNKNOWN_METER, f"meter {meter.address} left the configuration"
        )

    async def relay(self, call: Call, args: Args) -> dict[str, Any]:
        meter = self._meter(args.string("meter"))
        action = args.string("action")
        if action not in RELAY_ACTIONS:
            raise ControlError(
                ErrorCode.BAD_ARGUMENT, f'action "{_short(action)}": expected open or close'
            )
        detail: dict[str, object] = {"action": action}
        try:
            state, word = await switch_relay(self.daemon, meter, action)
        except ActionRefused as exc:
            self._audit(
                "relay",
                meter.address,
                call,
                {**detail, "result": "refused", "error": str(exc)},
                False,
            )
            raise ControlError(ErrorCode.REFUSED, str(exc)) from None
        except DriverError as exc:
            error = error_for(exc)
            self._audit(
                "relay",
                meter.address,
                call,
                {**detail, "result": "failed", "error": error.as_dict()},
                False,
            )
            raise error from None
        except KeyError:
            raise self._meter_gone(meter) from None
        self._audit(
            "relay", meter.address, call, {**detail, "result": "ok", "relay_state": state}, True
        )
        return {
            "meter": meter.address,
            "action": action,
            "relay_state": state,
            "status_word_3": word,
        }

    async def time_sync(self, call: Call, args: Args) -> dict[str, Any]:
        d = self.daemon
        counts: dict[str, int] = {}
        for m in d.config.meters:
            if m.protocol == "dlt645":
                counts[m.bus] = counts.get(m.bus, 0) + 1
        if not counts:
            raise ControlError(ErrorCode.REFUSED, "no DL/T 645 meter on any bus: nothing to set")

        async def one(bus: str) -> dict[str, Any]:
            row: dict[str, Any] = {"bus": bus, "meters": counts[bus]}
            try:
                sent = await broadcast_time(d, bus)
            except DriverError as exc:
                return {**row, "result": "failed", "error": error_for(exc).as_dict()}
            except KeyError:
                return {
                    **row,
                    "result": "failed",
                    "error": {"code": "bus_error", "message": "bus gone"},
                }
            return {**row, "result": "ok", "sent": sent}

        buses = list(await asyncio.gather(*(one(b) for b in counts)))
        ok = all(b["result"] != "failed" for b in buses)
        self._audit("time_sync", None, call, {"buses": buses}, ok)
        return {"buses": buses, "timezone": d.config.concentrator.timezone}

    async def events(self, call: Call, args: Args) -> dict[str, Any]:
        d = self.daemon
        since = args.time("since", d.clock.wall(), self.tz)
        kind = args.optional_string("kind")
        limit = args.integer("limit", 100, 1, MAX_EVENTS)
        await self._settle()
        rows = await self._query(lambda store: store.events(since, kind))
        return {
            "events": [
                {
                    "id": e.id,
                    "at": e.event.at,
                    "kind": e.event.kind,
                    "severity": e.event.severity,
                    "meter": e.event.meter,
                    "detail": e.event.detail,
                    "batch": e.batch_id,
                }
                for e in rows[-limit:]
            ],
            "total": len(rows),
            "timezone": d.config.concentrator.timezone,
        }

    async def buffer(self, call: Call, args: Args) -> dict[str, Any]:
        d = self.daemon
        await self._settle()
        uplink = d.uplink
        in_flight = list(uplink.in_flight.values()) if uplink is not None else []
        return {
            **await self._backlog(),
            "batches_in_flight": len(in_flight),
            "readings_in_flight": sum(e.readings for e in in_flight),
            "pending_writes": d.writer.pending if d.writer else 0,
            "disk_full": d.writer.disk_full if d.writer else False,
            "uplink": uplink.status() if uplink is not None else None,
            "timezone": d.config.concentrator.timezone,
        }

    async def flush(self, call: Call, args: Args) -> dict[str, Any]:
        uplink = self.daemon.uplink
        if uplink is None:
            raise ControlError(
                ErrorCode.REFUSED, "no [uplink] in the configuration: nowhere to send"
            )
        await self._settle()
        pending = await self._backlog()
        uplink.flush()
        return {"pending": pending, "uplink": uplink.status()}

    async def backfill(self, call: Call, args: Args) -> dict[str, Any]:
        meter = self._meter(args.string("meter"))
        first, last = args.day("from"), args.day("to")
        if last < first:
            raise ControlError(ErrorCode.BAD_ARGUMENT, f"from {first} is after to {last}")
        span = (last - first).days + 1
        if span > BACKFILL_MAX_DAYS:
            raise ControlError(
                ErrorCode.BAD_ARGUMENT,
                f"{span} days asked; a meter keeps {BACKFILL_MAX_DAYS} daily freezes",
            )
        days = [first + dt.timedelta(days=i) for i in range(span)]
        try:
            plan = await self.daemon.backfill_freezes(meter.address, days)
        except KeyError:
            raise self._meter_gone(meter) from None
        except ValueError as exc:
            raise ControlError(ErrorCode.REFUSED, str(exc)) from None
        outcome: dict[dt.date, dict[str, Any]] = {}
        progress = {"total": len(plan), "done": 0, "stored": 0, "failed": 0}

        async def report(day: dt.date, row: dict[str, Any]) -> None:
            outcome[day] = {"day": day.isoformat(), **row}
            progress["done"] += 1
            if row["state"] in ("stored", "failed"):
                progress[row["state"]] += 1
            await call.send("progress", {**progress, "last": outcome[day]})

        await call.send("progress", dict(progress))
        waiting: dict[asyncio.Future[list[QuantityValue]], dt.date] = {}
        for day, job in plan:
            if isinstance(job, str):
                await report(day, {"state": "skipped", "reason": job})
            else:
                waiting[job] = day
        while waiting:
            done, _ = await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
            for fut in done:
                day = waiting.pop(fut)
                failure = fut.exception()
                if failure is None:
                    await report(
                        day, {"state": "stored", "readings": [_reading(v) for v in fut.result()]}
                    )
                elif isinstance(failure, DriverError):
                    await report(day, {"state": "failed", "error": error_for(failure).as_dict()})
                else:
                    raise failure
        rows = [outcome[day] for day in days]
        return {
            "meter": meter.address,
            "days": rows,
            **{k: progress[k] for k in ("stored", "failed")},
        }

    async def logs(self, call: Call, args: Args) -> dict[str, Any]:
        lines = args.integer("lines", 50, 0, LOG_RING_LINES)
        if not args.boolean("follow"):
            recent = self.log_ring.recent(lines)
            for line in recent:
                await call.send("log", line)
            return {"lines": len(recent)}
        recent, follower = self.log_ring.follow(lines)
        sent = 0
        # A follower sends nothing more; any byte or EOF from it means it is gone.
        gone = asyncio.ensure_future(call.reader.read(1))
        get: asyncio.Future[dict[str, object]] | None = None
        try:
            for line in recent:
                await call.send("log", line)
                sent += 1
            while True:
                get = asyncio.ensure_future(follower.queue.get())
                await asyncio.wait({get, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not get.done():
                    return {"lines": sent, "end": "client left"}
                if follower.dropped:
                    note = f"({follower.dropped} log lines dropped: the client read too slowly)"
                    follower.dropped = 0
                    await call.send(
                        "log", {"at": None, "level": "WARNING", "logger": __name__, "text": note}
                    )
                await call.send("log", get.result())
                sent += 1
        finally:
            for pending in (gone, get):
                if pending is not None:
                    pending.cancel()
            self.log_ring.unfollow(follower)


_HANDLERS: dict[str, Handler] = {
    "status": ControlServer.status,
    "meters": ControlServer.meters,
    "read": ControlServer.read,
    "relay": ControlServer.relay,
    "time-sync": ControlServer.time_sync,
    "events": ControlServer.events,
    "buffer": ControlServer.buffer,
    "flush": ControlServer.flush,
    "backfill": ControlServer.backfill,
    "logs": ControlServer.logs,
}
assert set(_HANDLERS) == set(COMMANDS)


def _reading(v: QuantityValue) -> dict[str, Any]:
    # The same keys as `concentrator read --json` in direct mode.
    return {"di": v.key, "name": v.quantity, "value": v.value, "unit": v.unit, "read_at": v.read_at}


def _resolve_quantities(meter: MeterConfig, names: list[str]) -> list[str]:
    """Quantity names the bus worker can read for this meter (the meter type's default
    set when none is named); an unknown name is a bad argument, before any bus time."""
    if meter.protocol == "dlt645":
        if not names:
            return list(dlt645.DEFAULT_QUANTITIES)
        out = []
        for name in names:
            try:
                out.append(dlt645.lookup(name).name)
            except (KeyError, ValueError):
                raise ControlError(
                    ErrorCode.BAD_ARGUMENT, f'unknown DL/T 645 quantity "{_short(name)}"'
                ) from None
        return out
    registers = METER_MODELS[meter.model or "sdm630"]
    unknown = [n for n in names if n not in registers]
    if unknown:
        raise ControlError(
            ErrorCode.BAD_ARGUMENT,
            f'unknown quantity "{_short(unknown[0])}" for Modbus {meter.model} meters; '
            f"expected one of {', '.join(registers)}",
        )
    return names or list(registers)


def _answers(path: Path) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(os.fspath(path))
    except OSError:
        return False
    finally:
        probe.close()
    return True


def _peer(writer: asyncio.StreamWriter) -> dict[str, object]:
    """Who is on the other end (SO_PEERCRED: the kernel says so, the client cannot lie)."""
    sock = writer.get_extra_info("socket")
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except (OSError, AttributeError):
        return {}
    pid, uid, _gid = struct.unpack("3i", raw)
    try:
        user = pwd.getpwuid(uid).pw_name
    except KeyError:
        user = str(uid)
    return {"user": user, "uid": uid, "pid": pid}


# ---------------------------------------------------------------------- client


class DaemonUnreachable(Exception):
    """Nobody answers on the socket (``running`` False), or we may not use it."""

    def __init__(self, message: str, *, running: bool) -> None:
        super().__init__(message)
        self.running = running


class ControlClient:
    """The CLI's side: blocking, one request per connection."""

    def __init__(self, path: Path, *, timeout: float | None = 300.0) -> None:
        self.path = path
        self.timeout = timeout
        self._next_id = 0

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(os.fspath(self.path))
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            sock.close()
            raise DaemonUnreachable(
                f"no daemon at {self.path}: is `concentrator run` started?", running=False
            ) from None
        except PermissionError:
            sock.close()
            raise DaemonUnreachable(
                f"permission denied on {self.path}: the control socket is for its owner "
                f"and group {SOCKET_GROUP}",
                running=True,
            ) from None
        return sock

    def stream(self, cmd: str, args: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """Every line of the answer; the last one has ``result`` or ``error``."""
        self._next_id += 1
        request_id = self._next_id
        request = {"v": PROTOCOL_VERSION, "id": request_id, "cmd": cmd, "args": args or {}}
        sock = self._connect()
        try:
            sock.sendall(encode(request))
            with sock.makefile("rb") as lines:
                for raw in lines:
                    try:
                        doc = json.loads(raw)
                    except ValueError:
                        raise ControlError(
                            ErrorCode.BAD_JSON,
                            f"the daemon sent a line that is not JSON: {raw[:80]!r}",
                        ) from None
                    if not isinstance(doc, dict) or doc.get("v") != PROTOCOL_VERSION:
                        raise ControlError(
                            ErrorCode.UNSUPPORTED_VERSION,
                            f"the daemon answered in another protocol: {_short(str(doc))}",
                        )
                    yield doc
                    if "result" in doc or "error" in doc:
                        return
        finally:
            sock.close()
        raise ControlError(
            ErrorCode.STOPPING, "the daemon closed the connection before answering (stopping?)"
        )

    def call(self, cmd: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        final: dict[str, Any] = {}
        for doc in self.stream(cmd, args):
            final = doc
        return result_of(final)


def result_of(doc: dict[str, Any]) -> dict[str, Any]:
    """The ``result`` of a final line, or its ``error`` raised as ControlError."""
    if "error" in doc:
        error = doc["error"]
        if not isinstance(error, dict):
            raise ControlError(ErrorCode.BAD_JSON, f"malformed error from the daemon: {error!r}")
        raise ControlError(str(error.get("code", "failed")), str(error.get("message", "")))
    result = doc.get("result")
    if not isinstance(result, dict):
        raise ControlError(
            ErrorCode.BAD_JSON, f"malformed answer from the daemon: {_short(str(doc))}"
        )
    return result
