"""Register values: the bytes of a ``DataId`` to a Python value and back, and as text.

The reader decodes, the simulator encodes, and the stores and the command line take
the text forms; one ``Kind`` decides the layout for all of them.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from drivers.dlt645.data_ids import DataId
from drivers.dlt645.frame import decode_address, encode_address
from drivers.dlt645.packed_bcd import _datetime_bcd, _parse_datetime, _year_bcd, bcd, from_bcd
from drivers.errors import EncodeError, FrameError

Value = Decimal | int | dt.date | dt.time | dt.datetime | str | tuple[Decimal, ...]


def decode_value(entry: DataId, raw: bytes) -> Value:
    """Meter's value bytes (offset already removed, low byte first) → a Python value."""
    kind = entry.kind
    if kind == "bcd" and len(raw) == entry.length:
        digits = raw[::-1].hex()
        if digits.isdigit():  # every nibble 0..9: the usual reply, as `from_bcd` reads it
            return Decimal(int(digits)).scaleb(-entry.decimals)
    what = f"{entry.name} ({entry.code})"
    if len(raw) != entry.length:
        raise FrameError(f"{what}: {len(raw)} value bytes, expected {entry.length}")
    if kind == "bcd":
        return Decimal(from_bcd(raw, what=what)).scaleb(-entry.decimals)
    if kind == "sbcd":
        if raw and all(b == 0xFF for b in raw):
            # Checked before the sign bit is masked off, which would leave 0x7F behind.
            raise FrameError(f"{what}: all bytes 0xFF (the meter does not support it)")
        negative = bool(raw[-1] & 0x80)
        try:
            magnitude = from_bcd(raw[:-1] + bytes([raw[-1] & 0x7F]), what=what)
        except FrameError as exc:
            if exc.offset != len(raw) - 1:
                raise
            # Name the byte as it arrived, not with its sign bit masked off.
            raise FrameError(
                f"{what}: byte {exc.offset} is 0x{raw[-1]:02X}, not BCD beside its sign bit",
                offset=exc.offset,
            ) from None
        value = Decimal(magnitude).scaleb(-entry.decimals)
        return -value if negative else value
    if kind == "count":
        return from_bcd(raw, what=what)
    if kind == "word":
        return int.from_bytes(raw, "little")
    if kind == "address":
        return decode_address(raw)
    if kind == "date":
        from_bcd(raw, what=what)  # validate first: per-field slices would all report byte 0
        weekday = from_bcd(raw[0:1], what=what)
        day, month, year = (from_bcd(raw[i : i + 1], what=what) for i in (1, 2, 3))
        try:
            date = dt.date(2000 + year, month, day)
        except ValueError as exc:
            raise FrameError(f"{what}: {exc}") from None
        if weekday > 6:
            raise FrameError(f"{what}: weekday {weekday}, expected 0..6", offset=0)
        return date
    if kind == "time":
        from_bcd(raw, what=what)  # validate first: per-field slices would all report byte 0
        second, minute, hour = (from_bcd(raw[i : i + 1], what=what) for i in range(3))
        try:
            return dt.time(hour, minute, second)
        except ValueError as exc:
            raise FrameError(f"{what}: {exc}") from None
    if kind == "datetime5":
        return _parse_datetime(raw, "mhDMY", what)
    if kind == "energy_block":
        return tuple(
            Decimal(from_bcd(raw[i : i + 4], what=what)).scaleb(-entry.decimals)
            for i in range(0, entry.length, 4)
        )
    raise AssertionError(kind)


def encode_value(entry: DataId, value: Value) -> bytes:
    """The inverse of ``decode_value`` (the simulator's side)."""
    kind = entry.kind
    what = f"{entry.name} ({entry.code})"
    if kind in ("bcd", "sbcd"):
        if not isinstance(value, Decimal | int):
            raise EncodeError(f"{what}: expected a Decimal, got {type(value).__name__}")
        scaled = Decimal(value).scaleb(entry.decimals)
        if scaled != scaled.to_integral_value():
            raise EncodeError(f"{what}: {value} has more than {entry.decimals} decimals")
        number = int(scaled)
        negative = number < 0
        if negative and kind == "bcd":
            raise EncodeError(f"{what}: {value} is negative, the register is unsigned")
        digits = entry.length * 2
        limit = 10**digits if kind == "bcd" else 8 * 10 ** (digits - 1)
        if abs(number) >= limit:
            raise EncodeError(f"{what}: {value} out of range")
        raw = bytearray(bcd(abs(number), digits))
        if negative:
            raw[-1] |= 0x80
        return bytes(raw)
    if kind == "count":
        if not isinstance(value, int):
            raise EncodeError(f"{what}: expected an int")
        return bcd(value, entry.length * 2)
    if kind == "word":
        if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            raise EncodeError(f"{what}: expected an int 0..65535")
        return value.to_bytes(2, "little")
    if kind == "address":
        if not isinstance(value, str):
            raise EncodeError(f"{what}: expected an address string")
        return encode_address(value)
    if kind == "date":
        if not isinstance(value, dt.date):
            raise EncodeError(f"{what}: expected a date")
        weekday = (value.weekday() + 1) % 7  # Python: Monday 0; DL/T 645: Sunday 0
        year = _year_bcd(value.year)
        return bcd(weekday, 2) + bcd(value.day, 2) + bcd(value.month, 2) + bcd(year, 2)
    if kind == "time":
        if not isinstance(value, dt.time):
            raise EncodeError(f"{what}: expected a time")
        return bcd(value.second, 2) + bcd(value.minute, 2) + bcd(value.hour, 2)
    if kind == "datetime5":
        if not isinstance(value, dt.datetime):
            raise EncodeError(f"{what}: expected a datetime")
        return _datetime_bcd(value, "mhDMY")
    if kind == "energy_block":
        if not isinstance(value, tuple) or len(value) * 4 != entry.length:
            raise EncodeError(f"{what}: expected {entry.length // 4} Decimal values")
        part = DataId(entry.di, entry.name, entry.description, "bcd", 4, entry.decimals)
        return b"".join(encode_value(part, v) for v in value)
    raise AssertionError(kind)


def format_value(entry: DataId, value: Value) -> str:
    """Human/JSON text of a value: exact decimals, ISO dates, hex status words."""
    if entry.kind == "word" and isinstance(value, int):
        return f"0x{value:04X}"
    if isinstance(value, tuple):
        return " / ".join(str(v) for v in value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def numeric_text(entry: DataId, value: Value) -> str:
    """A value as exact decimal text, for stores that keep numbers only.

    Dates become YYYYMMDD, times hhmmss, freeze times YYYYMMDDhhmm, status words their
    integer value and addresses their 12 digits; an energy block is not one number.
    """
    if isinstance(value, Decimal | int):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.strftime("%Y%m%d%H%M")
    if isinstance(value, dt.date):
        return value.strftime("%Y%m%d")
    if isinstance(value, dt.time):
        return value.strftime("%H%M%S")
    if isinstance(value, str) and value.isdigit():
        return value
    raise EncodeError(f"{entry.name} ({entry.code}): {value!r} is not a single number")
