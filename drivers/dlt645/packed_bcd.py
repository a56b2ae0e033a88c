"""Packed BCD, least significant byte first: how DL/T 645 carries numbers and times.

Requests (freeze, broadcast time, relay deadline), register values and the 1997 and
load-profile modules all lay their fields out this way, so it sits below all of them.
"""

from __future__ import annotations

import datetime as dt

from drivers.errors import EncodeError, FrameError


def bcd(value: int, digits: int) -> bytes:
    """Unsigned integer → packed BCD, least significant byte first (the 645 byte order)."""
    if value < 0 or value >= 10**digits:
        raise EncodeError(f"value {value} does not fit in {digits} BCD digits")
    text = str(value).rjust(digits, "0")
    return bytes(int(text[i : i + 2], 16) for i in range(digits - 2, -1, -2))


def from_bcd(raw: bytes, *, what: str = "value") -> int:
    """Packed BCD, least significant byte first → int. Names the bad byte on failure."""
    value = 0
    for i in range(len(raw) - 1, -1, -1):
        b = raw[i]
        hi, lo = b >> 4, b & 0xF
        if hi > 9 or lo > 9:
            if all(x == 0xFF for x in raw):
                raise FrameError(f"{what}: all bytes 0xFF (the meter does not support it)")
            raise FrameError(f"{what}: byte {i} is 0x{b:02X}, not BCD", offset=i)
        value = value * 100 + hi * 10 + lo
    return value


def _year_bcd(year: int) -> int:
    # The meter stores YY and reads it back as 20YY: any other century would come back wrong.
    if not 2000 <= year <= 2099:
        raise EncodeError(f"year {year}: DL/T 645 carries only 2000..2099 (two BCD digits)")
    return year % 100


def _datetime_bcd(when: dt.datetime, fields: str) -> bytes:
    values = {
        "s": when.second,
        "m": when.minute,
        "h": when.hour,
        "D": when.day,
        "M": when.month,
        "Y": _year_bcd(when.year),
    }
    return b"".join(bcd(values[f], 2) for f in fields)


def _parse_datetime(raw: bytes, fields: str, what: str) -> dt.datetime:
    from_bcd(raw, what=what)  # validate first: per-field slices would all report byte 0
    parts = {f: from_bcd(raw[i : i + 1], what=what) for i, f in enumerate(fields)}
    try:
        return dt.datetime(
            2000 + parts["Y"],
            parts["M"],
            parts["D"],
            parts.get("h", 0),
            parts.get("m", 0),
            parts.get("s", 0),
        )
    except ValueError as exc:
        raise FrameError(f"{what}: {exc}") from None
