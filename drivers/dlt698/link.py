"""DL/T 698.45-2017 link layer: the frame, its two CRCs, addresses and APDU fragments.

Frame (clause 6.2; bytes in transmit order)::

    [FE ..]  68  L0 L1  C  AF  A0 .. An-1  CA  HCS0 HCS1  user data ...  FCS0 FCS1  16
     wake-up |   |      |  |   |            |   |          |              |          end
     0..n    |   |      |  |   server       |   CRC of     APDU or APDU   CRC of L0 .. last
             |   |      |  |   address,     |   L0 .. CA   fragment       user data byte
             |   |      |  |   low byte     |   (LE)       (+0x33 each    (LE)
             |   |      |  |   first        client         if scrambled)
             |   |      |  address flags    address
             |   |      control
             |   length, little-endian: bits 0-13 = bytes from L0 to FCS1 (everything but
             |   68 and 16), bit 14 = unit (1 = kilobytes), bit 15 reserved
             start

    C:   bit7 DIR (1 = sent by the server, i.e. the meter)  bit6 PRM (1 = started by the
         client)  bit5 fragment flag (user data is an APDU fragment)  bit4 reserved
         bit3 scrambling flag (user data bytes +0x33)  bits2..0 function (1 link, 3 data)
    AF:  bits7-6 address type (0 single, 1 wildcard, 2 group, 3 broadcast)
         bit5 extended logical address present (then the first address byte is it, 2..255)
         bit4 logical address 0/1 (when bit5 = 0)   bits3-0 address bytes - 1
    CRC: CRC-16/X.25 (the PPP FCS-16: reflected 0x1021, init 0xFFFF, final XOR 0xFFFF),
         check value CRC("123456789") = 0x906E, sent low byte first.

A fragmented APDU travels as user data ``F0 F1 piece``: F0 F1 little-endian, bits 0-11
the fragment number, bits 14-15 the kind (0 first, 1 last, 2 confirm, 3 middle).

Framing stays apart from meaning: a frame decodes whatever its APDU says; ``apdu.py``
parses the user data. Nothing here touches a port.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from drivers.errors import EncodeError, FrameError

START = 0x68
END = 0x16
PREAMBLE_BYTE = 0xFE
SCRAMBLE = 0x33

LENGTH_MASK = 0x3FFF  # bits 0-13
LENGTH_UNIT_KB = 0x4000  # bit 14
LENGTH_RESERVED = 0x8000  # bit 15
MAX_FRAME_LEN = LENGTH_MASK + 2  # the largest byte-unit frame: 68 + 16383 + 16
# 68 L L C AF A CA HCS HCS FCS FCS 16 with a one-byte address and no user data
MIN_FRAME_LEN = 12
MAX_ADDRESS_BYTES = 16

DIR_SERVER = 0x80
PRM_CLIENT = 0x40
FRAGMENT_FLAG = 0x20
SCRAMBLE_FLAG = 0x08
FUNCTION_MASK = 0x07

# 0x8408 is 0x1021 bit-reversed: the table-free X.25 CRC, built once.
_CRC_TABLE: list[int] = []
for _i in range(256):
    _c = _i
    for _ in range(8):
        _c = (_c >> 1) ^ 0x8408 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc16(data: bytes | bytearray | memoryview) -> int:
    """CRC-16/X.25, the check of both HCS and FCS."""
    crc = 0xFFFF
    table = _CRC_TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc ^ 0xFFFF


class LinkFunction(IntEnum):
    LINK = 1  # link management: login, heartbeat, logout
    USER_DATA = 3  # application connection and data exchange


class AddressType(IntEnum):
    SINGLE = 0
    WILDCARD = 1  # nibble A matches any digit
    GROUP = 2
    BROADCAST = 3


@dataclass(frozen=True)
class ServerAddress:
    """The server (meter) address SA.

    ``address`` is written the way meters print it and object 4001 holds it: most
    significant byte first, as hex digits, e.g. ``"000000000322"``. The frame carries the
    same bytes in reverse order (``22 03 00 00 00 00``). An odd number of digits is padded
    with a trailing F (the standard's rule); ``A`` digits are wildcards.
    """

    address: str
    type: AddressType = AddressType.SINGLE
    logical: int = 0  # 0, 1 in the flag byte; 2..255 as the extended logical address byte

    def __post_init__(self) -> None:
        text = self.address.strip().upper()
        if len(text) % 2:
            text += "F"
        if not all(c in "0123456789ABCDEF" for c in text):
            raise EncodeError(f"server address {self.address!r}: expected hex digits")
        object.__setattr__(self, "address", text)
        if not isinstance(self.type, AddressType):
            object.__setattr__(self, "type", AddressType(self.type))
        if not 0 <= self.logical <= 255:
            raise EncodeError(f"logical address {self.logical}: expected 0..255")
        n = len(text) // 2 + (1 if self.logical >= 2 else 0)
        if not 1 <= n <= MAX_ADDRESS_BYTES:
            raise EncodeError(
                f"server address {self.address!r}: {n} bytes, expected 1..{MAX_ADDRESS_BYTES}"
            )

    @classmethod
    def of(cls, address: str | ServerAddress) -> ServerAddress:
        """``address`` as a ServerAddress: a meter's printed address, or one already."""
        return address if isinstance(address, ServerAddress) else cls(address)

    @classmethod
    def wildcard(cls, pattern: str = "AAAAAAAAAAAA") -> ServerAddress:
        """The address to reach an unknown meter point to point (read its 4001 first)."""
        return cls(pattern, AddressType.WILDCARD)

    @classmethod
    def broadcast(cls) -> ServerAddress:
        return cls("AA", AddressType.BROADCAST)

    def encode(self) -> bytes:
        raw = bytes.fromhex(self.address)[::-1]
        flags = int(self.type) << 6
        if self.logical >= 2:
            raw = bytes([self.logical]) + raw
            flags |= 0x20
        else:
            flags |= self.logical << 4
        return bytes([flags | (len(raw) - 1)]) + raw

    def matches(self, address: str) -> bool:
        """Does this (possibly wildcard) address select the meter with ``address``?"""
        if self.type is AddressType.BROADCAST:
            return True
        other = ServerAddress(address).address
        if len(other) != len(self.address):
            return False
        if self.type is AddressType.WILDCARD:
            return all(p == "A" or p == a for p, a in zip(self.address, other, strict=True))
        return self.address == other


def decode_server_address(raw: bytes) -> ServerAddress:
    """Flag byte and address bytes (as many as the flag byte says, nothing else)."""
    flags = raw[0]
    body = raw[1:]
    logical = (flags >> 4) & 1
    if flags & 0x20:
        if not body:
            raise FrameError("extended logical address flag without the address byte", offset=1)
        logical = body[0]
        if logical < 2:
            raise FrameError(f"extended logical address {logical}, expected 2..255", offset=1)
        body = body[1:]
    text = body[::-1].hex().upper()
    return ServerAddress(text, AddressType(flags >> 6), logical)


@dataclass(frozen=True)
class Frame:
    """One link frame. ``user_data`` is the APDU (or fragment), scrambling removed.

    The defaults make a client request: DIR 0, PRM 1, user data (control 0x43). A meter's
    answer has ``from_server=True`` (control 0xC3).
    """

    server: ServerAddress
    user_data: bytes = b""
    client: int = 0
    from_server: bool = False
    client_initiated: bool = True
    fragment: bool = False
    scrambled: bool = False
    function: int = LinkFunction.USER_DATA

    @property
    def control(self) -> int:
        return (
            (DIR_SERVER if self.from_server else 0)
            | (PRM_CLIENT if self.client_initiated else 0)
            | (FRAGMENT_FLAG if self.fragment else 0)
            | (SCRAMBLE_FLAG if self.scrambled else 0)
            | self.function
        )

    @property
    def address(self) -> str:
        return self.server.address


def encode_frame(frame: Frame, *, preamble: int = 4) -> bytes:
    """Serialise a frame: length, HCS over L..CA, FCS over L..user data."""
    if not 0 <= frame.client <= 0xFF:
        raise EncodeError(f"client address {frame.client}: expected 0..255")
    if not 0 <= frame.function <= FUNCTION_MASK:
        raise EncodeError(f"link function {frame.function}: expected 0..7")
    if not 0 <= preamble <= 64:
        raise EncodeError(f"preamble of {preamble} bytes: expected 0..64")
    address = frame.server.encode()
    payload = (
        bytes((b + SCRAMBLE) & 0xFF for b in frame.user_data)
        if frame.scrambled
        else frame.user_data
    )
    length = 2 + 1 + len(address) + 1 + 2 + len(payload) + 2
    if length > LENGTH_MASK:
        raise EncodeError(f"frame of {length + 2} bytes: at most {MAX_FRAME_LEN} allowed")
    head = bytearray(length.to_bytes(2, "little"))
    head.append(frame.control)
    head += address
    head.append(frame.client)
    head += crc16(head).to_bytes(2, "little")
    head += payload
    head += crc16(head).to_bytes(2, "little")
    return bytes([PREAMBLE_BYTE]) * preamble + bytes([START]) + bytes(head) + bytes([END])


def decode_frame(raw: bytes) -> Frame:
    """Exactly one frame: wake-up FE bytes before it are allowed, nothing else around it."""
    body = raw.lstrip(bytes([PREAMBLE_BYTE]))
    decoder = Decoder()
    decoder.feed(body)
    frame = decoder.next_frame()
    if frame is None:
        raise FrameError(f"incomplete frame: {len(body)} bytes, {decoder.need()} more expected")
    if decoder.discarded:
        raise FrameError(f"{decoder.discarded} unexpected bytes before the frame")
    if decoder.buffered:
        raise FrameError(f"{decoder.buffered} unexpected bytes after the frame")
    return frame


class Decoder:
    """Streaming frame decoder: feed byte chunks, take frames out.

    Parsing goes by the length field, never by searching for 0x16. The header check
    comes early: as soon as the header is in, its HCS must match, so a false 0x68 in line
    noise is refused after a dozen bytes instead of being waited for. A candidate that
    fails a check costs one byte and a ``FrameError``; the next call resynchronises on the
    following 0x68. Bytes after a frame's end byte stay in the buffer for the next frame.
    """

    def __init__(self, max_buffer: int = 2 * MAX_FRAME_LEN) -> None:
        self._buf = bytearray()
        self._max = max(max_buffer, MAX_FRAME_LEN)
        self.discarded = 0  # bytes skipped as preamble, noise or broken frames

    def feed(self, chunk: bytes) -> None:
        self._buf += chunk
        overflow = len(self._buf) - self._max
        if overflow > 0:
            del self._buf[:overflow]
            self.discarded += overflow

    def reset(self) -> None:
        self.discarded += len(self._buf)
        self._buf.clear()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def need(self) -> int:
        """Bytes still missing for the frame being received (0 if unknown)."""
        buf = self._buf
        if not buf or buf[0] != START:
            return 0
        if len(buf) < 3:
            return 3 - len(buf)
        total = ((buf[1] | buf[2] << 8) & LENGTH_MASK) + 2
        return max(0, total - len(buf))

    def next_frame(self) -> Frame | None:
        buf = self._buf
        start = buf.find(START)
        if start < 0:
            self.discarded += len(buf)
            buf.clear()
            return None
        if start:
            del buf[:start]
            self.discarded += start
        if len(buf) < 3:
            return None
        raw_length = buf[1] | buf[2] << 8
        if raw_length & LENGTH_UNIT_KB:
            self._drop_one()
            raise FrameError("length unit bit 14 set (kilobytes): not a byte count", offset=2)
        if raw_length & LENGTH_RESERVED:
            self._drop_one()
            raise FrameError("reserved bit 15 of the length field set", offset=2)
        total = (raw_length & LENGTH_MASK) + 2
        if total < MIN_FRAME_LEN:
            self._drop_one()
            raise FrameError(f"length {total - 2} below the minimum {MIN_FRAME_LEN - 2}", offset=1)
        if len(buf) < 5:
            return None
        address_len = (buf[4] & 0x0F) + 1
        hcs_at = 5 + address_len + 1  # after flags, address bytes and CA
        if total < hcs_at + 2 + 2 + 1:
            self._drop_one()
            raise FrameError(
                f"length {total - 2} cannot hold a header with {address_len} address bytes",
                offset=1,
            )
        if len(buf) < hcs_at + 2:
            return None
        hcs = buf[hcs_at] | buf[hcs_at + 1] << 8
        expected = crc16(memoryview(buf)[1:hcs_at])
        if hcs != expected:
            self._drop_one()
            raise FrameError(f"HCS 0x{hcs:04X}, expected 0x{expected:04X}", offset=hcs_at)
        if len(buf) < total:
            return None
        candidate = bytes(buf[:total])
        fcs = candidate[-3] | candidate[-2] << 8
        expected = crc16(candidate[1:-3])
        if fcs != expected:
            self._drop_one()
            raise FrameError(
                f"FCS 0x{fcs:04X}, expected 0x{expected:04X}", offset=total - 3, raw=candidate
            )
        if candidate[-1] != END:
            self._drop_one()
            raise FrameError(
                f"end byte 0x{candidate[-1]:02X}, expected 0x16", offset=total - 1, raw=candidate
            )
        try:
            frame = _parse(candidate, hcs_at)
        except FrameError as exc:
            self._drop_one()
            raise FrameError(exc.reason, offset=exc.offset, raw=candidate) from None
        del buf[:total]
        return frame

    def frames(self) -> list[Frame]:
        """All complete frames now in the buffer, silently skipping broken ones."""
        out: list[Frame] = []
        while True:
            try:
                frame = self.next_frame()
            except FrameError:
                continue
            if frame is None:
                return out
            out.append(frame)

    def _drop_one(self) -> None:
        del self._buf[:1]
        self.discarded += 1


def _parse(candidate: bytes, hcs_at: int) -> Frame:
    control = candidate[3]
    if control & 0x10:
        raise FrameError("reserved bit 4 of the control byte set", offset=3)
    try:
        server = decode_server_address(candidate[4 : hcs_at - 1])
    except FrameError as exc:
        raise FrameError(exc.reason, offset=4 + (exc.offset or 0)) from None
    payload = candidate[hcs_at + 2 : -3]
    scrambled = bool(control & SCRAMBLE_FLAG)
    if scrambled:
        payload = bytes((b - SCRAMBLE) & 0xFF for b in payload)
    return Frame(
        server=server,
        user_data=payload,
        client=candidate[hcs_at - 1],
        from_server=bool(control & DIR_SERVER),
        client_initiated=bool(control & PRM_CLIENT),
        fragment=bool(control & FRAGMENT_FLAG),
        scrambled=scrambled,
        function=control & FUNCTION_MASK,
    )


# --------------------------------------------------------------------------------------
# APDU fragments (control bit 5)

MAX_FRAGMENT_NUMBER = 0x0FFF


class FragmentKind(IntEnum):
    FIRST = 0
    LAST = 1
    CONFIRM = 2
    MIDDLE = 3


@dataclass(frozen=True)
class Fragment:
    number: int
    kind: FragmentKind
    data: bytes = b""

    def encode(self) -> bytes:
        if not 0 <= self.number <= MAX_FRAGMENT_NUMBER:
            raise EncodeError(f"fragment number {self.number}: expected 0..{MAX_FRAGMENT_NUMBER}")
        header = self.number | int(self.kind) << 14
        return header.to_bytes(2, "little") + self.data


def decode_fragment(user_data: bytes) -> Fragment:
    if len(user_data) < 2:
        raise FrameError(f"fragment of {len(user_data)} bytes lacks its 2-byte header")
    header = user_data[0] | user_data[1] << 8
    if header & 0x3000:
        raise FrameError(f"reserved bits 12-13 of fragment header 0x{header:04X} set")
    return Fragment(header & MAX_FRAGMENT_NUMBER, FragmentKind(header >> 14), user_data[2:])


def split_apdu(apdu: bytes, piece: int, *, first_number: int = 0) -> list[Fragment]:
    """Cut an APDU into numbered fragments of at most ``piece`` bytes (sender side)."""
    if piece < 1:
        raise EncodeError(f"fragment size {piece}: expected at least 1")
    chunks = [apdu[i : i + piece] for i in range(0, len(apdu), piece)] or [b""]
    if len(chunks) < 2:
        raise EncodeError("an APDU that fits in one frame is not fragmented")
    out = []
    for i, chunk in enumerate(chunks):
        kind = (
            FragmentKind.FIRST
            if i == 0
            else FragmentKind.LAST
            if i == len(chunks) - 1
            else FragmentKind.MIDDLE
        )
        out.append(Fragment((first_number + i) & MAX_FRAGMENT_NUMBER, kind, chunk))
    return out


class Reassembler:
    """Collects the fragments of one APDU from successive frames (receiver side).

    ``add`` returns the whole APDU when the last fragment arrives, else None; after each
    fragment the receiver answers with ``confirm(frame)``. A fragment out of order, or a
    middle/last one without a first, raises FrameError and drops what was collected.
    """

    def __init__(self, max_apdu: int = 64 * 1024) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self._next: int | None = None
        self._max = max_apdu

    @property
    def collecting(self) -> bool:
        return self._next is not None

    def add(self, frame: Frame) -> bytes | None:
        if not frame.fragment:
            raise FrameError("frame carries a whole APDU, not a fragment (control bit 5 clear)")
        fragment = decode_fragment(frame.user_data)
        if fragment.kind is FragmentKind.CONFIRM:
            raise FrameError(f"confirm of fragment {fragment.number} is not data")
        if fragment.kind is FragmentKind.FIRST:
            self._parts, self._size = [], 0
        elif self._next is None:
            raise FrameError(f"fragment {fragment.number} ({fragment.kind.name}) without a first")
        elif fragment.number != self._next:
            expected = self._next
            self.reset()
            raise FrameError(f"fragment {fragment.number}, expected {expected}")
        self._size += len(fragment.data)
        if self._size > self._max:
            self.reset()
            raise FrameError(f"fragmented APDU exceeds {self._max} bytes")
        self._parts.append(fragment.data)
        if fragment.kind is FragmentKind.LAST:
            apdu = b"".join(self._parts)
            self.reset()
            return apdu
        self._next = (fragment.number + 1) & MAX_FRAGMENT_NUMBER
        return None

    def reset(self) -> None:
        self._parts, self._size, self._next = [], 0, None

    @staticmethod
    def confirm(frame: Frame) -> Frame:
        """The confirm frame for a received fragment: same number, sent the other way.

        A client confirms with DIR 0, PRM 1 (0x63 with the fragment flag), whichever side
        started the exchange; a server with DIR 1, PRM 0.
        """
        fragment = decode_fragment(frame.user_data)
        return Frame(
            server=frame.server,
            user_data=Fragment(fragment.number, FragmentKind.CONFIRM).encode(),
            client=frame.client,
            from_server=not frame.from_server,
            client_initiated=frame.from_server,
            fragment=True,
            function=frame.function,
        )
