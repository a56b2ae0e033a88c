"""Power-line carrier channel: a Q/GDW 1376.2 module on a UART, several requests in flight.

RS-485 is one shared pair where one request waits for one answer (``serial_bus``). A
carrier module is different: it is a full-duplex peer on its own UART (9600 8E1 by
default) that routes each request over the power line by itself, answers every one
with the request's SEQ, may run several at once, takes seconds per meter read, denies
what it cannot do (AFN 00 F2 with a reason), and talks on its own: discovered meters
(AFN 06 F1), reported data (06 F2), route status changes (06 F3), and its run-mode
information (03 F10) after it has restarted [M].

So this transport keeps a table of requests in flight keyed by SEQ, matches each reply
to its request (by SEQ, and by meter address for forwarded meter frames), turns deny
frames into the exception that says what to do (``drivers.errors``), acknowledges
spontaneous frames and hands them out through ``reports()``. The 1376.2 codec stays
sans-I/O in ``drivers.gdw1376_2``.

``Plc645Channel`` lets ``drivers.readers.Dlt645Reader`` read a meter through the module
exactly as over RS-485: the DL/T 645 request goes out inside AFN 13 F1 (monitor slave
node) and the meter's reply frame comes back inside the module's answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, replace
from typing import TypeVar

from drivers import dlt645
from drivers import gdw1376_2 as gdw
from drivers.errors import (
    BusError,
    CarrierBusy,
    CarrierDenied,
    CarrierReset,
    CarrierTimeout,
    EncodeError,
    FrameError,
    NodeNoReply,
    NodeNotInRoute,
)
from drivers.readers import Dlt645Reader
from drivers.serial_bus import Exchange, FrameDecoder, Parity, close_uart, open_uart

log = logging.getLogger(__name__)

F = TypeVar("F")
U = TypeVar("U")

ADD_BATCH = 16  # nodes per AFN 11 F1/F2 frame (7 or 6 bytes each, far below any limit)
PAGE_SIZE = 16  # nodes per AFN 10 F2 page
RECENT_REPORTS = 32  # spontaneous frames remembered to drop the module's repeats


@dataclass(frozen=True)
class PlcSettings:
    """One carrier module on one UART. Times are in seconds.

    ``response_timeout`` bounds what the module answers by itself (init, queries, node
    table); ``monitor_timeout`` bounds a meter read through the carrier network, which
    takes seconds and, on narrowband, up to the 60-90 s modules report as their
    "slave monitoring max timeout" (AFN 03 F7, and 03 F10 ``monitor_timeout_s``;
    docs/protocols.md §3.6).
    ``max_in_flight``: requests sent before the first answer, used only when the module
    reports an edition that runs several reads at once (``identify``); a 1376.2-2013
    module finishes one 13 F1 before it takes the next (docs/protocols.md §3.6). A deny
    "master busy" (9) or "too many concurrent requests" (109) shrinks the window.
    ``mode`` (the control byte's communication mode) and ``master_address`` (A1 of
    every addressed downlink frame): None to use what the module reports (03 F10, 03
    F4; docs/protocols.md §3.1, §3.4); a configured value wins over the report.
    """

    port: str
    baud: int = 9600
    parity: Parity = "E"
    bytesize: int = 8
    stopbits: int = 1
    response_timeout: float = 5.0
    monitor_timeout: float = 60.0
    max_in_flight: int = 1
    mode: int | None = None
    master_address: str | None = None
    edition: gdw.Edition = gdw.Edition.Q2013
    report_queue: int = 256  # spontaneous reports kept for ``reports()``


@dataclass
class PlcStats:
    requests: int = 0
    replies: int = 0
    timeouts: int = 0
    denies: int = 0
    frame_errors: int = 0
    unmatched: int = 0  # replies for no request in flight (late, after a timeout)
    reports: int = 0
    reports_dropped: int = 0
    restarts: int = 0
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass(frozen=True)
class ModuleIdentity:
    """What ``identify`` learnt, and what the transport uses from now on."""

    master_address: str  # in use: the configured one, else the reported one
    mode: int  # in use, likewise
    reported_address: str
    reported_mode: int | None  # None: no 03 F10 (2009 edition) or a reserved type
    concurrent: bool  # the module runs several 13 F1 at once
    window: int
    run_mode: gdw.RunMode | None


@dataclass(frozen=True)
class ModuleRestarted:
    """The module announced itself again (spontaneous AFN 03 F10): it has restarted."""

    run_mode: gdw.RunMode | None


Report = gdw.NodeReport | gdw.ReadReport | gdw.RouteChange | ModuleRestarted

_NOT_IN_ROUTE = {gdw.DenyReason.NO_SUCH_METER}
_NO_REPLY = {
    gdw.DenyReason.COMM_TIMEOUT,
    gdw.DenyReason.METER_NO_REPLY,
    gdw.DenyReason.NODE_NO_REPLY,
    gdw.DenyReason.NODE_NOT_IN_NETWORK,
}
_SHRINK = {gdw.DenyReason.MASTER_BUSY, gdw.DenyReason.TOO_MANY_CONCURRENT}
_BUSY = {
    gdw.DenyReason.MASTER_BUSY,
    gdw.DenyReason.TOO_MANY_CONCURRENT,
    gdw.DenyReason.METER_BEING_READ,
}


def deny_error(code: int, *, node: str | None = None, raw: bytes = b"") -> CarrierDenied:
    """The exception for a deny reason, by what the caller should do about it."""
    kind: type[CarrierDenied] = CarrierDenied
    if code in _NOT_IN_ROUTE:
        kind = NodeNotInRoute
    elif code in _NO_REPLY:
        kind = NodeNoReply
    elif code in _BUSY:
        kind = CarrierBusy
    return kind(code, gdw.describe_deny(code), node=node, raw=raw)


@dataclass
class _Pending:
    seq: int
    afn: int
    node: str | None
    future: asyncio.Future[gdw.Frame]


class _Link(asyncio.Protocol):
    def __init__(self, bus: PlcBus) -> None:
        self.bus = bus
        self.closed = asyncio.Event()

    def data_received(self, data: bytes) -> None:
        self.bus._on_bytes(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed.set()
        self.bus._on_lost(exc)


class PlcBus:
    """One carrier module; use ``async with PlcBus(settings) as plc``."""

    def __init__(self, settings: PlcSettings) -> None:
        if settings.max_in_flight < 1:
            raise EncodeError(f"max_in_flight {settings.max_in_flight}: expected 1 or more")
        if settings.master_address is not None:  # 12 hex digits (or EncodeError), as sent
            address = gdw.decode_node_address(gdw.encode_node_address(settings.master_address))
            settings = replace(settings, master_address=address)
        self.settings = settings
        self.stats = PlcStats()
        # One request at a time until the module says it runs more (``identify``).
        self.window = 1
        # Until ``identify``: the configured mode, else HPLC for the identity queries
        # (a module answers those in any mode, docs/protocols.md §3.1).
        self.mode = settings.mode if settings.mode is not None else gdw.CommMode.HPLC
        self.master_address = settings.master_address
        self._in_flight = 0
        self._window_changed = asyncio.Condition()
        self._pending: dict[int, _Pending] = {}
        self._seq = 0
        self._decoder = gdw.Decoder()
        self._transport: asyncio.Transport | None = None
        self._link: _Link | None = None
        self._lost: BaseException | None = None
        self._reports: asyncio.Queue[Report] = asyncio.Queue(settings.report_queue)
        self._recent: deque[tuple[int, int, int, bytes]] = deque(maxlen=RECENT_REPORTS)

    # ------------------------------------------------------------------ lifecycle
    async def open(self) -> None:
        transport, link = await open_uart(self.settings, lambda: _Link(self), "carrier module port")
        self._transport, self._link, self._lost = transport, link, None

    async def close(self) -> None:
        self._fail_all(BusError(f"carrier module port {self.settings.port} closed"))
        if self._transport is not None and self._link is not None:
            await close_uart(self._transport, self._link.closed)
        self._transport = None

    async def __aenter__(self) -> PlcBus:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ meter reads
    async def exchange_645(
        self,
        address: str,
        request: bytes,
        *,
        response_timeout: float | None = None,
        protocol: int = gdw.ProtocolType.DLT645_2007,
        delay_related: bool = False,
    ) -> bytes:
        """Forward a DL/T 645 frame to meter ``address`` (AFN 13 F1), return its reply.

        Raises ``NodeNotInRoute``, ``NodeNoReply``, ``CarrierBusy`` (or another
        ``CarrierDenied``) when the module denies, ``CarrierTimeout`` when it stays
        silent for ``response_timeout`` (default ``monitor_timeout``), ``CarrierReset``
        when it restarts meanwhile.
        """
        unit = gdw.MonitorRequest(request, protocol, delay_related)
        timeout = response_timeout or self.settings.monitor_timeout
        frame = await self.request(unit, node=address, response_timeout=timeout)
        reply = self._expect(frame, gdw.MonitorReply)
        if not reply.payload:
            raise NodeNoReply(
                gdw.DenyReason.METER_NO_REPLY,
                "the module forwarded an empty reply",
                node=address,
                raw=gdw.encode_frame(frame),
            )
        return reply.payload

    async def broadcast(
        self, payload: bytes, protocol: int = gdw.ProtocolType.DLT645_2007
    ) -> gdw.Confirm:
        """AFN 05 F3: the module broadcasts ``payload`` (e.g. a 645 time sync) to all."""
        frame = await self.request(gdw.BroadcastRequest(payload, protocol))
        return self._expect(frame, gdw.Confirm)

    # ------------------------------------------------------------------ module management
    async def hardware_init(self) -> None:
        await self._confirmed(gdw.HARDWARE_INIT)

    async def parameter_init(self) -> None:
        """Clears the module's node table (参数区初始化)."""
        await self._confirmed(gdw.PARAMETER_INIT)

    async def identify(self) -> ModuleIdentity:
        """Learn the master node address (03 F4), the communication mode and edition (03
        F10, 2013 modules) and set mode, A1 and window from them (configured values win)."""
        run_mode = None
        if self.settings.edition is gdw.Edition.Q2013:
            run_mode = await self.run_mode()
        frame = await self.request(gdw.QUERY_MASTER_ADDRESS)
        reported = self._expect(frame, gdw.MasterAddress).address
        reported_mode = run_mode.control_mode if run_mode is not None else None
        if self.settings.mode is not None:
            self.mode = self.settings.mode
        elif reported_mode is not None:
            self.mode = reported_mode
        self.master_address = self.settings.master_address or reported
        concurrent = run_mode is not None and run_mode.concurrent
        async with self._window_changed:
            self.window = self.settings.max_in_flight if concurrent else 1
            self._window_changed.notify_all()
        return ModuleIdentity(
            self.master_address,
            self.mode,
            reported,
            reported_mode,
            concurrent,
            self.window,
            run_mode,
        )

    async def vendor_info(self) -> gdw.VendorInfo:
        return self._expect(await self.request(gdw.QUERY_VENDOR), gdw.VendorInfo)

    async def run_mode(self) -> gdw.RunMode:
        return self._expect(await self.request(gdw.QUERY_RUN_MODE), gdw.RunMode)

    async def node_count(self) -> gdw.NodeCount:
        return self._expect(await self.request(gdw.QUERY_NODE_COUNT), gdw.NodeCount)

    async def nodes(self, start: int = 1, count: int = PAGE_SIZE) -> gdw.NodePage:
        frame = await self.request(gdw.NodePageRequest(start, count))
        return self._expect(frame, gdw.NodePage)

    async def route_table(self) -> list[gdw.NodeInfo]:
        """Every node of the module's table, page by page (AFN 10 F2)."""
        out: list[gdw.NodeInfo] = []
        while True:
            page = await self.nodes(len(out) + 1, PAGE_SIZE)
            out.extend(page.nodes)
            if not page.nodes or len(out) >= page.total:
                return out

    async def add_nodes(self, nodes: Iterable[str | gdw.SlaveNode]) -> None:
        wanted = [n if isinstance(n, gdw.SlaveNode) else gdw.SlaveNode(n) for n in nodes]
        for i in range(0, len(wanted), ADD_BATCH):
            await self._confirmed(gdw.AddNodes(tuple(wanted[i : i + ADD_BATCH])))

    async def delete_nodes(self, addresses: Iterable[str]) -> None:
        wanted = list(addresses)
        for i in range(0, len(wanted), ADD_BATCH):
            await self._confirmed(gdw.DeleteNodes(tuple(wanted[i : i + ADD_BATCH])))

    async def restart_route(self) -> None:
        await self._confirmed(gdw.ROUTE_RESTART)

    async def pause_route(self) -> None:
        await self._confirmed(gdw.ROUTE_PAUSE)

    async def resume_route(self) -> None:
        await self._confirmed(gdw.ROUTE_RESUME)

    async def reports(self) -> AsyncIterator[Report]:
        """Spontaneous reports in arrival order (already acknowledged to the module)."""
        while True:
            yield await self._reports.get()

    # ------------------------------------------------------------------ requests
    async def request(
        self,
        unit: gdw.Unit,
        *,
        node: str | None = None,
        response_timeout: float | None = None,
    ) -> gdw.Frame:
        """Send one command and return the module's answer; a deny is raised."""
        timeout = response_timeout or self.settings.response_timeout
        afn, fn = gdw.unit_id(unit)
        if node is not None and self.master_address is None:
            raise BusError(
                "master node address unknown: identify() the module first, or configure "
                "master_address (docs/protocols.md §3.4)"
            )
        async with self._slot():
            seq = self._next_seq()
            frame = gdw.command(
                unit,
                seq=seq,
                destination=node,
                source=self.master_address or gdw.ZERO_ADDRESS,  # only with a node
                mode=self.mode,
                edition=self.settings.edition,
            )
            future: asyncio.Future[gdw.Frame] = asyncio.get_running_loop().create_future()
            self._pending[seq] = _Pending(seq, afn, node, future)
            try:
                self._write(gdw.encode_frame(frame))
                self.stats.requests += 1
                async with asyncio.timeout(timeout):
                    reply = await future
            except TimeoutError:
                self.stats.timeouts += 1
                about = f" for node {node}" if node else ""
                raise CarrierTimeout(
                    f"carrier module did not answer AFN {afn:02X} F{fn}{about} "
                    f"within {timeout:.3f} s on {self.settings.port}"
                ) from None
            finally:
                self._pending.pop(seq, None)
            if (reply.afn, reply.fn) == (gdw.AFN.CONFIRM, 2):
                await self._denied(reply, node)
        return reply

    async def _denied(self, reply: gdw.Frame, node: str | None) -> None:
        self.stats.denies += 1
        code = gdw.Deny.parse(reply.data).reason
        if code in _SHRINK:
            # The module runs fewer requests at once than we sent: stay below that.
            async with self._window_changed:
                self.window = max(1, self._in_flight - 1)
            log.warning("carrier module runs fewer requests at once: window now %d", self.window)
        raise deny_error(code, node=node, raw=gdw.encode_frame(reply))

    async def _confirmed(self, unit: gdw.Unit) -> gdw.Confirm:
        return self._expect(await self.request(unit), gdw.Confirm)

    def _expect(self, frame: gdw.Frame, kind: type[U]) -> U:
        unit = gdw.parse_unit(frame, self.settings.edition)
        if not isinstance(unit, kind):
            raise FrameError(
                f"carrier module answered AFN {frame.afn:02X} F{frame.fn}, expected {kind.__name__}"
            )
        return unit

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        async with self._window_changed:
            await self._window_changed.wait_for(lambda: self._in_flight < self.window)
            self._in_flight += 1
        try:
            yield
        finally:
            async with self._window_changed:
                self._in_flight -= 1
                self._window_changed.notify_all()

    def _next_seq(self) -> int:
        for _ in range(256):
            self._seq = (self._seq + 1) & 0xFF
            if self._seq not in self._pending:
                return self._seq
        raise AssertionError("256 requests in flight")  # the window is far smaller

    def _write(self, data: bytes) -> None:
        if self._transport is None:
            raise BusError(f"carrier module port {self.settings.port} is not open")
        if self._lost is not None:
            raise BusError(f"carrier module port {self.settings.port} lost: {self._lost}")
        self._transport.write(data)
        self.stats.bytes_out += len(data)

    # ------------------------------------------------------------------ receiving
    def _on_bytes(self, data: bytes) -> None:
        self.stats.bytes_in += len(data)
        self._decoder.feed(data)
        while True:
            try:
                frame = self._decoder.next_frame()
            except FrameError as exc:
                self.stats.frame_errors += 1
                log.debug("carrier module sent a broken frame: %s", exc)
                continue
            if frame is None:
                return
            if frame.direction == gdw.Direction.DOWN:
                continue  # our own frame echoed by the line
            if frame.prm:
                self._on_spontaneous(frame)
            else:
                self._on_reply(frame)

    def _on_reply(self, frame: gdw.Frame) -> None:
        pending = self._pending.get(frame.seq)
        if pending is not None and not self._answers(frame, pending):
            pending = None
        if pending is None and frame.source is not None:
            # Some modules renumber; a forwarded meter reply still names its meter. Only
            # the request's own AFN counts here: a stray confirm or deny is ambiguous.
            by_node = [
                p for p in self._pending.values() if p.node == frame.source and p.afn == frame.afn
            ]
            pending = by_node[0] if len(by_node) == 1 else None
        if pending is None or pending.future.done():
            self.stats.unmatched += 1
            log.debug("reply SEQ %d AFN %02X F%d: no request", frame.seq, frame.afn, frame.fn)
            return
        self.stats.replies += 1
        pending.future.set_result(frame)

    @staticmethod
    def _answers(frame: gdw.Frame, pending: _Pending) -> bool:
        if frame.afn not in (pending.afn, gdw.AFN.CONFIRM):
            return False
        return frame.source is None or pending.node is None or frame.source == pending.node

    def _on_spontaneous(self, frame: gdw.Frame) -> None:
        try:
            unit = gdw.parse_unit(frame, self.settings.edition)
        except FrameError as exc:
            self.stats.frame_errors += 1
            log.warning("carrier module report AFN %02X F%d: %s", frame.afn, frame.fn, exc)
            return
        event: Report
        if isinstance(unit, gdw.NodeReport | gdw.ReadReport | gdw.RouteChange):
            event = unit
        elif isinstance(unit, gdw.RunMode):
            event = ModuleRestarted(unit)
        else:
            log.warning("carrier module sent AFN %02X F%d unasked; ignored", frame.afn, frame.fn)
            return
        with contextlib.suppress(BusError):  # a closed port cannot acknowledge
            self._write(gdw.encode_frame(gdw.confirm_report(frame)))
        key = (frame.seq, frame.afn, frame.fn, frame.data)
        if key in self._recent:
            return  # our acknowledgement was lost and the module said it again
        self._recent.append(key)
        if isinstance(event, ModuleRestarted):
            self.stats.restarts += 1
            self._fail_all(CarrierReset("the carrier module restarted; the request was lost"))
        self.stats.reports += 1
        try:
            self._reports.put_nowait(event)
        except asyncio.QueueFull:
            self.stats.reports_dropped += 1
            log.warning("carrier module report dropped: nobody reads reports()")

    def _on_lost(self, exc: Exception | None) -> None:
        self._lost = exc or BusError("serial port closed")
        self._fail_all(BusError(f"carrier module port {self.settings.port} lost: {self._lost}"))

    def _fail_all(self, error: Exception) -> None:
        for pending in list(self._pending.values()):
            if not pending.future.done():
                pending.future.set_exception(error)


