"""Codes of Q/GDW 1376.2: frame limits, AFNs, communication modes, deny reasons (§4.3, §5.5).

See the package docstring (``drivers.gdw1376_2``) for the frame layout and sources.
"""

from __future__ import annotations

from enum import Enum, IntEnum

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
R1_ROUTE_BYPASS = 0x01
R1_ATTACHED = 0x02
R1_SLAVE_NODE = 0x04
R1_CONFLICT = 0x08


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


def protocol_code(value: int) -> int:
    return known_code(ProtocolType, value)


def known_code(kind: type[IntEnum], value: int) -> int:
    """The enum member for a known code, the plain int for a reserved one."""
    try:
        return kind(value)
    except ValueError:
        return value
