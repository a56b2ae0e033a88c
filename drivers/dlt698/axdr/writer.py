"""Writing A-XDR: lengths, descriptors, selectors and ``Data``; what the wire cannot
carry is refused with ``EncodeError``."""

from __future__ import annotations

import struct

from drivers.dlt698.axdr.values import (
    COMDCB,
    CSD,
    INTEGER_TYPES,
    MAX_DEPTH,
    MAX_LENGTH_BYTES,
    MS,
    OAD,
    OCTET_TYPES,
    OMD,
    ROAD,
    RSD,
    SID,
    SIDMAC,
    STRING_TYPES,
    TI,
    BitString,
    Data,
    DataType,
    Date,
    DateTime,
    DateTimeS,
    Region,
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
    check_int,
    integer_range,
)
from drivers.errors import EncodeError

# --------------------------------------------------------------------------------------
# Writing


def encode_length(n: int) -> bytes:
    if n < 0:
        raise EncodeError(f"length {n} is negative")
    if n < 0x80:
        return bytes([n])
    size = (n.bit_length() + 7) // 8
    if size > MAX_LENGTH_BYTES:
        raise EncodeError(f"length {n} does not fit in {MAX_LENGTH_BYTES} bytes")
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
            check_int("MS user type", item, 0, 0xFF)
            out.append(item)
        elif ms.choice == 3 and isinstance(item, bytes):
            out += encode_octets(item)
        elif ms.choice == 4 and isinstance(item, int) and not isinstance(item, bool):
            check_int("MS number", item, 0, 0xFFFF)
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
        check_int("Selector9", rsd.last, 0, 0xFF)
        return bytes([9, rsd.last])
    check_int("Selector10", rsd.last, 0, 0xFF)
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
