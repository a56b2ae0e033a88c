r"""Modbus RTU codec, sans-I/O: bytes in, frozen dataclasses out, and back.

References (section numbers of the public Modbus Organization documents):
  [SL]  MODBUS over Serial Line, Specification and Implementation Guide V1.02 (2006)
  [AP]  MODBUS Application Protocol Specification V1.1b3 (2012)

The RTU ADU ([SL] §2.5.1.1 "MODBUS Message RTU Framing"):

    >= t3.5 silence |<------------------ ADU, at most 256 bytes ------------------>| >= t3.5
                    +---------+----------+-------------------------+--------+--------+
                    |  slave  | function |          data           |  CRC   |  CRC   |
                    | address |   code   |    0..252 bytes, 16-bit |  low   |  high  |
                    |         |          |    fields big-endian    |  byte  |  byte  |
                    +---------+----------+-------------------------+--------+--------+
                       1 byte    1 byte   \                      /  CRC-16/MODBUS over
                                 \________ PDU, <= 253 bytes ___/    slave .. data

The PDUs this codec frames ([AP] §6.3, §6.4, §6.6, §6.12, §7), offsets from the slave byte:

    FC 03/04 request  | slave | fc | addr(2) | qty(2) | crc(2) |                   8 bytes
    FC 03/04 reply    | slave | fc | N = 2*qty | N bytes of registers | crc(2) |    5 + N
    FC 06 request     | slave | 06 | addr(2) | value(2) | crc(2) |                 8 bytes
      (the normal reply is an exact echo of the request)
    FC 16 request     | slave | 10 | addr(2) | qty(2) | N = 2*qty | N bytes | crc(2) | 9 + N
    FC 16 reply       | slave | 10 | addr(2) | qty(2) | crc(2) |                   8 bytes
    exception reply   | slave | fc + 0x80 | exception code | crc(2) |              5 bytes

RTU itself delimits frames by silence (t3.5), which a sans-I/O codec cannot see. So the
decoder derives each frame's length from its function code and byte-count / quantity
fields, and the transport calls ``Decoder.reset()`` after a t3.5 silence (or before each
request) so that a truncated frame cannot swallow the next one.
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal, TypeAlias

from drivers.errors import EncodeError, FrameError, MeterError
from drivers.framing import Consumed, StreamDecoder
from drivers.quantity_map import Mapped

__all__ = [
    "BROADCAST",
    "CANONICAL",
    "MAX_ADU_SIZE",
    "MAX_READ_COUNT",
    "MAX_SLAVE",
    "MAX_WRITE_COUNT",
    "METER_MODELS",
    "SDM120",
    "SDM630",
    "Decoder",
    "ExceptionCode",
    "ExceptionResponse",
    "Frame",
    "FunctionCode",
    "ReadRequest",
    "ReadResponse",
    "Register",
    "RequestRejected",
    "Role",
    "WriteMultipleRequest",
    "WriteMultipleResponse",
    "WriteSingle",
    "canonical_registers",
    "char_time",
    "check_response",
    "crc16",
    "decode_request",
    "decode_response",
    "describe_exception",
    "encode",
    "exception_response",
    "float32_to_registers",
    "plan_reads",
    "read_holding",
    "read_input",
    "read_response",
    "registers_to_float32",
    "reply_length",
    "t1_5",
    "t3_5",
    "unpack_floats",
    "wire_time",
    "write_multiple",
    "write_multiple_response",
    "write_single",
    "write_single_response",
]

# [SL] §2.3 (addressing rules): 0 is broadcast, 1..247 are individual slaves, 248..255
# are reserved. [SL] §2.2: a broadcast is a write that no slave answers.
BROADCAST = 0
MAX_SLAVE = 247
# [SL] §2.5.1.1: "The maximum size of a MODBUS RTU frame is 256 bytes."
MAX_ADU_SIZE = 256
# [AP] §6.3/§6.4: quantity of registers 1 to 125 (0x7D); §6.12: 1 to 123 (0x7B). Both
# limits keep the PDU within 253 bytes.
MAX_READ_COUNT = 125
MAX_WRITE_COUNT = 123
# Register addresses are 16 bits ([AP] §4.4), so a block must end at or below 0x10000.
_ADDRESS_SPACE = 0x10000
# [AP] §7: an exception reply carries the request's function code with the top bit set.
_EXCEPTION_BIT = 0x80

Role: TypeAlias = Literal["client", "server"]


# ----------------------------------------------------------------------------- CRC


def _make_crc_table() -> tuple[int, ...]:
    # [SL] Appendix B §6.2.2: polynomial 0xA001 (0x8005 bit-reversed), registers shifted
    # right because RTU sends the least significant bit of each character first.
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_CRC_TABLE = _make_crc_table()


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/MODBUS (init 0xFFFF, no final XOR); the ADU carries it low byte first."""
    crc = 0xFFFF
    for byte in data:
        crc = (crc >> 8) ^ _CRC_TABLE[(crc ^ byte) & 0xFF]
    return crc


