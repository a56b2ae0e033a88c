"""Reading named quantities from a meter over a bus: the one place that turns "voltage_a
of meter 000000000001" into request bytes, a transaction and an exact value.

Used by the field CLI's direct mode and by the daemon's poller alike, so both read a
meter the same way.
"""

from __future__ import annotations

import datetime as dt
import itertools
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol, TypeVar

from drivers import dlt645, dlt645_1997, dlt645_load, dlt698, modbus_rtu
from drivers.dlt698.freeze import (
    INTERVAL_COLUMNS,
    FreezeRecord,
    build_freeze_read,
    parse_freeze_records,
)
from drivers.dlt698.objects import CANONICAL as DLT698_CANONICAL
from drivers.errors import BusTimeout, EncodeError, FrameError, MeterError
from drivers.meter_ids import modbus_slave_problem
from drivers.meter_quantities import (
    array_elements,
    block_parts,
    dlt645_1997_entry,
    dlt645_1997_stored_name,
    dlt698_quantity,
)
from drivers.serial_bus import Exchange, FrameDecoder, SerialBus

F = TypeVar("F")

MAX_FOLLOW_UPS = 32


@dataclass(frozen=True)
class QuantityValue:
    """One value read from one meter: exact text, never a float in transit."""

    meter: str
    quantity: str
    key: str  # DL/T 645 DI as 8 hex digits, or Modbus register as 0xNNNN
    value: str
    unit: str
    read_at: float  # wall-clock unix time the reply arrived


def format_float32(value: float) -> str:
    """Shortest decimal text that reads back as the same float32 (what the meter sent)."""
    if value != value or value in (float("inf"), float("-inf")):
        return str(value)
    packed = struct.pack(">f", value)
    for digits in range(1, 10):
        text = f"{value:.{digits}g}"
        if struct.pack(">f", float(text)) == packed:
            return text if "e" not in text else repr(float(text))
    return repr(value)


class Dlt645Transport(Protocol):
    """What ``Dlt645Reader`` needs from a channel: an RS-485 ``SerialBus``, or a carrier
    module through ``drivers.plc_bus.Plc645Channel``."""

    async def transact(
        self,
        request: bytes,
        decoder: FrameDecoder[F],
        accept: Callable[[F], bool] = ...,
        *,
        response_timeout: float | None = None,
    ) -> Exchange[F]: ...

    async def send(self, request: bytes) -> None: ...


