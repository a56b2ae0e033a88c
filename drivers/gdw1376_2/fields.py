"""Readers and writers for data-unit fields; offsets in their FrameErrors count from the
first data-unit byte.

See the package docstring (``drivers.gdw1376_2``) for the frame layout and sources.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from drivers.dlt645 import bcd, from_bcd
from drivers.errors import EncodeError, FrameError
from drivers.gdw1376_2.codes import ADDRESS_LEN
from drivers.gdw1376_2.frame import decode_node_address, encode_node_address

# --------------------------------------------------------------------------------------
# Data units. Offsets in their FrameErrors count from the first data-unit byte.


class Cursor:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int, field_name: str) -> bytes:
        if self.pos + n > len(self.data):
            raise FrameError(
                f"{self.what}: {field_name} needs {n} bytes, "
                f"the data unit ends after {len(self.data) - self.pos}",
                offset=self.pos,
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self, field_name: str) -> int:
        return self.take(1, field_name)[0]

    def word(self, field_name: str) -> int:
        return int.from_bytes(self.take(2, field_name), "little")

    def address(self, field_name: str) -> str:
        return decode_node_address(self.take(ADDRESS_LEN, field_name))

    def date(self, field_name: str) -> dt.date:
        at = self.pos
        raw = self.take(3, field_name)
        what = f"{self.what}: {field_name}"
        try:
            from_bcd(raw, what=what)
        except FrameError as exc:
            raise FrameError(exc.reason, offset=at + (exc.offset or 0)) from None
        day, month, year = (from_bcd(raw[i : i + 1]) for i in range(3))
        try:
            return dt.date(2000 + year, month, day)
        except ValueError as exc:
            raise FrameError(f"{what}: {exc}", offset=at) from None

    def end(self) -> None:
        if self.pos != len(self.data):
            raise FrameError(
                f"{self.what}: {len(self.data) - self.pos} bytes after the last field",
                offset=self.pos,
            )


def date_bytes(when: dt.date) -> bytes:
    # Format A.20 of the 376 family [M]: DD MM YY in BCD, day first. Matches captured
    # F10 dates 28 06 16 / 27 06 16 (module firmware of June 2016, log of 2017).
    if not 2000 <= when.year <= 2099:
        raise EncodeError(f"date {when}: only 2000..2099 fit in two BCD year digits")
    return bcd(when.day, 2) + bcd(when.month, 2) + bcd(when.year % 100, 2)


def latin1(text: str, n: int, what: str) -> bytes:
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raise EncodeError(f"{what} {text!r}: expected {n} single-byte characters") from None
    if len(raw) != n:
        raise EncodeError(f"{what} {text!r}: expected {n} characters")
    return raw


def address_bytes(addresses: Iterable[str]) -> bytes:
    return b"".join(encode_node_address(a) for a in addresses)