def _with_crc(body: bytes) -> bytes:
    # [SL] §2.5.1.2: "the low-order byte of the field is appended first".
    return body + crc16(body).to_bytes(2, "little")


# ----------------------------------------------------------------------------- codes


class FunctionCode(IntEnum):
    READ_HOLDING_REGISTERS = 0x03  # [AP] §6.3
    READ_INPUT_REGISTERS = 0x04  # [AP] §6.4
    WRITE_SINGLE_REGISTER = 0x06  # [AP] §6.6
    WRITE_MULTIPLE_REGISTERS = 0x10  # [AP] §6.12


_READ_FUNCTIONS = (FunctionCode.READ_HOLDING_REGISTERS, FunctionCode.READ_INPUT_REGISTERS)


class ExceptionCode(IntEnum):
    # [AP] §7, table "MODBUS Exception Codes".
    ILLEGAL_FUNCTION = 0x01
    ILLEGAL_DATA_ADDRESS = 0x02
    ILLEGAL_DATA_VALUE = 0x03
    SERVER_DEVICE_FAILURE = 0x04
    ACKNOWLEDGE = 0x05
    SERVER_BUSY = 0x06
    MEMORY_PARITY_ERROR = 0x08
    GATEWAY_PATH_UNAVAILABLE = 0x0A
    GATEWAY_TARGET_FAILED = 0x0B

    @property
    def description(self) -> str:
        return _EXCEPTION_DESCRIPTIONS[self]


_EXCEPTION_DESCRIPTIONS: dict[ExceptionCode, str] = {
    ExceptionCode.ILLEGAL_FUNCTION: "illegal function: the server does not support this "
    "function code",
    ExceptionCode.ILLEGAL_DATA_ADDRESS: "illegal data address: the register address, or "
    "address + quantity, is outside what the server allows",
    ExceptionCode.ILLEGAL_DATA_VALUE: "illegal data value: a value in the request (such as "
    "the quantity or byte count) is not allowed",
    ExceptionCode.SERVER_DEVICE_FAILURE: "server device failure: an unrecoverable error "
    "occurred while the server was performing the action",
    ExceptionCode.ACKNOWLEDGE: "acknowledge: the request was accepted but needs a long time "
    "to process; poll for completion later",
    ExceptionCode.SERVER_BUSY: "server device busy: the server is processing a long command; "
    "retry later",
    ExceptionCode.MEMORY_PARITY_ERROR: "memory parity error: the server found a parity error "
    "in its memory",
    ExceptionCode.GATEWAY_PATH_UNAVAILABLE: "gateway path unavailable: the gateway could not "
    "allocate a path to the target",
    ExceptionCode.GATEWAY_TARGET_FAILED: "gateway target device failed to respond",
}


def describe_exception(code: int) -> str:
    try:
        return ExceptionCode(code).description
    except ValueError:
        return f"unknown exception code 0x{code:02X}"


def _function(value: int) -> FunctionCode | int:
    try:
        return FunctionCode(value)
    except ValueError:
        return value


def _exception_code(value: int) -> ExceptionCode | int:
    try:
        return ExceptionCode(value)
    except ValueError:
        return value


# ----------------------------------------------------------------------------- frames
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


# ----------------------------------------------------------------------------- encoding


def _show(value: object) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        number = int(value)  # an IntEnum's repr would hide the number
        return str(number) if number < 10 else f"{number} (0x{number:X})"
    return repr(value)


