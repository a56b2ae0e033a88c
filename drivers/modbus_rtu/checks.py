"""Range checks on what a caller hands the codec, shared by the encoder, the decoder,
the register maps and the timing: each raises EncodeError naming the field, its value
and what was expected, so a bad argument never reaches the wire."""

from __future__ import annotations

from drivers.errors import EncodeError
from drivers.modbus_rtu.codes import (
    _ADDRESS_SPACE,
    _READ_FUNCTIONS,
    MAX_SLAVE,
    FunctionCode,
)


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
