"""Q/GDW 1376.2 local interface (concentrator <-> carrier module): a sans-I/O codec.

Frame (Q/GDW 1376.2 §4.3, §5.2, §5.3; docs/protocols.md §3.1-§3.3; bytes in transmit order)::

    68  L0 L1   C   R1 R2 R3 R4 R5 R6   [ A ]   AFN  DT1 DT2  data unit ...   CS  16
    |   |       |   information field   |       |    |        |               |   end
    |   total   |   (down and up differ)|       |    Fn       |               sum of C .. last
    |   length, DIR PRM mode            |       |    (DT1 one bit, DT2 group) data byte, mod 256
    start  LE, 68..16 inclusive         address field, only when R1.D2 = 1: source(6),
                                        relays(6 x R1.D4-D7, downlink only), destination(6)

    C:  bit7 DIR (0 down from the concentrator, 1 up from the module)
        bit6 PRM (1 from the initiating station, 0 from the responding one)
        bits5..0 communication mode (1 centralised narrowband, 2 distributed, 3 HPLC, ...)
    R (down):  R1  D0 routing bypass, D1 attached node, D2 comm-module flag (address field
                   present), D3 conflict detection, D4-D7 relay level
               R2  D0-D3 channel, D4-D7 error-correction coding
               R3  expected reply byte count        R4 R5  rate (D15 = kbps unit)
               R6  message sequence number SEQ
    R (up):    R1  D0 routing bypass, D2 comm-module flag, D4-D7 relay level (D1, D3 spare)
               R2  D0-D3 channel (D4-D7 spare)
               R3  D0-D3 measured phase, D4-D7 meter channel characteristics
               R4  D0-D3 last-hop command quality, D4-D7 last-hop reply quality
               R5  D0 event flag (D1-D7 spare)      R6  SEQ, echoed from the request

Sources (docs/protocols.md §6): the info-field bit layout is from the liucun0505/SPLCKQ-11
conformance-test tool's header (cQGDW376_2.h) and its decoder (FView3762 display code);
data-unit layouts from two independent public parsers (a C "print_AFNxx" library and a
Q/GDW 10376.2-2019 Python parser), cross-checked against real frames captured in
SPLCKQ-11's CSG_Debug/日志 logs. Facts tagged [M] in comments are not confirmed there.

Framing (start byte, length, checksum) stays apart from meaning (AFN/Fn data units), so
a frame decodes even when its data unit is unknown to us; ``parse_unit`` then gives a
``RawUnit``. The module never touches a port.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from enum import Enum, IntEnum
from typing import ClassVar, Self

from drivers.dlt645 import bcd, from_bcd
from drivers.errors import EncodeError, FrameError
from drivers.framing import StreamDecoder

START = 0x68
END = 0x16
INFO_LEN = 6
ADDRESS_LEN = 6
# 68 + L(2) + C + R(6) + AFN + DT(2) + CS + 16: the shortest frame, with an empty data unit.
MIN_FRAME_LEN = 15
# The module in SPLCKQ-11's capture of AFN 03 F10 reports "largest frame 2048 bytes";
# anything longer is taken for a false start rather than waited for.
MAX_FRAME_LEN = 2048
MAX_FN = 2048  # DT2 is one byte: groups 0..255 of eight Fn each
MAX_RELAYS = 15  # R1.D4-D7
ZERO_ADDRESS = "000000000000"

# A deny (AFN 00 F2) is the module's own answer and has no address field: the standard's
# frame table lists none for it, and every captured deny has R1 D2 = 0 (docs/protocols.md
# §3.2, Q/GDW 1376.2 §5.5.1 [M]). A confirm may carry one (captured, §3.7).
DENY_ID = (0x00, 2)
DENY_ADDRESSED = (
    "AFN 00 F2 (deny) carries no address field, but R1 D2 (comm-module flag) is 1 "
    "(docs/protocols.md §3.2)"
)

DIR_UP = 0x80
PRM = 0x40
MODE_MASK = 0x3F

# R1 bits shared by both directions
_ROUTE_BYPASS = 0x01
_ATTACHED = 0x02
_SLAVE_NODE = 0x04
_CONFLICT = 0x08


class CommMode(IntEnum):
    """Communication mode, C bits 5..0 (Q/GDW 1376.2 §4.3; docs/protocols.md §3.1 [V])."""

    CENTRAL_NARROWBAND = 1  # 集中式路由载波
    DISTRIBUTED_NARROWBAND = 2  # 分布式路由载波
    HPLC = 3  # 宽带载波
    MICRO_POWER_WIRELESS = 10  # 微功率无线
    ETHERNET = 20


class AFN(IntEnum):
    """Application function codes (Q/GDW 1376.2 §5.5; docs/protocols.md §3.3)."""

    CONFIRM = 0x00  # 确认/否认
    INIT = 0x01  # 初始化
    FORWARD = 0x02  # 数据转发
    QUERY = 0x03  # 查询数据
    LINK_TEST = 0x04  # 链路接口检测
    CONTROL = 0x05  # 控制命令
    REPORT = 0x06  # 主动上报
    ROUTE_QUERY = 0x10  # 路由查询
    ROUTE_SET = 0x11  # 路由设置
    ROUTE_CONTROL = 0x12  # 路由控制
    ROUTE_FORWARD = 0x13  # 路由数据转发
    ROUTE_READ = 0x14  # 路由数据抄读
    FILE = 0x15  # 文件传输
    DEBUG = 0xF0  # 内部调试


class Direction(IntEnum):
    DOWN = 0  # concentrator -> module
    UP = 1  # module -> concentrator


class Edition(Enum):
    """Edition of the standard: 2009 modules lack AFN 13 F1's delay flag and duration."""

    Q2009 = "2009"
    Q2013 = "2013"


