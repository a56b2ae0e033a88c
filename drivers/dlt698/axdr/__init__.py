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

The package: `values` (the types and descriptors with their range checks), `reader`
(bytes in), `writer` (bytes out).
"""

from __future__ import annotations

from drivers.dlt698.axdr.reader import (
    Reader,
    decode_data,
    read_csd,
    read_data,
    read_date_time_s,
    read_ms,
    read_oad,
    read_octets,
    read_omd,
    read_rcsd,
    read_region,
    read_road,
    read_rsd,
    read_selector2,
    read_sid,
    read_ti,
)
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
    STRING_TYPES,
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
    array,
    integer_range,
    structure,
)
from drivers.dlt698.axdr.writer import (
    encode_csd,
    encode_data,
    encode_date_time_s,
    encode_length,
    encode_ms,
    encode_octets,
    encode_rcsd,
    encode_region,
    encode_road,
    encode_rsd,
    encode_sid,
    encode_ti,
)

__all__ = [
    "COMDCB",
    "CSD",
    "INTEGER_TYPES",
    "MAX_DEPTH",
    "MAX_LENGTH_BYTES",
    "MS",
    "NULL",
    "OAD",
    "OCTET_TYPES",
    "OMD",
    "ROAD",
    "RSD",
    "SID",
    "SIDMAC",
    "STRING_TYPES",
    "TI",
    "BitString",
    "Data",
    "DataType",
    "Date",
    "DateTime",
    "DateTimeS",
    "Reader",
    "Region",
    "RegionKind",
    "ScalerUnit",
    "SelectNone",
    "Selector1",
    "Selector2",
    "Selector3",
    "Selector9",
    "Selector10",
    "SelectorRangeMS",
    "SelectorTimeMS",
    "TIUnit",
    "Time",
    "array",
    "decode_data",
    "encode_csd",
    "encode_data",
    "encode_date_time_s",
    "encode_length",
    "encode_ms",
    "encode_octets",
    "encode_rcsd",
    "encode_region",
    "encode_road",
    "encode_rsd",
    "encode_sid",
    "encode_ti",
    "integer_range",
    "read_csd",
    "read_data",
    "read_date_time_s",
    "read_ms",
    "read_oad",
    "read_octets",
    "read_omd",
    "read_rcsd",
    "read_region",
    "read_road",
    "read_rsd",
    "read_selector2",
    "read_sid",
    "read_ti",
    "structure",
]
