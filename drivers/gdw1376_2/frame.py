"""The link frame of Q/GDW 1376.2 (§4.3, §5.2-§5.3): Fn/DT, node addresses, the information
field R, encoding, decoding and the stream decoder. Meaning (data units) lives apart.

See the package docstring (``drivers.gdw1376_2``) for the frame layout and sources.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from drivers.errors import EncodeError, FrameError
from drivers.framing import StreamDecoder
from drivers.gdw1376_2.codes import (
    ADDRESS_LEN,
    DENY_ADDRESSED,
    DENY_ID,
    DIR_UP,
    END,
    INFO_LEN,
    MAX_FN,
    MAX_FRAME_LEN,
    MAX_RELAYS,
    MIN_FRAME_LEN,
    MODE_MASK,
    PRM,
    R1_ATTACHED,
    R1_CONFLICT,
    R1_ROUTE_BYPASS,
    R1_SLAVE_NODE,
    START,
    CommMode,
    Direction,
    known_code,
)

# --------------------------------------------------------------------------------------
# Fn <-> DT


def fn_to_dt(fn: int) -> bytes:
    """Fn -> DT1 DT2. DT1 = 1 << ((Fn-1) mod 8), DT2 = (Fn-1) div 8.

    Written with Fn-1 on purpose: hellowangyu3/python's ``fn & 7`` / ``fn >> 3`` puts F8
    at DT1 00 DT2 01 instead of 80 00 (Q/GDW 1376.2 §5.4; docs/protocols.md §3.3).
    """
    if not 1 <= fn <= MAX_FN:
        raise EncodeError(f"Fn {fn}: expected 1..{MAX_FN}")
    return bytes([1 << ((fn - 1) % 8), (fn - 1) // 8])


def dt_to_fn(dt1: int, dt2: int) -> int:
    """DT1 DT2 -> Fn; DT1 must have exactly one bit set (one Fn per 1376.2 frame)."""
    if dt1 == 0 or dt1 & (dt1 - 1):
        raise FrameError(f"DT1 0x{dt1:02X} must have exactly one bit set")
    return dt2 * 8 + dt1.bit_length()


# --------------------------------------------------------------------------------------
# Addresses


def encode_node_address(address: str) -> bytes:
    """12 hex digits (meter addresses are BCD, so their digits) -> 6 bytes, low byte first.

    Meter addresses shorter than 12 digits are zero-padded as ``dlt645`` does. Module
    (master node) addresses need not be BCD: captured ones read BBBBBBBBBBBB, CCCCCCCCCCCC.
    """
    text = address.strip().upper()
    if text.isascii() and text.isdigit() and len(text) < 12:
        text = text.rjust(12, "0")
    if len(text) != 12 or not all(c in "0123456789ABCDEF" for c in text):
        raise EncodeError(f"node address {address!r}: expected 12 hex digits")
    return bytes.fromhex(text)[::-1]


def decode_node_address(raw: bytes) -> str:
    return raw[::-1].hex().upper()


# --------------------------------------------------------------------------------------
# Information field R


@dataclass(frozen=True)
class DownInfo:
    """R of a downlink frame (concentrator -> module); every bit has a meaning."""

    seq: int = 0
    slave_node: bool = False  # D2: to a slave node's module, so the address field follows
    relay_level: int = 0  # number of relay addresses in the address field
    route_bypass: bool = False  # D0: 1 = module without routing / in bypass mode
    attached_node: bool = False
    conflict_detection: bool = False
    channel: int = 0
    ecc: int = 0  # error-correction coding id
    reply_bytes: int = 0  # expected reply byte count, 0 = unknown
    rate: int = 0  # 0 = default rate
    rate_kbps: bool = False  # D15 of R4 R5: unit of ``rate``

    def encode(self) -> bytes:
        check_range("SEQ", self.seq, 0xFF)
        check_range("relay level", self.relay_level, MAX_RELAYS)
        check_range("channel", self.channel, 0x0F)
        check_range("error-correction coding", self.ecc, 0x0F)
        check_range("expected reply bytes", self.reply_bytes, 0xFF)
        check_range("rate", self.rate, 0x7FFF)
        r1 = _r1(self.route_bypass, self.attached_node, self.slave_node, self.conflict_detection)
        rate = self.rate | (0x8000 if self.rate_kbps else 0)
        return bytes(
            [
                r1 | self.relay_level << 4,
                self.ecc << 4 | self.channel,
                self.reply_bytes,
                rate & 0xFF,
                rate >> 8,
                self.seq,
            ]
        )

    @classmethod
    def decode(cls, r: bytes) -> DownInfo:
        rate = r[3] | r[4] << 8
        return cls(
            seq=r[5],
            slave_node=bool(r[0] & R1_SLAVE_NODE),
            relay_level=r[0] >> 4,
            route_bypass=bool(r[0] & R1_ROUTE_BYPASS),
            attached_node=bool(r[0] & R1_ATTACHED),
            conflict_detection=bool(r[0] & R1_CONFLICT),
            channel=r[1] & 0x0F,
            ecc=r[1] >> 4,
            reply_bytes=r[2],
            rate=rate & 0x7FFF,
            rate_kbps=bool(rate & 0x8000),
        )


# Bits of the uplink R that the standard leaves spare [M]. Modules fill them anyway
# (captures show R = F8 F0 00 00 FE 00), so they are kept for a lossless round trip.
_UP_SPARE = bytes([R1_ATTACHED | R1_CONFLICT, 0xF0, 0x00, 0x00, 0xFE, 0x00])


@dataclass(frozen=True)
class UpInfo:
    """R of an uplink frame (module -> concentrator)."""

    seq: int = 0
    slave_node: bool = False  # D2: the frame carries source and destination addresses
    relay_level: int = 0  # relay depth the node was reached with; no relay addresses follow
    route_bypass: bool = False
    channel: int = 0
    phase: int = 0  # measured phase, 0 unknown, 1..3
    meter_channel: int = 0  # 电表通道特征
    command_quality: int = 0  # last-hop signal quality 0..15, 0 = none
    reply_quality: int = 0
    event: bool = False  # the module has events to report
    spare: bytes = bytes(INFO_LEN)  # the spare bits, in place (see _UP_SPARE)

    def encode(self) -> bytes:
        check_range("SEQ", self.seq, 0xFF)
        for what, value in (
            ("relay level", self.relay_level),
            ("channel", self.channel),
            ("phase", self.phase),
            ("meter channel", self.meter_channel),
            ("command quality", self.command_quality),
            ("reply quality", self.reply_quality),
        ):
            check_range(what, value, 0x0F)
        if len(self.spare) != INFO_LEN or any(
            b & ~m & 0xFF for b, m in zip(self.spare, _UP_SPARE, strict=True)
        ):
            raise EncodeError(f"spare bits {self.spare.hex()} outside the spare mask")
        r1 = _r1(self.route_bypass, False, self.slave_node, False)
        wire = bytes(
            [
                r1 | self.relay_level << 4,
                self.channel,
                self.meter_channel << 4 | self.phase,
                self.reply_quality << 4 | self.command_quality,
                int(self.event),
                self.seq,
            ]
        )
        return bytes(a | b for a, b in zip(wire, self.spare, strict=True))

    @classmethod
    def decode(cls, r: bytes) -> UpInfo:
        return cls(
            seq=r[5],
            slave_node=bool(r[0] & R1_SLAVE_NODE),
            relay_level=r[0] >> 4,
            route_bypass=bool(r[0] & R1_ROUTE_BYPASS),
            channel=r[1] & 0x0F,
            phase=r[2] & 0x0F,
            meter_channel=r[2] >> 4,
            command_quality=r[3] & 0x0F,
            reply_quality=r[3] >> 4,
            event=bool(r[4] & 0x01),
            spare=bytes(a & m for a, m in zip(r, _UP_SPARE, strict=True)),
        )


Info = DownInfo | UpInfo


def _r1(bypass: bool, attached: bool, slave: bool, conflict: bool) -> int:
    return (
        (R1_ROUTE_BYPASS if bypass else 0)
        | (R1_ATTACHED if attached else 0)
        | (R1_SLAVE_NODE if slave else 0)
        | (R1_CONFLICT if conflict else 0)
    )


def check_range(what: str, value: int, high: int) -> None:
    if not 0 <= value <= high:
        raise EncodeError(f"{what} {value}: expected 0..{high}")


# --------------------------------------------------------------------------------------
# Frames


@dataclass(frozen=True)
class Frame:
    """One 1376.2 frame. The direction follows from the type of ``info``.

    ``source``/``destination`` are set exactly when ``info.slave_node`` is; ``relays``
    only in downlink frames, one per ``info.relay_level``.
    """

    afn: int
    fn: int
    data: bytes = b""
    info: Info = field(default_factory=DownInfo)
    prm: bool = True  # from the initiating station (a request or a spontaneous report)
    mode: int = CommMode.HPLC
    source: str | None = None
    relays: tuple[str, ...] = ()
    destination: str | None = None

    @property
    def direction(self) -> Direction:
        return Direction.UP if isinstance(self.info, UpInfo) else Direction.DOWN

    @property
    def seq(self) -> int:
        return self.info.seq

    @property
    def control(self) -> int:
        return (DIR_UP if self.direction else 0) | (PRM if self.prm else 0) | self.mode


def checksum(data: bytes | bytearray) -> int:
    return sum(data) & 0xFF


def encode_frame(frame: Frame) -> bytes:
    """Serialise a frame; L counts every byte from 68 to 16, CS sums C .. the data unit."""
    check_range("communication mode", frame.mode, MODE_MASK)
    check_range("AFN", frame.afn, 0xFF)
    body = bytearray([frame.control])
    body += frame.info.encode()
    addressed = frame.source is not None or frame.destination is not None
    if frame.info.slave_node and (frame.afn, frame.fn) == DENY_ID:
        raise EncodeError(DENY_ADDRESSED)
    if addressed != frame.info.slave_node:
        raise EncodeError(
            "source and destination addresses go with R1.D2 (comm-module flag) = 1 only"
        )
    if frame.source is not None and frame.destination is not None:
        if frame.direction == Direction.UP and frame.relays:
            raise EncodeError("uplink frames carry no relay addresses")
        if frame.direction == Direction.DOWN and len(frame.relays) != frame.info.relay_level:
            raise EncodeError(
                f"{len(frame.relays)} relay addresses for relay level {frame.info.relay_level}"
            )
        body += encode_node_address(frame.source)
        for relay in frame.relays:
            body += encode_node_address(relay)
        body += encode_node_address(frame.destination)
    elif addressed:
        raise EncodeError("an address field needs both source and destination")
    elif frame.relays:
        raise EncodeError("relay addresses need an address field (R1.D2 = 1)")
    body.append(frame.afn)
    body += fn_to_dt(frame.fn)
    body += frame.data
    total = 3 + len(body) + 2
    if total > MAX_FRAME_LEN:
        raise EncodeError(f"frame of {total} bytes: at most {MAX_FRAME_LEN} allowed")
    return bytes([START, total & 0xFF, total >> 8]) + bytes(body) + bytes([checksum(body), END])


def decode_frame(raw: bytes) -> Frame:
    """Decode exactly one frame, nothing before or after it."""
    decoder = Decoder()
    decoder.feed(raw)
    frame = decoder.next_frame()
    if frame is None:
        raise FrameError(f"incomplete frame: {len(raw)} bytes, {decoder.need()} more expected")
    if decoder.discarded:
        raise FrameError(f"{decoder.discarded} unexpected bytes before the frame")
    if decoder.buffered:
        raise FrameError(f"{decoder.buffered} unexpected bytes after the frame")
    return frame


def _address_len(control: int, r1: int) -> int:
    if not r1 & R1_SLAVE_NODE:
        return 0
    # The uplink R1.D4-D7 tells the depth but the uplink address field has no relays:
    # SPLCKQ-11 captures an uplink R1 = 34 (level 3) with a 12-byte address field, and
    # its decoder ignores the level in uplink frames for that reason.
    relays = 0 if control & DIR_UP else r1 >> 4
    return ADDRESS_LEN * (2 + relays)


class Decoder(StreamDecoder[Frame]):
    """Streaming frame decoder: feed byte chunks, take frames out.

    Parsing goes by the length field, never by searching for 0x16: a 0x16 or 0x68 may
    stand anywhere inside a frame. A candidate that fails a check costs one byte and a
    ``FrameError`` (with the offset inside the candidate); the next call resynchronises
    on the following 0x68. A candidate whose length is plausible is waited for; one whose
    length cannot hold its own header is refused at once (the buffer and its
    bookkeeping: ``drivers.framing``).
    """

    def __init__(self, max_buffer: int = 4096) -> None:
        super().__init__(max(max_buffer, MAX_FRAME_LEN), _scan, start=START)

    def need(self) -> int:
        """Bytes still missing for the frame being received (0 if unknown)."""
        buf = self._buf
        if not buf or buf[0] != START:
            return 0
        if len(buf) < 3:
            return 3 - len(buf)
        return max(0, (buf[1] | buf[2] << 8) - len(buf))


def _scan(buf: bytearray) -> tuple[Frame, int] | int:
    """The candidate frame at a 0x68 (the contract: ``drivers.framing.Scan``)."""
    if len(buf) < 3:
        return 3
    length = buf[1] | buf[2] << 8
    if length < MIN_FRAME_LEN:
        raise FrameError(f"length {length} below the minimum {MIN_FRAME_LEN}", offset=1)
    if length > MAX_FRAME_LEN:
        raise FrameError(f"length {length} exceeds the maximum {MAX_FRAME_LEN}", offset=1)
    if len(buf) >= 4 + INFO_LEN:
        needed = MIN_FRAME_LEN + _address_len(buf[3], buf[4])
        if length < needed:
            raise FrameError(
                f"length {length} cannot hold the header: R1 0x{buf[4]:02X} asks for an "
                f"address field, at least {needed} bytes",
                offset=1,
            )
    if len(buf) < length:
        return length
    candidate = bytes(buf[:length])
    expected_cs = checksum(candidate[3:-2])
    if candidate[-2] != expected_cs:
        raise FrameError(
            f"checksum 0x{candidate[-2]:02X}, expected 0x{expected_cs:02X}",
            offset=length - 2,
            raw=candidate,
        )
    if candidate[-1] != END:
        raise FrameError(
            f"end byte 0x{candidate[-1]:02X}, expected 0x16", offset=length - 1, raw=candidate
        )
    try:
        frame = _parse_body(candidate)
    except FrameError as exc:
        raise FrameError(exc.reason, offset=exc.offset, raw=candidate) from None
    return frame, length


def _parse_body(candidate: bytes) -> Frame:
    """Split a length- and checksum-checked candidate into its fields."""
    control = candidate[3]
    r = candidate[4:10]
    up = bool(control & DIR_UP)
    info: Info = UpInfo.decode(r) if up else DownInfo.decode(r)
    pos = 10
    source = destination = None
    relays: tuple[str, ...] = ()
    if info.slave_node:
        n_relays = _address_len(control, r[0]) // ADDRESS_LEN - 2
        source = decode_node_address(candidate[pos : pos + ADDRESS_LEN])
        pos += ADDRESS_LEN
        relays = tuple(
            decode_node_address(candidate[pos + i * ADDRESS_LEN : pos + (i + 1) * ADDRESS_LEN])
            for i in range(n_relays)
        )
        pos += n_relays * ADDRESS_LEN
        destination = decode_node_address(candidate[pos : pos + ADDRESS_LEN])
        pos += ADDRESS_LEN
    afn = candidate[pos]
    try:
        fn = dt_to_fn(candidate[pos + 1], candidate[pos + 2])
    except FrameError as exc:
        raise FrameError(exc.reason, offset=pos + 1) from None
    if info.slave_node and (afn, fn) == DENY_ID:
        raise FrameError(DENY_ADDRESSED, offset=4)
    return Frame(
        afn=afn,
        fn=fn,
        data=candidate[pos + 3 : -2],
        info=info,
        prm=bool(control & PRM),
        mode=known_code(CommMode, control & MODE_MASK),  # reserved modes still frame correctly
        source=source,
        relays=relays,
        destination=destination,
    )