class Dlt645Reader:
    protocol = "dlt645"

    def __init__(self, bus: Dlt645Transport, *, response_timeout: float | None = None) -> None:
        self.bus = bus
        self.response_timeout = response_timeout

    @staticmethod
    def quantities(names: Sequence[str] = ()) -> list[dlt645.DataId]:
        """Resolve quantity names (or DI codes); no names means the default set."""
        return [dlt645.lookup(n) for n in (names or dlt645.DEFAULT_QUANTITIES)]

    async def _exchange(self, request: bytes, address: str, function: int) -> dlt645.Frame:
        def accept(frame: dlt645.Frame) -> bool:
            # Skip our own echo and stray answers from other meters or earlier requests.
            return (
                frame.is_reply
                and frame.function == function
                and dlt645.address_matches(address, frame.address)
            )

        ex = await self.bus.transact(
            request, dlt645.Decoder(), accept, response_timeout=self.response_timeout
        )
        return ex.frame

    async def read_raw(self, address: str, di: int, params: bytes = b"") -> bytes:
        """Value bytes of one DI, following 0x12 follow-up frames when the meter has more.
        ``params`` follow the DI in the request (a load-record read's count and time)."""
        frame = await self._exchange(
            dlt645.build_read(address, di, params), address, dlt645.Function.READ_DATA
        )
        reply = dlt645.parse_read_reply(frame, address, di)
        value = reply.value
        seq = 0
        while reply.more_follows:
            seq += 1
            if seq > MAX_FOLLOW_UPS:
                raise FrameError(f"meter {address} announced more than {MAX_FOLLOW_UPS} follow-ups")
            frame = await self._exchange(
                dlt645.build_read_follow_up(address, di, seq),
                address,
                dlt645.Function.READ_FOLLOW_UP,
            )
            reply = dlt645.parse_read_reply(frame, address, di)
            value += reply.value
        return value

    async def read(
        self, address: str, entry: dlt645.DataId, *, numeric: bool = False
    ) -> QuantityValue:
        """Read one DI; ``numeric`` gives dates, times and words as plain numbers (for
        the store) instead of display text; energy blocks stay "a / b / c" either way."""
        raw = await self.read_raw(address, entry.di)
        value = dlt645.decode_value(entry, raw)
        numeric = numeric and entry.kind != "energy_block"
        text = dlt645.numeric_text(entry, value) if numeric else dlt645.format_value(entry, value)
        return QuantityValue(
            meter=address,
            quantity=entry.name,
            key=entry.code,
            value=text,
            unit=entry.unit,
            read_at=time.time(),
        )

    async def load_records(
        self, address: str, start: dt.datetime, blocks: int
    ) -> list[dlt645_load.LoadRecord]:
        """Up to ``blocks`` load records stamped at or after ``start`` (meter-local), oldest
        first (DI 06000001); none held from there on is an empty list, not an error."""
        params = dlt645_load.request_data(start, blocks)
        try:
            raw = await self.read_raw(address, dlt645_load.DI_GIVEN_TIME, params)
        except MeterError as exc:
            if exc.code & dlt645.ErrorBits.NO_DATA:
                return []
            raise
        return dlt645_load.decode_records(raw)

    async def read_address(self, pattern: str = dlt645.WILDCARD_ALL) -> str:
        """0x13: the real address of the meter(s) selected by ``pattern``."""
        frame = await self._exchange(
            dlt645.build_read_address(pattern), pattern, dlt645.Function.READ_ADDRESS
        )
        dlt645.check_reply(frame, dlt645.Function.READ_ADDRESS, pattern)
        if len(frame.data) != 6:
            raise FrameError(f"read-address reply carries {len(frame.data)} bytes, expected 6")
        address = dlt645.decode_address(frame.data)
        if address != frame.address:
            raise FrameError(f"read-address reply names {address} in a frame from {frame.address}")
        return address

    async def relay(
        self,
        address: str,
        action: dlt645.RelayAction,
        *,
        password_level: int,
        password: str,
        operator: str,
        valid_for: float = 300.0,
        now: dt.datetime | None = None,
    ) -> None:
        """0x1C relay control; raises MeterError with the meter's own code on refusal."""
        deadline = (now or dt.datetime.now()) + dt.timedelta(seconds=valid_for)
        request = dlt645.build_relay_control(
            address,
            action,
            password_level=password_level,
            password=password,
            operator=operator,
            valid_until=deadline,
        )
        frame = await self._exchange(request, address, dlt645.Function.RELAY_CONTROL)
        dlt645.check_reply(frame, dlt645.Function.RELAY_CONTROL, address)

    async def broadcast_time(self, when: dt.datetime) -> None:
        await self.bus.send(dlt645.build_broadcast_time(when))


