"""DL/T 645-2007 multi-function electricity meter protocol: a sans-I/O codec.

Frame (DL/T 645-2007 clause 4; bytes in transmit order)::

    [FE FE FE FE]  68  A0 A1 A2 A3 A4 A5  68   C   L   DATA[0..L-1]  CS  16
     wake-up       |   address, 12 BCD    |  ctrl len   each byte      sum  end
     (0..n bytes)  |   digits, low byte   |             +0x33 on the   of 68..DATA
                   |   first; AA = wild   |             wire           mod 256

    C (control):  bit7 DIR (1 = reply)  bit6 error reply  bit5 more frames follow
                  bits4..0 function code (0x11 read, 0x12 read follow-up, ...)

This module never touches a port. Requests are built as bytes; replies are fed to a
``Decoder`` in whatever chunks the transport happens to read, and come out as ``Frame``
objects. Framing (start bytes, length, checksum) is kept apart from meaning (data
identifiers, BCD layout, scale), so a frame can be valid while its DI is unknown to us.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum, IntFlag
from typing import Literal

from drivers.errors import EncodeError, FrameError, MeterError
from drivers.framing import StreamDecoder

PREAMBLE = b"\xfe\xfe\xfe\xfe"
START = 0x68
END = 0x16
DATA_OFFSET = 0x33  # every DATA byte travels as (raw + 0x33) mod 256 (clause 4.2)
BROADCAST = "999999999999"
WILDCARD_ALL = "AAAAAAAAAAAA"
WILDCARD_BYTE = 0xAA
MAX_DATA_LEN = 200  # clause 4.1: L <= 200 for read requests and replies
MIN_FRAME_LEN = 12  # 68 + 6 address + 68 + C + L + CS + 16, no data
BITS_PER_CHAR = 11  # 1 start + 8 data + even parity + 1 stop (8E1)

# Bits of the control byte (clause 4.1.3).
DIR_REPLY = 0x80
ERROR_REPLY = 0x40
MORE_FOLLOWS = 0x20
FUNCTION_MASK = 0x1F


class Function(IntEnum):
    """Function codes of the control byte, DL/T 645-2007 clause 4.1.3."""

    SECURITY = 0x03
    BROADCAST_TIME = 0x08
    READ_DATA = 0x11
    READ_FOLLOW_UP = 0x12
    READ_ADDRESS = 0x13
    WRITE_DATA = 0x14
    WRITE_ADDRESS = 0x15
    FREEZE = 0x16
    CHANGE_BAUD = 0x17
    CHANGE_PASSWORD = 0x18
    CLEAR_DEMAND = 0x19
    CLEAR_METER = 0x1A
    CLEAR_EVENTS = 0x1B
    RELAY_CONTROL = 0x1C
    OUTPUT_CONTROL = 0x1D


class ErrorBits(IntFlag):
    """The ERR byte of an abnormal reply (clause 4.2, error information word)."""

    OTHER = 0x01
    NO_DATA = 0x02  # no requested data: the DI is unknown to the meter
    UNAUTHORIZED = 0x04  # password wrong or not authorised
    BAUD_UNCHANGEABLE = 0x08
    YEAR_ZONES_EXCEEDED = 0x10
    DAY_SLOTS_EXCEEDED = 0x20
    TARIFFS_EXCEEDED = 0x40


_ERROR_TEXT = {
    ErrorBits.OTHER: "other error",
    ErrorBits.NO_DATA: "no requested data (unknown data identifier)",
    ErrorBits.UNAUTHORIZED: "password wrong or not authorised",
    ErrorBits.BAUD_UNCHANGEABLE: "baud rate cannot be changed",
    ErrorBits.YEAR_ZONES_EXCEEDED: "year time-zone count exceeded",
    ErrorBits.DAY_SLOTS_EXCEEDED: "daily time-slot count exceeded",
    ErrorBits.TARIFFS_EXCEEDED: "tariff count exceeded",
}


def describe_error(err: int) -> str:
    """Name every bit set in an ERR byte, e.g. ``"no requested data (...)"``."""
    names = [text for bit, text in _ERROR_TEXT.items() if err & bit]
    if err & 0x80:
        names.append("reserved bit 7 set")
    return "; ".join(names) if names else "no error bit set"


class RelayAction(IntEnum):
    """N1 of the 0x1C control command (DL/T 645 remote control; docs/protocols.md §1.8 [M])."""

    TRIP = 0x1A  # 跳闸: open the load switch
    CLOSE_ALLOW = 0x1B  # 合闸允许: the customer may close it
    CLOSE_DIRECT = 0x1C  # 直接合闸 (2013 amendment)
    ALARM = 0x2A
    ALARM_RELEASE = 0x2B
    KEEP_POWER = 0x3A  # 保电: never trip, whatever the balance
    KEEP_POWER_RELEASE = 0x3B


# --------------------------------------------------------------------------------------
# Addresses


def encode_address(address: str) -> bytes:
    """12-digit meter address → 6 bytes, lowest two digits first.

    A pair ``AA`` is the wildcard byte of abbreviated addressing; shorter all-digit
    addresses are left-padded with zeros, as meters print them without leading zeros.
    """
    if len(address) == 12 and address.isascii() and address.isdigit():
        # The daemon's case, once per request: 12 BCD digits are their own hex.
        return bytes.fromhex(address)[::-1]
    text = _normalise_address(address)
    if len(text) != 12:
        raise EncodeError(f"meter address {address!r}: expected 12 digits, got {len(text)}")
    out = bytearray()
    for i in range(10, -1, -2):
        pair = text[i : i + 2]
        if pair == "AA":
            out.append(WILDCARD_BYTE)
        elif _is_digits(pair):
            out.append(int(pair[0]) << 4 | int(pair[1]))
        else:
            raise EncodeError(
                f"meter address {address!r}: characters {i + 1}-{i + 2} are {pair!r}, "
                "expected two decimal digits or the wildcard AA"
            )
    return bytes(out)


def _is_digits(text: str) -> bool:
    # str.isdigit() alone also accepts "²" or Arabic-Indic digits, which are no BCD.
    return text.isascii() and text.isdigit()


def _normalise_address(address: str) -> str:
    text = address.strip().upper()
    if _is_digits(text) and len(text) < 12:
        text = text.rjust(12, "0")
    return text


def decode_address(raw: bytes) -> str:
    if len(raw) != 6:
        raise FrameError(f"address field has {len(raw)} bytes, expected 6")
    text = raw[::-1].hex()
    if text.isdigit():  # every nibble 0..9: plain BCD, the usual reply
        return text
    digits = []
    for i, b in enumerate(reversed(raw)):
        if b == WILDCARD_BYTE:
            digits.append("AA")
        elif b >> 4 <= 9 and b & 0xF <= 9:
            digits.append(f"{b:02X}")
        else:
            raise FrameError(
                f"address byte 0x{b:02X} is neither BCD nor the AA wildcard", offset=6 - i
            )
    return "".join(digits)


def address_matches(pattern: str, address: str) -> bool:
    """Does a request address (possibly with AA wildcard pairs) select this meter?

    Both sides are normalised as ``encode_address`` does (upper case, short addresses
    padded), so the address a user typed matches the 12 digits a reply carries.
    """
    if pattern == address:  # the usual reply: the meter's own 12 digits
        return True
    pattern, address = _normalise_address(pattern), _normalise_address(address)
    if pattern == BROADCAST:
        return True
    return all(p == "AA" or p == a for p, a in zip(_pairs(pattern), _pairs(address), strict=True))


def _pairs(address: str) -> list[str]:
    return [address[i : i + 2] for i in range(0, 12, 2)]


# --------------------------------------------------------------------------------------
# Frames


@dataclass(frozen=True)
class Frame:
    """One DL/T 645 frame. ``data`` holds the DATA field with the 0x33 offset removed."""

    address: str
    control: int
    data: bytes = b""

    @property
    def function(self) -> int:
        return self.control & FUNCTION_MASK

    @property
    def is_reply(self) -> bool:
        return bool(self.control & DIR_REPLY)

    @property
    def is_error(self) -> bool:
        return bool(self.control & ERROR_REPLY)

    @property
    def more_follows(self) -> bool:
        return bool(self.control & MORE_FOLLOWS)


# The 0x33 offset of the DATA field, added on the wire and removed on reading.
_ADD_OFFSET = bytes((b + DATA_OFFSET) & 0xFF for b in range(256))
_REMOVE_OFFSET = bytes((b - DATA_OFFSET) & 0xFF for b in range(256))


_READ_HEAD = bytes([START])
_READ_MID = bytes([START, 0x11, 4])  # Function.READ_DATA, four DATA bytes (the DI)


def checksum(data: bytes | bytearray) -> int:
    return sum(data) & 0xFF


def encode_frame(frame: Frame, *, preamble: int = 4) -> bytes:
    """Serialise a frame; the checksum covers the first 0x68 to the last DATA byte only."""
    if not 0 <= frame.control <= 0xFF:
        raise EncodeError(f"control byte {frame.control}: expected 0..255")
    if len(frame.data) > MAX_DATA_LEN:
        raise EncodeError(f"data field of {len(frame.data)} bytes: at most {MAX_DATA_LEN} allowed")
    body = bytearray([START])
    body += encode_address(frame.address)
    body += bytes([START, frame.control, len(frame.data)])
    body += frame.data.translate(_ADD_OFFSET)
    body.append(checksum(body))
    body.append(END)
    return b"\xfe" * preamble + bytes(body)


def decode_frame(raw: bytes) -> Frame:
    """Decode exactly one frame (leading FE bytes allowed, nothing else around it)."""
    decoder = Decoder()
    body = raw.lstrip(b"\xfe")  # wake-up bytes are not "unexpected bytes before the frame"
    decoder.feed(body)
    frame = decoder.next_frame()
    if frame is None:
        raise FrameError(f"incomplete frame: {len(body)} bytes, {decoder.need()} more expected")
    if decoder.buffered:
        raise FrameError(f"{decoder.buffered} unexpected bytes after the frame")
    if decoder.discarded:
        raise FrameError(f"{decoder.discarded} unexpected bytes before the frame")
    return frame


class Decoder(StreamDecoder[Frame]):
    """Streaming frame decoder: feed byte chunks, take frames out.

    Parsing goes by the length byte, never by searching for 0x16: a 0x16 or 0x68 may
    legally stand inside the address, the data or the checksum. Bytes before a start byte
    (wake-up FE bytes, line noise) are skipped. A candidate that fails a check costs one
    byte and a ``FrameError``; the next call resynchronises on the following 0x68, so a
    corrupt frame is reported as such and never mistaken for "need more data" (the
    buffer and its bookkeeping: ``drivers.framing``).
    """

    def __init__(self, max_buffer: int = 1024) -> None:
        super().__init__(max(max_buffer, MIN_FRAME_LEN + MAX_DATA_LEN), _scan, start=START)

    def need(self) -> int:
        """Bytes still missing for the frame that is being received (0 if unknown)."""
        buf = self._buf
        if not buf or buf[0] != START:
            return 0
        if len(buf) < 10:
            return 10 - len(buf)
        return max(0, MIN_FRAME_LEN + buf[9] - len(buf))


def _scan(buf: bytearray) -> tuple[Frame, int] | int:
    """The candidate frame at a 0x68 (the contract: ``drivers.framing.Scan``)."""
    if len(buf) < 10:
        return 10
    if buf[7] != START:
        raise FrameError(
            f"byte 0x{buf[7]:02X} where the second start byte 0x68 was expected", offset=7
        )
    length = buf[9]
    if length > MAX_DATA_LEN:
        raise FrameError(f"length byte {length} exceeds the maximum {MAX_DATA_LEN}", offset=9)
    total = MIN_FRAME_LEN + length
    if len(buf) < total:
        return total
    candidate = bytes(buf[:total])
    expected_cs = checksum(candidate[: total - 2])
    if candidate[total - 2] != expected_cs:
        raise FrameError(
            f"checksum 0x{candidate[total - 2]:02X}, expected 0x{expected_cs:02X}",
            offset=total - 2,
            raw=candidate,
        )
    if candidate[total - 1] != END:
        raise FrameError(
            f"end byte 0x{candidate[total - 1]:02X}, expected 0x16",
            offset=total - 1,
            raw=candidate,
        )
    try:
        address = decode_address(candidate[1:7])
    except FrameError as exc:
        raise FrameError(exc.reason, offset=exc.offset, raw=candidate) from None
    data = candidate[10 : 10 + length].translate(_REMOVE_OFFSET)
    return Frame(address=address, control=candidate[8], data=data), total


# --------------------------------------------------------------------------------------
# Requests a concentrator sends


def _di_bytes(di: int) -> bytes:
    if not 0 <= di <= 0xFFFFFFFF:
        raise EncodeError(f"data identifier {di:#x}: expected 4 bytes")
    return di.to_bytes(4, "little")


def build_read(address: str, di: int, params: bytes = b"", *, preamble: int = 4) -> bytes:
    """0x11 read data: DI (4 bytes, DI0 first) and optional parameters (load profile)."""
    if (
        not params
        and len(address) == 12
        and address.isascii()
        and address.isdigit()
        and 0 <= di <= 0xFFFFFFFF
    ):
        # The daemon's request, once per read: the bytes `encode_frame` gives, without
        # the Frame and the general checks a 12-digit address and a 4-byte DI pass.
        body = (
            _READ_HEAD
            + bytes.fromhex(address)[::-1]
            + _READ_MID
            + di.to_bytes(4, "little").translate(_ADD_OFFSET)
        )
        return b"\xfe" * preamble + body + bytes((sum(body) & 0xFF, END))
    return encode_frame(
        Frame(address, Function.READ_DATA, _di_bytes(di) + params), preamble=preamble
    )


def build_read_follow_up(address: str, di: int, seq: int, *, preamble: int = 4) -> bytes:
    """0x12 read follow-up frame ``seq`` (1..255) of a reply that announced more frames."""
    if not 1 <= seq <= 255:
        raise EncodeError(f"follow-up sequence {seq}: expected 1..255")
    data = _di_bytes(di) + bytes([seq])
    return encode_frame(Frame(address, Function.READ_FOLLOW_UP, data), preamble=preamble)


def build_read_address(pattern: str = WILDCARD_ALL, *, preamble: int = 4) -> bytes:
    """0x13 read communication address; the reply carries the meter's real address."""
    return encode_frame(Frame(pattern, Function.READ_ADDRESS), preamble=preamble)


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