class ProtocolType(IntEnum):
    """Protocol of a forwarded meter frame (13 F1, 06 F1/F2, 11 F1, 05 F3)."""

    TRANSPARENT = 0
    DLT645_1997 = 1
    DLT645_2007 = 2
    DLT698_45 = 3


class DenyReason(IntEnum):
    """Error status of AFN 00 F2 (deny). 0..12: the 2013 table as printed by two
    independent parsers; 109..111 appear in a Q/GDW 10376.2-2019 parser (HPLC)."""

    COMM_TIMEOUT = 0  # 通信超时
    INVALID_DATA_UNIT = 1  # 无效数据单元
    LENGTH_ERROR = 2  # 长度错
    CHECKSUM_ERROR = 3  # 校验错误
    NO_SUCH_INFO_CLASS = 4  # 信息类不存在
    FORMAT_ERROR = 5  # 格式错误
    DUPLICATE_METER = 6  # 表号重复
    NO_SUCH_METER = 7  # 表号不存在: the address is not in the module's node table
    METER_NO_REPLY = 8  # 电表应用层无应答
    MASTER_BUSY = 9  # 主节点忙
    UNSUPPORTED = 10  # 主节点不支持此命令
    NODE_NO_REPLY = 11  # 从节点不应答
    NODE_NOT_IN_NETWORK = 12  # 从节点不在网内
    TOO_MANY_CONCURRENT = 109  # 超过最大并发数
    TOO_MANY_FRAMES = 110  # 超过单个帧最大允许的电表协议报文条数
    METER_BEING_READ = 111  # 正在抄读该表


_DENY_TEXT = {
    DenyReason.COMM_TIMEOUT: "communication timeout",
    DenyReason.INVALID_DATA_UNIT: "invalid data unit",
    DenyReason.LENGTH_ERROR: "length error",
    DenyReason.CHECKSUM_ERROR: "checksum error",
    DenyReason.NO_SUCH_INFO_CLASS: "information class does not exist",
    DenyReason.FORMAT_ERROR: "format error",
    DenyReason.DUPLICATE_METER: "meter address already in the node table",
    DenyReason.NO_SUCH_METER: "meter address not in the node table",
    DenyReason.METER_NO_REPLY: "meter application layer did not answer",
    DenyReason.MASTER_BUSY: "master node busy",
    DenyReason.UNSUPPORTED: "master node does not support this command",
    DenyReason.NODE_NO_REPLY: "slave node did not answer",
    DenyReason.NODE_NOT_IN_NETWORK: "slave node not in the network",
    DenyReason.TOO_MANY_CONCURRENT: "more requests than the module runs concurrently",
    DenyReason.TOO_MANY_FRAMES: "more meter frames than one request may carry",
    DenyReason.METER_BEING_READ: "the meter is being read already",
}


def describe_deny(reason: int) -> str:
    try:
        return _DENY_TEXT[DenyReason(reason)]
    except ValueError:
        return f"reserved reason code {reason}"


class RouteTask(IntEnum):
    """AFN 06 F3: which routing task changed state (路由工作任务变动类型)."""

    READING_DONE = 1  # 抄表任务结束
    SEARCH_DONE = 2  # 搜表任务结束


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
        _check_range("SEQ", self.seq, 0xFF)
        _check_range("relay level", self.relay_level, MAX_RELAYS)
        _check_range("channel", self.channel, 0x0F)
        _check_range("error-correction coding", self.ecc, 0x0F)
        _check_range("expected reply bytes", self.reply_bytes, 0xFF)
        _check_range("rate", self.rate, 0x7FFF)
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
            slave_node=bool(r[0] & _SLAVE_NODE),
            relay_level=r[0] >> 4,
            route_bypass=bool(r[0] & _ROUTE_BYPASS),
            attached_node=bool(r[0] & _ATTACHED),
            conflict_detection=bool(r[0] & _CONFLICT),
            channel=r[1] & 0x0F,
            ecc=r[1] >> 4,
            reply_bytes=r[2],
            rate=rate & 0x7FFF,
            rate_kbps=bool(rate & 0x8000),
        )


# Bits of the uplink R that the standard leaves spare [M]. Modules fill them anyway
# (captures show R = F8 F0 00 00 FE 00), so they are kept for a lossless round trip.
_UP_SPARE = bytes([_ATTACHED | _CONFLICT, 0xF0, 0x00, 0x00, 0xFE, 0x00])


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
        _check_range("SEQ", self.seq, 0xFF)
        for what, value in (
            ("relay level", self.relay_level),
            ("channel", self.channel),
            ("phase", self.phase),
            ("meter channel", self.meter_channel),
            ("command quality", self.command_quality),
            ("reply quality", self.reply_quality),
        ):
            _check_range(what, value, 0x0F)
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
            slave_node=bool(r[0] & _SLAVE_NODE),
            relay_level=r[0] >> 4,
            route_bypass=bool(r[0] & _ROUTE_BYPASS),
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
        (_ROUTE_BYPASS if bypass else 0)
        | (_ATTACHED if attached else 0)
        | (_SLAVE_NODE if slave else 0)
        | (_CONFLICT if conflict else 0)
    )


