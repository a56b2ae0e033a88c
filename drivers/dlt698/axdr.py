"""DL/T 698.45-2017 application data: the ``Data`` CHOICE and its A-XDR encoding.

Every value on the wire is a type tag followed by its content::

    Data  ::=  tag  content
               |    |
               |    +-- fixed size for numbers and times, big-endian ("typed data is
               |        big-endian": only the link frame's length and CRCs are
               |        little-endian); A-XDR length + bytes for strings; A-XDR count +
               |        elements for array and structure
               +------- DataType below (clause 7.3.3, table "Data")

    A-XDR length:  0xxxxxxx            one byte, 0..127
                   1nnnnnnn  n bytes   big-endian value (n = 1..4 here)

The readers never trust a length: a count is checked against the bytes that are left
before anything is built, nesting is capped, and every failure is a ``FrameError`` with
the offset inside the APDU. Writers refuse what the wire cannot carry with
``EncodeError``.
"""

from __future__ import annotations

import datetime as dt
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import TypeAlias

from drivers.errors import EncodeError, FrameError

MAX_DEPTH = 16  # arrays in structures in arrays ...: deeper than any object the standard has
_MAX_LENGTH_BYTES = 4


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
        _check_int("OI", self.oi, 0, 0xFFFF)
        _check_int("attribute", self.attribute, 0, 0xFF)
        _check_int("index", self.index, 0, 0xFF)

    @classmethod
    def parse(cls, text: str) -> OAD:
        """``"00100201"`` -> OAD(0x0010, 2, 1)."""
        value = _hex_int(text, 8, "OAD")
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
        _check_int("OI", self.oi, 0, 0xFFFF)
        _check_int("method", self.method, 0, 0xFF)
        _check_int("mode", self.mode, 0, 0xFF)

    @classmethod
    def parse(cls, text: str) -> OMD:
        value = _hex_int(text, 8, "OMD")
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
        _check_int("TI value", self.value, 0, 0xFFFF)


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
        _check_int("year", self.year, 0, 0xFFFF)
        for name in ("month", "day", "hour", "minute", "second"):
            _check_int(name, getattr(self, name), 0, 0xFF)

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
        _check_int("year", self.year, 0, 0xFFFF)
        _check_int("millisecond", self.millisecond, 0, 0xFFFF)
        for name in ("month", "day", "weekday", "hour", "minute", "second"):
            _check_int(name, getattr(self, name), 0, 0xFF)


@dataclass(frozen=True)
class Date:
    year: int
    month: int
    day: int
    weekday: int

    def __post_init__(self) -> None:
        _check_int("year", self.year, 0, 0xFFFF)
        for name in ("month", "day", "weekday"):
            _check_int(name, getattr(self, name), 0, 0xFF)


@dataclass(frozen=True)
class Time:
    hour: int
    minute: int
    second: int

    def __post_init__(self) -> None:
        for name in ("hour", "minute", "second"):
            _check_int(name, getattr(self, name), 0, 0xFF)


@dataclass(frozen=True)
class ScalerUnit:
    """Scaler_Unit: the value times 10**scaler is in ``unit`` (an enum, see objects.Unit)."""

    scaler: int
    unit: int

    def __post_init__(self) -> None:
        _check_int("scaler", self.scaler, -128, 127)
        _check_int("unit", self.unit, 0, 0xFF)


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
        _check_int("SID ident", self.ident, 0, 0xFFFFFFFF)


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
            _check_int(name, getattr(self, name), 0, 0xFF)


@dataclass(frozen=True)
class MS:
    """Meter set: 0 none, 1 all, 2 user types (unsigned), 3 addresses (TSA), 4 configuration
    numbers (long-unsigned), 5..7 regions of user types, addresses, numbers."""

    choice: int
    items: tuple[int | bytes | Region, ...] = ()

    def __post_init__(self) -> None:
        _check_int("MS choice", self.choice, 0, 7)
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
# Reading


