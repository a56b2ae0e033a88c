"""Bytes to frames: the length of each candidate frame from its function code and
byte-count / quantity fields (RTU's own delimiter, silence, is invisible here), its CRC,
its fields; the streaming ``Decoder``, the one-ADU decoders, and ``check_response``
(does a reply answer the request that was sent)."""

from __future__ import annotations

import functools
import struct

from drivers.errors import EncodeError, FrameError, MeterError
from drivers.framing import Consumed, StreamDecoder
from drivers.modbus_rtu.checks import _require
from drivers.modbus_rtu.codes import (
    _ADDRESS_SPACE,
    _EXCEPTION_BIT,
    _READ_FUNCTIONS,
    BROADCAST,
    MAX_ADU_SIZE,
    MAX_READ_COUNT,
    MAX_SLAVE,
    MAX_WRITE_COUNT,
    ExceptionCode,
    FunctionCode,
    Role,
    _exception_code,
    _function,
    describe_exception,
)
from drivers.modbus_rtu.crc import crc16
from drivers.modbus_rtu.encoder import encode
from drivers.modbus_rtu.frames import (
    ExceptionResponse,
    Frame,
    ReadRequest,
    ReadResponse,
    RequestRejected,
    WriteMultipleRequest,
    WriteMultipleResponse,
    WriteSingle,
)


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
