"""Reading named quantities from a meter over a bus: the one place that turns "voltage_a
of meter 000000000001" into request bytes, a transaction and an exact value.

Used by the field CLI's direct mode and by the daemon's poller alike, so both read a
meter the same way.
"""

from __future__ import annotations

import datetime as dt
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar

from drivers import dlt645, modbus_rtu
from drivers.errors import EncodeError, FrameError
from drivers.meter_ids import modbus_slave_problem
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

    async def read_raw(self, address: str, di: int) -> bytes:
        """Value bytes of one DI, following 0x12 follow-up frames when the meter has more."""
        frame = await self._exchange(
            dlt645.build_read(address, di), address, dlt645.Function.READ_DATA
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