class Reader:
    """A cursor over APDU bytes. Errors carry the absolute offset of the bad field."""

    __slots__ = ("data", "pos")

    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    @property
    def left(self) -> int:
        return len(self.data) - self.pos

    def take(self, n: int, what: str) -> bytes:
        if n > len(self.data) - self.pos:
            raise FrameError(
                f"{what}: needs {n} bytes, only {len(self.data) - self.pos} left", offset=self.pos
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self, what: str) -> int:
        if self.pos >= len(self.data):
            raise FrameError(f"{what}: needs 1 byte, none left", offset=self.pos)
        value = self.data[self.pos]
        self.pos += 1
        return value

    def uint(self, n: int, what: str) -> int:
        return int.from_bytes(self.take(n, what), "big")

    def length(self, what: str) -> int:
        """An A-XDR length (or count). Long forms need not be minimal (seen in the wild)."""
        at = self.pos
        first = self.byte(what)
        if first < 0x80:
            return first
        n = first & 0x7F
        if not 1 <= n <= _MAX_LENGTH_BYTES:
            raise FrameError(f"{what}: length-of-length byte 0x{first:02X}", offset=at)
        return self.uint(n, what)

    def count(self, what: str, min_item: int = 1) -> int:
        """A SEQUENCE OF count, refused at once if the bytes left cannot hold it."""
        at = self.pos
        n = self.length(what)
        if n * min_item > self.left:
            raise FrameError(f"{what}: count {n} but only {self.left} bytes left", offset=at)
        return n

    def end(self, what: str) -> None:
        if self.pos != len(self.data):
            raise FrameError(f"{what}: {self.left} bytes after the end", offset=self.pos)


def read_oad(r: Reader, what: str = "OAD") -> OAD:
    raw = r.take(4, what)
    return OAD(raw[0] << 8 | raw[1], raw[2], raw[3])


def read_omd(r: Reader, what: str = "OMD") -> OMD:
    raw = r.take(4, what)
    return OMD(raw[0] << 8 | raw[1], raw[2], raw[3])


def read_road(r: Reader) -> ROAD:
    oad = read_oad(r, "ROAD")
    n = r.count("ROAD related OADs", 4)
    return ROAD(oad, tuple(read_oad(r, "ROAD related OAD") for _ in range(n)))


def read_csd(r: Reader) -> CSD:
    at = r.pos
    choice = r.byte("CSD choice")
    if choice == 0:
        return read_oad(r, "CSD OAD")
    if choice == 1:
        return read_road(r)
    raise FrameError(f"CSD choice {choice}, expected 0 (OAD) or 1 (ROAD)", offset=at)


def read_rcsd(r: Reader) -> tuple[CSD, ...]:
    n = r.count("RCSD", 5)
    return tuple(read_csd(r) for _ in range(n))


def read_ti(r: Reader) -> TI:
    at = r.pos
    unit = r.byte("TI unit")
    if unit > TIUnit.YEAR:
        raise FrameError(f"TI unit {unit}, expected 0..5", offset=at)
    return TI(TIUnit(unit), r.uint(2, "TI value"))


def read_date_time_s(r: Reader) -> DateTimeS:
    raw = r.take(7, "date_time_s")
    return DateTimeS(raw[0] << 8 | raw[1], raw[2], raw[3], raw[4], raw[5], raw[6])


def read_octets(r: Reader, what: str) -> bytes:
    return r.take(r.length(what), what)


def read_sid(r: Reader) -> SID:
    return SID(r.uint(4, "SID"), read_octets(r, "SID additional data"))


def read_ms(r: Reader, depth: int) -> MS:
    at = r.pos
    choice = r.byte("MS choice")
    if choice in (0, 1):
        return MS(choice)
    if choice == 2:
        n = r.count("MS user types", 1)
        return MS(2, tuple(r.byte("MS user type") for _ in range(n)))
    if choice == 3:
        n = r.count("MS addresses", 1)
        return MS(3, tuple(read_octets(r, "MS address") for _ in range(n)))
    if choice == 4:
        n = r.count("MS numbers", 2)
        return MS(4, tuple(r.uint(2, "MS number") for _ in range(n)))
    if 5 <= choice <= 7:
        n = r.count("MS regions", 3)
        return MS(choice, tuple(read_region(r, depth) for _ in range(n)))
    raise FrameError(f"MS choice {choice}, expected 0..7", offset=at)


