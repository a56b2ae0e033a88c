"""Which data unit a frame carries: the parser table and ``parse_unit``.

See the package docstring (``drivers.gdw1376_2``) for the frame layout and sources.
"""

from __future__ import annotations

from collections.abc import Callable

from drivers.errors import FrameError
from drivers.gdw1376_2.codes import AFN, Direction, Edition
from drivers.gdw1376_2.frame import Frame
from drivers.gdw1376_2.module_units import (
    DATA_INIT,
    HARDWARE_INIT,
    PARAMETER_INIT,
    QUERY_MASTER_ADDRESS,
    QUERY_NODE_COUNT,
    QUERY_RUN_MODE,
    QUERY_VENDOR,
    ROUTE_PAUSE,
    ROUTE_RESTART,
    ROUTE_RESUME,
    Command,
    Confirm,
    Deny,
    MasterAddress,
    RawUnit,
    RunMode,
    VendorInfo,
)
from drivers.gdw1376_2.route_units import (
    AddNodes,
    BroadcastRequest,
    DeleteNodes,
    MonitorReply,
    MonitorRequest,
    NodeCount,
    NodePage,
    NodePageRequest,
    NodeReport,
    ReadReport,
    RouteChange,
)

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
