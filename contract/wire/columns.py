"""Integer columns and strict CBOR: the building blocks every body is made of.

A column of integers travels as zig-zag values in the narrowest of 1/2/4/8 bytes,
with the bytes transposed into planes (all low bytes, then all next bytes...). Deltas
are small, so the high planes are nearly all zero and the compressor makes them
almost free, while the whole column is packed and unpacked by C code. A column whose
values do not fit in 64 bits travels as a plain CBOR array of integers instead.
"""

from __future__ import annotations

import io
import re
import sys
from array import array
from collections.abc import Sequence
from itertools import accumulate
from typing import cast

import cbor2

from contract.wire.errors import fail

_TYPECODES = {array(c).itemsize: c for c in "BHILQ"[::-1]}
_BIG_ENDIAN = sys.byteorder == "big"
_LIST_LIMIT = 1 << 128  # bound on the plain-array fallback, so decoding stays cheap
_DIGITS = re.compile(r"[0-9]{1,38}")


def pack(values: Sequence[int]) -> bytes | list[int]:
    if not values:
        return b""
    zz = [v << 1 if v >= 0 else (-v << 1) - 1 for v in values]
    top = max(zz)
    for width in (1, 2, 4, 8):
        if top < 1 << (8 * width):
            break
    else:
        return list(values)
    column = array(_TYPECODES[width], zz)
    if _BIG_ENDIAN:
        column.byteswap()
    raw = column.tobytes()
    return bytes((width,)) + b"".join(raw[i::width] for i in range(width))


def unpack(column: object, n: int, what: str) -> list[int]:
    if isinstance(column, list):
        if len(column) != n or not all(
            type(v) is int and -_LIST_LIMIT < v < _LIST_LIMIT for v in column
        ):
            fail("bad_layout", f"column {what}: expected {n} integers below 2**128")
        return cast(list[int], column)
    if not isinstance(column, bytes):
        fail("bad_layout", f"column {what}: expected bytes or an array, got {type(column)}")
    if n == 0:
        if column:
            fail("bad_layout", f"column {what}: expected no bytes for 0 values")
        return []
    width = column[0] if column else 0
    if width not in _TYPECODES or len(column) != 1 + n * width:
        fail(
            "bad_layout",
            f"column {what}: {len(column)} bytes, expected 1 + {n} x width (1, 2, 4 or 8)",
        )
    raw = bytearray(n * width)
    for i in range(width):
        raw[i::width] = column[1 + i * n : 1 + (i + 1) * n]
    if width == 1:  # the commonest width: one table lookup a value
        return list(map(_ZIGZAG_BYTE.__getitem__, raw))
    values = array(_TYPECODES[width])
    values.frombytes(raw)
    if _BIG_ENDIAN:
        values.byteswap()
    if not any(values):
        return [0] * n
    return [(u >> 1) ^ -(u & 1) for u in values]


_ZIGZAG_BYTE = [(u >> 1) ^ -(u & 1) for u in range(256)]


def column_len(column: bytes, what: str) -> int:
    """How many values a packed column holds (for a column whose count is not sent)."""
    if not column:
        return 0
    if column[0] not in _TYPECODES or (len(column) - 1) % column[0]:
        fail("bad_layout", f"{what}: column length is not a multiple of its width")
    return (len(column) - 1) // column[0]


def loads(body: bytes) -> object:
    """Exactly one well-formed CBOR item, nothing after it."""
    stream = io.BytesIO(body)
    try:
        item = cbor2.CBORDecoder(stream).decode()
    except Exception as exc:  # cbor2 raises many types (and RecursionError) on bad input
        fail("bad_cbor", f"body is not one well-formed CBOR item ({type(exc).__name__}: {exc})")
    if stream.tell() != len(body):
        # cbor2.loads would ignore them; a strict reader keeps one encoding per message.
        fail("bad_cbor", f"{len(body) - stream.tell()} bytes after the CBOR item, expected none")
    return item


def int_field(value: object, what: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        fail("bad_layout", f"{what} is {value!r}, expected an integer {low}..{high}")
    return value


def texts(value: object, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        fail("bad_layout", f"{what}: expected an array of text")
    return cast(list[str], value)


def pack_meters(meters: Sequence[str]) -> tuple[int, object]:
    """A sorted meter table as (width, field): addresses that are all digits of one
    width travel as a column of deltas between their numbers (a byte or two each),
    any other table as its texts with width 0."""
    widths = {len(m) for m in meters}
    if len(widths) != 1 or not all(_DIGITS.fullmatch(m) for m in meters):
        return 0, list(meters)
    numbers = [int(m) for m in meters]
    return widths.pop(), pack([b - a for a, b in zip([0, *numbers], numbers, strict=False)])


def unpack_meters(width_field: object, meters_field: object) -> list[str]:
    """The meter table `pack_meters` wrote; a bad width or column is a ``bad_layout``."""
    width = int_field(width_field, "meter width", 0, 38)
    if not width:
        return texts(meters_field, "meters")
    if not isinstance(meters_field, bytes | list):
        fail("bad_layout", "meters: expected a column of numbers")
    count = (
        len(meters_field) if isinstance(meters_field, list) else column_len(meters_field, "meters")
    )
    numbers = accumulate(unpack(meters_field, count, "meters"))
    meters = [str(v).rjust(width, "0") for v in numbers]
    if any(len(m) != width or not _DIGITS.fullmatch(m) for m in meters):
        fail("bad_layout", f"meters: expected {width}-digit numbers")
    return meters
