"""The control API's commands: what each request asks of the running daemon.

Each command works from what it is given, never the daemon itself: the polling side
(`PollingView`: the configuration in force, meter health, a turn on a bus), the store
writer, the daemon's status and its uplink. Anything that needs a bus goes through that
bus's worker at on-demand priority (`Polling.read_now`, `Polling.run_on_bus`), between
two transactions of the poller, so a command never collides with a poll on the
half-duplex line.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from concentrator.config import MeterConfig
from concentrator.control.logring import LOG_RING_LINES, LogRing
from concentrator.control.protocol import (
    COMMANDS,
    Args,
    ControlError,
    ErrorCode,
    RequestId,
    answer,
    encode,
    error_for,
    short,
)
from concentrator.polling.archive_guard import Word
from concentrator.polling.backfill import DayPlan
from concentrator.polling.health import HealthTracker
from concentrator.polling.meter_actions import (
    RELAY_ACTIONS,
    ActionRefused,
    BusTurns,
    broadcast_time,
    switch_relay,
)
from concentrator.storage import ReadSuccess, Store, StoreWriter
from concentrator.storage.event_kinds import kind_problem
from contract.records import Event
from drivers import dlt645, meter_quantities
from drivers.errors import DriverError
from drivers.modbus_rtu import canonical_registers
from drivers.readers import QuantityValue

T = TypeVar("T")

READ_WITHIN_S = 60.0  # real seconds an on-demand read may wait for its bus
FLUSH_WRITER_S = 10.0  # how long a query waits for the writer to commit what it holds
MAX_EVENTS = 10_000
BACKFILL_MAX_DAYS = dlt645.MAX_DAILY_FREEZES


@dataclass
class Call:
    """One request being answered: where its lines go and who asked."""

    id: RequestId
    peer: dict[str, object]
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def send(self, key: str, payload: object) -> None:
        self.writer.write(encode(answer(self.id, key, payload)))
        await self.writer.drain()


class PollingView(BusTurns, Protocol):
    """What the control API needs of the polling side (`Polling`)."""

    @property
    def health(self) -> HealthTracker: ...

    def busy(self, bus: str) -> bool: ...

    async def read_now(
        self, address: str, quantities: Sequence[str], within_s: float = ...
    ) -> list[QuantityValue]: ...

    async def backfill_freezes(self, address: str, days: Sequence[dt.date]) -> DayPlan: ...

    def archive_status(self) -> dict[str, object]: ...

    async def set_commissioning(self, word: Word, by: object) -> dict[str, object]: ...


class InFlightBatch(Protocol):
    """A batch the uplink has sent and the receiver not yet acked."""

    @property
    def readings(self) -> int: ...


class UplinkView(Protocol):
    """What the control API needs of the uplink (`concentrator.uplink.mqtt.Uplink`)."""

    @property
    def in_flight(self) -> Mapping[int, InFlightBatch]: ...

    def flush(self) -> None: ...

    def status(self) -> dict[str, object]: ...


class ControlApi:
    """The answers to the control requests, one method per command (`_HANDLERS`)."""

    def __init__(
        self,
        *,
        socket_path: Path,
        polling: PollingView,
        writer: StoreWriter,
        log_ring: LogRing,
        status: Callable[[], dict[str, Any]],
        uplink: Callable[[], UplinkView | None],
    ) -> None:
        self.socket_path = socket_path
        self.polling = polling
        self.writer = writer
        self.log_ring = log_ring
        self.daemon_status = status  # the daemon's status file, as a dict
        self.uplink = uplink  # the uplink, None when there is none ([uplink] absent)

    async def handle(self, cmd: str, call: Call, args: Args) -> dict[str, Any]:
        return await _HANDLERS[cmd](self, call, args)

    # ------------------------------------------------------------------ helpers
    @property
    def tz(self) -> dt.tzinfo:
        return self.polling.config.concentrator.tzinfo

    def _meter(self, address: str) -> MeterConfig:
        meters = self.polling.config.meters
        meter = next((m for m in meters if m.address == address), None)
        if meter is None:
            raise ControlError(
                ErrorCode.UNKNOWN_METER,
                f"meter {address} is not in the daemon's configuration ({len(meters)} meters)",
            )
        return meter

    def _bus_type(self, name: str) -> str:
        bus = next((b for b in self.polling.config.buses if b.name == name), None)
        return "rs485" if bus is None else bus.type

    async def _query(self, query: Callable[[Store], T]) -> T:
        """Run a read of the store in the store's thread (it sees every earlier write)."""
        if self.writer.closed:
            raise ControlError(ErrorCode.STOPPING, "the daemon's store is closed")
        return await self.writer.query(query)

    async def _settle(self) -> None:
        """Let the writer commit what it holds, so an answer sees the events just written."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FLUSH_WRITER_S):
                await self.writer.flush()

    def _today(self) -> tuple[int, int]:
        now = dt.datetime.fromtimestamp(self.polling.clock.wall(), self.tz)
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return int(start.timestamp()), int((start + dt.timedelta(days=1)).timestamp())

    async def _success_today(self) -> dict[str, ReadSuccess]:
        start, end = self._today()
        rows = await self._query(lambda store: store.read_success(start, end, by="meter"))
        return {r.key: r for r in rows}

    async def _backlog(self) -> dict[str, Any]:
        b = await self._query(Store.backlog)
        now = self.polling.clock.wall()
        return {
            "readings": b.readings,
            "events": b.events,
            "oldest_slot": b.oldest_slot,
            "oldest_read_at": b.oldest_read_at,
            "oldest_age_s": None if b.oldest_read_at is None else round(now - b.oldest_read_at, 1),
        }

    def _health(self, address: str) -> dict[str, Any]:
        h = self.polling.health.peek(address)
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
        record = {**detail, "by": call.peer}
        severity = "info" if ok else "warning"
        self.writer.event(Event(kind, severity, meter, record, self.polling.clock.wall()))

    # ------------------------------------------------------------------ commands
    async def status(self, call: Call, args: Args) -> dict[str, Any]:
        config = self.polling.config
        doc = self.daemon_status()
        for name, bus in doc["buses"].items():
            bus["type"] = self._bus_type(name)
            bus["busy"] = self.polling.busy(name)
        counts = {"online": 0, "degraded": 0, "offline": 0, "unknown": 0}
        for m in config.meters:
            counts[self._health(m.address)["state"]] += 1
        success = await self._success_today()
        read = sum(r.read for r in success.values())
        missing = sum(r.missing for r in success.values())
        doc.update(
            meters={"total": len(config.meters), **counts},
            today={
                "read": read,
                "missing": missing,
                "rate": round(read / (read + missing), 6) if read + missing else None,
            },
            backlog=await self._backlog(),
            archive=self.polling.archive_status(),
            timezone=config.concentrator.timezone,
            control_socket=str(self.socket_path),
        )
        return doc

    async def meters(self, call: Call, args: Args) -> dict[str, Any]:
        config = self.polling.config
        offline = args.boolean("offline")
        bus = args.optional_string("bus")
        names = [b.name for b in config.buses]
        if bus is not None and bus not in names:
            raise ControlError(
                ErrorCode.BAD_ARGUMENT,
                f'no bus named "{bus}" (buses: {", ".join(names) or "none"})',
            )
        success = await self._success_today()
        rows = []
        for m in config.meters:
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
        return {"meters": rows, "timezone": config.concentrator.timezone}

    async def read(self, call: Call, args: Args) -> dict[str, Any]:
        meter = self._meter(args.string("meter"))
        names = _resolve_quantities(meter, args.strings("quantities"))
        try:
            values = await self.polling.read_now(meter.address, names, within_s=READ_WITHIN_S)
        except KeyError:  # the meter left the configuration (reload) meanwhile
            raise self._meter_gone(meter) from None
        read = {v.quantity for v in values}
        return {
            "meter": meter.address,
            "bus": meter.bus,
            "protocol": meter.protocol,
            "readings": [_reading(v) for v in values],
            "not_supported": [
                n
                for n in names
                if not any(s in read for s in meter_quantities.stored_names(meter.protocol, n))
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
                ErrorCode.BAD_ARGUMENT, f'action "{short(action)}": expected open or close'
            )
        detail: dict[str, object] = {"action": action}
        try:
            state, word = await switch_relay(self.polling, meter, action)
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
        config = self.polling.config
        counts: dict[str, int] = {}
        for m in config.meters:
            if m.protocol != "modbus":  # DL/T 645-2007, 645-1997 and 698.45 (meter_actions)
                counts[m.bus] = counts.get(m.bus, 0) + 1
        if not counts:
            raise ControlError(ErrorCode.REFUSED, "no DL/T 645 meter on any bus: nothing to set")

        async def one(bus: str) -> dict[str, Any]:
            row: dict[str, Any] = {"bus": bus, "meters": counts[bus]}
            try:
                sent = await broadcast_time(self.polling, bus)
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
        return {"buses": buses, "timezone": config.concentrator.timezone}

    async def events(self, call: Call, args: Args) -> dict[str, Any]:
        now = self.polling.clock.wall()
        since, until = args.time("since", now, self.tz), args.time("until", now, self.tz)
        kind = args.optional_string("kind")
        if kind is not None and (problem := kind_problem(kind)) is not None:
            raise ControlError(ErrorCode.BAD_ARGUMENT, problem)
        if since is not None and until is not None and since > until:
            raise ControlError(ErrorCode.BAD_ARGUMENT, "since is after until: nothing can match")
        limit = args.integer("limit", 100, 1, MAX_EVENTS)
        await self._settle()
        rows = await self._query(lambda store: store.events(since, kind))
        if until is not None:
            rows = [e for e in rows if e.event.at < until]
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
            "timezone": self.polling.config.concentrator.timezone,
        }

    async def buffer(self, call: Call, args: Args) -> dict[str, Any]:
        await self._settle()
        uplink = self.uplink()
        in_flight = list(uplink.in_flight.values()) if uplink is not None else []
        return {
            **await self._backlog(),
            "batches_in_flight": len(in_flight),
            "readings_in_flight": sum(e.readings for e in in_flight),
            "pending_writes": self.writer.pending,
            "disk_full": self.writer.disk_full,
            "uplink": uplink.status() if uplink is not None else None,
            "timezone": self.polling.config.concentrator.timezone,
        }

    async def flush(self, call: Call, args: Args) -> dict[str, Any]:
        uplink = self.uplink()
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
            plan = await self.polling.backfill_freezes(meter.address, days)
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
        now = time.time()  # a log line's time is the host's, not the polling clock's
        since, until = args.time("since", now, self.tz), args.time("until", now, self.tz)
        if since is not None and until is not None and since > until:
            raise ControlError(ErrorCode.BAD_ARGUMENT, "since is after until: nothing can match")
        ranged = since is not None or until is not None

        def in_range(line: dict[str, object]) -> bool:
            """A line's time in [since, until); a line without one (a note) always is."""
            at = line.get("at")
            if not isinstance(at, int | float):
                return True
            return (since is None or at >= since) and (until is None or at < until)

        if not args.boolean("follow"):
            recent = [x for x in self.log_ring.recent(LOG_RING_LINES if ranged else lines)
                      if in_range(x)]  # fmt: skip
            recent = recent[-lines:] if lines > 0 else []
            for line in recent:
                await call.send("log", line)
            return {"lines": len(recent)}
        if until is not None:
            raise ControlError(ErrorCode.BAD_ARGUMENT, "until with follow: nothing would follow")
        recent, follower = self.log_ring.follow(LOG_RING_LINES if ranged else lines)
        recent = [x for x in recent if in_range(x)]
        recent = recent[-lines:] if lines > 0 else []
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

    async def commissioning(self, call: Call, args: Args) -> dict[str, Any]:
        """Commissioning ``on`` (poll every configured meter), ``off`` (only the
        archive's), or ``config`` (as ``[concentrator] commissioning`` says)."""
        mode = args.string("mode")
        if mode not in ("on", "off", "config"):
            raise ControlError(
                ErrorCode.BAD_ARGUMENT, f'mode "{short(mode)}": expected on, off or config'
            )
        word: Word = "on" if mode == "on" else "off" if mode == "off" else "config"
        return dict(await self.polling.set_commissioning(word, call.peer))


