"""DL/T 698.45-2017 A-XDR values: the ``Data`` CHOICE, its types and the descriptors
(OAD, OMD, ROAD, RSD selectors, times) with their range checks (clause 7.3.3)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

from drivers.errors import EncodeError, FrameError

MAX_DEPTH = 16  # arrays in structures in arrays ...: deeper than any object the standard has
MAX_LENGTH_BYTES = 4


class DataType(IntEnum):
    """The tags of the Data CHOICE (DL/T 698.45-2017 clause 7.3.3)."""

    NULL = 0
    ARRAY = 1
    STRUCTURE = 2
    BOOL = 3
    BIT_STRING = 4
    DOUBLE_LONG = 5  # int32
    DOUBLE_LONG_UNSIGNED = 6  # uint32
    OCTET_STRING = 9
    VISIBLE_STRING = 10
    UTF8_STRING = 12
    INTEGER = 15  # int8
    LONG = 16  # int16
    UNSIGNED = 17  # uint8
    LONG_UNSIGNED = 18  # uint16
    LONG64 = 20
    LONG64_UNSIGNED = 21
    ENUM = 22
    FLOAT32 = 23
    FLOAT64 = 24
    DATE_TIME = 25
    DATE = 26
    TIME = 27
    DATE_TIME_S = 28
    OI = 80
    OAD = 81
    ROAD = 82
    OMD = 83
    TI = 84
    TSA = 85
    MAC = 86
    RN = 87
    REGION = 88
    SCALER_UNIT = 89
    RSD = 90
    CSD = 91
    MS = 92
    SID = 93
    SID_MAC = 94
    COMDCB = 95
    RCSD = 96


# size in bytes, signed
INTEGER_TYPES: dict[DataType, tuple[int, bool]] = {
    DataType.DOUBLE_LONG: (4, True),
    DataType.DOUBLE_LONG_UNSIGNED: (4, False),
    DataType.INTEGER: (1, True),
    DataType.LONG: (2, True),
    DataType.UNSIGNED: (1, False),
    DataType.LONG_UNSIGNED: (2, False),
    DataType.LONG64: (8, True),
    DataType.LONG64_UNSIGNED: (8, False),
    DataType.ENUM: (1, False),
    DataType.OI: (2, False),
}
OCTET_TYPES = frozenset({DataType.OCTET_STRING, DataType.TSA, DataType.MAC, DataType.RN})
STRING_TYPES = frozenset({DataType.VISIBLE_STRING, DataType.UTF8_STRING})


def integer_range(data_type: DataType) -> tuple[int, int]:
    size, signed = INTEGER_TYPES[data_type]
    if signed:
        return -(1 << (8 * size - 1)), (1 << (8 * size - 1)) - 1
    return 0, (1 << (8 * size)) - 1


# --------------------------------------------------------------------------------------
# Descriptors and small structures


@dataclass(frozen=True, order=True)
class OAD:
    """Object attribute descriptor: OI (2 bytes), attribute, element index.

    ``attribute`` is the whole byte: bits 0-4 the attribute number, bits 5-7 the
    attribute feature. ``index`` 0 means the whole attribute, 1..255 one element of it.
    """

    oi: int
    attribute: int = 2
    index: int = 0

    def __post_init__(self) -> None:
        check_int("OI", self.oi, 0, 0xFFFF)
        check_int("attribute", self.attribute, 0, 0xFF)
        check_int("index", self.index, 0, 0xFF)

    @classmethod
    def parse(cls, text: str) -> OAD:
        """``"00100201"`` -> OAD(0x0010, 2, 1)."""
        value = hex_int(text, 8, "OAD")
        return cls(value >> 16, (value >> 8) & 0xFF, value & 0xFF)

    @property
    def attribute_id(self) -> int:
        return self.attribute & 0x1F

    @property
    def feature(self) -> int:
        return self.attribute >> 5

    @property
    def value(self) -> int:
        return self.oi << 16 | self.attribute << 8 | self.index

    def element(self, index: int) -> OAD:
        return OAD(self.oi, self.attribute, index)

    def encode(self) -> bytes:
        return self.value.to_bytes(4, "big")

    def __str__(self) -> str:
        return f"{self.value:08X}"


@dataclass(frozen=True, order=True)
class OMD:
    """Object method descriptor: OI, method number, operation mode (0)."""

    oi: int
    method: int
    mode: int = 0

    def __post_init__(self) -> None:
        check_int("OI", self.oi, 0, 0xFFFF)
        check_int("method", self.method, 0, 0xFF)
        check_int("mode", self.mode, 0, 0xFF)

    @classmethod
    def parse(cls, text: str) -> OMD:
        value = hex_int(text, 8, "OMD")
        return cls(value >> 16, (value >> 8) & 0xFF, value & 0xFF)

    def encode(self) -> bytes:
        return bytes([self.oi >> 8, self.oi & 0xFF, self.method, self.mode])

    def __str__(self) -> str:
        return f"{self.oi:04X}{self.method:02X}{self.mode:02X}"


@dataclass(frozen=True)
class ROAD:
    """Record object attribute descriptor: an OAD and the OADs related to it."""

    oad: OAD
    related: tuple[OAD, ...] = ()


CSD: TypeAlias = OAD | ROAD  # column selection descriptor: CHOICE 0 OAD, 1 ROAD


class TIUnit(IntEnum):
    """Unit of a time interval TI."""

    SECOND = 0
    MINUTE = 1
    HOUR = 2
    DAY = 3
    MONTH = 4
    YEAR = 5


@dataclass(frozen=True)
class TI:
    """Time interval: unit and a long-unsigned count (TI 0 minutes = "no interval")."""

    unit: TIUnit
    value: int

    def __post_init__(self) -> None:
        check_int("TI value", self.value, 0, 0xFFFF)


@dataclass(frozen=True)
class DateTimeS:
    """date_time_s: year (2 bytes, big-endian, binary), month, day, hour, minute, second.

    Binary, not BCD: 2023-08-15 08:39:23 is ``07 E7 08 0F 08 27 17``. Fields are kept
    raw so that wildcards (0xFF, 0xFFFF) used in selectors survive a round trip.
    """

    year: int
    month: int
    day: int
    hour: int = 0
    minute: int = 0
    second: int = 0

    def __post_init__(self) -> None:
        check_int("year", self.year, 0, 0xFFFF)
        for name in ("month", "day", "hour", "minute", "second"):
            check_int(name, getattr(self, name), 0, 0xFF)

    @classmethod
    def from_datetime(cls, when: dt.datetime) -> DateTimeS:
        return cls(when.year, when.month, when.day, when.hour, when.minute, when.second)

    def to_datetime(self) -> dt.datetime:
        """The calendar time; FrameError if a field is a wildcard or out of range."""
        try:
            return dt.datetime(self.year, self.month, self.day, self.hour, self.minute, self.second)
        except ValueError as exc:
            raise FrameError(f"date_time_s {self}: {exc}") from None

    def __str__(self) -> str:
        return (
            f"{self.year:04d}-{self.month:02d}-{self.day:02d} "
            f"{self.hour:02d}:{self.minute:02d}:{self.second:02d}"
        )


@dataclass(frozen=True)
class DateTime:
    """date_time: year, month, day, day of week, hour, minute, second, milliseconds."""

    year: int
    month: int
    day: int
    weekday: int
    hour: int
    minute: int
    second: int
    millisecond: int = 0

    def __post_init__(self) -> None:
        check_int("year", self.year, 0, 0xFFFF)
        check_int("millisecond", self.millisecond, 0, 0xFFFF)
        for name in ("month", "day", "weekday", "hour", "minute", "second"):
            check_int(name, getattr(self, name), 0, 0xFF)


@dataclass(frozen=True)
class Date:
    year: int
    month: int
    day: int
    weekday: int

    def __post_init__(self) -> None:
        check_int("year", self.year, 0, 0xFFFF)
        for name in ("month", "day", "weekday"):
            check_int(name, getattr(self, name), 0, 0xFF)


@dataclass(frozen=True)
class Time:
    hour: int
    minute: int
    second: int

    def __post_init__(self) -> None:
        for name in ("hour", "minute", "second"):
            check_int(name, getattr(self, name), 0, 0xFF)


@dataclass(frozen=True)
class ScalerUnit:
    """Scaler_Unit: the value times 10**scaler is in ``unit`` (an enum, see objects.Unit)."""

    scaler: int
    unit: int

    def __post_init__(self) -> None:
        check_int("scaler", self.scaler, -128, 127)
        check_int("unit", self.unit, 0, 0xFF)


@dataclass(frozen=True)
class BitString:
    """``bits`` bits, most significant bit of ``data[0]`` first."""

    bits: int
    data: bytes

    def __post_init__(self) -> None:
        if len(self.data) != (self.bits + 7) // 8:
            raise EncodeError(f"bit-string of {self.bits} bits needs {(self.bits + 7) // 8} bytes")


class RegionKind(IntEnum):
    CLOSED_OPEN = 0  # [start, end)
    OPEN_CLOSED = 1
    CLOSED_CLOSED = 2
    OPEN_OPEN = 3


@dataclass(frozen=True)
class Region:
    kind: RegionKind
    start: Data
    end: Data


@dataclass(frozen=True)
class SID:
    """Security identifier: a double-long-unsigned tag and additional data."""

    ident: int
    additional: bytes = b""

    def __post_init__(self) -> None:
        check_int("SID ident", self.ident, 0, 0xFFFFFFFF)


@dataclass(frozen=True)
class SIDMAC:
    sid: SID
    mac: bytes


@dataclass(frozen=True)
class COMDCB:
    """Serial port parameters: baud (enum: 0 = 300 ... 6 = 9600 ...), parity, data bits,
    stop bits, flow control. Kept as raw enum values."""

    baud: int
    parity: int
    data_bits: int
    stop_bits: int
    flow: int

    def __post_init__(self) -> None:
        for name in ("baud", "parity", "data_bits", "stop_bits", "flow"):
            check_int(name, getattr(self, name), 0, 0xFF)


@dataclass(frozen=True)
class MS:
    """Meter set: 0 none, 1 all, 2 user types (unsigned), 3 addresses (TSA), 4 configuration
    numbers (long-unsigned), 5..7 regions of user types, addresses, numbers."""

    choice: int
    items: tuple[int | bytes | Region, ...] = ()

    def __post_init__(self) -> None:
        check_int("MS choice", self.choice, 0, 7)
        if self.choice in (0, 1) and self.items:
            raise EncodeError(f"MS choice {self.choice} carries no items")


# Record selection descriptors (RSD), DL/T 698.45-2017 clause 7.3.3 "RSD".


@dataclass(frozen=True)
class SelectNone:
    """Selector 0: no selection (NULL)."""


@dataclass(frozen=True)
class Selector1:
    """Records whose column ``oad`` equals ``value``."""

    oad: OAD
    value: Data


@dataclass(frozen=True)
class Selector2:
    """Records whose column ``oad`` lies in [start, end), every ``interval`` (NULL = all)."""

    oad: OAD
    start: Data
    end: Data
    interval: Data


@dataclass(frozen=True)
class Selector3:
    """Several Selector2 ranges."""

    ranges: tuple[Selector2, ...]


@dataclass(frozen=True)
class SelectorTimeMS:
    """Selector 4 (task start time) or 5 (store time) for a meter set."""

    number: int
    time: DateTimeS
    ms: MS


@dataclass(frozen=True)
class SelectorRangeMS:
    """Selector 6 (start time), 7 (store time), 8 (success time): range, interval, meters."""

    number: int
    start: DateTimeS
    end: DateTimeS
    interval: TI
    ms: MS


@dataclass(frozen=True)
class Selector9:
    """The n-th last record (1 = the most recent)."""

    last: int


@dataclass(frozen=True)
class Selector10:
    """The last n records of a meter set."""

    last: int
    ms: MS


RSD: TypeAlias = (
    SelectNone
    | Selector1
    | Selector2
    | Selector3
    | SelectorTimeMS
    | SelectorRangeMS
    | Selector9
    | Selector10
)

DataValue: TypeAlias = (
    bool
    | int
    | float
    | bytes
    | str
    | BitString
    | tuple["Data", ...]
    | DateTime
    | Date
    | Time
    | DateTimeS
    | OAD
    | ROAD
    | OMD
    | TI
    | Region
    | ScalerUnit
    | RSD
    | MS
    | SID
    | SIDMAC
    | COMDCB
    | tuple[CSD, ...]
    | None
)


@dataclass(frozen=True)
class Data:
    """One typed value: the tag and a Python value of the matching kind.

    NULL: None; ARRAY, STRUCTURE: tuple of Data; BOOL: bool; integers, ENUM, OI: int;
    OCTET_STRING, TSA, MAC, RN: bytes; strings: str; floats: float; times: the dataclasses
    above; CSD: OAD or ROAD; RCSD: tuple of them.
    """

    type: DataType
    value: DataValue = None

    def __repr__(self) -> str:
        return f"Data({self.type.name}, {self.value!r})"


NULL = Data(DataType.NULL)


def array(*items: Data) -> Data:
    return Data(DataType.ARRAY, tuple(items))


def structure(*items: Data) -> Data:
    return Data(DataType.STRUCTURE, tuple(items))


# --------------------------------------------------------------------------------------
# helpers


def check_int(what: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise EncodeError(f"{what} {value!r}: expected {low}..{high}")


def hex_int(text: str, digits: int, what: str) -> int:
    t = text.strip()
    if len(t) != digits or not all(c in "0123456789abcdefABCDEF" for c in t):
        raise EncodeError(f"{what} {text!r}: expected {digits} hex digits")
    return int(t, 16)
