"""DL/T 645-1997 multi-function meter protocol: a sans-I/O codec.

The frame is DL/T 645-2007's, so the framing (start bytes, address, the 0x33 offset,
checksum, streaming Decoder) is imported from ``drivers.dlt645`` and only the meaning
differs::

    [FE ..]  68  A0..A5  68  C  L  DI0 DI1  value ...  CS  16
                 address      |  |  two-byte data identifier (DI0 first), value bytes
                 low first    |  |  low first; every DATA byte +0x33 on the wire
                              |  length of DATA
                              control: bit7 reply, bit6 error reply, bit5 more frames,
                              bits4..0 function (0x01 read, 0x02 read follow-up,
                              0x03 re-read, 0x04 write, 0x08 broadcast time, 0x0A write
                              address, 0x0C change baud, 0x0F change password,
                              0x10 clear maximum demand)

    read 9010:   68 A0..A5 68 01 02 43 C3 CS 16          (10 90 + 0x33 each)
    its answer:  68 A0..A5 68 81 06 43 C3 v0 v1 v2 v3 CS 16
    refused:     68 A0..A5 68 C1 01 ERR CS 16

1997 meters usually talk at 1200 baud, 8E1 (2007 meters at 2400). Values are BCD,
unsigned, least significant byte first.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum, IntFlag
from typing import Literal, TypeAlias

from drivers.dlt645 import (
    BROADCAST,
    DIR_REPLY,
    ERROR_REPLY,
    MORE_FOLLOWS,
    WILDCARD_ALL,
    Decoder,
    Frame,
    address_matches,
    bcd,
    decode_address,
    decode_frame,
    encode_address,
    encode_frame,
    from_bcd,
)
from drivers.errors import EncodeError, FrameError, MeterError
from drivers.quantity_map import Mapped

__all__ = [
    "BROADCAST",
    "DATA_IDS",
    "DATA_IDS_BY_NAME",
    "DEFAULT_BAUD",
    "DEFAULT_QUANTITIES",
    "WILDCARD_ALL",
    "DataId",
    "Decoder",
    "ErrorBits",
    "Frame",
    "Function",
    "ReadReply",
    "Value",
    "address_matches",
    "build_broadcast_time",
    "build_error_reply",
    "build_read",
    "build_read_follow_up",
    "build_reply",
    "check_reply",
    "decode_address",
    "decode_frame",
    "decode_value",
    "describe_error",
    "encode_address",
    "encode_frame",
    "encode_value",
    "lookup",
    "parse_read_reply",
    "read_all",
]

DEFAULT_BAUD = 1200  # 8E1; what concentrators try first for a 1997 meter


class Function(IntEnum):
    """Function codes of the control byte, DL/T 645-1997."""

    READ_DATA = 0x01
    READ_FOLLOW_UP = 0x02
    REREAD = 0x03
    WRITE_DATA = 0x04
    BROADCAST_TIME = 0x08
    WRITE_ADDRESS = 0x0A
    CHANGE_BAUD = 0x0C
    CHANGE_PASSWORD = 0x0F
    CLEAR_DEMAND = 0x10


class ErrorBits(IntFlag):
    """The ERR byte of a 1997 error reply (bit 3 and bit 7 are not used)."""

    ILLEGAL_DATA = 0x01
    BAD_IDENTIFIER = 0x02
    PASSWORD = 0x04
    YEAR_ZONES_EXCEEDED = 0x10
    DAY_SLOTS_EXCEEDED = 0x20
    TARIFFS_EXCEEDED = 0x40


_ERROR_TEXT = {
    ErrorBits.ILLEGAL_DATA: "illegal data",
    ErrorBits.BAD_IDENTIFIER: "data identifier wrong (unknown to the meter)",
    ErrorBits.PASSWORD: "password wrong or not authorised",
    ErrorBits.YEAR_ZONES_EXCEEDED: "year time-zone count exceeded",
    ErrorBits.DAY_SLOTS_EXCEEDED: "daily time-slot count exceeded",
    ErrorBits.TARIFFS_EXCEEDED: "tariff count exceeded",
}


def describe_error(err: int) -> str:
    """Name every bit set in a 1997 ERR byte."""
    names = [text for bit, text in _ERROR_TEXT.items() if err & bit]
    for bit in (3, 7):
        if err & (1 << bit):
            names.append(f"reserved bit {bit} set")
    return "; ".join(names) if names else "no error bit set"


# --------------------------------------------------------------------------------------
# Data identifiers

Kind = Literal[
    "bcd",  # unsigned BCD with implied decimals
    "block",  # N x 4-byte XXXXXX.XX, total then tariffs (N depends on the meter)
    "date",  # YYMMDDWW, sent WW first
    "time",  # hhmmss, sent ss first
    "number",  # BCD digits kept as text (meter number, user number, device code)
]

Value: TypeAlias = Decimal | tuple[Decimal, ...] | dt.date | dt.time | str


@dataclass(frozen=True)
class DataId:
    di: int
    name: str
    description: str
    kind: Kind
    length: int  # bytes; for "block" the size of one element
    decimals: int = 0
    unit: str = ""

    @property
    def code(self) -> str:
        return f"{self.di:04X}"


_TARIFFS = {1: "sharp", 2: "peak", 3: "flat", 4: "valley"}


def _energy(base: int, name: str, description: str) -> list[DataId]:
    out = [DataId(base, f"{name}_total", f"{description}, total", "bcd", 4, 2, "kWh")]
    for t, label in _TARIFFS.items():
        out.append(
            DataId(
                base + t, f"{name}_t{t}", f"{description}, tariff {t} ({label})", "bcd", 4, 2, "kWh"
            )
        )
    out.append(
        DataId(
            base + 0xF, f"{name}_block", f"{description}, total and tariffs", "block", 4, 2, "kWh"
        )
    )
    return out


def _phases(
    base: int, name: str, description: str, length: int, decimals: int, unit: str, total: bool
) -> list[DataId]:
    out = []
    if total:
        out.append(
            DataId(base, f"{name}_total", f"{description}, total", "bcd", length, decimals, unit)
        )
    for p, c in ((1, "a"), (2, "b"), (3, "c")):
        out.append(
            DataId(
                base + p,
                f"{name}_{c}",
                f"{description}, phase {c.upper()}",
                "bcd",
                length,
                decimals,
                unit,
            )
        )
    return out


DATA_IDS: dict[int, DataId] = {
    d.di: d
    for d in [
        *_energy(0x9010, "energy_fwd", "forward active energy"),
        *_energy(0x9020, "energy_rev", "reverse active energy"),
        *_phases(0xB610, "voltage", "voltage", 2, 0, "V", total=False),
        *_phases(0xB620, "current", "current", 2, 2, "A", total=False),
        *_phases(0xB630, "power", "active power", 3, 4, "kW", total=True),
        *_phases(0xB640, "reactive_power", "reactive power", 2, 2, "kvar", total=True),
        *_phases(0xB650, "power_factor", "power factor", 2, 3, "", total=True),
        DataId(0xC010, "meter_date", "date and weekday", "date", 4),
        DataId(0xC011, "meter_time", "time", "time", 3),
        DataId(0xC030, "meter_constant", "active meter constant", "bcd", 3, 0, "imp/kWh"),
        DataId(0xC032, "meter_number", "meter number", "number", 6),
        DataId(0xC033, "user_number", "user number", "number", 6),
        DataId(0xC034, "device_code", "device code", "number", 6),
    ]
}
DATA_IDS_BY_NAME: dict[str, DataId] = {d.name: d for d in DATA_IDS.values()}

# The DIs in the canonical vocabulary (contract.quantities, docs/quantities.md), the one
# table that says what each is stored as: the same names as the 2007 edition's, but the
# total power factor is "power_factor". Blocks (9X1F) are read as their parts; the
# meter's constant, numbers and device code are not measurements.
CANONICAL: dict[int, Mapped] = {
    d.di: Mapped("power_factor" if d.name == "power_factor_total" else d.name, d.unit)
    for d in DATA_IDS.values()
    if d.kind != "block" and d.di not in (0xC030, 0xC032, 0xC033, 0xC034)
}

DEFAULT_QUANTITIES: tuple[str, ...] = (
    "energy_fwd_total",
    "energy_rev_total",
    "voltage_a",
    "current_a",
    "power_total",
    "power_factor_total",
    "meter_date",
    "meter_time",
)


def lookup(key: str | int) -> DataId:
    """A data identifier by name ("voltage_a"), hex code ("B611") or number (0xB611)."""
    if isinstance(key, str):
        if key in DATA_IDS_BY_NAME:
            return DATA_IDS_BY_NAME[key]
        try:
            key = int(key, 16)
        except ValueError:
            raise KeyError(f"unknown DL/T 645-1997 quantity {key!r}") from None
    try:
        return DATA_IDS[key]
    except KeyError:
        raise KeyError(f"unknown DL/T 645-1997 data identifier {key:04X}") from None


def decode_value(entry: DataId, raw: bytes) -> Value:
    """Value bytes (offset removed, low byte first) -> Python value."""
    what = f"{entry.name} ({entry.code})"
    if entry.kind == "block":
        if not raw or len(raw) % entry.length:
            raise FrameError(
                f"{what}: {len(raw)} value bytes, expected a multiple of {entry.length}"
            )
        return tuple(
            Decimal(from_bcd(raw[i : i + entry.length], what=what)).scaleb(-entry.decimals)
            for i in range(0, len(raw), entry.length)
        )
    if len(raw) != entry.length:
        raise FrameError(f"{what}: {len(raw)} value bytes, expected {entry.length}")
    if entry.kind == "bcd":
        return Decimal(from_bcd(raw, what=what)).scaleb(-entry.decimals)
    if entry.kind == "number":
        from_bcd(raw, what=what)
        return raw[::-1].hex()
    if entry.kind == "date":
        from_bcd(raw, what=what)
        weekday, day, month, year = (from_bcd(raw[i : i + 1]) for i in range(4))
        if weekday > 6:
            raise FrameError(f"{what}: weekday {weekday}, expected 0..6", offset=0)
        try:
            return dt.date(2000 + year, month, day)
        except ValueError as exc:
            raise FrameError(f"{what}: {exc}") from None
    from_bcd(raw, what=what)
    second, minute, hour = (from_bcd(raw[i : i + 1]) for i in range(3))
    try:
        return dt.time(hour, minute, second)
    except ValueError as exc:
        raise FrameError(f"{what}: {exc}") from None


def encode_value(entry: DataId, value: Value) -> bytes:
    """The inverse of ``decode_value`` (the simulator's side)."""
    what = f"{entry.name} ({entry.code})"
    if entry.kind in ("bcd", "block"):
        values = value if isinstance(value, tuple) else (value,)
        if entry.kind == "bcd" and isinstance(value, tuple):
            raise EncodeError(f"{what}: expected one Decimal")
        if entry.kind == "block" and not (isinstance(value, tuple) and value):
            raise EncodeError(f"{what}: expected a non-empty tuple of Decimals")
        out = bytearray()
        for v in values:
            if not isinstance(v, Decimal | int) or isinstance(v, bool):
                raise EncodeError(f"{what}: expected a Decimal, got {type(v).__name__}")
            scaled = Decimal(v).scaleb(entry.decimals)
            if scaled != scaled.to_integral_value():
                raise EncodeError(f"{what}: {v} has more than {entry.decimals} decimals")
            number = int(scaled)
            if not 0 <= number < 10 ** (2 * entry.length):
                raise EncodeError(f"{what}: {v} out of range")
            out += bcd(number, 2 * entry.length)
        return bytes(out)
    if entry.kind == "number":
        if not isinstance(value, str) or len(value) != 2 * entry.length or not value.isdigit():
            raise EncodeError(f"{what}: expected {2 * entry.length} decimal digits")
        return bytes.fromhex(value)[::-1]
    if entry.kind == "date":
        if not isinstance(value, dt.date) or isinstance(value, dt.datetime):
            raise EncodeError(f"{what}: expected a date")
        if not 2000 <= value.year <= 2099:
            raise EncodeError(f"{what}: year {value.year}: two BCD digits carry 2000..2099")
        weekday = (value.weekday() + 1) % 7  # Python: Monday 0; DL/T 645: Sunday 0
        return bcd(weekday, 2) + bcd(value.day, 2) + bcd(value.month, 2) + bcd(value.year % 100, 2)
    if not isinstance(value, dt.time):
        raise EncodeError(f"{what}: expected a time")
    return bcd(value.second, 2) + bcd(value.minute, 2) + bcd(value.hour, 2)


# --------------------------------------------------------------------------------------
# Requests


def _di_bytes(di: int) -> bytes:
    if not 0 <= di <= 0xFFFF:
        raise EncodeError(f"data identifier {di:#x}: expected 2 bytes")
    return di.to_bytes(2, "little")


def build_read(address: str, di: int | str, *, preamble: int = 4) -> bytes:
    """0x01 read data: the two-byte DI, DI0 first."""
    code = lookup(di).di if isinstance(di, str) else di
    return encode_frame(Frame(address, Function.READ_DATA, _di_bytes(code)), preamble=preamble)


def build_read_follow_up(address: str, di: int, *, preamble: int = 4) -> bytes:
    """0x02 read the follow-up frame of an answer that announced more (control bit 5)."""
    return encode_frame(Frame(address, Function.READ_FOLLOW_UP, _di_bytes(di)), preamble=preamble)


def build_broadcast_time(when: dt.datetime, *, preamble: int = 4) -> bytes:
    """0x08 broadcast time: ss mm hh DD MM YY (BCD) to 999999999999; meters do not reply."""
    if not 2000 <= when.year <= 2099:
        raise EncodeError(f"year {when.year}: two BCD digits carry 2000..2099")
    data = b"".join(
        bcd(v, 2)
        for v in (when.second, when.minute, when.hour, when.day, when.month, when.year % 100)
    )
    return encode_frame(Frame(BROADCAST, Function.BROADCAST_TIME, data), preamble=preamble)


# --------------------------------------------------------------------------------------
# Replies


def build_reply(
    address: str, di: int, value: bytes, *, more: bool = False, preamble: int = 0
) -> bytes:
    """A meter's 0x81 answer (the simulator's side)."""
    control = DIR_REPLY | Function.READ_DATA | (MORE_FOLLOWS if more else 0)
    return encode_frame(Frame(address, control, _di_bytes(di) + value), preamble=preamble)


def build_error_reply(address: str, function: int, err: int, *, preamble: int = 0) -> bytes:
    control = DIR_REPLY | ERROR_REPLY | function
    return encode_frame(Frame(address, control, bytes([err])), preamble=preamble)


@dataclass(frozen=True)
class ReadReply:
    di: int
    value: bytes
    more_follows: bool


def check_reply(frame: Frame, function: int, address: str) -> None:
    """Raise MeterError for an error reply, FrameError if it answers something else."""
    if not frame.is_reply:
        raise FrameError(f"frame from {frame.address} is a request (control 0x{frame.control:02X})")
    if frame.function != function:
        raise FrameError(
            f"reply function 0x{frame.function:02X}, expected 0x{function:02X}", offset=8
        )
    if address != BROADCAST and not address_matches(address, frame.address):
        raise FrameError(f"reply from meter {frame.address}, expected {address}", offset=1)
    if frame.is_error:
        err = frame.data[0] if frame.data else 0
        raise MeterError(
            frame.address, err, describe_error(err), raw=encode_frame(frame, preamble=0)
        )


def parse_read_reply(frame: Frame, address: str, di: int) -> ReadReply:
    """Check a 0x81/0xA1/0x82 answer against the request and split DI from value."""
    function = frame.function
    if function not in (Function.READ_DATA, Function.READ_FOLLOW_UP, Function.REREAD):
        raise FrameError(f"reply function 0x{function:02X} is not a read reply", offset=8)
    check_reply(frame, function, address)
    if len(frame.data) < 2:
        raise FrameError(f"read reply data has {len(frame.data)} bytes, expected at least 2")
    got = int.from_bytes(frame.data[:2], "little")
    if got != di:
        raise FrameError(f"reply carries DI {got:04X}, expected {di:04X}", offset=10)
    return ReadReply(di, frame.data[2:], frame.more_follows)


def read_all(
    address: str, names: Iterable[str] = DEFAULT_QUANTITIES, *, preamble: int = 4
) -> list[bytes]:
    """The read requests for several quantities (one frame each: 1997 has no list read)."""
    return [build_read(address, lookup(n).di, preamble=preamble) for n in names]
