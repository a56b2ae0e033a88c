"""DL/T 645-2007 multi-function electricity meter protocol: a sans-I/O codec.

Frame (DL/T 645-2007 clause 4; bytes in transmit order)::

    [FE FE FE FE]  68  A0 A1 A2 A3 A4 A5  68   C   L   DATA[0..L-1]  CS  16
     wake-up       |   address, 12 BCD    |  ctrl len   each byte      sum  end
     (0..n bytes)  |   digits, low byte   |             +0x33 on the   of 68..DATA
                   |   first; AA = wild   |             wire           mod 256

    C (control):  bit7 DIR (1 = reply)  bit6 error reply  bit5 more frames follow
                  bits4..0 function code (0x11 read, 0x12 read follow-up, ...)

This package never touches a port. Requests are built as bytes; replies are fed to a
``Decoder`` in whatever chunks the transport happens to read, and come out as ``Frame``
objects. Framing (start bytes, length, checksum) is kept apart from meaning (data
identifiers, BCD layout, scale), so a frame can be valid while its DI is unknown to us.

The package: `frame` (constants, addresses, frames, checksum, the stream decoder),
`packed_bcd` (numbers and date-time fields in packed BCD), `requests` (what a
concentrator sends, and the meter side's parsers of it), `replies` (built by the
meter, checked by us), `data_ids` (the registers and `lookup`) and `values` (register
bytes to values and text).
"""

from __future__ import annotations

from drivers.dlt645.data_ids import (
    DATA_IDS,
    DATA_IDS_BY_NAME,
    DEFAULT_QUANTITIES,
    MAX_DAILY_FREEZES,
    STATUS3_RELAY_OPEN,
    DataId,
    Kind,
    daily_frozen_energy_di,
    daily_frozen_time_di,
    lookup,
)
from drivers.dlt645.frame import (
    BITS_PER_CHAR,
    BROADCAST,
    DATA_OFFSET,
    DIR_REPLY,
    END,
    ERROR_REPLY,
    FUNCTION_MASK,
    MAX_DATA_LEN,
    MIN_FRAME_LEN,
    MORE_FOLLOWS,
    PREAMBLE,
    START,
    WILDCARD_ALL,
    WILDCARD_BYTE,
    Decoder,
    ErrorBits,
    Frame,
    Function,
    address_matches,
    checksum,
    decode_address,
    decode_frame,
    describe_error,
    encode_address,
    encode_frame,
    wire_time,
)
from drivers.dlt645.packed_bcd import (
    bcd,
    from_bcd,
)
from drivers.dlt645.replies import (
    ReadReply,
    build_error_reply,
    build_reply,
    check_reply,
    parse_read_reply,
)
from drivers.dlt645.requests import (
    FreezeSpec,
    RelayAction,
    build_broadcast_time,
    build_freeze,
    build_read,
    build_read_address,
    build_read_follow_up,
    build_relay_control,
    parse_broadcast_time,
    parse_relay_control,
)
from drivers.dlt645.values import (
    Value,
    decode_value,
    encode_value,
    format_value,
    numeric_text,
)

__all__ = [
    "BITS_PER_CHAR",
    "BROADCAST",
    "DATA_IDS",
    "DATA_IDS_BY_NAME",
    "DATA_OFFSET",
    "DEFAULT_QUANTITIES",
    "DIR_REPLY",
    "END",
    "ERROR_REPLY",
    "FUNCTION_MASK",
    "MAX_DAILY_FREEZES",
    "MAX_DATA_LEN",
    "MIN_FRAME_LEN",
    "MORE_FOLLOWS",
    "PREAMBLE",
    "START",
    "STATUS3_RELAY_OPEN",
    "WILDCARD_ALL",
    "WILDCARD_BYTE",
    "DataId",
    "Decoder",
    "ErrorBits",
    "Frame",
    "FreezeSpec",
    "Function",
    "Kind",
    "ReadReply",
    "RelayAction",
    "Value",
    "address_matches",
    "bcd",
    "build_broadcast_time",
    "build_error_reply",
    "build_freeze",
    "build_read",
    "build_read_address",
    "build_read_follow_up",
    "build_relay_control",
    "build_reply",
    "check_reply",
    "checksum",
    "daily_frozen_energy_di",
    "daily_frozen_time_di",
    "decode_address",
    "decode_frame",
    "decode_value",
    "describe_error",
    "encode_address",
    "encode_frame",
    "encode_value",
    "format_value",
    "from_bcd",
    "lookup",
    "numeric_text",
    "parse_broadcast_time",
    "parse_read_reply",
    "parse_relay_control",
    "wire_time",
]
