"""Reading A-XDR: a cursor over APDU bytes that never trusts a length, and the readers
of every descriptor and ``Data`` value; each failure is a ``FrameError`` at its offset."""

from __future__ import annotations

import struct

from drivers.dlt698.axdr.values import (
    COMDCB,
    CSD,
    INTEGER_TYPES,
    MAX_DEPTH,
    MAX_LENGTH_BYTES,
    MS,
    NULL,
    OAD,
    OCTET_TYPES,
    OMD,
    ROAD,
    RSD,
    SID,
    SIDMAC,
    TI,
    BitString,
    Data,
    DataType,
    Date,
    DateTime,
    DateTimeS,
    Region,
    RegionKind,
    ScalerUnit,
    SelectNone,
    Selector1,
    Selector2,
    Selector3,
    Selector9,
    Selector10,
    SelectorRangeMS,
    SelectorTimeMS,
    Time,
    TIUnit,
)
from drivers.errors import FrameError

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
        if not 1 <= n <= MAX_LENGTH_BYTES:
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