def read_region(r: Reader, depth: int) -> Region:
    at = r.pos
    kind = r.byte("Region kind")
    if kind > RegionKind.OPEN_OPEN:
        raise FrameError(f"Region kind {kind}, expected 0..3", offset=at)
    return Region(RegionKind(kind), read_data(r, depth + 1), read_data(r, depth + 1))


def read_selector2(r: Reader, depth: int) -> Selector2:
    oad = read_oad(r, "Selector2 OAD")
    return Selector2(oad, read_data(r, depth + 1), read_data(r, depth + 1), read_data(r, depth + 1))


def read_rsd(r: Reader, depth: int = 0) -> RSD:
    at = r.pos
    n = r.byte("RSD selector")
    if n == 0:
        return SelectNone()
    if n == 1:
        return Selector1(read_oad(r, "Selector1 OAD"), read_data(r, depth + 1))
    if n == 2:
        return read_selector2(r, depth)
    if n == 3:
        count = r.count("Selector3", 7)
        return Selector3(tuple(read_selector2(r, depth) for _ in range(count)))
    if n in (4, 5):
        return SelectorTimeMS(n, read_date_time_s(r), read_ms(r, depth))
    if n in (6, 7, 8):
        start, end = read_date_time_s(r), read_date_time_s(r)
        return SelectorRangeMS(n, start, end, read_ti(r), read_ms(r, depth))
    if n == 9:
        return Selector9(r.byte("Selector9"))
    if n == 10:
        return Selector10(r.byte("Selector10"), read_ms(r, depth))
    raise FrameError(f"RSD selector {n}, expected 0..10", offset=at)


