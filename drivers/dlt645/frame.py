"""DL/T 645-2007 framing: the bytes around a frame, never what its data means.

The frame layout (clause 4), the control byte, meter addresses, the 0x33 offset of the
DATA field, the checksum and the stream ``Decoder``, plus the time bytes take on the
wire. It stands apart from the data identifiers because the 1997 edition
(``drivers.dlt645_1997``) frames the same way and reuses all of it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag

from drivers.errors import EncodeError, FrameError
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


def wire_time(n_bytes: int, baud: int) -> float:
    """Seconds ``n_bytes`` take on the wire at ``baud`` with 8E1 framing (11 bits a char)."""
    return n_bytes * BITS_PER_CHAR / baud if baud > 0 else 0.0
