"""Data units of the route and the reads through it: node table (AFN 10/11), monitored
reads (AFN 13 F1), broadcast (AFN 05 F3) and the module's reports (AFN 06).

See the package docstring (``drivers.gdw1376_2``) for the frame layout and sources.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Self

from drivers.errors import EncodeError, FrameError
from drivers.gdw1376_2.codes import AFN, Edition, ProtocolType, RouteTask, known_code, protocol_code
from drivers.gdw1376_2.fields import Cursor, address_bytes
from drivers.gdw1376_2.frame import check_range, encode_node_address


@dataclass(frozen=True)
class NodeCount:
    """AFN 10 F1 reply: nodes in the table and the table's capacity."""

    AFN: ClassVar[int] = AFN.ROUTE_QUERY
    FN: ClassVar[int] = 1

    count: int
    capacity: int

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        check_range("node count", self.count, 0xFFFF)
        check_range("node capacity", self.capacity, 0xFFFF)
        return self.count.to_bytes(2, "little") + self.capacity.to_bytes(2, "little")

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = Cursor(data, "AFN 10 F1 node count")
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
        check_range("start index", self.start, 0xFFFF)
        check_range("count", self.count, 0xFF)
        return self.start.to_bytes(2, "little") + bytes([self.count])

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = Cursor(data, "AFN 10 F2 request")
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
            check_range(what, value, high)
        word = (
            self.relay_level
            | self.quality << 4
            | self.phases << 8
            | self.protocol << 11
            | self.spare << 14
        )
        return encode_node_address(self.address) + word.to_bytes(2, "little")

    @classmethod
    def _read(cls, c: Cursor, i: int) -> NodeInfo:
        address = c.address(f"node {i} address")
        word = c.word(f"node {i} information")
        return cls(
            address=address,
            protocol=protocol_code(word >> 11 & 0x07),
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
        check_range("node total", self.total, 0xFFFF)
        check_range("nodes in one reply", len(self.nodes), 0xFF)
        head = self.total.to_bytes(2, "little") + bytes([len(self.nodes)])
        return head + b"".join(n.encode() for n in self.nodes)

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = Cursor(data, "AFN 10 F2 node information")
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
        check_range("protocol type", self.protocol, 0xFF)
        return encode_node_address(self.address) + bytes([self.protocol])


@dataclass(frozen=True)
class AddNodes:
    """AFN 11 F1: n, then n x (address, protocol)."""

    AFN: ClassVar[int] = AFN.ROUTE_SET
    FN: ClassVar[int] = 1

    nodes: tuple[SlaveNode, ...]

    def encode(self, edition: Edition = Edition.Q2013) -> bytes:
        check_range("nodes in one request", len(self.nodes), 0xFF)
        return bytes([len(self.nodes)]) + b"".join(n.encode() for n in self.nodes)

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = Cursor(data, "AFN 11 F1 add nodes")
        n = c.byte("node count")
        nodes = tuple(
            SlaveNode(c.address(f"node {i + 1} address"), protocol_code(c.byte("protocol type")))
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
        check_range("nodes in one request", len(self.addresses), 0xFF)
        return bytes([len(self.addresses)]) + address_bytes(self.addresses)

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = Cursor(data, "AFN 11 F2 delete nodes")
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
        check_range("protocol type", self.protocol, 0xFF)
        check_range("attached node count", len(self.attached), 0xFF)
        check_range("meter frame length", len(self.payload), 0xFF)
        out = bytes([self.protocol])
        if edition is Edition.Q2013:
            out += bytes([int(self.delay_related)])
        elif self.delay_related:
            raise EncodeError("the 2009 edition has no delay-related flag")
        out += bytes([len(self.attached)]) + address_bytes(self.attached)
        return out + bytes([len(self.payload)]) + self.payload

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = Cursor(data, "AFN 13 F1 monitor request")
        protocol = protocol_code(c.byte("protocol type"))
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
        check_range("protocol type", self.protocol, 0xFF)
        check_range("meter frame length", len(self.payload), 0xFF)
        check_range("uplink duration", self.uplink_s, 0xFFFF)
        head = self.uplink_s.to_bytes(2, "little") if edition is Edition.Q2013 else b""
        if edition is Edition.Q2009 and self.uplink_s:
            raise EncodeError("the 2009 edition has no uplink duration")
        return head + bytes([self.protocol, len(self.payload)]) + self.payload

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = Cursor(data, "AFN 13 F1 monitor reply")
        uplink = c.word("uplink duration") if edition is Edition.Q2013 else 0
        protocol = protocol_code(c.byte("protocol type"))
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
        check_range("control word", self.protocol, 0xFF)
        check_range("frame length", len(self.payload), 0xFF)
        return bytes([self.protocol, len(self.payload)]) + self.payload

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = Cursor(data, "AFN 05 F3 broadcast")
        protocol = protocol_code(c.byte("control word"))
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
        check_range("protocol type", self.protocol, 0xFF)
        check_range("node index", self.index, 0xFFFF)
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
        check_range("nodes in one report", len(self.nodes), 0xFF)
        return bytes([len(self.nodes)]) + b"".join(n.encode() for n in self.nodes)

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = Cursor(data, "AFN 06 F1 node report")
        n = c.byte("node count")
        nodes = tuple(
            DiscoveredNode(
                c.address(f"node {i + 1} address"),
                protocol_code(c.byte("protocol type")),
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
        check_range("node index", self.index, 0xFFFF)
        check_range("protocol type", self.protocol, 0xFF)
        check_range("uplink duration", self.uplink_s, 0xFFFF)
        check_range("frame length", len(self.payload), 0xFF)
        return (
            self.index.to_bytes(2, "little")
            + bytes([self.protocol])
            + self.uplink_s.to_bytes(2, "little")
            + bytes([len(self.payload)])
            + self.payload
        )

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = Cursor(data, "AFN 06 F2 read report")
        index = c.word("node index")
        protocol = protocol_code(c.byte("protocol type"))
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
        check_range("task", self.task, 0xFF)
        return bytes([self.task])

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = Cursor(data, "AFN 06 F3 route change")
        task = c.byte("task")
        c.end()
        return cls(known_code(RouteTask, task))