def _check_range(what: str, value: int, high: int) -> None:
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
    _check_range("communication mode", frame.mode, MODE_MASK)
    _check_range("AFN", frame.afn, 0xFF)
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
    if not r1 & _SLAVE_NODE:
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
        mode=_known(CommMode, control & MODE_MASK),  # reserved modes still frame correctly
        source=source,
        relays=relays,
        destination=destination,
    )


# --------------------------------------------------------------------------------------
# Data units. Offsets in their FrameErrors count from the first data-unit byte.


class _Cursor:
    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def take(self, n: int, field_name: str) -> bytes:
        if self.pos + n > len(self.data):
            raise FrameError(
                f"{self.what}: {field_name} needs {n} bytes, "
                f"the data unit ends after {len(self.data) - self.pos}",
                offset=self.pos,
            )
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def byte(self, field_name: str) -> int:
        return self.take(1, field_name)[0]

    def word(self, field_name: str) -> int:
        return int.from_bytes(self.take(2, field_name), "little")

    def address(self, field_name: str) -> str:
        return decode_node_address(self.take(ADDRESS_LEN, field_name))

    def date(self, field_name: str) -> dt.date:
        at = self.pos
        raw = self.take(3, field_name)
        what = f"{self.what}: {field_name}"
        try:
            from_bcd(raw, what=what)
        except FrameError as exc:
            raise FrameError(exc.reason, offset=at + (exc.offset or 0)) from None
        day, month, year = (from_bcd(raw[i : i + 1]) for i in range(3))
        try:
            return dt.date(2000 + year, month, day)
        except ValueError as exc:
            raise FrameError(f"{what}: {exc}", offset=at) from None

    def end(self) -> None:
        if self.pos != len(self.data):
            raise FrameError(
                f"{self.what}: {len(self.data) - self.pos} bytes after the last field",
                offset=self.pos,
            )


def _date_bytes(when: dt.date) -> bytes:
    # Format A.20 of the 376 family [M]: DD MM YY in BCD, day first. Matches captured
    # F10 dates 28 06 16 / 27 06 16 (module firmware of June 2016, log of 2017).
    if not 2000 <= when.year <= 2099:
        raise EncodeError(f"date {when}: only 2000..2099 fit in two BCD year digits")
    return bcd(when.day, 2) + bcd(when.month, 2) + bcd(when.year % 100, 2)


def _latin1(text: str, n: int, what: str) -> bytes:
    try:
        raw = text.encode("latin-1")
    except UnicodeEncodeError:
        raise EncodeError(f"{what} {text!r}: expected {n} single-byte characters") from None
    if len(raw) != n:
        raise EncodeError(f"{what} {text!r}: expected {n} characters")
    return raw


def _address_bytes(addresses: Iterable[str]) -> bytes:
    return b"".join(encode_node_address(a) for a in addresses)


@dataclass(frozen=True)
class Command:
    """A command whose data unit is empty: 01 F1..F3, 03 F1/F10 queries, 10 F1, 12 F1..F3."""

    afn: int
    fn: int

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        return b""


HARDWARE_INIT = Command(AFN.INIT, 1)  # 硬件初始化: the module restarts
PARAMETER_INIT = Command(AFN.INIT, 2)  # 参数区初始化: clears the node table
DATA_INIT = Command(AFN.INIT, 3)  # 数据区初始化
QUERY_VENDOR = Command(AFN.QUERY, 1)
QUERY_MASTER_ADDRESS = Command(AFN.QUERY, 4)  # 查询主节点地址
QUERY_RUN_MODE = Command(AFN.QUERY, 10)
QUERY_NODE_COUNT = Command(AFN.ROUTE_QUERY, 1)
ROUTE_RESTART = Command(AFN.ROUTE_CONTROL, 1)
ROUTE_PAUSE = Command(AFN.ROUTE_CONTROL, 2)
ROUTE_RESUME = Command(AFN.ROUTE_CONTROL, 3)


@dataclass(frozen=True)
class RawUnit:
    """A data unit this codec has no layout for, kept as bytes."""

    afn: int
    fn: int
    data: bytes

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        return self.data


@dataclass(frozen=True)
class Confirm:
    """AFN 00 F1: bit 0 of the 32-bit status word = command processed, bits 1..31 = channels
    1..31 idle; then the wait time in seconds (C "print_AFN00" parser)."""

    AFN: ClassVar[int] = AFN.CONFIRM
    FN: ClassVar[int] = 1

    processed: bool = True
    idle_channels: int = 0  # bit n set: channel n idle (n = 1..31)
    wait_s: int = 0

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        if self.idle_channels & 1 or not 0 <= self.idle_channels < 1 << 32:
            raise EncodeError(f"idle channels 0x{self.idle_channels:X}: bits 1..31 only")
        _check_range("wait time", self.wait_s, 0xFFFF)
        word = self.idle_channels | int(self.processed)
        return word.to_bytes(4, "little") + self.wait_s.to_bytes(2, "little")

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = _Cursor(data, "AFN 00 F1 confirm")
        word = int.from_bytes(c.take(4, "status word"), "little")
        wait = c.word("wait time")
        c.end()
        return cls(bool(word & 1), word & ~1, wait)