def _require(field: str, value: object, low: int, high: int, expected: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise EncodeError(f"{field}={_show(value)}: expected {expected}")
    return int(value)


def _require_slave(value: object, *, broadcast_ok: bool) -> int:
    if broadcast_ok:
        return _require("slave", value, 0, MAX_SLAVE, "0..247 (0 = broadcast)")
    return _require(
        "slave",
        value,
        1,
        MAX_SLAVE,
        "1..247 (broadcast 0 is only allowed for writes, and is never answered)",
    )


def _require_block(address: object, count: int, what: str) -> int:
    checked = _require("address", address, 0, 0xFFFF, "0..65535 (0x0000..0xFFFF)")
    if checked + count > _ADDRESS_SPACE:
        raise EncodeError(
            f"address={_show(checked)} with {what}={count}: the block would end at "
            f"0x{checked + count:X}; expected address + {what} <= 0x10000"
        )
    return checked


def _require_read_function(value: object) -> FunctionCode:
    if isinstance(value, bool) or not isinstance(value, int) or value not in _READ_FUNCTIONS:
        raise EncodeError(
            f"function={_show(value)}: expected READ_HOLDING_REGISTERS (3) or "
            "READ_INPUT_REGISTERS (4)"
        )
    return FunctionCode(value)


def _require_registers(field: str, values: object, high_count: int) -> tuple[int, ...]:
    if not isinstance(values, tuple | list):
        raise EncodeError(f"{field}={values!r}: expected a tuple of register values")
    if not 1 <= len(values) <= high_count:
        raise EncodeError(
            f"{field} has {len(values)} registers: expected 1..{high_count} per frame"
        )
    for index, value in enumerate(values):
        _require(f"{field}[{index}]", value, 0, 0xFFFF, "a 16-bit register 0..65535")
    return tuple(int(v) for v in values)


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


# ----------------------------------------------------------------------------- decoding


def _u16(buf: bytes | bytearray, offset: int) -> int:
    return (buf[offset] << 8) | buf[offset + 1]


def _reply_size(buf: bytes | bytearray, function: int) -> int | None:
    """Total reply length, or None while the byte count has not arrived yet."""
    if function & _EXCEPTION_BIT:
        if function == _EXCEPTION_BIT:
            raise FrameError(
                "function code 0x80: an exception reply for function 0, which does not exist",
                offset=1,
                raw=bytes(buf[:2]),
            )
        return 5
    if function in _READ_FUNCTIONS:
        if len(buf) < 3:
            return None
        byte_count = buf[2]
        if byte_count % 2 or not 2 <= byte_count <= 2 * MAX_READ_COUNT:
            raise FrameError(
                f"byte count {byte_count} in a function 0x{function:02X} reply: expected an "
                "even number 2..250 (1..125 registers)",
                offset=2,
                raw=bytes(buf[:3]),
            )
        return 5 + byte_count
    if function in (FunctionCode.WRITE_SINGLE_REGISTER, FunctionCode.WRITE_MULTIPLE_REGISTERS):
        return 8
    raise FrameError(
        f"function code 0x{function:02X}: expected a reply to 0x03, 0x04, 0x06 or 0x10, "
        "or an exception reply 0x81..0xFF",
        offset=1,
        raw=bytes(buf[:2]),
    )


def _request_size(buf: bytes | bytearray, slave: int, function: int) -> int | None:
    """Total request length, or None while the quantity / byte count have not arrived."""
    if function & _EXCEPTION_BIT:
        raise FrameError(
            f"function code 0x{function:02X} has the exception bit set: that is a reply, "
            "expected a request 0x03, 0x04, 0x06 or 0x10",
            offset=1,
            raw=bytes(buf[:2]),
        )
    if function in _READ_FUNCTIONS:
        if slave == BROADCAST:
            raise FrameError(
                f"read (function 0x{function:02X}) addressed to broadcast slave 0: expected "
                "slave 1..247, broadcast is only allowed for writes",
                offset=0,
                raw=bytes(buf[:2]),
            )
        return 8
    if function == FunctionCode.WRITE_SINGLE_REGISTER:
        return 8
    if function == FunctionCode.WRITE_MULTIPLE_REGISTERS:
        if len(buf) < 7:
            return None
        # The byte count decides the length, and [AP] §6.12 requires it to be exactly
        # 2 x quantity with quantity 1..123; anything else cannot be trusted for framing.
        quantity = _u16(buf, 4)
        if not 1 <= quantity <= MAX_WRITE_COUNT:
            raise FrameError(
                f"write quantity {quantity}: expected 1..123 registers",
                offset=4,
                raw=bytes(buf[:7]),
            )
        byte_count = buf[6]
        if byte_count != 2 * quantity:
            raise FrameError(
                f"byte count {byte_count} for a write of {quantity} registers: expected "
                f"{2 * quantity}",
                offset=6,
                raw=bytes(buf[:7]),
            )
        return 9 + byte_count
    raise FrameError(
        f"function code 0x{function:02X}: expected a request 0x03, 0x04, 0x06 or 0x10",
        offset=1,
        raw=bytes(buf[:2]),
    )


def _parse_reply(adu: bytes) -> Frame:
    slave, function = adu[0], adu[1]
    if function & _EXCEPTION_BIT:
        code = adu[2]
        if code == 0:
            raise FrameError("exception code 0: expected 1..255", offset=2, raw=adu)
        return ExceptionResponse(slave, _function(function & 0x7F), _exception_code(code))
    if function in _READ_FUNCTIONS:
        count = adu[2] // 2
        registers = struct.unpack_from(f">{count}H", adu, 3)
        return ReadResponse(slave, FunctionCode(function), registers)
    address, value = struct.unpack_from(">HH", adu, 2)
    if function == FunctionCode.WRITE_SINGLE_REGISTER:
        return WriteSingle(slave, address, value)
    if not 1 <= value <= MAX_WRITE_COUNT:
        raise FrameError(f"write quantity {value}: expected 1..123 registers", offset=4, raw=adu)
    if address + value > _ADDRESS_SPACE:
        raise FrameError(
            f"address 0x{address:04X} + quantity {value} runs past 0xFFFF", offset=2, raw=adu
        )
    return WriteMultipleResponse(slave, address, value)


def _parse_request(adu: bytes) -> Frame:
    slave, function = adu[0], adu[1]
    address, value = struct.unpack_from(">HH", adu, 2)
    if function == FunctionCode.WRITE_SINGLE_REGISTER:
        return WriteSingle(slave, address, value)
    code = FunctionCode(function)
    if function in _READ_FUNCTIONS and not 1 <= value <= MAX_READ_COUNT:
        raise RequestRejected(
            f"read quantity {value}: expected 1..125 registers",
            offset=4,
            raw=adu,
            slave=slave,
            function=code,
            code=ExceptionCode.ILLEGAL_DATA_VALUE,
        )
    if address + value > _ADDRESS_SPACE:
        raise RequestRejected(
            f"address 0x{address:04X} + quantity {value} runs past 0xFFFF",
            offset=2,
            raw=adu,
            slave=slave,
            function=code,
            code=ExceptionCode.ILLEGAL_DATA_ADDRESS,
        )
    if function in _READ_FUNCTIONS:
        return ReadRequest(slave, code, address, value)
    return WriteMultipleRequest(slave, address, struct.unpack_from(f">{value}H", adu, 7))


def _scan(role: Role, buf: bytes | bytearray) -> tuple[Frame, int] | int:
    """Look at the candidate frame at the start of ``buf``.

    Returns (frame, size) for a complete valid frame, or the total number of bytes needed
    before anything more can be decided. Raises FrameError for a candidate that is wrong
    in its header or CRC (the caller drops one byte), and Consumed for a frame whose CRC
    is valid but whose content is not (the caller drops the whole frame).
    """
    if not buf:
        return 1
    slave = buf[0]
    if slave > MAX_SLAVE:
        raise FrameError(
            f"slave address {slave} (0x{slave:02X}): expected 0..247, 248..255 are reserved",
            offset=0,
            raw=bytes(buf[:1]),
        )
    if role == "client" and slave == BROADCAST:
        raise FrameError(
            "slave address 0 in a reply: expected 1..247, broadcast requests are never answered",
            offset=0,
            raw=bytes(buf[:1]),
        )
    if len(buf) < 2:
        return 2
    function = buf[1]
    size = _reply_size(buf, function) if role == "client" else _request_size(buf, slave, function)
    if size is None:
        return 7 if role == "server" else 3
    if len(buf) < size:
        return size
    adu = bytes(buf[:size])
    received = adu[-2] | (adu[-1] << 8)
    computed = crc16(adu[:-2])
    if received != computed:
        raise FrameError(
            f"CRC mismatch: frame carries 0x{received:04X} (bytes {adu[-2]:02X} "
            f"{adu[-1]:02X}), expected 0x{computed:04X} computed over bytes 0..{size - 3}",
            offset=size - 2,
            raw=adu,
        )
    try:
        frame = _parse_reply(adu) if role == "client" else _parse_request(adu)
    except FrameError as error:
        raise Consumed(error, size) from None
    return frame, size


class Decoder(StreamDecoder[Frame]):
    """Streaming RTU decoder. ``role="client"`` decodes replies (the collector reading
    meters); ``role="server"`` decodes requests (the meter simulator).

    Usage: ``feed`` whatever arrived, then call ``next_frame`` until it returns None. A
    FrameError means the candidate at the head of the buffer was garbage: one byte has
    already been dropped, so simply call ``next_frame`` again. Every call either returns
    None, or consumes at least one byte, so the loop always ends (the buffer and its
    bookkeeping: ``drivers.framing``; RTU has no start byte, so every byte is a
    candidate slave address).
    """

    def __init__(self, role: Role, max_buffer: int = 1024) -> None:
        if role not in ("client", "server"):
            raise EncodeError(f"role={role!r}: expected 'client' or 'server'")
        cap = _require(
            "max_buffer", max_buffer, MAX_ADU_SIZE, 1 << 30, "at least 256 (one whole ADU)"
        )
        super().__init__(cap, functools.partial(_scan, role))
        self.role: Role = role

    def reset(self) -> None:
        """Forget buffered bytes: call after a t3.5 silence, which ends any frame
        ([SL] §2.5.1.1), and before sending a request."""
        super().reset()


def _decode_one(data: bytes, role: Role) -> Frame:
    try:
        result = _scan(role, data)
    except Consumed as consumed:
        raise consumed.error from None
    if isinstance(result, int):
        raise FrameError(
            f"incomplete ADU: got {len(data)} bytes, expected at least {result}",
            offset=len(data),
            raw=bytes(data),
        )
    frame, size = result
    if size != len(data):
        raise FrameError(
            f"{len(data) - size} trailing bytes after a complete {size}-byte ADU: "
            "expected exactly one frame",
            offset=size,
            raw=bytes(data),
        )
    return frame


def decode_response(data: bytes) -> Frame:
    """Decode exactly one complete reply ADU."""
    return _decode_one(data, "client")


def decode_request(data: bytes) -> Frame:
    """Decode exactly one complete request ADU."""
    return _decode_one(data, "server")


def check_response(request: ReadRequest, response: Frame) -> tuple[int, ...]:
    """The registers of ``response`` if it answers ``request``.

    Raises MeterError when the meter answered with an exception reply (retrying will not
    help), FrameError when the reply belongs to some other request (a stale reply or a
    second master: resynchronise and retry).
    """
    if response.slave != request.slave:
        raise FrameError(
            f"reply from slave {response.slave}: expected slave {request.slave}", offset=0
        )
    if isinstance(response, ExceptionResponse):
        if response.function != request.function:
            raise FrameError(
                f"exception reply for function 0x{int(response.function):02X}: expected "
                f"0x{int(request.function):02X}",
                offset=1,
            )
        try:
            raw = encode(response)
        except EncodeError:
            raw = b""  # built by hand with out-of-range fields; there are no wire bytes
        raise MeterError(
            meter=str(request.slave),
            code=int(response.code),
            description=describe_exception(int(response.code)),
            raw=raw,
        )
    if not isinstance(response, ReadResponse):
        raise FrameError(
            f"{type(response).__name__} reply: expected a ReadResponse to function "
            f"0x{int(request.function):02X}",
            offset=1,
        )
    if response.function != request.function:
        raise FrameError(
            f"reply function 0x{int(response.function):02X}: expected "
            f"0x{int(request.function):02X}",
            offset=1,
        )
    if len(response.registers) != request.count:
        raise FrameError(
            f"reply carries {len(response.registers)} registers (byte count "
            f"{2 * len(response.registers)}): expected {request.count} (byte count "
            f"{2 * request.count})",
            offset=2,
        )
    return response.registers


# ----------------------------------------------------------------------------- floats
# Eastron SDM meters hold each quantity as an IEEE-754 binary32 in two registers, high
# word first, each word big-endian ([AP] §4.2 only defines 16-bit registers; the word
# order is the vendor's: Eastron SDM630 Modbus protocol, "3X register" tables).


def registers_to_float32(hi: int, lo: int) -> float:
    _require("hi", hi, 0, 0xFFFF, "a 16-bit register 0..65535")
    _require("lo", lo, 0, 0xFFFF, "a 16-bit register 0..65535")
    value: float = struct.unpack(">f", struct.pack(">HH", hi, lo))[0]
    return value


def float32_to_registers(value: float) -> tuple[int, int]:
    try:
        hi, lo = struct.unpack(">HH", struct.pack(">f", value))
    except (OverflowError, struct.error):
        raise EncodeError(
            f"value={value!r}: expected a number that fits an IEEE-754 float32 "
            "(|x| <= 3.4028235e38, or inf/nan)"
        ) from None
    return int(hi), int(lo)


# ----------------------------------------------------------------------------- meters


@dataclass(frozen=True, slots=True)
class Register:
    name: str  # the register map's own name; stored under CANONICAL[name]
    address: int  # input-register address on the wire (the manual's 3xxxx number - 30001)
    unit: str
    description: str
    phases: int  # the phase the quantity belongs to: 1, 2 or 3; 0 = the whole system
    count: int = 2  # registers per value: one float32


# Addresses from the Eastron SDM630 / SDM120 Modbus protocol's input-register tables,
# function 04 (docs/protocols.md §2.4).
SDM630: dict[str, Register] = {
    r.name: r
    for r in (
        Register("voltage_l1", 0x0000, "V", "Phase 1 line to neutral voltage", 1),
        Register("voltage_l2", 0x0002, "V", "Phase 2 line to neutral voltage", 2),
        Register("voltage_l3", 0x0004, "V", "Phase 3 line to neutral voltage", 3),
        Register("current_l1", 0x0006, "A", "Phase 1 current", 1),
        Register("current_l2", 0x0008, "A", "Phase 2 current", 2),
        Register("current_l3", 0x000A, "A", "Phase 3 current", 3),
        Register("power_l1", 0x000C, "W", "Phase 1 active power", 1),
        Register("power_l2", 0x000E, "W", "Phase 2 active power", 2),
        Register("power_l3", 0x0010, "W", "Phase 3 active power", 3),
        Register("power_total", 0x0034, "W", "Total system active power", 0),
        Register("frequency", 0x0046, "Hz", "Frequency of supply voltages", 0),
        Register("energy_import", 0x0048, "kWh", "Import active energy", 0),
        Register("energy_export", 0x004A, "kWh", "Export active energy", 0),
        Register("energy_total", 0x0156, "kWh", "Total active energy", 0),
        Register("reactive_energy_total", 0x0158, "kvarh", "Total reactive energy", 0),
    )
}

# The single-phase meters use the same addresses for the quantities they have.
SDM120: dict[str, Register] = {
    name: SDM630[name]
    for name in (
        "voltage_l1",
        "current_l1",
        "power_l1",
        "frequency",
        "energy_import",
        "energy_export",
        "energy_total",
    )
}

METER_MODELS: dict[str, dict[str, Register]] = {"sdm630": SDM630, "sdm120": SDM120}

# The SDM registers in the canonical vocabulary (contract.quantities, docs/quantities.md):
# the one table that says what each register is stored as. Powers come in W and are
# stored in kW like every other meter's; "total active energy" is import + export, the
# combination DL/T 645 meters call combined active energy by default.
CANONICAL: dict[str, Mapped] = {
    "voltage_l1": Mapped("voltage_a", "V"),
    "voltage_l2": Mapped("voltage_b", "V"),
    "voltage_l3": Mapped("voltage_c", "V"),
    "current_l1": Mapped("current_a", "A"),
    "current_l2": Mapped("current_b", "A"),
    "current_l3": Mapped("current_c", "A"),
    "power_l1": Mapped("power_a", "kW", -3),
    "power_l2": Mapped("power_b", "kW", -3),
    "power_l3": Mapped("power_c", "kW", -3),
    "power_total": Mapped("power_total", "kW", -3),
    "frequency": Mapped("frequency", "Hz"),
    "energy_import": Mapped("energy_fwd_total", "kWh"),
    "energy_export": Mapped("energy_rev_total", "kWh"),
    "energy_total": Mapped("energy_combined_total", "kWh"),
    "reactive_energy_total": Mapped("reactive_energy_total", "kvarh"),
}


def canonical_registers(model: str) -> dict[str, Register]:
    """The registers of a meter family by canonical name, in register-map order."""
    return {CANONICAL[r.name].name: r for r in METER_MODELS[model].values()}


def plan_reads(
    registers: Iterable[Register], max_gap: int = 0, max_count: int = MAX_READ_COUNT
) -> list[tuple[int, int]]:
    """(address, count) FC 04 reads covering ``registers``, as few as possible.

    Two registers share a read only if at most ``max_gap`` unwanted registers lie between
    them: reading across gaps saves a round trip (t3.5 + turnaround + header, ~30 ms at
    9600 baud) but some meters answer ILLEGAL_DATA_ADDRESS for unmapped addresses, so the
    default is 0.
    """
    _require("max_gap", max_gap, 0, 0xFFFF, "0..65535 registers")
    _require("max_count", max_count, 1, MAX_READ_COUNT, "1..125 registers per read")
    wanted = sorted(registers, key=lambda r: (r.address, r.count))
    plan: list[tuple[int, int]] = []
    start = end = -1
    for register in wanted:
        _require(
            f"{register.name}.count", register.count, 1, max_count, f"1..{max_count} registers"
        )
        _require_block(register.address, register.count, f"{register.name}.count")
        low, high = register.address, register.address + register.count
        if start >= 0:
            # Overlapping registers give a negative gap, so they always merge.
            if low - end <= max_gap and max(end, high) - start <= max_count:
                end = max(end, high)
                continue
            plan.append((start, end - start))
        start, end = low, high
    if start >= 0:
        plan.append((start, end - start))
    return plan


def unpack_floats(
    address: int, registers: Sequence[int], wanted: Iterable[Register]
) -> dict[str, float]:
    """Values of ``wanted`` out of one read that started at ``address`` (see plan_reads)."""
    values: dict[str, float] = {}
    for register in wanted:
        index = register.address - address
        if index < 0 or index + 2 > len(registers):
            raise EncodeError(
                f"{register.name} at 0x{register.address:04X}: expected it inside the read "
                f"of {len(registers)} registers at 0x{address:04X}"
            )
        values[register.name] = registers_to_float32(registers[index], registers[index + 1])
    return values


# ----------------------------------------------------------------------------- timing


def char_time(baud: int, bits_per_char: int = 11) -> float:
    """Seconds per character. [SL] §2.5.1: RTU characters are 11 bits (start, 8 data,
    parity or a second stop, stop); meters set to 8N1 use 10."""
    _require("baud", baud, 1, 10_000_000, "a positive baud rate")
    _require("bits_per_char", bits_per_char, 7, 12, "7..12 bits per character")
    return bits_per_char / baud


def t1_5(baud: int, bits_per_char: int = 11) -> float:
    """Longest silence allowed inside a frame ([SL] §2.5.1.1); fixed 750 us above 19200."""
    character = char_time(baud, bits_per_char)  # validates the arguments
    return 0.000750 if baud > 19200 else 1.5 * character


def t3_5(baud: int, bits_per_char: int = 11) -> float:
    """Silence that ends a frame ([SL] §2.5.1.1); fixed 1.75 ms above 19200 baud, since a
    character-based gap would be too short for the receiving UART and software."""
    character = char_time(baud, bits_per_char)  # validates the arguments
    return 0.001750 if baud > 19200 else 3.5 * character


def wire_time(size: int, baud: int, bits_per_char: int = 11) -> float:
    """Seconds to transmit ``size`` bytes back to back (without the t3.5 around them)."""
    _require("size", size, 0, 1 << 30, "a byte count >= 0")
    return size * char_time(baud, bits_per_char)