# --------------------------------------------------------------------------------------
# DL/T 645 through the module


def _accept_any(frame: object) -> bool:
    return True


class Plc645Channel:
    """The channel ``Dlt645Reader`` reads through, backed by a carrier module.

    It offers what ``drivers.readers.Dlt645Transport`` asks for: ``transact`` forwards
    the request to the meter named in it and decodes the meter's reply with the caller's
    decoder; ``send`` broadcasts (AFN 05 F3).
    """

    def __init__(self, plc: PlcBus, *, protocol: int = gdw.ProtocolType.DLT645_2007) -> None:
        self.plc = plc
        self.protocol = protocol

    async def transact(
        self,
        request: bytes,
        decoder: FrameDecoder[F],
        accept: Callable[[F], bool] = _accept_any,
        *,
        response_timeout: float | None = None,
    ) -> Exchange[F]:
        address = dlt645.decode_frame(request).address
        if "AA" in address or address == dlt645.BROADCAST:
            raise EncodeError(
                f"meter address {address}: a carrier module routes to one full address, "
                "not to a wildcard or broadcast"
            )
        started = time.monotonic()
        reply = await self.plc.exchange_645(
            address, request, response_timeout=response_timeout, protocol=self.protocol
        )
        decoder.reset()
        decoder.feed(reply)
        first_error: FrameError | None = None
        while True:
            try:
                frame = decoder.next_frame()
            except FrameError as exc:
                first_error = first_error or exc
                continue
            if frame is None:
                break
            if accept(frame):
                return Exchange(frame, time.monotonic() - started)
        reason = first_error.reason if first_error else "not the expected answer"
        raise FrameError(
            f"meter {address} reply through the carrier module: {reason}",
            raw=first_error.raw if first_error else reply,
        )

    async def send(self, request: bytes) -> None:
        await self.plc.broadcast(request, self.protocol)


def plc_reader(plc: PlcBus, *, response_timeout: float | None = None) -> Dlt645Reader:
    """A ``Dlt645Reader`` whose requests travel through the carrier module."""
    return Dlt645Reader(Plc645Channel(plc), response_timeout=response_timeout)