@dataclass(frozen=True)
class Deny:
    """AFN 00 F2: one error-status byte."""

    AFN: ClassVar[int] = AFN.CONFIRM
    FN: ClassVar[int] = 2

    reason: int

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        _check_range("deny reason", self.reason, 0xFF)
        return bytes([self.reason])

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = _Cursor(data, "AFN 00 F2 deny")
        reason = c.byte("error status")
        c.end()
        return cls(_known(DenyReason, reason))

    @property
    def description(self) -> str:
        return describe_deny(self.reason)


@dataclass(frozen=True)
class VendorInfo:
    """AFN 03 F1 reply: vendor code (2 ASCII), chip code (2 ASCII), version date
    (DD MM YY BCD), version (2 bytes, low byte first). Character order as sent [M]."""

    AFN: ClassVar[int] = AFN.QUERY
    FN: ClassVar[int] = 1
    LENGTH: ClassVar[int] = 9

    vendor: str
    chip: str
    date: dt.date
    version: int  # as sent, low byte first; BCD in practice, shown as 4 hex digits

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        _check_range("version", self.version, 0xFFFF)
        return (
            _latin1(self.vendor, 2, "vendor code")
            + _latin1(self.chip, 2, "chip code")
            + _date_bytes(self.date)
            + self.version.to_bytes(2, "little")
        )

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = _Cursor(data, "AFN 03 F1 vendor information")
        out = cls._read(c)
        c.end()
        return out

    @classmethod
    def _read(cls, c: _Cursor) -> Self:
        vendor = c.take(2, "vendor code").decode("latin-1")
        chip = c.take(2, "chip code").decode("latin-1")
        date = c.date("version date")
        return cls(vendor, chip, date, c.word("version"))


@dataclass(frozen=True)
class MasterAddress:
    """AFN 03 F4 reply: the master node's (the module's own) address, 6 bytes, low byte
    first (docs/protocols.md §3.4). A1 of every downlink address field is this address."""

    AFN: ClassVar[int] = AFN.QUERY
    FN: ClassVar[int] = 4

    address: str

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        return encode_node_address(self.address)

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = _Cursor(data, "AFN 03 F4 master node address")
        out = cls(c.address("master node address"))
        c.end()
        return out


# Q/GDW 10376.2-2019, the edition that lets a module run several reads at once (its deny
# 109 "more than the concurrent maximum"); a module tells the edition it implements by
# the protocol publication date of its 03 F10 (docs/protocols.md §3.6) [U].
CONCURRENT_EDITION = dt.date(2019, 1, 1)