def build_broadcast_time(when: dt.datetime, *, preamble: int = 4) -> bytes:
    """0x08 broadcast time sync: ss mm hh DD MM YY to 999999999999; meters do not reply."""
    data = _datetime_bcd(when, "smhDMY")
    return encode_frame(Frame(BROADCAST, Function.BROADCAST_TIME, data), preamble=preamble)


@dataclass(frozen=True)
class FreezeSpec:
    """When the meter should freeze; None stands for the 99 wildcard (every month/day/…).

    All four None means "freeze now" (the instantaneous freeze, data 99999999).
    """

    month: int | None = None
    day: int | None = None
    hour: int | None = None
    minute: int | None = None


def build_freeze(address: str, spec: FreezeSpec = FreezeSpec(), *, preamble: int = 4) -> bytes:
    """0x16 freeze: data mm hh DD MM (BCD, 99 = wildcard). May be sent to broadcast."""
    for what, v, low, high in (
        ("month", spec.month, 1, 12),
        ("day", spec.day, 1, 31),
        ("hour", spec.hour, 0, 23),
        ("minute", spec.minute, 0, 59),
    ):
        # bcd() alone would take 0..99, i.e. hour 25 or, worse, 99 meaning "every".
        if v is not None and not low <= v <= high:
            raise EncodeError(f"freeze {what} {v}: expected {low}..{high} or None (every)")
    data = b"".join(
        b"\x99" if v is None else bcd(v, 2) for v in (spec.minute, spec.hour, spec.day, spec.month)
    )
    return encode_frame(Frame(address, Function.FREEZE, data), preamble=preamble)


