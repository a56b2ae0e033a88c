"""A simulated Q/GDW 1376.2 carrier module on a pseudo-terminal, DL/T 645 meters behind it.

The concentrator opens the PTY's slave side (through a stable symlink) as the module's
UART, exactly as it would open /dev/ttyS2; we hold the master side and play the module.
Behind the module sit ordinary simulated meters (``hil_sim.dlt645_meter``): a meter read
forwarded with AFN 13 F1 reaches the same code that answers on RS-485, and every value a
meter tells goes into the same ground-truth log.

What the module does, and what a test can make it do at run time:

- a node table (AFN 11 F1/F2 add/delete, 10 F1/F2 query, 01 F2 clears it); a meter read
  for an address not in it is denied "meter address not in the node table" (reason 7);
- per-meter link quality (``Link``): each attempt to reach a meter succeeds with some
  probability and takes ``latency`` simulated seconds per hop, one hop more per relay;
  the module tries ``attempts`` times, then denies "slave node did not answer" (11).
  Simulated seconds pass ``clock.scale`` times faster than real ones, as everywhere in
  hil_sim, so a test reads through a 2-second carrier network in milliseconds. The UART
  between module and concentrator keeps its real pace (``baud``), like the RS-485 bus;
- nodes come and go (``node_leaves``/``node_joins``): an absent node is denied "not in
  the network" (12) at once; meters present but not in the table are reported with AFN
  06 F1 when a search runs (route restart or resume, a node joining), followed by 06 F3
  "search finished"; reports are repeated until the concentrator confirms them;
- strict where the standard is (docs/protocols.md §3.1-§3.6): it reports its master
  node address (03 F4, 03 F10) and denies "format error" (5) any downlink frame whose
  address field does not start with it (A1); it is a narrowband (mode 1) or HPLC
  (mode 3) module and denies a frame in another communication mode, except the
  identity queries (03 F1/F4/F10) a concentrator sends before it can know; its
  answers never put an address field on a deny;
- a serial module (``max_concurrent = 1``, reporting the 2013 edition) runs one meter
  read at a time and denies an overlapping one "master node busy" (9); a concurrent one
  (reporting the 2019 edition) runs ``max_concurrent`` at once, beyond that "too many
  concurrent requests" (109);
- faults: ``answering = False`` (silent module), ``deny_with = reason`` (denies every
  command), ``network_down`` (windows of simulated seconds after the clock's start in
  which the carrier network carries nothing: every meter read is denied "slave node
  did not answer" after its attempts, while the module itself answers), ``reset()``
  (in-flight reads are lost, then the module announces itself with a spontaneous
  AFN 03 F10, as modules do after power-on [M]).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from drivers import gdw1376_2 as gdw
from drivers.errors import FrameError
from hil_sim.bus import SimMeter
from hil_sim.clock import SimClock
from hil_sim.mixed_bus import decode_any, protocol_type
from hil_sim.pty_port import PtyPort, wire_time
from hil_sim.truth import TruthLog

log = logging.getLogger(__name__)

PROTOCOL = "gdw1376.2"
BITS_PER_CHAR = 11  # 9600 8E1 on the module's UART
REPORT_BATCH = 8  # discovered nodes per AFN 06 F1 frame
LATENCY_SPREAD = 0.25  # sigma of the lognormal jitter around a link's median latency
VENDOR = gdw.VendorInfo("MF", "SM", dt.date(2026, 11, 25), 0x0100)  # meterflow, simulated
MODES = (gdw.CommMode.CENTRAL_NARROWBAND, gdw.CommMode.HPLC)
# The protocol date a module reports in 03 F10: the edition it implements (§3.6).
SERIAL_EDITION = dt.date(2013, 3, 1)  # Q/GDW 1376.2-2013
CONCURRENT_EDITION = dt.date(2019, 6, 1)  # Q/GDW 10376.2-2019 [U]
# Queries a concentrator sends before it knows the mode: answered in any mode.
IDENTITY_QUERIES = {
    gdw.unit_id(q) for q in (gdw.QUERY_VENDOR, gdw.QUERY_MASTER_ADDRESS, gdw.QUERY_RUN_MODE)
}


@dataclass(frozen=True)
class Link:
    """How well the module reaches one meter. Latencies are simulated seconds.

    No authoritative figures exist (docs/protocols.md §3.6): narrowband reads take seconds,
    HPLC well under one. Everything here is a knob.
    """

    success: float = 0.98  # one attempt gets the request there and the answer back
    latency: float = 1.0  # median seconds one hop takes, there and back
    relays: int = 0  # relay depth: one hop more each, reported as the relay level
    phase: int = 1  # 1..3
    quality: int = 12  # signal quality 1..15 the module reports


@dataclass
class ModuleCounters:
    requests: int = 0
    replies: int = 0
    denies: int = 0
    reads: int = 0  # AFN 13 F1 requests accepted
    failed_attempts: int = 0
    reports: int = 0  # spontaneous frames sent, repeats included
    report_acks: int = 0
    reports_unconfirmed: int = 0
    ignored: int = 0  # frames swallowed while not answering
    wrong_address: int = 0  # denied: A1 is not the master node's address
    wrong_mode: int = 0  # denied: the control byte's mode is not the module's
    frame_errors: int = 0
    resets: int = 0
    max_parallel: int = 0  # most meter reads seen running at once


@dataclass
class _Node:
    meter: SimMeter
    link: Link
    present: bool = True


class PlcModule:
    """Serve a carrier module on a fresh PTY until ``stop()``; ``link`` is a stable symlink."""

    def __init__(
        self,
        meters: Sequence[SimMeter],
        *,
        links: Mapping[str, Link] | None = None,
        default_link: Link = Link(),
        routed: Iterable[str] | None = None,
        max_concurrent: int = 1,
        attempts: int = 2,
        fail_after: float | None = None,
        baud: int = 9600,
        clock: SimClock | None = None,
        truth: TruthLog | None = None,
        link: Path | None = None,
        seed: int = 0,
        master_address: str = "100000000000",
        mode: int = gdw.CommMode.HPLC,
        vendor: gdw.VendorInfo = VENDOR,
        capacity: int = 1024,
        monitor_timeout_s: int = 60,
        search_delay: float = 5.0,
        boot_delay: float = 2.0,
        report_retry: float = 0.5,
        report_tries: int = 3,
        edition: gdw.Edition = gdw.Edition.Q2013,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"communication mode {mode}: the simulator is 1 or 3")
        gdw.encode_node_address(master_address)  # 12 hex digits, or EncodeError
        links = links or {}
        self._nodes = {m.address: _Node(m, links.get(m.address, default_link)) for m in meters}
        # The node table: address -> protocol, in the order the concentrator added them.
        self.route: dict[str, int] = {
            a: gdw.ProtocolType.DLT645_2007 for a in (self._nodes if routed is None else routed)
        }
        self.max_concurrent = max_concurrent
        self.attempts = attempts
        # Simulated seconds a failed carrier attempt costs before the module gives up
        # (it waits for an answer that does not come); None: as long as a success.
        self.fail_after = fail_after
        self.network_down: list[tuple[float, float]] = []
        self.baud = baud
        self.clock = clock or SimClock()
        self.truth = truth or TruthLog(None)
        self.link = link
        self.master_address = master_address
        self.mode = mode
        self.vendor = vendor
        self.capacity = capacity
        self.monitor_timeout_s = monitor_timeout_s
        self.search_delay = search_delay  # simulated seconds from the trigger to reports
        self.boot_delay = boot_delay  # simulated seconds from a reset to its 03 F10
        self.report_retry = report_retry  # real seconds before an unconfirmed repeat
        self.report_tries = report_tries
        self.edition = edition
        self.counters = ModuleCounters()
        # Fault injection, flipped by tests at run time.
        self.answering = True
        self.deny_with: int | None = None
        self.route_running = True
        self._rng = random.Random(seed)
        self._decoder = gdw.Decoder()
        self._reported: set[str] = set()
        self._report_seq = 0
        self._unconfirmed: set[int] = set()
        self._reads: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._out: asyncio.Queue[bytes] = asyncio.Queue()
        self._port = PtyPort(link, log=log, what="module")
        self.pty_name = ""

    @property
    def meters(self) -> list[SimMeter]:
        return [n.meter for n in self._nodes.values()]

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        self.pty_name = self._port.open(self._on_readable)
        self._spawn(self._uart_writer())

    async def stop(self) -> None:
        tasks = self._reads | self._tasks
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._port.close()
        self.truth.flush()

    # ------------------------------------------------------------------ run-time controls
    def reset(self) -> None:
        """Power-cycle: reads in flight are lost, the node table survives, and after
        ``boot_delay`` the module announces itself with a spontaneous AFN 03 F10."""
        self.counters.resets += 1
        for task in self._reads | self._tasks:
            task.cancel()
        self._reads.clear()
        self._tasks.clear()
        self._unconfirmed.clear()
        self._decoder.reset()
        while not self._out.empty():
            self._out.get_nowait()
        self._spawn(self._uart_writer())
        self._spawn(self._announce())

    def node_leaves(self, address: str) -> None:
        self._nodes[address].present = False

    def node_joins(
        self, address: str, meter: SimMeter | None = None, link: Link | None = None
    ) -> None:
        """A node (back) on the network; a new ``meter`` may join. Reported if unknown."""
        if meter is not None:
            self._nodes[address] = _Node(meter, link or Link())
        node = self._nodes[address]
        node.present = True
        if link is not None:
            node.link = link
        if self.route_running and address not in self.route:
            self._reported.discard(address)
            self.search()

    def set_link(self, address: str, link: Link) -> None:
        self._nodes[address].link = link

    def search(self, *, again: bool = False) -> None:
        """Look for meters not in the node table; report them (06 F1), then 06 F3."""
        if again:
            self._reported.clear()
        self._spawn(self._search())

    # ------------------------------------------------------------------ receive
    def _on_readable(self) -> None:
        data = self._port.read()
        if not data:
            return
        self._decoder.feed(data)
        while True:
            try:
                frame = self._decoder.next_frame()
            except FrameError:
                self.counters.frame_errors += 1
                continue  # a module ignores what it cannot parse
            if frame is None:
                return
            if frame.direction == gdw.Direction.DOWN:
                self._on_frame(frame)

    def _on_frame(self, frame: gdw.Frame) -> None:
        if not self.answering:
            self.counters.ignored += 1
            return
        if not frame.prm:
            # The concentrator's confirm (or deny) of one of our spontaneous frames.
            if frame.afn == gdw.AFN.CONFIRM and frame.seq in self._unconfirmed:
                self._unconfirmed.discard(frame.seq)
                self.counters.report_acks += 1
            return
        self.counters.requests += 1
        if self.deny_with is not None:
            self._deny(frame, self.deny_with)
            return
        if frame.source is not None and frame.source != self.master_address:
            log.info("module: A1 %s is not our address %s", frame.source, self.master_address)
            self.counters.wrong_address += 1
            self._deny(frame, gdw.DenyReason.FORMAT_ERROR)
            return
        if frame.mode != self.mode and (frame.afn, frame.fn) not in IDENTITY_QUERIES:
            log.info("module: communication mode %d, we are %d", frame.mode, self.mode)
            self.counters.wrong_mode += 1
            self._deny(frame, gdw.DenyReason.FORMAT_ERROR)
            return
        try:
            unit = gdw.parse_unit(frame, self.edition)
        except FrameError as exc:
            log.debug("module: bad data unit: %s", exc)
            self._deny(frame, gdw.DenyReason.INVALID_DATA_UNIT)
            return
        self._dispatch(frame, unit)

    def _dispatch(self, frame: gdw.Frame, unit: gdw.Unit) -> None:
        key = gdw.unit_id(unit)
        if key == gdw.unit_id(gdw.HARDWARE_INIT):
            for task in self._reads:
                task.cancel()
            self._confirm(frame)
        elif key == gdw.unit_id(gdw.PARAMETER_INIT):
            self.route.clear()
            self._reported.clear()
            self._confirm(frame)
        elif key == gdw.unit_id(gdw.DATA_INIT):
            self._confirm(frame)
        elif key == gdw.unit_id(gdw.QUERY_VENDOR):
            self._reply(frame, self.vendor)
        elif key == gdw.unit_id(gdw.QUERY_MASTER_ADDRESS):
            self._reply(frame, gdw.MasterAddress(self.master_address))
        elif key == gdw.unit_id(gdw.QUERY_RUN_MODE):
            self._reply(frame, self.run_mode())
        elif key == gdw.unit_id(gdw.QUERY_NODE_COUNT):
            self._reply(frame, gdw.NodeCount(len(self.route), self.capacity))
        elif isinstance(unit, gdw.NodePageRequest):
            self._reply(frame, self._page(unit))
        elif isinstance(unit, gdw.AddNodes):
            self._add(frame, unit)
        elif isinstance(unit, gdw.DeleteNodes):
            self._delete(frame, unit)
        elif key in (gdw.unit_id(gdw.ROUTE_RESTART), gdw.unit_id(gdw.ROUTE_RESUME)):
            self.route_running = True
            self._confirm(frame)
            self.search(again=key == gdw.unit_id(gdw.ROUTE_RESTART))
        elif key == gdw.unit_id(gdw.ROUTE_PAUSE):
            self.route_running = False
            self._confirm(frame)
        elif isinstance(unit, gdw.MonitorRequest):
            self._monitor(frame, unit)
        elif isinstance(unit, gdw.BroadcastRequest):
            self._confirm(frame)
            self._spawn(self._broadcast(unit))
        else:
            self._deny(frame, gdw.DenyReason.UNSUPPORTED)

    # ------------------------------------------------------------------ commands
    def run_mode(self) -> gdw.RunMode:
        # Mode word (a module's Data03HF10 source): comm type 2 (broadband) or 1, own
        # routing (so narrowband is mode 1, centralised routing), node table from the
        # concentrator, concentrator-led reading (13 F1); 13 F1 carries delay
        # parameters; one channel; one rate. The protocol date tells the edition.
        comm_type = 2 if self.mode == gdw.CommMode.HPLC else 1
        edition = CONCURRENT_EDITION if self.max_concurrent > 1 else SERIAL_EDITION
        return gdw.RunMode(
            mode_word=bytes([0x70 | comm_type, 0x02, 0x01, 0x01, 0x00, 0x00]),
            monitor_timeout_s=self.monitor_timeout_s,
            broadcast_timeout_s=10,
            max_frame_len=gdw.MAX_FRAME_LEN,
            max_file_packet=512,
            upgrade_wait_s=30,
            master_address=self.master_address,
            max_nodes=self.capacity,
            node_count=len(self.route),
            protocol_date=edition,
            protocol_filed_date=dt.date(2013, 3, 1),
            vendor=self.vendor,
            rates=(0,),
        )

    def _page(self, unit: gdw.NodePageRequest) -> gdw.NodePage:
        addresses = list(self.route)[max(0, unit.start - 1) :][: unit.count]
        nodes = []
        for address in addresses:
            node = self._nodes.get(address)
            link = node.link if node is not None else Link(quality=0)
            nodes.append(
                gdw.NodeInfo(
                    address=address,
                    protocol=self.route[address],
                    relay_level=link.relays,
                    quality=link.quality,
                    phases=1 << (link.phase - 1) if node is not None else 0,
                )
            )
        return gdw.NodePage(len(self.route), tuple(nodes))

    def _add(self, frame: gdw.Frame, unit: gdw.AddNodes) -> None:
        if any(n.address in self.route for n in unit.nodes):
            self._deny(frame, gdw.DenyReason.DUPLICATE_METER)
            return
        if len(self.route) + len(unit.nodes) > self.capacity:
            self._deny(frame, gdw.DenyReason.FORMAT_ERROR)  # no reason fits better [M]
            return
        for n in unit.nodes:
            self.route[n.address] = n.protocol
        self._confirm(frame)

    def _delete(self, frame: gdw.Frame, unit: gdw.DeleteNodes) -> None:
        if any(a not in self.route for a in unit.addresses):
            self._deny(frame, gdw.DenyReason.NO_SUCH_METER)
            return
        for a in unit.addresses:
            del self.route[a]
            self._reported.discard(a)
        self._confirm(frame)

    def _monitor(self, frame: gdw.Frame, unit: gdw.MonitorRequest) -> None:
        address = frame.destination
        if address is None:
            self._deny(frame, gdw.DenyReason.FORMAT_ERROR)  # no meter address given
            return
        if address not in self.route:
            self._deny(frame, gdw.DenyReason.NO_SUCH_METER)
            return
        node = self._nodes.get(address)
        if node is None or not node.present:
            self._deny(frame, gdw.DenyReason.NODE_NOT_IN_NETWORK)
            return
        if len(self._reads) >= self.max_concurrent:
            # A 2013 module takes one read at a time: it is simply busy (§3.5, §3.6).
            serial = self.max_concurrent == 1
            busy = gdw.DenyReason.MASTER_BUSY if serial else gdw.DenyReason.TOO_MANY_CONCURRENT
            self._deny(frame, busy)
            return
        self.counters.reads += 1
        task = asyncio.create_task(self._read_meter(frame, unit, node))
        self._reads.add(task)
        task.add_done_callback(self._reads.discard)
        self.counters.max_parallel = max(self.counters.max_parallel, len(self._reads))

    async def _read_meter(self, frame: gdw.Frame, unit: gdw.MonitorRequest, node: _Node) -> None:
        link = node.link
        elapsed = 0.0
        reached = False
        for _ in range(max(1, self.attempts)):
            hop = link.latency * (1 + link.relays)
            took = hop * self._rng.lognormvariate(0.0, LATENCY_SPREAD)
            if node.present and not self._network_down() and self._rng.random() < link.success:
                elapsed += took
                reached = True
                break
            elapsed += took if self.fail_after is None else self.fail_after
            self.counters.failed_attempts += 1
        await asyncio.sleep(elapsed / self.clock.scale)
        if not reached:
            self._deny(frame, gdw.DenyReason.NODE_NO_REPLY)
            return
        reply = self._ask_meter(node.meter, unit.payload)
        if reply is None:
            self._deny(frame, gdw.DenyReason.METER_NO_REPLY)
            return
        info = gdw.UpInfo(
            relay_level=link.relays,
            phase=link.phase,
            command_quality=link.quality,
            reply_quality=link.quality,
        )
        # The uplink duration is a 2013 field (docs/protocols.md §3.4).
        uplink_s = max(1, round(elapsed)) if self.edition is gdw.Edition.Q2013 else 0
        answer = gdw.MonitorReply(reply, unit.protocol, uplink_s)
        self._reply(frame, answer, info)

    def _network_down(self) -> bool:
        t = self.clock.now() - self.clock.start
        return any(lo <= t < hi for lo, hi in self.network_down)

    def _ask_meter(self, meter: SimMeter, payload: bytes) -> bytes | None:
        try:
            request = decode_any(payload)
        except FrameError:
            return None  # a meter ignores what it cannot parse
        if not meter.selected_by(request):
            return None
        answer = meter.answer(request, self.clock.now())
        # A module silenced meanwhile swallows the answer: the meter told it, nobody heard.
        fault = None if self.answering else "no_reply"
        for record in answer.truth:
            self.truth.write(replace(record, fault=fault))
        self.truth.flush()
        return answer.reply

    async def _broadcast(self, unit: gdw.BroadcastRequest) -> None:
        await asyncio.sleep(self._slowest_hop() / self.clock.scale)
        with contextlib.suppress(FrameError):
            request = decode_any(unit.payload)
            for node in self._nodes.values():
                if node.present and node.meter.selected_by(request):
                    node.meter.answer(request, self.clock.now())

    def _slowest_hop(self) -> float:
        return max((n.link.latency * (1 + n.link.relays) for n in self._nodes.values()), default=0)

    # ------------------------------------------------------------------ spontaneous frames
    async def _search(self) -> None:
        await asyncio.sleep(self.search_delay / self.clock.scale)
        found = [
            a
            for a, n in self._nodes.items()
            if n.present and a not in self.route and a not in self._reported
        ]
        index = {a: i + 1 for i, a in enumerate(self._nodes)}
        for i in range(0, len(found), REPORT_BATCH):
            batch = found[i : i + REPORT_BATCH]
            nodes = tuple(
                gdw.DiscoveredNode(a, protocol_type(self._nodes[a].meter), index[a]) for a in batch
            )
            self._reported.update(batch)
            self._spawn(self._report(gdw.NodeReport(nodes)))
        self._spawn(self._report(gdw.RouteChange(gdw.RouteTask.SEARCH_DONE)))

    async def _announce(self) -> None:
        await asyncio.sleep(self.boot_delay / self.clock.scale)
        await self._report(self.run_mode())

    async def _report(self, unit: gdw.Unit) -> None:
        self._report_seq = (self._report_seq + 1) & 0xFF
        seq = self._report_seq
        raw = gdw.encode_frame(gdw.report(unit, seq=seq, mode=self.mode, edition=self.edition))
        self._unconfirmed.add(seq)
        for _ in range(max(1, self.report_tries)):
            if self.answering:
                self.counters.reports += 1
                self._out.put_nowait(raw)
            await asyncio.sleep(self.report_retry)
            if seq not in self._unconfirmed:
                return
        self._unconfirmed.discard(seq)
        self.counters.reports_unconfirmed += 1

    # ------------------------------------------------------------------ send
    def _confirm(self, frame: gdw.Frame) -> None:
        self._reply(frame, gdw.Confirm(processed=True))

    def _deny(self, frame: gdw.Frame, reason: int) -> None:
        self.counters.denies += 1
        self._reply(frame, gdw.Deny(reason))

    def _reply(self, frame: gdw.Frame, unit: gdw.Unit, info: gdw.UpInfo | None = None) -> None:
        if not self.answering:
            return  # silenced while the answer was being prepared
        self.counters.replies += 1
        reply = gdw.reply_to(frame, unit, info=info, edition=self.edition)
        self._out.put_nowait(gdw.encode_frame(reply))

    async def _uart_writer(self) -> None:
        """One frame after the other, each taking its wire time, as a real UART sends."""
        while True:
            data = await self._out.get()
            await self._port.write_after(wire_time(len(data), self.baud, BITS_PER_CHAR), data)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