@dataclass(frozen=True)
class RunMode:
    """AFN 03 F10 reply, 本地通信模块运行模式信息 (Q/GDW 10376.2-2019 parser field list,
    matched byte for byte by SPLCKQ-11's captured reply; mode-word bits from a module's
    own Data03HF10 source). No field says how many requests the module runs at once."""

    AFN: ClassVar[int] = AFN.QUERY
    FN: ClassVar[int] = 10

    mode_word: bytes  # 6 bytes, see the properties
    monitor_timeout_s: int  # 从节点监控最大超时时间: longest 13 F1 round trip
    broadcast_timeout_s: int
    max_frame_len: int
    max_file_packet: int
    upgrade_wait_s: int
    master_address: str
    max_nodes: int
    node_count: int
    protocol_date: dt.date  # 协议发布日期
    protocol_filed_date: dt.date  # 协议最后备案日期
    vendor: VendorInfo
    rates: tuple[int, ...] = ()  # one 16-bit word per rate; D15 = kbps, 0 = default

    @property
    def comm_type(self) -> int:
        """1 narrowband carrier, 2 broadband carrier, 3 micro-power wireless."""
        return self.mode_word[0] & 0x0F

    @property
    def routing(self) -> bool:
        return bool(self.mode_word[0] & 0x10)  # 路由管理方式: the module routes itself

    @property
    def needs_node_table(self) -> bool:
        return bool(self.mode_word[0] & 0x20)  # 从节点信息模式: concentrator sends 11 F1

    @property
    def read_modes(self) -> int:
        """周期抄表模式: 1 concentrator-led only, 2 router-led only, 3 both."""
        return self.mode_word[0] >> 6

    @property
    def channel_count(self) -> int:
        return self.mode_word[2] & 0x1F

    @property
    def control_mode(self) -> int | None:
        """The communication mode for the control byte C (docs/protocols.md §3.1): broadband
        -> 3 (HPLC), narrowband -> 1 if the module routes itself (centralised routing)
        else 2, micro-power wireless -> 10; None for a reserved communication type."""
        if self.comm_type == 2:
            return CommMode.HPLC
        if self.comm_type == 1:
            return CommMode.CENTRAL_NARROWBAND if self.routing else CommMode.DISTRIBUTED_NARROWBAND
        if self.comm_type == 3:
            return CommMode.MICRO_POWER_WIRELESS
        return None

    @property
    def concurrent(self) -> bool:
        """The module implements an edition that runs several 13 F1 reads at once; a
        1376.2-2013 module finishes one before it takes the next (docs/protocols.md §3.6)."""
        return self.protocol_date >= CONCURRENT_EDITION

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        if len(self.mode_word) != 6:
            raise EncodeError(f"mode word of {len(self.mode_word)} bytes, expected 6")
        if self.mode_word[3] & 0x0F != len(self.rates):
            raise EncodeError(
                f"mode word announces {self.mode_word[3] & 0x0F} rates, {len(self.rates)} given"
            )
        for what, value, high in (
            ("monitor timeout", self.monitor_timeout_s, 0xFF),
            ("broadcast timeout", self.broadcast_timeout_s, 0xFFFF),
            ("largest frame", self.max_frame_len, 0xFFFF),
            ("largest file packet", self.max_file_packet, 0xFFFF),
            ("upgrade wait", self.upgrade_wait_s, 0xFF),
            ("node capacity", self.max_nodes, 0xFFFF),
            ("node count", self.node_count, 0xFFFF),
            *(("rate", r, 0xFFFF) for r in self.rates),
        ):
            _check_range(what, value, high)
        return (
            self.mode_word
            + bytes([self.monitor_timeout_s])
            + self.broadcast_timeout_s.to_bytes(2, "little")
            + self.max_frame_len.to_bytes(2, "little")
            + self.max_file_packet.to_bytes(2, "little")
            + bytes([self.upgrade_wait_s])
            + encode_node_address(self.master_address)
            + self.max_nodes.to_bytes(2, "little")
            + self.node_count.to_bytes(2, "little")
            + _date_bytes(self.protocol_date)
            + _date_bytes(self.protocol_filed_date)
            + self.vendor.encode()
            + b"".join(r.to_bytes(2, "little") for r in self.rates)
        )

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = _Cursor(data, "AFN 03 F10 run mode")
        mode_word = c.take(6, "mode word")
        out = cls(
            mode_word=mode_word,
            monitor_timeout_s=c.byte("monitor timeout"),
            broadcast_timeout_s=c.word("broadcast timeout"),
            max_frame_len=c.word("largest frame"),
            max_file_packet=c.word("largest file packet"),
            upgrade_wait_s=c.byte("upgrade wait"),
            master_address=c.address("master node address"),
            max_nodes=c.word("node capacity"),
            node_count=c.word("node count"),
            protocol_date=c.date("protocol date"),
            protocol_filed_date=c.date("protocol filing date"),
            vendor=VendorInfo._read(c),
            rates=tuple(c.word(f"rate {i + 1}") for i in range(mode_word[3] & 0x0F)),
        )
        c.end()
        return out


@dataclass(frozen=True)
class NodeCount:
    """AFN 10 F1 reply: nodes in the table and the table's capacity."""

    AFN: ClassVar[int] = AFN.ROUTE_QUERY
    FN: ClassVar[int] = 1

    count: int
    capacity: int

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        _check_range("node count", self.count, 0xFFFF)
        _check_range("node capacity", self.capacity, 0xFFFF)
        return self.count.to_bytes(2, "little") + self.capacity.to_bytes(2, "little")

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = _Cursor(data, "AFN 10 F1 node count")
        out = cls(c.word("node count"), c.word("node capacity"))
        c.end()
        return out


@dataclass(frozen=True)
class NodePageRequest:
    """AFN 10 F2 request: first node (1-based) and how many."""

    AFN: ClassVar[int] = AFN.ROUTE_QUERY
    FN: ClassVar[int] = 2

    start: int = 1
    count: int = 16

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        _check_range("start index", self.start, 0xFFFF)
        _check_range("count", self.count, 0xFF)
        return self.start.to_bytes(2, "little") + bytes([self.count])

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = _Cursor(data, "AFN 10 F2 request")
        out = cls(c.word("start index"), c.byte("count"))
        c.end()
        return out


@dataclass(frozen=True)
class NodeInfo:
    """One node of a 10 F2 reply: address, then D0-D3 relay level, D4-D7 quality,
    D8-D10 phases (one bit each), D11-D13 protocol type, D14-D15 spare."""

    address: str
    protocol: int = ProtocolType.DLT645_2007
    relay_level: int = 0
    quality: int = 0
    phases: int = 0  # bit 0..2: phase 1..3
    spare: int = 0

    def encode(self) -> bytes:
        for what, value, high in (
            ("relay level", self.relay_level, 0x0F),
            ("quality", self.quality, 0x0F),
            ("phases", self.phases, 0x07),
            ("protocol", self.protocol, 0x07),
            ("spare bits", self.spare, 0x03),
        ):
            _check_range(what, value, high)
        word = (
            self.relay_level
            | self.quality << 4
            | self.phases << 8
            | self.protocol << 11
            | self.spare << 14
        )
        return encode_node_address(self.address) + word.to_bytes(2, "little")

    @classmethod
    def _read(cls, c: _Cursor, i: int) -> NodeInfo:
        address = c.address(f"node {i} address")
        word = c.word(f"node {i} information")
        return cls(
            address=address,
            protocol=_protocol(word >> 11 & 0x07),
            relay_level=word & 0x0F,
            quality=word >> 4 & 0x0F,
            phases=word >> 8 & 0x07,
            spare=word >> 14,
        )