class ModbusReader:
    protocol = "modbus"

    def __init__(
        self, bus: SerialBus, *, model: str = "sdm630", response_timeout: float | None = None
    ) -> None:
        if model not in modbus_rtu.METER_MODELS:
            raise EncodeError(
                f"Modbus meter model {model!r}: expected one of {sorted(modbus_rtu.METER_MODELS)}"
            )
        self.bus = bus
        self.model = model
        self.registers = modbus_rtu.METER_MODELS[model]
        self.response_timeout = response_timeout

    def quantities(self, names: Sequence[str] = ()) -> list[modbus_rtu.Register]:
        return self.quantities_of(self.model, names)

    @staticmethod
    def quantities_of(model: str, names: Sequence[str] = ()) -> list[modbus_rtu.Register]:
        """Resolve canonical quantity names for a meter family (KeyError naming the valid
        ones: not in its map), before any bus is opened; no names means every register
        of the map."""
        if model not in modbus_rtu.METER_MODELS:
            raise EncodeError(
                f"Modbus meter model {model!r}: expected one of {sorted(modbus_rtu.METER_MODELS)}"
            )
        registers = modbus_rtu.canonical_registers(model)
        if not names:
            return list(registers.values())
        out = []
        for name in names:
            if name not in registers:
                raise KeyError(
                    f"unknown quantity {name!r} for this Modbus meter; "
                    f"expected one of {', '.join(registers)}"
                )
            out.append(registers[name])
        return out

    async def read_many(
        self, address: str, registers: Sequence[modbus_rtu.Register]
    ) -> list[QuantityValue]:
        """Read float32 input registers in as few FC 4 requests as the map allows."""
        slave = parse_slave(address)
        wanted = {r.address: r for r in registers}
        out: list[QuantityValue] = []

        def accept(frame: modbus_rtu.Frame) -> bool:
            return frame.slave == slave

        for start, count in modbus_rtu.plan_reads(registers):
            request = modbus_rtu.ReadRequest(
                slave, modbus_rtu.FunctionCode.READ_INPUT_REGISTERS, start, count
            )

            decoder: FrameDecoder[modbus_rtu.Frame] = modbus_rtu.Decoder("client")
            ex = await self.bus.transact(
                modbus_rtu.encode(request),
                decoder,
                accept,
                response_timeout=self.response_timeout,
            )
            regs = modbus_rtu.check_response(request, ex.frame)
            now = time.time()
            for offset in range(0, count, 2):
                reg = wanted.get(start + offset)
                if reg is None:
                    continue
                value = modbus_rtu.registers_to_float32(regs[offset], regs[offset + 1])
                mapped = modbus_rtu.CANONICAL[reg.name]
                out.append(
                    QuantityValue(
                        meter=address,
                        quantity=mapped.name,
                        key=f"0x{reg.address:04X}",
                        value=mapped.value(format_float32(value)),
                        unit=mapped.unit,
                        read_at=now,
                    )
                )
        order = {modbus_rtu.CANONICAL[r.name].name: i for i, r in enumerate(registers)}
        return sorted(out, key=lambda q: order[q.quantity])


def parse_slave(address: str) -> int:
    """A Modbus slave id as a person writes it (`drivers.meter_ids`); else EncodeError."""
    problem = modbus_slave_problem(address)
    if problem is not None:
        raise EncodeError(problem)
    return int(address)


# --------------------------------------------------------------------------------------
# DL/T 698.45 and DL/T 645-1997 (docs/protocols-dlt698-645-1997.md)

MeterProtocol = Literal["dlt645", "dlt645-1997", "dlt698"]
METER_PROTOCOLS: tuple[MeterProtocol, ...] = ("dlt645", "dlt698", "dlt645-1997")
PROTOCOL_NAMES: dict[str, str] = {
    "dlt645": "DL/T 645-2007",
    "dlt645-1997": "DL/T 645-1997",
    "dlt698": "DL/T 698.45",
    "modbus": "Modbus RTU",
}


def dlt698_reading(
    q: dlt698.Quantity, value: dlt698.Value, *, numeric: bool = True
) -> tuple[str, str, str]:
    """(name, text, unit) of one 698.45 element value as readings carry it: the
    canonical name, unit and exact value of `dlt698.objects.CANONICAL` (power in kW from
    the meter's W), else the object's own name (the clock as YYYYMMDDhhmmss when
    ``numeric``, else ISO text)."""
    if isinstance(value, tuple) or value is None:
        raise EncodeError(f"{q.name} ({q.oad}): {value!r} is not a single value")
    mapped = DLT698_CANONICAL.get(q.oad)
    if isinstance(value, dt.datetime):
        text = value.strftime("%Y%m%d%H%M%S") if numeric else value.isoformat()
    else:
        text = str(value)
    if mapped is None:
        return q.name, text, q.symbol
    return mapped.name, mapped.value(text), mapped.unit