def read_data(r: Reader, depth: int = 0) -> Data:
    """One Data: tag then content."""
    if depth > MAX_DEPTH:
        raise FrameError(f"Data nested deeper than {MAX_DEPTH} levels", offset=r.pos)
    at = r.pos
    tag = r.byte("Data type")
    try:
        t = DataType(tag)
    except ValueError:
        raise FrameError(f"unknown Data type tag {tag} (0x{tag:02X})", offset=at) from None
    if t is DataType.NULL:
        return NULL
    if t in (DataType.ARRAY, DataType.STRUCTURE):
        n = r.count(t.name.lower(), 1)
        return Data(t, tuple(read_data(r, depth + 1) for _ in range(n)))
    size_signed = INTEGER_TYPES.get(t)
    if size_signed is not None:
        size, signed = size_signed
        return Data(t, int.from_bytes(r.take(size, t.name.lower()), "big", signed=signed))
    if t in OCTET_TYPES:
        return Data(t, read_octets(r, t.name.lower()))
    if t is DataType.VISIBLE_STRING:
        # ASCII by the standard; latin-1 keeps any byte a device sends, and round-trips
        return Data(t, read_octets(r, "visible-string").decode("latin-1"))
    if t is DataType.UTF8_STRING:
        raw = read_octets(r, "UTF8-string")
        try:
            return Data(t, raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise FrameError(f"UTF8-string is not UTF-8: {exc.reason}", offset=at) from None
    if t is DataType.BOOL:
        return Data(t, r.byte("bool") != 0)
    if t is DataType.BIT_STRING:
        bits = r.length("bit-string")
        return Data(t, BitString(bits, r.take((bits + 7) // 8, "bit-string")))
    if t is DataType.FLOAT32:
        return Data(t, struct.unpack(">f", r.take(4, "float32"))[0])
    if t is DataType.FLOAT64:
        return Data(t, struct.unpack(">d", r.take(8, "float64"))[0])
    if t is DataType.DATE_TIME:
        b = r.take(10, "date_time")
        return Data(
            t, DateTime(b[0] << 8 | b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8] << 8 | b[9])
        )
    if t is DataType.DATE:
        b = r.take(5, "date")
        return Data(t, Date(b[0] << 8 | b[1], b[2], b[3], b[4]))
    if t is DataType.TIME:
        b = r.take(3, "time")
        return Data(t, Time(b[0], b[1], b[2]))
    if t is DataType.DATE_TIME_S:
        return Data(t, read_date_time_s(r))
    if t is DataType.OAD:
        return Data(t, read_oad(r))
    if t is DataType.ROAD:
        return Data(t, read_road(r))
    if t is DataType.OMD:
        return Data(t, read_omd(r))
    if t is DataType.TI:
        return Data(t, read_ti(r))
    if t is DataType.REGION:
        return Data(t, read_region(r, depth))
    if t is DataType.SCALER_UNIT:
        b = r.take(2, "Scaler_Unit")
        return Data(t, ScalerUnit(b[0] - 256 if b[0] > 127 else b[0], b[1]))
    if t is DataType.RSD:
        return Data(t, read_rsd(r, depth))
    if t is DataType.CSD:
        return Data(t, read_csd(r))
    if t is DataType.MS:
        return Data(t, read_ms(r, depth))
    if t is DataType.SID:
        return Data(t, read_sid(r))
    if t is DataType.SID_MAC:
        return Data(t, SIDMAC(read_sid(r), read_octets(r, "MAC")))
    if t is DataType.COMDCB:
        b = r.take(5, "COMDCB")
        return Data(t, COMDCB(b[0], b[1], b[2], b[3], b[4]))
    if t is DataType.RCSD:
        return Data(t, read_rcsd(r))
    raise AssertionError(t)


def decode_data(raw: bytes) -> Data:
    """Exactly one Data, nothing after it."""
    r = Reader(raw)
    data = read_data(r)
    r.end("Data")
    return data


# --------------------------------------------------------------------------------------
# Writing


def encode_length(n: int) -> bytes:
    if n < 0:
        raise EncodeError(f"length {n} is negative")
    if n < 0x80:
        return bytes([n])
    size = (n.bit_length() + 7) // 8
    if size > _MAX_LENGTH_BYTES:
        raise EncodeError(f"length {n} does not fit in {_MAX_LENGTH_BYTES} bytes")
    return bytes([0x80 | size]) + n.to_bytes(size, "big")


def encode_octets(raw: bytes) -> bytes:
    return encode_length(len(raw)) + raw


def encode_csd(csd: CSD) -> bytes:
    if isinstance(csd, OAD):
        return b"\x00" + csd.encode()
    return b"\x01" + encode_road(csd)


def encode_road(road: ROAD) -> bytes:
    out = bytearray(road.oad.encode())
    out += encode_length(len(road.related))
    for oad in road.related:
        out += oad.encode()
    return bytes(out)


def encode_rcsd(columns: tuple[CSD, ...]) -> bytes:
    return encode_length(len(columns)) + b"".join(encode_csd(c) for c in columns)


def encode_ti(ti: TI) -> bytes:
    return bytes([int(ti.unit)]) + ti.value.to_bytes(2, "big")


def encode_date_time_s(t: DateTimeS) -> bytes:
    return bytes([t.year >> 8, t.year & 0xFF, t.month, t.day, t.hour, t.minute, t.second])


def encode_sid(sid: SID) -> bytes:
    return sid.ident.to_bytes(4, "big") + encode_octets(sid.additional)


def encode_ms(ms: MS) -> bytes:
    out = bytearray([ms.choice])
    if ms.choice in (0, 1):
        return bytes(out)
    out += encode_length(len(ms.items))
    for item in ms.items:
        if ms.choice == 2 and isinstance(item, int) and not isinstance(item, bool):
            _check_int("MS user type", item, 0, 0xFF)
            out.append(item)
        elif ms.choice == 3 and isinstance(item, bytes):
            out += encode_octets(item)
        elif ms.choice == 4 and isinstance(item, int) and not isinstance(item, bool):
            _check_int("MS number", item, 0, 0xFFFF)
            out += item.to_bytes(2, "big")
        elif ms.choice >= 5 and isinstance(item, Region):
            out += encode_region(item)
        else:
            raise EncodeError(f"MS choice {ms.choice}: item {item!r} of the wrong kind")
    return bytes(out)


def encode_region(region: Region) -> bytes:
    return bytes([int(region.kind)]) + encode_data(region.start) + encode_data(region.end)


def encode_rsd(rsd: RSD) -> bytes:
    if isinstance(rsd, SelectNone):
        return b"\x00"
    if isinstance(rsd, Selector1):
        return b"\x01" + rsd.oad.encode() + encode_data(rsd.value)
    if isinstance(rsd, Selector2):
        return b"\x02" + _selector2_body(rsd)
    if isinstance(rsd, Selector3):
        return (
            b"\x03"
            + encode_length(len(rsd.ranges))
            + b"".join(_selector2_body(s) for s in rsd.ranges)
        )
    if isinstance(rsd, SelectorTimeMS):
        if rsd.number not in (4, 5):
            raise EncodeError(f"selector {rsd.number}: time + MS selectors are 4 and 5")
        return bytes([rsd.number]) + encode_date_time_s(rsd.time) + encode_ms(rsd.ms)
    if isinstance(rsd, SelectorRangeMS):
        if rsd.number not in (6, 7, 8):
            raise EncodeError(f"selector {rsd.number}: range + MS selectors are 6, 7 and 8")
        return (
            bytes([rsd.number])
            + encode_date_time_s(rsd.start)
            + encode_date_time_s(rsd.end)
            + encode_ti(rsd.interval)
            + encode_ms(rsd.ms)
        )
    if isinstance(rsd, Selector9):
        _check_int("Selector9", rsd.last, 0, 0xFF)
        return bytes([9, rsd.last])
    _check_int("Selector10", rsd.last, 0, 0xFF)
    return bytes([10, rsd.last]) + encode_ms(rsd.ms)


def _selector2_body(s: Selector2) -> bytes:
    return s.oad.encode() + encode_data(s.start) + encode_data(s.end) + encode_data(s.interval)


def encode_data(data: Data) -> bytes:
    out = bytearray()
    _write_data(out, data, 0)
    return bytes(out)


def _write_data(out: bytearray, data: Data, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise EncodeError(f"Data nested deeper than {MAX_DEPTH} levels")
    t, v = data.type, data.value
    if not isinstance(t, DataType):
        raise EncodeError(f"Data type {t!r} is not a DataType")
    out.append(int(t))
    what = t.name.lower()
    if t is DataType.NULL:
        if v is not None:
            raise EncodeError(f"NULL carries no value, got {v!r}")
        return
    if t in (DataType.ARRAY, DataType.STRUCTURE):
        if not isinstance(v, tuple) or not all(isinstance(x, Data) for x in v):
            raise EncodeError(f"{what}: expected a tuple of Data")
        out += encode_length(len(v))
        for item in v:
            assert isinstance(item, Data)
            _write_data(out, item, depth + 1)
        return
    size_signed = INTEGER_TYPES.get(t)
    if size_signed is not None:
        if not isinstance(v, int) or isinstance(v, bool):
            raise EncodeError(f"{what}: expected an int, got {type(v).__name__}")
        low, high = integer_range(t)
        if not low <= v <= high:
            raise EncodeError(f"{what}: {v} out of range {low}..{high}")
        out += v.to_bytes(size_signed[0], "big", signed=size_signed[1])
        return
    if t in OCTET_TYPES:
        if not isinstance(v, bytes):
            raise EncodeError(f"{what}: expected bytes")
        out += encode_octets(v)
        return
    if t in STRING_TYPES:
        if not isinstance(v, str):
            raise EncodeError(f"{what}: expected a str")
        try:
            raw = v.encode("latin-1" if t is DataType.VISIBLE_STRING else "utf-8")
        except UnicodeEncodeError as exc:
            raise EncodeError(f"{what}: {exc.reason}") from None
        out += encode_octets(raw)
        return
    if t is DataType.BOOL:
        if not isinstance(v, bool):
            raise EncodeError("bool: expected a bool")
        out.append(1 if v else 0)
        return
    if t is DataType.BIT_STRING:
        if not isinstance(v, BitString):
            raise EncodeError("bit-string: expected a BitString")
        out += encode_length(v.bits) + v.data
        return
    if t in (DataType.FLOAT32, DataType.FLOAT64):
        if not isinstance(v, float | int) or isinstance(v, bool):
            raise EncodeError(f"{what}: expected a float")
        try:
            out += struct.pack(">f" if t is DataType.FLOAT32 else ">d", v)
        except OverflowError:
            raise EncodeError(f"{what}: {v} out of range") from None
        return
    if t is DataType.DATE_TIME and isinstance(v, DateTime):
        out += bytes([v.year >> 8, v.year & 0xFF, v.month, v.day, v.weekday])
        out += bytes([v.hour, v.minute, v.second, v.millisecond >> 8, v.millisecond & 0xFF])
        return
    if t is DataType.DATE and isinstance(v, Date):
        out += bytes([v.year >> 8, v.year & 0xFF, v.month, v.day, v.weekday])
        return
    if t is DataType.TIME and isinstance(v, Time):
        out += bytes([v.hour, v.minute, v.second])
        return
    if t is DataType.DATE_TIME_S and isinstance(v, DateTimeS):
        out += encode_date_time_s(v)
        return
    if t is DataType.OAD and isinstance(v, OAD):
        out += v.encode()
        return
    if t is DataType.ROAD and isinstance(v, ROAD):
        out += encode_road(v)
        return
    if t is DataType.OMD and isinstance(v, OMD):
        out += v.encode()
        return
    if t is DataType.TI and isinstance(v, TI):
        out += encode_ti(v)
        return
    if t is DataType.REGION and isinstance(v, Region):
        out += encode_region(v)
        return
    if t is DataType.SCALER_UNIT and isinstance(v, ScalerUnit):
        out += bytes([v.scaler & 0xFF, v.unit])
        return
    if t is DataType.RSD and isinstance(
        v,
        SelectNone
        | Selector1
        | Selector2
        | Selector3
        | SelectorTimeMS
        | SelectorRangeMS
        | Selector9
        | Selector10,
    ):
        out += encode_rsd(v)
        return
    if t is DataType.CSD and isinstance(v, OAD | ROAD):
        out += encode_csd(v)
        return
    if t is DataType.MS and isinstance(v, MS):
        out += encode_ms(v)
        return
    if t is DataType.SID and isinstance(v, SID):
        out += encode_sid(v)
        return
    if t is DataType.SID_MAC and isinstance(v, SIDMAC):
        out += encode_sid(v.sid) + encode_octets(v.mac)
        return
    if t is DataType.COMDCB and isinstance(v, COMDCB):
        out += bytes([v.baud, v.parity, v.data_bits, v.stop_bits, v.flow])
        return
    if t is DataType.RCSD and isinstance(v, tuple) and all(isinstance(c, OAD | ROAD) for c in v):
        out += encode_length(len(v))
        for c in v:
            assert isinstance(c, OAD | ROAD)
            out += encode_csd(c)
        return
    raise EncodeError(f"{what}: value {v!r} is of the wrong kind")


# --------------------------------------------------------------------------------------
# helpers


def _check_int(what: str, value: int, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise EncodeError(f"{what} {value!r}: expected {low}..{high}")


def _hex_int(text: str, digits: int, what: str) -> int:
    t = text.strip()
    if len(t) != digits or not all(c in "0123456789abcdefABCDEF" for c in t):
        raise EncodeError(f"{what} {text!r}: expected {digits} hex digits")
    return int(t, 16)