@dataclass(frozen=True)
class NodePage:
    """AFN 10 F2 reply: the table's total and this page of nodes."""

    AFN: ClassVar[int] = AFN.ROUTE_QUERY
    FN: ClassVar[int] = 2

    total: int
    nodes: tuple[NodeInfo, ...] = ()

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        _check_range("node total", self.total, 0xFFFF)
        _check_range("nodes in one reply", len(self.nodes), 0xFF)
        head = self.total.to_bytes(2, "little") + bytes([len(self.nodes)])
        return head + b"".join(n.encode() for n in self.nodes)

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = _Cursor(data, "AFN 10 F2 node information")
        total = c.word("node total")
        n = c.byte("nodes in this reply")
        out = cls(total, tuple(NodeInfo._read(c, i + 1) for i in range(n)))
        c.end()
        return out


@dataclass(frozen=True)
class SlaveNode:
    """A node as the concentrator adds it (11 F1): address and protocol."""

    address: str
    protocol: int = ProtocolType.DLT645_2007

    def encode(self) -> bytes:
        _check_range("protocol type", self.protocol, 0xFF)
        return encode_node_address(self.address) + bytes([self.protocol])


@dataclass(frozen=True)
class AddNodes:
    """AFN 11 F1: n, then n x (address, protocol)."""

    AFN: ClassVar[int] = AFN.ROUTE_SET
    FN: ClassVar[int] = 1

    nodes: tuple[SlaveNode, ...]

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        _check_range("nodes in one request", len(self.nodes), 0xFF)
        return bytes([len(self.nodes)]) + b"".join(n.encode() for n in self.nodes)

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = _Cursor(data, "AFN 11 F1 add nodes")
        n = c.byte("node count")
        nodes = tuple(
            SlaveNode(c.address(f"node {i + 1} address"), _protocol(c.byte("protocol type")))
            for i in range(n)
        )
        c.end()
        return cls(nodes)


@dataclass(frozen=True)
class DeleteNodes:
    """AFN 11 F2: n, then n addresses."""

    AFN: ClassVar[int] = AFN.ROUTE_SET
    FN: ClassVar[int] = 2

    addresses: tuple[str, ...]

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        _check_range("nodes in one request", len(self.addresses), 0xFF)
        return bytes([len(self.addresses)]) + _address_bytes(self.addresses)

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = _Cursor(data, "AFN 11 F2 delete nodes")
        n = c.byte("node count")
        addresses = tuple(c.address(f"node {i + 1} address") for i in range(n))
        c.end()
        return cls(addresses)


@dataclass(frozen=True)
class MonitorRequest:
    """AFN 13 F1 down, 监控从节点: protocol, [delay-related flag: 2013 only], attached
    node count and addresses, length L (1 byte), the meter frame as it would go on RS-485.
    The meter's address travels in the frame's address field (destination)."""

    AFN: ClassVar[int] = AFN.ROUTE_FORWARD
    FN: ClassVar[int] = 1

    payload: bytes
    protocol: int = ProtocolType.DLT645_2007
    delay_related: bool = False  # the payload holds time-dependent data (clock set)
    attached: tuple[str, ...] = ()

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        _check_range("protocol type", self.protocol, 0xFF)
        _check_range("attached node count", len(self.attached), 0xFF)
        _check_range("meter frame length", len(self.payload), 0xFF)
        out = bytes([self.protocol])
        if edition is Edition.Q2013:
            out += bytes([int(self.delay_related)])
        elif self.delay_related:
            raise EncodeError("the 2009 edition has no delay-related flag")
        out += bytes([len(self.attached)]) + _address_bytes(self.attached)
        return out + bytes([len(self.payload)]) + self.payload

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = _Cursor(data, "AFN 13 F1 monitor request")
        protocol = _protocol(c.byte("protocol type"))
        delay = False
        if edition is Edition.Q2013:
            at = c.pos
            flag = c.byte("delay-related flag")
            if flag > 1:
                raise FrameError(
                    f"AFN 13 F1: delay-related flag {flag}, expected 0 or 1", offset=at
                )
            delay = bool(flag)
        n = c.byte("attached node count")
        attached = tuple(c.address(f"attached node {i + 1}") for i in range(n))
        payload = c.take(c.byte("frame length"), "meter frame")
        c.end()
        return cls(payload, protocol, delay, attached)


@dataclass(frozen=True)
class MonitorReply:
    """AFN 13 F1 up: [uplink duration (2 bytes, s): 2013 only], protocol, L, meter frame."""

    AFN: ClassVar[int] = AFN.ROUTE_FORWARD
    FN: ClassVar[int] = 1

    payload: bytes
    protocol: int = ProtocolType.DLT645_2007
    uplink_s: int = 0  # 当前报文本地通信上行时长

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        _check_range("protocol type", self.protocol, 0xFF)
        _check_range("meter frame length", len(self.payload), 0xFF)
        _check_range("uplink duration", self.uplink_s, 0xFFFF)
        head = self.uplink_s.to_bytes(2, "little") if edition is Edition.Q2013 else b""
        if edition is Edition.Q2009 and self.uplink_s:
            raise EncodeError("the 2009 edition has no uplink duration")
        return head + bytes([self.protocol, len(self.payload)]) + self.payload

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = _Cursor(data, "AFN 13 F1 monitor reply")
        uplink = c.word("uplink duration") if edition is Edition.Q2013 else 0
        protocol = _protocol(c.byte("protocol type"))
        payload = c.take(c.byte("frame length"), "meter frame")
        c.end()
        return cls(payload, protocol, uplink)