Handler = Callable[[ControlApi, Call, Args], Awaitable[dict[str, Any]]]

_HANDLERS: dict[str, Handler] = {
    "status": ControlApi.status,
    "meters": ControlApi.meters,
    "read": ControlApi.read,
    "relay": ControlApi.relay,
    "time-sync": ControlApi.time_sync,
    "events": ControlApi.events,
    "buffer": ControlApi.buffer,
    "flush": ControlApi.flush,
    "backfill": ControlApi.backfill,
    "logs": ControlApi.logs,
    "commissioning": ControlApi.commissioning,
}
assert set(_HANDLERS) == set(COMMANDS)


def _reading(v: QuantityValue) -> dict[str, Any]:
    # The same keys as `concentrator read --json` in direct mode.
    return {"di": v.key, "name": v.quantity, "value": v.value, "unit": v.unit, "read_at": v.read_at}


def _resolve_quantities(meter: MeterConfig, names: list[str]) -> list[str]:
    """Quantity names the bus worker can read for this meter (the meter type's default
    set when none is named); an unknown name is a bad argument, before any bus time."""
    if not names:
        return meter_quantities.defaults(meter.protocol, meter.model)
    out = []
    for name in names:
        try:
            out.append(meter_quantities.canonical(meter.protocol, name, meter.model))
        except KeyError:
            raise ControlError(ErrorCode.BAD_ARGUMENT, _unknown(meter, name)) from None
    return out


def _unknown(meter: MeterConfig, name: str) -> str:
    """What a read may name instead, per meter type (docs/quantities.md)."""
    if meter.protocol == "modbus":
        model = meter.model or "sdm630"
        return (
            f'unknown quantity "{short(name)}" for Modbus {model} meters; '
            f"expected one of {', '.join(canonical_registers(model))}"
        )
    if meter.protocol == "dlt645":
        return f'unknown DL/T 645 quantity "{short(name)}"; a DI code or one of: ' + ", ".join(
            dlt645.DATA_IDS_BY_NAME
        )
    kind = meter_quantities.kind_name(meter.protocol, meter.model)
    valid = ", ".join(meter_quantities.defaults(meter.protocol, meter.model))
    code = "an OAD" if meter.protocol == "dlt698" else "a DI code"
    return f'unknown {kind} quantity "{short(name)}"; {code} or a name such as: {valid}'
