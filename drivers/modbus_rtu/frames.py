"""The frames as values: one frozen dataclass per PDU shape ([AP] §6.3, §6.4, §6.6,
§6.12, §7), and the error a server raises for a request it must refuse."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from drivers.errors import FrameError
from drivers.modbus_rtu.codes import ExceptionCode, FunctionCode

# The dataclasses are plain values: construction does not validate, ``encode`` does (so a
# test can build an out-of-range frame and see EncodeError). Every frame the decoder
# yields is within range and re-encodes to the exact bytes it came from.


@dataclass(frozen=True, slots=True)
class ReadRequest:
    slave: int
    function: FunctionCode  # READ_HOLDING_REGISTERS or READ_INPUT_REGISTERS
    address: int
    count: int


@dataclass(frozen=True, slots=True)
class ReadResponse:
    slave: int
    function: FunctionCode  # READ_HOLDING_REGISTERS or READ_INPUT_REGISTERS
    registers: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class WriteSingle:
    # [AP] §6.6: "The normal response is an echo of the request", so one shape serves both.
    slave: int
    address: int
    value: int


@dataclass(frozen=True, slots=True)
class WriteMultipleRequest:
    slave: int
    address: int
    values: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class WriteMultipleResponse:
    slave: int
    address: int
    count: int


@dataclass(frozen=True, slots=True)
class ExceptionResponse:
    slave: int
    # The request's function code without the 0x80 bit. Any 1..127 is legal on the wire
    # (a server answers ILLEGAL_FUNCTION to codes it does not know), hence ``| int``.
    function: FunctionCode | int
    code: ExceptionCode | int


Frame: TypeAlias = (
    ReadRequest
    | ReadResponse
    | WriteSingle
    | WriteMultipleRequest
    | WriteMultipleResponse
    | ExceptionResponse
)


class RequestRejected(FrameError):
    """A request that is well framed (its CRC is valid) but that [AP] says the server must
    refuse with an exception reply, e.g. a read of 0 or 126 registers ([AP] §6.3 state
    diagram: quantity out of range -> exception 03; address + quantity out of range ->
    exception 02). Only the "server" decoder raises it; the simulator answers with
    ``exception_response(e.slave, e.function, e.code)`` unless ``e.slave`` is 0
    (broadcast requests are never answered, [SL] §2.2).
    """

    def __init__(
        self,
        reason: str,
        *,
        offset: int,
        raw: bytes,
        slave: int,
        function: FunctionCode,
        code: ExceptionCode,
    ) -> None:
        super().__init__(reason, offset=offset, raw=raw)
        self.slave = slave
        self.function = function
        self.code = code
