"""Frames to bytes: ``encode`` validates every field (the dataclasses do not) and
appends the CRC; the builders are the requests a client sends and the replies the meter
simulator sends."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from drivers.errors import EncodeError
from drivers.modbus_rtu.checks import (
    _require,
    _require_block,
    _require_read_function,
    _require_registers,
    _require_slave,
)
from drivers.modbus_rtu.codes import (
    _EXCEPTION_BIT,
    MAX_READ_COUNT,
    MAX_WRITE_COUNT,
    ExceptionCode,
    FunctionCode,
)
from drivers.modbus_rtu.crc import _with_crc
from drivers.modbus_rtu.frames import (
    ExceptionResponse,
    Frame,
    ReadRequest,
    ReadResponse,
    WriteMultipleRequest,
    WriteMultipleResponse,
    WriteSingle,
)


def _encode_read_request(frame: ReadRequest) -> bytes:
    slave = _require_slave(frame.slave, broadcast_ok=False)
    function = _require_read_function(frame.function)
    count = _require("count", frame.count, 1, MAX_READ_COUNT, "1..125 registers per read")
    address = _require_block(frame.address, count, "count")
    return struct.pack(">BBHH", slave, function, address, count)


def _encode_read_response(frame: ReadResponse) -> bytes:
    slave = _require_slave(frame.slave, broadcast_ok=False)
    function = _require_read_function(frame.function)
    registers = _require_registers("registers", frame.registers, MAX_READ_COUNT)
    return struct.pack(f">BBB{len(registers)}H", slave, function, 2 * len(registers), *registers)


def _encode_write_single(frame: WriteSingle) -> bytes:
    slave = _require_slave(frame.slave, broadcast_ok=True)
    address = _require("address", frame.address, 0, 0xFFFF, "0..65535 (0x0000..0xFFFF)")
    value = _require("value", frame.value, 0, 0xFFFF, "a 16-bit register 0..65535")
    return struct.pack(">BBHH", slave, FunctionCode.WRITE_SINGLE_REGISTER, address, value)


def _encode_write_multiple_request(frame: WriteMultipleRequest) -> bytes:
    slave = _require_slave(frame.slave, broadcast_ok=True)
    values = _require_registers("values", frame.values, MAX_WRITE_COUNT)
    address = _require_block(frame.address, len(values), "count")
    return struct.pack(
        f">BBHHB{len(values)}H",
        slave,
        FunctionCode.WRITE_MULTIPLE_REGISTERS,
        address,
        len(values),
        2 * len(values),
        *values,
    )


def _encode_write_multiple_response(frame: WriteMultipleResponse) -> bytes:
    slave = _require_slave(frame.slave, broadcast_ok=False)
    count = _require("count", frame.count, 1, MAX_WRITE_COUNT, "1..123 registers per write")
    address = _require_block(frame.address, count, "count")
    return struct.pack(">BBHH", slave, FunctionCode.WRITE_MULTIPLE_REGISTERS, address, count)


def _encode_exception(frame: ExceptionResponse) -> bytes:
    slave = _require_slave(frame.slave, broadcast_ok=False)
    function = _require("function", frame.function, 1, 0x7F, "a request function code 1..127")
    code = _require("code", frame.code, 1, 0xFF, "an exception code 1..255 (see ExceptionCode)")
    return bytes((slave, function | _EXCEPTION_BIT, code))


def encode(frame: Frame) -> bytes:
    """The complete ADU (with CRC) for ``frame``; raises EncodeError naming the bad field."""
    if isinstance(frame, ReadRequest):
        body = _encode_read_request(frame)
    elif isinstance(frame, ReadResponse):
        body = _encode_read_response(frame)
    elif isinstance(frame, WriteSingle):
        body = _encode_write_single(frame)
    elif isinstance(frame, WriteMultipleRequest):
        body = _encode_write_multiple_request(frame)
    elif isinstance(frame, WriteMultipleResponse):
        body = _encode_write_multiple_response(frame)
    elif isinstance(frame, ExceptionResponse):
        body = _encode_exception(frame)
    else:
        raise EncodeError(f"frame={frame!r}: expected one of the Frame dataclasses")
    return _with_crc(body)


# Client side (requests).


def read_holding(slave: int, address: int, count: int) -> bytes:
    return encode(ReadRequest(slave, FunctionCode.READ_HOLDING_REGISTERS, address, count))


def read_input(slave: int, address: int, count: int) -> bytes:
    return encode(ReadRequest(slave, FunctionCode.READ_INPUT_REGISTERS, address, count))


def write_single(slave: int, address: int, value: int) -> bytes:
    return encode(WriteSingle(slave, address, value))


def write_multiple(slave: int, address: int, values: Sequence[int]) -> bytes:
    return encode(WriteMultipleRequest(slave, address, tuple(values)))


# Server side (replies, for the meter simulator). Replies never come from address 0.


def read_response(slave: int, function: FunctionCode | int, registers: Sequence[int]) -> bytes:
    return encode(ReadResponse(slave, _require_read_function(function), tuple(registers)))


def write_single_response(slave: int, address: int, value: int) -> bytes:
    _require_slave(slave, broadcast_ok=False)
    return encode(WriteSingle(slave, address, value))


def write_multiple_response(slave: int, address: int, count: int) -> bytes:
    return encode(WriteMultipleResponse(slave, address, count))


def exception_response(
    slave: int, function: FunctionCode | int, code: ExceptionCode | int
) -> bytes:
    return encode(ExceptionResponse(slave, function, code))


def reply_length(request: Frame) -> int:
    """Bytes of the normal reply to ``request`` (an exception reply is always 5), so a
    transport can size its response timeout from ``wire_time``."""
    if isinstance(request, ReadRequest):
        return 5 + 2 * request.count
    if isinstance(request, WriteSingle | WriteMultipleRequest):
        return 8
    raise EncodeError(
        f"request={request!r}: expected a ReadRequest, WriteSingle or WriteMultipleRequest"
    )
