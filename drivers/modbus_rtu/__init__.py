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

The package: `codes` (limits, function and exception codes), `crc` (CRC-16/MODBUS),
`frames` (the frame dataclasses), `checks` (range checks on arguments), `encoder`
(frames to bytes, request and reply builders), `decoder` (bytes to frames, streaming),
`registers` (float32 values, the SDM register maps, read planning), `timing` (t1.5,
t3.5, wire time).
"""

from __future__ import annotations

from drivers.modbus_rtu.codes import (
    BROADCAST,
    MAX_ADU_SIZE,
    MAX_READ_COUNT,
    MAX_SLAVE,
    MAX_WRITE_COUNT,
    ExceptionCode,
    FunctionCode,
    Role,
    describe_exception,
)
from drivers.modbus_rtu.crc import (
    crc16,
)
from drivers.modbus_rtu.decoder import (
    Decoder,
    check_response,
    decode_request,
    decode_response,
)
from drivers.modbus_rtu.encoder import (
    encode,
    exception_response,
    read_holding,
    read_input,
    read_response,
    reply_length,
    write_multiple,
    write_multiple_response,
    write_single,
    write_single_response,
)
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
from drivers.modbus_rtu.registers import (
    CANONICAL,
    METER_MODELS,
    SDM120,
    SDM630,
    Register,
    canonical_registers,
    float32_to_registers,
    plan_reads,
    registers_to_float32,
    unpack_floats,
)
from drivers.modbus_rtu.timing import (
    char_time,
    t1_5,
    t3_5,
    wire_time,
)

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