def build_relay_control(
    address: str,
    action: RelayAction,
    *,
    password_level: int,
    password: str,
    operator: str,
    valid_until: dt.datetime,
    preamble: int = 4,
) -> bytes:
    """0x1C remote control: PA P0 P1 P2, operator C0..C3, N1 action, N2 0, N3..N8 deadline.

    ``password`` is the 6-hex-digit password of level ``password_level`` (02 for remote
    control on most meters), ``operator`` the 8-hex-digit operator code the meter logs.
    """
    if not 0 <= password_level <= 0x99:
        raise EncodeError(f"password level {password_level}: expected 0..99")
    data = bytes([password_level])
    data += _hex_field(password, 6, "password")
    data += _hex_field(operator, 8, "operator code")
    data += bytes([int(action), 0x00])
    data += _datetime_bcd(valid_until, "smhDMY")
    return encode_frame(Frame(address, Function.RELAY_CONTROL, data), preamble=preamble)


def _hex_field(text: str, digits: int, what: str) -> bytes:
    if len(text) != digits:
        raise EncodeError(f"{what} {text!r}: expected {digits} hex digits, got {len(text)}")
    if not all(c in "0123456789abcdefABCDEF" for c in text):
        raise EncodeError(f"{what} {text!r}: expected {digits} hex digits")
    return int(text, 16).to_bytes(digits // 2, "little")


def parse_relay_control(data: bytes) -> tuple[int, str, str, RelayAction, dt.datetime]:
    """Meter side of 0x1C: (password level, password, operator, action, valid until)."""
    if len(data) != 16:
        raise FrameError(f"relay control data has {len(data)} bytes, expected 16")
    level = data[0]
    password = f"{int.from_bytes(data[1:4], 'little'):06X}"
    operator = f"{int.from_bytes(data[4:8], 'little'):08X}"
    try:
        action = RelayAction(data[8])
    except ValueError:
        raise FrameError(f"relay action 0x{data[8]:02X} is not defined", offset=8) from None
    deadline = _parse_datetime(data[10:16], "smhDMY", "relay deadline")
    return level, password, operator, action, deadline


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


def parse_broadcast_time(data: bytes) -> dt.datetime:
    if len(data) != 6:
        raise FrameError(f"broadcast time data has {len(data)} bytes, expected 6")
    return _parse_datetime(data, "smhDMY", "broadcast time")


# --------------------------------------------------------------------------------------
# Replies (the meter side, used by the simulator) and their parsing


def build_reply(
    address: str, function: int, data: bytes = b"", *, more: bool = False, preamble: int = 0
) -> bytes:
    control = DIR_REPLY | function | (MORE_FOLLOWS if more else 0)
    return encode_frame(Frame(address, control, data), preamble=preamble)


def build_error_reply(address: str, function: int, err: int, *, preamble: int = 0) -> bytes:
    control = DIR_REPLY | ERROR_REPLY | function
    return encode_frame(Frame(address, control, bytes([err])), preamble=preamble)


@dataclass(frozen=True)
class ReadReply:
    di: int
    value: bytes
    more_follows: bool
    seq: int | None = None


def check_reply(frame: Frame, function: int, address: str) -> None:
    """Raise MeterError for an error reply, FrameError if it answers something else."""
    if not frame.is_reply:
        raise FrameError(f"frame from {frame.address} is a request (control 0x{frame.control:02X})")
    if frame.function != function:
        raise FrameError(
            f"reply function 0x{frame.function:02X}, expected 0x{function:02X}", offset=8
        )
    if address not in (BROADCAST,) and not address_matches(address, frame.address):
        raise FrameError(f"reply from meter {frame.address}, expected {address}", offset=1)
    if frame.is_error:
        err = frame.data[0] if frame.data else 0
        raise MeterError(
            frame.address, err, describe_error(err), raw=encode_frame(frame, preamble=0)
        )


def parse_read_reply(frame: Frame, address: str, di: int) -> ReadReply:
    """Check a 0x91/0xB1/0x92 reply against the request and split DI from value."""
    function = frame.function
    if function not in (Function.READ_DATA, Function.READ_FOLLOW_UP):
        raise FrameError(f"reply function 0x{function:02X} is not a read reply", offset=8)
    check_reply(frame, function, address)
    if len(frame.data) < 4:
        raise FrameError(f"read reply data has {len(frame.data)} bytes, expected at least 4")
    got = int.from_bytes(frame.data[:4], "little")
    if got != di:
        raise FrameError(f"reply carries DI {got:08X}, expected {di:08X}", offset=10)
    value = frame.data[4:]
    seq = None
    if function == Function.READ_FOLLOW_UP:
        if not value:
            raise FrameError("follow-up reply lacks its sequence byte")
        value, seq = value[:-1], value[-1]
    return ReadReply(di, value, frame.more_follows, seq)


# --------------------------------------------------------------------------------------
# Data identifiers: what each register holds and how it is laid out

Kind = Literal[
    "bcd",  # unsigned BCD with implied decimals
    "sbcd",  # BCD, most significant bit of the top byte is the sign
    "date",  # YYMMDDWW (WW weekday, 0 = Sunday), sent WW first
    "time",  # hhmmss, sent ss first
    "datetime5",  # YYMMDDhhmm, sent mm first (freeze times)
    "word",  # 2-byte bit field (status words), little-endian
    "count",  # unsigned BCD integer
    "address",  # 6-byte BCD address
    "energy_block",  # N x 4-byte XXXXXX.XX: total then tariffs 1..4
]

Value = Decimal | int | dt.date | dt.time | dt.datetime | str | tuple[Decimal, ...]


@dataclass(frozen=True)
class DataId:
    di: int
    name: str
    description: str
    kind: Kind
    length: int
    decimals: int = 0
    unit: str = ""

    @property
    def code(self) -> str:
        return f"{self.di:08X}"


def _table(entries: Iterable[DataId]) -> dict[int, DataId]:
    return {e.di: e for e in entries}


_TARIFFS = {1: "sharp", 2: "peak", 3: "flat", 4: "valley"}  # 尖 峰 平 谷

DATA_IDS: dict[int, DataId] = _table(
    [
        DataId(
            0x00000000,
            "energy_combined_total",
            "combined active energy, total",
            "sbcd",
            4,
            2,
            "kWh",
        ),
        DataId(0x00010000, "energy_fwd_total", "forward active energy, total", "bcd", 4, 2, "kWh"),
        *(
            DataId(
                0x00010000 | t << 8,
                f"energy_fwd_t{t}",
                f"forward active energy, tariff {t} ({n})",
                "bcd",
                4,
                2,
                "kWh",
            )
            for t, n in _TARIFFS.items()
        ),
        DataId(0x00020000, "energy_rev_total", "reverse active energy, total", "bcd", 4, 2, "kWh"),
        *(
            DataId(
                0x02010000 | p << 8, f"voltage_{c}", f"phase {c.upper()} voltage", "bcd", 2, 1, "V"
            )
            for p, c in ((1, "a"), (2, "b"), (3, "c"))
        ),
        *(
            DataId(
                0x02020000 | p << 8, f"current_{c}", f"phase {c.upper()} current", "sbcd", 3, 3, "A"
            )
            for p, c in ((1, "a"), (2, "b"), (3, "c"))
        ),
        DataId(0x02030000, "power_total", "instantaneous total active power", "sbcd", 3, 4, "kW"),
        *(
            DataId(
                0x02030000 | p << 8,
                f"power_{c}",
                f"phase {c.upper()} active power",
                "sbcd",
                3,
                4,
                "kW",
            )
            for p, c in ((1, "a"), (2, "b"), (3, "c"))
        ),
        DataId(0x02060000, "power_factor", "total power factor", "sbcd", 2, 3, ""),
        DataId(0x02800002, "frequency", "grid frequency", "bcd", 2, 2, "Hz"),
        DataId(0x04000101, "meter_date", "meter date and weekday", "date", 4),
        DataId(0x04000102, "meter_time", "meter time", "time", 3),
        DataId(0x04000401, "meter_address", "communication address", "address", 6),
        *(
            DataId(0x04000500 | n, f"status_word_{n}", f"meter running status word {n}", "word", 2)
            for n in range(1, 8)
        ),
        DataId(0x03300D00, "cover_open_count", "meter cover opened, total count", "count", 3),
        DataId(0x05060001, "frozen_daily_time", "last daily freeze: time", "datetime5", 5),
        DataId(
            0x05060101,
            "frozen_daily_energy_fwd",
            "last daily freeze: forward active energy, total and tariffs 1-4",
            "energy_block",
            20,
            2,
            "kWh",
        ),
    ]
)

DATA_IDS_BY_NAME: dict[str, DataId] = {d.name: d for d in DATA_IDS.values()}

# Bit 4 of status word 3 is the relay (load switch) state: 0 closed (supply on), 1 open.
STATUS3_RELAY_OPEN = 0x0010

# What a plain `concentrator read` (no quantity named) asks a single-phase meter for.
DEFAULT_QUANTITIES: tuple[str, ...] = (
    "energy_fwd_total",
    "energy_fwd_t1",
    "energy_fwd_t2",
    "energy_fwd_t3",
    "energy_fwd_t4",
    "energy_rev_total",
    "voltage_a",
    "voltage_b",
    "voltage_c",
    "current_a",
    "current_b",
    "current_c",
    "power_total",
    "power_a",
    "power_b",
    "power_c",
    "power_factor",
    "frequency",
    "meter_date",
    "meter_time",
    "status_word_3",
    "cover_open_count",
    "frozen_daily_time",
    "frozen_daily_energy_fwd",
)

MAX_DAILY_FREEZES = 62  # DI0 = 01..3E: the meter keeps the last 62 daily freezes
_DAILY_FREEZE_FAMILIES = (0x05060000, 0x05060100)  # DI0 = nn: time / forward energy block


def daily_frozen_time_di(n: int) -> int:
    """DI of the time of the n-th previous daily freeze (1 = most recent)."""
    _check_freeze_index(n)
    return 0x05060000 | n


def daily_frozen_energy_di(n: int) -> int:
    """DI of the forward energy block of the n-th previous daily freeze."""
    _check_freeze_index(n)
    return 0x05060100 | n


def _check_freeze_index(n: int) -> None:
    if not 1 <= n <= MAX_DAILY_FREEZES:
        raise EncodeError(f"daily freeze index {n}: expected 1..{MAX_DAILY_FREEZES}")


def lookup(key: str | int) -> DataId:
    """Find a data identifier by name ("voltage_a"), hex code ("02010100") or number.

    The daily-freeze families 050600nn / 050601nn are resolved for every nn in 01..62.
    """
    if isinstance(key, str):
        if key in DATA_IDS_BY_NAME:
            return DATA_IDS_BY_NAME[key]
        # "frozen_daily_time_5": the name lookup() itself gives the 5th previous freeze
        base_name, _, suffix = key.rpartition("_")
        named = DATA_IDS_BY_NAME.get(base_name)
        if (
            named is not None
            and named.di & 0xFFFFFF00 in _DAILY_FREEZE_FAMILIES
            and _is_digits(suffix)
            and len(suffix) <= 2
            and 1 <= int(suffix) <= MAX_DAILY_FREEZES
        ):
            return lookup(named.di & 0xFFFFFF00 | int(suffix))
        try:
            key = int(key, 16)
        except ValueError:
            raise KeyError(f"unknown DL/T 645 quantity {key!r}") from None
    if key in DATA_IDS:
        return DATA_IDS[key]
    family, n = key & 0xFFFFFF00, key & 0xFF
    if family in _DAILY_FREEZE_FAMILIES and 1 <= n <= MAX_DAILY_FREEZES:
        base = DATA_IDS[family | 1]
        return DataId(
            key,
            f"{base.name}_{n}",
            base.description.replace("last", f"{_ordinal(n)} previous"),
            base.kind,
            base.length,
            base.decimals,
            base.unit,
        )
    raise KeyError(f"unknown DL/T 645 data identifier {key:08X}")


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def decode_value(entry: DataId, raw: bytes) -> Value:
    """Meter's value bytes (offset already removed, low byte first) → a Python value."""
    kind = entry.kind
    if kind == "bcd" and len(raw) == entry.length:
        digits = raw[::-1].hex()
        if digits.isdigit():  # every nibble 0..9: the usual reply, as `from_bcd` reads it
            return Decimal(int(digits)).scaleb(-entry.decimals)
    what = f"{entry.name} ({entry.code})"
    if len(raw) != entry.length:
        raise FrameError(f"{what}: {len(raw)} value bytes, expected {entry.length}")
    if kind == "bcd":
        return Decimal(from_bcd(raw, what=what)).scaleb(-entry.decimals)
    if kind == "sbcd":
        if raw and all(b == 0xFF for b in raw):
            # Checked before the sign bit is masked off, which would leave 0x7F behind.
            raise FrameError(f"{what}: all bytes 0xFF (the meter does not support it)")
        negative = bool(raw[-1] & 0x80)
        try:
            magnitude = from_bcd(raw[:-1] + bytes([raw[-1] & 0x7F]), what=what)
        except FrameError as exc:
            if exc.offset != len(raw) - 1:
                raise
            # Name the byte as it arrived, not with its sign bit masked off.
            raise FrameError(
                f"{what}: byte {exc.offset} is 0x{raw[-1]:02X}, not BCD beside its sign bit",
                offset=exc.offset,
            ) from None
        value = Decimal(magnitude).scaleb(-entry.decimals)
        return -value if negative else value
    if kind == "count":
        return from_bcd(raw, what=what)
    if kind == "word":
        return int.from_bytes(raw, "little")
    if kind == "address":
        return decode_address(raw)
    if kind == "date":
        from_bcd(raw, what=what)  # validate first: per-field slices would all report byte 0
        weekday = from_bcd(raw[0:1], what=what)
        day, month, year = (from_bcd(raw[i : i + 1], what=what) for i in (1, 2, 3))
        try:
            date = dt.date(2000 + year, month, day)
        except ValueError as exc:
            raise FrameError(f"{what}: {exc}") from None
        if weekday > 6:
            raise FrameError(f"{what}: weekday {weekday}, expected 0..6", offset=0)
        return date
    if kind == "time":
        from_bcd(raw, what=what)  # validate first: per-field slices would all report byte 0
        second, minute, hour = (from_bcd(raw[i : i + 1], what=what) for i in range(3))
        try:
            return dt.time(hour, minute, second)
        except ValueError as exc:
            raise FrameError(f"{what}: {exc}") from None
    if kind == "datetime5":
        return _parse_datetime(raw, "mhDMY", what)
    if kind == "energy_block":
        return tuple(
            Decimal(from_bcd(raw[i : i + 4], what=what)).scaleb(-entry.decimals)
            for i in range(0, entry.length, 4)
        )
    raise AssertionError(kind)


def encode_value(entry: DataId, value: Value) -> bytes:
    """The inverse of ``decode_value`` (the simulator's side)."""
    kind = entry.kind
    what = f"{entry.name} ({entry.code})"
    if kind in ("bcd", "sbcd"):
        if not isinstance(value, Decimal | int):
            raise EncodeError(f"{what}: expected a Decimal, got {type(value).__name__}")
        scaled = Decimal(value).scaleb(entry.decimals)
        if scaled != scaled.to_integral_value():
            raise EncodeError(f"{what}: {value} has more than {entry.decimals} decimals")
        number = int(scaled)
        negative = number < 0
        if negative and kind == "bcd":
            raise EncodeError(f"{what}: {value} is negative, the register is unsigned")
        digits = entry.length * 2
        limit = 10**digits if kind == "bcd" else 8 * 10 ** (digits - 1)
        if abs(number) >= limit:
            raise EncodeError(f"{what}: {value} out of range")
        raw = bytearray(bcd(abs(number), digits))
        if negative:
            raw[-1] |= 0x80
        return bytes(raw)
    if kind == "count":
        if not isinstance(value, int):
            raise EncodeError(f"{what}: expected an int")
        return bcd(value, entry.length * 2)
    if kind == "word":
        if not isinstance(value, int) or not 0 <= value <= 0xFFFF:
            raise EncodeError(f"{what}: expected an int 0..65535")
        return value.to_bytes(2, "little")
    if kind == "address":
        if not isinstance(value, str):
            raise EncodeError(f"{what}: expected an address string")
        return encode_address(value)
    if kind == "date":
        if not isinstance(value, dt.date):
            raise EncodeError(f"{what}: expected a date")
        weekday = (value.weekday() + 1) % 7  # Python: Monday 0; DL/T 645: Sunday 0
        year = _year_bcd(value.year)
        return bcd(weekday, 2) + bcd(value.day, 2) + bcd(value.month, 2) + bcd(year, 2)
    if kind == "time":
        if not isinstance(value, dt.time):
            raise EncodeError(f"{what}: expected a time")
        return bcd(value.second, 2) + bcd(value.minute, 2) + bcd(value.hour, 2)
    if kind == "datetime5":
        if not isinstance(value, dt.datetime):
            raise EncodeError(f"{what}: expected a datetime")
        return _datetime_bcd(value, "mhDMY")
    if kind == "energy_block":
        if not isinstance(value, tuple) or len(value) * 4 != entry.length:
            raise EncodeError(f"{what}: expected {entry.length // 4} Decimal values")
        part = DataId(entry.di, entry.name, entry.description, "bcd", 4, entry.decimals)
        return b"".join(encode_value(part, v) for v in value)
    raise AssertionError(kind)


def format_value(entry: DataId, value: Value) -> str:
    """Human/JSON text of a value: exact decimals, ISO dates, hex status words."""
    if entry.kind == "word" and isinstance(value, int):
        return f"0x{value:04X}"
    if isinstance(value, tuple):
        return " / ".join(str(v) for v in value)
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    return str(value)


def numeric_text(entry: DataId, value: Value) -> str:
    """A value as exact decimal text, for stores that keep numbers only.

    Dates become YYYYMMDD, times hhmmss, freeze times YYYYMMDDhhmm, status words their
    integer value and addresses their 12 digits; an energy block is not one number.
    """
    if isinstance(value, Decimal | int):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.strftime("%Y%m%d%H%M")
    if isinstance(value, dt.date):
        return value.strftime("%Y%m%d")
    if isinstance(value, dt.time):
        return value.strftime("%H%M%S")
    if isinstance(value, str) and value.isdigit():
        return value
    raise EncodeError(f"{entry.name} ({entry.code}): {value!r} is not a single number")


def wire_time(n_bytes: int, baud: int) -> float:
    """Seconds ``n_bytes`` take on the wire at ``baud`` with 8E1 framing (11 bits a char)."""
    return n_bytes * BITS_PER_CHAR / baud if baud > 0 else 0.0
