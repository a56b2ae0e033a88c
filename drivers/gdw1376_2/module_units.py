"""Data units about the module itself: commands with empty units, confirm/deny (AFN 00),
vendor and master address (AFN 03 F1/F4), run mode (AFN 03 F10).

See the package docstring (``drivers.gdw1376_2``) for the frame layout and sources.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import ClassVar, Self

from drivers.errors import EncodeError
from drivers.gdw1376_2.codes import AFN, CommMode, DenyReason, Edition, describe_deny, known_code
from drivers.gdw1376_2.fields import Cursor, date_bytes, latin1
from drivers.gdw1376_2.frame import check_range, encode_node_address


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
        check_range("wait time", self.wait_s, 0xFFFF)
        word = self.idle_channels | int(self.processed)
        return word.to_bytes(4, "little") + self.wait_s.to_bytes(2, "little")

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = Cursor(data, "AFN 00 F1 confirm")
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
        check_range("deny reason", self.reason, 0xFF)
        return bytes([self.reason])

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = Cursor(data, "AFN 00 F2 deny")
        reason = c.byte("error status")
        c.end()
        return cls(known_code(DenyReason, reason))

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
        check_range("version", self.version, 0xFFFF)
        return (
            latin1(self.vendor, 2, "vendor code")
            + latin1(self.chip, 2, "chip code")
            + date_bytes(self.date)
            + self.version.to_bytes(2, "little")
        )

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = Cursor(data, "AFN 03 F1 vendor information")
        out = cls._read(c)
        c.end()
        return out

    @classmethod
    def _read(cls, c: Cursor) -> Self:
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
        c = Cursor(data, "AFN 03 F4 master node address")
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
            check_range(what, value, high)
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
            + date_bytes(self.protocol_date)
            + date_bytes(self.protocol_filed_date)
            + self.vendor.encode()
            + b"".join(r.to_bytes(2, "little") for r in self.rates)
        )

    @classmethod
    def parse(cls, data: bytes, edition: Edition = Edition.Q2013) -> Self:
        c = Cursor(data, "AFN 03 F10 run mode")
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