@dataclass(frozen=True)
class BroadcastRequest:
    """AFN 05 F3, 启动广播: control word (the protocol type), L, the frame to broadcast."""

    AFN: ClassVar[int] = AFN.CONTROL
    FN: ClassVar[int] = 3

    payload: bytes
    protocol: int = ProtocolType.DLT645_2007

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        _check_range("control word", self.protocol, 0xFF)
        _check_range("frame length", len(self.payload), 0xFF)
        return bytes([self.protocol, len(self.payload)]) + self.payload

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = _Cursor(data, "AFN 05 F3 broadcast")
        protocol = _protocol(c.byte("control word"))
        payload = c.take(c.byte("frame length"), "frame")
        c.end()
        return cls(payload, protocol)


@dataclass(frozen=True)
class DiscoveredNode:
    """One node of a 06 F1 report: address, protocol, the module's index for it."""

    address: str
    protocol: int = ProtocolType.DLT645_2007
    index: int = 0

    def encode(self) -> bytes:
        _check_range("protocol type", self.protocol, 0xFF)
        _check_range("node index", self.index, 0xFFFF)
        return (
            encode_node_address(self.address)
            + bytes([self.protocol])
            + self.index.to_bytes(2, "little")
        )


@dataclass(frozen=True)
class NodeReport:
    """AFN 06 F1, 上报从节点信息: meters the module found that are not in its table."""

    AFN: ClassVar[int] = AFN.REPORT
    FN: ClassVar[int] = 1

    nodes: tuple[DiscoveredNode, ...]

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        _check_range("nodes in one report", len(self.nodes), 0xFF)
        return bytes([len(self.nodes)]) + b"".join(n.encode() for n in self.nodes)

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = _Cursor(data, "AFN 06 F1 node report")
        n = c.byte("node count")
        nodes = tuple(
            DiscoveredNode(
                c.address(f"node {i + 1} address"),
                _protocol(c.byte("protocol type")),
                c.word("node index"),
            )
            for i in range(n)
        )
        c.end()
        return cls(nodes)


@dataclass(frozen=True)
class ReadReport:
    """AFN 06 F2, 上报抄读数据: node index, protocol, uplink duration (s), L, meter frame."""

    AFN: ClassVar[int] = AFN.REPORT
    FN: ClassVar[int] = 2

    index: int
    payload: bytes
    protocol: int = ProtocolType.DLT645_2007
    uplink_s: int = 0

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        _check_range("node index", self.index, 0xFFFF)
        _check_range("protocol type", self.protocol, 0xFF)
        _check_range("uplink duration", self.uplink_s, 0xFFFF)
        _check_range("frame length", len(self.payload), 0xFF)
        return (
            self.index.to_bytes(2, "little")
            + bytes([self.protocol])
            + self.uplink_s.to_bytes(2, "little")
            + bytes([len(self.payload)])
            + self.payload
        )

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = _Cursor(data, "AFN 06 F2 read report")
        index = c.word("node index")
        protocol = _protocol(c.byte("protocol type"))
        uplink = c.word("uplink duration")
        payload = c.take(c.byte("frame length"), "meter frame")
        c.end()
        return cls(index, payload, protocol, uplink)


@dataclass(frozen=True)
class RouteChange:
    """AFN 06 F3, 上报路由工况变动信息: a routing task finished."""

    AFN: ClassVar[int] = AFN.REPORT
    FN: ClassVar[int] = 3

    task: int

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        _check_range("task", self.task, 0xFF)
        return bytes([self.task])

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = _Cursor(data, "AFN 06 F3 route change")
        task = c.byte("task")
        c.end()
        return cls(_known(RouteTask, task))


def _protocol(value: int) -> int:
    return _known(ProtocolType, value)


def _known(kind: type[IntEnum], value: int) -> int:
    """The enum member for a known code, the plain int for a reserved one."""
    try:
        return kind(value)
    except ValueError:
        return value


Unit = (
    Command
    | RawUnit
    | Confirm
    | Deny
    | VendorInfo
    | MasterAddress
    | RunMode
    | NodeCount
    | NodePageRequest
    | NodePage
    | AddNodes
    | DeleteNodes
    | MonitorRequest
    | MonitorReply
    | BroadcastRequest
    | NodeReport
    | ReadReport
    | RouteChange
)

_Parser = Callable[[bytes, Edition], Unit]