def dlt698_not_supported(exc: Exception) -> bool:
    """A 698.45 refusal that says the meter has no such object (DAR 4 or 6)."""
    return isinstance(exc, MeterError) and exc.code in (
        dlt698.DAR.OBJECT_UNDEFINED,
        dlt698.DAR.OBJECT_NOT_EXIST,
    )


def dlt698_values(
    reply: dlt698.Frame,
    address: str,
    quantities: Sequence[dlt698.Quantity],
    *,
    piid: int | None = None,
    numeric: bool = True,
) -> tuple[list[QuantityValue], list[tuple[str, MeterError]]]:
    """A GET-Response (Normal or NormalList) checked against its request: the values
    (arrays as their elements) and the quantities refused with their DAR. FrameError
    for an answer that is not one to this request."""
    server = dlt698.ServerAddress(address)
    service = dlt698.server_apdu(reply, server, piid=piid).service
    if isinstance(service, dlt698.GetResponseNormal):
        results: tuple[dlt698.ResultNormal, ...] = (service.result,)
    elif isinstance(service, dlt698.GetResponseNormalList):
        results = service.results
    else:
        raise FrameError(f"reply is {type(service).__name__}, expected a GET-Response")
    by_oad = {r.oad: r for r in results}
    if len(by_oad) != len(results) or len(results) != len(quantities):
        raise FrameError(f"reply carries {len(results)} results for {len(quantities)} OADs")
    now = time.time()
    values: list[QuantityValue] = []
    refused: list[tuple[str, MeterError]] = []
    for q in quantities:
        result = by_oad.get(q.oad)
        if result is None:
            raise FrameError(f"reply lacks {q.name} ({q.oad})")
        if not isinstance(result.result, dlt698.Data):
            code = int(result.result)
            refused.append((q.name, MeterError(address, code, dlt698.describe_dar(code))))
            continue
        value = dlt698.to_value(q, result.result)
        if value is None:
            continue
        pairs = (
            zip(array_elements(q), value, strict=False)
            if isinstance(value, tuple)
            else [(q, value)]
        )
        for element, v in pairs:
            if v is None:
                continue
            name, text, unit = dlt698_reading(element, v, numeric=numeric)
            values.append(QuantityValue(address, name, str(element.oad), text, unit, now))
    return values, refused


# PIID serials rotate across every reader (one per job), so that a late answer to an
# earlier request of the same meter carries another serial and is refused (clause 8,
# PIID; docs/protocols-dlt698-645-1997.md, "Application layer").
_PIIDS = itertools.cycle(range(1, 64))


