"""The limits of [SL] and [AP], the function and exception codes, and the wire's
client / server roles: what every other part of the codec checks a frame against."""

from __future__ import annotations

from enum import IntEnum
from typing import Literal, TypeAlias

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