_PARSERS: dict[tuple[int, int, Direction], _Parser] = {
    (AFN.CONFIRM, 1, Direction.UP): Confirm.parse,
    (AFN.CONFIRM, 1, Direction.DOWN): Confirm.parse,  # the concentrator confirms reports
    (AFN.CONFIRM, 2, Direction.UP): Deny.parse,
    (AFN.CONFIRM, 2, Direction.DOWN): Deny.parse,
    (AFN.QUERY, 1, Direction.UP): VendorInfo.parse,
    (AFN.QUERY, 4, Direction.UP): MasterAddress.parse,
    (AFN.QUERY, 10, Direction.UP): RunMode.parse,
    (AFN.ROUTE_QUERY, 1, Direction.UP): NodeCount.parse,
    (AFN.ROUTE_QUERY, 2, Direction.DOWN): NodePageRequest.parse,
    (AFN.ROUTE_QUERY, 2, Direction.UP): NodePage.parse,
    (AFN.ROUTE_SET, 1, Direction.DOWN): AddNodes.parse,
    (AFN.ROUTE_SET, 2, Direction.DOWN): DeleteNodes.parse,
    (AFN.ROUTE_FORWARD, 1, Direction.DOWN): MonitorRequest.parse,
    (AFN.ROUTE_FORWARD, 1, Direction.UP): MonitorReply.parse,
    (AFN.CONTROL, 3, Direction.DOWN): BroadcastRequest.parse,
    (AFN.REPORT, 1, Direction.UP): NodeReport.parse,
    (AFN.REPORT, 2, Direction.UP): ReadReport.parse,
    (AFN.REPORT, 3, Direction.UP): RouteChange.parse,
}
_EMPTY_DOWN = {
    (c.afn, c.fn)
    for c in (
        HARDWARE_INIT,
        PARAMETER_INIT,
        DATA_INIT,
        QUERY_VENDOR,
        QUERY_MASTER_ADDRESS,
        QUERY_RUN_MODE,
        QUERY_NODE_COUNT,
        ROUTE_RESTART,
        ROUTE_PAUSE,
        ROUTE_RESUME,
    )
}


def parse_unit(frame: Frame, edition: Edition = Edition.Q2013) -> Unit:
    """The typed data unit of a frame; ``RawUnit`` when we have no layout for it.

    Raises ``FrameError`` when the layout is known and the bytes do not fit it.
    """
    key = (frame.afn, frame.fn, frame.direction)
    parser = _PARSERS.get(key)
    if parser is not None:
        return parser(frame.data, edition)
    if (frame.afn, frame.fn) in _EMPTY_DOWN and frame.direction == Direction.DOWN:
        if frame.data:
            raise FrameError(
                f"AFN {frame.afn:02X} F{frame.fn} has no data unit, got {len(frame.data)} bytes"
            )
        return Command(frame.afn, frame.fn)
    return RawUnit(frame.afn, frame.fn, frame.data)


def unit_id(unit: Unit) -> tuple[int, int]:
    """(AFN, Fn) of a data unit."""
    if isinstance(unit, Command | RawUnit):
        return unit.afn, unit.fn
    return unit.AFN, unit.FN


# --------------------------------------------------------------------------------------
# Building frames


def command(
    unit: Unit,
    *,
    seq: int,
    destination: str | None = None,
    source: str = ZERO_ADDRESS,
    relays: tuple[str, ...] = (),
    mode: int = CommMode.HPLC,
    edition: Edition = Edition.Q2013,
) -> Frame:
    """A concentrator request (DIR 0, PRM 1). With ``destination`` (a meter) the frame
    carries the address field; ``source`` is then the module's master-node address."""
    afn, fn = unit_id(unit)
    info = DownInfo(seq=seq, slave_node=destination is not None, relay_level=len(relays))
    return Frame(
        afn=afn,
        fn=fn,
        data=unit.encode(edition),
        info=info,
        prm=True,
        mode=mode,
        source=source if destination is not None else None,
        relays=relays,
        destination=destination,
    )


def reply_to(
    request: Frame,
    unit: Unit,
    *,
    info: UpInfo | None = None,
    edition: Edition = Edition.Q2013,
) -> Frame:
    """The module's answer to ``request`` (DIR 1, PRM 0): same SEQ, addresses swapped.

    SPLCKQ-11's simulated module answers this way (Creat376_2UpFrameFormDownFrame), and
    its captured replies show the meter as source and the master node as destination.
    A deny carries no address field whatever the request had (``DENY_ID``).
    """
    afn, fn = unit_id(unit)
    slave = request.info.slave_node and (afn, fn) != DENY_ID  # a deny is never addressed
    info = replace(info or UpInfo(), seq=request.seq, slave_node=slave)
    return Frame(
        afn=afn,
        fn=fn,
        data=unit.encode(edition),
        info=info,
        prm=False,
        mode=request.mode,
        source=request.destination if slave else None,
        destination=request.source if slave else None,
    )


def report(
    unit: Unit,
    *,
    seq: int,
    mode: int = CommMode.HPLC,
    info: UpInfo | None = None,
    edition: Edition = Edition.Q2013,
) -> Frame:
    """A spontaneous frame from the module (DIR 1, PRM 1): AFN 06 reports, 03 F10."""
    afn, fn = unit_id(unit)
    info = replace(info or UpInfo(), seq=seq, slave_node=False)
    return Frame(afn=afn, fn=fn, data=unit.encode(edition), info=info, prm=True, mode=mode)


def confirm_report(frame: Frame, unit: Confirm | Deny | None = None) -> Frame:
    """The concentrator's answer to a spontaneous frame (DIR 0, PRM 0), same SEQ."""
    unit = unit or Confirm()
    return Frame(
        afn=unit.AFN,
        fn=unit.FN,
        data=unit.encode(),
        info=DownInfo(seq=frame.seq),
        prm=False,
        mode=frame.mode,
    )