class Dlt698Reader:
    """GET-Request Normal/NormalList over a bus (docs/protocols-dlt698-645-1997.md,
    "Application layer"): one request for every quantity of a job, each answer checked
    against the request's PIID, address and OADs."""

    protocol = "dlt698"

    def __init__(self, bus: Dlt645Transport, *, response_timeout: float | None = None) -> None:
        self.bus = bus
        self.response_timeout = response_timeout

    @staticmethod
    def quantities(names: Sequence[str] = ()) -> list[dlt698.Quantity]:
        """Canonical names, object names or OADs; none: the default set."""
        return [dlt698_quantity(n) for n in (names or dlt698.DEFAULT_QUANTITIES)]

    async def _exchange(self, request: bytes, address: dlt698.ServerAddress) -> dlt698.Frame:
        def accept(frame: dlt698.Frame) -> bool:
            return frame.from_server and address.matches(frame.address)

        ex = await self.bus.transact(
            request, dlt698.Decoder(), accept, response_timeout=self.response_timeout
        )
        return ex.frame

    async def read_many(
        self, address: str, quantities: Sequence[dlt698.Quantity], *, numeric: bool = True
    ) -> tuple[list[QuantityValue], list[tuple[str, MeterError]]]:
        """Values of every quantity (arrays as their elements), and the quantities the
        meter refused with the DAR it gave."""
        if not quantities:
            return [], []
        piid = next(_PIIDS)
        server = dlt698.ServerAddress(address)
        reply = await self._exchange(dlt698.build_get(server, *quantities, piid=piid), server)
        return dlt698_values(reply, address, quantities, piid=piid, numeric=numeric)

    async def freeze_records(
        self,
        address: str,
        start: dt.datetime,
        end: dt.datetime,
        columns: Sequence[dlt698.OAD] = INTERVAL_COLUMNS,
        *,
        record: dlt698.OAD = dlt698.MINUTE_FREEZE,
    ) -> list[FreezeRecord]:
        """Freeze records (minute 5002, or daily 5004) with a freeze time in [start, end)
        (meter-local), every record the meter holds there (no interval: its own stamps
        decide); none is []."""
        piid = next(_PIIDS)
        server = dlt698.ServerAddress(address)
        request = build_freeze_read(
            server, start, end, columns, record=record, interval=None, piid=piid
        )
        reply = await self._exchange(request, server)
        return parse_freeze_records(reply, address=server, piid=piid, record=record)

    async def read_address(self) -> str:
        """The address (4001) of the one meter on the line, asked by wildcard."""
        wildcard = dlt698.ServerAddress.wildcard()
        reply = await self._exchange(dlt698.build_read_address(), wildcard)
        value = dlt698.parse_get_response(reply, "comm_address")
        if not isinstance(value, str) or value != reply.address:
            raise FrameError(f"4001 reply names {value!r} in a frame from {reply.address}")
        return value


class Dlt6451997Reader:
    """0x01 read data of DL/T 645-1997 (two-byte identifiers; the 645 frame), following
    0x02 follow-up frames (docs/protocols-dlt698-645-1997.md, "DL/T 645-1997")."""

    protocol = "dlt645-1997"

    def __init__(self, bus: Dlt645Transport, *, response_timeout: float | None = None) -> None:
        self.bus = bus
        self.response_timeout = response_timeout

    @staticmethod
    def quantities(names: Sequence[str] = ()) -> list[dlt645_1997.DataId]:
        """Canonical names, the 1997 names or hex codes; none: the default set."""
        return [dlt645_1997_entry(n) for n in (names or dlt645_1997.DEFAULT_QUANTITIES)]

    async def _exchange(self, request: bytes, address: str) -> dlt645.Frame:
        def accept(frame: dlt645.Frame) -> bool:
            return (
                frame.is_reply
                and frame.function
                in (dlt645_1997.Function.READ_DATA, dlt645_1997.Function.READ_FOLLOW_UP)
                and dlt645.address_matches(address, frame.address)
            )

        ex = await self.bus.transact(
            request, dlt645.Decoder(), accept, response_timeout=self.response_timeout
        )
        return ex.frame

    async def read_raw(self, address: str, di: int) -> bytes:
        frame = await self._exchange(dlt645_1997.build_read(address, di), address)
        reply = dlt645_1997.parse_read_reply(frame, address, di)
        value = reply.value
        follow = 0
        while reply.more_follows:
            follow += 1
            if follow > MAX_FOLLOW_UPS:
                raise FrameError(f"meter {address} announced more than {MAX_FOLLOW_UPS} follow-ups")
            frame = await self._exchange(dlt645_1997.build_read_follow_up(address, di), address)
            reply = dlt645_1997.parse_read_reply(frame, address, di)
            value += reply.value
        return value

    async def read(
        self, address: str, entry: dlt645_1997.DataId, *, numeric: bool = True
    ) -> list[QuantityValue]:
        """One identifier; a block (901F) as its parts energy_fwd_total, _t1, ..."""
        raw = await self.read_raw(address, entry.di)
        return dlt645_1997_values(address, entry, raw, numeric=numeric)


def dlt645_1997_values(
    address: str, entry: dlt645_1997.DataId, raw: bytes, *, numeric: bool = True
) -> list[QuantityValue]:
    """The value bytes of one 1997 identifier as readings under their canonical names
    (`dlt645_1997.CANONICAL`); a block (9X1F) as its parts, total and tariffs."""
    value = dlt645_1997.decode_value(entry, raw)
    now = time.time()
    if isinstance(value, tuple):
        parts = block_parts(entry)
        if len(value) > len(parts):
            raise FrameError(
                f"{entry.name} ({entry.code}): {len(value)} values, at most "
                f"{len(parts)} (total and 4 tariffs)"
            )
        return [
            QuantityValue(address, dlt645_1997_stored_name(p), entry.code, str(v), entry.unit, now)
            for p, v in zip(parts, value, strict=False)
        ]
    text = dlt645_1997_text(value, numeric)
    name = dlt645_1997_stored_name(entry)
    return [QuantityValue(address, name, entry.code, text, entry.unit, now)]


def dlt645_1997_text(value: dlt645_1997.Value, numeric: bool = True) -> str:
    """Stored text of a 1997 value, as DL/T 645-2007's `dlt645.numeric_text` writes it."""
    if isinstance(value, dt.date):
        return value.strftime("%Y%m%d") if numeric else value.isoformat()
    if isinstance(value, dt.time):
        return value.strftime("%H%M%S") if numeric else value.isoformat()
    if isinstance(value, tuple):
        return " / ".join(str(v) for v in value)
    return str(value)


def dlt645_1997_not_supported(exc: Exception) -> bool:
    return isinstance(exc, MeterError) and bool(exc.code & dlt645_1997.ErrorBits.BAD_IDENTIFIER)


async def identify(
    bus: Dlt645Transport,
    address: str,
    protocols: Sequence[MeterProtocol] = METER_PROTOCOLS,
    *,
    retries: int = 0,
    response_timeout: float | None = None,
) -> MeterProtocol:
    """Which protocol the meter at ``address`` answers, tried in ``protocols``' order:
    DL/T 645-2007 reads its address (04000401), DL/T 698.45 reads 4001, DL/T 645-1997
    reads 9010 (docs/protocols-dlt698-645-1997.md, "Telling the protocols apart").

    A garbled answer is tried again (up to ``retries`` times) before the next protocol:
    someone answered. An error reply counts as an answer in 645-2007 and 698.45, whose
    requests no other protocol's meter would answer in kind; in 645-1997 only "bad
    identifier" does, since a 2007 meter may refuse the unknown 1997 function 0x01 with
    an error frame that looks like a 1997 one. None answered: FrameError if any answer
    was garbled, else BusTimeout, either saying what each protocol heard."""
    tried: list[str] = []
    garbled = False
    for protocol in protocols:
        for attempt in range(retries + 1):
            try:
                await _probe(bus, address, protocol, response_timeout)
            except MeterError as exc:
                if protocol != "dlt645-1997" or dlt645_1997_not_supported(exc):
                    return protocol
                tried.append(f"{PROTOCOL_NAMES[protocol]}: {exc}")
                break
            except FrameError as exc:
                if attempt < retries:
                    continue
                garbled = True
                tried.append(f"{PROTOCOL_NAMES[protocol]}: {exc}")
            except BusTimeout as exc:
                tried.append(f"{PROTOCOL_NAMES[protocol]}: {exc}")
                break
            else:
                return protocol
    what = f"meter {address} answered no protocol tried cleanly ({'; '.join(tried)})"
    raise FrameError(what) if garbled else BusTimeout(what)


async def _probe(
    bus: Dlt645Transport, address: str, protocol: str, response_timeout: float | None
) -> None:
    if protocol == "dlt645":
        reader = Dlt645Reader(bus, response_timeout=response_timeout)
        await reader.read(address, dlt645.lookup("meter_address"))
    elif protocol == "dlt698":
        reader698 = Dlt698Reader(bus, response_timeout=response_timeout)
        _, refused = await reader698.read_many(address, [dlt698.lookup("comm_address")])
        if refused:
            raise refused[0][1]
    else:
        reader97 = Dlt6451997Reader(bus, response_timeout=response_timeout)
        await reader97.read(address, dlt645_1997.lookup("energy_fwd_total"))
